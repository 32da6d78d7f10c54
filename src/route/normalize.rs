//! The one path normalizer. Routing, public-path rules, forward-auth and (later) policy all
//! decide on its output, so auth is never decided on a different string than the one served.
//!
//! Steps, in order: cut at `?`/`#`; percent-decode once (`%2F` and `%2e` included, as nginx
//! does for `$uri`); `\` is `/`; per segment drop `;params`; drop empty and `.` segments;
//! `..` pops (refused above the root); no trailing slash except for `/`. Case is kept: only
//! the caller knows whether it compares case-insensitively.
//!
//! A path is *canonical* when normalizing changed nothing but a trailing slash; only such
//! paths may be public, because every server agrees on what they name.

/// Why a path is refused outright (400, never forwarded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathRefused {
    /// Not starting with `/` (absolute-form URIs are reduced to their path by hyper).
    #[error("path does not start with `/`")]
    NotAbsolute,
    /// `%` not followed by two hex digits.
    #[error("malformed percent-encoding")]
    BadEscape,
    /// A decoded control character (NUL, CR, LF, …).
    #[error("control character in path")]
    ControlChar,
    /// Decoded bytes that are not UTF-8.
    #[error("path is not UTF-8 after decoding")]
    NotUtf8,
    /// `..` above the root.
    #[error("`..` above the root")]
    AboveRoot,
    /// Still percent-encoded after one decode (`%252e`): a server that decodes twice would
    /// read another path than the one decided on.
    #[error("double percent-encoding")]
    DoubleEncoded,
}

use std::borrow::Cow;

/// A normalized path and whether the raw one was already in that form. Borrows the raw path
/// when it is already canonical (the common case: no allocation per request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalPath<'a> {
    path: Cow<'a, str>,
    canonical: bool,
}

impl NormalPath<'_> {
    /// The normalized path (`/a/b`, never a trailing slash unless it is `/`).
    pub fn as_str(&self) -> &str {
        &self.path
    }

    /// Whether the raw path was already normalized (a trailing slash aside).
    pub fn is_canonical(&self) -> bool {
        self.canonical
    }

    /// Whether this path is `prefix` or below it, on segment boundaries (`/api` matches
    /// `/api` and `/api/x`, never `/apix`). `prefix` is normalized the same way by the caller.
    pub fn is_under(&self, prefix: &str, ignore_case: bool) -> bool {
        let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
        if prefix.is_empty() {
            return true;
        }
        let p = self.path.as_bytes();
        if p.len() < prefix.len() {
            return false;
        }
        let head = &self.path[..prefix.len()];
        let same = if ignore_case {
            head.eq_ignore_ascii_case(prefix)
        } else {
            head == prefix
        };
        same && (p.len() == prefix.len() || p[prefix.len()] == b'/')
    }
}

/// Whether `raw` needs no work: only plain bytes, no empty or dot segments.
fn already_normal(raw: &str) -> bool {
    raw.bytes()
        .all(|b| b > 0x20 && b != 0x7f && !matches!(b, b'%' | b'\\' | b';'))
        && !raw[1..]
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
}

/// Normalizes a request target's path (query and fragment are ignored).
pub fn normalize(raw: &str) -> Result<NormalPath<'_>, PathRefused> {
    let raw = raw.split(['?', '#']).next().unwrap_or("");
    if !raw.starts_with('/') {
        return Err(PathRefused::NotAbsolute);
    }
    if raw == "/" {
        return Ok(NormalPath {
            path: Cow::Borrowed(raw),
            canonical: true,
        });
    }
    let trimmed = raw.strip_suffix('/').unwrap_or(raw);
    if already_normal(trimmed) {
        return Ok(NormalPath {
            path: Cow::Borrowed(trimmed),
            canonical: true,
        });
    }
    normalize_slow(raw)
}

/// Every step, allocating; `normalize` skips here for paths that need no work.
fn normalize_slow(raw: &str) -> Result<NormalPath<'static>, PathRefused> {
    let decoded = percent_decode(raw)?;
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split(['/', '\\']) {
        let segment = segment.split(';').next().unwrap_or("");
        match segment {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathRefused::AboveRoot);
                }
            }
            s => segments.push(s),
        }
    }
    let mut path = String::with_capacity(decoded.len());
    for s in &segments {
        path.push('/');
        path.push_str(s);
    }
    if path.is_empty() {
        path.push('/');
    }
    let canonical = raw == path || raw.strip_suffix('/') == Some(path.as_str());
    Ok(NormalPath {
        path: Cow::Owned(path),
        canonical,
    })
}

fn percent_decode(raw: &str) -> Result<String, PathRefused> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(PathRefused::BadEscape);
            };
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    if out.iter().any(|&c| c < 0x20 || c == 0x7f) {
        return Err(PathRefused::ControlChar);
    }
    let hex = |c: &u8| c.is_ascii_hexdigit();
    if out
        .windows(3)
        .any(|w| w[0] == b'%' && hex(&w[1]) && hex(&w[2]))
    {
        return Err(PathRefused::DoubleEncoded);
    }
    String::from_utf8(out).map_err(|_| PathRefused::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(raw: &str) -> (String, bool) {
        let p = normalize(raw).unwrap();
        (p.path.into_owned(), p.canonical)
    }

    #[test]
    fn the_same_resource_normalizes_to_the_same_string() {
        for raw in [
            "/admin",
            "/admin/",
            "//admin",
            "/./admin",
            "/x/../admin",
            "/%61dmin",
            "/admin;jsessionid=1",
            "/admin?x=1",
            "/admin#frag",
            "/x/%2e%2e/admin",
            "/x%2f..%2fadmin",
            "/x\\..\\admin",
            "/x/%2E%2E/admin/.",
        ] {
            assert_eq!(n(raw).0, "/admin", "{raw}");
        }
        assert_eq!(n("/").0, "/");
        assert_eq!(n("//").0, "/");
        assert_eq!(n("/Admin").0, "/Admin", "case is kept");
        assert_eq!(n("/a/b/").0, "/a/b");
        assert_eq!(n("/a/b.c/.d").0, "/a/b.c/.d", "dots inside names are names");
        assert_eq!(n("/a/..b/c..").0, "/a/..b/c..");
    }

    #[test]
    fn only_unchanged_paths_are_canonical() {
        assert!(n("/admin").1);
        assert!(n("/admin/").1, "a trailing slash alone keeps it canonical");
        assert!(n("/a/b?q=%2e%2e").1, "the query does not count");
        for raw in [
            "//admin", "/%61dmin", "/a;x", "/a/./b", "/a/../b", "/a\\b", "/a%20b",
        ] {
            assert!(!n(raw).1, "{raw}");
        }
    }

    #[test]
    fn refusals() {
        assert_eq!(normalize("/.."), Err(PathRefused::AboveRoot));
        assert_eq!(normalize("/a/../../b"), Err(PathRefused::AboveRoot));
        assert_eq!(normalize("/%2e%2e/etc"), Err(PathRefused::AboveRoot));
        assert_eq!(normalize("/a%zz"), Err(PathRefused::BadEscape));
        assert_eq!(normalize("/a%2"), Err(PathRefused::BadEscape));
        assert_eq!(normalize("/a%00b"), Err(PathRefused::ControlChar));
        assert_eq!(
            normalize("/a\tb"),
            Err(PathRefused::ControlChar),
            "raw, not only decoded"
        );
        assert_eq!(normalize("/a%0d%0ab"), Err(PathRefused::ControlChar));
        assert_eq!(normalize("/a%ff"), Err(PathRefused::NotUtf8));
        assert_eq!(normalize("/%252e%252e/x"), Err(PathRefused::DoubleEncoded));
        assert_eq!(normalize("admin"), Err(PathRefused::NotAbsolute));
        assert_eq!(normalize(""), Err(PathRefused::NotAbsolute));
    }

    proptest::proptest! {
        #[test]
        fn fast_path_agrees_and_output_is_a_fixed_point(raw in "/[a/.%2eEfF;\\\\]{0,24}") {
            let slow = normalize_slow(&raw);
            proptest::prop_assert_eq!(normalize(&raw).map(|p| (p.path.into_owned(), p.canonical)),
                slow.clone().map(|p| (p.path.into_owned(), p.canonical)));
            if let Ok(p) = slow {
                let again = normalize(p.as_str()).unwrap();
                proptest::prop_assert_eq!(again.as_str(), p.as_str());
                proptest::prop_assert!(again.is_canonical());
                for bad in ["//", "/./", "/../", "%", ";", "\\"] {
                    proptest::prop_assert!(!p.as_str().contains(bad), "{} in {}", bad, p.as_str());
                }
            }
        }
    }

    #[test]
    fn under_is_segment_aligned() {
        let p = normalize("/api/v1").unwrap();
        assert!(p.is_under("/api", false));
        assert!(p.is_under("/api/", false));
        assert!(p.is_under("/api/v1", false));
        assert!(!p.is_under("/ap", false));
        assert!(!p.is_under("/API", false));
        assert!(p.is_under("/API", true));
        assert!(p.is_under("/", false));
    }
}
