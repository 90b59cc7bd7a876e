//! The receiver for Serena's own tray protocol on 127.0.0.1:24224 (SERENA.md): every instance
//! configured with `web_dashboard_interface: tray_manager` checks `GET /health`, then
//! `POST /register {"port","pid","dashboard_url","project","started_at","open_viewer"}`,
//! `POST /update_project {"port","project"}` and `POST /unregister {"port"}`. Answering here means
//! Serena never spawns its own tray manager and reports straight to the core.
//!
//! Serena sends no token, so a registration is information, never authority, and is accepted
//! only when it checks out: no `Origin` header (no web page can post here), a Host of this port,
//! a project name of at most [`MAX_PROJECT_BYTES`], room for it ([`MAX_REGISTRATIONS`]), and on
//! Linux a caller whose socket belongs to this user and to the named process or its ancestors or
//! descendants, for a PID whose command line is Serena's and that listens on the named port
//! (within [`REGISTER_GRACE`]: Serena registers from a thread started right after its dashboard
//! thread, which may not have bound its socket yet). An update or unregistration must come from
//! the same family of processes as the registration it names (Serena sends only the port then).
//!
//! Deliberately not here: the main API's token (Serena has none to send), and anything that acts
//! on a process: a registration only adds a row and a project name.

use crate::core::engine::{Core, RegisterError, MAX_REGISTRATIONS};
use crate::core::http::{self, ApiError, ApiJson};
use crate::core::model::Registration;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Serena's constant `TRAY_MANAGER_PORT` (0x5EA0).
pub const SERENA_TRAY_PORT: u16 = 24224;

/// The longest project name accepted, in bytes (DESIGN).
pub const MAX_PROJECT_BYTES: usize = 256;

/// How long a registration waits for the named PID to listen on the named port. Serena posts
/// `/register` from a thread it starts just after the thread that binds its dashboard, so the
/// socket can lag by a moment; and Serena gives up on the request after 2 s (`urlopen(...,
/// timeout=2)`), after which an answer is lost, so the wait stays well under that.
pub const REGISTER_GRACE: Duration = Duration::from_millis(1500);

/// How often the port is looked at again during [`REGISTER_GRACE`].
const REGISTER_POLL: Duration = Duration::from_millis(100);

/// At most this many checks read `/proc` at once (each is a few ms of blocking work): a flood of
/// requests queues here instead of filling the blocking thread pool.
const CONCURRENT_CHECKS: usize = 4;

#[derive(Clone)]
struct TrayState {
    core: Core,
    port: u16,
    checks: Arc<Semaphore>,
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

/// The client's address, as the server put it on the request (absent when a router is driven
/// in-process, which then counts as an unknown caller).
type Peer = Option<Extension<ConnectInfo<SocketAddr>>>;

pub fn router(core: Core, port: u16) -> Router {
    let state = TrayState {
        core,
        port,
        checks: Arc::new(Semaphore::new(CONCURRENT_CHECKS)),
    };
    Router::new()
        .route(
            "/health",
            get(|| async { Json(json!({"status": "alive"})) }),
        )
        .route("/register", post(register))
        .route("/update_project", post(update_project))
        .route("/unregister", post(unregister))
        .layer(axum::extract::DefaultBodyLimit::max(http::BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Serves the receiver on `listener` until `shutdown` resolves (bounded connections,
/// header-read timeout: see [`http::serve::serve`]).
pub async fn serve(
    listener: TcpListener,
    core: Core,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let port = listener.local_addr()?.port();
    http::serve::serve(listener, router(core, port), shutdown).await
}

/// No web page may talk to this port (a browser always sends `Origin` on a cross-site POST, and
/// Serena never does), and the Host must be this server (DNS rebinding).
async fn guard(State(state): State<TrayState>, req: Request, next: Next) -> Response {
    if req.headers().contains_key(header::ORIGIN) {
        return ApiError::forbidden(
            "origin_refused",
            "requests from web pages (with an Origin header) are not accepted here",
        )
        .into_response();
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let ok = http::allowed_hosts(state.port).iter().any(|h| h == host);
    if ok {
        next.run(req).await
    } else {
        ApiError::forbidden("bad_host", format!("Host {host:?} is not this server")).into_response()
    }
}

async fn register(
    State(state): State<TrayState>,
    peer: Peer,
    ApiJson(b): ApiJson<RegisterBody>,
) -> Result<Json<Value>, ApiError> {
    check_project(&b.project)?;
    // Cheap refusal first: a flood is turned away before any checking work.
    let held = state.core.registrations();
    if held.len() >= MAX_REGISTRATIONS && !held.iter().any(|r| r.port == b.port) {
        return Err(full(RegisterError::Full));
    }
    let caller = caller(&state, peer);
    let start_time = match verify_registration(&state, caller, b.pid, b.port).await {
        Ok(start_time) => start_time,
        Err(refusal) => {
            tracing::info!(
                "tray protocol: refused the registration of pid {} on port {}: {}",
                b.pid,
                b.port,
                refusal.message
            );
            return Err(refusal);
        }
    };
    state
        .core
        .register(Registration {
            pid: b.pid,
            start_time,
            port: b.port,
            project: b.project.clone(),
        })
        .map_err(full)?;
    tracing::info!(
        "tray protocol: pid {} registered dashboard port {} (project {:?})",
        b.pid,
        b.port,
        b.project
    );
    Ok(Json(json!({"status": "registered"})))
}

async fn update_project(
    State(state): State<TrayState>,
    peer: Peer,
    ApiJson(b): ApiJson<ProjectBody>,
) -> Result<Json<Value>, ApiError> {
    check_project(&b.project)?;
    let pid = registered_pid(&state, b.port)?;
    verify_caller(&state, caller(&state, peer), pid).await?;
    if !state.core.update_registered_project(b.port, pid, b.project) {
        return Err(not_registered(b.port));
    }
    Ok(Json(json!({"status": "updated"})))
}

async fn unregister(
    State(state): State<TrayState>,
    peer: Peer,
    ApiJson(b): ApiJson<PortBody>,
) -> Result<Json<Value>, ApiError> {
    let pid = registered_pid(&state, b.port)?;
    verify_caller(&state, caller(&state, peer), pid).await?;
    if !state.core.unregister(b.port, pid) {
        return Err(not_registered(b.port));
    }
    tracing::info!(
        "tray protocol: pid {pid} unregistered dashboard port {}",
        b.port
    );
    Ok(Json(json!({"status": "unregistered"})))
}

fn check_project(project: &Option<String>) -> Result<(), ApiError> {
    match project {
        Some(p) if p.len() > MAX_PROJECT_BYTES => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "project_too_long",
            format!(
                "the project name is {} bytes long; at most {MAX_PROJECT_BYTES} are accepted",
                p.len()
            ),
        )),
        _ => Ok(()),
    }
}

fn full(e: RegisterError) -> ApiError {
    ApiError::new(
        StatusCode::INSUFFICIENT_STORAGE,
        "too_many_registrations",
        e.to_string(),
    )
}

fn not_registered(port: u16) -> ApiError {
    ApiError::not_found(
        "not_registered",
        format!("no registration for dashboard port {port}"),
    )
}

/// The PID that registered `port`.
fn registered_pid(state: &TrayState, port: u16) -> Result<u32, ApiError> {
    state
        .core
        .registrations()
        .into_iter()
        .find(|r| r.port == port)
        .map(|r| r.pid)
        .ok_or_else(|| not_registered(port))
}

/// Both ends of the caller's connection (read by the Linux caller check only).
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
struct Caller {
    remote: Option<SocketAddr>,
    local: SocketAddr,
}

fn caller(state: &TrayState, peer: Peer) -> Caller {
    Caller {
        remote: peer.map(|Extension(ConnectInfo(addr))| addr),
        // The receiver only ever listens on loopback (DESIGN: never anything else).
        local: SocketAddr::from((Ipv4Addr::LOCALHOST, state.port)),
    }
}

/// Runs a blocking check off the async threads, at most [`CONCURRENT_CHECKS`] at once.
async fn blocking<T: Send + 'static>(
    state: &TrayState,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let failed = |e: String| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "check_failed",
            format!("the check could not run: {e}"),
        )
    };
    let _turn = state
        .checks
        .acquire()
        .await
        .map_err(|e| failed(e.to_string()))?;
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| failed(e.to_string()))
}

/// A registration checks out (see the module docs), or why not.
async fn verify_registration(
    state: &TrayState,
    caller: Caller,
    pid: u32,
    port: u16,
) -> Result<u64, ApiError> {
    verify_caller(state, caller, pid).await?;
    let Some(start_time) = blocking(state, move || serena_start_time(pid)).await? else {
        return Err(ApiError::forbidden(
            "not_serena",
            format!("process {pid} is not a running Serena MCP server"),
        ));
    };
    let deadline = Instant::now() + REGISTER_GRACE;
    loop {
        if blocking(state, move || {
            crate::core::sockets::pid_owns_port(pid, port)
        })
        .await?
        {
            return Ok(start_time);
        }
        if Instant::now() >= deadline {
            return Err(ApiError::forbidden(
                "port_not_owned",
                format!("process {pid} does not listen on port {port}"),
            ));
        }
        tokio::time::sleep(REGISTER_POLL).await;
    }
}

/// The start time of this PID's process if its command line is a Serena MCP server's.
fn serena_start_time(pid: u32) -> Option<u64> {
    use sysinfo::{Pid, ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, UpdateKind};
    let mut sys = crate::core::procs::Sys::new();
    let p = Pid::from_u32(pid);
    let kind = ProcessRefreshKind::nothing().with_cmd(UpdateKind::Always);
    sys.refresh_processes_specifics(ProcessesToUpdate::Some(&[p]), true, kind);
    let proc = sys.process(p)?;
    let cmdline: Vec<String> = proc
        .cmd()
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    let serena =
        proc.status() != ProcessStatus::Zombie && crate::core::cmdline::parse(&cmdline).is_some();
    serena.then(|| sys.start_time(proc))
}

/// The caller is this user's and is `pid`, one of its ancestors or one of its descendants.
#[cfg(target_os = "linux")]
async fn verify_caller(state: &TrayState, caller: Caller, pid: u32) -> Result<(), ApiError> {
    let verdict = blocking(state, move || caller_verdict(caller, pid)).await?;
    match verdict {
        CallerVerdict::Ok => Ok(()),
        CallerVerdict::Unknown => Err(ApiError::forbidden(
            "unknown_peer",
            "the caller's socket cannot be found, so it cannot be checked",
        )),
        CallerVerdict::OtherUser(uid) => Err(ApiError::forbidden(
            "other_user",
            format!("the caller runs as uid {uid}, not as this program's user"),
        )),
        CallerVerdict::NotFamily => Err(ApiError::forbidden(
            "not_the_instance",
            format!(
                "the caller is not process {pid}, nor one of its ancestors or descendants: \
                 only an instance itself may speak for its registration"
            ),
        )),
    }
}

/// Other systems: accepted without the caller check. What would do it: on macOS, libproc's
/// `proc_pidfdinfo(PROC_PIDFDSOCKETINFO)` over this user's processes finds the process whose TCP
/// socket has the caller's address (and the uid with it); on Windows, `GetExtendedTcpTable` with
/// `TCP_TABLE_OWNER_PID_CONNECTIONS` gives the caller's PID, and `OpenProcessToken` with
/// `GetTokenInformation(TokenUser)` its user.
#[cfg(not(target_os = "linux"))]
async fn verify_caller(_state: &TrayState, _caller: Caller, _pid: u32) -> Result<(), ApiError> {
    Ok(())
}

#[cfg(target_os = "linux")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallerVerdict {
    Ok,
    Unknown,
    OtherUser(u32),
    NotFamily,
}

/// Finds the caller's socket in the kernel's TCP table by the connection's two addresses, then
/// compares its owner with our effective uid, and looks for it among the open files of `pid`,
/// then (only if needed, it reads the process table) of its ancestors and descendants.
#[cfg(target_os = "linux")]
fn caller_verdict(caller: Caller, pid: u32) -> CallerVerdict {
    use crate::core::sockets::{has_socket, peer_socket};
    let Some(socket) = caller
        .remote
        .and_then(|remote| peer_socket(remote, caller.local))
    else {
        return CallerVerdict::Unknown;
    };
    let me = rustix::process::geteuid().as_raw();
    if socket.uid != me {
        return CallerVerdict::OtherUser(socket.uid);
    }
    if has_socket(pid, socket.inode) {
        return CallerVerdict::Ok;
    }
    let snap = crate::core::procs::Snapshot::capture(&mut crate::core::procs::Sys::new());
    if family(&snap, pid)
        .into_iter()
        .any(|p| has_socket(p, socket.inode))
    {
        CallerVerdict::Ok
    } else {
        CallerVerdict::NotFamily
    }
}

/// The ancestors of `pid` (nearest first), then its descendants.
#[cfg(target_os = "linux")]
fn family(snap: &crate::core::procs::Snapshot, pid: u32) -> Vec<u32> {
    let mut out: Vec<u32> = Vec::new();
    let mut next = snap.get(pid).and_then(|p| p.ppid);
    while let Some(parent) = next {
        // PID 0 is no process; a cycle cannot happen in a real table, guard anyway.
        if parent == 0 || parent == pid || out.contains(&parent) {
            break;
        }
        out.push(parent);
        next = snap.get(parent).and_then(|p| p.ppid);
    }
    out.extend(snap.descendants(pid).iter().map(|p| p.pid));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Settings;
    use axum::body::Body;
    use tower::ServiceExt;

    fn core() -> (tempfile::TempDir, Core) {
        let dir = tempfile::tempdir().expect("tempdir");
        let core = Core::new(Settings::defaults(dir.path().join(".serena")));
        (dir, core)
    }

    async fn post(
        router: Router,
        path: &str,
        headers: &[(&str, &str)],
        body: Value,
    ) -> (u16, Value) {
        let mut req = axum::http::Request::post(path)
            .header("host", "127.0.0.1:24224")
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Body::from(body.to_string())).expect("request");
        let resp = router.oneshot(req).await.expect("response");
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn an_origin_header_is_refused_on_every_route() {
        let (_dir, core) = core();
        let r = router(core, SERENA_TRAY_PORT);
        let (status, body) = post(
            r.clone(),
            "/register",
            &[("origin", "http://127.0.0.1:24224")],
            json!({"port": 1, "pid": 1}),
        )
        .await;
        assert_eq!(status, 403);
        assert_eq!(body["error"]["code"], "origin_refused");
        let req = axum::http::Request::get("/health")
            .header("host", "127.0.0.1:24224")
            .header("origin", "null")
            .body(Body::empty())
            .expect("request");
        assert_eq!(r.oneshot(req).await.expect("response").status(), 403);
    }

    #[tokio::test]
    async fn an_overlong_project_is_refused_before_anything_else() {
        let (_dir, core) = core();
        let r = router(core, SERENA_TRAY_PORT);
        let long = "p".repeat(MAX_PROJECT_BYTES + 1);
        let (status, body) = post(
            r.clone(),
            "/register",
            &[],
            json!({"port": 1, "pid": 1, "project": long}),
        )
        .await;
        assert_eq!(status, 422);
        assert_eq!(body["error"]["code"], "project_too_long");
        let (status, _) = post(
            r,
            "/update_project",
            &[],
            json!({"port": 1, "project": "é".repeat(MAX_PROJECT_BYTES / 2 + 1)}),
        )
        .await;
        assert_eq!(status, 422, "bytes are counted, not characters");
    }

    #[tokio::test]
    async fn without_a_known_caller_nothing_is_accepted() {
        let (_dir, core) = core();
        let r = router(core.clone(), SERENA_TRAY_PORT);
        let me = std::process::id();
        let (status, _) = post(r.clone(), "/register", &[], json!({"port": 1, "pid": me})).await;
        assert_eq!(status, 403);
        assert!(core.registrations().is_empty());
        let (status, body) = post(r, "/unregister", &[], json!({"port": 1})).await;
        assert_eq!(status, 404);
        assert_eq!(body["error"]["code"], "not_registered");
    }

    #[test]
    fn the_core_holds_at_most_the_limit_and_acts_only_on_the_matching_pid() {
        let (_dir, core) = core();
        for port in 0..MAX_REGISTRATIONS as u16 {
            core.register(Registration {
                pid: 7,
                start_time: 0,
                port,
                project: None,
            })
            .expect("room");
        }
        let one_more = Registration {
            pid: 7,
            start_time: 0,
            port: 9999,
            project: None,
        };
        assert_eq!(core.register(one_more), Err(RegisterError::Full));
        // Re-registering a held port replaces it, full or not.
        let again = Registration {
            pid: 8,
            start_time: 0,
            port: 3,
            project: Some("p".into()),
        };
        assert_eq!(core.register(again), Ok(()));
        assert!(
            !core.update_registered_project(3, 7, None),
            "not 7's any more"
        );
        assert!(!core.unregister(3, 7));
        assert!(core.update_registered_project(3, 8, Some("q".into())));
        assert!(core.unregister(3, 8));
        assert_eq!(core.registrations().len(), MAX_REGISTRATIONS - 1);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_caller_is_its_own_family_and_a_stranger_is_not() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let local = l.local_addr().expect("addr");
        let client = std::net::TcpStream::connect(local).expect("connect");
        let remote = client.local_addr().expect("addr");
        let caller = Caller {
            remote: Some(remote),
            local,
        };
        let me = std::process::id();
        assert_eq!(caller_verdict(caller, me), CallerVerdict::Ok);
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        // We are the child's parent: an ancestor may speak for it.
        assert_eq!(caller_verdict(caller, child.id()), CallerVerdict::Ok);
        let _ = child.kill();
        let _ = child.wait();
        let unknown = Caller {
            remote: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 1))),
            local,
        };
        assert_eq!(caller_verdict(unknown, me), CallerVerdict::Unknown);
    }
}
