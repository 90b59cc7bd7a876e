//! The HTTP API and the web UI on 127.0.0.1 (axum): instances, their overview and logs, kill and
//! shutdown, kill all zombies, server-sent events, and the instance manager's
//! `/request-session` and `/release-session`. `router(state)` builds it, `serve(listener,
//! state, shutdown)` runs it: production binds the configured port, tests bind port 0.
//!
//! Every handler is a thin adapter over the core (`Core`, `Sessions`); the security layer
//! (`security`) runs in front of all of them. Errors are `{"error":{"code","message"}}`.

pub mod clients;
pub mod overview;
pub mod security;
pub mod ui;

use crate::core::app::{App, Show};
use crate::core::http::{self, ApiError, ApiJson, BODY_LIMIT};
use crate::core::kill::{KillError, KillErrorKind};
use crate::core::model::Session;
use crate::core::sessions::{Released, SessionError, SessionRequest};
use crate::core::timeline::Timeline;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::future::Future;
use tokio::net::TcpListener;
use tokio_stream::wrappers::BroadcastStream;

/// The whole app: routes, the security layer, the body limit.
pub fn router(state: App) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/api/health", get(health))
        .route("/api/instances", get(instances))
        .route("/api/instances/{pid}", get(instance))
        .route("/api/instances/{pid}/overview", get(instance_overview))
        .route("/api/instances/{pid}/logs", get(instance_logs))
        .route("/api/instances/{pid}/timeline", get(instance_timeline))
        .route(
            "/api/instances/{pid}/executions/{task_id}/cancel",
            post(cancel_execution),
        )
        .route("/api/instances/{pid}/kill", post(kill))
        .route("/api/instances/{pid}/shutdown", post(shutdown))
        .route("/api/zombies/kill", post(kill_zombies))
        .route("/api/window", post(show_window))
        .route("/api/clients", get(clients::list))
        .route("/api/clients/apply", post(clients::apply))
        .route("/api/clients/undo", post(clients::undo))
        .route("/api/events", get(events))
        .route("/api/sessions", get(sessions))
        .route("/api/sessions/{id}/renew", post(renew_session))
        .route("/api/sessions/{id}/attach", post(attach_session))
        .route("/api/sessions/{id}/detach", post(detach_session))
        .route("/api/sessions/{id}/wake", post(wake_session))
        .route("/api/sessions/{id}/touch", post(touch_session))
        .route(
            "/api/sessions/{id}/handshake-replaced",
            post(handshake_replaced),
        )
        .route("/request-session", post(request_session))
        .route("/release-session", post(release_session))
        .fallback(fallback)
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            security::guard,
        ))
        .with_state(state)
}

/// Serves the app on `listener` until `shutdown` resolves (bounded connections, header-read
/// timeout: see [`http::serve::serve`]).
pub async fn serve(
    listener: TcpListener,
    state: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    http::serve::serve(listener, router(state), shutdown).await
}

/// Every other path: a file of the web UI (GET or HEAD), else a JSON 404.
async fn fallback(req: Request) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        if let Some(asset) = ui::lookup(req.uri().path()) {
            return asset.respond(req.headers());
        }
    }
    not_found().into_response()
}

fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such route")
}

#[derive(Deserialize)]
struct IndexQuery {
    token: Option<String>,
}

/// `/` serves the page; `/?token=T` sets the token cookie and redirects to `/` (so the token
/// leaves the address bar and the history).
async fn index(
    State(state): State<App>,
    Query(q): Query<IndexQuery>,
    headers: HeaderMap,
) -> Response {
    match q.token {
        None => match ui::lookup("/") {
            Some(page) => page.respond(&headers),
            None => not_found().into_response(),
        },
        Some(t) if crate::core::token::constant_time_eq(&t, state.token()) => {
            let cookie = format!(
                "{}={}; HttpOnly; SameSite=Strict; Path=/",
                security::COOKIE,
                state.token()
            );
            ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
        }
        Some(_) => ApiError::forbidden("bad_token", "the token is wrong").into_response(),
    }
}

async fn health(State(state): State<App>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "app": "serena-tray",
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "port": state.port(),
    }))
}

async fn instances(State(state): State<App>) -> Json<Value> {
    Json(json!(state.core().instances()))
}

fn parse_pid(raw: &str) -> Result<u32, ApiError> {
    raw.parse::<u32>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| ApiError::bad_request("bad_pid", format!("{raw:?} is not a PID")))
}

fn unknown_pid(pid: u32) -> ApiError {
    ApiError::not_found("unknown_pid", format!("no Serena instance with PID {pid}"))
}

async fn instance(
    State(state): State<App>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let pid = parse_pid(&raw)?;
    state
        .core()
        .instance(pid)
        .map(|i| Json(json!(i)))
        .ok_or_else(|| unknown_pid(pid))
}

/// The dashboard port of a live instance, or why there is none.
fn dashboard_port(state: &App, pid: u32) -> Result<u16, ApiError> {
    let inst = state.core().instance(pid).ok_or_else(|| unknown_pid(pid))?;
    if inst.state_reason == Some(crate::core::ZombieReason::Dead) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "instance_dead",
            format!("instance {pid} is gone"),
        ));
    }
    inst.port.ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "no_dashboard",
            format!("instance {pid} has no dashboard (it may have lost Serena's port race)"),
        )
    })
}

async fn instance_overview(
    State(state): State<App>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let pid = parse_pid(&raw)?;
    let port = dashboard_port(&state, pid)?;
    state.core().mark_viewed(pid);
    let sections = overview::sections(state.core().prober(), port).await;
    Ok(Json(
        json!({"pid": pid, "port": port, "sections": sections}),
    ))
}

#[derive(Deserialize)]
struct LogsQuery {
    since: Option<String>,
}

async fn instance_logs(
    State(state): State<App>,
    Path(raw): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Json<Value>, ApiError> {
    let pid = parse_pid(&raw)?;
    let since = match q.since.as_deref() {
        None | Some("") => 0,
        Some(s) => s.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            ApiError::bad_request("bad_since", "since must be a log index (an integer >= 0)")
        })?,
    };
    let port = dashboard_port(&state, pid)?;
    state.core().mark_viewed(pid);
    overview::logs(state.core().prober(), port, since)
        .await
        .map(Json)
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "dashboard_error", e.to_string()))
}

/// The most timeline entries one answer carries (the latest).
pub const TIMELINE_MAX: usize = 500;

/// What the timeline (`tray/events.jsonl` and its rotated predecessor) says about a PID:
/// `{"pid", "events": [...]}`, oldest first. Known to the timeline or to the model, or 404.
async fn instance_timeline(
    State(state): State<App>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let pid = parse_pid(&raw)?;
    let timeline = Timeline::new(
        state
            .settings()
            .tray_dir()
            .join(crate::core::timeline::FILE_NAME),
    );
    let events = tokio::task::spawn_blocking(move || timeline.about_pid(pid, TIMELINE_MAX))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "timeline_unreadable",
                format!("cannot read the timeline: {e}"),
            )
        })?;
    if events.is_empty() && state.core().instance(pid).is_none() {
        return Err(unknown_pid(pid));
    }
    Ok(Json(json!({"pid": pid, "events": events})))
}

/// A task ID as Serena's dashboard has it: a non-negative integer (decimal digits only).
fn parse_task_id(raw: &str) -> Result<u64, ApiError> {
    Some(raw)
        .filter(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|r| r.parse::<u64>().ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "bad_task_id",
                format!("{raw:?} is not a task ID (a non-negative integer)"),
            )
        })
}

/// Cancels a task in the instance's Executions Queue through its own dashboard
/// (`POST /cancel_task_execution`): Serena's reply, e.g. `{"status":"success","was_cancelled"}`.
async fn cancel_execution(
    State(state): State<App>,
    Path((raw_pid, raw_task)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let pid = parse_pid(&raw_pid)?;
    let task_id = parse_task_id(&raw_task)?;
    let port = dashboard_port(&state, pid)?;
    overview::cancel_execution(state.core().prober(), port, task_id)
        .await
        .map(Json)
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "dashboard_error", e.to_string()))
}

fn kill_error(e: KillError) -> ApiError {
    let kind = e.kind();
    let status = match kind {
        KillErrorKind::UnknownPid => StatusCode::NOT_FOUND,
        KillErrorKind::NotSerena | KillErrorKind::NoDashboard => StatusCode::CONFLICT,
        KillErrorKind::KillFailed => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, kind.as_str(), e.to_string())
}

async fn kill(State(state): State<App>, Path(raw): Path<String>) -> Result<Json<Value>, ApiError> {
    let pid = parse_pid(&raw)?;
    let report = state.core().kill(pid).await.map_err(kill_error)?;
    Ok(Json(json!(report)))
}

async fn shutdown(
    State(state): State<App>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let pid = parse_pid(&raw)?;
    // A dead record or one without a dashboard: 409, as for the overview.
    dashboard_port(&state, pid)?;
    state.core().shutdown(pid).await.map_err(kill_error)?;
    Ok(Json(json!({"status": "asked", "pid": pid})))
}

async fn kill_zombies(State(state): State<App>) -> Json<Value> {
    Json(json!(state.core().kill_zombies().await))
}

/// What `POST /api/window` is asked to show: the dashboard, at an instance's tab (`pid`), or
/// at the New session form (`new_session`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShowBody {
    pid: Option<u32>,
    #[serde(default)]
    new_session: bool,
}

/// Shows the tray app's dashboard window (a second start, `serena-tray open`): 200 once asked,
/// 409 `no_window` from the headless daemon, which has none.
async fn show_window(
    State(state): State<App>,
    ApiJson(ShowBody { pid, new_session }): ApiJson<ShowBody>,
) -> Result<Json<Value>, ApiError> {
    let what = match (pid, new_session) {
        (Some(_), true) => {
            return Err(ApiError::bad_request(
                "bad_window_request",
                "ask for an instance's tab or for the New session form, not both",
            ))
        }
        (Some(pid), false) => Show::Instance(pid),
        (None, true) => Show::NewSession,
        (None, false) => Show::Dashboard,
    };
    if state.show(what) {
        Ok(Json(json!({"status": "shown"})))
    } else {
        Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_window",
            format!(
                "this Serena Tray runs headless (the daemon) and has no window: open {} in a browser",
                state.url()
            ),
        ))
    }
}

/// Server-sent events: first a `snapshot` of every instance and of the files that cannot be
/// written now (`write_failures`), then every core event as it happens (`event:` is the
/// event's type, `data:` its JSON).
async fn events(State(state): State<App>) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let rx = state.core().subscribe();
    // The refresh keeps its one-second pace while this page follows (the stream holds it).
    let page = state.core().page_open();
    let snapshot = SseEvent::default()
        .event("snapshot")
        .json_data(json!({
            "instances": state.core().instances(),
            "write_failures": state.core().write_failures(),
        }))
        .unwrap_or_default();
    let live = BroadcastStream::new(rx).filter_map(move |item| {
        let _following = &page;
        async move {
            match item {
                Ok(event) => {
                    let v = serde_json::to_value(&event).unwrap_or(Value::Null);
                    let kind = v
                        .get("type")
                        .and_then(Value::as_str)
                        .unwrap_or("event")
                        .to_string();
                    SseEvent::default().event(kind).json_data(v).ok().map(Ok)
                }
                // A slow reader missed events: tell it to reload the list.
                Err(_) => Some(Ok(SseEvent::default().event("lagged").data("{}"))),
            }
        }
    });
    // The stream ends when the app shuts down, so that an open page does not hold it up.
    let app = state.clone();
    let stop = async move { app.cancelled().await };
    Sse::new(
        stream::once(async move { Ok(snapshot) })
            .chain(live)
            .take_until(stop),
    )
    .keep_alive(KeepAlive::default())
}

async fn sessions(State(state): State<App>) -> Json<Value> {
    Json(json!(state.sessions().list().await))
}

fn session_error(e: SessionError) -> ApiError {
    let msg = e.to_string();
    let (status, code) = match e {
        SessionError::RelativePath(_) => (StatusCode::BAD_REQUEST, "relative_path"),
        SessionError::MissingPath(_) => (StatusCode::BAD_REQUEST, "missing_path"),
        SessionError::NotADirectory(_) => (StatusCode::BAD_REQUEST, "not_a_directory"),
        SessionError::BadTransport(_) => (StatusCode::BAD_REQUEST, "bad_transport"),
        SessionError::BadName(..) => (StatusCode::BAD_REQUEST, "bad_name"),
        SessionError::BadLease(_)
        | SessionError::BadIdle(_)
        | SessionError::BadSleep(_)
        | SessionError::OnDemandUnshared => (StatusCode::BAD_REQUEST, "bad_value"),
        SessionError::NoLease(_) => (StatusCode::CONFLICT, "no_lease"),
        SessionError::Ended(_) => (StatusCode::CONFLICT, "already_gone"),
        SessionError::NotShared(_) => (StatusCode::CONFLICT, "not_shared"),
        SessionError::NoProcess(_) => (StatusCode::BAD_REQUEST, "unknown_pid"),
        SessionError::NotAttached(..) => (StatusCode::CONFLICT, "not_attached"),
        SessionError::SerenaMissing(_) => (StatusCode::FAILED_DEPENDENCY, "serena_not_found"),
        SessionError::LaunchFailed { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "launch_failed"),
        SessionError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "launch_timeout"),
        SessionError::UnknownSession(_) => (StatusCode::NOT_FOUND, "unknown_session"),
        SessionError::ReleaseFailed { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "release_failed"),
        SessionError::Store { .. } | SessionError::Random(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "store_failed")
        }
        SessionError::Task(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    ApiError::new(status, code, msg)
}

async fn request_session(
    State(state): State<App>,
    ApiJson(req): ApiJson<SessionRequest>,
) -> Result<Response, ApiError> {
    let (session, existing) = state.sessions().request(req).await.map_err(session_error)?;
    let status = if existing {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(json!(session))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseRequest {
    session_id: String,
}

async fn release_session(
    State(state): State<App>,
    ApiJson(req): ApiJson<ReleaseRequest>,
) -> Result<Json<Released>, ApiError> {
    let status = state
        .sessions()
        .release(&req.session_id)
        .await
        .map_err(session_error)?;
    Ok(Json(Released {
        status,
        session_id: req.session_id,
    }))
}

/// A session as the answer, or its error.
fn session_answer(r: Result<Session, SessionError>) -> Result<Json<Value>, ApiError> {
    r.map(|s| Json(json!(s))).map_err(session_error)
}

/// The body of `POST /api/sessions/{id}/renew`: optionally a new lease length.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RenewRequest {
    lease_seconds: Option<f64>,
}

async fn renew_session(
    State(state): State<App>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<RenewRequest>,
) -> Result<Json<Value>, ApiError> {
    session_answer(state.sessions().renew(&id, req.lease_seconds).await)
}

/// The body of `POST /api/sessions/{id}/attach` and `/detach`: the `launch --share` process,
/// and (attach) the MCP client it serves.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttachRequest {
    pid: u32,
    client_pid: Option<u32>,
}

async fn attach_session(
    State(state): State<App>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<AttachRequest>,
) -> Result<Json<Value>, ApiError> {
    session_answer(state.sessions().attach(&id, req.pid, req.client_pid).await)
}

async fn detach_session(
    State(state): State<App>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<AttachRequest>,
) -> Result<Json<Value>, ApiError> {
    session_answer(state.sessions().detach(&id, req.pid).await)
}

async fn wake_session(
    State(state): State<App>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    session_answer(state.sessions().wake(&id).await)
}

/// The body of `POST /api/sessions/{id}/touch`: a call of the client behind `launch --share`
/// process `pid` began (`busy`) or ended.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TouchRequest {
    pid: u32,
    busy: bool,
}

async fn touch_session(
    State(state): State<App>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<TouchRequest>,
) -> Result<Json<Value>, ApiError> {
    let touched = state.sessions().touch(&id, req.pid, req.busy).await;
    touched
        .map(|()| Json(json!({"ok": true})))
        .map_err(session_error)
}

/// The body of `POST /api/sessions/{id}/handshake-replaced`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplacedRequest {
    lists: Vec<String>,
}

async fn handshake_replaced(
    State(state): State<App>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ReplacedRequest>,
) -> Result<Json<Value>, ApiError> {
    let said = state.sessions().handshake_replaced(&id, req.lists).await;
    said.map(|()| Json(json!({"ok": true})))
        .map_err(session_error)
}

#[cfg(test)]
mod tests;
