//! Claim mapping: user claim order, role allow-list with priority and map, least-privilege
//! default, teams from arrays or comma strings, the email-domain rule, claim paths (nested and
//! namespaced), role rules, team filters, typed extra claims, and the start-up sample.

use serde_json::{json, Map, Value};
use sidegate::config::{ExtraClaim, IdentityConfig, RoleRule, TeamFilter};
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
        role_rules: vec![],
        team_filter: TeamFilter::default(),
        extra: vec![],
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

#[test]
fn nested_paths_and_namespaced_url_claims() {
    let mut c = cfg();
    c.role_claim = "realm_access.roles".into();
    c.teams_claim = "https://example.com/claims/teams".into();
    c.user_claims = vec!["resource_access.app.user".into(), "sub".into()];
    let id = resolve(
        &c,
        "iss",
        &claims(json!({"sub": "s1",
            "realm_access": {"roles": ["offline_access", "internal_user"]},
            "https://example.com/claims/teams": ["blue", "green"],
            "resource_access": {"app": {"user": "keycloak-user"}}})),
    )
    .unwrap();
    assert_eq!(id.role, "internal_user");
    assert_eq!(id.teams, ["blue", "green"]);
    assert_eq!(id.user, "keycloak-user");
    // A literal key wins over the path it looks like.
    c.role_claim = "a.b".into();
    let id = resolve(
        &c,
        "iss",
        &claims(json!({"sub": "s", "a.b": "proxy_admin", "a": {"b": "viewer"}})),
    )
    .unwrap();
    assert_eq!(id.role, "proxy_admin");
}

#[test]
fn role_rules_come_first_and_the_first_match_wins() {
    let mut c = cfg();
    c.role_rules = vec![
        RoleRule {
            role: "proxy_admin".into(),
            teams: vec!["okta-admins".into()],
            claim: None,
            email_domains: vec![],
        },
        RoleRule {
            role: "internal_user".into(),
            teams: vec![],
            claim: Some(("department".into(), vec!["eng".into(), "sre".into()])),
            email_domains: vec!["corp.test".into()],
        },
    ];
    let r = |v: Value| resolve(&c, "iss", &claims(v)).unwrap().role;
    assert_eq!(
        r(json!({"sub": "1", "groups": ["x", "okta-admins"], "roles": "viewer"})),
        "proxy_admin"
    );
    assert_eq!(
        r(json!({"sub": "2", "department": "sre", "email": "b@CORP.test"})),
        "internal_user"
    );
    // Both conditions of the second rule must hold.
    assert_eq!(
        r(json!({"sub": "3", "department": "sre", "email": "b@other.test"})),
        "viewer"
    );
    assert_eq!(
        r(json!({"sub": "4", "department": ["ops"], "email": "b@corp.test"})),
        "viewer"
    );
    // No rule matches: the role claim decides as before.
    assert_eq!(
        r(json!({"sub": "5", "roles": ["Okta-Admins"]})),
        "proxy_admin"
    );
}

#[test]
fn team_filters_prefix_rename_allow() {
    let mut c = cfg();
    c.team_filter = TeamFilter {
        prefix: Some("sg-".into()),
        strip_prefix: true,
        rename: [("platform".to_string(), "infra".to_string())]
            .into_iter()
            .collect(),
        allow: vec!["infra".into(), "data".into()],
    };
    let id = resolve(&c, "iss", &claims(json!({"sub": "1", "groups": ["sg-platform", "sg-data", "sg-marketing", "platform", "sg-"]}))).unwrap();
    assert_eq!(id.teams, ["infra", "data"]);
    c.team_filter.strip_prefix = false;
    c.team_filter.allow.clear();
    c.team_filter.rename.clear();
    let id = resolve(
        &c,
        "iss",
        &claims(json!({"sub": "1", "groups": ["sg-a", "b"]})),
    )
    .unwrap();
    assert_eq!(id.teams, ["sg-a"]);
}

#[test]
fn extra_claims_keep_their_types_and_unsafe_values_are_left_out() {
    let mut c = cfg();
    let extra = |name: &str, claim: &str| ExtraClaim {
        name: name.into(),
        claim: claim.into(),
        header: None,
    };
    c.extra = vec![
        extra("department", "department"),
        extra("budget", "billing.budget"),
        extra("beta", "beta"),
        extra("models", "allowed_models"),
        extra("nested", "obj"),
        extra("evil", "evil"),
        extra("huge", "huge"),
        extra("absent", "nope"),
    ];
    let id = resolve(
        &c,
        "iss",
        &claims(json!({"sub": "1", "department": "R&D", "billing": {"budget": 1250.5}, "beta": true,
            "allowed_models": ["gpt-x", "claude-y"], "obj": {"a": 1}, "evil": "a\nb", "huge": "x".repeat(5000)})),
    )
    .unwrap();
    let names: Vec<&str> = id.extra.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["department", "budget", "beta", "models"]);
    assert_eq!(id.extra[1].1, json!(1250.5));
    assert_eq!(id.extra[2].1, json!(true));
    assert_eq!(id.extra[3].1, json!(["gpt-x", "claude-y"]));
}
