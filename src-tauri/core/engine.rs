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

use super::clock::Reading;
use super::events::Event;
use super::kill::{KillError, SweepFailure, ZombieSweep};
use super::model::{lock, Epoch, Instance, ProcessId, Registration, State, ZombieReason};
use super::probe::Prober;
use super::reaper::{self, KillReport, Timings};
use super::refresh::{self, Decisions, Model, Scan, Scanner, Tracked};
use super::registry::{write_entries, Registry, RegistryError, RegistryWrites};
use super::settings::Settings;
use super::sockets::{self, ListenerSource};
use super::writes::{WriteError, WriteFailure, Writes, Written};
use futures::future::join_all;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

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
    /// Which of this program's files fail to be written now.
    pub(super) writes: Writes,
}

/// Why an instance is forgotten: killed, or a dead record pruned (whose registry entry is
/// removed by its exact start time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Forget {
    Killed,
    DeadRecord,
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

/// The most tray-protocol registrations held at once (DESIGN: bounded).
pub const MAX_REGISTRATIONS: usize = 256;

/// Why a registration was not recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error("{MAX_REGISTRATIONS} registrations are held already; none more until one ends")]
    Full,
}

impl Core {
    pub fn new(settings: Settings) -> Core {
        Core::with_listeners(settings, sockets::platform())
    }

    /// A core with a given socket source (tests; other platforms).
    pub fn with_listeners(settings: Settings, listeners: Box<dyn ListenerSource>) -> Core {
        // Before any start time is read: this boot's frame, as the last run of it recorded.
        crate::core::procs::boot::settle(&settings.serena_home);
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
                writes: Writes::default(),
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

    /// Records how writing one of this program's files went (see `writes`): the first failure
    /// and the recovery are logged and published.
    pub(crate) fn wrote(
        &self,
        file: Written,
        path: &std::path::Path,
        result: std::result::Result<(), &dyn std::fmt::Display>,
    ) {
        if let Some(news) = self.inner.writes.outcome(file, path, result) {
            self.publish(news);
        }
    }

    /// The files that fail to be written now (the page shows them).
    pub fn write_failures(&self) -> Vec<WriteFailure> {
        self.inner.writes.failing()
    }

    /// [`Core::wrote`] for the result of a write of `file` at `path`; an error that names a
    /// path of its own (a lock file, a directory) is told with it.
    pub(crate) fn wrote_result<T, E: WriteError>(
        &self,
        file: Written,
        path: &std::path::Path,
        result: &std::result::Result<T, E>,
    ) {
        match result.as_ref().map_err(|e| (e, e.io())) {
            Ok(_) => self.wrote(file, path, Ok(())),
            Err((_, Some((named, source)))) => self.wrote(file, named, Err(source)),
            Err((e, None)) => self.wrote(file, path, Err(e)),
        }
    }

    /// Asks whoever runs the refresh loop for a refresh now (a process exited, a launch waits).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Says that instances' and clients' exits are watched from now on, each reported through
    /// [`Core::exit_seen`]: the refresh then reads those processes again only after one (and
    /// every few seconds), not on every look.
    pub(crate) fn exits_are_watched(&self) {
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
        let mut model = lock(&self.inner.model);
        // In the frame of the model's stamps (see `clock`).
        let now = model.clock.frame_now();
        if let Some(t) = model.tracked.get_mut(&key) {
            t.viewed_at = Some(now);
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
        let model = lock(&self.inner.model);
        // Now in the frame of the last look: a step of the wall clock since is not counted.
        let now = model.clock.frame_now();
        model
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

    /// Marks a launched process as a session (source `session`), shown `starting` until it is
    /// marked ready.
    pub fn mark_session_starting(&self, id: ProcessId, session_id: &str) {
        let mut model = lock(&self.inner.model);
        model.sessions.insert(id, session_id.to_string());
        model.launching.insert(id);
    }

    /// Marks a process as a session's Serena, ready (its state is then the refresh's to say).
    pub fn mark_session_ready(&self, id: ProcessId, session_id: &str) {
        let mut model = lock(&self.inner.model);
        model.sessions.insert(id, session_id.to_string());
        model.launching.remove(&id);
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

impl Core {
    /// One look at the world: see the module docs. Concurrent calls are serialised.
    pub async fn refresh(&self) -> Result<Vec<Instance>> {
        self.refresh_round().await?;
        Ok(self.instances())
    }

    /// [`Core::refresh`] without the copy of the instances (the refresh loop's, which only
    /// publishes what changed). Whether the loop is to keep its one-second pace: the round had
    /// news (an event other than a cost that moved), an instance is still starting, or an idle
    /// shutdown applies to one (its activity is followed closely).
    pub(crate) async fn refresh_round(&self) -> Result<bool> {
        let _one_at_a_time = self.inner.refreshing.lock().await;
        let scan = self.scan().await?;
        let (now, jobs) = {
            let mut model = lock(&self.inner.model);
            model.idle_default = self.inner.settings.dashboard.idle_shutdown;
            let (now, step) = model.look(Reading::now());
            if step != 0.0 {
                tracing::info!(
                    "the wall clock stepped by {step:+.0} s: the instances' graces and idle times keep what remained of them"
                );
            }
            (now, refresh::plan(&mut model, &scan, now))
        };
        let results = refresh::probe_all(&self.inner.prober, jobs).await;
        let grace = self.inner.settings.tray.zombie_grace;
        let idle = self.inner.settings.dashboard.idle_shutdown;
        let Decisions {
            mut events,
            writes,
            rescan,
            pending,
        } = refresh::apply(
            &mut lock(&self.inner.model),
            &scan,
            results,
            now,
            grace,
            idle,
        );
        self.inner.scanner.map_ports_afresh(rescan);
        let written = self.write_registry(&scan, writes).await;
        if let Ok(Some(moved)) = &written {
            events.push(Event::RegistryRecovered {
                moved_to: moved.display().to_string(),
            });
        }
        let busy = pending
            || events
                .iter()
                .any(|e| !matches!(e, Event::CostChanged { .. }));
        // The model has changed: what changed goes out even if the registry could not be
        // written (the next refresh tries the write again).
        for e in events {
            self.publish(e);
        }
        if let Err(e) = written {
            // Logged once by `wrote`, at the write; a task that failed is a bug.
            tracing::debug!("cannot update the registry: {e}");
        }
        Ok(busy)
    }

    /// The processes, their sockets and the registry, read off the async threads.
    async fn scan(&self) -> Result<Scan> {
        let inner = self.inner.clone();
        Ok(tokio::task::spawn_blocking(move || {
            let registered = || {
                let model = lock(&inner.model);
                model.registrations.values().map(|r| r.pid).collect()
            };
            let (registry, scope) = (&inner.registry, &inner.settings.scope);
            // Exits unwatched (a core without the background loop): every look is afresh.
            let afresh = !inner.exits_watched.load(Ordering::SeqCst)
                || inner.exit_seen.swap(false, Ordering::SeqCst);
            inner
                .scanner
                .scan(registry, &*inner.listeners, scope, afresh, registered)
        })
        .await?)
    }

    /// Writes what a refresh learnt to the registry: nothing to write against what it read
    /// leaves the file alone (no lock, no second read); otherwise the write is made under the
    /// lock, against the file as it is. Where a corrupt file was moved aside, if it was.
    async fn write_registry(
        &self,
        scan: &Scan,
        writes: RegistryWrites,
    ) -> Result<Option<std::path::PathBuf>> {
        let mut preview = scan.registry.clone();
        write_entries(&mut preview, &writes);
        if scan.registry_read && preview == scan.registry {
            return Ok(None);
        }
        let inner = self.inner.clone();
        let written = tokio::task::spawn_blocking(move || {
            inner
                .registry
                .update(|entries| write_entries(entries, &writes))
        })
        .await?;
        self.wrote_result(Written::Registry, self.inner.registry.path(), &written);
        Ok(written?.1)
    }
}

impl Core {
    /// Kills the instance with this PID (the live one if a dead record shares the PID): what a
    /// user asks for by PID. See [`Core::kill_process`].
    pub async fn kill(&self, pid: u32) -> std::result::Result<KillReport, KillError> {
        if self.tracked_id(pid).is_none() {
            // Maybe it started since the last look.
            let _ = self.refresh().await;
        }
        let key = self.tracked_id(pid).ok_or(KillError::UnknownPid(pid))?;
        self.kill_process(key).await
    }

    /// Kills exactly this instance with its whole process tree (see `reaper`); a dead record is
    /// only pruned from the registry, never signalled. Refuses anything that is not verifiably
    /// Serena.
    pub async fn kill_process(&self, key: ProcessId) -> std::result::Result<KillReport, KillError> {
        let found = {
            let model = lock(&self.inner.model);
            model
                .tracked
                .get(&key)
                .map(|t| (t.alive, t.inst.verified_serena, t.inst.port))
        };
        let (alive, verified, port) = found.ok_or(KillError::UnknownPid(key.pid))?;
        if !alive {
            self.forget(key, Forget::DeadRecord).await;
            return Ok(KillReport::already_gone(key.pid));
        }
        if !verified {
            return Err(KillError::NotSerena(key.pid));
        }
        let report = reaper::reap(key, port, &self.inner.prober, &self.inner.timings).await?;
        self.forget(key, Forget::Killed).await;
        let _ = self.inner.events.send(Event::InstanceKilled {
            pid: key.pid,
            outcome: report.outcome,
        });
        Ok(report)
    }

    /// Kills every zombie concurrently and prunes dead registry entries.
    pub async fn kill_zombies(&self) -> ZombieSweep {
        let _ = self.refresh().await;
        let zombies: Vec<Instance> = self
            .instances()
            .into_iter()
            .filter(|i| i.state == State::Zombie)
            .collect();
        let results = join_all(zombies.iter().map(|z| async move {
            let dead = z.state_reason == Some(ZombieReason::Dead);
            (z.pid, dead, self.kill_process(z.process_id()).await)
        }))
        .await;
        let mut sweep = ZombieSweep {
            killed: Vec::new(),
            failed: Vec::new(),
            pruned: Vec::new(),
        };
        for (pid, pruned, r) in results {
            match r {
                Ok(_) if pruned => sweep.pruned.push(pid),
                Ok(report) => sweep.killed.push(report),
                Err(e) => sweep.failed.push(SweepFailure::new(pid, &e)),
            }
        }
        sweep
    }

    /// Asks an instance to stop through its own dashboard (`PUT /shutdown`), nothing more; only
    /// after checking that the process still listens on that port.
    pub async fn shutdown(&self, pid: u32) -> std::result::Result<(), KillError> {
        let key = self.tracked_id(pid).ok_or(KillError::UnknownPid(pid))?;
        let (alive, verified, port) = {
            let model = lock(&self.inner.model);
            let t = model.tracked.get(&key);
            (
                t.is_some_and(|t| t.alive),
                t.is_some_and(|t| t.inst.verified_serena),
                t.and_then(|t| t.inst.port),
            )
        };
        if !alive {
            return Err(KillError::UnknownPid(pid));
        }
        // Like a kill: only what is verifiably Serena is asked to stop.
        if !verified {
            return Err(KillError::NotSerena(pid));
        }
        let port = port.ok_or(KillError::NoDashboard(pid))?;
        let inner = self.inner.clone();
        let owns = tokio::task::spawn_blocking(move || inner.listeners.owns_port(pid, port))
            .await
            .unwrap_or(false);
        if !owns {
            return Err(KillError::NoDashboard(pid));
        }
        let _ = self.inner.prober.shutdown(port).await;
        Ok(())
    }

    /// Drops an instance from the model and the registry (after a kill, or a pruned record).
    async fn forget(&self, key: ProcessId, why: Forget) {
        // Not in the middle of a refresh, which could write the entry back.
        let _no_refresh = self.inner.refreshing.lock().await;
        let exact = lock(&self.inner.model)
            .forget(key)
            .filter(|_| why == Forget::DeadRecord);
        let inner = self.inner.clone();
        let written = tokio::task::spawn_blocking(move || {
            inner
                .registry
                .update(|entries| entries.retain(|e| !e.is_record_of(key, exact)))
        })
        .await;
        // Not written: the next refresh removes the entry (it is of no live instance).
        if let Ok(written) = &written {
            self.wrote_result(Written::Registry, self.inner.registry.path(), written);
        }
        let _ = self.inner.events.send(Event::InstanceRemoved {
            pid: key.pid,
            started_at: key.start_time as Epoch,
        });
    }
}
