//! Crafted SAML Responses signed with a test IdP key (RSA-2048, made with openssl here), for
//! the attack suite: the same XML a real IdP sends, with every field under the test's control,
//! signed by xmlsec (samael's `sign_xml`) so only the tampering under test is wrong.

use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use samael::crypto::{Crypto, CryptoProvider};

pub const IDP_ENTITY: &str = "https://idp.test/metadata";
pub const SSO_URL: &str = "https://idp.test/sso";
pub const REQ_ID: &str = "sg_request-1";

/// A signing key and its self-signed certificate (an IdP's, or an SP's).
pub struct TestIdpKey {
    pub key_der: Vec<u8>,
    pub cert_b64: String,
    /// The key as PKCS#8 PEM and the certificate as PEM, for config files.
    pub key_pem: String,
    pub cert_pem: String,
}

impl TestIdpKey {
    pub fn new(cn: &str) -> Self {
        use openssl::{
            asn1::Asn1Time, bn::BigNum, hash::MessageDigest, pkey::PKey, rsa::Rsa, x509,
        };
        let rsa = Rsa::generate(2048).unwrap();
        let key_der = rsa.private_key_to_der().unwrap();
        let pkey = PKey::from_rsa(rsa).unwrap();
        let mut name = x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", cn).unwrap();
        let name = name.build();
        let mut b = x509::X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap())
            .unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&pkey).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
            .unwrap();
        b.sign(&pkey, MessageDigest::sha256()).unwrap();
        let cert = b.build();
        TestIdpKey {
            key_der,
            cert_b64: STANDARD.encode(cert.to_der().unwrap()),
            key_pem: String::from_utf8(pkey.private_key_to_pem_pkcs8().unwrap()).unwrap(),
            cert_pem: String::from_utf8(cert.to_pem().unwrap()).unwrap(),
        }
    }
}

/// IdP metadata pinning `certs` (several during a rotation).
pub fn metadata(entity: &str, certs: &[&TestIdpKey]) -> String {
    let keys: String = certs
        .iter()
        .map(|k| {
            format!(
                r#"<md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>"#,
                k.cert_b64
            )
        })
        .collect();
    format!(
        r#"<?xml version="1.0"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="{entity}">
<md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">{keys}
<md:SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.test/slo"/>
<md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="{SSO_URL}"/>
</md:IDPSSODescriptor></md:EntityDescriptor>"#
    )
}

fn t(at: SystemTime) -> String {
    let d: DateTime<Utc> = at.into();
    d.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A signature template for `#id` (RSA-SHA256, SHA-256 digest, exclusive c14n).
pub fn sig_template(id: &str, cert_b64: &str) -> String {
    format!(
        r##"<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/><ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/><ds:Reference URI="#{id}"><ds:Transforms><ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/><ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/></ds:Transforms><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue></ds:DigestValue></ds:Reference></ds:SignedInfo><ds:SignatureValue></ds:SignatureValue><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert_b64}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></ds:Signature>"##
    )
}

/// Which elements get signed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Sign {
    Both,
    Response,
    Assertion,
    Neither,
}

/// Every field of a Response, defaulting to a valid one for `now`.
#[derive(Clone)]
pub struct Craft {
    pub now: SystemTime,
    pub response_id: String,
    pub assertion_id: String,
    pub issuer: String,
    pub assertion_issuer: String,
    pub destination: String,
    pub recipient: String,
    pub audience: String,
    pub in_response_to: Option<String>,
    pub status: String,
    pub name_id: String,
    pub not_before: SystemTime,
    pub not_on_or_after: SystemTime,
    pub scd_not_on_or_after: SystemTime,
    pub issue_instant: SystemTime,
    pub attributes: Vec<(String, Vec<String>)>,
}

impl Craft {
    pub fn new(now: SystemTime, sp_entity: &str, acs: &str) -> Self {
        Craft {
            now,
            response_id: format!(
                "_r{}",
                sidegate::keys::random_token::<12>().replace('-', "x")
            ),
            assertion_id: format!(
                "_a{}",
                sidegate::keys::random_token::<12>().replace('-', "x")
            ),
            issuer: IDP_ENTITY.into(),
            assertion_issuer: IDP_ENTITY.into(),
            destination: acs.into(),
            recipient: acs.into(),
            audience: sp_entity.into(),
            in_response_to: Some(REQ_ID.into()),
            status: "urn:oasis:names:tc:SAML:2.0:status:Success".into(),
            name_id: "alice".into(),
            not_before: now - Duration::from_secs(60),
            not_on_or_after: now + Duration::from_secs(300),
            scd_not_on_or_after: now + Duration::from_secs(300),
            issue_instant: now,
            attributes: vec![
                ("uid".into(), vec!["alice".into()]),
                ("email".into(), vec!["alice@example.test".into()]),
                ("role".into(), vec!["admin".into()]),
                ("groups".into(), vec!["admins".into(), "devs".into()]),
            ],
        }
    }

    fn irt(&self) -> String {
        self.in_response_to
            .as_ref()
            .map(|i| format!(r#" InResponseTo="{i}""#))
            .unwrap_or_default()
    }

    /// The assertion, with `sig` (a template or "") after its Issuer.
    pub fn assertion(&self, sig: &str) -> String {
        let attrs: String = self
            .attributes
            .iter()
            .map(|(n, vs)| {
                let values: String = vs
                    .iter()
                    .map(|v| format!("<saml:AttributeValue>{v}</saml:AttributeValue>"))
                    .collect();
                format!(r#"<saml:Attribute Name="{n}">{values}</saml:Attribute>"#)
            })
            .collect();
        format!(
            r#"<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{id}" IssueInstant="{ii}" Version="2.0"><saml:Issuer>{iss}</saml:Issuer>{sig}<saml:Subject><saml:NameID Format="urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified">{name}</saml:NameID><saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer"><saml:SubjectConfirmationData{irt} NotOnOrAfter="{scd}" Recipient="{rcpt}"/></saml:SubjectConfirmation></saml:Subject><saml:Conditions NotBefore="{nb}" NotOnOrAfter="{na}"><saml:AudienceRestriction><saml:Audience>{aud}</saml:Audience></saml:AudienceRestriction></saml:Conditions><saml:AuthnStatement AuthnInstant="{ii}" SessionIndex="_session-1"><saml:AuthnContext><saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:Password</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement><saml:AttributeStatement>{attrs}</saml:AttributeStatement></saml:Assertion>"#,
            id = self.assertion_id,
            ii = t(self.issue_instant),
            iss = self.assertion_issuer,
            name = self.name_id,
            irt = self.irt(),
            scd = t(self.scd_not_on_or_after),
            rcpt = self.recipient,
            nb = t(self.not_before),
            na = t(self.not_on_or_after),
            aud = self.audience,
        )
    }

    /// The Response around `assertion_xml`, with `sig` after its Issuer.
    pub fn response(&self, sig: &str, assertion_xml: &str) -> String {
        format!(
            r#"<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{id}" Version="2.0" IssueInstant="{ii}" Destination="{dest}"{irt}><saml:Issuer>{iss}</saml:Issuer>{sig}<samlp:Status><samlp:StatusCode Value="{status}"/></samlp:Status>{assertion_xml}</samlp:Response>"#,
            id = self.response_id,
            ii = t(self.issue_instant),
            dest = self.destination,
            irt = self.irt(),
            iss = self.issuer,
            status = self.status,
        )
    }

    /// The Response, signed as asked with `key`.
    pub fn signed(&self, key: &TestIdpKey, what: Sign) -> String {
        let a_sig = matches!(what, Sign::Both | Sign::Assertion)
            .then(|| sig_template(&self.assertion_id, &key.cert_b64))
            .unwrap_or_default();
        let mut xml = self.response("", &self.assertion(&a_sig));
        if !a_sig.is_empty() {
            xml = sign(&xml, key);
        }
        if matches!(what, Sign::Both | Sign::Response) {
            // Insert the Response's template after its Issuer: it is then the first
            // Signature in document order, the one xmlsec signs next.
            let at = xml.find("</saml:Issuer>").unwrap() + "</saml:Issuer>".len();
            xml.insert_str(at, &sig_template(&self.response_id, &key.cert_b64));
            xml = sign(&xml, key);
        }
        xml
    }
}

/// Signs the first signature template in `xml`.
pub fn sign(xml: &str, key: &TestIdpKey) -> String {
    let out = Crypto::sign_xml(xml, &key.key_der).unwrap();
    // Drop the XML declaration libxml2 adds, so documents can be spliced.
    match out.strip_prefix("<?xml version=\"1.0\"?>\n") {
        Some(rest) => rest.trim_end().to_string(),
        None => out.trim_end().to_string(),
    }
}

/// The element `<prefix:name ...>...</prefix:name>` starting at its first occurrence.
pub fn element<'a>(xml: &'a str, open: &str, close: &str) -> &'a str {
    let start = xml
        .find(open)
        .unwrap_or_else(|| panic!("no {open} in {xml}"));
    let end = xml[start..].find(close).unwrap() + start + close.len();
    &xml[start..end]
}
