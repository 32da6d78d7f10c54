//! Single-logout messages: building our LogoutRequest/LogoutResponse, and reading the IdP's.
//!
//! samael's `LogoutRequest` models `SessionIndex` as an attribute (it is an element), so
//! these small documents are written and read here: writing escapes every value, reading is
//! a strict quick-xml pass (no DTD, no comments, no entities) over a message whose query
//! signature was already checked.

use chrono::{DateTime, Utc};
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

const PROTOCOL_NS: &[u8] = b"urn:oasis:names:tc:SAML:2.0:protocol";
const ASSERTION_NS: &[u8] = b"urn:oasis:names:tc:SAML:2.0:assertion";
/// `StatusCode` for a completed logout.
pub const SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
/// `StatusCode` when the session named is not this browser's.
pub const RESPONDER: &str = "urn:oasis:names:tc:SAML:2.0:status:Responder";

/// Why a logout message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogoutError {
    /// Not well-formed, or a DTD, comment, PI or entity.
    #[error("unreadable logout message: {0}")]
    Xml(String),
    /// The root is not the expected message.
    #[error("not a {0}")]
    WrongRoot(&'static str),
    /// A required part is missing.
    #[error("missing {0}")]
    Missing(&'static str),
}

/// An IdP's LogoutRequest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutRequestIn {
    /// `ID`, answered by `InResponseTo`.
    pub id: String,
    /// The sending IdP.
    pub issuer: String,
    /// Where it was sent.
    pub destination: Option<String>,
    /// Expiry of the request itself.
    pub not_on_or_after: Option<DateTime<Utc>>,
    /// Whose sessions end.
    pub name_id: String,
    /// Which of their sessions (all when empty).
    pub session_indexes: Vec<String>,
}

/// An IdP's LogoutResponse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutResponseIn {
    /// The request it answers.
    pub in_response_to: Option<String>,
    /// The sending IdP.
    pub issuer: Option<String>,
    /// Where it was sent.
    pub destination: Option<String>,
    /// Top-level `StatusCode` value.
    pub status: String,
}

/// What one strict pass collects: root attributes and the text of a few elements.
#[derive(Default)]
struct Collected {
    root: Option<(bool, Vec<u8>)>,
    attrs: Vec<(String, String)>,
    issuer: Option<String>,
    name_id: Option<String>,
    session_indexes: Vec<String>,
    status: Option<String>,
}

fn collect(xml: &str) -> Result<Collected, LogoutError> {
    let bad = |e: &dyn std::fmt::Display| LogoutError::Xml(e.to_string());
    let mut r = NsReader::from_str(xml);
    let mut c = Collected::default();
    let mut capture: Option<(&'static str, String)> = None;
    let mut depth = 0usize;
    loop {
        let (ns, ev) = r.read_resolved_event().map_err(|e| bad(&e))?;
        let in_ns = |uri: &[u8]| matches!(ns, ResolveResult::Bound(n) if n.as_ref() == uri);
        let empty = matches!(ev, Event::Empty(_));
        match ev {
            Event::DocType(_) | Event::PI(_) | Event::Comment(_) => {
                return Err(LogoutError::Xml("DTD, comment or PI".into()))
            }
            Event::Start(e) | Event::Empty(e) => {
                depth += 1;
                if depth > 16 {
                    return Err(LogoutError::Xml("nested too deep".into()));
                }
                let local = e.local_name().as_ref().to_vec();
                let attr = |name: &[u8]| -> Result<Option<String>, LogoutError> {
                    for a in e.attributes().with_checks(true) {
                        let a = a.map_err(|x| bad(&x))?;
                        if a.key.as_ref() == name {
                            let v = a
                                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                                .map_err(|x| bad(&x))?;
                            return Ok(Some(v.into_owned()));
                        }
                    }
                    Ok(None)
                };
                if c.root.is_none() {
                    for n in ["ID", "Destination", "NotOnOrAfter", "InResponseTo"] {
                        if let Some(v) = attr(n.as_bytes())? {
                            c.attrs.push((n.to_string(), v));
                        }
                    }
                    c.root = Some((in_ns(PROTOCOL_NS), local));
                } else if depth == 2 && !empty {
                    capture = match (in_ns(ASSERTION_NS), in_ns(PROTOCOL_NS), &local[..]) {
                        (true, _, b"Issuer") => Some(("Issuer", String::new())),
                        (true, _, b"NameID") => Some(("NameID", String::new())),
                        (_, true, b"SessionIndex") => Some(("SessionIndex", String::new())),
                        _ => None,
                    };
                } else if depth == 3 && in_ns(PROTOCOL_NS) && local == b"StatusCode" {
                    c.status = attr(b"Value")?;
                }
                if empty {
                    depth -= 1;
                }
            }
            Event::Text(t) => {
                if let Some((_, buf)) = capture.as_mut() {
                    buf.push_str(&t.decode().map_err(|e| bad(&e))?);
                }
            }
            Event::GeneralRef(g) => {
                let ch = match &*g {
                    b"lt" => '<',
                    b"gt" => '>',
                    b"amp" => '&',
                    b"apos" => '\'',
                    b"quot" => '"',
                    _ => g
                        .resolve_char_ref()
                        .map_err(|e| bad(&e))?
                        .ok_or_else(|| LogoutError::Xml("entity reference".into()))?,
                };
                if let Some((_, buf)) = capture.as_mut() {
                    buf.push(ch);
                }
            }
            Event::End(_) => {
                if let Some((which, text)) = capture.take() {
                    let text = text.trim().to_string();
                    match which {
                        "Issuer" => c.issuer = Some(text),
                        "NameID" => c.name_id = Some(text),
                        _ => c.session_indexes.push(text),
                    }
                }
                depth = depth.saturating_sub(1);
            }
            Event::Eof => break,
            Event::CData(_) | Event::Decl(_) => {}
        }
    }
    Ok(c)
}

impl Collected {
    fn attr(&self, name: &str) -> Option<String> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    fn expect_root(&self, local: &'static str) -> Result<(), LogoutError> {
        match &self.root {
            Some((true, l)) if l == local.as_bytes() => Ok(()),
            _ => Err(LogoutError::WrongRoot(local)),
        }
    }
}

/// Reads an IdP's LogoutRequest.
pub fn parse_request(xml: &str) -> Result<LogoutRequestIn, LogoutError> {
    let c = collect(xml)?;
    c.expect_root("LogoutRequest")?;
    Ok(LogoutRequestIn {
        id: c.attr("ID").ok_or(LogoutError::Missing("ID"))?,
        destination: c.attr("Destination"),
        not_on_or_after: c
            .attr("NotOnOrAfter")
            .map(|t| {
                DateTime::parse_from_rfc3339(&t)
                    .map(|d| d.with_timezone(&Utc))
                    .map_err(|_| LogoutError::Xml("NotOnOrAfter is not a time".into()))
            })
            .transpose()?,
        issuer: c.issuer.ok_or(LogoutError::Missing("Issuer"))?,
        name_id: c
            .name_id
            .filter(|n| !n.is_empty())
            .ok_or(LogoutError::Missing("NameID"))?,
        session_indexes: c.session_indexes,
    })
}

/// Reads an IdP's LogoutResponse.
pub fn parse_response(xml: &str) -> Result<LogoutResponseIn, LogoutError> {
    let c = collect(xml)?;
    c.expect_root("LogoutResponse")?;
    Ok(LogoutResponseIn {
        in_response_to: c.attr("InResponseTo"),
        destination: c.attr("Destination"),
        issuer: c.issuer,
        status: c.status.ok_or(LogoutError::Missing("StatusCode"))?,
    })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

fn instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Our LogoutRequest for `name_id`'s session `session_index`.
pub fn request_xml(
    id: &str,
    now: DateTime<Utc>,
    destination: &str,
    issuer: &str,
    name_id: &str,
    name_id_format: Option<&str>,
    session_index: &str,
) -> String {
    let format = name_id_format
        .map(|f| format!(" Format=\"{}\"", esc(f)))
        .unwrap_or_default();
    format!(
        "<samlp:LogoutRequest xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" \
         xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"{}\" Version=\"2.0\" \
         IssueInstant=\"{}\" Destination=\"{}\"><saml:Issuer>{}</saml:Issuer>\
         <saml:NameID{format}>{}</saml:NameID><samlp:SessionIndex>{}</samlp:SessionIndex>\
         </samlp:LogoutRequest>",
        esc(id),
        instant(now),
        esc(destination),
        esc(issuer),
        esc(name_id),
        esc(session_index),
    )
}

/// Our LogoutResponse to the IdP's request `in_response_to`.
pub fn response_xml(
    id: &str,
    now: DateTime<Utc>,
    destination: &str,
    issuer: &str,
    in_response_to: &str,
    status: &str,
) -> String {
    format!(
        "<samlp:LogoutResponse xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" \
         xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"{}\" Version=\"2.0\" \
         IssueInstant=\"{}\" Destination=\"{}\" InResponseTo=\"{}\"><saml:Issuer>{}</saml:Issuer>\
         <samlp:Status><samlp:StatusCode Value=\"{}\"/></samlp:Status></samlp:LogoutResponse>",
        esc(id),
        instant(now),
        esc(destination),
        esc(in_response_to),
        esc(issuer),
        esc(status),
    )
}
