//! The receiver for Serena's own tray protocol on 127.0.0.1:24224 (SERENA.md): every instance
//! configured with `web_dashboard_interface: tray_manager` checks `GET /health`, then
//! `POST /register {"port","pid","dashboard_url","project","started_at","open_viewer"}`,
//! `POST /update_project {"port","project"}` and `POST /unregister {"port"}`. Answering here means
//! Serena never spawns its own tray manager and reports straight to the core.
//!
//! A registration is information, never authority: the core shows a registered PID whose command
//! line is not Serena's as such and never kills it. Deliberately not here: the main API's token
//! (Serena sends none); only loopback and the Host check guard this port, and nothing here can
//! do more than add a row to the list.

use crate::core::api::error::{ApiError, ApiJson};
use crate::core::engine::{Core, Registration};
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::future::Future;
use tokio::net::TcpListener;

/// Serena's constant `TRAY_MANAGER_PORT` (0x5EA0).
pub const SERENA_TRAY_PORT: u16 = 24224;

#[derive(Clone)]
struct TrayState {
    core: Core,
    port: u16,
}

/// Serena's body; it also sends `dashboard_url`, `started_at` and `open_viewer`, which tell
/// nothing the core does not know better (the URL and start time come from the process, and
/// this program decides itself what to open).
#[derive(Deserialize)]
struct RegisterBody {
    port: u16,
    pid: u32,
    #[serde(default)]
    project: Option<String>,
}

#[derive(Deserialize)]
struct ProjectBody {
    port: u16,
    #[serde(default)]
    project: Option<String>,
}

#[derive(Deserialize)]
struct PortBody {
    port: u16,
}

pub fn router(core: Core, port: u16) -> Router {
    let state = TrayState { core, port };
    Router::new()
        .route(
            "/health",
            get(|| async { Json(json!({"status": "alive"})) }),
        )
        .route("/register", post(register))
        .route("/update_project", post(update_project))
        .route("/unregister", post(unregister))
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::core::api::BODY_LIMIT,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            host_check,
        ))
        .with_state(state)
}

/// Serves the receiver on `listener` until `shutdown` resolves (bounded connections,
/// header-read timeout: see [`crate::core::api::serve::serve`]).
pub async fn serve(
    listener: TcpListener,
    core: Core,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let port = listener.local_addr()?.port();
    crate::core::api::serve::serve(listener, router(core, port), shutdown).await
}

async fn host_check(State(state): State<TrayState>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let ok = crate::core::api::security::allowed_hosts(state.port)
        .iter()
        .any(|h| h == host);
    if ok {
        next.run(req).await
    } else {
        ApiError::forbidden("bad_host", format!("Host {host:?} is not this server")).into_response()
    }
}

async fn register(
    State(state): State<TrayState>,
    ApiJson(b): ApiJson<RegisterBody>,
) -> Json<Value> {
    tracing::info!(
        "tray protocol: pid {} registered dashboard port {} (project {:?})",
        b.pid,
        b.port,
        b.project
    );
    state.core.register(Registration {
        pid: b.pid,
        port: b.port,
        project: b.project,
    });
    Json(json!({"status": "registered"}))
}

async fn update_project(
    State(state): State<TrayState>,
    ApiJson(b): ApiJson<ProjectBody>,
) -> Json<Value> {
    state.core.update_registered_project(b.port, b.project);
    Json(json!({"status": "updated"}))
}

async fn unregister(State(state): State<TrayState>, ApiJson(b): ApiJson<PortBody>) -> Json<Value> {
    state.core.unregister(b.port);
    Json(json!({"status": "unregistered"}))
}
