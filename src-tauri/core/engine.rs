//! The model's handle: one cloneable [`Core`] (an `Arc` inside) that the [`App`] holds and that
//! the one-shot CLI verbs (`list`, `kill` without a daemon) and the tests use directly. This file
//! holds the handle itself: the settings, the event bus, the instances as of the last refresh,
//! tray-protocol registrations and the marks sessions put on the processes they launched.
//!
//! Deliberately not here: looking at the world and deciding what it means (`refresh`), killing
//! (`kill`, with the reaper as its primitive), the timer that calls `refresh` (the app's
//! background refresh loop), and sessions.
//!
//! [`App`]: crate::core::app::App

use super::events::Event;
use super::model::{Instance, ProcessId};
use super::probe::Prober;
use super::reaper::Timings;
use super::refresh::{Model, Scanner, Tracked};
use super::registry::{Registry, RegistryError};
use super::settings::Settings;
use super::sockets::{self, ListenerSource};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::broadcast;

pub use super::kill::{KillError, KillErrorKind, SweepFailure, ZombieSweep};

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A blocking step of a refresh (a scan, a registry write) panicked or was cancelled.
    #[error("background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

pub type Result<T> = std::result::Result<T, CoreError>;

/// The handle on the running core. Clone it freely.
#[derive(Clone)]
pub struct Core {
    pub(super) inner: Arc<Inner>,
}

/// What every clone of the handle shares; `refresh` and `kill` reach into it.
pub(super) struct Inner {
    pub(super) settings: Settings,
    pub(super) registry: Registry,
    pub(super) prober: Prober,
    pub(super) listeners: Box<dyn ListenerSource>,
    pub(super) scanner: Scanner,
    /// The instances and what the refresh remembers about them.
    pub(super) model: Mutex<Model>,
    /// Held by a refresh, and by `forget` so that no refresh writes a removed entry back.
    pub(super) refreshing: tokio::sync::Mutex<()>,
    pub(super) events: broadcast::Sender<Event>,
    /// Asks the refresh loop for a look now rather than at its next tick.
    pub(super) wake: tokio::sync::Notify,
    /// Whether exits are being watched (the background loop's watchers, see
    /// [`Core::exit_seen`]); until then every look reads the instances and their clients.
    pub(super) exits_watched: std::sync::atomic::AtomicBool,
    /// An instance or a client exited since the last look.
    pub(super) exit_seen: std::sync::atomic::AtomicBool,
    /// How many pages follow the events now (open `/api/events` streams).
    pub(super) pages: std::sync::atomic::AtomicUsize,
    pub(super) timings: Timings,
}

/// A page following the events (see [`Core::page_open`]); its drop says it went.
pub struct PageOpen(Core);

impl Drop for PageOpen {
    fn drop(&mut self) {
        self.0
            .inner
            .pages
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// One instance's registration over Serena's tray protocol (information, never authority).
/// Whoever accepts one has checked it (`tray_protocol`); the core only bounds how many it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub pid: u32,
    /// The registered process's start time, so that a process that reuses its PID is never
    /// taken for it.
    pub start_time: u64,
    pub port: u16,
    pub project: Option<String>,
}

/// The most tray-protocol registrations held at once (DESIGN: bounded).
pub const MAX_REGISTRATIONS: usize = 256;

/// Why a registration was not recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error("{MAX_REGISTRATIONS} registrations are held already; none more until one ends")]
    Full,
}

/// Locks a std mutex of the core (never held across an `.await`).
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; carry on with it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Core {
    pub fn new(settings: Settings) -> Core {
        Core::with_listeners(settings, sockets::platform())
    }

    /// A core with a given socket source (tests; other platforms).
    pub fn with_listeners(settings: Settings, listeners: Box<dyn ListenerSource>) -> Core {
        let (events, _) = broadcast::channel(1024);
        Core {
            inner: Arc::new(Inner {
                registry: Registry::new(&settings.serena_home),
                prober: Prober::new(settings.tray.probe_timeout),
                listeners,
                scanner: Scanner::default(),
                model: Mutex::new(Model::default()),
                refreshing: tokio::sync::Mutex::new(()),
                events,
                wake: tokio::sync::Notify::new(),
                exits_watched: Default::default(),
                exit_seen: Default::default(),
                pages: Default::default(),
                timings: Timings::default(),
                settings,
            }),
        }
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Every state change, as it happens.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Publishes an event of another part of the core (sessions) on the one bus.
    pub(crate) fn publish(&self, event: Event) {
        // No subscriber is fine: nobody is listening yet.
        let _ = self.inner.events.send(event);
    }

    /// Asks whoever runs the refresh loop for a refresh now (a process exited, a launch waits).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Says that instances' and clients' exits are watched from now on, each reported through
    /// [`Core::exit_seen`]: the refresh then reads those processes again only after one (and
    /// every few seconds), not on every look.
    pub(crate) fn watch_exits(&self) {
        self.inner
            .exits_watched
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// A watched process exited: the next look (now) reads the instances and their clients.
    pub(crate) fn exit_seen(&self) {
        self.inner
            .exit_seen
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.wake();
    }

    /// A page follows the events for as long as the value returned lives (an open
    /// `/api/events` stream): the refresh loop keeps its one-second pace for it.
    pub fn page_open(&self) -> PageOpen {
        self.inner
            .pages
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // Back to the one-second pace now, not after a quiet wait.
        self.wake();
        PageOpen(self.clone())
    }

    /// Whether a page follows the events (see [`Core::page_open`]).
    pub fn pages_open(&self) -> bool {
        self.inner.pages.load(std::sync::atomic::Ordering::SeqCst) > 0
    }

    /// Resolves when [`Core::wake`] was called (the refresh loop's side).
    pub async fn woken(&self) {
        self.inner.wake.notified().await;
    }

    /// The instances as of the last refresh, sorted by PID then start time.
    pub fn instances(&self) -> Vec<Instance> {
        lock(&self.inner.model)
            .tracked
            .values()
            .map(|t| t.inst.clone())
            .collect()
    }

    /// The dashboard client (short timeouts, no proxy).
    pub fn prober(&self) -> &Prober {
        &self.inner.prober
    }

    /// The instance with this PID (the live one if a dead record shares the PID).
    pub fn instance(&self, pid: u32) -> Option<Instance> {
        let key = self.tracked_id(pid)?;
        lock(&self.inner.model)
            .tracked
            .get(&key)
            .map(|t| t.inst.clone())
    }

    /// Notes that this instance's page is open (its overview or logs were asked for): its
    /// dashboard is then asked every refresh rather than every few seconds.
    pub fn mark_viewed(&self, pid: u32) {
        let Some(key) = self.tracked_id(pid) else {
            return;
        };
        if let Some(t) = lock(&self.inner.model).tracked.get_mut(&key) {
            t.viewed_at = Some(super::model::now());
        }
    }

    /// The MCP client that started this instance, as first seen (its exit orphans the instance).
    pub(crate) fn client_of(&self, id: ProcessId) -> Option<ProcessId> {
        lock(&self.inner.model)
            .tracked
            .get(&id)
            .and_then(|t| t.client.as_ref())
            .map(|c| c.id())
    }

    /// How long until the next moment a live instance must be looked at: its grace runs out
    /// (orphaned or silent for the grace: it turns red then), its idle shutdown is to be
    /// announced or is due. The refresh loop looks again at that moment.
    pub(crate) fn next_deadline(&self) -> Option<std::time::Duration> {
        let grace = self.inner.settings.tray.zombie_grace.as_secs_f64();
        let now = super::model::now();
        lock(&self.inner.model)
            .tracked
            .values()
            .filter(|t| t.alive && t.inst.state.is_live())
            .flat_map(|t| {
                let grace_ends = [t.orphaned_since, t.silent_since].map(|s| s.map(|s| s + grace));
                grace_ends.into_iter().chain([t.idle_next])
            })
            .flatten()
            .map(|at| at - now)
            // One that ran out already was looked at; the timer covers anything else.
            .filter(|left| *left > 0.0)
            .min_by(f64::total_cmp)
            .map(std::time::Duration::from_secs_f64)
    }

    /// The record for a PID: the live one if a dead record shares the PID.
    pub(crate) fn tracked_id(&self, pid: u32) -> Option<ProcessId> {
        let model = lock(&self.inner.model);
        let mut found: Vec<(&ProcessId, &Tracked)> = model
            .tracked
            .iter()
            .filter(|(_, t)| t.inst.pid == pid)
            .collect();
        found.sort_by_key(|(_, t)| !t.alive);
        found.first().map(|(k, _)| **k)
    }

    /// Records a tray-protocol registration (keyed by dashboard port, as Serena does; one for a
    /// port already registered replaces it). At most [`MAX_REGISTRATIONS`] are held.
    pub fn register(&self, r: Registration) -> std::result::Result<(), RegisterError> {
        let mut model = lock(&self.inner.model);
        let held = &mut model.registrations;
        if held.len() >= MAX_REGISTRATIONS && !held.contains_key(&r.port) {
            return Err(RegisterError::Full);
        }
        held.insert(r.port, r);
        drop(model);
        // Shown at once, not at the next (maybe quiet) tick.
        self.wake();
        Ok(())
    }

    /// The tray-protocol registrations held, by port.
    pub fn registrations(&self) -> Vec<Registration> {
        lock(&self.inner.model)
            .registrations
            .values()
            .cloned()
            .collect()
    }

    /// The instance `pid` registered on `port` activated another project. False if that port is
    /// not registered by that PID (another instance's registration is never touched).
    pub fn update_registered_project(&self, port: u16, pid: u32, project: Option<String>) -> bool {
        let mut model = lock(&self.inner.model);
        match model.registrations.get_mut(&port) {
            Some(r) if r.pid == pid => {
                r.project = project;
                drop(model);
                self.wake();
                true
            }
            _ => false,
        }
    }

    /// The instance `pid` registered on `port` is exiting cleanly. False if that port is not
    /// registered by that PID.
    pub fn unregister(&self, port: u16, pid: u32) -> bool {
        let held = &mut lock(&self.inner.model).registrations;
        if held.get(&port).is_some_and(|r| r.pid == pid) {
            held.remove(&port);
            self.wake();
            true
        } else {
            false
        }
    }

    /// The instance a session launch started (the launched process itself, or one running
    /// under it, as behind a wrapper like `uvx`), as of the last refresh.
    pub fn launched(&self, root: ProcessId) -> Option<Instance> {
        lock(&self.inner.model)
            .tracked
            .values()
            .find(|t| t.alive && t.launch_root == Some(root))
            .map(|t| t.inst.clone())
    }

    /// Marks a launched process as a session (source `session`), `starting` until `ready`.
    pub fn mark_session(&self, id: ProcessId, session_id: &str, starting: bool) {
        let mut model = lock(&self.inner.model);
        model.sessions.insert(id, session_id.to_string());
        if starting {
            model.launching.insert(id);
        } else {
            model.launching.remove(&id);
        }
    }

    /// A session's own idle shutdown (zero: never), over the launcher's and the setting.
    pub fn set_session_idle(&self, id: ProcessId, idle: Option<std::time::Duration>) {
        let mut model = lock(&self.inner.model);
        match idle {
            Some(idle) => model.session_idle.insert(id, idle),
            None => model.session_idle.remove(&id),
        };
    }

    /// Forgets that a process is a session (released or failed).
    pub fn unmark_session(&self, id: ProcessId) {
        let mut model = lock(&self.inner.model);
        model.sessions.remove(&id);
        model.launching.remove(&id);
        model.session_idle.remove(&id);
    }
}
