//! The open-redirect guard (`sidegate::login::return_to::check`): every form a browser could
//! resolve to another origin is refused, table by table, each row naming its input.

use sidegate::config::HostRule;
use sidegate::login::return_to::{check, Refused};
use url::Url;

fn public_url() -> Url {
    Url::parse("https://app.example.com").unwrap()
}

fn allowed() -> Vec<HostRule> {
    vec![
        HostRule::Exact {
            host: "docs.example.com".into(),
            port: None,
        },
        HostRule::Subdomains {
            domain: "corp.example.com".into(),
            port: None,
        },
    ]
}

/// Checks every `(input, expected refusal)` row and reports all failures together.
#[track_caller]
fn assert_all_refused(rows: &[(&str, Refused)]) {
    let (public, allowed) = (public_url(), allowed());
    let mut failures = Vec::new();
    for (input, want) in rows {
        match check(input, &public, &allowed) {
            Ok(ok) => failures.push(format!(
                "{input:?} was ACCEPTED as {:?} (expected {want:?})",
                ok.as_str()
            )),
            Err(got) if got != *want => {
                failures.push(format!("{input:?} refused as {got:?}, expected {want:?}"))
            }
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn relative_paths_and_allowed_origins_are_accepted() {
    let (public, allowed) = (public_url(), allowed());
    for (input, want) in [
        ("", "/"),
        ("/", "/"),
        ("/dashboard?x=1#frag", "/dashboard?x=1#frag"),
        ("https://app.example.com/x", "https://app.example.com/x"),
        ("https://docs.example.com/a", "https://docs.example.com/a"),
        (
            "https://team.corp.example.com/",
            "https://team.corp.example.com/",
        ),
    ] {
        match check(input, &public, &allowed) {
            Ok(r) => assert_eq!(r.as_str(), want, "input {input:?}"),
            Err(e) => panic!("{input:?} was refused: {e:?}"),
        }
    }
}

#[test]
fn scheme_relative_urls_are_refused() {
    // Browsers read all of these as "go to host evil.com".
    assert_all_refused(&[
        ("//evil.com", Refused::SchemeRelative),
        ("///evil.com", Refused::SchemeRelative),
        ("//evil.com/path?q=1", Refused::SchemeRelative),
        ("/%2f%2fevil.com", Refused::SchemeRelative),
        ("/%2F%2Fevil.com", Refused::SchemeRelative),
        ("/%2f/evil.com", Refused::SchemeRelative),
    ]);
}

#[test]
fn backslash_tricks_are_refused() {
    // Browsers treat `\` as `/` in http(s) URLs, so `/\evil.com` is `//evil.com`.
    assert_all_refused(&[
        ("/\\evil.com", Refused::Characters),
        ("\\/evil.com", Refused::Characters),
        ("\\\\evil.com", Refused::Characters),
        ("/%5cevil.com", Refused::Characters),
        ("/%5Cevil.com", Refused::Characters),
        ("%5c%5cevil.com", Refused::Characters),
        ("https://evil.com\\@app.example.com", Refused::Characters),
    ]);
}

#[test]
fn control_characters_and_header_injection_are_refused() {
    assert_all_refused(&[
        ("/\tx", Refused::Characters),
        ("/\t/evil.com", Refused::Characters),
        ("/x\ny", Refused::Characters),
        (
            "https://app.example.com\r\nSet-Cookie: x",
            Refused::Characters,
        ),
        ("/x\0y", Refused::Characters),
        ("/ /evil.com", Refused::Characters),
        ("/x%0d%0aSet-Cookie:%20x", Refused::Characters),
        ("/x%0ASet-Cookie:%20x", Refused::Characters),
        ("/%09/evil.com", Refused::Characters),
        ("/x%00", Refused::Characters),
    ]);
}

#[test]
fn absolute_urls_without_double_slash_are_refused() {
    // `https:evil.com` and `https:/evil.com` are parsed by browsers as https://evil.com.
    assert_all_refused(&[
        ("https:evil.com", Refused::Scheme),
        ("https:/evil.com", Refused::Scheme),
        ("http:evil.com", Refused::Scheme),
        ("https:app.example.com", Refused::Scheme),
    ]);
}

#[test]
fn user_info_that_hides_the_real_host_is_refused() {
    assert_all_refused(&[
        ("https://app.example.com@evil.com/", Refused::UserInfo),
        ("https://app.example.com:443@evil.com/", Refused::UserInfo),
        ("https://user:pw@app.example.com/", Refused::UserInfo),
        ("https://@app.example.com/", Refused::UserInfo),
    ]);
}

#[test]
fn look_alike_hosts_are_refused() {
    assert_all_refused(&[
        // public host as a subdomain of the attacker's
        ("https://app.example.com.evil.com/", Refused::Host),
        // suffix look-alike of the public host (only an exact match counts)
        ("https://evilapp.example.com/", Refused::Host),
        // suffix look-alike of the subdomain rule (needs a dot before the domain)
        ("https://xcorp.example.com/", Refused::Host),
        ("https://evilcorp.example.com/", Refused::Host),
        // the bare domain of a `*.` rule is not one of its subdomains
        ("https://corp.example.com/", Refused::Host),
        // suffix look-alike of the exact rule
        ("https://xdocs.example.com/", Refused::Host),
        ("https://docs.example.com.evil.com/", Refused::Host),
        ("https://corp.example.com.evil.com/", Refused::Host),
        ("https://evil.com/", Refused::Host),
    ]);
}

#[test]
fn other_ports_and_schemes_of_allowed_hosts_are_refused() {
    assert_all_refused(&[
        ("https://app.example.com:8443/", Refused::Host),
        // a plain-http target from an https deployment is refused outright
        ("http://app.example.com/", Refused::Scheme),
        ("http://app.example.com:443/", Refused::Scheme),
        ("http://docs.example.com/", Refused::Scheme),
        ("https://docs.example.com:8443/", Refused::Host),
        ("https://team.corp.example.com:8443/", Refused::Host),
    ]);
}

#[test]
fn non_http_schemes_are_refused() {
    assert_all_refused(&[
        ("javascript:alert(1)", Refused::Scheme),
        ("JaVaScRiPt:alert(1)", Refused::Scheme),
        (
            "javascript://app.example.com/%0aalert(1)",
            Refused::Characters,
        ),
        ("javascript://app.example.com/x", Refused::Scheme),
        ("data:text/html,x", Refused::Scheme),
        ("vbscript:msgbox(1)", Refused::Scheme),
        ("ftp://app.example.com/", Refused::Scheme),
        ("file:///etc/passwd", Refused::Scheme),
        ("dashboard", Refused::Scheme),
    ]);
}

#[test]
fn port_rules_allow_exactly_their_port() {
    let rules = vec![
        HostRule::Exact {
            host: "docs.example.com".into(),
            port: Some(8443),
        },
        HostRule::Subdomains {
            domain: "corp.example.com".into(),
            port: Some(8443),
        },
    ];
    let public = public_url();
    for ok in [
        "https://docs.example.com:8443/",
        "https://team.corp.example.com:8443/",
    ] {
        assert!(check(ok, &public, &rules).is_ok(), "{ok:?} was refused");
    }
    for bad in [
        "https://docs.example.com/",
        "https://team.corp.example.com/",
        "https://docs.example.com:8444/",
    ] {
        assert_eq!(
            check(bad, &public, &rules),
            Err(Refused::Host),
            "input {bad:?}"
        );
    }
}
