//! The blocking look at the machine: the process table, the Serena command lines in it, the
//! registry file, the scope, and which ports the candidates listen on (reused while nothing asks
//! for a fresh look). The result, a [`Scan`], is all the decisions see of the machine.
//! Deliberately not here: what any of it means (`plan`, `apply`).

use crate::core::cmdline::{self, SerenaArgs};
use crate::core::cost::CostMeter;
use crate::core::model::{lock, Cost, Epoch, ProcessId};
use crate::core::procs::{Proc, ProcTable, Scope, Snapshot, Sys, YOUNG_SECS};
use crate::core::registry::{Registry, RegistryEntry, Stamp};
use crate::core::sockets::{ListenerSource, PortMap};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
const PORT_RESCAN: std::time::Duration = std::time::Duration::from_secs(60);

/// What one scan of the machine found (blocking work, done off the async threads).
pub(crate) struct Scan {
    pub(crate) snap: std::sync::Arc<Snapshot>,
    pub(crate) candidates: Vec<(Proc, SerenaArgs)>,
    pub(crate) registry: Vec<RegistryEntry>,
    /// Whether the registry file could be read and parsed (else the write goes through the
    /// registry's recovery, whatever there is to write).
    pub(crate) registry_read: bool,
    pub(crate) ports: PortMap,
    /// The live PIDs inside the scope, when discovery is scoped (`None`: all are).
    pub(crate) admitted: Option<HashSet<u32>>,
    /// What the tree of each live instance PID costs.
    pub(crate) costs: HashMap<u32, Cost>,
    /// Now in the frame of the processes' start times (`procs::now_in_frame`), what a live
    /// instance's age is measured against; `None` (tests): the refresh's now.
    pub(crate) frame_now: Option<Epoch>,
}

impl Scan {
    /// The live process with this PID, if it is inside the scope.
    pub(crate) fn visible(&self, pid: u32) -> Option<&Proc> {
        self.snap
            .get(pid)
            .filter(|_| self.admitted.as_ref().is_none_or(|a| a.contains(&pid)))
    }
}

/// What a scan keeps between refreshes: the process table, the port mapping, the CPU samples
/// and which processes are inside the scope.
#[derive(Default)]
pub(crate) struct Scanner {
    table: Mutex<Table>,
    ports: Mutex<PortCache>,
    meter: Mutex<CostMeter>,
}

#[derive(Default)]
struct Table {
    sys: Sys,
    procs: ProcTable,
    /// The instance PIDs of the last scan (watched by the next look).
    pids: Vec<u32>,
    /// Whether each process seen outside its first seconds is inside the scope (its
    /// environment does not change any more).
    admitted: HashMap<ProcessId, bool>,
    /// When the instances and their clients were last read (see [`WATCHED_EVERY`]).
    watched_at: Option<Instant>,
    /// The last costs measured, for which PIDs, and when (see [`COSTS_EVERY`]).
    costs: HashMap<u32, Cost>,
    costs_for: Vec<u32>,
    costs_at: Option<Instant>,
    /// The registry as last read, the file's stamp then, and when (see [`REGISTRY_REREAD`]).
    registry: Option<(Stamp, Vec<RegistryEntry>, Instant)>,
}

/// The longest the registry's last reading is reused while its file's stamp stays the same
/// (an edit in place within the file system's clock tick leaves the stamp as it was).
const REGISTRY_REREAD: Duration = Duration::from_secs(10);

/// While exits are watched (an exit wakes a look that reads them), the longest between two
/// reads of the instances and their clients, for what no exit announces (a parent that
/// changed otherwise).
const WATCHED_EVERY: Duration = Duration::from_secs(10);

/// How often the instances' memory and CPU are measured while the set of instances stays the
/// same (a new or gone instance measures them at once).
const COSTS_EVERY: Duration = Duration::from_secs(10);

/// Whether `at` is unset or `every` ago.
fn due(at: Option<Instant>, every: Duration) -> bool {
    at.is_none_or(|t| t.elapsed() >= every)
}

/// The Serena servers in a process table, by PID; a launcher (e.g. Windows' `serena.exe`) whose
/// child is the real server is not one, nor is a fork of a server caught before its `exec`
/// (Serena starting its language server): it has its parent's very command line.
pub(crate) fn serena_candidates(snap: &Snapshot) -> Vec<(Proc, SerenaArgs)> {
    let mut candidates: Vec<(Proc, SerenaArgs)> = snap
        .iter()
        .filter_map(|p| cmdline::parse(&p.cmdline).map(|a| (p.clone(), a)))
        .collect();
    let cmdlines: HashMap<u32, &Vec<String>> = (candidates.iter())
        .map(|(p, _)| (p.pid, &p.cmdline))
        .collect();
    let forks: HashSet<u32> = (candidates.iter())
        .filter(|(p, _)| p.ppid.and_then(|pp| cmdlines.get(&pp)) == Some(&&p.cmdline))
        .map(|(p, _)| p.pid)
        .collect();
    candidates.retain(|(p, _)| !forks.contains(&p.pid));
    let parents_of_candidates: HashSet<u32> =
        candidates.iter().filter_map(|(p, _)| p.ppid).collect();
    candidates.retain(|(p, _)| !parents_of_candidates.contains(&p.pid));
    candidates.sort_by_key(|(p, _)| p.pid);
    candidates
}

impl Scanner {
    /// One look (blocking: call it off the async threads). `registered_pids` names the PIDs
    /// of tray-protocol registrations.
    pub(crate) fn scan(
        &self,
        registry: &Registry,
        listeners: &dyn ListenerSource,
        scope: &Scope,
        afresh: bool,
        registered_pids: impl FnOnce() -> Vec<u32>,
    ) -> Scan {
        let mut guard = lock(&self.table);
        let table = &mut *guard;
        let registered = registered_pids();
        let mut watched = Vec::new();
        if afresh || due(table.watched_at, WATCHED_EVERY) {
            watched.extend(&table.pids);
            watched.extend(&registered);
            table.watched_at = Some(Instant::now());
        }
        let snap = table.procs.look(&mut table.sys, &watched);
        let mut candidates = serena_candidates(&snap);

        let (registry, registry_read) = table.read_registry(registry);
        // Every live PID that could be an instance: Serena command lines, registrations, live
        // registry entries. Outside the scope (tests) they are not seen at all.
        let mut pids: BTreeSet<u32> = candidates.iter().map(|(p, _)| p.pid).collect();
        pids.extend(registered);
        pids.extend(
            registry
                .iter()
                .filter(|e| snap.get(e.pid).is_some())
                .map(|e| e.pid),
        );
        let mut pids: Vec<u32> = pids.into_iter().collect();
        let admitted = table.admitted(scope, &snap, &pids);
        if let Some(admitted) = &admitted {
            pids.retain(|p| admitted.contains(p));
            candidates.retain(|(p, _)| admitted.contains(&p.pid));
        }
        let candidate_pids: Vec<u32> = candidates.iter().map(|(p, _)| p.pid).collect();
        drop(snap);
        let snap = table.procs.fill_cwd(&mut table.sys, &candidate_pids);
        if table.costs_for != pids || due(table.costs_at, COSTS_EVERY) {
            table.costs = lock(&self.meter).measure(&mut table.sys, &snap, &pids);
            table.costs_for.clone_from(&pids);
            table.costs_at = Some(Instant::now());
        }
        let costs = table.costs.clone();
        table.pids.clone_from(&pids);
        drop(guard);
        let ports = self.ports_of(listeners, pids);
        Scan {
            snap,
            candidates,
            registry,
            registry_read,
            ports,
            admitted,
            costs,
            frame_now: Some(crate::core::procs::now_in_frame() as Epoch),
        }
    }

    /// The listening ports of `pids`: the last mapping while it is fresh (the same PIDs, not
    /// marked stale, younger than [`PORT_RESCAN`]), else mapped afresh.
    fn ports_of(&self, listeners: &dyn ListenerSource, pids: Vec<u32>) -> PortMap {
        let mut cache = lock(&self.ports);
        let fresh = !cache.stale
            && cache.pids == pids
            && cache.at.is_some_and(|t| t.elapsed() < PORT_RESCAN);
        if !fresh {
            cache.map = listeners.listening_ports(&pids);
            cache.pids = pids;
            cache.at = Some(std::time::Instant::now());
        }
        cache.map.clone()
    }

    /// Whether the next scan must map sockets afresh rather than reuse the last mapping.
    pub(crate) fn map_ports_afresh(&self, afresh: bool) {
        lock(&self.ports).stale = afresh;
    }
}

impl Table {
    /// The registry's entries and whether the file could be read and parsed; the last
    /// reading while the file's stamp is the same (see [`REGISTRY_REREAD`]).
    fn read_registry(&mut self, registry: &Registry) -> (Vec<RegistryEntry>, bool) {
        let stamp = registry.stamp();
        if let (Some(now), Some((then, entries, at))) = (&stamp, &self.registry) {
            if now == then && at.elapsed() < REGISTRY_REREAD {
                return (entries.clone(), true);
            }
        }
        match registry.load() {
            Ok(entries) => {
                self.registry = stamp.map(|s| (s, entries.clone(), Instant::now()));
                (entries, true)
            }
            Err(e) => {
                tracing::warn!("{e}");
                self.registry = None;
                (Vec::new(), false)
            }
        }
    }

    /// Those of `pids` inside the scope (`None`: all are). Only the environments of processes
    /// not judged before, or still young, are read.
    fn admitted(&mut self, scope: &Scope, snap: &Snapshot, pids: &[u32]) -> Option<HashSet<u32>> {
        if *scope == Scope::All {
            return None;
        }
        let settled_before = crate::core::model::now() as u64 - YOUNG_SECS;
        let ids: HashSet<ProcessId> = pids
            .iter()
            .filter_map(|p| snap.get(*p))
            .map(Proc::id)
            .collect();
        let unjudged: Vec<u32> = ids
            .iter()
            .filter(|id| !self.admitted.contains_key(id))
            .map(|id| id.pid)
            .collect();
        if !unjudged.is_empty() {
            let inside = scope.admitted(&mut self.sys, &unjudged).unwrap_or_default();
            for id in &ids {
                self.admitted
                    .entry(*id)
                    .or_insert_with(|| inside.contains(&id.pid));
            }
        }
        let verdicts: HashSet<u32> = ids
            .iter()
            .filter(|id| self.admitted.get(id) == Some(&true))
            .map(|id| id.pid)
            .collect();
        // A young process's verdict is not kept: it may not have exec'd yet.
        self.admitted
            .retain(|id, _| ids.contains(id) && id.start_time < settled_before);
        Some(verdicts)
    }
}
