//! Local accounts (break-glass): argon2 and bcrypt hashes from a users file, the form with
//! its CSRF token, the same refusal for wrong passwords and unknown users, the lockout after
//! repeated failures, and policy keeping local sessions to the routes meant for them.

use serde_json::Value;

use crate::support::browser::{parse_form, Browser};
use crate::support::upstream::{header_values, Upstream};
use crate::support::{client, config_text, load, Bound, Keys, Sidecar, DEAD_ISSUER};

struct World {
    sidecar: Sidecar,
    _upstream: Upstream,
    _keys: Keys,
}

async fn world() -> World {
    let upstream = Upstream::start().await;
    let bound = Bound::new().await;
    let keys = Keys::new();
    let users = format!(
        "[[users]]\nname = \"breakglass\"\npassword_hash = \"{}\"\nrole = \"admin\"\nteams = [\"ops\"]\n\
         [[users]]\nname = \"legacy\"\npassword_hash = \"{}\"\nrole = \"viewer\"\n",
        sidegate::login::local::hash_password("glass-pw"),
        bcrypt::hash("legacy-pw", 4).unwrap(),
    );
    std::fs::write(keys.path().join("users.toml"), users).unwrap();
    let text = config_text(&bound.url(), &upstream.url(), DEAD_ISSUER, &[])
        + "\n[local]\nusers_file = \"users.toml\"\nmax_failures = 3\n\
           [login]\nchooser = true\n\
           [[policy.routes]]\nname = \"admin\"\npaths = [\"/admin\"]\nallow = [{ roles = [\"admin\"] }]\n\
           [[policy.routes]]\nname = \"sso only\"\npaths = [\"/\"]\ndeny = [{ idps = [\"local\"] }]\n";
    let sidecar = Sidecar::start(bound, load(&text, &keys));
    World {
        sidecar,
        _upstream: upstream,
        _keys: keys,
    }
}

impl World {
    /// GETs the form (fresh CSRF cookie) and posts it with these credentials.
    async fn sign_in(&self, b: &mut Browser, user: &str, password: &str) -> reqwest::Response {
        let start = self
            .sidecar
            .url("/.sidegate/start?provider=local&rd=%2Fadmin%2Fx");
        let page = b
            .request(reqwest::Method::GET, &start, None)
            .await
            .text()
            .await
            .unwrap();
        let form = parse_form(&page).expect("the local sign-in form");
        let fields: Vec<(String, String)> = form
            .fields
            .into_iter()
            .map(|(k, v)| match k.as_str() {
                "username" => (k, user.to_string()),
                "password" => (k, password.to_string()),
                _ => (k, v),
            })
            .collect();
        b.request(
            reqwest::Method::POST,
            &self.sidecar.url(&form.action),
            Some(&fields),
        )
        .await
    }
}

#[tokio::test]
async fn a_local_account_signs_in_and_is_kept_to_its_routes() {
    let w = world().await;
    // The chooser offers it beside the SSO provider.
    let r = client()
        .get(w.sidecar.url("/anything"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    let page = r.text().await.unwrap();
    assert!(
        page.contains("provider=local") && page.contains("provider=oidc"),
        "{page}"
    );

    let mut b = Browser::new();
    let r = w.sign_in(&mut b, "breakglass", "glass-pw").await;
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "/admin/x");
    let echo: Value = b
        .request(reqwest::Method::GET, &w.sidecar.url("/admin/x"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(header_values(&echo, "x-sidegate-user"), ["breakglass"]);
    assert_eq!(header_values(&echo, "x-sidegate-role"), ["admin"]);
    // Policy keeps local sessions off the rest of the app.
    let r = b
        .request(reqwest::Method::GET, &w.sidecar.url("/reports"), None)
        .await;
    assert_eq!(r.status(), 403);

    // bcrypt hashes work too.
    let mut b = Browser::new();
    let r = w.sign_in(&mut b, "legacy", "legacy-pw").await;
    assert_eq!(r.status(), 302);
}

#[tokio::test]
async fn wrong_passwords_unknown_users_csrf_and_lockout() {
    let w = world().await;
    let mut b = Browser::new();
    for (user, pw) in [("breakglass", "wrong"), ("nobody", "glass-pw")] {
        let r = w.sign_in(&mut b, user, pw).await;
        assert_eq!(r.status(), 401, "{user}");
        let no_session = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .all(|c| !c.to_str().unwrap().starts_with("_sidegate="));
        assert!(no_session, "{user}: no session cookie on failure");
        assert!(
            r.text()
                .await
                .unwrap()
                .contains("Wrong user name or password."),
            "{user}: one message for both"
        );
    }
    // Without the CSRF cookie (a cross-site post): refused before any password check.
    let r = client()
        .post(w.sidecar.url("/.sidegate/local/login"))
        .form(&[
            ("username", "breakglass"),
            ("password", "glass-pw"),
            ("rd", "/"),
            ("csrf", "x"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Third failure from this address, then even the right password is refused for a while.
    assert_eq!(w.sign_in(&mut b, "breakglass", "nope").await.status(), 401);
    assert_eq!(
        w.sign_in(&mut b, "breakglass", "glass-pw").await.status(),
        429
    );
}

#[test]
fn the_users_file_is_checked_at_start() {
    let keys = Keys::new();
    std::fs::write(
        keys.path().join("users.toml"),
        "[[users]]\nname = \"a\"\npassword_hash = \"plaintext\"\n[[users]]\nname = \"b\"\npassword_hash = \"$2b$04$abcdefghijklmnopqrstuu\"\nrole = \"root\"\n",
    )
    .unwrap();
    let text = config_text(
        "https://app.example.com",
        "http://127.0.0.1:8080",
        DEAD_ISSUER,
        &[],
    ) + "\n[local]\nusers_file = \"users.toml\"\n";
    let err = sidegate::config::load(&text, &Default::default(), keys.path()).unwrap_err();
    for key in ["local.users[0].password_hash", "local.users[1].role"] {
        assert!(err.problems.iter().any(|p| p.key == key), "{key}: {err}");
    }
}
