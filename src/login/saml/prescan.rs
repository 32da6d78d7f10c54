//! A cheap streaming look at a SAML Response before libxml2/xmlsec see it.
//!
//! Why: libxml2 is quadratic in attributes per element and expands DTDs, and an XML
//! signature check can verify one element while code later reads another. This pass refuses
//! DTDs, entity references, odd shapes and size blow-ups in linear time, and records the one
//! thing the rest of the check must agree on: which single assertion the signatures cover.

use std::collections::HashSet;

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

const PROTOCOL_NS: &[u8] = b"urn:oasis:names:tc:SAML:2.0:protocol";
const ASSERTION_NS: &[u8] = b"urn:oasis:names:tc:SAML:2.0:assertion";
const DSIG_NS: &[u8] = b"http://www.w3.org/2000/09/xmldsig#";
const XMLENC_NS: &[u8] = b"http://www.w3.org/2001/04/xmlenc#";
/// Key transport with PKCS#1 v1.5 padding (Bleichenbacher-prone): never decrypt it.
const RSA_1_5: &str = "http://www.w3.org/2001/04/xmlenc#rsa-1_5";

/// Shape limits: far above what any IdP sends, far below what hurts libxml2.
const MAX_DEPTH: usize = 32;
const MAX_ATTRIBUTES: usize = 32;
const MAX_ELEMENTS: usize = 4096;

/// Why the pre-scan refused a document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not well-formed XML.
    #[error("not well-formed XML: {0}")]
    Malformed(String),
    /// A DOCTYPE (XXE, entity expansion) is never accepted.
    #[error("DOCTYPE present")]
    Doctype,
    /// An entity reference other than the predefined ones.
    #[error("entity reference `&{0};`")]
    Entity(String),
    /// A processing instruction.
    #[error("processing instruction present")]
    ProcessingInstruction,
    /// A comment inside the assertion (could truncate NameID or attribute text).
    #[error("comment inside the assertion")]
    CommentInAssertion,
    /// Too deep, too many attributes or elements.
    #[error("too complex: {0}")]
    Limits(&'static str),
    /// Not a SAML 2.0 Response at the root.
    #[error("root element is not a SAML 2.0 Response")]
    NotResponse,
    /// Zero or several assertions (plain or encrypted).
    #[error("{0} assertions; exactly one is required")]
    AssertionCount(usize),
    /// The assertion is not a direct child of the Response.
    #[error("the assertion is not a direct child of the Response")]
    AssertionPlacement,
    /// Two elements share an ID.
    #[error("duplicate ID `{0}`")]
    DuplicateId(String),
    /// An element that must carry an ID has none.
    #[error("{0} without an ID")]
    MissingId(&'static str),
    /// A signature somewhere else than on the Response or the assertion, or referencing
    /// something else than its parent.
    #[error("signature placement: {0}")]
    SignaturePlacement(String),
    /// Neither the Response nor the assertion is signed.
    #[error("no signature on the Response or the assertion")]
    Unsigned,
    /// An encrypted assertion whose encryption cannot be trusted here.
    #[error("encrypted assertion: {0}")]
    Encryption(&'static str),
}

/// What the pre-scan learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// The Response's ID.
    pub response_id: String,
    /// `InResponseTo` of the Response, if any.
    pub in_response_to: Option<String>,
    /// The assertion's ID (`None` when it is encrypted).
    pub assertion_id: Option<String>,
    /// Whether the assertion is an `EncryptedAssertion`.
    pub encrypted: bool,
    /// A signature on the Response references the Response.
    pub response_signed: bool,
    /// A signature on the assertion references the assertion.
    pub assertion_signed: bool,
    /// The first Issuer of the Response or the assertion (unverified: it only selects
    /// which IdP's certificates to check against).
    pub issuer: Option<String>,
}

fn is(ns: &ResolveResult, uri: &[u8]) -> bool {
    matches!(ns, ResolveResult::Bound(n) if n.as_ref() == uri)
}

fn attr(e: &BytesStart, name: &[u8]) -> Result<Option<String>, Refused> {
    for a in e.attributes().with_checks(true) {
        let a = a.map_err(|err| Refused::Malformed(err.to_string()))?;
        if a.key.as_ref() == name {
            let v = a
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|err| Refused::Malformed(err.to_string()))?;
            return Ok(Some(v.into_owned()));
        }
    }
    Ok(None)
}

/// One open element on the stack.
struct Open {
    kind: Kind,
    id: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Response,
    Assertion,
    EncryptedAssertion,
    Signature,
    Other,
}

/// A `ds:Signature` seen: its parent and the references inside it.
struct Sig {
    parent: Kind,
    parent_id: Option<String>,
    references: Vec<String>,
}

/// Scans `xml` (already size-capped by the caller).
pub fn scan(xml: &str) -> Result<Shape, Refused> {
    // XML 1.0 allows no control characters but tab, LF and CR. libxml2 in recovery mode
    // silently drops them (or stops at a NUL), so the identity it reads could differ from
    // the text here: refuse instead.
    if xml
        .bytes()
        .any(|b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r'))
    {
        return Err(Refused::Malformed("a control character".into()));
    }
    let mut reader = NsReader::from_str(xml);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Open> = Vec::new();
    let mut ids = HashSet::new();
    let mut elements = 0usize;
    let mut root_seen = false;
    let mut shape = Shape {
        response_id: String::new(),
        in_response_to: None,
        assertion_id: None,
        encrypted: false,
        response_signed: false,
        assertion_signed: false,
        issuer: None,
    };
    let mut issuer_text: Option<String> = None;
    let mut assertions = 0usize;
    let mut sigs: Vec<Sig> = Vec::new();
    loop {
        let (ns, event) = reader
            .read_resolved_event()
            .map_err(|e| Refused::Malformed(e.to_string()))?;
        let empty = matches!(event, Event::Empty(_));
        match event {
            Event::DocType(_) => return Err(Refused::Doctype),
            Event::PI(_) => return Err(Refused::ProcessingInstruction),
            Event::GeneralRef(r) => {
                let name = String::from_utf8_lossy(r.as_ref()).into_owned();
                let predefined = matches!(name.as_str(), "lt" | "gt" | "amp" | "apos" | "quot");
                if !predefined && !name.starts_with('#') {
                    return Err(Refused::Entity(name));
                }
            }
            Event::Comment(_) => {
                if stack
                    .iter()
                    .any(|o| matches!(o.kind, Kind::Assertion | Kind::EncryptedAssertion))
                {
                    return Err(Refused::CommentInAssertion);
                }
            }
            Event::Start(e) | Event::Empty(e) => {
                if root_seen && stack.is_empty() {
                    return Err(Refused::Malformed(
                        "an element after the root element".into(),
                    ));
                }
                elements += 1;
                if elements > MAX_ELEMENTS {
                    return Err(Refused::Limits("too many elements"));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(Refused::Limits("nested too deep"));
                }
                if e.attributes().count() > MAX_ATTRIBUTES {
                    return Err(Refused::Limits("too many attributes on one element"));
                }
                let local = e.local_name();
                let local = local.as_ref();
                let id = attr(&e, b"ID")?;
                if let Some(id) = &id {
                    if !ids.insert(id.clone()) {
                        return Err(Refused::DuplicateId(id.clone()));
                    }
                }
                let kind = if !root_seen {
                    root_seen = true;
                    if !(is(&ns, PROTOCOL_NS) && local == b"Response") {
                        return Err(Refused::NotResponse);
                    }
                    shape.response_id = id.clone().ok_or(Refused::MissingId("Response"))?;
                    shape.in_response_to = attr(&e, b"InResponseTo")?;
                    Kind::Response
                } else if is(&ns, ASSERTION_NS)
                    && (local == b"Assertion" || local == b"EncryptedAssertion")
                {
                    assertions += 1;
                    let direct = stack.len() == 1 && stack[0].kind == Kind::Response;
                    if !direct {
                        return Err(Refused::AssertionPlacement);
                    }
                    if local == b"Assertion" {
                        shape.assertion_id =
                            Some(id.clone().ok_or(Refused::MissingId("Assertion"))?);
                        Kind::Assertion
                    } else {
                        shape.encrypted = true;
                        Kind::EncryptedAssertion
                    }
                } else if is(&ns, DSIG_NS) && local == b"Signature" {
                    let parent = stack.last().expect("root seen");
                    sigs.push(Sig {
                        parent: parent.kind,
                        parent_id: parent.id.clone(),
                        references: Vec::new(),
                    });
                    Kind::Signature
                } else {
                    let parent = stack.last().map(|o| o.kind);
                    if is(&ns, ASSERTION_NS)
                        && local == b"Issuer"
                        && !empty
                        && shape.issuer.is_none()
                        && matches!(parent, Some(Kind::Response | Kind::Assertion))
                    {
                        issuer_text = Some(String::new());
                    }
                    if is(&ns, DSIG_NS) && local == b"Reference" {
                        // Only count references of the Signature we are directly inside.
                        let in_sig = stack.iter().rev().any(|o| o.kind == Kind::Signature);
                        if in_sig {
                            if let Some(s) = sigs.last_mut() {
                                s.references.push(attr(&e, b"URI")?.unwrap_or_default());
                            }
                        }
                    }
                    if is(&ns, XMLENC_NS)
                        && local == b"EncryptionMethod"
                        && attr(&e, b"Algorithm")?.as_deref() == Some(RSA_1_5)
                    {
                        return Err(Refused::Encryption("rsa-1_5 key transport is refused"));
                    }
                    Kind::Other
                };
                if !empty {
                    stack.push(Open { kind, id });
                }
            }
            Event::End(_) => {
                if let Some(t) = issuer_text.take() {
                    shape.issuer = Some(t.trim().to_string());
                }
                stack.pop();
            }
            Event::Eof => break,
            Event::Text(t) => {
                if let Some(buf) = issuer_text.as_mut() {
                    buf.push_str(&t.decode().map_err(|e| Refused::Malformed(e.to_string()))?);
                }
            }
            Event::CData(_) | Event::Decl(_) => {}
        }
    }
    if !root_seen {
        return Err(Refused::NotResponse);
    }
    if assertions != 1 {
        return Err(Refused::AssertionCount(assertions));
    }
    for s in &sigs {
        let target = match s.parent {
            Kind::Response | Kind::Assertion => s.parent_id.as_deref().unwrap_or(""),
            _ => {
                return Err(Refused::SignaturePlacement(
                    "a signature outside the Response and the assertion".into(),
                ))
            }
        };
        if s.references.len() != 1 || s.references[0] != format!("#{target}") {
            return Err(Refused::SignaturePlacement(format!(
                "a signature must reference exactly its parent `#{target}`, found {:?}",
                s.references
            )));
        }
        let seen = match s.parent {
            Kind::Response => &mut shape.response_signed,
            _ => &mut shape.assertion_signed,
        };
        if *seen {
            return Err(Refused::SignaturePlacement(
                "two signatures on one element".into(),
            ));
        }
        *seen = true;
    }
    if !shape.response_signed && !shape.assertion_signed {
        return Err(Refused::Unsigned);
    }
    if shape.encrypted && !shape.response_signed {
        return Err(Refused::Encryption(
            "an encrypted assertion must be inside a signed Response",
        ));
    }
    Ok(shape)
}
