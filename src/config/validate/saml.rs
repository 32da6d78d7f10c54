//! The `[saml]` section: IdP metadata file, SP identity and key, attribute names (with
//! presets for Entra ID, ADFS and Okta), clock skew and IdP-initiated login mode.

use std::path::Path;
use std::time::Duration;

use url::Url;

use super::{duration, Problems};
use crate::config::raw;
use crate::config::{
    AssertionSignature, IdpInitiated, IdpSource, SamlAttributes, SamlConfig, SamlIdpConfig,
};
use crate::keys::SamlSpKey;
use crate::login::saml::load_metadata;

const MS_CLAIMS: &str = "http://schemas.microsoft.com/ws/2008/06/identity/claims";
const XMLSOAP_CLAIMS: &str = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims";

/// Attribute names per preset; `None` for an unknown preset name.
fn preset(name: Option<&str>) -> Option<SamlAttributes> {
    let attrs = |user: &[&str], email: &str, role: &str, teams: &str| SamlAttributes {
        user: user.iter().map(|s| s.to_string()).collect(),
        email: email.into(),
        role: role.into(),
        teams: teams.into(),
    };
    Some(match name {
        None | Some("generic") => attrs(
            &["uid", "urn:oid:0.9.2342.19200300.100.1.1"],
            "email",
            "role",
            "groups",
        ),
        Some("entra") => attrs(
            &[&format!("{XMLSOAP_CLAIMS}/name")],
            &format!("{XMLSOAP_CLAIMS}/emailaddress"),
            &format!("{MS_CLAIMS}/role"),
            &format!("{MS_CLAIMS}/groups"),
        ),
        Some("adfs") => attrs(
            &[&format!("{XMLSOAP_CLAIMS}/upn")],
            &format!("{XMLSOAP_CLAIMS}/emailaddress"),
            &format!("{MS_CLAIMS}/role"),
            "http://schemas.xmlsoap.org/claims/Group",
        ),
        Some("okta") => attrs(&["username", "email"], "email", "role", "groups"),
        Some(_) => return None,
    })
}

fn read(p: &mut Problems, key: &str, file: &str, base_dir: &Path) -> Option<String> {
    let path = base_dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(s) => Some(s),
        Err(e) => {
            p.add(
                key,
                format!("cannot read {}: {e}", path.display()),
                "point it at a readable file",
            );
            None
        }
    }
}

/// The per-IdP keys, from `[saml]` itself or from one `[saml.idps.<name>]`.
struct IdpKeys<'a> {
    metadata_file: &'a Option<String>,
    metadata_url: &'a Option<String>,
    metadata_refresh: &'a Option<String>,
    metadata_signing_cert_file: &'a Option<String>,
    preset: &'a Option<String>,
    attributes: &'a raw::SamlAttributes,
    clock_skew: &'a Option<String>,
    idp_initiated: &'a Option<String>,
    idp_initiated_landing: &'a Option<String>,
    assertion_signature: &'a Option<String>,
}

impl<'a> From<&'a raw::SamlIdp> for IdpKeys<'a> {
    fn from(i: &'a raw::SamlIdp) -> Self {
        IdpKeys {
            metadata_file: &i.idp_metadata_file,
            metadata_url: &i.idp_metadata_url,
            metadata_refresh: &i.idp_metadata_refresh,
            metadata_signing_cert_file: &i.idp_metadata_signing_cert_file,
            preset: &i.preset,
            attributes: &i.attributes,
            clock_skew: &i.clock_skew,
            idp_initiated: &i.idp_initiated,
            idp_initiated_landing: &i.idp_initiated_landing,
            assertion_signature: &i.assertion_signature,
        }
    }
}

impl<'a> From<&'a raw::Saml> for IdpKeys<'a> {
    fn from(i: &'a raw::Saml) -> Self {
        IdpKeys {
            metadata_file: &i.idp_metadata_file,
            metadata_url: &i.idp_metadata_url,
            metadata_refresh: &i.idp_metadata_refresh,
            metadata_signing_cert_file: &i.idp_metadata_signing_cert_file,
            preset: &i.preset,
            attributes: &i.attributes,
            clock_skew: &i.clock_skew,
            idp_initiated: &i.idp_initiated,
            idp_initiated_landing: &i.idp_initiated_landing,
            assertion_signature: &i.assertion_signature,
        }
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 40
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Builds `SamlConfig`; `sp_metadata_url` is the default SP entity ID.
pub(super) fn build(
    s: &raw::Saml,
    sp_metadata_url: Option<String>,
    base_dir: &Path,
    p: &mut Problems,
) -> Option<SamlConfig> {
    let inline = s.idp_metadata_file.is_some() || s.idp_metadata_url.is_some();
    let mut idps = Vec::new();
    if inline || s.idps.is_empty() {
        let name = s.name.clone().unwrap_or_else(|| "default".into());
        idps.push(build_idp(&name, "saml", IdpKeys::from(s), base_dir, p));
    }
    for (name, i) in &s.idps {
        idps.push(build_idp(
            name,
            &format!("saml.idps.{name}"),
            IdpKeys::from(i),
            base_dir,
            p,
        ));
    }
    let mut names: Vec<&str> = Vec::new();
    for (name, key) in idps
        .iter()
        .flatten()
        .map(|i| (i.name.as_str(), "saml.idps"))
    {
        if !valid_name(name) {
            p.add(
                key,
                format!("`{name}` is not a usable IdP name"),
                "use lower-case letters, digits and -",
            );
        }
        if names.contains(&name) {
            p.add(
                key,
                format!("two IdPs are named `{name}`"),
                "give each IdP its own name (saml.name names the one in [saml])",
            );
        }
        names.push(name);
    }
    // Unsolicited responses and logout messages find their IdP by entity ID.
    let mut entities: Vec<&str> = Vec::new();
    for i in idps.iter().flatten() {
        if let IdpSource::File(m) = &i.idp {
            if entities.contains(&m.entity_id.as_str()) {
                p.add(
                    &format!("saml.idps.{}", i.name),
                    format!("entity ID `{}` is already another IdP's", m.entity_id),
                    "configure each IdP once",
                );
            }
            entities.push(&m.entity_id);
        }
    }
    let sp_entity_id = s.sp_entity_id.clone().or(sp_metadata_url);
    if let Some(id) = &sp_entity_id {
        if id.is_empty() || Url::parse(id).is_err() && !id.starts_with("urn:") {
            p.add(
                "saml.sp_entity_id",
                format!("`{id}` is not a URI"),
                "use a URL (the default is the SP metadata URL) or a urn:",
            );
        }
    }
    let sp_key = match (&s.sp_key_file, &s.sp_cert_file) {
        (None, None) => None,
        (Some(k), Some(c)) => {
            let key = read(p, "saml.sp_key_file", k, base_dir);
            let cert = read(p, "saml.sp_cert_file", c, base_dir);
            match (key, cert) {
                (Some(k), Some(c)) => SamlSpKey::from_pem(&k, &c)
                    .map_err(|e| {
                        p.add(
                            "saml.sp_key_file",
                            e.to_string(),
                            "give a PEM private key and the PEM certificate made for it",
                        )
                    })
                    .ok(),
                _ => None,
            }
        }
        _ => {
            p.add(
                "saml.sp_key_file",
                "only one of sp_key_file and sp_cert_file is set",
                "set both (or neither)",
            );
            None
        }
    };
    let sign_authn_requests = s.sign_authn_requests.unwrap_or(sp_key.is_some());
    if sign_authn_requests && sp_key.is_none() {
        p.add(
            "saml.sign_authn_requests",
            "true, but there is no SP key",
            "set sp_key_file and sp_cert_file, or turn signing off",
        );
    }
    let max_response_bytes = s.max_response_bytes.unwrap_or(128 * 1024);
    if !(4096..=1024 * 1024).contains(&max_response_bytes) {
        p.add(
            "saml.max_response_bytes",
            format!("{max_response_bytes} is out of range"),
            "use between 4096 and 1048576 (the default 131072 fits any real IdP)",
        );
    }
    let idps: Option<Vec<_>> = idps.into_iter().collect();
    Some(SamlConfig {
        sp_entity_id: sp_entity_id?,
        sp_key,
        sign_authn_requests,
        name_id_format: s.name_id_format.clone(),
        max_response_bytes,
        idps: idps?,
    })
}

/// One IdP; `key` is its section (`saml` or `saml.idps.<name>`).
fn build_idp(
    name: &str,
    key: &str,
    s: IdpKeys<'_>,
    base_dir: &Path,
    p: &mut Problems,
) -> Option<SamlIdpConfig> {
    let k = |sub: &str| format!("{key}.{sub}");
    let metadata_signing_cert = s.metadata_signing_cert_file.as_ref().and_then(|f| {
        let pem = read(p, &k("idp_metadata_signing_cert_file"), f, base_dir)?;
        openssl::x509::X509::from_pem(pem.as_bytes())
            .and_then(|c| c.to_der())
            .map_err(|e| {
                p.add(
                    &k("idp_metadata_signing_cert_file"),
                    format!("not a PEM certificate: {e}"),
                    "use the certificate your IdP signs its metadata with",
                )
            })
            .ok()
    });
    let idp = match (s.metadata_file, s.metadata_url) {
        (None, None) => {
            p.add(
                &k("idp_metadata_file"),
                "missing",
                "point idp_metadata_file at the IdP's SAML metadata XML, or set idp_metadata_url",
            );
            None
        }
        (Some(_), Some(_)) => {
            p.add(
                &k("idp_metadata_url"),
                "both a metadata file and a URL are given",
                "keep one of idp_metadata_file and idp_metadata_url",
            );
            None
        }
        (Some(f), None) => read(p, &k("idp_metadata_file"), f, base_dir).and_then(|xml| {
            load_metadata(&xml, metadata_signing_cert.as_deref())
                .map_err(|e| {
                    p.add(
                        &k("idp_metadata_file"),
                        e.to_string(),
                        "use the metadata XML your IdP publishes for this application",
                    )
                })
                .ok()
                .map(|m| IdpSource::File(Box::new(m)))
        }),
        (None, Some(u)) => match Url::parse(u) {
            Ok(url)
                if url.scheme() == "https"
                    || (url.scheme() == "http" && super::is_loopback_host(&url)) =>
            {
                Some(IdpSource::Url {
                    url,
                    refresh: duration(
                        p,
                        &k("idp_metadata_refresh"),
                        s.metadata_refresh,
                        Duration::from_secs(3600),
                    ),
                })
            }
            _ => {
                p.add(
                    &k("idp_metadata_url"),
                    format!("`{u}` is not an https URL"),
                    "use the IdP's https metadata URL (plain http only on loopback, for tests)",
                );
                None
            }
        },
    };
    let mut attributes = preset(s.preset.as_deref()).unwrap_or_else(|| {
        p.add(
            &k("preset"),
            format!("`{}` is not a preset", s.preset.as_deref().unwrap_or("")),
            "use entra, adfs, okta or generic",
        );
        preset(None).expect("generic preset")
    });
    let a = s.attributes;
    if let Some(u) = &a.user {
        if u.is_empty() {
            p.add(
                &k("attributes.user"),
                "is empty",
                "list at least one attribute name (the NameID is always the last resort)",
            );
        }
        attributes.user = u.clone();
    }
    for (value, slot) in [
        (&a.email, &mut attributes.email),
        (&a.role, &mut attributes.role),
        (&a.teams, &mut attributes.teams),
    ] {
        if let Some(v) = value {
            *slot = v.clone();
        }
    }
    let idp_initiated = match s.idp_initiated.as_deref() {
        None | Some("off") => IdpInitiated::Off,
        Some("restart") => IdpInitiated::Restart,
        Some("accept") => IdpInitiated::Accept,
        Some(o) => {
            p.add(
                &k("idp_initiated"),
                format!("`{o}` is not a mode"),
                "use off (default), restart (safer) or accept",
            );
            IdpInitiated::Off
        }
    };
    let idp_initiated_landing = s
        .idp_initiated_landing
        .clone()
        .unwrap_or_else(|| "/".into());
    if !idp_initiated_landing.starts_with('/') || idp_initiated_landing.starts_with("//") {
        p.add(
            &k("idp_initiated_landing"),
            format!("`{idp_initiated_landing}` is not a local path"),
            "use a path on this app such as /",
        );
    }
    let assertion_signature = match s.assertion_signature.as_deref() {
        None | Some("own-or-response") => AssertionSignature::OwnOrResponse,
        Some("own") => AssertionSignature::Own,
        Some(o) => {
            p.add(
                &k("assertion_signature"),
                format!("`{o}` is not a choice"),
                "use own-or-response (default) or own",
            );
            AssertionSignature::OwnOrResponse
        }
    };
    Some(SamlIdpConfig {
        name: name.to_string(),
        idp: idp?,
        metadata_signing_cert,
        attributes,
        clock_skew: duration(p, &k("clock_skew"), s.clock_skew, Duration::from_secs(120)),
        idp_initiated,
        idp_initiated_landing,
        assertion_signature,
    })
}
