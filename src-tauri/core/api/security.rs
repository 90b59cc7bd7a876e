//! The guard in front of every route (DESIGN "Security"): the `Host` must name this server on
//! loopback (DNS rebinding), a state-changing request with an `Origin` must be same-origin
//! (CSRF), bodies over 64 KiB are refused before they are read, and everything but
//! `/api/health` and the static page needs the token, as `Authorization: Bearer` or as the
//! cookie that `/?token=` sets. Every response that leaves, errors included, carries the strict
//! content security policy, `nosniff` and `no-referrer`.

use crate::core::app::App;
use crate::core::http::error::too_large;
use crate::core::http::{allowed_hosts, ApiError};
use crate::core::token::constant_time_eq;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The cookie that carries the token for browsers.
pub const COOKIE: &str = "serena_tray_token";

/// The policy of every response: only this origin's own files, no inline script or style, no
/// framing, no plugins, forms only to itself.
pub const CSP: &str = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
                       form-action 'self'; object-src 'none'";

/// Routes anyone on this machine may read: the health check and the static page's files.
fn is_public(method: &Method, path: &str) -> bool {
    (method == Method::GET || method == Method::HEAD)
        && (matches!(path, "/api/health" | "/" | "/index.html" | "/favicon.ico")
            || super::ui::exists(path))
}

fn header_str(req: &Request, name: header::HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The token a request carries, from the bearer header or the cookie.
fn presented_token(req: &Request) -> Option<String> {
    if let Some(auth) = header_str(req, header::AUTHORIZATION) {
        return auth.strip_prefix("Bearer ").map(|t| t.trim().to_string());
    }
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

pub async fn guard(State(state): State<App>, req: Request, next: Next) -> Response {
    let mut resp = match check(&state, &req) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

fn check(state: &App, req: &Request) -> Result<(), ApiError> {
    let port = state.port();
    let hosts = allowed_hosts(port);
    match header_str(req, header::HOST) {
        Some(h) if hosts.iter().any(|a| a == h) => {}
        other => {
            return Err(ApiError::forbidden(
                "bad_host",
                format!(
                    "Host {:?} is not this server; use http://127.0.0.1:{port}/",
                    other.unwrap_or("")
                ),
            ))
        }
    }
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        if let Some(origin) = header_str(req, header::ORIGIN) {
            let same = hosts.iter().any(|h| origin == format!("http://{h}"));
            if !same {
                return Err(ApiError::forbidden(
                    "cross_origin",
                    format!("requests from origin {origin:?} are not allowed"),
                ));
            }
        }
    }
    let declared = header_str(req, header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > crate::core::http::BODY_LIMIT as u64) {
        return Err(too_large());
    }
    if is_public(req.method(), req.uri().path()) {
        return Ok(());
    }
    match presented_token(req) {
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "no_token",
            "this API needs the token: `Authorization: Bearer <token>` (the token is in \
             $SERENA_HOME/tray/token), or open the dashboard through `serena-tray open`",
        )),
        Some(t) if constant_time_eq(&t, state.token()) => Ok(()),
        Some(_) => Err(ApiError::forbidden("bad_token", "the token is wrong")),
    }
}
