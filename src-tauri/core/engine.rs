//! The running core: one cloneable [`Core`] handle (an `Arc` inside) that the CLI, the daemon,
//! the HTTP API, the tray and the tests all drive. [`Core::refresh`] is the one place that looks
//! at the outside world: it scans processes and their sockets, reads the registry, probes every
//! dashboard concurrently (short timeouts), classifies, publishes [`Event`]s for what changed and
//! writes what it learnt back to the registry.
//!
//! Deliberately not here: the timer that calls `refresh` (the daemon's loop), killing (the
//! reaper), and sessions.

use super::classify::{self, Observation, ALREADY};
use super::cmdline::{self, SerenaArgs};
use super::config::Config;
use super::events::Event;
use super::model::{
    now, same_process, ClientInfo, Epoch, Instance, ProcessId, Source, State, ZombieReason,
};
use super::probe::{ConfigSummary, LogStatus, Prober};
use super::procs::{Proc, Snapshot};
use super::reaper::{self, KillReport, ReapError, Timings};
use super::registry::{Registry, RegistryEntry, RegistryError};
use super::sockets::{self, ListenerSource, PortMap};
use futures::future::join_all;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use sysinfo::System;
use tokio::sync::broadcast;

/// How stale `last_heartbeat` in the registry may get before it is rewritten: keeps a steady
/// refresh loop from rewriting the file every second when nothing else changed.
const HEARTBEAT_WRITE_INTERVAL: Epoch = 2.0;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("background task failed: {0}")]
    Task(String),
}

pub type Result<T> = std::result::Result<T, CoreError>;

/// The handle on the running core. Clone it freely.
#[derive(Clone)]
pub struct Core {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    registry: Registry,
    prober: Prober,
    listeners: Box<dyn ListenerSource>,
    sys: Mutex<System>,
    model: Mutex<Model>,
    refreshing: tokio::sync::Mutex<()>,
    events: broadcast::Sender<Event>,
    timings: Timings,
    ports: Mutex<PortCache>,
}

/// Mapping sockets to PIDs reads the kernel's TCP tables, which costs milliseconds whatever
/// their size; the answer rarely changes. It is reused while the set of PIDs is the same, for
/// at most [`PORT_RESCAN`], unless the last refresh asked for a fresh look (an instance without
/// a known dashboard yet, or one that stopped answering).
#[derive(Default)]
struct PortCache {
    at: Option<std::time::Instant>,
    pids: Vec<u32>,
    map: PortMap,
    stale: bool,
}

/// The longest a port mapping is reused.
const PORT_RESCAN: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a new instance without a dashboard port keeps the mapping fresh every refresh.
const NEW_INSTANCE_WINDOW: Epoch = 60.0;

#[derive(Default)]
struct Model {
    tracked: BTreeMap<ProcessId, Tracked>,
    /// What instances told us over Serena's tray protocol, by dashboard port.
    registrations: BTreeMap<u16, Registration>,
    /// Instances this program launched (sessions), with their session IDs.
    sessions: HashMap<ProcessId, String>,
    /// Sessions being launched that do not answer yet (state `starting`).
    launching: HashSet<ProcessId>,
}

/// One instance's registration over Serena's tray protocol (information, never authority).
/// Whoever accepts one has checked it (`tray_protocol`); the core only bounds how many it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub pid: u32,
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

/// One instance and the bookkeeping behind its state.
struct Tracked {
    inst: Instance,
    args: SerenaArgs,
    client: Option<ClientInfo>,
    alive: bool,
    /// For entries known only from the registry: their exact `started_at` there.
    registry_started_at: Option<Epoch>,
    orphaned_since: Option<Epoch>,
    last_ok: Option<Epoch>,
    silent_since: Option<Epoch>,
    log_max_idx: Option<i64>,
    overview: Option<ConfigSummary>,
    /// The active project the overview was fetched for.
    overview_for: Option<Option<String>>,
    /// The project its tray-protocol registration names, if it registered.
    registered_project: Option<Option<String>>,
    /// Where it was first learnt of (the shown source adds registrations and sessions).
    base_source: Source,
}

/// What one scan of the machine found (blocking work, done off the async threads).
struct Scan {
    snap: Snapshot,
    candidates: Vec<(Proc, SerenaArgs)>,
    registry: Vec<RegistryEntry>,
    ports: PortMap,
}

struct ProbeJob {
    key: ProcessId,
    ports: Vec<u16>,
    known: Option<u16>,
    overview_for: Option<Option<String>>,
}

#[derive(Default)]
struct ProbeResult {
    /// The dashboard port, if one was identified (answering or not).
    port: Option<u16>,
    status: Option<LogStatus>,
    overview: Option<ConfigSummary>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; carry on with it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Core {
    pub fn new(config: Config) -> Core {
        Core::with_listeners(config, sockets::platform())
    }

    /// A core with a given socket source (tests; other platforms).
    pub fn with_listeners(config: Config, listeners: Box<dyn ListenerSource>) -> Core {
        let (events, _) = broadcast::channel(1024);
        Core {
            inner: Arc::new(Inner {
                registry: Registry::new(&config.serena_home),
                prober: Prober::new(config.probe_timeout),
                listeners,
                sys: Mutex::new(System::new()),
                model: Mutex::new(Model::default()),
                refreshing: tokio::sync::Mutex::new(()),
                events,
                timings: Timings::default(),
                ports: Mutex::new(PortCache::default()),
                config,
            }),
        }
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Every state change, as it happens.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// The instances as of the last refresh, sorted by PID then start time.
    pub fn instances(&self) -> Vec<Instance> {
        lock(&self.inner.model)
            .tracked
            .values()
            .map(|t| t.inst.clone())
            .collect()
    }

    /// One look at the world: see the module docs. Concurrent calls are serialised.
    pub async fn refresh(&self) -> Result<Vec<Instance>> {
        let _one_at_a_time = self.inner.refreshing.lock().await;
        let inner = self.inner.clone();
        let scan = tokio::task::spawn_blocking(move || inner.scan())
            .await
            .map_err(|e| CoreError::Task(e.to_string()))?;
        let now = now();
        let jobs = self.plan(&scan, now);
        let prober = &self.inner.prober;
        let results = join_all(jobs.into_iter().map(|job| async move {
            let key = job.key;
            (key, probe(prober, job).await)
        }))
        .await;
        let (mut events, writes) = self.apply(&scan, results, now);

        let inner = self.inner.clone();
        let written = tokio::task::spawn_blocking(move || {
            inner
                .registry
                .update(|entries| write_entries(entries, &writes))
        })
        .await
        .map_err(|e| CoreError::Task(e.to_string()));
        if let Ok(Ok((_, Some(moved)))) = &written {
            events.push(Event::RegistryRecovered {
                moved_to: moved.display().to_string(),
            });
        }
        // The model has changed: what changed goes out even if the registry could not be
        // written (the next refresh tries the write again).
        for e in events {
            // No subscriber is fine: nobody is listening yet.
            let _ = self.inner.events.send(e);
        }
        match written {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("cannot update the registry: {e}"),
            Err(e) => tracing::warn!("cannot update the registry: {e}"),
        }
        Ok(self.instances())
    }

    /// Creates records for new instances, drops those that exited, lists the probes to run.
    fn plan(&self, scan: &Scan, now: Epoch) -> Vec<ProbeJob> {
        let mut model = lock(&self.inner.model);
        let mut present: HashSet<ProcessId> = HashSet::new();
        let mut claimed_entries: HashSet<usize> = HashSet::new();

        for (proc, args) in &scan.candidates {
            let key = proc.id();
            present.insert(key);
            let entry =
                scan.registry.iter().enumerate().find(|(_, e)| {
                    e.pid == proc.pid && same_process(e.started_at(), proc.start_time)
                });
            if let Some((i, _)) = entry {
                claimed_entries.insert(i);
            }
            model.tracked.entry(key).or_insert_with(|| {
                first_sight(
                    &scan.snap,
                    proc,
                    args.clone(),
                    Source::Discovery,
                    true,
                    entry.map(|(_, e)| e),
                    now,
                )
            });
        }

        for (i, e) in scan.registry.iter().enumerate() {
            if claimed_entries.contains(&i) {
                continue;
            }
            match scan.snap.get(e.pid) {
                Some(proc) if same_process(e.started_at(), proc.start_time) => {
                    // Registered by someone, alive, but not a Serena command line: shown,
                    // probed on its registered port, never trusted for killing.
                    let key = proc.id();
                    present.insert(key);
                    model.tracked.entry(key).or_insert_with(|| {
                        let mut t = first_sight(
                            &scan.snap,
                            proc,
                            SerenaArgs::default(),
                            Source::Registry,
                            false,
                            Some(e),
                            now,
                        );
                        t.inst.port = e.port;
                        t.inst.project_name = e.project_name.clone();
                        t
                    });
                }
                _ => {
                    let key = ProcessId {
                        pid: e.pid,
                        start_time: e.started_at.max(0.0) as u64,
                    };
                    present.insert(key);
                    model
                        .tracked
                        .entry(key)
                        .or_insert_with(|| dead_from_registry(e, now));
                }
            }
        }

        // Tray-protocol registrations: a registered Serena gets the registration's project as a
        // fallback; a registered PID that is not a Serena process is shown, never trusted.
        let Model {
            tracked,
            registrations,
            sessions,
            ..
        } = &mut *model;
        registrations.retain(|_, r| scan.snap.get(r.pid).is_some());
        // Sources are recomputed each time: a registration or a session can end.
        for t in tracked.values_mut() {
            t.registered_project = None;
            t.inst.source = t.base_source;
        }
        for r in registrations.values() {
            let Some(proc) = scan.snap.get(r.pid) else {
                continue;
            };
            let key = proc.id();
            present.insert(key);
            let t = tracked.entry(key).or_insert_with(|| {
                let mut t = first_sight(
                    &scan.snap,
                    proc,
                    SerenaArgs::default(),
                    Source::TrayProtocol,
                    false,
                    None,
                    now,
                );
                t.inst.port = Some(r.port);
                t.inst.project_name = r.project.clone();
                t
            });
            t.registered_project = Some(r.project.clone());
            t.inst.source = t.inst.source.max(Source::TrayProtocol);
        }
        for (key, _) in sessions.iter() {
            if let Some(t) = tracked.get_mut(key) {
                t.inst.source = Source::Session;
            }
        }

        // Anything tracked but not present any more exited (or its entry was pruned).
        for t in model.tracked.values_mut() {
            if !present.contains(&t.inst.process_id()) && t.alive {
                t.alive = false;
            }
        }

        model
            .tracked
            .iter()
            .filter(|(k, t)| t.alive && present.contains(k))
            .map(|(k, t)| {
                let mut ports: Vec<u16> = scan
                    .ports
                    .get(&k.pid)
                    .map(|s| s.iter().copied().collect())
                    .unwrap_or_default();
                if let Some(mcp) = t.args.mcp_port {
                    ports.retain(|p| *p != mcp);
                }
                ProbeJob {
                    key: *k,
                    ports,
                    known: t.inst.port,
                    overview_for: t.overview_for.clone(),
                }
            })
            .collect()
    }

    /// Folds probe results into the model, classifies, and returns the events and the registry
    /// writes that follow.
    fn apply(
        &self,
        scan: &Scan,
        results: Vec<(ProcessId, ProbeResult)>,
        now: Epoch,
    ) -> (Vec<Event>, RegistryWrites) {
        let grace = self.inner.config.zombie_grace;
        let mut model = lock(&self.inner.model);
        let mut events = Vec::new();
        let mut writes = RegistryWrites::default();
        let mut results: BTreeMap<ProcessId, ProbeResult> = results.into_iter().collect();

        let launching = model.launching.clone();
        let keys: Vec<ProcessId> = model.tracked.keys().copied().collect();
        for key in keys {
            let Some(t) = model.tracked.get_mut(&key) else {
                continue;
            };
            let is_new = t.inst.first_seen == now;
            let present = t.alive && scan.snap.get_id(key).is_some();
            if !present && t.registry_started_at.is_none() {
                // Seen alive before, gone now: it ended. Forget it.
                events.push(Event::InstanceRemoved {
                    pid: key.pid,
                    started_at: t.inst.started_at,
                });
                writes.remove.push(key);
                model.tracked.remove(&key);
                continue;
            }
            if !t.alive
                && !scan
                    .registry
                    .iter()
                    .any(|e| Some(e.started_at) == t.registry_started_at && e.pid == key.pid)
            {
                // A dead entry someone pruned from the registry.
                events.push(Event::InstanceRemoved {
                    pid: key.pid,
                    started_at: t.inst.started_at,
                });
                model.tracked.remove(&key);
                continue;
            }
            let before = t.inst.clone();
            if t.alive {
                let result = results.remove(&key).unwrap_or_default();
                observe(t, &scan.snap, result, now);
            }
            let obs = Observation {
                alive: t.alive,
                orphaned_since: t.orphaned_since,
                silent_since: t.silent_since,
                has_project: t.inst.project_name.is_some(),
            };
            let (mut state, reason) = classify::classify(&obs, now, grace);
            if launching.contains(&key) && state.is_live() {
                state = State::Starting;
            }
            if (state, reason) != (before.state, before.state_reason) {
                t.inst.state = state;
                t.inst.state_reason = reason;
                t.inst.state_since = now;
            }
            if is_new {
                events.push(Event::InstanceAdded {
                    instance: t.inst.clone(),
                });
            } else if (state, reason) != (before.state, before.state_reason) {
                events.push(Event::StateChanged {
                    pid: key.pid,
                    from: before.state,
                    to: state,
                    reason,
                    instance: t.inst.clone(),
                });
            } else if !same_shown(&before, &t.inst) {
                events.push(Event::InstanceUpdated {
                    instance: t.inst.clone(),
                });
            }
            if t.base_source == Source::TrayProtocol && !t.inst.verified_serena {
                // An unverified registration is shown, never written to the shared file.
                continue;
            }
            let known = scan.registry.iter().any(|e| {
                e.pid == key.pid
                    && match t.registry_started_at {
                        Some(at) => e.started_at == at,
                        None => same_process(e.started_at(), key.start_time),
                    }
            });
            writes.upsert.push(Upsert {
                key,
                known,
                exact_started_at: t.registry_started_at,
                inst: t.inst.clone(),
            });
        }
        // Look at the sockets again next time if a young instance has no dashboard yet or one
        // stopped answering (its port may have moved).
        let rescan = model.tracked.values().any(|t| {
            t.alive
                && (t.silent_since.is_some()
                    || (t.inst.port.is_none() && now - t.inst.started_at < NEW_INSTANCE_WINDOW))
        });
        lock(&self.inner.ports).stale = rescan;
        (events, writes)
    }
}

/// Why a kill was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum KillError {
    #[error("no Serena instance with PID {0}")]
    UnknownPid(u32),
    #[error("PID {0} is registered but is not a Serena process: it is never killed")]
    NotSerena(u32),
    #[error("instance {0} has no dashboard to ask (it may have lost Serena's port race)")]
    NoDashboard(u32),
    #[error(transparent)]
    Reap(#[from] ReapError),
}

/// What "kill all zombies" did.
#[derive(Debug, Clone, Serialize)]
pub struct ZombieSweep {
    pub killed: Vec<KillReport>,
    pub failed: Vec<SweepFailure>,
    /// Dead registry entries removed.
    pub pruned: Vec<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SweepFailure {
    pub pid: u32,
    pub error: String,
}

impl Core {
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

    /// The record for a PID: the live one if a dead record shares the PID.
    fn tracked_id(&self, pid: u32) -> Option<ProcessId> {
        let model = lock(&self.inner.model);
        let mut found: Vec<(&ProcessId, &Tracked)> = model
            .tracked
            .iter()
            .filter(|(_, t)| t.inst.pid == pid)
            .collect();
        found.sort_by_key(|(_, t)| !t.alive);
        found.first().map(|(k, _)| **k)
    }

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
            self.forget(key, true).await;
            return Ok(KillReport::already_gone(key.pid));
        }
        if !verified {
            return Err(KillError::NotSerena(key.pid));
        }
        let report = reaper::reap(key, port, &self.inner.prober, &self.inner.timings).await?;
        self.forget(key, false).await;
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
            (z.pid, dead, self.kill_process(self.key_of(z)).await)
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
                Err(e) => sweep.failed.push(SweepFailure {
                    pid,
                    error: e.to_string(),
                }),
            }
        }
        sweep
    }

    /// The model key of an instance as shown (dead records are keyed by their recorded start).
    pub fn key_of(&self, inst: &Instance) -> ProcessId {
        ProcessId {
            pid: inst.pid,
            start_time: inst.started_at.max(0.0) as u64,
        }
    }

    /// Asks an instance to stop through its own dashboard (`PUT /shutdown`), nothing more; only
    /// after checking that the process still listens on that port.
    pub async fn shutdown(&self, pid: u32) -> std::result::Result<(), KillError> {
        let key = self.tracked_id(pid).ok_or(KillError::UnknownPid(pid))?;
        let (alive, port) = {
            let model = lock(&self.inner.model);
            let t = model.tracked.get(&key);
            (t.is_some_and(|t| t.alive), t.and_then(|t| t.inst.port))
        };
        if !alive {
            return Err(KillError::UnknownPid(pid));
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
    async fn forget(&self, key: ProcessId, dead_record: bool) {
        // Not in the middle of a refresh, which could write the entry back.
        let _no_refresh = self.inner.refreshing.lock().await;
        let exact = {
            let mut model = lock(&self.inner.model);
            let exact = model
                .tracked
                .remove(&key)
                .and_then(|t| t.registry_started_at);
            model.sessions.remove(&key);
            model.launching.remove(&key);
            model.registrations.retain(|_, r| r.pid != key.pid);
            exact
        };
        let inner = self.inner.clone();
        let _ = tokio::task::spawn_blocking(move || {
            inner.registry.update(|entries| {
                entries.retain(|e| {
                    let same = match exact {
                        Some(t) if dead_record => e.started_at == t,
                        _ => same_process(e.started_at(), key.start_time),
                    };
                    !(e.pid == key.pid && same)
                })
            })
        })
        .await;
        let _ = self.inner.events.send(Event::InstanceRemoved {
            pid: key.pid,
            started_at: key.start_time as Epoch,
        });
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
            true
        } else {
            false
        }
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

    /// Forgets that a process is a session (released or failed).
    pub fn unmark_session(&self, id: ProcessId) {
        let mut model = lock(&self.inner.model);
        model.sessions.remove(&id);
        model.launching.remove(&id);
    }
}

impl Inner {
    fn scan(&self) -> Scan {
        let mut sys = lock(&self.sys);
        let mut snap = Snapshot::capture(&mut sys);
        let mut candidates: Vec<(Proc, SerenaArgs)> = snap
            .iter()
            .filter_map(|p| cmdline::parse(&p.cmdline).map(|a| (p.clone(), a)))
            .collect();
        // A launcher (e.g. Windows' serena.exe) whose child is the real server is not an instance.
        let parents_of_candidates: HashSet<u32> =
            candidates.iter().filter_map(|(p, _)| p.ppid).collect();
        candidates.retain(|(p, _)| !parents_of_candidates.contains(&p.pid));
        candidates.sort_by_key(|(p, _)| p.pid);
        let pids: Vec<u32> = candidates.iter().map(|(p, _)| p.pid).collect();
        snap.fill_cwd(&mut sys, &pids);
        drop(sys);

        let registry = match self.registry.load() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("{e}");
                Vec::new()
            }
        };
        let mut pids: BTreeSet<u32> = candidates.iter().map(|(p, _)| p.pid).collect();
        pids.extend(lock(&self.model).registrations.values().map(|r| r.pid));
        pids.extend(
            registry
                .iter()
                .filter(|e| snap.get(e.pid).is_some())
                .map(|e| e.pid),
        );
        let pids: Vec<u32> = pids.into_iter().collect();
        let ports = {
            let mut cache = lock(&self.ports);
            let fresh = !cache.stale
                && cache.pids == pids
                && cache.at.is_some_and(|t| t.elapsed() < PORT_RESCAN);
            if !fresh {
                cache.map = self.listeners.listening_ports(&pids);
                cache.pids = pids;
                cache.at = Some(std::time::Instant::now());
            }
            cache.map.clone()
        };
        Scan {
            snap,
            candidates,
            registry,
            ports,
        }
    }
}

/// A record for an instance seen for the first time.
fn first_sight(
    snap: &Snapshot,
    proc: &Proc,
    args: SerenaArgs,
    source: Source,
    verified: bool,
    entry: Option<&RegistryEntry>,
    now: Epoch,
) -> Tracked {
    let stdio = args.transport == super::model::Transport::Stdio;
    let adopted = snap.parent_is_adopter(proc);
    let client = if adopted {
        None
    } else {
        proc.ppid.and_then(|pp| snap.get(pp)).map(|c| ClientInfo {
            pid: c.pid,
            name: c.name.clone(),
            start_time: c.start_time,
        })
    };
    let inst = Instance {
        pid: proc.pid,
        state: State::LiveNoProject,
        state_reason: None,
        port: None,
        project_name: args.project.as_deref().map(cmdline::project_name_from_arg),
        project_path: None,
        context: args.context.clone(),
        modes: args.modes.clone(),
        transport: args.transport,
        mcp_port: args.mcp_port,
        mcp_url: args.mcp_port.and_then(|p| {
            args.transport
                .endpoint_path()
                .map(|path| format!("http://127.0.0.1:{p}{path}"))
        }),
        started_at: proc.start_time as Epoch,
        client_pid: client.as_ref().map(|c| c.pid),
        client_name: client.as_ref().map(|c| c.name.clone()),
        source,
        cmdline: proc.cmdline.clone(),
        first_seen: now,
        last_heartbeat: None,
        last_activity: None,
        state_since: now,
        verified_serena: verified,
    };
    Tracked {
        inst,
        args,
        client,
        alive: true,
        registry_started_at: None,
        // Already orphaned when first seen: a zombie at once, no grace.
        orphaned_since: (stdio && verified && adopted).then_some(ALREADY),
        // What the registry remembers of its last answer counts towards "unresponsive".
        last_ok: entry.map(|e| e.last_heartbeat).filter(|t| *t > 0.0),
        silent_since: None,
        log_max_idx: None,
        overview: None,
        overview_for: None,
        registered_project: None,
        base_source: source,
    }
}

/// A record for a registry entry whose process is gone (or whose PID now names another process).
fn dead_from_registry(e: &RegistryEntry, now: Epoch) -> Tracked {
    let inst = Instance {
        pid: e.pid,
        state: State::Zombie,
        state_reason: Some(ZombieReason::Dead),
        port: e.port,
        project_name: e.project_name.clone(),
        project_path: None,
        context: e.context.clone(),
        modes: e.modes.clone(),
        transport: Default::default(),
        mcp_port: None,
        mcp_url: None,
        started_at: e.started_at,
        client_pid: None,
        client_name: None,
        source: Source::Registry,
        cmdline: Vec::new(),
        first_seen: now,
        last_heartbeat: Some(e.last_heartbeat).filter(|t| *t > 0.0),
        last_activity: None,
        state_since: now,
        verified_serena: false,
    };
    Tracked {
        inst,
        args: SerenaArgs::default(),
        client: None,
        alive: false,
        registry_started_at: Some(e.started_at),
        orphaned_since: None,
        last_ok: None,
        silent_since: None,
        log_max_idx: None,
        overview: None,
        overview_for: None,
        registered_project: None,
        base_source: Source::Registry,
    }
}

/// Finds the dashboard among the ports the process listens on and asks it for its status.
async fn probe(prober: &Prober, job: ProbeJob) -> ProbeResult {
    let port = match job.known.filter(|p| job.ports.contains(p)) {
        Some(p) => p,
        None => {
            let answers = join_all(
                job.ports
                    .iter()
                    .map(|&p| async move { prober.heartbeat(p).await.ok().map(|()| p) }),
            )
            .await;
            match answers.into_iter().flatten().next() {
                Some(p) => p,
                // One port that does not answer: its dashboard, silent (hung or starting).
                None if job.ports.len() == 1 => {
                    return ProbeResult {
                        port: job.ports.first().copied(),
                        ..ProbeResult::default()
                    };
                }
                None => return ProbeResult::default(),
            }
        }
    };
    let status = prober.log_status(port).await.ok();
    let overview = match &status {
        Some(s) if job.overview_for.as_ref() != Some(&s.active_project) => {
            prober.config_overview(port).await.ok()
        }
        _ => None,
    };
    ProbeResult {
        port: Some(port),
        status,
        overview,
    }
}

/// Folds one probe result and the process table into a live instance's record.
fn observe(t: &mut Tracked, snap: &Snapshot, result: ProbeResult, now: Epoch) {
    t.inst.port = result.port;
    match (&result.status, result.port) {
        (Some(status), _) => {
            t.last_ok = Some(now);
            t.silent_since = None;
            if t.log_max_idx.is_some_and(|i| i != status.max_idx) {
                t.inst.last_activity = Some(now);
            }
            t.log_max_idx = Some(status.max_idx);
            t.inst.project_name = status.active_project.clone();
        }
        (None, Some(_)) => {
            if t.silent_since.is_none() {
                t.silent_since = Some(t.last_ok.unwrap_or(t.inst.first_seen));
            }
        }
        (None, None) => t.silent_since = None,
    }
    if result.status.is_none() && t.last_ok.is_none() {
        // Never heard from its dashboard: its registration's word, else its command line.
        t.inst.project_name = match &t.registered_project {
            Some(p) => p.clone(),
            None => t
                .args
                .project
                .as_deref()
                .map(cmdline::project_name_from_arg),
        };
    }
    t.inst.last_heartbeat = t.last_ok;
    if let (Some(ov), Some(status)) = (result.overview, &result.status) {
        t.overview_for = Some(status.active_project.clone());
        t.overview = Some(ov);
    }

    // Project path, context and modes: the dashboard's word, else the command line.
    let ov = t.overview.as_ref();
    let overview_path = ov
        .filter(|o| o.project_name == t.inst.project_name)
        .and_then(|o| o.project_path.clone());
    t.inst.project_path = overview_path.or_else(|| {
        let arg = t.args.project.as_deref()?;
        let name = cmdline::project_name_from_arg(arg);
        if t.inst.project_name.as_deref() != Some(name.as_str()) || !looks_like_path(arg) {
            return None;
        }
        let cwd = snap.get(t.inst.pid).and_then(|p| p.cwd.clone());
        Some(match cwd {
            Some(cwd) if Path::new(arg).is_relative() => {
                Path::new(&cwd).join(arg).display().to_string()
            }
            _ => arg.to_string(),
        })
    });
    t.inst.context = ov
        .and_then(|o| o.context.clone())
        .or_else(|| t.args.context.clone())
        .or_else(|| {
            t.inst
                .verified_serena
                .then(|| cmdline::DEFAULT_CONTEXT.into())
        });
    t.inst.modes = match ov {
        Some(o) if !o.modes.is_empty() => o.modes.clone(),
        _ => t.args.modes.clone(),
    };

    // The client: gone if the parent changed or the client process is no longer the same one.
    if t.inst.transport == super::model::Transport::Stdio && t.orphaned_since.is_none() {
        if let Some(c) = &t.client {
            let parent_now = snap.get(t.inst.pid).and_then(|p| p.ppid);
            let client_alive = snap
                .get_id(ProcessId {
                    pid: c.pid,
                    start_time: c.start_time,
                })
                .is_some();
            if parent_now != Some(c.pid) || !client_alive {
                t.orphaned_since = Some(now);
            }
        }
    }
}

fn looks_like_path(arg: &str) -> bool {
    arg.contains('/') || arg.contains('\\') || arg == "." || arg == ".."
}

/// Whether two snapshots of an instance show the same thing (timing fields aside).
fn same_shown(a: &Instance, b: &Instance) -> bool {
    a.port == b.port
        && a.project_name == b.project_name
        && a.project_path == b.project_path
        && a.context == b.context
        && a.modes == b.modes
        && a.mcp_port == b.mcp_port
}

struct Upsert {
    key: ProcessId,
    /// An entry for it was in the registry when this refresh read it: if it is missing now,
    /// someone removed it meanwhile (a kill, an unregistering Serena), so it is not re-added.
    known: bool,
    /// Set for entries known only from the registry: match that exact entry.
    exact_started_at: Option<Epoch>,
    inst: Instance,
}

#[derive(Default)]
struct RegistryWrites {
    upsert: Vec<Upsert>,
    remove: Vec<ProcessId>,
}

fn registry_state(inst: &Instance) -> &'static str {
    match inst.state {
        State::Starting => "unknown",
        s => s.as_str(),
    }
}

/// Applies what a refresh learnt to the registry's entries (inside its lock).
fn write_entries(entries: &mut Vec<RegistryEntry>, writes: &RegistryWrites) {
    for key in &writes.remove {
        entries.retain(|e| !(e.pid == key.pid && same_process(e.started_at(), key.start_time)));
    }
    for u in &writes.upsert {
        let inst = &u.inst;
        let found = entries.iter_mut().find(|e| {
            e.pid == u.key.pid
                && match u.exact_started_at {
                    Some(t) => e.started_at == t,
                    None => same_process(e.started_at(), u.key.start_time),
                }
        });
        let e = match found {
            Some(e) => e,
            // Removed since this refresh read the file: do not bring it back.
            None if u.exact_started_at.is_some() || u.known => continue,
            None => {
                entries.push(RegistryEntry::new(inst.pid, inst.started_at));
                let Some(e) = entries.last_mut() else {
                    continue;
                };
                e
            }
        };
        if u.exact_started_at.is_none() {
            e.port = inst.port;
            e.context = inst.context.clone();
            e.modes = inst.modes.clone();
            e.project_name = inst.project_name.clone();
            if let Some(hb) = inst.last_heartbeat {
                if hb - e.last_heartbeat >= HEARTBEAT_WRITE_INTERVAL {
                    e.last_heartbeat = hb;
                }
            }
        }
        e.state = registry_state(inst).to_string();
    }
}
