//! The web dashboard's files: everything under `ui/`, embedded in the binary at build time (in
//! debug builds too, so the binary runs from any directory and the tests drive what ships).
//! `/` is `index.html`; any other file is served at its path (`/app.js`, `/icons/x.svg`).
//!
//! Each answer carries `Cache-Control: no-cache` (the browser revalidates every time: the files
//! change with the binary) and a strong `ETag` made of the file's SHA-256, so an unchanged file
//! costs a `304 Not Modified`. A request path is percent-decoded and must be a plain relative
//! name: an empty, `.`, `..` or hidden (`.name`) segment, a backslash or a NUL names no file, so
//! nothing but the embedded files can ever be reached (there is no file system to reach anyway).

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rust_embed::{EmbeddedFile, RustEmbed};

#[derive(RustEmbed)]
#[folder = "$CARGO_MANIFEST_DIR/ui"]
struct Files;

/// One embedded file, found by its request path.
pub struct Asset {
    name: String,
    file: EmbeddedFile,
}

/// The embedded file that the request path `path` names, if any.
pub fn lookup(path: &str) -> Option<Asset> {
    let name = file_name(path)?;
    let file = Files::get(&name)?;
    Some(Asset { name, file })
}

/// Whether `path` names an embedded file (the security layer lets these through without the
/// token, as it does the page itself).
pub fn exists(path: &str) -> bool {
    file_name(path).is_some_and(|n| Files::get(&n).is_some())
}

/// The names of every embedded file (`index.html`, `icons/x.svg`, ...).
pub fn names() -> impl Iterator<Item = String> {
    Files::iter().map(|n| n.into_owned())
}

/// The embedded file name for a request path: `/` is `index.html`; `None` for anything that is
/// not a plain relative name once percent-decoded.
fn file_name(path: &str) -> Option<String> {
    let rest = path.strip_prefix('/')?;
    if rest.is_empty() {
        return Some("index.html".to_string());
    }
    let decoded = percent_decode(rest)?;
    let plain = decoded
        .split('/')
        .all(|seg| !seg.is_empty() && !seg.starts_with('.') && !seg.contains(['\\', '\0']));
    plain.then_some(decoded)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The `Content-Type` of a file, by its extension; text types say they are UTF-8.
pub fn content_type(name: &str) -> String {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    let mime = match ext.as_deref() {
        // Whatever the MIME table's vintage: module scripts must be served as JavaScript.
        Some("js" | "mjs") => "text/javascript".to_string(),
        _ => mime_guess::from_path(name)
            .first_or_octet_stream()
            .essence_str()
            .to_string(),
    };
    let textual = mime.starts_with("text/")
        || mime == "application/json"
        || mime == "image/svg+xml"
        || mime == "application/manifest+json";
    if textual {
        format!("{mime}; charset=utf-8")
    } else {
        mime
    }
}

impl Asset {
    /// The strong validator: the file's SHA-256, quoted.
    pub fn etag(&self) -> String {
        let hash = self.file.metadata.sha256_hash();
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        format!("\"{hex}\"")
    }

    /// The answer to a GET (or HEAD) with these request headers: the file, or `304` when the
    /// browser's copy (`If-None-Match`) is current.
    pub fn respond(self, request: &HeaderMap) -> Response {
        let etag = self.etag();
        let current = request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| none_match_hits(v, &etag));
        let mut resp = if current {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            let mut r = Response::new(Body::from(self.file.data));
            if let Ok(ct) = HeaderValue::from_str(&content_type(&self.name)) {
                r.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            r
        };
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        if let Ok(v) = HeaderValue::from_str(&etag) {
            h.insert(header::ETAG, v);
        }
        resp
    }
}

/// Whether an `If-None-Match` value names `etag` (`*`, or one of a list; the comparison is the
/// weak one that RFC 9110 prescribes for `If-None-Match`).
fn none_match_hits(value: &str, etag: &str) -> bool {
    value.split(',').map(str::trim).any(|t| {
        let t = t.strip_prefix("W/").unwrap_or(t);
        t == "*" || t == etag
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_paths_map_to_plain_relative_names_only() {
        assert_eq!(file_name("/").as_deref(), Some("index.html"));
        assert_eq!(file_name("/app.js").as_deref(), Some("app.js"));
        assert_eq!(file_name("/icons/x.svg").as_deref(), Some("icons/x.svg"));
        assert_eq!(file_name("/a%20b.css").as_deref(), Some("a b.css"));
        for bad in [
            "",
            "app.js",
            "/../Cargo.toml",
            "/%2e%2e/Cargo.toml",
            "/%2E%2E%2FCargo.toml",
            "/..%2fCargo.toml",
            "/icons/../../Cargo.toml",
            "/./index.html",
            "//etc/passwd",
            "/icons/",
            "/.git/config",
            "/..\\Cargo.toml",
            "/%5c..%5cCargo.toml",
            "/a%00.js",
            "/%zz",
            "/%c3",
        ] {
            assert_eq!(file_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn content_types_by_extension() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("app.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("style.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("icons/x.svg"), "image/svg+xml; charset=utf-8");
        assert_eq!(content_type("icons/x.png"), "image/png");
        assert_eq!(content_type("data.json"), "application/json; charset=utf-8");
        assert_eq!(content_type("blob"), "application/octet-stream");
    }

    #[test]
    fn if_none_match_lists_star_and_weak_forms_match() {
        let e = "\"abc\"";
        assert!(none_match_hits("\"abc\"", e));
        assert!(none_match_hits("\"x\", \"abc\"", e));
        assert!(none_match_hits("W/\"abc\"", e));
        assert!(none_match_hits("*", e));
        assert!(!none_match_hits("\"abd\"", e));
        assert!(!none_match_hits("abc", e));
        assert!(!none_match_hits("", e));
    }

    #[test]
    fn the_page_is_embedded_and_its_etag_is_its_hash() {
        let index = lookup("/").expect("index.html is embedded");
        let etag = index.etag();
        assert_eq!(etag.len(), 66, "{etag}");
        let again = lookup("/index.html").expect("by name too");
        assert_eq!(again.etag(), etag);
        assert!(!exists("/no-such-file.js"));
        assert!(exists("/index.html"));
    }
}
