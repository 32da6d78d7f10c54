//! The SAML response check against crafted, really signed responses: every rule of the
//! check refuses its attack with its own reason, and the well-formed response passes.
//! Each wrapping test asserts the *pre-scan* refusal: samael alone would return the signed
//! assertion (fail-safe but silent); our guard must refuse the document outright.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use sidegate::login::saml::{Saml, SamlError, SpUrls, Verified};

use crate::support::saml_craft::{
    element, metadata, sig_template, sign, Craft, Sign, TestIdpKey, IDP_ENTITY, REQ_ID,
};
use crate::support::{config_text, load, Keys, DEAD_ISSUER};

const ORIGIN: &str = "http://127.0.0.1:4180";
const SP_ENTITY: &str = "http://127.0.0.1:4180/.sidegate/saml/metadata";
const ACS: &str = "http://127.0.0.1:4180/.sidegate/saml/acs";

fn idp_key() -> &'static TestIdpKey {
    static K: OnceLock<TestIdpKey> = OnceLock::new();
    K.get_or_init(|| TestIdpKey::new("test idp"))
}

fn other_key() -> &'static TestIdpKey {
    static K: OnceLock<TestIdpKey> = OnceLock::new();
    K.get_or_init(|| TestIdpKey::new("attacker"))
}

/// A SAML SP for the test IdP; `lines` go into `[saml]`.
fn sp(lines: &[&str]) -> Saml {
    sp_and_identity(lines).0
}

/// `sp`, with the deployment's identity rules.
fn sp_and_identity(lines: &[&str]) -> (Saml, sidegate::config::IdentityConfig) {
    let keys = Keys::new();
    std::fs::write(
        keys.path().join("idp.xml"),
        metadata(IDP_ENTITY, &[idp_key()]),
    )
    .unwrap();
    let mut text = config_text(ORIGIN, "http://127.0.0.1:9", DEAD_ISSUER, &[]);
    text.push_str("\n[saml]\nidp_metadata_file = \"idp.xml\"\n");
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    let cfg = load(&text, &keys);
    let identity = cfg.identity.clone();
    (
        Saml::new(cfg.saml.unwrap(), SpUrls::new(ORIGIN, "/.sidegate")).unwrap(),
        identity,
    )
}

fn craft() -> Craft {
    Craft::new(SystemTime::now(), SP_ENTITY, ACS)
}

fn check(s: &Saml, xml: &str, c: &Craft) -> Result<Verified, SamlError> {
    s.check(xml, Some(REQ_ID), c.now)
}

/// Asserts a refusal with reason `why`.
fn refused(r: Result<Verified, SamlError>, why: &str) {
    match r {
        Ok(v) => panic!("accepted, expected `{why}`: {v:?}"),
        Err(e) => assert_eq!(e.reason(), why, "wrong reason: {e}"),
    }
}

#[test]
fn well_formed_responses_pass_with_every_signature_placement() {
    let s = sp(&[]);
    for what in [Sign::Both, Sign::Response, Sign::Assertion] {
        let c = craft();
        let v =
            check(&s, &c.signed(idp_key(), what), &c).unwrap_or_else(|e| panic!("{what:?}: {e}"));
        assert_eq!(v.name_id, "alice");
        assert_eq!(v.issuer, IDP_ENTITY);
        assert_eq!(v.assertion_id, c.assertion_id);
        assert_eq!(v.session_index.as_deref(), Some("_session-1"));
        assert!(v
            .attributes
            .contains(&("groups".into(), vec!["admins".into(), "devs".into()])));
    }
}

#[test]
fn unsigned_and_foreign_signatures_are_refused() {
    let s = sp(&[]);
    let c = craft();
    refused(
        check(&s, &c.signed(idp_key(), Sign::Neither), &c),
        "unsigned",
    );
    refused(
        check(&s, &c.signed(other_key(), Sign::Both), &c),
        "signature",
    );
    // Own-signature policy: a Response signature alone is not enough.
    let strict = sp(&["assertion_signature = \"own\""]);
    refused(
        check(&strict, &c.signed(idp_key(), Sign::Response), &c),
        "assertion_unsigned",
    );
    assert!(check(&strict, &c.signed(idp_key(), Sign::Assertion), &c).is_ok());
}

#[test]
fn a_change_after_signing_breaks_the_signature() {
    let s = sp(&[]);
    let c = craft();
    for what in [Sign::Both, Sign::Assertion, Sign::Response] {
        let xml = c
            .signed(idp_key(), what)
            .replace(">alice</saml:NameID>", ">mallory</saml:NameID>");
        refused(check(&s, &xml, &c), "signature");
    }
}

#[test]
fn signature_algorithms_outside_the_allow_list_are_refused() {
    // RSA-SHA224 verifies fine in xmlsec, but is not on sidegate's allow-list.
    let s = sp(&[]);
    let c = craft();
    let tpl = sig_template(&c.assertion_id, &idp_key().cert_b64)
        .replace("xmldsig-more#rsa-sha256", "xmldsig-more#rsa-sha224")
        .replace("xmlenc#sha256", "xmldsig-more#sha224");
    let xml = sign(&c.response("", &c.assertion(&tpl)), idp_key());
    refused(check(&s, &xml, &c), "signature");
}

/// The signed assertion, and an evil copy (other ID, other user) without a signature.
fn evil_pair(c: &Craft, what: Sign) -> (String, String, String) {
    let signed = c.signed(idp_key(), what);
    let original = element(&signed, "<saml:Assertion", "</saml:Assertion>").to_string();
    let mut evil = c.clone();
    evil.assertion_id = "_evil".into();
    evil.name_id = "mallory".into();
    (signed.clone(), original, evil.assertion(""))
}

#[test]
fn signature_wrapping_xsw1_to_xsw8_is_refused_by_the_prescan() {
    let s = sp(&[]);
    let c = craft();
    let mut cases: Vec<(&str, String)> = Vec::new();

    // XSW1/XSW2: the signed Response moved inside the signature (ds:Object) of a new
    // Response with another ID and an evil assertion.
    let (signed, _, evil) = evil_pair(&c, Sign::Response);
    let sig = element(&signed, "<ds:Signature", "</ds:Signature>").to_string();
    let wrapped_sig = sig.replace(
        "</ds:Signature>",
        &format!("<ds:Object>{signed}</ds:Object></ds:Signature>"),
    );
    let mut outer = c.clone();
    outer.response_id = "_outer".into();
    cases.push(("XSW1", outer.response(&wrapped_sig, &evil)));
    cases.push((
        "XSW2",
        outer.response(&format!("{sig}<ds:Object>{signed}</ds:Object>"), &evil),
    ));

    // XSW3: evil assertion before the signed one.
    let (signed, original, evil) = evil_pair(&c, Sign::Assertion);
    cases.push((
        "XSW3",
        signed.replace(&original, &format!("{evil}{original}")),
    ));
    // XSW4: the signed assertion inside the evil one.
    let evil_wrapping = evil.replace("</saml:Assertion>", &format!("{original}</saml:Assertion>"));
    cases.push(("XSW4", signed.replace(&original, &evil_wrapping)));
    // XSW5: the evil assertion carries the original signature; the original is appended.
    let a_sig = element(&original, "<ds:Signature", "</ds:Signature>").to_string();
    let evil_with_sig = evil.replace("</saml:Issuer>", &format!("</saml:Issuer>{a_sig}"));
    cases.push((
        "XSW5",
        signed.replace(&original, &format!("{evil_with_sig}{original}")),
    ));
    // XSW6: the original assertion inside the evil assertion's copied signature.
    let sig_with_object = a_sig.replace(
        "</ds:Signature>",
        &format!("<ds:Object>{original}</ds:Object></ds:Signature>"),
    );
    let evil6 = evil.replace(
        "</saml:Issuer>",
        &format!("</saml:Issuer>{sig_with_object}"),
    );
    cases.push(("XSW6", signed.replace(&original, &evil6)));
    // XSW7: the original in an Extensions element, the evil assertion in its place.
    cases.push((
        "XSW7",
        signed.replace(
            &original,
            &format!("<samlp:Extensions>{original}</samlp:Extensions>{evil}"),
        ),
    ));
    // XSW8: the evil assertion with a signature whose Object holds the original (its own
    // signature stripped).
    let stripped = original.replace(&a_sig, "");
    let sig8 = a_sig.replace(
        "</ds:Signature>",
        &format!("<ds:Object>{stripped}</ds:Object></ds:Signature>"),
    );
    let evil8 = evil.replace("</saml:Issuer>", &format!("</saml:Issuer>{sig8}"));
    cases.push(("XSW8", signed.replace(&original, &evil8)));

    for (name, xml) in cases {
        match check(&s, &xml, &c) {
            Ok(v) => panic!("{name} accepted as {}", v.name_id),
            Err(e) => assert!(
                matches!(e, SamlError::Shape(_)),
                "{name} must be refused by the pre-scan, got: {e}"
            ),
        }
    }
}

#[test]
fn two_assertions_and_duplicate_ids_are_refused() {
    let s = sp(&[]);
    let c = craft();
    let signed = c.signed(idp_key(), Sign::Response);
    let original = element(&signed, "<saml:Assertion", "</saml:Assertion>").to_string();
    let mut other = c.clone();
    other.assertion_id = "_second".into();
    let two = signed.replace(&original, &format!("{original}{}", other.assertion("")));
    refused(check(&s, &two, &c), "shape");
    // A second element with the assertion's ID.
    let dup = signed.replace(
        "<samlp:Status>",
        &format!(
            r#"<samlp:Extensions ID="{}"/><samlp:Status>"#,
            c.assertion_id
        ),
    );
    refused(check(&s, &dup, &c), "shape");
}

#[test]
fn a_comment_inside_the_name_id_is_refused_not_truncated() {
    let s = sp(&[]);
    let mut c = craft();
    c.name_id = "admin@corp.test<!---->.evil.test".into();
    for what in [Sign::Both, Sign::Assertion] {
        refused(check(&s, &c.signed(idp_key(), what), &c), "comment");
    }
    let mut c = craft();
    c.attributes = vec![("uid".into(), vec!["alice<!-- x -->-admin".into()])];
    refused(check(&s, &c.signed(idp_key(), Sign::Both), &c), "comment");
}

#[test]
fn time_windows_are_enforced_with_skew() {
    let s = sp(&["clock_skew = \"2m\""]);
    let c = craft();
    let xml = c.signed(idp_key(), Sign::Both);
    // Within the skew: fine. Past it: expired / not yet valid.
    assert!(s
        .check(&xml, Some(REQ_ID), c.now + Duration::from_secs(300 + 60))
        .is_ok());
    refused(
        s.check(&xml, Some(REQ_ID), c.now + Duration::from_secs(300 + 121)),
        "expired",
    );
    refused(
        s.check(&xml, Some(REQ_ID), c.now - Duration::from_secs(60 + 121)),
        "not_yet_valid",
    );
    // The subject confirmation window alone.
    let mut short = craft();
    short.scd_not_on_or_after = short.now - Duration::from_secs(180);
    refused(
        check(&s, &short.signed(idp_key(), Sign::Both), &short),
        "expired",
    );
    // An IssueInstant long ago, even with wide Conditions.
    let mut old = craft();
    old.issue_instant = old.now - Duration::from_secs(3600);
    old.not_before = old.issue_instant;
    refused(
        check(&s, &old.signed(idp_key(), Sign::Both), &old),
        "expired",
    );
}

#[test]
fn audience_recipient_destination_issuer_and_status_must_be_ours() {
    let s = sp(&[]);
    let cases: Vec<(&str, fn(&mut Craft), Sign)> = vec![
        (
            "audience",
            |c| c.audience = "https://other-sp.test".into(),
            Sign::Both,
        ),
        (
            "recipient",
            |c| c.recipient = "https://other-sp.test/acs".into(),
            Sign::Both,
        ),
        (
            "destination",
            |c| c.destination = "https://other-sp.test/acs".into(),
            Sign::Both,
        ),
        (
            "issuer",
            |c| c.assertion_issuer = "https://evil-idp.test".into(),
            Sign::Assertion,
        ),
        (
            "issuer",
            |c| c.issuer = "https://evil-idp.test".into(),
            Sign::Both,
        ),
        (
            "status",
            |c| c.status = "urn:oasis:names:tc:SAML:2.0:status:Responder".into(),
            Sign::Both,
        ),
    ];
    for (why, change, what) in cases {
        let mut c = craft();
        change(&mut c);
        refused(check(&s, &c.signed(idp_key(), what), &c), why);
    }
    // No AudienceRestriction at all.
    let c = craft();
    let a = c.assertion(&sig_template(&c.assertion_id, &idp_key().cert_b64));
    let no_aud = a.replace(
        &format!("<saml:AudienceRestriction><saml:Audience>{SP_ENTITY}</saml:Audience></saml:AudienceRestriction>"),
        "",
    );
    let xml = sign(&c.response("", &no_aud), idp_key());
    refused(check(&s, &xml, &c), "audience");
}

#[test]
fn in_response_to_binds_the_response_to_this_browsers_request() {
    let s = sp(&[]);
    let c = craft();
    let xml = c.signed(idp_key(), Sign::Both);
    refused(
        s.check(&xml, Some("sg_another-request"), c.now),
        "in_response_to",
    );
    // Presented as unsolicited, a response to some request is refused too.
    refused(s.check(&xml, None, c.now), "in_response_to");
    // A real unsolicited response (no InResponseTo) passes the check itself.
    let mut u = craft();
    u.in_response_to = None;
    let v = s
        .check(&u.signed(idp_key(), Sign::Both), None, u.now)
        .unwrap();
    assert_eq!(v.in_response_to, None);
    // But it cannot answer a request.
    refused(
        s.check(&u.signed(idp_key(), Sign::Both), Some(REQ_ID), u.now),
        "in_response_to",
    );
}

#[test]
fn dtds_and_entity_expansion_are_refused_before_parsing() {
    let s = sp(&[]);
    let c = craft();
    let xml = c.signed(idp_key(), Sign::Both);
    let xxe = format!(
        "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>{}",
        xml.replace(">alice</saml:NameID>", ">&x;</saml:NameID>")
    );
    refused(check(&s, &xxe, &c), "doctype");
    let mut laughs = String::from("<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\">");
    for i in 1..10 {
        let prev = if i == 1 {
            "lol".to_string()
        } else {
            format!("lol{}", i - 1)
        };
        laughs.push_str(&format!(
            "<!ENTITY lol{i} \"{}\">",
            format!("&{prev};").repeat(10)
        ));
    }
    laughs.push_str("]>");
    // Refused by the pre-scan (reason `doctype`): libxml2 never expands anything.
    refused(
        check(
            &s,
            &format!("{laughs}{}", xml.replace(">alice<", ">&lol9;<")),
            &c,
        ),
        "doctype",
    );
    // An undeclared entity without a DTD.
    refused(check(&s, &xml.replace(">alice<", ">&x;<"), &c), "doctype");
}

#[test]
fn oversized_shapes_are_refused_cheaply() {
    let s = sp(&[]);
    let c = craft();
    let xml = c.signed(idp_key(), Sign::Both);
    let attrs: String = (0..50_000).map(|i| format!(" a{i}=\"x\"")).collect();
    let heavy = xml.replacen("<samlp:Status>", &format!("<samlp:Status{attrs}>"), 1);
    // The pre-scan refuses it (linear), before libxml2's quadratic attribute handling.
    match check(&s, &heavy, &c) {
        Err(SamlError::Shape(sidegate::login::saml::prescan::Refused::Limits(_))) => {}
        other => panic!("expected the pre-scan's limit refusal, got {other:?}"),
    }
    let deep = xml.replacen(
        "<samlp:Status>",
        &format!("{}<samlp:Status>", "<samlp:Extensions>".repeat(40)),
        1,
    );
    refused(check(&s, &deep, &c), "shape");
}

#[tokio::test]
async fn each_assertion_is_consumed_once() {
    let s = sp(&[]);
    let store = sidegate::store::Shared::Memory(Default::default());
    let c = craft();
    let xml = c.signed(idp_key(), Sign::Both);
    assert!(!s.seen_before(&store, &xml).await);
    let v = check(&s, &xml, &c).unwrap();
    assert!(s.first_use(&store, &v, c.now).await.unwrap());
    assert!(
        !s.first_use(&store, &v, c.now).await.unwrap(),
        "the second use is a replay"
    );
    assert!(
        s.seen_before(&store, &xml).await,
        "a replay is recognised before any signature work"
    );
    let other = craft();
    let w = check(&s, &other.signed(idp_key(), Sign::Both), &other).unwrap();
    assert!(s.first_use(&store, &w, other.now).await.unwrap());
}

#[test]
fn metadata_without_a_signing_certificate_is_refused_at_start() {
    let keys = Keys::new();
    let md = metadata(IDP_ENTITY, &[]);
    std::fs::write(keys.path().join("idp.xml"), md).unwrap();
    let mut text = config_text(ORIGIN, "http://127.0.0.1:9", DEAD_ISSUER, &[]);
    text.push_str("\n[saml]\nidp_metadata_file = \"idp.xml\"\n");
    let err = sidegate::config::load(&text, &sidegate::config::Env::new(), keys.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("saml.idp_metadata_file") && err.contains("signing certificate"),
        "{err}"
    );
}

#[test]
fn redirect_binding_messages_are_capped_when_inflated() {
    use sidegate::login::saml::redirect::{decode, encode, BindingError, Kind};
    let url = url::Url::parse("https://sp.test/slo").unwrap();
    // 10 MB of one letter deflates to a few KB: a classic bomb.
    let bomb = "a".repeat(10 * 1024 * 1024);
    let signed = encode(&url, Kind::Request, &bomb, None, None).unwrap();
    assert!(signed.as_str().len() < 64 * 1024);
    assert_eq!(
        decode(signed.query().unwrap(), Kind::Request).unwrap_err(),
        BindingError::TooLarge
    );
    // Missing pieces are errors, never panics.
    for q in [
        "",
        "SAMLRequest=",
        "SAMLRequest=%%%",
        "SAMLRequest=AAAA&SigAlg=x",
        "SAMLRequest=a&SAMLRequest=b",
    ] {
        assert!(decode(q, Kind::Request).is_err(), "{q}");
    }
}

#[test]
fn presets_read_the_identity_from_each_vendors_attribute_names() {
    let ms = "http://schemas.microsoft.com/ws/2008/06/identity/claims";
    let soap = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims";
    let cases: Vec<(&str, Vec<(String, Vec<String>)>)> = vec![
        (
            "entra",
            vec![
                (format!("{soap}/name"), vec!["alice@corp.test".into()]),
                (
                    format!("{soap}/emailaddress"),
                    vec!["alice@corp.test".into()],
                ),
                (format!("{ms}/role"), vec!["developer".into()]),
                (format!("{ms}/groups"), vec!["g-1".into(), "g-2".into()]),
            ],
        ),
        (
            "adfs",
            vec![
                (format!("{soap}/upn"), vec!["alice@corp.test".into()]),
                (
                    format!("{soap}/emailaddress"),
                    vec!["alice@corp.test".into()],
                ),
                (format!("{ms}/role"), vec!["developer".into()]),
                (
                    "http://schemas.xmlsoap.org/claims/Group".into(),
                    vec!["g-1".into(), "g-2".into()],
                ),
            ],
        ),
        (
            "okta",
            vec![
                ("username".into(), vec!["alice@corp.test".into()]),
                ("email".into(), vec!["alice@corp.test".into()]),
                ("role".into(), vec!["developer".into()]),
                ("groups".into(), vec!["g-1".into(), "g-2".into()]),
            ],
        ),
    ];
    for (preset, attributes) in cases {
        let (s, base) = sp_and_identity(&[&format!("preset = \"{preset}\"")]);
        let mut c = craft();
        c.name_id = "opaque-id-123".into();
        c.attributes = attributes;
        let v = check(&s, &c.signed(idp_key(), Sign::Both), &c).unwrap();
        let id = sidegate::identity::resolve(
            &s.idp(None).unwrap().identity_config(&base),
            &v.issuer,
            &Saml::claims(&v),
        )
        .unwrap();
        assert_eq!(id.user, "alice@corp.test", "{preset}");
        assert_eq!(
            id.subject, "opaque-id-123",
            "{preset}: the NameID is the subject"
        );
        assert_eq!(id.email.as_deref(), Some("alice@corp.test"), "{preset}");
        assert_eq!(id.role, "developer", "{preset}");
        assert_eq!(id.teams, ["g-1", "g-2"], "{preset}");
    }
    // Without any user attribute, the NameID is the user.
    let (s, base) = sp_and_identity(&[]);
    let mut c = craft();
    c.attributes = vec![];
    let v = check(&s, &c.signed(idp_key(), Sign::Both), &c).unwrap();
    let id = sidegate::identity::resolve(
        &s.idp(None).unwrap().identity_config(&base),
        &v.issuer,
        &Saml::claims(&v),
    )
    .unwrap();
    assert_eq!(id.user, "alice");
    assert_eq!(
        id.role, "viewer",
        "no role attribute: the least-privilege default"
    );
}

#[test]
fn saml_config_mistakes_name_the_key_and_the_fix() {
    let keys = Keys::new();
    std::fs::write(
        keys.path().join("idp.xml"),
        metadata(IDP_ENTITY, &[idp_key()]),
    )
    .unwrap();
    for (lines, key) in [
        (
            "idp_metadata_file = \"idp.xml\"\npreset = \"bogus\"",
            "saml.preset",
        ),
        (
            "idp_metadata_file = \"idp.xml\"\nidp_initiated = \"yes\"",
            "saml.idp_initiated",
        ),
        // Typos are unknown keys, in [saml] and in [saml.idps.<name>] alike.
        (
            "idp_metadata_file = \"idp.xml\"\nidp_initiatd = \"off\"",
            "saml.idp_initiatd: unknown key",
        ),
        (
            "idp_metadata_file = \"idp.xml\"\n[saml.idps.p]\nidp_metadata_file = \"idp.xml\"\nbogus = 1",
            "saml.idps.p.bogus: unknown key",
        ),
        (
            "idp_metadata_file = \"idp.xml\"\nsp_key_file = \"k.pem\"",
            "saml.sp_key_file",
        ),
        (
            "idp_metadata_file = \"idp.xml\"\nidp_metadata_url = \"https://x.test/md\"",
            "saml.idp_metadata_url",
        ),
        (
            "idp_metadata_url = \"http://idp.example/md\"",
            "saml.idp_metadata_url",
        ),
        (
            "idp_metadata_file = \"missing.xml\"",
            "saml.idp_metadata_file",
        ),
        (
            "sign_authn_requests = true\nidp_metadata_file = \"idp.xml\"",
            "saml.sign_authn_requests",
        ),
    ] {
        let mut text = config_text(ORIGIN, "http://127.0.0.1:9", DEAD_ISSUER, &[]);
        text.push_str(&format!("\n[saml]\n{lines}\n"));
        let err = sidegate::config::load(&text, &sidegate::config::Env::new(), keys.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{lines}: {err}");
    }
}

/// Two IdPs: the default test IdP, and `partner` with its own entity and key.
fn two_idps() -> Saml {
    let keys = Keys::new();
    std::fs::write(
        keys.path().join("idp.xml"),
        metadata(IDP_ENTITY, &[idp_key()]),
    )
    .unwrap();
    std::fs::write(
        keys.path().join("partner.xml"),
        metadata(PARTNER, &[other_key()])
            .replace("https://idp.test/sso", "https://partner.test/sso"),
    )
    .unwrap();
    let mut text = config_text(ORIGIN, "http://127.0.0.1:9", DEAD_ISSUER, &[]);
    text.push_str(
        "\n[saml]\nidp_metadata_file = \"idp.xml\"\n[saml.idps.partner]\nidp_metadata_file = \"partner.xml\"\npreset = \"okta\"\n",
    );
    let cfg = load(&text, &keys);
    Saml::new(cfg.saml.unwrap(), SpUrls::new(ORIGIN, "/.sidegate")).unwrap()
}

const PARTNER: &str = "https://partner.test/metadata";

#[test]
fn each_idp_is_checked_with_its_own_certificates() {
    let s = two_idps();
    assert!(s.is_ready());
    let partner = s.idp(Some("partner")).unwrap();
    assert_eq!(partner.metadata.entity_id, PARTNER);
    assert_eq!(
        s.idp(None).unwrap().metadata.entity_id,
        IDP_ENTITY,
        "[saml] is the default"
    );

    let mut c = craft();
    c.in_response_to = None;
    c.issuer = PARTNER.into();
    c.assertion_issuer = PARTNER.into();
    // Unsolicited from the partner, signed with the partner's key: accepted as the partner.
    let v = s
        .check(&c.signed(other_key(), Sign::Both), None, c.now)
        .unwrap();
    assert_eq!(v.issuer, PARTNER);
    // Claiming to be the partner with the default IdP's key: refused.
    refused(
        s.check(&c.signed(idp_key(), Sign::Both), None, c.now),
        "signature",
    );
    // An issuer nobody configured.
    let mut u = c.clone();
    u.issuer = "https://stranger.test".into();
    u.assertion_issuer = u.issuer.clone();
    refused(
        s.check(&u.signed(other_key(), Sign::Both), None, u.now),
        "issuer",
    );
    // A login sent to the default IdP cannot be answered by the partner.
    let mut p = craft();
    p.issuer = PARTNER.into();
    p.assertion_issuer = PARTNER.into();
    assert!(s
        .check(&p.signed(other_key(), Sign::Both), Some(REQ_ID), p.now)
        .is_err());
}

#[test]
fn idp_names_must_be_unique_and_plain() {
    let keys = Keys::new();
    std::fs::write(
        keys.path().join("idp.xml"),
        metadata(IDP_ENTITY, &[idp_key()]),
    )
    .unwrap();
    for (extra, key) in [
        (
            "name = \"okta\"\n[saml.idps.okta]\nidp_metadata_file = \"idp.xml\"",
            "two IdPs are named",
        ),
        (
            "[saml.idps.Bad_Name]\nidp_metadata_file = \"idp.xml\"",
            "not a usable IdP name",
        ),
        (
            "[saml.idps.x]\npreset = \"okta\"",
            "saml.idps.x.idp_metadata_file",
        ),
        (
            "[saml.idps.twin]\nidp_metadata_file = \"idp.xml\"",
            "is already another IdP's",
        ),
    ] {
        let mut text = config_text(ORIGIN, "http://127.0.0.1:9", DEAD_ISSUER, &[]);
        text.push_str(&format!(
            "\n[saml]\nidp_metadata_file = \"idp.xml\"\n{extra}\n"
        ));
        let err = sidegate::config::load(&text, &sidegate::config::Env::new(), keys.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{extra}: {err}");
    }
}

#[test]
fn metadata_with_two_signing_certificates_accepts_either_during_a_rotation() {
    let keys = Keys::new();
    std::fs::write(
        keys.path().join("idp.xml"),
        metadata(IDP_ENTITY, &[idp_key(), other_key()]),
    )
    .unwrap();
    let mut text = config_text(ORIGIN, "http://127.0.0.1:9", DEAD_ISSUER, &[]);
    text.push_str("\n[saml]\nidp_metadata_file = \"idp.xml\"\n");
    let s = Saml::new(
        load(&text, &keys).saml.unwrap(),
        SpUrls::new(ORIGIN, "/.sidegate"),
    )
    .unwrap();
    assert_eq!(s.idp(None).unwrap().metadata.signing_certs, 2);
    for key in [idp_key(), other_key()] {
        let c = craft();
        assert!(check(&s, &c.signed(key, Sign::Both), &c).is_ok());
    }
    let stranger = TestIdpKey::new("stranger");
    let c = craft();
    refused(check(&s, &c.signed(&stranger, Sign::Both), &c), "signature");
}

#[test]
fn control_characters_are_refused_not_dropped() {
    // libxml2 (recover mode) would drop \x01 and stop at NUL: `al\x01ice` would read as
    // `alice`. The pre-scan refuses both before any parser or signature check.
    let s = sp(&[]);
    let c = craft();
    let xml = c.signed(idp_key(), Sign::Both);
    for bad in ["al\u{1}ice", "alice\u{0}mallory"] {
        refused(
            check(
                &s,
                &xml.replace(">alice</saml:NameID>", &format!(">{bad}</saml:NameID>")),
                &c,
            ),
            "shape",
        );
    }
    assert!(
        check(&s, &xml, &c).is_ok(),
        "tabs and newlines elsewhere stay fine"
    );
}
