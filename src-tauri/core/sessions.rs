//! The instance manager: launches a dedicated Serena for a project (`request`) and releases it
//! (`release`), records sessions in `$SERENA_HOME/tray/sessions.json` so that they are re-adopted
//! after a restart. A launched Serena runs in its own process group, with stdout and stderr in a
//! log file under `tray/logs/` (a full pipe would block it), on a port picked here; the request
//! returns only once its MCP endpoint and its dashboard answer (the core says so on its event
//! bus), and leaves nothing running when it fails. Their Serenas start one at a time, each once
//! the one before has its dashboard port: Serenas started together can pick the same one, and
//! the loser runs without. Every step is an event on the core's bus (launching, ready, failed,
//! released, exited); a session whose Serena exits by itself is marked ended and leaves the
//! active list (the last ended ones are kept as history). Deliberately not here: HTTP (the API
//! maps these errors to statuses) and killing (the reaper, through the core).

use super::engine::Core;
use super::events::{on_events, Event};
use super::files;
use super::model::{now, Attachment, EndReason, Epoch, ProcessId, Session, Transport};
use super::procs::Snapshot;
use super::reaper;
use super::settings::SerenaCommandError;
use super::token::random_hex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, Mutex};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Serena's exit status when its MCP port is taken (SERENA.md).
const EXIT_PORT_TAKEN: i32 = 3;
/// How many ended sessions are kept (their IDs answer `already_gone`), newest first.
const HISTORY_KEPT: usize = 100;
/// How often a launch nudges the refresh loop while it waits for Serena to answer: the session
/// is handed out at the first refresh that sees it ready, so this is what a launch adds to
/// Serena's own start (a refresh with a session starting costs a few ms, for a second or two).
const LAUNCH_NUDGE: Duration = Duration::from_millis(40);
/// Attempts on fresh ports when the picked one is lost to a race.
const PORT_ATTEMPTS: usize = 3;

/// The body of `POST /request-session`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    pub project_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// Return the live session already serving the same project and context, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<bool>,
    /// A lease: released unless renewed within this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_seconds: Option<f64>,
    /// Its own idle shutdown (0: never), over `idle_shutdown_minutes` of the settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_shutdown_minutes: Option<f64>,
}

/// The answer of `POST /release-session`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Released {
    pub status: ReleaseStatus,
    pub session_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("project_path must be an absolute path, got {0:?}")]
    RelativePath(String),
    #[error("project_path {0:?} does not exist")]
    MissingPath(String),
    #[error("project_path {0:?} is not a directory")]
    NotADirectory(String),
    #[error("transport must be \"streamable-http\" or \"sse\", got {0:?}")]
    BadTransport(String),
    #[error("{0:?} is not a valid {1}: use letters, digits, '-', '_', '.' or a path")]
    BadName(String, &'static str),
    #[error("{0}")]
    BadValue(String),
    #[error("session {0:?} has no lease: pass lease_seconds to give it one")]
    NoLease(String),
    #[error("session {0:?} has ended")]
    Ended(String),
    #[error("session {0:?} is not shared: only shared sessions take attachments")]
    NotShared(String),
    #[error("no process {0} to attach")]
    NoProcess(u32),
    #[error(transparent)]
    SerenaMissing(#[from] SerenaCommandError),
    #[error("Serena did not start: {message}\n--- last lines of {log} ---\n{tail}")]
    LaunchFailed {
        message: String,
        log: String,
        tail: String,
    },
    #[error("Serena did not answer within {secs} s (MCP on port {port}, dashboard {dashboard})\n--- last lines of {log} ---\n{tail}")]
    Timeout {
        secs: u64,
        port: u16,
        dashboard: String,
        log: String,
        tail: String,
    },
    #[error("no session {0:?}")]
    UnknownSession(String),
    #[error("cannot release session {id}: {message}")]
    ReleaseFailed { id: String, message: String },
    #[error("{path}: {message}")]
    Store { path: String, message: String },
    /// The task that ran the launch or the release failed (a bug, or shutdown).
    #[error("the session task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// What `release` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseStatus {
    Terminated,
    AlreadyGone,
}

/// The instance manager. Cloneable; one per running [`App`](crate::core::app::App).
#[derive(Clone)]
pub struct Sessions {
    inner: Arc<SessionsInner>,
}

struct SessionsInner {
    core: Core,
    store: PathBuf,
    logs: PathBuf,
    serena_command: std::result::Result<Vec<String>, SerenaCommandError>,
    ready_timeout: Duration,
    sessions: Mutex<BTreeMap<String, Session>>,
    /// The app's: launches and the reaping of launched children are tracked and stop with it.
    tasks: TaskTracker,
    cancel: CancellationToken,
    /// A lease was given or renewed, or a shared session lost its last client: the keeper of
    /// leases and lingers looks again.
    leases_changed: tokio::sync::Notify,
    /// How long a shared session outlives its last client.
    linger: Duration,
    /// One lock per shared session's key (project, context, modes, transport): two clients
    /// asking at once get one session, not two.
    shared_launches: std::sync::Mutex<std::collections::HashMap<String, Arc<Mutex<()>>>>,
    /// Held by a launch from its spawn until its Serena's dashboard port is known (or the
    /// launch ends): Serenas started together can pick the same dashboard port, and the loser
    /// runs without a dashboard (SERENA.md), so this program starts one at a time.
    starting: Mutex<()>,
}

impl Sessions {
    /// Loads `sessions.json` (a missing or unreadable file means none), re-adopts every
    /// recorded session whose process is still the same one and marks the others ended.
    pub fn load(core: Core, tasks: TaskTracker, cancel: CancellationToken) -> Sessions {
        let settings = core.settings();
        let tray = settings.tray_dir();
        let serena_command = settings.serena_command();
        let ready_timeout = settings.tray.session_start_timeout;
        let linger = settings.tray.share_linger_seconds;
        let store = tray.join("sessions.json");
        let snap = Snapshot::capture(&mut sysinfo::System::new());
        let sessions: BTreeMap<String, Session> = read_store(&store)
            .into_iter()
            .map(
                |s| match s.is_active() && snap.get_id(s.process_id()).is_none() {
                    true => s.ended(EndReason::Exited),
                    false => s,
                },
            )
            .map(|s| (s.session_id.clone(), s))
            .collect();
        for s in sessions.values().filter(|s| s.is_active()) {
            core.mark_session(s.process_id(), &s.session_id, false);
            core.set_session_idle(s.process_id(), s.idle_shutdown());
        }
        Sessions {
            inner: Arc::new(SessionsInner {
                core,
                store,
                logs: tray.join("logs"),
                serena_command,
                ready_timeout,
                sessions: Mutex::new(sessions),
                tasks,
                cancel,
                leases_changed: tokio::sync::Notify::new(),
                linger,
                shared_launches: Default::default(),
                starting: Mutex::new(()),
            }),
        }
    }

    /// After a restart: the recorded clients of shared sessions that still run are watched
    /// again, the others detached (a task of the app's, in the background).
    pub fn watch_recorded_attachments(&self) {
        let this = self.clone();
        self.inner.tasks.spawn(async move {
            let recorded: Vec<(String, Attachment)> = {
                let sessions = this.inner.sessions.lock().await;
                sessions
                    .values()
                    .filter(|s| s.is_active())
                    .flat_map(|s| s.attached.iter().map(|a| (s.session_id.clone(), a.clone())))
                    .collect()
            };
            for (id, a) in recorded {
                this.watch_attachment(&id, a.process_id());
            }
            // A shared session with no client left when this program stopped lingers anew.
            let mut sessions = this.inner.sessions.lock().await;
            let linger = this.inner.linger.as_secs_f64();
            for s in sessions.values_mut().filter(|s| s.is_active() && s.shared) {
                if s.attached.is_empty() && s.linger_until.is_none() {
                    s.linger_until = Some(now() + linger);
                }
            }
            drop(sessions);
            this.inner.leases_changed.notify_one();
        });
    }

    /// Detaches `launcher` from session `id` once its process exits, however it exits.
    fn watch_attachment(&self, id: &str, launcher: ProcessId) {
        let (this, id) = (self.clone(), id.to_string());
        let cancel = self.inner.cancel.clone();
        self.inner.tasks.spawn(async move {
            tokio::select! {
                _ = super::watch::exited(launcher) => {}
                _ = cancel.cancelled() => return,
            }
            // Gone (or not watchable: then gone already or never to be told).
            if super::procs::identity(launcher.pid) != Some(launcher) {
                let _ = this.detach(&id, launcher.pid).await;
            } else {
                // Cannot watch here (no pidfd): look every few seconds instead.
                while super::procs::identity(launcher.pid) == Some(launcher) {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                        _ = cancel.cancelled() => return,
                    }
                }
                let _ = this.detach(&id, launcher.pid).await;
            }
        });
    }

    /// Attaches the `launch --share` process `pid` (serving the MCP client `client_pid`) to
    /// the shared session `id`; returns the session.
    pub async fn attach(
        &self,
        id: &str,
        pid: u32,
        client_pid: Option<u32>,
    ) -> std::result::Result<Session, SessionError> {
        let launcher = tokio::task::spawn_blocking(move || super::procs::identity(pid))
            .await?
            .ok_or(SessionError::NoProcess(pid))?;
        let client_name = match client_pid {
            Some(c) => {
                tokio::task::spawn_blocking(move || {
                    let snap = Snapshot::capture(&mut sysinfo::System::new());
                    snap.get(c).map(|p| p.name.clone())
                })
                .await?
            }
            None => None,
        };
        let mut sessions = self.inner.sessions.lock().await;
        let session = match sessions.get_mut(id) {
            None => return Err(SessionError::UnknownSession(id.to_string())),
            Some(s) if !s.is_active() => return Err(SessionError::Ended(id.to_string())),
            Some(s) if !s.shared => return Err(SessionError::NotShared(id.to_string())),
            Some(s) => s,
        };
        session.attached.retain(|a| a.pid != pid);
        session.attached.push(Attachment {
            pid,
            start_time: launcher.start_time,
            client_pid,
            client_name,
            since: now(),
        });
        session.linger_until = None;
        let attached = session.clone();
        if let Err(e) = self.persist(&mut sessions) {
            tracing::warn!("{e}");
        }
        drop(sessions);
        self.watch_attachment(id, launcher);
        self.inner.core.publish(Event::SessionAttached {
            session_id: id.to_string(),
            pid,
            clients: attached.attached.len(),
        });
        Ok(attached)
    }

    /// Detaches the `launch --share` process `pid` from session `id`; the last one out starts
    /// the linger. Returns the session.
    pub async fn detach(&self, id: &str, pid: u32) -> std::result::Result<Session, SessionError> {
        let mut sessions = self.inner.sessions.lock().await;
        let session = match sessions.get_mut(id) {
            None => return Err(SessionError::UnknownSession(id.to_string())),
            Some(s) => s,
        };
        let before = session.attached.len();
        session.attached.retain(|a| a.pid != pid);
        if session.attached.len() == before || !session.is_active() {
            return Ok(session.clone());
        }
        if session.attached.is_empty() {
            session.linger_until = Some(now() + self.inner.linger.as_secs_f64());
        }
        let detached = session.clone();
        if let Err(e) = self.persist(&mut sessions) {
            tracing::warn!("{e}");
        }
        drop(sessions);
        self.inner.leases_changed.notify_one();
        self.inner.core.publish(Event::SessionDetached {
            session_id: id.to_string(),
            pid,
            clients: detached.attached.len(),
            linger_until: detached.linger_until,
        });
        Ok(detached)
    }

    /// Follows the core's events: a session whose Serena leaves the model (it exited, or was
    /// killed other than by `release`) is marked ended. Runs until the app drops it at shutdown.
    pub async fn follow(self, rx: broadcast::Receiver<Event>) {
        on_events(rx, |event| {
            let this = self.clone();
            async move {
                if let Event::InstanceRemoved { pid, started_at } = event {
                    this.ended_by_itself(ProcessId::of_record(pid, started_at))
                        .await;
                }
            }
        })
        .await
    }

    async fn ended_by_itself(&self, id: ProcessId) {
        let mut sessions = self.inner.sessions.lock().await;
        let Some(s) = sessions
            .values()
            .find(|s| s.is_active() && s.process_id() == id)
            .cloned()
        else {
            return;
        };
        let ended = s.ended(EndReason::Exited);
        sessions.insert(ended.session_id.clone(), ended.clone());
        if let Err(e) = self.persist(&mut sessions) {
            tracing::warn!("{e}");
        }
        drop(sessions);
        self.inner.core.unmark_session(id);
        self.inner.core.publish(Event::SessionExited {
            session_id: ended.session_id,
            pid: id.pid,
        });
    }

    /// The sessions not released.
    pub async fn list(&self) -> Vec<Session> {
        self.inner
            .sessions
            .lock()
            .await
            .values()
            .filter(|s| s.is_active())
            .cloned()
            .collect()
    }

    /// Launches (or, with `shared`, reuses) a Serena for a project. Returns the session and
    /// whether it was an existing one.
    pub async fn request(
        &self,
        req: SessionRequest,
    ) -> std::result::Result<(Session, bool), SessionError> {
        // Its own task: a client that hangs up mid-launch cannot cancel it half-way (the launch
        // then completes and is recorded, or fails and cleans up after itself).
        let this = self.clone();
        let launch = self
            .inner
            .tasks
            .spawn(async move { this.request_here(req).await });
        launch.await?
    }

    async fn request_here(
        &self,
        req: SessionRequest,
    ) -> std::result::Result<(Session, bool), SessionError> {
        let project = validate_project(&req.project_path)?;
        let transport = match req.transport.as_deref() {
            None | Some("streamable-http") => Transport::StreamableHttp,
            Some("sse") => Transport::Sse,
            Some(other) => return Err(SessionError::BadTransport(other.to_string())),
        };
        if let Some(c) = &req.context {
            check_name(c, "context")?;
        }
        let modes = req.modes.clone().unwrap_or_default();
        for m in &modes {
            check_name(m, "mode")?;
        }
        let lease = req.lease_seconds.map(lease_of).transpose()?;
        let idle = req
            .idle_shutdown_minutes
            .map(|m| {
                super::settings::minutes(m).ok_or_else(|| {
                    SessionError::BadValue(format!(
                        "idle_shutdown_minutes must be a number of minutes >= 0, got {m}"
                    ))
                })
            })
            .transpose()?;
        let shared = req.shared == Some(true);
        let mut wanted = modes.clone();
        wanted.sort();
        // Held until this request has found or launched its shared session.
        let _one_launch = if shared {
            let key = format!("{project}\0{:?}\0{wanted:?}\0{transport}", req.context);
            let lock = super::model::lock(&self.inner.shared_launches)
                .entry(key)
                .or_default()
                .clone();
            Some(lock.lock_owned().await)
        } else {
            None
        };
        if shared {
            let snap = snapshot().await;
            let sessions = self.inner.sessions.lock().await;
            let existing = sessions.values().find(|s| {
                let mut theirs = s.modes.clone();
                theirs.sort();
                s.is_active()
                    && s.shared
                    && s.project_path == project
                    && s.context == req.context
                    && theirs == wanted
                    && s.transport == transport
                    && snap.get_id(s.process_id()).is_some()
            });
            if let Some(s) = existing {
                return Ok((s.clone(), true));
            }
        }
        let command = self.inner.serena_command.clone()?;
        files::private_dir(&self.inner.logs).map_err(|e| SessionError::Store {
            path: self.inner.logs.display().to_string(),
            message: e.to_string(),
        })?;
        let session_id = random_hex(16).map_err(|e| SessionError::Store {
            path: "random".into(),
            message: e.to_string(),
        })?;
        let plan = LaunchPlan {
            log: self.inner.logs.join(format!("session-{session_id}.log")),
            command,
            session_id,
            project,
            context: req.context,
            modes,
            transport,
        };
        let launched = self.launch_with_retries(&plan).await;
        let core = &self.inner.core;
        match launched {
            Ok(mut session) => {
                session.shared = shared;
                if shared {
                    // Until its first client attaches, it lingers as if its last had left.
                    session.linger_until =
                        Some(session.created_at + self.inner.linger.as_secs_f64());
                    self.inner.leases_changed.notify_one();
                }
                session.lease_seconds = lease;
                session.expires_at = lease.map(|l| session.created_at + l);
                session.idle_shutdown_minutes = req.idle_shutdown_minutes;
                core.set_session_idle(session.process_id(), idle);
                if lease.is_some() {
                    self.inner.leases_changed.notify_one();
                }
                let mut sessions = self.inner.sessions.lock().await;
                sessions.insert(plan.session_id.clone(), session.clone());
                if let Err(e) = self.persist(&mut sessions) {
                    // It runs and is known here; the next write records it.
                    tracing::warn!("{e}");
                }
                drop(sessions);
                core.publish(Event::SessionReady {
                    session: session.clone(),
                });
                Ok((session, false))
            }
            Err(e) => {
                core.publish(Event::SessionFailed {
                    session_id: plan.session_id,
                    error: e.to_string(),
                });
                Err(e)
            }
        }
    }

    /// Launches on a fresh port when the picked one is lost to a race.
    async fn launch_with_retries(
        &self,
        plan: &LaunchPlan,
    ) -> std::result::Result<Session, SessionError> {
        for _ in 0..PORT_ATTEMPTS {
            match self.launch(plan).await {
                Ok(session) => return Ok(session),
                Err(Launch::PortTaken) => continue,
                Err(Launch::Failed(e)) => return Err(e),
            }
        }
        Err(SessionError::LaunchFailed {
            message: format!("the MCP port was taken {PORT_ATTEMPTS} times in a row"),
            log: plan.log.display().to_string(),
            tail: tail(&plan.log),
        })
    }

    async fn launch(&self, plan: &LaunchPlan) -> std::result::Result<Session, Launch> {
        let LaunchPlan {
            command,
            session_id,
            project,
            context,
            modes,
            transport,
            log,
        } = plan;
        let (transport, log) = (*transport, log.as_path());
        let failed = |message: String| {
            Launch::Failed(SessionError::LaunchFailed {
                message,
                log: log.display().to_string(),
                tail: tail(log),
            })
        };
        // Before the MCP port is picked: a port picked and then waited on may be taken.
        let mut starting = Some(self.inner.starting.lock().await);
        let port = free_port().map_err(|e| failed(format!("no free port: {e}")))?;
        let (program, prefix) = command
            .split_first()
            .ok_or_else(|| failed("the Serena command is empty".into()))?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(prefix)
            .arg("start-mcp-server")
            .args(["--project", project])
            .args(["--transport", transport.as_str()])
            .args(["--host", "127.0.0.1"])
            .args(["--port", &port.to_string()])
            .args(["--open-web-dashboard", "False"]);
        if let Some(c) = context {
            cmd.args(["--context", c]);
        }
        for m in modes {
            cmd.args(["--mode", m]);
        }
        let out = files::open_append(log)
            .map_err(|e| failed(format!("cannot open {}: {e}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(|e| failed(format!("cannot open {}: {e}", log.display())))?;
        cmd.stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(false);
        #[cfg(unix)]
        cmd.process_group(0);
        // No console window flashes up for it.
        #[cfg(windows)]
        cmd.creation_flags(windows_sys::Win32::System::Threading::CREATE_NO_WINDOW);
        // Subscribed before Serena starts, so that no step of its start-up is missed.
        let mut events = self.inner.core.subscribe();
        let mut child = cmd
            .spawn()
            .map_err(|e| failed(format!("cannot run {program}: {e}")))?;
        let pid = child
            .id()
            .ok_or_else(|| failed("the process vanished at once".into()))?;
        let id = tokio::task::spawn_blocking(move || crate::core::procs::identity(pid))
            .await
            .ok()
            .flatten()
            .unwrap_or(ProcessId { pid, start_time: 0 });
        let core = &self.inner.core;
        core.mark_session(id, session_id, true);
        core.publish(Event::SessionLaunching {
            session_id: session_id.to_string(),
            pid,
            project_path: project.to_string(),
        });

        // The instance is the child itself, or (behind a wrapper such as `uvx`) one under it;
        // the core shows it `starting` until its dashboard answers and its MCP port listens.
        // Every event is a reason to look again; the refresh loop is nudged meanwhile.
        let deadline = tokio::time::Instant::now() + self.inner.ready_timeout;
        // The Serena seen under it, recorded: a wrapper may exit before the launch ends, and
        // its tree cannot be found from it any more.
        let mut recorded: Option<ProcessId> = None;
        let give_up = |why: Launch, recorded: Option<ProcessId>| async move {
            core.unmark_session(id);
            // Whatever it started may outlive it (a wrapper's child): reap that too.
            let mut survivors = reaper::kill_own_tree(id, &Default::default()).await;
            if let Some(serena) = recorded.filter(|r| *r != id) {
                survivors.extend(reaper::kill_own_tree(serena, &Default::default()).await);
            }
            if !survivors.is_empty() {
                tracing::warn!("a failed launch left {survivors:?} running");
            }
            why
        };
        let ready = loop {
            let launched = core.launched(id);
            if let Some(i) = &launched {
                recorded = Some(i.process_id());
                if i.port.is_some() {
                    // Its dashboard listens: the next Serena cannot pick the same port.
                    starting.take();
                }
                if i.state.is_live() {
                    break i.clone();
                }
            }
            tokio::select! {
                status = child.wait() => {
                    let why = match status {
                        Ok(s) if s.code() == Some(EXIT_PORT_TAKEN) => Launch::PortTaken,
                        Ok(s) => failed(format!("it exited with {s}")),
                        Err(e) => failed(format!("cannot wait for it: {e}")),
                    };
                    return Err(give_up(why, recorded).await);
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let why = Launch::Failed(SessionError::Timeout {
                        secs: self.inner.ready_timeout.as_secs(),
                        port,
                        dashboard: launched
                            .and_then(|i| i.port)
                            .map(|d| d.to_string())
                            .unwrap_or_else(|| "not found".into()),
                        log: log.display().to_string(),
                        tail: tail(log),
                    });
                    let why = give_up(why, recorded).await;
                    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                    return Err(why);
                }
                _ = self.inner.cancel.cancelled() => {
                    return Err(give_up(failed("Serena Tray is shutting down".into()), recorded).await);
                }
                event = events.recv() => {
                    if let Err(broadcast::error::RecvError::Closed) = event {
                        return Err(give_up(failed("the core stopped".into()), recorded).await);
                    }
                }
                _ = tokio::time::sleep(LAUNCH_NUDGE) => core.wake(),
            }
        };
        drop(starting);
        // Reap the child when it exits, so it never lingers as a defunct process (at shutdown
        // it is left running: sessions outlive this program and are re-adopted).
        let cancel = self.inner.cancel.clone();
        self.inner.tasks.spawn(async move {
            tokio::select! {
                _ = child.wait() => {}
                _ = cancel.cancelled() => {}
            }
        });
        let instance_id = ready.process_id();
        if instance_id != id {
            core.unmark_session(id);
        }
        core.mark_session(instance_id, session_id, false);
        let path = transport.endpoint_path().unwrap_or("/mcp");
        Ok(Session {
            session_id: session_id.to_string(),
            host: "127.0.0.1".into(),
            port,
            url: format!("http://127.0.0.1:{port}{path}"),
            pid: instance_id.pid,
            start_time: instance_id.start_time,
            dashboard_url: ready
                .port
                .map(|d| format!("http://127.0.0.1:{d}/dashboard/index.html")),
            dashboard_port: ready.port,
            project_path: project.to_string(),
            context: context.clone(),
            modes: modes.to_vec(),
            transport,
            created_at: now(),
            log_path: log.display().to_string(),
            ended_at: None,
            end_reason: None,
            lease_seconds: None,
            expires_at: None,
            idle_shutdown_minutes: None,
            shared: false,
            attached: Vec::new(),
            linger_until: None,
        })
    }

    /// Releases a session: reaps its whole tree. `AlreadyGone` if its process had ended or it
    /// was released before.
    pub async fn release(&self, id: &str) -> std::result::Result<ReleaseStatus, SessionError> {
        self.end(id, EndReason::Released).await
    }

    /// Ends a session for `reason` (a release, or its lease ran out): reaps its whole tree.
    async fn end(
        &self,
        id: &str,
        reason: EndReason,
    ) -> std::result::Result<ReleaseStatus, SessionError> {
        // Its own task, like a launch: a client that hangs up cannot stop it half-way.
        let (this, id) = (self.clone(), id.to_string());
        let release = self
            .inner
            .tasks
            .spawn(async move { this.release_here(&id, reason).await });
        release.await?
    }

    /// Renews a session's lease: it now runs out `lease_seconds` from now (its own lease's
    /// length if not given). Returns the session.
    pub async fn renew(
        &self,
        id: &str,
        lease_seconds: Option<f64>,
    ) -> std::result::Result<Session, SessionError> {
        let lease = lease_seconds.map(lease_of).transpose()?;
        let mut sessions = self.inner.sessions.lock().await;
        let session = match sessions.get_mut(id) {
            None => return Err(SessionError::UnknownSession(id.to_string())),
            Some(s) if !s.is_active() => return Err(SessionError::Ended(id.to_string())),
            Some(s) => s,
        };
        let lease = lease
            .or(session.lease_seconds)
            .ok_or_else(|| SessionError::NoLease(id.to_string()))?;
        session.lease_seconds = Some(lease);
        session.expires_at = Some(now() + lease);
        let renewed = session.clone();
        if let Err(e) = self.persist(&mut sessions) {
            tracing::warn!("{e}");
        }
        drop(sessions);
        self.inner.leases_changed.notify_one();
        self.inner.core.publish(Event::SessionRenewed {
            session_id: renewed.session_id.clone(),
            expires_at: renewed.expires_at.unwrap_or_default(),
        });
        Ok(renewed)
    }

    /// Releases every session whose lease ran out, and every shared session that lingered
    /// without a client for `share_linger_seconds`, as that moment comes; runs until the app
    /// stops.
    pub async fn keep_leases(self) {
        loop {
            let now = now();
            let (due, next): (Vec<(String, EndReason)>, Option<Epoch>) = {
                let sessions = self.inner.sessions.lock().await;
                let ends = sessions.values().filter(|s| s.is_active()).flat_map(|s| {
                    let lease = s
                        .expires_at
                        .map(|at| (s.session_id.clone(), EndReason::LeaseExpired, at));
                    let linger = s
                        .linger_until
                        .filter(|_| s.attached.is_empty())
                        .map(|at| (s.session_id.clone(), EndReason::Unattached, at));
                    lease.into_iter().chain(linger)
                });
                let (due, later): (Vec<_>, Vec<_>) = ends.partition(|(_, _, at)| *at <= now);
                (
                    due.into_iter().map(|(id, why, _)| (id, why)).collect(),
                    later
                        .into_iter()
                        .map(|(_, _, at)| at)
                        .min_by(f64::total_cmp),
                )
            };
            for (id, why) in due {
                match self.end(&id, why).await {
                    Ok(_) => tracing::info!("session {id} released ({why:?})"),
                    Err(e) => tracing::warn!("session {id}: {why:?}, but {e}"),
                }
            }
            let wait = next.map_or(Duration::from_secs(3600), |at| {
                Duration::from_secs_f64((at - now).max(0.0))
            });
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.inner.leases_changed.notified() => {}
            }
        }
    }

    async fn release_here(
        &self,
        id: &str,
        reason: EndReason,
    ) -> std::result::Result<ReleaseStatus, SessionError> {
        // Marked released before the reap, so that neither a second release nor its Serena's
        // exit (seen by `follow`) takes it for a live session meanwhile; put back if it fails.
        let session = {
            let mut sessions = self.inner.sessions.lock().await;
            let session = match sessions.get(id) {
                None => return Err(SessionError::UnknownSession(id.to_string())),
                Some(s) if !s.is_active() => return Ok(ReleaseStatus::AlreadyGone),
                Some(s) => s.clone(),
            };
            sessions.insert(id.to_string(), session.clone().ended(reason));
            session
        };
        let pid = session.process_id();
        let reaped = reaper::reap(
            pid,
            session.dashboard_port,
            self.inner.core.prober(),
            &Default::default(),
        )
        .await;
        let mut sessions = self.inner.sessions.lock().await;
        let report = match reaped {
            Ok(r) => r,
            Err(e) => {
                sessions.insert(id.to_string(), session);
                return Err(SessionError::ReleaseFailed {
                    id: id.to_string(),
                    message: e.to_string(),
                });
            }
        };
        if let Err(e) = self.persist(&mut sessions) {
            // It is released all the same; the next write records it.
            tracing::warn!("{e}");
        }
        drop(sessions);
        self.inner.core.unmark_session(pid);
        self.inner.core.publish(match reason {
            EndReason::LeaseExpired | EndReason::Unattached => Event::SessionExpired {
                session_id: id.to_string(),
                pid: pid.pid,
            },
            _ => Event::SessionReleased {
                session_id: id.to_string(),
                pid: pid.pid,
            },
        });
        let _ = self.inner.core.refresh().await;
        Ok(match report.outcome {
            reaper::Outcome::AlreadyGone => ReleaseStatus::AlreadyGone,
            _ => ReleaseStatus::Terminated,
        })
    }

    /// Records the sessions (and forgets ended ones past the history's bound).
    fn persist(
        &self,
        sessions: &mut BTreeMap<String, Session>,
    ) -> std::result::Result<(), SessionError> {
        let keep: std::collections::HashSet<String> = kept(sessions.values())
            .into_iter()
            .map(|s| s.session_id.clone())
            .collect();
        sessions.retain(|id, _| keep.contains(id));
        let list = kept(sessions.values());
        let store_err = |e: String| SessionError::Store {
            path: self.inner.store.display().to_string(),
            message: e,
        };
        let text = serde_json::to_string_pretty(&list).map_err(|e| store_err(e.to_string()))?;
        if let Some(dir) = self.inner.store.parent() {
            super::files::private_dir(dir).map_err(|e| store_err(e.to_string()))?;
        }
        super::files::write_atomic(&self.inner.store, text.as_bytes())
            .map_err(|e| store_err(e.to_string()))
    }
}

/// A lease's length: a number of seconds > 0.
fn lease_of(seconds: f64) -> std::result::Result<f64, SessionError> {
    (seconds.is_finite() && seconds > 0.0)
        .then_some(seconds)
        .ok_or_else(|| {
            SessionError::BadValue(format!(
                "lease_seconds must be a number of seconds > 0, got {seconds}"
            ))
        })
}

/// What is recorded: every active session, and the [`HISTORY_KEPT`] that ended last.
fn kept<'a>(sessions: impl Iterator<Item = &'a Session>) -> Vec<&'a Session> {
    let (mut list, mut ended): (Vec<&Session>, Vec<&Session>) =
        sessions.partition(|s| s.is_active());
    ended.sort_by(|a, b| {
        b.ended_at
            .unwrap_or(0.0)
            .total_cmp(&a.ended_at.unwrap_or(0.0))
    });
    list.extend(ended.into_iter().take(HISTORY_KEPT));
    list
}

/// What one launch starts: the Serena command and its options, the session ID, the log.
struct LaunchPlan {
    command: Vec<String>,
    session_id: String,
    project: String,
    context: Option<String>,
    modes: Vec<String>,
    transport: Transport,
    log: PathBuf,
}

enum Launch {
    PortTaken,
    Failed(SessionError),
}

/// The recorded sessions; a file that does not parse is moved aside (never deleted).
fn read_store(store: &Path) -> Vec<Session> {
    let text = match super::files::read(store) {
        Ok(text) => text,
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("{}: {e}; started without sessions", store.display());
            }
            return Vec::new();
        }
    };
    match serde_json::from_slice::<Vec<Session>>(&text) {
        Ok(v) => v,
        Err(e) => {
            match super::files::move_aside(store) {
                Ok(aside) => tracing::warn!(
                    "{}: {e}; moved it to {} and started without sessions",
                    store.display(),
                    aside.display()
                ),
                Err(m) => tracing::warn!(
                    "{}: {e}; cannot move it aside ({m}); started without sessions",
                    store.display()
                ),
            }
            Vec::new()
        }
    }
}

async fn snapshot() -> Snapshot {
    tokio::task::spawn_blocking(|| Snapshot::capture(&mut sysinfo::System::new()))
        .await
        .unwrap_or_default()
}

/// Absolute, existing directory, canonicalised.
fn validate_project(raw: &str) -> std::result::Result<String, SessionError> {
    let path = Path::new(raw);
    if raw.is_empty() || !path.is_absolute() {
        return Err(SessionError::RelativePath(raw.to_string()));
    }
    let canon = path
        .canonicalize()
        .map_err(|_| SessionError::MissingPath(raw.to_string()))?;
    if !canon.is_dir() {
        return Err(SessionError::NotADirectory(raw.to_string()));
    }
    canon
        .to_str()
        .map(String::from)
        .ok_or_else(|| SessionError::MissingPath(raw.to_string()))
}

/// Context and mode names go on Serena's command line as values: no option look-alikes.
fn check_name(v: &str, what: &'static str) -> std::result::Result<(), SessionError> {
    let ok = !v.is_empty()
        && !v.starts_with('-')
        && v.len() <= 4096
        && !v.chars().any(|c| c.is_control());
    if ok {
        Ok(())
    } else {
        Err(SessionError::BadName(v.to_string(), what))
    }
}

fn free_port() -> std::io::Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr().map(|a| a.port()))
}

/// The last lines of a log file (for error messages).
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_paths_are_checked() {
        assert!(matches!(
            validate_project("relative/dir"),
            Err(SessionError::RelativePath(_))
        ));
        assert!(matches!(
            validate_project(""),
            Err(SessionError::RelativePath(_))
        ));
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("no-such-dir");
        assert!(matches!(
            validate_project(missing.to_str().unwrap_or_default()),
            Err(SessionError::MissingPath(_))
        ));
        let file = dir.path().join("f");
        std::fs::write(&file, "").expect("write");
        assert!(matches!(
            validate_project(file.to_str().unwrap_or_default()),
            Err(SessionError::NotADirectory(_))
        ));
        let ok = validate_project(dir.path().to_str().unwrap_or_default()).expect("ok");
        assert_eq!(Path::new(&ok), dir.path().canonicalize().expect("canon"));
    }

    #[test]
    fn names_cannot_smuggle_options() {
        assert!(check_name("ide", "context").is_ok());
        assert!(check_name("--help", "context").is_err());
        assert!(check_name("", "mode").is_err());
        assert!(check_name("a\nb", "mode").is_err());
    }
}
