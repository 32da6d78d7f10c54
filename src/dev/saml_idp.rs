//! The development SAML IdP: metadata, SSO (HTTP-Redirect AuthnRequest in, HTTP-POST
//! Response out, after the same user picker as the development OpenID provider),
//! IdP-initiated sign-in, and single logout (HTTP-Redirect both ways).
//!
//! It exists so `sidegate dev` can show sidegate's SAML path with nothing installed. Its
//! Responses are what a strict SP wants (Response and assertion both signed, RSA-SHA256 with
//! SHA-256 digests, audience, recipient, time window, `InResponseTo`), so sidegate's real
//! check runs on them; it only answers sidegate's entity ID and ACS. Like a real IdP it
//! keeps a session (a cookie on `/sso`), so `saml.idp_initiated = "restart"` completes
//! without a second pick. Anyone can sign in as anyone: loopback only.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use openssl::pkey::{PKey, Private};
use samael::crypto::{Crypto, CryptoProvider};
use samael::idp::{CertificateParams, IdentityProvider, KeyType, Rsa};
use samael::schema::AuthnRequest;
use url::Url;

use super::idp::{chosen, demo_users, field, read_form, Person};
use super::page::{self, esc, Idp, Page};
use crate::keys::random_token;
use crate::login::saml::logout;
use crate::login::saml::redirect::{self, Kind};
use crate::{full_body, Body};

const REDIRECT_BINDING: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";
const UNSPECIFIED: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified";
/// The IdP session cookie; scoped to `/sso`, the only endpoint that reads it.
const SESSION_COOKIE: &str = "sidegate_dev_saml_idp";
/// How long a Response may be used.
const VALID_FOR: Duration = Duration::from_secs(300);
/// How far back its validity starts, for clock skew.
const VALID_FROM: Duration = Duration::from_secs(30);
/// How long the IdP remembers who signed in.
const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// Why the IdP's key could not be made.
#[derive(Debug, thiserror::Error)]
#[error("generating the development SAML IdP's key: {0}")]
pub struct KeyError(String);

/// The IdP's RSA-2048 signing key and its self-signed certificate.
pub struct SigningKey {
    /// PKCS#1 DER, what xmlsec signs with.
    der: Vec<u8>,
    /// The same key, for Redirect-binding (query string) signatures.
    key: PKey<Private>,
    /// The certificate (base64 DER), pinned by sidegate through the metadata.
    cert_b64: String,
}

impl SigningKey {
    /// A fresh key and a self-signed certificate valid for a year, longer than any dev run.
    pub fn generate() -> Result<Self, KeyError> {
        let err = |e: &dyn std::fmt::Debug| KeyError(format!("{e:?}"));
        let idp =
            IdentityProvider::generate_new(KeyType::Rsa(Rsa::Rsa2048)).map_err(|e| err(&e))?;
        let cert = idp
            .create_certificate(&CertificateParams {
                common_name: "sidegate dev SAML IdP",
                issuer_name: "sidegate dev SAML IdP",
                days_until_expiration: 365,
            })
            .map_err(|e| err(&e))?;
        let der = idp.export_private_key_der().map_err(|e| err(&e))?;
        let key = openssl::rsa::Rsa::private_key_from_der(&der)
            .and_then(PKey::from_rsa)
            .map_err(|e| err(&e))?;
        Ok(SigningKey {
            der,
            key,
            cert_b64: STANDARD.encode(cert.der_data()),
        })
    }
}

/// The IdP metadata sidegate is configured with: entity ID `{origin}/metadata`, the signing
/// certificate, SSO at `/sso` and SLO at `/slo` (HTTP-Redirect).
pub fn metadata(origin: &str, key: &SigningKey) -> String {
    format!(
        "<?xml version=\"1.0\"?>\n<md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" \
         xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\" entityID=\"{entity}\">\
         <md:IDPSSODescriptor WantAuthnRequestsSigned=\"false\" protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\">\
         <md:KeyDescriptor use=\"signing\"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert}</ds:X509Certificate>\
         </ds:X509Data></ds:KeyInfo></md:KeyDescriptor>\
         <md:SingleLogoutService Binding=\"{REDIRECT_BINDING}\" Location=\"{origin}/slo\"/>\
         <md:NameIDFormat>{UNSPECIFIED}</md:NameIDFormat>\
         <md:SingleSignOnService Binding=\"{REDIRECT_BINDING}\" Location=\"{origin}/sso\"/>\
         </md:IDPSSODescriptor></md:EntityDescriptor>\n",
        entity = esc(&entity_id(origin)),
        origin = esc(origin),
        cert = key.cert_b64,
    )
}

fn entity_id(origin: &str) -> String {
    format!("{origin}/metadata")
}

/// The one service provider this IdP answers: sidegate.
pub struct ServiceProvider {
    /// Its entity ID (the audience of every assertion).
    pub entity_id: String,
    /// Its ACS, the only place Responses are posted to.
    pub acs: String,
    /// Its SLO endpoint, where LogoutResponses go.
    pub slo: Url,
}

/// A sign-in waiting for the picker: what the Response must answer.
#[derive(Clone)]
struct Pending {
    /// The AuthnRequest ID (`None`: IdP-initiated, unsolicited).
    in_response_to: Option<String>,
    relay_state: Option<String>,
}

/// Who is signed in at the IdP, and since when.
#[derive(Clone)]
struct IdpSession {
    person: Person,
    authn_instant: DateTime<Utc>,
    session_index: String,
}

/// The IdP's state: its key, the SP, pending sign-ins and IdP sessions.
pub struct DevSamlIdp {
    origin: String,
    entity_id: String,
    key: SigningKey,
    sp: ServiceProvider,
    pending: moka::sync::Cache<String, Pending>,
    sessions: moka::sync::Cache<String, IdpSession>,
}

fn cache<V: Clone + Send + Sync + 'static>(ttl: Duration) -> moka::sync::Cache<String, V> {
    moka::sync::Cache::builder()
        .max_capacity(10_000)
        .time_to_live(ttl)
        .build()
}

fn instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// An xs:ID: starts with `_`, then URL-safe base64 (both NCName characters).
fn new_id() -> String {
    format!("_{}", random_token::<20>())
}

fn refuse(why: &str) -> Response<Body> {
    tracing::info!(reason = why, "dev saml idp: request refused");
    page::html(
        StatusCode::BAD_REQUEST,
        &Page::idp(Idp::Saml, "Bad SAML request", &page::paragraph(why)),
    )
}

impl DevSamlIdp {
    /// The IdP served at `origin` (`http://127.0.0.1:PORT`) for `sp`.
    pub fn new(origin: String, key: SigningKey, sp: ServiceProvider) -> Self {
        DevSamlIdp {
            entity_id: entity_id(&origin),
            origin,
            key,
            sp,
            pending: cache(Duration::from_secs(600)),
            sessions: cache(SESSION_LIFETIME),
        }
    }

    /// The entity ID: the `Issuer` of its Responses.
    pub fn entity_id(&self) -> &str {
        &self.entity_id
    }

    /// The IdP-initiated sign-in URL, for the start-up line.
    pub fn idp_initiated_url(&self) -> String {
        format!("{}/idp-initiated", self.origin)
    }

    /// Serves one request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let now = Utc::now();
        let (parts, body) = req.into_parts();
        let query = parts.uri.query().unwrap_or("");
        match (&parts.method, parts.uri.path()) {
            (&Method::GET, "/metadata") => Response::builder()
                .header(header::CONTENT_TYPE, "application/samlmetadata+xml")
                .body(full_body(metadata(&self.origin, &self.key)))
                .expect("valid response"),
            (&Method::GET, "/sso") => self.sso(query, session_cookie(&parts.headers), now),
            (&Method::GET, "/idp-initiated") => self.picker(Pending {
                in_response_to: None,
                relay_state: Some("/".into()),
            }),
            (&Method::POST, "/login") => match read_form(body).await {
                Ok(form) => self.login(&form, now),
                Err(resp) => resp,
            },
            (&Method::GET, "/slo") => self.slo(query, now),
            (&Method::GET, "/") => page::html(StatusCode::OK, &self.home()),
            _ => page::html(
                StatusCode::NOT_FOUND,
                &Page::idp(
                    Idp::Saml,
                    "Not found",
                    "<p>The development SAML IdP has no such page.</p>",
                ),
            ),
        }
    }

    /// SP-initiated sign-in: an AuthnRequest from sidegate (HTTP-Redirect binding, unsigned:
    /// dev mode has no SP key) for sidegate's own ACS.
    fn sso(&self, query: &str, cookie: Option<String>, now: DateTime<Utc>) -> Response<Body> {
        // Inflation is capped (64 KiB) by the binding decoder.
        let message = match redirect::decode(query, Kind::Request) {
            Ok(m) => m,
            Err(e) => return refuse(&format!("SAMLRequest: {e}")),
        };
        if message.xml.contains("<!DOCTYPE") {
            return refuse("the AuthnRequest contains a DOCTYPE");
        }
        let request: AuthnRequest = match message.xml.parse() {
            Ok(r) => r,
            Err(e) => return refuse(&format!("not an AuthnRequest: {e}")),
        };
        let issuer = request.issuer.as_ref().and_then(|i| i.value.as_deref());
        if issuer != Some(self.sp.entity_id.as_str()) {
            return refuse("the AuthnRequest's Issuer is not sidegate's entity ID");
        }
        if request.assertion_consumer_service_url.as_deref() != Some(self.sp.acs.as_str()) {
            return refuse("AssertionConsumerServiceURL is not sidegate's registered ACS");
        }
        let pending = Pending {
            in_response_to: Some(request.id),
            relay_state: message.relay_state,
        };
        match cookie.and_then(|c| self.sessions.get(&c)) {
            Some(session) => self.respond(&session, &pending, now),
            None => self.picker(pending),
        }
    }

    fn picker(&self, pending: Pending) -> Response<Body> {
        let tx = random_token::<16>();
        self.pending.insert(tx.clone(), pending);
        page::html(
            StatusCode::OK,
            &page::picker(Idp::Saml, &tx, &demo_users(), None),
        )
    }

    /// The picker's answer: a new IdP session, and the Response posted to the ACS.
    fn login(&self, form: &[(String, String)], now: DateTime<Utc>) -> Response<Body> {
        let tx = field(form, "tx").to_string();
        let Some(pending) = self.pending.get(&tx) else {
            return page::html(StatusCode::BAD_REQUEST, &page::expired(Idp::Saml));
        };
        let person = match chosen(form) {
            Ok(p) => p,
            Err(why) => {
                return page::html(
                    StatusCode::BAD_REQUEST,
                    &page::picker(Idp::Saml, &tx, &demo_users(), Some(why)),
                )
            }
        };
        self.pending.invalidate(&tx);
        let sid = random_token::<24>();
        let session = IdpSession {
            person,
            authn_instant: now,
            session_index: new_id(),
        };
        self.sessions.insert(sid.clone(), session.clone());
        let mut resp = self.respond(&session, &pending, now);
        let cookie = format!("{SESSION_COOKIE}={sid}; Path=/sso; HttpOnly; SameSite=Lax");
        resp.headers_mut().append(
            header::SET_COOKIE,
            cookie.parse().expect("a token is a valid header value"),
        );
        resp
    }

    /// The auto-submitting form that posts a signed Response for `session` to the ACS.
    fn respond(
        &self,
        session: &IdpSession,
        pending: &Pending,
        now: DateTime<Utc>,
    ) -> Response<Body> {
        let xml = match self.signed_response(session, pending.in_response_to.as_deref(), now) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "dev saml idp: signing the Response failed");
                return page::html(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &Page::idp(
                        Idp::Saml,
                        "Signing failed",
                        &page::paragraph(&format!("The Response could not be signed: {e}")),
                    ),
                );
            }
        };
        tracing::info!(user = %session.person.user, role = %session.person.role,
            solicited = pending.in_response_to.is_some(), "dev saml idp: signed in, Response posted to the ACS");
        let response = STANDARD.encode(xml);
        let mut fields = vec![("SAMLResponse", response.as_str())];
        if let Some(r) = &pending.relay_state {
            fields.push(("RelayState", r));
        }
        page::html(StatusCode::OK, &page::auto_post(&self.sp.acs, &fields))
    }

    /// The Response, its assertion signed first and then the Response around it (xmlsec
    /// signs the first signature template in document order, so one template per pass).
    fn signed_response(
        &self,
        s: &IdpSession,
        in_response_to: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<String, samael::crypto::CryptoError> {
        let assertion_id = new_id();
        let response_id = new_id();
        let assertion = self.assertion(s, &assertion_id, in_response_to, now);
        let unsigned = format!(
            "<samlp:Response xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" \
             xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"{response_id}\" Version=\"2.0\" \
             IssueInstant=\"{now}\" Destination=\"{acs}\"{irt}><saml:Issuer>{issuer}</saml:Issuer>\
             <samlp:Status><samlp:StatusCode Value=\"urn:oasis:names:tc:SAML:2.0:status:Success\"/></samlp:Status>\
             {assertion}</samlp:Response>",
            now = instant(now),
            acs = esc(&self.sp.acs),
            irt = in_response_to_attr(in_response_to),
            issuer = esc(&self.entity_id),
        );
        let mut xml = Crypto::sign_xml(unsigned, &self.key.der)?;
        let issuer_end = xml
            .find("</saml:Issuer>")
            .expect("the Response has an Issuer")
            + "</saml:Issuer>".len();
        xml.insert_str(issuer_end, &self.signature_template(&response_id));
        Crypto::sign_xml(xml, &self.key.der)
    }

    /// The assertion with its (empty) signature template; NotBefore is 30 s back for clock
    /// skew, NotOnOrAfter 5 min ahead.
    fn assertion(
        &self,
        s: &IdpSession,
        id: &str,
        in_response_to: Option<&str>,
        now: DateTime<Utc>,
    ) -> String {
        let p = &s.person;
        // One AttributeValue per value; an attribute without values is left out, so
        // sidegate applies its defaults (e.g. the least-privilege role).
        let attribute = |name: &str, values: &[&str]| {
            let values: String = values
                .iter()
                .filter(|v| !v.is_empty())
                .map(|v| format!("<saml:AttributeValue>{}</saml:AttributeValue>", esc(v)))
                .collect();
            if values.is_empty() {
                return String::new();
            }
            format!("<saml:Attribute Name=\"{name}\" NameFormat=\"urn:oasis:names:tc:SAML:2.0:attrname-format:basic\">{values}</saml:Attribute>")
        };
        let teams: Vec<&str> = p.teams.iter().map(String::as_str).collect();
        let attributes = [
            attribute("uid", &[&p.user]),
            attribute("email", &[&p.email]),
            attribute("role", &[&p.role]),
            attribute("groups", &teams),
        ]
        .concat();
        let not_on_or_after = instant(now + VALID_FOR);
        format!(
            "<saml:Assertion xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"{id}\" \
             IssueInstant=\"{now}\" Version=\"2.0\"><saml:Issuer>{issuer}</saml:Issuer>{signature}\
             <saml:Subject><saml:NameID Format=\"{UNSPECIFIED}\">{user}</saml:NameID>\
             <saml:SubjectConfirmation Method=\"urn:oasis:names:tc:SAML:2.0:cm:bearer\">\
             <saml:SubjectConfirmationData{irt} NotOnOrAfter=\"{not_on_or_after}\" Recipient=\"{acs}\"/>\
             </saml:SubjectConfirmation></saml:Subject>\
             <saml:Conditions NotBefore=\"{not_before}\" NotOnOrAfter=\"{not_on_or_after}\">\
             <saml:AudienceRestriction><saml:Audience>{audience}</saml:Audience></saml:AudienceRestriction></saml:Conditions>\
             <saml:AuthnStatement AuthnInstant=\"{authn}\" SessionIndex=\"{session_index}\"><saml:AuthnContext>\
             <saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:unspecified</saml:AuthnContextClassRef>\
             </saml:AuthnContext></saml:AuthnStatement>\
             <saml:AttributeStatement>{attributes}</saml:AttributeStatement></saml:Assertion>",
            now = instant(now),
            issuer = esc(&self.entity_id),
            signature = self.signature_template(id),
            user = esc(&p.user),
            irt = in_response_to_attr(in_response_to),
            acs = esc(&self.sp.acs),
            not_before = instant(now - VALID_FROM),
            audience = esc(&self.sp.entity_id),
            authn = instant(s.authn_instant),
            session_index = esc(&s.session_index),
        )
    }

    /// An enveloped signature over `#id`: RSA-SHA256, SHA-256 digest, exclusive c14n.
    fn signature_template(&self, id: &str) -> String {
        format!(
            "<ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"><ds:SignedInfo>\
             <ds:CanonicalizationMethod Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>\
             <ds:SignatureMethod Algorithm=\"http://www.w3.org/2001/04/xmldsig-more#rsa-sha256\"/>\
             <ds:Reference URI=\"#{id}\"><ds:Transforms>\
             <ds:Transform Algorithm=\"http://www.w3.org/2000/09/xmldsig#enveloped-signature\"/>\
             <ds:Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/></ds:Transforms>\
             <ds:DigestMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#sha256\"/><ds:DigestValue></ds:DigestValue>\
             </ds:Reference></ds:SignedInfo><ds:SignatureValue></ds:SignatureValue><ds:KeyInfo><ds:X509Data>\
             <ds:X509Certificate>{cert}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></ds:Signature>",
            id = esc(id),
            cert = self.key.cert_b64,
        )
    }

    /// sidegate's LogoutRequest: the IdP sessions it names end, and a signed LogoutResponse
    /// goes back to sidegate's SLO endpoint.
    fn slo(&self, query: &str, now: DateTime<Utc>) -> Response<Body> {
        let message = match redirect::decode(query, Kind::Request) {
            Ok(m) => m,
            Err(e) => return refuse(&format!("SAMLRequest: {e}")),
        };
        let request = match logout::parse_request(&message.xml) {
            Ok(r) => r,
            Err(e) => return refuse(&e.to_string()),
        };
        if request.issuer != self.sp.entity_id {
            return refuse("the LogoutRequest's Issuer is not sidegate's entity ID");
        }
        let ended: Vec<_> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                s.person.user == request.name_id
                    && (request.session_indexes.is_empty()
                        || request.session_indexes.contains(&s.session_index))
            })
            .map(|(sid, _)| sid)
            .collect();
        for sid in ended {
            self.sessions.invalidate(sid.as_str());
        }
        tracing::info!(user = %request.name_id, "dev saml idp: signed out");
        let xml = logout::response_xml(
            &new_id(),
            now,
            self.sp.slo.as_str(),
            &self.entity_id,
            &request.id,
            logout::SUCCESS,
        );
        let to = match redirect::encode(
            &self.sp.slo,
            Kind::Response,
            &xml,
            message.relay_state.as_deref(),
            Some(&self.key.key),
        ) {
            Ok(u) => u,
            Err(e) => return refuse(&format!("signing the LogoutResponse: {e}")),
        };
        Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, to.as_str())
            .header(header::CACHE_CONTROL, "no-store")
            .header(
                header::SET_COOKIE,
                format!("{SESSION_COOKIE}=; Path=/sso; HttpOnly; SameSite=Lax; Max-Age=0"),
            )
            .body(crate::empty_body())
            .expect("valid redirect")
    }

    fn home(&self) -> Page {
        Page::idp(
            Idp::Saml,
            "Development SAML IdP",
            &format!(
                "<p>Entity ID <code>{entity}</code> (<a href=\"/metadata\">metadata</a>), answering \
                 <code>{sp}</code> only. Sign-in usually starts at the app; \
                 <a href=\"/idp-initiated\">start here instead</a> to try IdP-initiated sign-in.</p>",
                entity = esc(&self.entity_id),
                sp = esc(&self.sp.entity_id),
            ),
        )
    }
}

fn in_response_to_attr(id: Option<&str>) -> String {
    id.map(|i| format!(" InResponseTo=\"{}\"", esc(i)))
        .unwrap_or_default()
}

fn session_cookie(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(SESSION_COOKIE)?.strip_prefix('='))
        .map(str::to_string)
}
