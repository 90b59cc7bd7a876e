//! Planning a refresh: creates records for new instances, marks those that went, and lists the
//! dashboard probes to run. A pure function of the model, a [`Scan`] and the time, unit-tested
//! with constructed scans. Deliberately not here: running the probes (`refresh`) and folding
//! their answers in (`apply`).

use super::scan::Scan;
use super::tracked::{
    dead_from_registry, first_sight, Model, OverviewFor, Registered, Sighting, Tracked,
};
use crate::core::model::{Epoch, ProcessId, Registration, Source};
use crate::core::probe::{ConfigSummary, LogStatus};
use std::collections::HashSet;

/// How often a steady instance's dashboard is asked (its exit is seen at once through its
/// pidfd, so this is for its project, its activity and a dashboard that stops answering): one
/// that is new, has no dashboard yet, is starting or has gone silent is asked every refresh,
/// and so is one whose page is open (see [`VIEWED_FOR`]) or whose idle shutdown is announced.
/// Each ask costs the Python side a connection and a thread (Serena's dashboard closes every
/// connection).
pub(crate) const STEADY_PROBE_INTERVAL: Epoch = 10.0;

/// How long an instance counts as viewed after its page last asked for its overview or logs
/// (the page asks every second while the tab is open).
pub(crate) const VIEWED_FOR: Epoch = 3.0;

/// Whether an instance's dashboard is asked this refresh (see [`STEADY_PROBE_INTERVAL`]).
fn probe_due(t: &Tracked, idle_default: Option<std::time::Duration>, now: Epoch) -> bool {
    let steady = t.last_ok.is_some()
        && t.silent_since.is_none()
        && t.inst.port.is_some()
        && t.launch_root.is_none()
        && t.inst.state.is_live();
    let viewed = t.viewed_at.is_some_and(|at| now - at < VIEWED_FOR);
    // An idle shutdown announced: its activity is looked at every refresh until then, so
    // that it is never shut down on an old look.
    let shutdown_near = t.inst.idle_shutdown_at.is_some();
    // An idle shutdown applies: its activity is looked at at least five times within the
    // shutdown's announcement (a fifth of the limit), so that one in use is never warned on
    // an old look.
    let limit = t
        .launcher
        .as_ref()
        .and_then(|l| l.idle_shutdown)
        .or(idle_default)
        .filter(|d| !d.is_zero());
    let every = limit.map_or(STEADY_PROBE_INTERVAL, |d| {
        STEADY_PROBE_INTERVAL.min(d.as_secs_f64() / 25.0)
    });
    !steady || viewed || shutdown_near || t.probed_at.is_none_or(|at| now - at >= every)
}

/// One instance's dashboard probe, as planned.
#[derive(Debug, PartialEq)]
pub(crate) struct ProbeJob {
    pub(crate) key: ProcessId,
    /// The TCP ports it listens on, its MCP port left out.
    pub(crate) ports: Vec<u16>,
    /// Its dashboard port as last known.
    pub(crate) known: Option<u16>,
    /// What the overview it has describes: fetched again once the active project changed.
    pub(crate) overview_for: OverviewFor,
}

/// What one probe found.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProbeResult {
    /// The dashboard port, if one was identified (answering or not).
    pub(crate) port: Option<u16>,
    pub(crate) status: Option<LogStatus>,
    pub(crate) overview: Option<ConfigSummary>,
}

/// Creates records for new instances, marks those that went, lists the probes to run. In
/// phases: what is seen (Serena processes, registry entries, tray-protocol registrations), what
/// went, which dashboards are due a probe, what their sockets show, the probes themselves.
pub(crate) fn plan(model: &mut Model, scan: &Scan, now: Epoch) -> Vec<ProbeJob> {
    let mut present: HashSet<ProcessId> = HashSet::new();
    let claimed = sight_serenas(model, scan, now, &mut present);
    sight_registry(model, scan, &claimed, now, &mut present);
    sight_registrations(model, scan, now, &mut present);
    mark_gone(model, &present);
    let due = due_probes(model, scan, &present, now);
    due.into_iter()
        .filter_map(|key| {
            let t = model.tracked.get_mut(&key)?;
            let ports = observe_ports(t, scan, now);
            Some(ProbeJob {
                key,
                ports,
                known: t.inst.port,
                overview_for: t.overview_for.clone(),
            })
        })
        .collect()
}

/// Every Serena process of the scan is present, recorded at first sight (with its registry
/// entry, if it has one). The registry entries so claimed, by index.
fn sight_serenas(
    model: &mut Model,
    scan: &Scan,
    now: Epoch,
    present: &mut HashSet<ProcessId>,
) -> HashSet<usize> {
    let mut claimed = HashSet::new();
    for (proc, args) in &scan.candidates {
        let key = proc.id();
        present.insert(key);
        let entry = scan
            .registry
            .iter()
            .enumerate()
            .find(|(_, e)| e.is_record_of(key, None));
        if let Some((i, _)) = entry {
            claimed.insert(i);
        }
        model.tracked.entry(key).or_insert_with(|| {
            let how = Sighting::Serena {
                args: args.clone(),
                entry: entry.map(|(_, e)| e),
            };
            first_sight(&scan.snap, proc, how, now)
        });
    }
    claimed
}

/// The registry entries no Serena process claimed: a live process recorded by someone (shown,
/// not a Serena command line), or a dead record.
fn sight_registry(
    model: &mut Model,
    scan: &Scan,
    claimed: &HashSet<usize>,
    now: Epoch,
    present: &mut HashSet<ProcessId>,
) {
    for (i, e) in scan.registry.iter().enumerate() {
        if claimed.contains(&i) {
            continue;
        }
        match scan.snap.get(e.pid) {
            // The recorded process lives on, but outside the scope: not ours to show.
            Some(proc) if e.is_record_of(proc.id(), None) && scan.visible(proc.pid).is_none() => {}
            Some(proc) if e.is_record_of(proc.id(), None) => {
                let key = proc.id();
                present.insert(key);
                model
                    .tracked
                    .entry(key)
                    .or_insert_with(|| first_sight(&scan.snap, proc, Sighting::InRegistry(e), now));
            }
            _ => {
                let key = ProcessId::of_record(e.pid, e.started_at);
                present.insert(key);
                model
                    .tracked
                    .entry(key)
                    .or_insert_with(|| dead_from_registry(e, now));
            }
        }
    }
}

/// Tray-protocol registrations: a registered Serena gets the registration's project as a
/// fallback; a registered PID that is not a Serena process is shown, never trusted. Sources
/// are recomputed each time (a registration or a session can end).
fn sight_registrations(
    model: &mut Model,
    scan: &Scan,
    now: Epoch,
    present: &mut HashSet<ProcessId>,
) {
    let Model {
        tracked,
        registrations,
        sessions,
        ..
    } = model;
    // A registration lasts while its very process does (not another that reused the PID).
    let registered =
        |r: &Registration| scan.visible(r.pid).filter(|p| p.start_time == r.start_time);
    registrations.retain(|_, r| registered(r).is_some());
    for t in tracked.values_mut() {
        t.registered = Registered::No;
        t.inst.source = t.base_source;
    }
    for r in registrations.values() {
        let Some(proc) = registered(r) else {
            continue;
        };
        let key = proc.id();
        present.insert(key);
        let t = tracked
            .entry(key)
            .or_insert_with(|| first_sight(&scan.snap, proc, Sighting::Registration(r), now));
        t.registered = Registered::Naming(r.project.clone());
        t.inst.source = t.inst.source.max(Source::TrayProtocol);
    }
    for (key, _) in sessions.iter() {
        if let Some(t) = tracked.get_mut(key) {
            t.inst.source = Source::Session;
        }
    }
}

/// Anything tracked but not present any more exited (or its entry was pruned).
fn mark_gone(model: &mut Model, present: &HashSet<ProcessId>) {
    for t in model.tracked.values_mut() {
        if !present.contains(&t.inst.process_id()) && t.alive {
            t.alive = false;
        }
    }
}

/// The instances whose dashboard is asked this refresh (see [`probe_due`]); each is marked
/// probed, or skipped. Probes go to live processes only: a record whose PID another process
/// holds now (its own registry entry kept it present) is not asked, and `apply` sees it gone.
fn due_probes(
    model: &mut Model,
    scan: &Scan,
    present: &HashSet<ProcessId>,
    now: Epoch,
) -> Vec<ProcessId> {
    let idle_default = model.idle_default;
    model
        .tracked
        .iter_mut()
        .filter(|(k, t)| t.alive && present.contains(k) && scan.snap.get_id(**k).is_some())
        .filter_map(|(k, t)| {
            t.probe_skipped = !probe_due(t, idle_default, now);
            if t.probe_skipped {
                return None;
            }
            t.probed_at = Some(now);
            Some(*k)
        })
        .collect()
}

/// What an instance's listening sockets show, noted on its record: whether its MCP port
/// listens (since when; alone, with no dashboard). The ports its dashboard may be on, its MCP
/// port left out.
fn observe_ports(t: &mut Tracked, scan: &Scan, now: Epoch) -> Vec<u16> {
    let mut ports: Vec<u16> = scan
        .ports
        .get(&t.inst.pid)
        .map(|s| s.iter().copied().collect())
        .unwrap_or_default();
    if let Some(mcp) = t.args.mcp_port {
        t.mcp_listening = ports.contains(&mcp);
        t.mcp_listening_since = if t.mcp_listening {
            t.mcp_listening_since.or(Some(now))
        } else {
            None
        };
        ports.retain(|p| *p != mcp);
        t.mcp_alone = t.mcp_listening && ports.is_empty();
    }
    ports
}
