//! `sidegate check-config --online`: what an administrator needs when setting sidegate up
//! against a real IdP. It fetches each OIDC provider's discovery and keys (the same checks as
//! at run time), each SAML IdP's metadata URL, each bearer issuer's keys, compares the IdP's
//! clock with ours, and prints every value to register at the IdP, each line `ok`, `warn` or
//! `FAIL` with the fix.

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use crate::config::{public_origin, Config, IdpSource};
use crate::login::idp_http::IdpHttp;
use crate::pipeline::Context;

/// The report, and whether everything needed is reachable and consistent.
pub struct Report {
    /// Printable lines.
    pub text: String,
    /// No `FAIL` line.
    pub ok: bool,
}

struct Lines {
    text: String,
    ok: bool,
}

impl Lines {
    fn ok(&mut self, what: &str) {
        let _ = writeln!(self.text, "  ok    {what}");
    }
    fn warn(&mut self, what: &str, fix: &str) {
        let _ = writeln!(self.text, "  warn  {what}\n        → {fix}");
    }
    fn fail(&mut self, what: &str, fix: &str) {
        self.ok = false;
        let _ = writeln!(self.text, "  FAIL  {what}\n        → {fix}");
    }
    fn head(&mut self, h: &str) {
        let _ = writeln!(self.text, "\n{h}");
    }
    fn register(&mut self, what: &str, value: &str) {
        let _ = writeln!(self.text, "  register  {what}: {value}");
    }
}

/// The IdP's clock from a response's `Date`, against ours.
fn clock_offset(date: Option<&str>) -> Option<i64> {
    let then = httpdate_parse(date?)?;
    let now = SystemTime::now();
    Some(match then.duration_since(now) {
        Ok(ahead) => ahead.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    })
}

fn httpdate_parse(s: &str) -> Option<SystemTime> {
    chrono::DateTime::parse_from_rfc2822(s)
        .ok()
        .map(|d| SystemTime::UNIX_EPOCH + Duration::from_secs(d.timestamp().max(0) as u64))
}

/// Runs every check (network calls bounded by each IdP's `http_timeout`).
pub async fn check(cfg: Config) -> Report {
    let mut l = Lines {
        text: String::new(),
        ok: true,
    };
    let origin = public_origin(&cfg.server.public_url);
    let prefix = cfg.server.prefix.clone();
    let role_claim = cfg.identity.role_claim.clone();
    let teams_claim = cfg.identity.teams_claim.clone();
    let saml_sources: Vec<(String, Option<url::Url>)> = cfg
        .saml
        .iter()
        .flat_map(|s| s.idps.iter())
        .map(|i| {
            (
                i.name.clone(),
                match &i.idp {
                    IdpSource::Url { url, .. } => Some(url.clone()),
                    IdpSource::File(_) => None,
                },
            )
        })
        .collect();
    let scopes: Vec<(String, Vec<String>)> = cfg
        .oidc
        .iter()
        .map(|o| (o.name.clone(), o.scopes.clone()))
        .collect();
    let cx = match Context::new(cfg) {
        Ok(cx) => cx,
        Err(e) => {
            l.fail(
                &format!("SAML service provider: {e}"),
                "check [saml] sp_key_file and sp_cert_file",
            );
            return Report {
                text: l.text,
                ok: false,
            };
        }
    };
    let http = IdpHttp::new(Duration::from_secs(10));
    for p in &cx.login.oidc {
        l.head(&format!("OIDC provider `{}` ({})", p.name(), p.issuer()));
        match p.load().await {
            Ok(()) => l.ok("discovery and keys load, issuer matches exactly"),
            Err(e) => l.fail(&format!("discovery: {e}"), "check oidc.issuer (it must equal the document's `issuer` byte for byte) and that this host can reach it"),
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            p.issuer().trim_end_matches('/')
        );
        if let Ok(req) = http::Request::get(&url).body(Vec::new()) {
            if let Ok(resp) = http.send(req).await {
                let date = resp.headers().get("date").and_then(|d| d.to_str().ok());
                match clock_offset(date) {
                    Some(off) if off.abs() > 30 => l.warn(
                        &format!("the IdP's clock is {off:+} s from ours"),
                        "run NTP here (tokens are checked with oidc.clock_skew, 60 s by default)",
                    ),
                    Some(off) => l.ok(&format!("clock within {} s of the IdP's", off.abs())),
                    None => l.warn(
                        "no Date header to compare clocks",
                        "make sure this host runs NTP",
                    ),
                }
                let doc: serde_json::Value =
                    serde_json::from_slice(resp.body()).unwrap_or_default();
                let has = |k: &str| doc.get(k).is_some_and(|v| !v.is_null() && v != false);
                if has("end_session_endpoint") {
                    l.register(
                        "post-logout redirect URI",
                        &format!("{origin}{prefix}/logout"),
                    );
                } else {
                    l.warn(
                        "no end_session_endpoint",
                        "logout ends the session here only",
                    );
                }
                if has("backchannel_logout_supported") {
                    l.register(
                        "back-channel logout URI",
                        &format!("{origin}{prefix}/oidc/backchannel-logout"),
                    );
                }
                if has("frontchannel_logout_supported") {
                    l.register(
                        "front-channel logout URI",
                        &format!("{origin}{prefix}/oidc/frontchannel-logout"),
                    );
                }
            }
        }
        l.register("redirect URI", &format!("{origin}{prefix}/oidc/callback"));
        if let Some((_, s)) = scopes.iter().find(|(n, _)| n == p.name()) {
            l.register("scopes the client may request", &s.join(" "));
        }
        l.register(
            "claims in the ID token",
            &format!("sub, email, `{role_claim}` (role), `{teams_claim}` (teams)"),
        );
    }
    if let Some(s) = &cx.login.saml {
        let sp = crate::login::saml::SpUrls::new(&origin, &prefix);
        l.head("SAML service provider");
        l.register("SP entity ID", &s.config().sp_entity_id);
        l.register("SP metadata URL", &sp.metadata);
        l.register("ACS URL (HTTP-POST)", &sp.acs);
        l.register("single logout URL (HTTP-Redirect)", &sp.slo);
        for (name, url) in &saml_sources {
            match url {
                None => l.ok(&format!("IdP `{name}`: metadata file checked at load")),
                Some(u) => match http::Request::get(u.as_str()).body(Vec::new()) {
                    Ok(req) => match http.send(req).await {
                        Ok(r) if r.status().is_success() => {
                            match crate::login::saml::IdpMetadata::parse(&String::from_utf8_lossy(
                                r.body(),
                            )) {
                                Ok(m) => l.ok(&format!(
                                    "IdP `{name}`: metadata at {u} ({})",
                                    m.entity_id
                                )),
                                Err(e) => l.fail(
                                    &format!("IdP `{name}`: metadata at {u}: {e}"),
                                    "point idp_metadata_url at the IdP's SAML metadata",
                                ),
                            }
                        }
                        Ok(r) => l.fail(
                            &format!("IdP `{name}`: {u} answered {}", r.status()),
                            "check idp_metadata_url",
                        ),
                        Err(e) => l.fail(
                            &format!("IdP `{name}`: {u}: {e}"),
                            "check that this host can reach it",
                        ),
                    },
                    Err(e) => l.fail(&format!("IdP `{name}`: {e}"), "check idp_metadata_url"),
                },
            }
        }
    }
    if cx.bearer.is_enabled() {
        l.head("Bearer token issuers");
        cx.bearer.warm_up().await;
        l.ok("keys fetched (failures are logged above)");
    }
    Report {
        text: l.text,
        ok: l.ok,
    }
}
