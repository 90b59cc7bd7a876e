//! The typed events every state change goes through. The core publishes them on one
//! `tokio::sync::broadcast` channel; the tray, notifications, the SSE stream and the timeline are
//! subscribers. The JSON form (`{"type": "...", ...}`) is what `/api/events` sends.

use super::model::{Cost, Instance, Session, State, ZombieReason};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// An instance was seen for the first time.
    InstanceAdded { instance: Instance },
    /// Its state (or zombie reason) changed.
    StateChanged {
        pid: u32,
        from: State,
        to: State,
        reason: Option<ZombieReason>,
        instance: Instance,
    },
    /// Something shown about it changed (project, port, modes, ...), not its state.
    InstanceUpdated { instance: Instance },
    /// What its process tree costs moved by more than a tenth (memory or CPU) or its process
    /// count changed (see `cost`); the other events carry the cost too.
    CostChanged {
        pid: u32,
        started_at: f64,
        cost: Option<Cost>,
    },
    /// It exited (seen live) or its registry entry was pruned.
    InstanceRemoved { pid: u32, started_at: f64 },
    /// This program killed it (with its tree).
    InstanceKilled {
        pid: u32,
        outcome: super::model::Outcome,
    },
    /// Under idle shutdown, it has been idle long enough that its shutdown nears:
    /// `instance.idle_since` and `instance.idle_shutdown_at` say when. Once per idle stretch.
    IdleWarning { instance: Instance },
    /// It stayed idle until `instance.idle_shutdown_at`: the running dashboard shuts it down
    /// and reaps its tree (an `instance_killed` follows).
    IdleShutdown { instance: Instance },
    /// The registry file did not parse and was moved aside.
    RegistryRecovered { moved_to: String },
    /// A file of this program (`file`: registry, sessions, token, timeline) cannot be written
    /// (`error`, e.g. no space left): the old file is kept, and the change is written by the
    /// first write that succeeds. Once until a `write_recovered` (see `writes`).
    WriteFailed {
        file: String,
        path: String,
        error: String,
    },
    /// A file that failed to be written was written again.
    WriteRecovered { file: String, path: String },
    /// A session's Serena was started; it does not answer yet.
    SessionLaunching {
        session_id: String,
        pid: u32,
        project_path: String,
    },
    /// A launched session answers (MCP and dashboard).
    SessionReady { session: Session },
    /// A launch failed; nothing it started is left running.
    SessionFailed { session_id: String, error: String },
    /// A session was released through the API (its tree reaped).
    SessionReleased { session_id: String, pid: u32 },
    /// A session's Serena exited by itself, or was killed other than by a release.
    SessionExited { session_id: String, pid: u32 },
    /// A session's lease was renewed: it now runs out at `expires_at` (epoch seconds).
    SessionRenewed { session_id: String, expires_at: f64 },
    /// A session's lease ran out, or a shared session lingered without a client: it was
    /// released (its tree reaped).
    SessionExpired { session_id: String, pid: u32 },
    /// A client (`launch --share`, PID `pid`) attached to a shared session; `clients` now.
    SessionAttached {
        session_id: String,
        pid: u32,
        clients: usize,
    },
    /// A shared session has no Serena now: put to sleep (`pid` was its Serena, its tree reaped;
    /// `given_back_bytes` what that tree cost), or created on demand (`pid` 0).
    SessionAsleep {
        session_id: String,
        pid: u32,
        given_back_bytes: Option<u64>,
    },
    /// A call woke a shared session: its new Serena is `pid`.
    SessionWoke { session_id: String, pid: u32 },
    /// A bridge found that a started Serena's answers (`lists`: "tools", "prompts",
    /// "resources") differ from the handshake cache it served: the cache was replaced and its
    /// clients told.
    HandshakeReplaced {
        session_id: String,
        lists: Vec<String>,
    },
    /// A client detached (its launcher ended); with none left, the session is released at
    /// `linger_until` unless one attaches first.
    SessionDetached {
        session_id: String,
        pid: u32,
        clients: usize,
        linger_until: Option<f64>,
    },
}

/// Runs `handle` for every core event from `rx`; a subscriber that lagged skips what it missed
/// (the next refresh brings the list up to date anyway). Runs until the app drops it at
/// shutdown.
pub(crate) async fn on_events<F, Fut>(
    mut rx: tokio::sync::broadcast::Receiver<Event>,
    mut handle: F,
) where
    F: FnMut(Event) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        match rx.recv().await {
            Ok(e) => handle(e).await,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}
