//! Property tests for the SAML entry points: whatever the input, `prescan::scan`,
//! `Saml::check`, `Saml::decode_form`, `redirect::decode` and the logout parsers return
//! instead of panicking; a really signed Response (xmlsec, `saml_craft`) stays accepted only
//! with exactly its own identity after any one-byte change or inserted fragment; and a
//! Redirect-binding message is never reported signed without a `Signature` parameter.
//!
//! Kept fast for the normal suite (≤ 64 cases a property); `PROPTEST_CASES=N` runs deeper.
//! Failures are not persisted to a file: proptest prints the minimal failing input.

use std::sync::OnceLock;
use std::time::SystemTime;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use openssl::pkey::{PKey, Private, Public};
use proptest::prelude::*;
use proptest::sample::select;
use sidegate::login::saml::redirect::{self, BindingError, Kind};
use sidegate::login::saml::{logout, prescan, Saml, SpUrls, Verified};

use crate::support::saml_craft::{element, metadata, Craft, Sign, TestIdpKey, IDP_ENTITY, REQ_ID};
use crate::support::{config_text, load, Keys, DEAD_ISSUER};

const ORIGIN: &str = "http://127.0.0.1:4180";
const SP_ENTITY: &str = "http://127.0.0.1:4180/.sidegate/saml/metadata";
const ACS: &str = "http://127.0.0.1:4180/.sidegate/saml/acs";

/// `cases` per property unless `PROPTEST_CASES` says otherwise; no regression files.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 512,
        ..ProptestConfig::default()
    }
}

/// One SP, one IdP key and one valid response signed on both levels, built once.
struct Fixture {
    sp: Saml,
    craft: Craft,
    /// The signed Response (Sign::Both), accepted as `original`.
    xml: String,
    original: Verified,
    /// Byte range of the `saml:Assertion` element inside `xml`.
    assertion: std::ops::Range<usize>,
    /// Offsets just after each `>`: insertions there keep the document well-formed more often.
    boundaries: Vec<usize>,
    idp_key: PKey<Private>,
    idp_public: PKey<Public>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let key = TestIdpKey::new("prop idp");
        // As saml_check.rs's `sp(&[])`.
        let keys = Keys::new();
        std::fs::write(keys.path().join("idp.xml"), metadata(IDP_ENTITY, &[&key])).unwrap();
        let mut text = config_text(ORIGIN, "http://127.0.0.1:9", DEAD_ISSUER, &[]);
        text.push_str("\n[saml]\nidp_metadata_file = \"idp.xml\"\n");
        let sp = Saml::new(
            load(&text, &keys).saml.unwrap(),
            SpUrls::new(ORIGIN, "/.sidegate"),
        )
        .unwrap();

        let craft = Craft::new(SystemTime::now(), SP_ENTITY, ACS);
        let xml = craft.signed(&key, Sign::Both);
        let original = sp
            .check(&xml, Some(REQ_ID), craft.now)
            .expect("the untouched response is accepted");
        assert_eq!(original.name_id, "alice");
        let a = element(&xml, "<saml:Assertion", "</saml:Assertion>");
        let start = xml.find(a).unwrap();
        let boundaries = xml.match_indices('>').map(|(i, _)| i + 1).collect();
        let cert = openssl::x509::X509::from_der(&STANDARD.decode(&key.cert_b64).unwrap()).unwrap();
        Fixture {
            idp_key: PKey::private_key_from_der(&key.key_der).unwrap(),
            idp_public: cert.public_key().unwrap(),
            assertion: start..start + a.len(),
            boundaries,
            original,
            xml,
            craft,
            sp,
        }
    })
}

/// Checks `xml` as the response to `REQ_ID` at the fixture's time.
fn check(xml: &str) -> Result<Verified, sidegate::login::saml::SamlError> {
    let f = fixture();
    f.sp.check(xml, Some(REQ_ID), f.craft.now)
}

/// Accepted only as exactly the original: same NameID, attributes, assertion ID, issuer,
/// session index, InResponseTo and replay horizon.
fn refused_or_original(xml: &str) -> Result<(), TestCaseError> {
    if let Ok(v) = check(xml) {
        prop_assert_eq!(
            &v,
            &fixture().original,
            "accepted with another identity:\n{}",
            xml
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Generators

/// Pieces of XML and SAML that a byte-level generator would rarely hit.
const TOKENS: &[&str] = &[
    "<",
    ">",
    "</",
    "/>",
    "=",
    "\"",
    "'",
    "&",
    ";",
    "&amp;",
    "&lt;",
    "&#x41;",
    "&#0;",
    "&#xFFFFFFFF;",
    "&#55296;",
    "&x;",
    "<!--",
    "-->",
    "<!DOCTYPE r [<!ENTITY x \"y\">]>",
    "<![CDATA[",
    "]]>",
    "<?xml version=\"1.0\"?>",
    "<?pi x?>",
    "samlp:Response",
    "samlp:LogoutRequest",
    "samlp:LogoutResponse",
    "saml:Assertion",
    "saml:EncryptedAssertion",
    "ds:Signature",
    "ds:Reference",
    "saml:Issuer",
    "saml:NameID",
    "samlp:SessionIndex",
    "samlp:StatusCode",
    " ID=\"_a\"",
    " ID=\"_r\"",
    " URI=\"#_a\"",
    " URI=\"#_r\"",
    " Value=\"urn:oasis:names:tc:SAML:2.0:status:Success\"",
    " NotOnOrAfter=\"2030-01-01T00:00:00Z\"",
    " xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\"",
    " xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\"",
    " xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"",
    " xmlns=\"urn:oasis:names:tc:SAML:2.0:protocol\"",
    " xmlns:saml=\"\"",
    "\u{0}",
    "\u{FEFF}",
    "é",
    "\u{10FFFF}",
    " ",
    "\n",
    "\r",
];

/// Concatenated tokens and short random strings.
fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            3 => select(TOKENS).prop_map(String::from),
            1 => "\\PC{0,6}",
        ],
        0..80,
    )
    .prop_map(|v| v.concat())
}

const NAMES: &[&str] = &[
    "saml:Assertion",
    "saml:EncryptedAssertion",
    "ds:Signature",
    "ds:SignedInfo",
    "ds:Reference",
    "ds:Object",
    "xenc:EncryptedData",
    "xenc:EncryptionMethod",
    "saml:Issuer",
    "saml:NameID",
    "samlp:SessionIndex",
    "samlp:Status",
    "samlp:StatusCode",
    "samlp:Extensions",
    "saml:Subject",
    "saml:AttributeStatement",
    "x:Other",
];

const ATTRS: &[&str] = &[
    " ID=\"_a\"",
    " ID=\"_b\"",
    " ID=\"_r\"",
    " ID=\"\"",
    " URI=\"#_a\"",
    " URI=\"#_b\"",
    " URI=\"#_r\"",
    " URI=\"\"",
    " Algorithm=\"http://www.w3.org/2001/04/xmlenc#rsa-1_5\"",
    " Algorithm=\"http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p\"",
    " Value=\"urn:oasis:names:tc:SAML:2.0:status:Success\"",
    " xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:protocol\"",
    " xmlns:ds=\"urn:oasis:names:tc:SAML:2.0:assertion\"",
    " xmlns=\"http://www.w3.org/2000/09/xmldsig#\"",
    " a=\"&lt;&#65;\"",
    " a='\"'",
];

/// Well-formed element trees over SAML names, namespaces, IDs and references: they get past
/// the parser and exercise the pre-scan's shape rules.
fn tree() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        select(
            &[
                "",
                "text",
                "alice",
                "&amp;",
                "&#x6D;",
                "<!-- c -->",
                "<![CDATA[x]]>"
            ][..]
        )
        .prop_map(String::from),
        select(NAMES).prop_map(|n| format!("<{n}/>")),
    ];
    leaf.prop_recursive(5, 48, 5, |inner| {
        (
            select(NAMES),
            prop::collection::vec(select(ATTRS), 0..3),
            prop::collection::vec(inner, 0..5),
        )
            .prop_map(|(n, attrs, kids)| format!("<{n}{}>{}</{n}>", attrs.concat(), kids.concat()))
    })
}

const NS: &str = " xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" \
    xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" \
    xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\" \
    xmlns:xenc=\"http://www.w3.org/2001/04/xmlenc#\" xmlns:x=\"urn:x\"";

/// A document whose root is one of the SAML messages, with `tree()` children.
fn document() -> impl Strategy<Value = String> {
    (
        select(
            &[
                "samlp:Response",
                "samlp:LogoutRequest",
                "samlp:LogoutResponse",
            ][..],
        ),
        prop::collection::vec(select(ATTRS), 0..3),
        prop::collection::vec(tree(), 0..5),
    )
        .prop_map(|(root, attrs, kids)| {
            format!("<{root}{NS}{}>{}</{root}>", attrs.concat(), kids.concat())
        })
}

/// Query-string soup around the Redirect-binding parameter names.
fn query() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        select(
            &[
                "SAMLRequest=",
                "SAMLResponse=",
                "RelayState=",
                "SigAlg=",
                "Signature=",
                "SigAlg=http%3A%2F%2Fwww.w3.org%2F2001%2F04%2Fxmldsig-more%23rsa-sha256",
                "SigAlg=http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
                "Signature=AAAA",
                "signature=AAAA",
                "&",
                "=",
                "%",
                "%2B",
                "%ZZ",
                "%00",
                "+",
                "fZA9D4IwEIb%2FCuluoFBUrpDEQRNXBxcXAw",
                "AAAA",
                "====",
                "%F0%9F%A6%80",
                "%C3%28",
            ][..]
        )
        .prop_map(String::from),
        "[A-Za-z0-9+/=%&]{0,12}",
        "\\PC{0,4}",
    ];
    prop::collection::vec(part, 0..24).prop_map(|v| v.concat())
}

/// A deflated, base64'd, percent-encoded message carrying `xml`, as `encode` writes it.
fn deflated_param(xml: &str) -> String {
    use std::io::Write as _;
    let mut d = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    d.write_all(xml.as_bytes()).unwrap();
    let b64 = STANDARD.encode(d.finish().unwrap());
    url::form_urlencoded::byte_serialize(b64.as_bytes()).collect()
}

/// Whether `query` has a parameter named exactly `Signature` (as the binding reads it).
fn has_signature_param(query: &str) -> bool {
    query
        .split('&')
        .any(|p| p.split_once('=').map_or(p, |(k, _)| k) == "Signature")
}

/// Decodes `query` as both kinds and parses what decodes: never panics, nothing counts as
/// signed without a `Signature` parameter and, when `forged`, no signature verifies.
fn decode_both(query: &str, forged: bool) -> Result<(), TestCaseError> {
    let f = fixture();
    for kind in [Kind::Request, Kind::Response] {
        let Ok(m) = redirect::decode(query, kind) else {
            continue;
        };
        let keys = [f.idp_public.clone()];
        if !has_signature_param(query) {
            prop_assert!(
                !m.is_signed(),
                "signed without a Signature parameter: {query}"
            );
            prop_assert_eq!(
                redirect::verify(&m, &keys, true),
                Err(BindingError::Unsigned)
            );
        } else if forged {
            prop_assert!(
                redirect::verify(&m, &keys, true).is_err(),
                "a random signature verified: {query}"
            );
        }
        let _ = logout::parse_request(&m.xml);
        let _ = logout::parse_response(&m.xml);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Never panic on arbitrary input

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn scan_and_logout_parsers_never_panic_on_strings(s in any::<String>()) {
        let _ = prescan::scan(&s);
        let _ = logout::parse_request(&s);
        let _ = logout::parse_response(&s);
    }

    #[test]
    fn scan_and_logout_parsers_never_panic_on_xml_soup(s in soup()) {
        let _ = prescan::scan(&s);
        let _ = logout::parse_request(&s);
        let _ = logout::parse_response(&s);
    }

    /// Well-formed SAML-shaped trees pass the parser and reach the pre-scan's rules and
    /// samael; without a real signature none is ever accepted.
    #[test]
    fn random_saml_trees_are_never_accepted(doc in document()) {
        if let Ok(shape) = prescan::scan(&doc) {
            prop_assert!(shape.response_signed || shape.assertion_signed);
            prop_assert!(shape.encrypted || shape.assertion_id.is_some());
        }
        prop_assert!(check(&doc).is_err(), "accepted: {}", doc);
        prop_assert!(fixture().sp.check(&doc, None, fixture().craft.now).is_err());
        if let Ok(r) = logout::parse_request(&doc) {
            prop_assert!(!r.name_id.is_empty());
        }
        let _ = logout::parse_response(&doc);
    }

    #[test]
    fn decode_form_never_panics_on_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = fixture().sp.decode_form(&body);
    }

    /// A form carrying base64 of anything decodes to exactly those bytes when UTF-8.
    #[test]
    fn decode_form_round_trips(
        xml in prop_oneof![soup(), document()],
        relay in proptest::option::of(any::<String>()),
        wrap in any::<bool>(),
    ) {
        let mut b64 = STANDARD.encode(xml.as_bytes());
        if wrap {
            // Some IdPs wrap the base64 at 76 columns.
            b64 = b64.as_bytes().chunks(76).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join("\r\n");
        }
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("SAMLResponse", &b64);
        if let Some(r) = &relay {
            form.append_pair("RelayState", r);
        }
        let got = fixture().sp.decode_form(form.finish().as_bytes()).unwrap();
        prop_assert_eq!(got.xml, xml);
        prop_assert_eq!(got.relay_state, relay);
    }

    #[test]
    fn redirect_decode_never_panics_nor_claims_a_signature(q in query()) {
        decode_both(&q, true)?;
    }

    /// Real deflated messages (random XML) with random other parameters around them.
    #[test]
    fn redirect_decode_with_a_real_message_and_random_parameters(
        xml in prop_oneof![soup(), document()],
        name in select(&["SAMLRequest", "SAMLResponse"][..]),
        before in query(),
        after in query(),
    ) {
        let q = format!("{before}&{name}={}&{after}", deflated_param(&xml));
        decode_both(&q, true)?;
        let q = format!("{name}={}{after}", deflated_param(&xml));
        decode_both(&q, true)?;
    }
}

// ---------------------------------------------------------------------------------------
// Redirect binding: round trip, and a signed query only verifies untouched

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn redirect_round_trip_and_one_byte_changes(
        xml in prop_oneof![soup(), document()],
        relay in proptest::option::of(any::<String>()),
        signed in any::<bool>(),
        kind in select(&[Kind::Request, Kind::Response][..]),
        at in any::<prop::sample::Index>(),
        byte in prop_oneof![0x20u8..0x7f, Just(b'&'), Just(b'='), Just(b'%')],
        delete in any::<bool>(),
    ) {
        let f = fixture();
        let dest = url::Url::parse("https://sp.test/slo?x=1").unwrap();
        let key = signed.then_some(&f.idp_key);
        let url = redirect::encode(&dest, kind, &xml, relay.as_deref(), key).unwrap();
        let query = url.query().unwrap().to_string();
        let keys = [f.idp_public.clone()];
        let m = redirect::decode(&query, kind).unwrap();
        prop_assert_eq!(&m.xml, &xml);
        prop_assert_eq!(&m.relay_state, &relay);
        prop_assert_eq!(m.is_signed(), signed);
        prop_assert_eq!(redirect::verify(&m, &keys, signed), Ok(()));
        if !signed {
            prop_assert_eq!(redirect::verify(&m, &keys, true), Err(BindingError::Unsigned));
        }

        // One byte replaced or deleted: if it still verifies, it says the same thing.
        let mut bytes = query.into_bytes();
        let i = at.index(bytes.len());
        if delete { bytes.remove(i); } else { bytes[i] = byte; }
        let mutated = String::from_utf8(bytes).unwrap();
        decode_both(&mutated, !signed)?;
        if let Ok(m2) = redirect::decode(&mutated, kind) {
            if redirect::verify(&m2, &keys, true).is_ok() {
                prop_assert_eq!(&m2.xml, &xml, "changed message verified: {}", mutated);
                prop_assert_eq!(&m2.relay_state, &relay, "changed relay verified: {}", mutated);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// A signed response: accepted only untouched (or changed where the change means nothing)

/// One-byte edit: replace with a printable (or XML-significant) byte, delete, or insert.
#[derive(Debug, Clone)]
enum Edit {
    Replace(u8),
    Delete,
    Insert(u8),
}

fn edit() -> impl Strategy<Value = Edit> {
    let byte = prop_oneof![
        4 => 0x20u8..0x7f,
        1 => select(&[b'\t', b'\n', b'\r', 0u8, 0x7f][..]),
    ];
    prop_oneof![
        3 => byte.clone().prop_map(Edit::Replace),
        1 => Just(Edit::Delete),
        1 => byte.prop_map(Edit::Insert),
    ]
}

fn apply(xml: &str, at: usize, e: &Edit) -> String {
    // The crafted response is ASCII: every offset is a char boundary, and so is the result.
    let mut b = xml.as_bytes().to_vec();
    match *e {
        Edit::Replace(x) => b[at] = x,
        Edit::Delete => {
            b.remove(at);
        }
        Edit::Insert(x) => b.insert(at, x),
    }
    String::from_utf8(b).expect("ASCII stays UTF-8")
}

/// Fragments an attacker would splice into a signed response.
fn fragments(f: &Fixture) -> Vec<String> {
    let original = &f.xml[f.assertion.clone()];
    let a_sig = element(original, "<ds:Signature", "</ds:Signature>").to_string();
    let r_sig = element(&f.xml, "<ds:Signature", "</ds:Signature>").to_string();
    let mut evil = f.craft.clone();
    evil.assertion_id = "_evil".into();
    evil.name_id = "mallory".into();
    evil.attributes = vec![("role".into(), vec!["admin".into()])];
    let evil_a = evil.assertion("");
    let mut same_id = evil.clone();
    same_id.assertion_id = f.craft.assertion_id.clone();
    let stripped = original.replace(&a_sig, "");
    vec![
        evil_a.clone(),
        same_id.assertion(""),
        evil.assertion(&a_sig),
        original.to_string(),
        original.replace(">alice</saml:NameID>", ">mallory</saml:NameID>"),
        format!("<samlp:Extensions>{original}</samlp:Extensions>"),
        format!("<ds:Object>{stripped}</ds:Object>"),
        a_sig.clone(),
        r_sig.clone(),
        a_sig.replace(
            "</ds:Signature>",
            &format!("<ds:Object>{evil_a}</ds:Object></ds:Signature>"),
        ),
        format!(
            "<ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"><ds:SignedInfo>\
             <ds:Reference URI=\"#{}\"/></ds:SignedInfo></ds:Signature>",
            f.craft.assertion_id
        ),
        "<saml:EncryptedAssertion xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\"/>".into(),
        "<!-- x -->".into(),
        "<!---->".into(),
        "<!DOCTYPE r [<!ENTITY x \"mallory\">]>".into(),
        "<?xml version=\"1.0\"?>".into(),
        "<?pi x?>".into(),
        "&x;".into(),
        "&#109;".into(),
        "<![CDATA[mallory]]>".into(),
        "mallory".into(),
        " ".into(),
        "<x:y xmlns:x=\"urn:x\"/>".into(),
        format!(" ID=\"{}\"", f.craft.assertion_id),
        " xmlns:saml=\"urn:evil\"".into(),
    ]
}

proptest! {
    #![proptest_config(config(64))]

    /// Any one-byte edit inside the signed assertion is refused, or accepted as exactly the
    /// original (e.g. an edit the canonicalisation erases).
    #[test]
    fn one_byte_edit_in_the_assertion_never_changes_the_identity(
        at in any::<prop::sample::Index>(),
        e in edit(),
    ) {
        let f = fixture();
        let i = f.assertion.start + at.index(f.assertion.len());
        refused_or_original(&apply(&f.xml, i, &e))?;
    }

    /// The same anywhere in the document: outside the assertion only the Response
    /// signature covers the bytes, and unsigned parts (KeyInfo) may change harmlessly.
    #[test]
    fn one_byte_edit_anywhere_never_changes_the_identity(
        at in any::<prop::sample::Index>(),
        e in edit(),
    ) {
        let f = fixture();
        let i = at.index(f.xml.len());
        refused_or_original(&apply(&f.xml, i, &e))?;
    }

    /// One to three fragments (extra assertions, signatures, comments, DOCTYPE, entities)
    /// spliced in at tag boundaries or anywhere: refused, or accepted as the original.
    #[test]
    fn spliced_fragments_never_change_the_identity(
        picks in prop::collection::vec(
            (any::<prop::sample::Index>(), any::<prop::sample::Index>(), any::<bool>()),
            1..=3,
        ),
    ) {
        let f = fixture();
        let frags = fragments(f);
        let mut xml = f.xml.clone();
        for (which, at, on_boundary) in picks {
            let frag = &frags[which.index(frags.len())];
            let i = if on_boundary {
                // Boundaries of the original; later insertions shift it, which is fine.
                f.boundaries[at.index(f.boundaries.len())].min(xml.len())
            } else {
                at.index(xml.len() + 1)
            };
            xml.insert_str(i, frag);
        }
        refused_or_original(&xml)?;
    }
}

// ---------------------------------------------------------------------------------------
// Regressions found by the properties above (minimised by hand)

/// quick-xml reads several top-level elements; a `ds:Signature` after the Response closed
/// reached `prescan`'s `stack.last().expect("root seen")` and panicked. Found by
/// `spliced_fragments_never_change_the_identity` (a copied signature at the last boundary).
#[test]
fn a_signature_after_the_root_element_is_refused_without_panicking() {
    let f = fixture();
    let sig = element(&f.xml, "<ds:Signature", "</ds:Signature>");
    let minimal = format!(
        "<samlp:Response xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" ID=\"_r\"/>\
         <ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"/>"
    );
    for xml in [minimal, format!("{}{sig}", f.xml)] {
        let r = std::panic::catch_unwind(|| check(&xml));
        assert!(
            matches!(r, Ok(Err(_))),
            "must be refused without a panic: {xml}"
        );
    }
}
