//! Claim mapping: user claim order, role allow-list with priority and map, least-privilege
//! default, teams from arrays or comma strings, and the email-domain rule.

use serde_json::{json, Map, Value};
use sidegate::config::IdentityConfig;
use sidegate::identity::{resolve, Denied};

fn cfg() -> IdentityConfig {
    IdentityConfig {
        user_claims: vec!["preferred_username".into(), "email".into(), "sub".into()],
        email_claim: "email".into(),
        role_claim: "roles".into(),
        roles: vec![
            "proxy_admin".into(),
            "internal_user".into(),
            "viewer".into(),
        ],
        role_map: [("Okta-Admins".to_string(), "proxy_admin".to_string())]
            .into_iter()
            .collect(),
        default_role: "viewer".into(),
        teams_claim: "groups".into(),
        allowed_email_domains: vec![],
    }
}

fn claims(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

#[test]
fn highest_priority_allowed_role_wins_and_the_map_applies() {
    let id = resolve(&cfg(), "iss", &claims(json!({"sub": "1", "email": "a@x.test", "roles": ["internal_user", "Okta-Admins", "bogus"]}))).unwrap();
    assert_eq!(id.role, "proxy_admin");
    assert_eq!(id.user, "a@x.test", "falls back to the next user claim");
}

#[test]
fn missing_or_unknown_roles_get_the_least_privilege_default() {
    for roles in [
        json!(null),
        json!("superuser"),
        json!(["root", 7]),
        json!({"admin": true}),
    ] {
        let id = resolve(&cfg(), "iss", &claims(json!({"sub": "1", "roles": roles}))).unwrap();
        assert_eq!(id.role, "viewer", "roles = {roles}");
    }
}

#[test]
fn teams_from_array_or_comma_string_and_unsafe_values_dropped() {
    let id = resolve(
        &cfg(),
        "iss",
        &claims(json!({"sub": "1", "groups": "a, b ,c"})),
    )
    .unwrap();
    assert_eq!(id.teams, ["a", "b", "c"]);
    let id = resolve(
        &cfg(),
        "iss",
        &claims(json!({"sub": "1", "groups": ["x", "y,z", "bad\nname", "", "w"]})),
    )
    .unwrap();
    assert_eq!(
        id.teams,
        ["x", "w"],
        "values that would break the comma-separated header are dropped"
    );
}

#[test]
fn control_characters_in_the_user_are_refused() {
    let r = resolve(
        &cfg(),
        "iss",
        &claims(json!({"sub": "1", "preferred_username": "eve\r\nX-Sidegate-Role: admin"})),
    );
    assert_eq!(r.unwrap_err(), Denied::BadCharacters("user".into()));
}

#[test]
fn email_domain_rule_is_exact_after_a_single_at() {
    let mut c = cfg();
    c.allowed_email_domains = vec!["example.com".into()];
    let ok = |e: &str| resolve(&c, "iss", &claims(json!({"sub": "1", "email": e})));
    assert!(ok("a@example.com").is_ok());
    assert!(
        ok("a@EXAMPLE.com").is_ok(),
        "domains compare case-insensitively"
    );
    assert_eq!(ok("a@evil.com@example.com").unwrap_err(), Denied::BadEmail);
    assert_eq!(
        ok("a@example.com.evil.com").unwrap_err(),
        Denied::DomainNotAllowed("example.com.evil.com".into())
    );
    assert_eq!(
        ok("a@sub.example.com").unwrap_err(),
        Denied::DomainNotAllowed("sub.example.com".into())
    );
    assert_eq!(ok("@example.com").unwrap_err(), Denied::BadEmail);
    let unverified = resolve(
        &c,
        "iss",
        &claims(json!({"sub": "1", "email": "a@example.com", "email_verified": false})),
    );
    assert_eq!(unverified.unwrap_err(), Denied::EmailNotVerified);
    let missing = resolve(&c, "iss", &claims(json!({"sub": "1"})));
    assert_eq!(missing.unwrap_err(), Denied::BadEmail);
}
