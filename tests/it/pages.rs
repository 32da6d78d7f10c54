//! The operator's page templates (`pages.dir`): error pages, the sign-in chooser and the logo
//! come from their files, every value escaped; API clients keep JSON; a template without the
//! placeholders it must show is refused at start.

use crate::support::upstream::Upstream;
use crate::support::{
    client, config_text, load, session_cookie, Bound, Keys, Sidecar, DEAD_ISSUER,
};

fn templates(keys: &Keys) {
    let dir = keys.path().join("pages");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("error.html"), "<html><body class=acme><img src=\"{{logo_url}}\"><h1>ACME {{status}} {{title}}</h1><p>{{message}}</p><small>{{request_id}}</small></body></html>").unwrap();
    std::fs::write(dir.join("signin.html"), "<html><body class=acme><h1>ACME sign-in</h1>{{email_form}}<ul>{{providers}}</ul></body></html>").unwrap();
    std::fs::write(
        dir.join("logo.svg"),
        "<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
    )
    .unwrap();
}

#[tokio::test]
async fn pages_come_from_the_operators_templates_with_every_value_escaped() {
    let upstream = Upstream::start().await;
    let bound = Bound::new().await;
    let keys = Keys::new();
    templates(&keys);
    let text = config_text(&bound.url(), &upstream.url(), DEAD_ISSUER, &[])
        + &format!(
            "\n[oidc.providers.partner]\nissuer = \"{DEAD_ISSUER}\"\nclient_id = \"p\"\nclient_secret_file = \"client-secret\"\n\
             [pages]\ndir = \"pages\"\n[login]\nchooser = true\n\
             [[policy.routes]]\nname = \"<script>alert(1)</script>\"\npaths = [\"/admin\"]\nallow = [{{ roles = [\"admin\"] }}]\n"
        );
    let sidecar = Sidecar::start(bound, load(&text, &keys));
    let html = |path: &str, cookie: Option<String>| {
        let mut rb = client()
            .get(sidecar.url(path))
            .header("accept", "text/html");
        if let Some(c) = cookie {
            rb = rb.header("cookie", c);
        }
        async move {
            let r = rb.send().await.unwrap();
            (
                r.status().as_u16(),
                r.headers()
                    .get("x-request-id")
                    .map(|v| v.to_str().unwrap().to_string()),
                r.text().await.unwrap(),
            )
        }
    };
    // An error page: the template, with the request id the header carries.
    let (status, rid, body) = html("/.sidegate/nope", None).await;
    assert_eq!(status, 404);
    assert!(
        body.starts_with("<html><body class=acme>") && body.contains("ACME 404 Not Found"),
        "{body}"
    );
    assert!(body.contains(&rid.unwrap()), "{body}");
    assert!(body.contains("/.sidegate/logo"));
    // Values are escaped: a route name with markup is shown as text.
    let cookie = session_cookie(&text, &keys, "vic", "viewer", std::time::SystemTime::now());
    let (status, _, body) = html("/admin", Some(cookie)).await;
    assert_eq!(status, 403);
    assert!(
        body.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && !body.contains("<script>"),
        "{body}"
    );
    // The chooser.
    let (status, _, body) = html("/somewhere", None).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("ACME sign-in") && body.contains("provider=partner"),
        "{body}"
    );
    // API clients still get JSON errors.
    let r = client()
        .get(sidecar.url("/.sidegate/nope"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "application/json");
    // The logo.
    let r = client()
        .get(sidecar.url("/.sidegate/logo"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "image/svg+xml");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
}

#[test]
fn a_template_without_its_placeholders_is_refused() {
    let keys = Keys::new();
    templates(&keys);
    std::fs::write(keys.path().join("pages/error.html"), "<p>{{message}}</p>").unwrap();
    let text = config_text(
        "https://app.example.com",
        "http://127.0.0.1:8080",
        DEAD_ISSUER,
        &[],
    ) + "\n[pages]\ndir = \"pages\"\n";
    let err = sidegate::config::load(&text, &Default::default(), keys.path()).unwrap_err();
    assert!(
        err.problems
            .iter()
            .any(|p| p.key == "pages.dir" && p.problem.contains("request_id")),
        "{err}"
    );
}
