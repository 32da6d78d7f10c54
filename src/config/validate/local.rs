//! The `[local]` section: a users file (`[[users]]` with name, argon2 or bcrypt hash, email,
//! role, teams) for break-glass and migration sign-ins, and the failed-sign-in limit.

use std::path::Path;
use std::time::Duration;

use super::{duration, Problems};
use crate::config::raw;
use crate::config::{IdentityConfig, LocalConfig, LocalUser};
use crate::keys::Secret;

/// Builds the local users; problems name `local.<key>` or `local.users[<n>].<key>`.
pub(super) fn build(
    l: &raw::Local,
    identity: &IdentityConfig,
    base_dir: &Path,
    p: &mut Problems,
) -> Option<LocalConfig> {
    let Some(file) = &l.users_file else {
        p.add("local.users_file", "missing", "point it at a TOML file of [[users]] (make hashes with `sidegate local hash-password`)");
        return None;
    };
    let path = base_dir.join(file);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            p.add(
                "local.users_file",
                format!("cannot read {}: {e}", path.display()),
                "point it at a readable file",
            );
            return None;
        }
    };
    let raw: raw::LocalUsers = match toml::from_str(&text) {
        Ok(r) => r,
        Err(e) => {
            p.add(
                "local.users_file",
                format!("{}: {}", path.display(), e.message()),
                "write [[users]] tables with name, password_hash, role, teams, email",
            );
            return None;
        }
    };
    let mut users: Vec<LocalUser> = Vec::new();
    for (n, u) in raw.users.iter().enumerate() {
        let key = |k: &str| format!("local.users[{n}].{k}");
        let name = match &u.name {
            Some(s)
                if !s.is_empty()
                    && s.len() <= 64
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b)) =>
            {
                s.clone()
            }
            _ => {
                p.add(
                    &key("name"),
                    "missing or not a plain name",
                    "letters, digits, . _ - @",
                );
                continue;
            }
        };
        if users.iter().any(|x| x.name == name) {
            p.add(
                &key("name"),
                format!("`{name}` is listed twice"),
                "keep one entry per user",
            );
            continue;
        }
        let hash = match &u.password_hash {
            Some(h)
                if h.starts_with("$argon2")
                    || h.starts_with("$2a$")
                    || h.starts_with("$2b$")
                    || h.starts_with("$2y$") =>
            {
                h.clone()
            }
            _ => {
                p.add(
                    &key("password_hash"),
                    "missing or not an argon2/bcrypt hash",
                    "make one with `sidegate local hash-password` (never a plain password)",
                );
                continue;
            }
        };
        let role = u
            .role
            .clone()
            .unwrap_or_else(|| identity.default_role.clone());
        if !identity.roles.is_empty() && !identity.roles.contains(&role) {
            p.add(
                &key("role"),
                format!("`{role}` is not in identity.roles"),
                "give an allowed role",
            );
            continue;
        }
        users.push(LocalUser {
            name,
            password_hash: Secret::new(hash),
            email: u.email.clone(),
            role,
            teams: u.teams.clone(),
        });
    }
    Some(LocalConfig {
        users,
        max_failures: l.max_failures.unwrap_or(5).max(1),
        lockout: duration(p, "local.lockout", &l.lockout, Duration::from_secs(300)),
    })
}
