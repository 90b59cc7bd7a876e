//! The instance manager: launches a dedicated Serena for a project (`request`) and releases it
//! (`release`), records sessions in `$SERENA_HOME/tray/sessions.json` so that they are re-adopted
//! after a restart. A launched Serena runs in its own process group, with stdout and stderr in a
//! log file under `tray/logs/` (a full pipe would block it), on a port picked here; the request
//! returns only once its MCP endpoint and its dashboard answer (the core says so on its event
//! bus), and leaves nothing running when it fails. Their Serenas start one at a time, each once
//! the one before has its dashboard port: Serenas started together can pick the same one, and
//! the loser runs without. Every step is an event on the core's bus (launching, ready, failed,
//! released, exited); a session whose Serena exits by itself is marked ended and leaves the
//! active list (the last ended ones are kept as history). The decisions are pure functions in
//! `decide` (unit-tested there), starting a Serena is `launch`, the file is `store`; this file
//! holds the handle and its effects. Deliberately not here: HTTP (the API maps these errors to
//! statuses) and killing (the reaper, through the core).

mod decide;
mod launch;
mod store;
mod unrecorded;

pub use launch::LaunchFailure;

use crate::core::clock::{Reading, StepWatch};
use crate::core::engine::Core;
use crate::core::events::{on_events, Event};
use crate::core::files;
use crate::core::model::{
    now, AsleepReason, Attachment, EndReason, ProcessId, Session, SessionKey,
};
use crate::core::procs::Snapshot;
use crate::core::reaper::{self, ReapError};
use crate::core::settings::SerenaCommandError;
use crate::core::token::{random_hex, TokenError};
use crate::core::writes::Written;
use decide::{SharedKey, Wanted};
use launch::LaunchPlan;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, Mutex};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often a store that could not be written is tried again.
const STORE_RETRY: Duration = Duration::from_secs(2);

/// How long a new shared session waits for the client that asked for it to attach, at least
/// (with `share_linger_seconds` 0 it would otherwise end before its first client attaches).
const FIRST_ATTACH: Duration = Duration::from_secs(30);

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
    /// With `shared`: do not start Serena yet. The answer is the live shared session, or else
    /// the one asleep (created, with no Serena, if there is none); a request without it wakes
    /// that session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_demand: Option<bool>,
    /// With `shared`: put it to sleep after this many minutes without a call (0: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sleep_minutes: Option<f64>,
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
    #[error("lease_seconds must be a number of seconds > 0, got {0}")]
    BadLease(f64),
    #[error("idle_shutdown_minutes must be a number of minutes >= 0, got {0}")]
    BadIdle(f64),
    #[error("sleep_minutes must be a number of minutes >= 0, got {0}")]
    BadSleep(f64),
    #[error("on_demand needs shared: only a shared session starts on its first call")]
    OnDemandUnshared,
    #[error("session {0:?} has no lease: pass lease_seconds to give it one")]
    NoLease(String),
    #[error("session {0:?} has ended")]
    Ended(String),
    #[error("session {0:?} is not shared: only shared sessions take attachments")]
    NotShared(String),
    #[error("no process {0} to attach")]
    NoProcess(u32),
    #[error("process {1} is not attached to session {0:?}")]
    NotAttached(String, u32),
    #[error(transparent)]
    SerenaMissing(#[from] SerenaCommandError),
    #[error("Serena did not start: {why}\n--- last lines of {log} ---\n{tail}")]
    LaunchFailed {
        #[source]
        why: LaunchFailure,
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
    #[error("cannot release session {id}: {source}")]
    ReleaseFailed {
        id: String,
        #[source]
        source: ReapError,
    },
    #[error("{}: {source}", path.display())]
    Store {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("random: {0}")]
    Random(#[from] TokenError),
    /// The task that ran the launch or the release failed (a bug, or shutdown).
    #[error("the session task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl crate::core::writes::WriteError for SessionError {
    fn io(&self) -> Option<(&std::path::Path, &std::io::Error)> {
        match self {
            SessionError::Store { path, source } => Some((path, source)),
            _ => None,
        }
    }
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
    /// `$SERENA_HOME/tray`.
    tray: PathBuf,
    store: PathBuf,
    logs: PathBuf,
    serena_command: Result<Vec<String>, SerenaCommandError>,
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
    /// The wall clock's steps since the sessions' last look (see [`Sessions::look`]); locked
    /// only under `sessions`.
    clock: std::sync::Mutex<StepWatch>,
    /// One lock per shared session's key (project, context, modes, transport): two clients
    /// asking at once get one session, not two.
    shared_launches: std::sync::Mutex<HashMap<SharedKey, Arc<Mutex<()>>>>,
    /// Held by a launch from its spawn until its Serena's dashboard port is known (or the
    /// launch ends): Serenas started together can pick the same dashboard port, and the loser
    /// runs without a dashboard (SERENA.md), so this program starts one at a time.
    starting: Mutex<()>,
    /// The last write of the store failed (see [`Sessions::keep_store_written`]).
    unsaved: tokio::sync::Notify,
    /// Found at the start: Serenas a previous run started and never recorded, to be reaped.
    unrecorded: std::sync::Mutex<Vec<unrecorded::Unrecorded>>,
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
        let mut sys = super::procs::Sys::new();
        let snap = Snapshot::capture(&mut sys);
        let runs = |id| snap.get_id(id).is_some();
        let recorded = store::read(&store);
        let awake = recorded.iter().filter(|s| s.is_awake()).count();
        let mut sessions = decide::adopted(recorded, runs, now());
        // Those whose Serena is gone are ended in the file too, at once: it says no more than
        // what runs.
        let unsaved = tokio::sync::Notify::new();
        if sessions.values().filter(|s| s.is_awake()).count() != awake
            && !write_store(&core, &store, &mut sessions)
        {
            unsaved.notify_one();
        }
        for s in sessions.values().filter(|s| s.is_awake()) {
            core.mark_session_ready(s.process_id(), &s.session_id);
            core.set_session_idle(s.process_id(), s.idle_shutdown());
        }
        // Before anything is launched: a Serena launched from now on is not one of these.
        let marked = crate::core::procs::carrying(&mut sys, &snap, unrecorded::VAR);
        let unrecorded = unrecorded::unrecorded(&marked, &tray, &sessions);
        Sessions {
            inner: Arc::new(SessionsInner {
                core,
                logs: tray.join("logs"),
                tray,
                store,
                serena_command,
                ready_timeout,
                sessions: Mutex::new(sessions),
                tasks,
                cancel,
                leases_changed: tokio::sync::Notify::new(),
                linger,
                clock: std::sync::Mutex::new(StepWatch::started()),
                shared_launches: Default::default(),
                starting: Mutex::new(()),
                unrecorded: std::sync::Mutex::new(unrecorded),
                unsaved,
            }),
        }
    }

    /// After a restart: the recorded clients of shared sessions that still run are watched
    /// again, the others detached, and so are the adopted sessions' Serenas: one that exits
    /// before the core first sees it (stopping when this program was killed in the middle of
    /// its release) is never seen to go, and its session would stay (a task of the app's, in
    /// the background).
    pub fn watch_recorded_attachments(&self) {
        let this = self.clone();
        self.inner.tasks.spawn(async move {
            let (recorded, serenas): (Vec<(String, Attachment)>, Vec<ProcessId>) = {
                let sessions = this.inner.sessions.lock().await;
                let active = || sessions.values().filter(|s| s.is_active());
                (
                    active()
                        .flat_map(|s| s.attached.iter().map(|a| (s.session_id.clone(), a.clone())))
                        .collect(),
                    active()
                        .filter(|s| s.is_awake())
                        .map(|s| s.process_id())
                        .collect(),
                )
            };
            for (id, a) in recorded {
                this.watch_attachment(&id, a.process_id());
            }
            for serena in serenas {
                this.when_gone(serena, move |this| async move {
                    this.ended_by_itself(serena).await
                });
            }
            // A shared session with no client left when this program stopped lingers anew.
            let mut sessions = this.inner.sessions.lock().await;
            let now = this.look(&mut sessions);
            decide::linger_anew(&mut sessions, now, this.inner.linger.as_secs_f64());
            drop(sessions);
            this.inner.leases_changed.notify_one();
        });
    }

    /// After a restart: the Serenas that the previous run started and stopped before it
    /// recorded them (found at [`Sessions::load`]) are reaped with their trees, each a
    /// `session_failed` (a task of the app's, in the background).
    pub fn reap_unrecorded(&self) {
        let found = std::mem::take(&mut *crate::core::model::lock(&self.inner.unrecorded));
        if found.is_empty() {
            return;
        }
        let core = self.inner.core.clone();
        self.inner.tasks.spawn(async move {
            for u in found {
                let survivors = reaper::kill_own_tree(u.root, &Default::default()).await;
                let outcome = match survivors.is_empty() {
                    true => "was stopped at the next start".to_string(),
                    false => format!("could not be stopped: {survivors:?} still run"),
                };
                let error = format!(
                    "Serena Tray stopped before this session was recorded; its Serena (PID {}) \
                     {outcome}",
                    u.root.pid
                );
                tracing::warn!(session_id = %u.session_id, "{error}");
                core.publish(Event::SessionFailed {
                    session_id: u.session_id,
                    error,
                });
            }
        });
    }

    /// Detaches `launcher` from session `id` once its process exits, however it exits.
    fn watch_attachment(&self, id: &str, launcher: ProcessId) {
        let id = id.to_string();
        self.when_gone(launcher, move |this| async move {
            let _ = this.detach(&id, launcher.pid).await;
        });
    }

    /// Runs `then` once `process` is gone, however it goes (watched where the platform can,
    /// else looked at every few seconds); not at all if the app stops first.
    fn when_gone<F, Fut>(&self, process: ProcessId, then: F)
    where
        F: FnOnce(Sessions) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let this = self.clone();
        let cancel = self.inner.cancel.clone();
        self.inner.tasks.spawn(async move {
            tokio::select! {
                _ = super::watch::exited(process) => {}
                _ = cancel.cancelled() => return,
            }
            // Still there: it cannot be watched here (no pidfd), so it is looked at instead.
            while super::procs::identity(process.pid) == Some(process) {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = cancel.cancelled() => return,
                }
            }
            then(this).await;
        });
    }

    /// Attaches the `launch --share` process `pid` (serving the MCP client `client_pid`) to
    /// the shared session `id`; returns the session.
    pub async fn attach(
        &self,
        id: &str,
        pid: u32,
        client_pid: Option<u32>,
    ) -> Result<Session, SessionError> {
        let launcher = tokio::task::spawn_blocking(move || super::procs::identity(pid))
            .await?
            .ok_or(SessionError::NoProcess(pid))?;
        let client_name = match client_pid {
            // One process read, not the table: clients attach in bursts.
            Some(c) => tokio::task::spawn_blocking(move || super::procs::name(c)).await?,
            None => None,
        };
        let mut sessions = self.inner.sessions.lock().await;
        let now = self.look(&mut sessions);
        let session = decide::active(&mut sessions, id)?;
        if !session.shared {
            return Err(SessionError::NotShared(id.to_string()));
        }
        let attachment = Attachment {
            pid,
            start_time: launcher.start_time,
            client_pid,
            client_name,
            since: now,
            busy: false,
        };
        decide::attach(session, attachment);
        let attached = session.clone();
        self.persist(&mut sessions);
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
    pub async fn detach(&self, id: &str, pid: u32) -> Result<Session, SessionError> {
        let mut sessions = self.inner.sessions.lock().await;
        let now = self.look(&mut sessions);
        let session = match sessions.get_mut(id) {
            None => return Err(SessionError::UnknownSession(id.to_string())),
            Some(s) => s,
        };
        if !decide::detach(session, pid, now, self.inner.linger.as_secs_f64()) {
            return Ok(session.clone());
        }
        let detached = session.clone();
        self.persist(&mut sessions);
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
        let now = self.look(&mut sessions);
        let Some(s) = sessions
            .values()
            .find(|s| s.is_awake() && s.process_id() == id)
            .cloned()
        else {
            return;
        };
        let ended = s.ended(EndReason::Exited, now);
        sessions.insert(ended.session_id.clone(), ended.clone());
        self.persist(&mut sessions);
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
    pub async fn request(&self, req: SessionRequest) -> Result<(Session, bool), SessionError> {
        // Its own task: a client that hangs up mid-launch cannot cancel it half-way (the launch
        // then completes and is recorded, or fails and cleans up after itself).
        let this = self.clone();
        let launch = self
            .inner
            .tasks
            .spawn(async move { this.find_or_launch(req).await });
        launch.await?
    }

    /// What [`Sessions::request`] runs in its own task.
    async fn find_or_launch(&self, req: SessionRequest) -> Result<(Session, bool), SessionError> {
        let wanted = Wanted::of(&req)?;
        // Held until this request has found or launched its shared session.
        let _one_launch = match wanted.shared {
            true => Some(self.shared_lock(wanted.shared_key()).await),
            false => None,
        };
        if wanted.shared {
            if let Some(found) = self.find_shared(&wanted).await? {
                return Ok((found, true));
            }
        }
        let what = Serving {
            project: &wanted.project,
            context: &wanted.context,
            modes: &wanted.modes,
            transport: wanted.transport,
        };
        let plan = self.plan(random_hex(16)?, what)?;
        match self.launch_with_retries(&plan).await {
            Ok(session) => Ok((self.launched(session, &wanted).await, false)),
            Err(e) => Err(self.failed(&plan, e)),
        }
    }

    /// A launch failed: said on the bus, returned.
    fn failed(&self, plan: &LaunchPlan, e: SessionError) -> SessionError {
        self.inner.core.publish(Event::SessionFailed {
            session_id: plan.session_id.clone(),
            error: e.to_string(),
        });
        e
    }

    /// The shared session that serves `wanted` without a new one: the live one; else the one
    /// asleep, as it is for a request on demand (created, not started, if there is none) and
    /// woken for any other. Called under the key's lock.
    async fn find_shared(&self, wanted: &Wanted) -> Result<Option<Session>, SessionError> {
        let key = wanted.shared_key();
        let recorded: Vec<ProcessId> = {
            let sessions = self.inner.sessions.lock().await;
            let live = sessions.values().filter(|s| s.is_awake() && s.shared);
            live.map(|s| s.process_id()).collect()
        };
        // Each recorded Serena looked at alone, not the whole table: clients ask in bursts.
        let running: std::collections::HashSet<ProcessId> =
            tokio::task::spawn_blocking(move || {
                let runs = |id: &ProcessId| super::procs::identity(id.pid) == Some(*id);
                recorded
                    .into_iter()
                    .filter(|id| id.pid != 0 && runs(id))
                    .collect()
            })
            .await?;
        let asleep = {
            let sessions = self.inner.sessions.lock().await;
            let runs = |id| running.contains(&id);
            if let Some(s) = decide::shared_match(sessions.values(), &key, runs) {
                return Ok(Some(s.clone()));
            }
            decide::asleep_match(sessions.values(), &key).cloned()
        };
        match (asleep, wanted.on_demand) {
            (Some(s), true) => Ok(Some(s)),
            (Some(s), false) => self.wake_now(s).await.map(Some),
            (None, true) => self.not_started(wanted).await.map(Some),
            (None, false) => Ok(None),
        }
    }

    /// A shared session on demand, recorded with no Serena until its first call.
    async fn not_started(&self, wanted: &Wanted) -> Result<Session, SessionError> {
        let session_id = random_hex(16)?;
        let key = SessionKey {
            project: wanted.project.clone(),
            context: wanted.context.clone(),
            modes: wanted.modes.clone(),
            transport: wanted.transport,
            sleep_minutes: wanted.sleep_minutes,
            log: self.log_of(&session_id).display().to_string(),
        };
        let mut sessions = self.inner.sessions.lock().await;
        let now = self.look(&mut sessions);
        let session = Session::on_demand(session_id, key, now, self.first_linger());
        sessions.insert(session.session_id.clone(), session.clone());
        self.persist(&mut sessions);
        drop(sessions);
        self.inner.leases_changed.notify_one();
        self.inner.core.publish(Event::SessionAsleep {
            session_id: session.session_id.clone(),
            pid: 0,
            given_back_bytes: None,
        });
        Ok(session)
    }

    /// Starts the Serena of the asleep session `id` now (`POST /api/sessions/{id}/wake`);
    /// returns the session (as it is, if it was awake).
    pub async fn wake(&self, id: &str) -> Result<Session, SessionError> {
        let (this, id) = (self.clone(), id.to_string());
        let wake = self.inner.tasks.spawn(async move {
            let key = {
                let mut sessions = this.inner.sessions.lock().await;
                SharedKey::of_session(decide::active(&mut sessions, &id)?)
            };
            let _one_launch = this.shared_lock(key).await;
            let session = decide::active(&mut *this.inner.sessions.lock().await, &id)?.clone();
            match session.is_asleep() {
                true => this.wake_now(session).await,
                false => Ok(session),
            }
        });
        wake.await?
    }

    /// Starts a new Serena for the asleep `session` (under its key's lock): the session keeps
    /// its ID, its clients and its settings.
    async fn wake_now(&self, session: Session) -> Result<Session, SessionError> {
        let id = session.session_id.clone();
        let what = Serving {
            project: &session.project_path,
            context: &session.context,
            modes: &session.modes,
            transport: session.transport,
        };
        let plan = self.plan(id.clone(), what)?;
        let serena = match self.launch_with_retries(&plan).await {
            Ok(serena) => serena,
            Err(e) => return Err(self.failed(&plan, e)),
        };
        let mut sessions = self.inner.sessions.lock().await;
        let now = self.look(&mut sessions);
        let Some(current) = sessions.get(&id).filter(|s| s.is_asleep()).cloned() else {
            // Stopped while it woke: its new Serena goes too.
            drop(sessions);
            self.inner.core.unmark_session(serena.process_id());
            reaper::kill_own_tree(serena.process_id(), &Default::default()).await;
            return Err(SessionError::Ended(id));
        };
        let woken = current.woken(serena, now);
        sessions.insert(id.clone(), woken.clone());
        self.persist(&mut sessions);
        drop(sessions);
        self.inner
            .core
            .set_session_idle(woken.process_id(), woken.idle_shutdown());
        self.inner.leases_changed.notify_one();
        self.inner.core.publish(Event::SessionWoke {
            session_id: id,
            pid: woken.pid,
        });
        Ok(woken)
    }

    /// A call of the client `pid` of session `id` began (`busy`) or ended: the session's last
    /// use, and it does not sleep while a call is in flight.
    pub async fn touch(&self, id: &str, pid: u32, busy: bool) -> Result<(), SessionError> {
        let mut sessions = self.inner.sessions.lock().await;
        let now = self.look(&mut sessions);
        let session = decide::active(&mut sessions, id)?;
        if !decide::touch(session, pid, busy, now) {
            return Err(SessionError::NotAttached(id.to_string(), pid));
        }
        drop(sessions);
        self.inner.leases_changed.notify_one();
        Ok(())
    }

    /// A bridge of session `id` replaced its handshake cache (see the event).
    pub async fn handshake_replaced(
        &self,
        id: &str,
        lists: Vec<String>,
    ) -> Result<(), SessionError> {
        decide::active(&mut *self.inner.sessions.lock().await, id)?;
        self.inner.core.publish(Event::HandshakeReplaced {
            session_id: id.to_string(),
            lists,
        });
        Ok(())
    }

    /// Puts the shared session `id` to sleep if it is still due: its tree reaped, its clients
    /// kept, the memory it gave back recorded.
    async fn put_to_sleep(&self, id: &str) -> Result<(), SessionError> {
        let key = match self.inner.sessions.lock().await.get(id) {
            Some(s) => SharedKey::of_session(s),
            None => return Ok(()),
        };
        // A call that comes meanwhile wakes it only once it sleeps.
        let _one_launch = self.shared_lock(key).await;
        let (awake, asleep) = {
            let mut sessions = self.inner.sessions.lock().await;
            let now = self.look(&mut sessions);
            let due = |s: &&Session| decide::sleep_at(s).is_some_and(|at| at <= now);
            let Some(awake) = sessions.get(id).filter(due).cloned() else {
                return Ok(());
            };
            let cost = self
                .inner
                .core
                .instance(awake.pid)
                .filter(|i| i.process_id() == awake.process_id())
                .and_then(|i| i.cost)
                .map(|c| c.memory_bytes);
            let asleep = awake.clone().asleep(AsleepReason::Unused, now, cost);
            sessions.insert(id.to_string(), asleep.clone());
            (awake, asleep)
        };
        let pid = awake.process_id();
        let prober = self.inner.core.prober();
        let reaped = reaper::reap(pid, awake.dashboard_port, prober, &Default::default()).await;
        let mut sessions = self.inner.sessions.lock().await;
        if let Err(source) = reaped {
            sessions.insert(id.to_string(), awake);
            return Err(SessionError::ReleaseFailed {
                id: id.to_string(),
                source,
            });
        }
        self.persist(&mut sessions);
        drop(sessions);
        self.inner.core.unmark_session(pid);
        self.inner.core.publish(Event::SessionAsleep {
            session_id: id.to_string(),
            pid: pid.pid,
            given_back_bytes: asleep.given_back_bytes,
        });
        let _ = self.inner.core.refresh().await;
        Ok(())
    }

    /// The lock of one shared session's key (see `shared_launches`).
    async fn shared_lock(&self, key: SharedKey) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = crate::core::model::lock(&self.inner.shared_launches)
            .entry(key)
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    /// Now, for a decision over `sessions` or a new stamp in them (under their lock): after a
    /// step of the wall clock since the last look, every session's stamps move by the step first
    /// and are recorded (see `clock`), so that what remains of each lease, linger and sleep is
    /// what the monotonic clock says.
    fn look(&self, sessions: &mut BTreeMap<String, Session>) -> f64 {
        let r = Reading::now();
        let step = decide::look(
            sessions,
            &mut crate::core::model::lock(&self.inner.clock),
            r,
        );
        if step != 0.0 {
            tracing::info!(
                "the wall clock stepped by {step:+.0} s: the sessions' leases, lingers and sleeps keep what remained of them"
            );
            self.persist(sessions);
        }
        r.wall
    }

    /// What a launch for the session `session_id` (new, or woken) starts: the Serena command
    /// for `what` and its log.
    fn plan(&self, session_id: String, what: Serving) -> Result<LaunchPlan, SessionError> {
        let command = self.inner.serena_command.clone()?;
        files::private_dir(&self.inner.logs).map_err(|source| SessionError::Store {
            path: self.inner.logs.clone(),
            source,
        })?;
        Ok(LaunchPlan {
            log: self.log_of(&session_id),
            marker: unrecorded::marker(&session_id, &self.inner.tray),
            command,
            session_id,
            project: what.project.clone(),
            context: what.context.clone(),
            modes: what.modes.clone(),
            transport: what.transport,
        })
    }

    /// How long a new shared session waits for its first client: the linger, and at least
    /// [`FIRST_ATTACH`].
    fn first_linger(&self) -> f64 {
        self.inner.linger.max(FIRST_ATTACH).as_secs_f64()
    }

    /// Where the Serena of session `id` writes its output (a woken one appends).
    fn log_of(&self, id: &str) -> PathBuf {
        self.inner.logs.join(format!("session-{id}.log"))
    }

    /// Records a launched session with what the request asked of it (shared, a lease, its own
    /// idle shutdown), and says it is ready. Its lease and its first linger count from now, as
    /// the session is handed out (a step of the wall clock during the launch is then no matter).
    async fn launched(&self, mut session: Session, wanted: &Wanted) -> Session {
        let core = &self.inner.core;
        let mut sessions = self.inner.sessions.lock().await;
        let now = self.look(&mut sessions);
        session.shared = wanted.shared;
        if wanted.shared {
            // Until its first client attaches, it lingers as if its last had left (for long
            // enough that the client who asked for it attaches first, whatever the linger).
            session.linger_until = Some(now + self.first_linger());
            self.inner.leases_changed.notify_one();
        }
        session.lease_seconds = wanted.lease;
        session.expires_at = wanted.lease.map(|l| now + l);
        session.idle_shutdown_minutes = wanted.idle_minutes;
        session.sleep_minutes = wanted.sleep_minutes;
        core.set_session_idle(session.process_id(), wanted.idle);
        if wanted.lease.is_some() {
            self.inner.leases_changed.notify_one();
        }
        sessions.insert(session.session_id.clone(), session.clone());
        self.persist(&mut sessions);
        drop(sessions);
        core.publish(Event::SessionReady {
            session: session.clone(),
        });
        session
    }

    /// Releases a session: reaps its whole tree. `AlreadyGone` if its process had ended or it
    /// was released before.
    pub async fn release(&self, id: &str) -> Result<ReleaseStatus, SessionError> {
        self.end(id, EndReason::Released).await
    }

    /// Ends a session for `reason` (a release, or its lease ran out): reaps its whole tree.
    async fn end(&self, id: &str, reason: EndReason) -> Result<ReleaseStatus, SessionError> {
        // Its own task, like a launch: a client that hangs up cannot stop it half-way.
        let (this, id) = (self.clone(), id.to_string());
        let release = self
            .inner
            .tasks
            .spawn(async move { this.end_now(&id, reason).await });
        release.await?
    }

    /// Renews a session's lease: it now runs out `lease_seconds` from now (its own lease's
    /// length if not given). Returns the session.
    pub async fn renew(
        &self,
        id: &str,
        lease_seconds: Option<f64>,
    ) -> Result<Session, SessionError> {
        let lease = lease_seconds.map(decide::lease_of).transpose()?;
        let mut sessions = self.inner.sessions.lock().await;
        let now = self.look(&mut sessions);
        let session = decide::active(&mut sessions, id)?;
        let lease = lease
            .or(session.lease_seconds)
            .ok_or_else(|| SessionError::NoLease(id.to_string()))?;
        session.lease_seconds = Some(lease);
        session.expires_at = Some(now + lease);
        let renewed = session.clone();
        self.persist(&mut sessions);
        drop(sessions);
        self.inner.leases_changed.notify_one();
        self.inner.core.publish(Event::SessionRenewed {
            session_id: renewed.session_id.clone(),
            expires_at: renewed.expires_at.unwrap_or_default(),
        });
        Ok(renewed)
    }

    /// Releases every session whose lease ran out, and every shared session that lingered
    /// without a client for `share_linger_seconds`; puts to sleep every shared session whose
    /// clients made no call for its `sleep_minutes`; each as its moment comes. Runs until the
    /// app stops.
    pub async fn keep_leases(self) {
        loop {
            let (now, due) = {
                let mut sessions = self.inner.sessions.lock().await;
                let now = self.look(&mut sessions);
                (now, decide::due(sessions.values(), now))
            };
            let decide::Due { ends, sleeps, next } = due;
            for (id, why) in ends {
                match self.end(&id, why).await {
                    Ok(_) => tracing::info!("session {id} released ({why:?})"),
                    Err(e) => tracing::warn!("session {id}: {why:?}, but {e}"),
                }
            }
            for id in sleeps {
                let (this, id) = (self.clone(), id.clone());
                let sleep = self.inner.tasks.spawn(async move {
                    match this.put_to_sleep(&id).await {
                        Ok(()) => tracing::info!("session {id} asleep: no call for a while"),
                        Err(e) => tracing::warn!("session {id} cannot sleep: {e}"),
                    }
                });
                let _ = sleep.await;
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

    /// Ends a session now (see [`Sessions::end`]).
    async fn end_now(&self, id: &str, reason: EndReason) -> Result<ReleaseStatus, SessionError> {
        // Marked released before the reap, so that neither a second release nor its Serena's
        // exit (seen by `follow`) takes it for a live session meanwhile; put back if it fails.
        let session = {
            let mut sessions = self.inner.sessions.lock().await;
            let now = self.look(&mut sessions);
            let session = match sessions.get(id) {
                None => return Err(SessionError::UnknownSession(id.to_string())),
                Some(s) if !s.is_active() => return Ok(ReleaseStatus::AlreadyGone),
                Some(s) => s.clone(),
            };
            sessions.insert(id.to_string(), session.clone().ended(reason, now));
            if session.is_asleep() {
                // No Serena to reap.
                self.persist(&mut sessions);
                drop(sessions);
                self.publish_end(id, 0, reason);
                return Ok(ReleaseStatus::AlreadyGone);
            }
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
                    source: e,
                });
            }
        };
        self.persist(&mut sessions);
        drop(sessions);
        self.inner.core.unmark_session(pid);
        self.publish_end(id, pid.pid, reason);
        let _ = self.inner.core.refresh().await;
        Ok(match report.outcome {
            reaper::Outcome::AlreadyGone => ReleaseStatus::AlreadyGone,
            _ => ReleaseStatus::Terminated,
        })
    }

    fn publish_end(&self, id: &str, pid: u32, reason: EndReason) {
        let session_id = id.to_string();
        self.inner.core.publish(match reason {
            EndReason::LeaseExpired | EndReason::Unattached => {
                Event::SessionExpired { session_id, pid }
            }
            _ => Event::SessionReleased { session_id, pid },
        });
    }

    /// Records the sessions (and forgets ended ones past the history's bound). A failed write
    /// (a full disk) is told once (see `writes`), not returned: the file keeps what it had, the
    /// change stands in memory, and [`Sessions::keep_store_written`] writes it again until it
    /// is written.
    fn persist(&self, sessions: &mut BTreeMap<String, Session>) {
        if !write_store(&self.inner.core, &self.inner.store, sessions) {
            self.inner.unsaved.notify_one();
        }
    }

    /// After a failed write of the store: writes it again every [`STORE_RETRY`] until it is
    /// written (space came back), so that what changed is on disk even if nothing changes
    /// again. Runs until the app stops it.
    pub async fn keep_store_written(self) {
        loop {
            self.inner.unsaved.notified().await;
            tokio::time::sleep(STORE_RETRY).await;
            // A failure notifies again, and the next round waits again.
            self.persist(&mut *self.inner.sessions.lock().await);
        }
    }
}

/// Writes the sessions to `store` (forgetting ended ones past the history's bound) and tells
/// `core` how it went; whether it was written.
fn write_store(
    core: &Core,
    store: &std::path::Path,
    sessions: &mut BTreeMap<String, Session>,
) -> bool {
    decide::forget_old_history(sessions);
    let written = store::write(store, &decide::kept(sessions.values()));
    core.wrote_result(Written::Sessions, store, &written);
    written.is_ok()
}

/// What a session's Serena serves: its project, context, modes and transport.
struct Serving<'a> {
    project: &'a String,
    context: &'a Option<String>,
    modes: &'a Vec<String>,
    transport: crate::core::model::Transport,
}
