//! Applying a refresh: folds the probes' answers and the process table into each record,
//! classifies, and says which events go out and what is written to the registry. A pure
//! function of the model, a [`Scan`], the answers, the time and the grace, unit-tested with
//! constructed scans. Deliberately not here: the state rules (`classify`) and the registry
//! file (`registry`).

use super::plan::ProbeResult;
use super::scan::Scan;
use super::tracked::{Model, OverviewFor, Registered, Tracked};
use crate::core::classify::{self, Observation};
use crate::core::events::Event;
use crate::core::model::{Epoch, Instance, ProcessId, Source, State, Transport, ZombieReason};
use crate::core::procs::Snapshot;
use crate::core::registry::{RegistryWrites, Upsert};
use crate::core::{cmdline, cost};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

/// How long a new instance without a dashboard port keeps the mapping fresh every refresh.
const NEW_INSTANCE_WINDOW: Epoch = 60.0;

/// What a refresh decided beyond the model itself: what goes out and what is written.
#[derive(Debug, Default)]
pub(crate) struct Decisions {
    /// What changed, in the order it is published.
    pub(crate) events: Vec<Event>,
    /// What the registry file learns.
    pub(crate) writes: RegistryWrites,
    /// Map sockets afresh at the next scan: a young instance has no dashboard yet, one is
    /// starting, or one stopped answering (its port may have moved).
    pub(crate) rescan: bool,
    /// Something is under way that the next rounds must see soon: an instance starting, or an
    /// idle shutdown to be announced or made (the refresh keeps its one-second pace).
    pub(crate) pending: bool,
}

/// Folds probe results into the model, classifies, and returns what follows. `idle_default`
/// is `idle_shutdown_minutes` (sessions and launchers may say otherwise).
pub(crate) fn apply(
    model: &mut Model,
    scan: &Scan,
    results: Vec<(ProcessId, ProbeResult)>,
    now: Epoch,
    grace: Duration,
    idle_default: Option<Duration>,
) -> Decisions {
    let mut events = Vec::new();
    let mut writes = RegistryWrites::default();
    let mut results: BTreeMap<ProcessId, ProbeResult> = results.into_iter().collect();

    let Model {
        tracked,
        launching,
        session_idle,
        ..
    } = model;
    tracked.retain(|&key, t| {
        if let Some(gone) = gone(t, key, scan) {
            events.push(Event::InstanceRemoved {
                pid: key.pid,
                started_at: t.inst.started_at,
            });
            if gone == Gone::Exited {
                writes.remove.push(key);
            }
            return false;
        }
        let before = t.inst.clone();
        fold_in(t, key, scan, results.remove(&key), launching, now);
        let (state, reason) = state_of(t, now, grace);
        if (state, reason) != (t.inst.state, t.inst.state_reason) {
            (t.inst.state, t.inst.state_reason, t.inst.state_since) = (state, reason, now);
        }
        let policy = session_idle
            .get(&key)
            .copied()
            .or_else(|| t.launcher.and_then(|l| l.idle_shutdown))
            .or(idle_default)
            .filter(|d| !d.is_zero());
        events.extend(news(t, &before, key, policy, now));
        writes.upsert.extend(upsert_for(t, key, scan));
        true
    });
    // A live instance's `started_at` is its process's start time: its age is in that frame.
    let age_now = scan.frame_now.unwrap_or(now);
    let rescan = tracked.values().any(|t| {
        t.alive
            && (t.silent_since.is_some()
                || t.inst.state == State::Starting
                || (t.inst.port.is_none() && age_now - t.inst.started_at < NEW_INSTANCE_WINDOW))
    });
    let pending = tracked
        .values()
        .any(|t| t.inst.state == State::Starting || t.idle_next.is_some());
    Decisions {
        events,
        writes,
        rescan,
        pending,
    }
}

/// Folds what this refresh learnt of a present instance into its record: its probe's answer
/// (none for a steady instance not asked this time: its dashboard as last seen), its process
/// and clients, its cost, and the session launch it belongs to (the launched process itself,
/// or one running under it).
fn fold_in(
    t: &mut Tracked,
    key: ProcessId,
    scan: &Scan,
    result: Option<ProbeResult>,
    launching: &HashSet<ProcessId>,
    now: Epoch,
) {
    if t.alive {
        match result {
            Some(result) => fold_probe(t, result, now),
            None if t.probe_skipped => {}
            None => fold_probe(t, ProbeResult::default(), now),
        }
        observe(t, &scan.snap, now);
    }
    t.inst.cost = if t.alive {
        scan.costs.get(&key.pid).cloned()
    } else {
        None
    };
    t.launch_root = launching
        .iter()
        .copied()
        .find(|root| *root == key || scan.snap.has_ancestor(key.pid, *root));
}

/// What goes out about an instance after this refresh: what changed since `before`, its idle
/// warning or shutdown under `policy`. Every event carries the cost; without one, a cost that
/// moved is news of its own.
fn news(
    t: &mut Tracked,
    before: &Instance,
    key: ProcessId,
    policy: Option<Duration>,
    now: Epoch,
) -> Vec<Event> {
    let idle_event = idle(t, policy, now);
    let shown = match (event_for(before, &t.inst, now), &idle_event) {
        // The idle event carries the instance as it is now.
        (Some(Event::InstanceUpdated { .. }), Some(_)) => None,
        (e, _) => e,
    };
    let told: Vec<Event> = shown.into_iter().chain(idle_event).collect();
    if !told.is_empty() {
        t.cost_told = t.inst.cost.clone();
        return told;
    }
    if cost::moved(t.cost_told.as_ref(), t.inst.cost.as_ref()) {
        t.cost_told = t.inst.cost.clone();
        return vec![Event::CostChanged {
            pid: key.pid,
            started_at: t.inst.started_at,
            cost: t.inst.cost.clone(),
        }];
    }
    Vec::new()
}

/// How long before its idle shutdown an instance is announced: a fifth of its idle time, at
/// most five minutes.
fn idle_lead(after: Duration) -> f64 {
    (after.as_secs_f64() / 5.0).min(300.0)
}

/// Idle shutdown of a live instance under `policy`: idle since its last activity (or since it
/// was first seen), announced once when its shutdown nears (`idle_warning`), shut down once
/// that moment comes (`idle_shutdown`: the running dashboard acts on it). The instance shows
/// `idle_since` and `idle_shutdown_at` from the announcement on; activity clears them.
fn idle(t: &mut Tracked, policy: Option<Duration>, now: Epoch) -> Option<Event> {
    let clear = |t: &mut Tracked| {
        t.inst.idle_since = None;
        t.inst.idle_shutdown_at = None;
        t.idle_next = None;
    };
    let Some(after) =
        policy.filter(|_| t.alive && t.inst.verified_serena && t.inst.state.is_live())
    else {
        clear(t);
        return None;
    };
    let since = t.inst.last_activity.unwrap_or(t.inst.first_seen);
    let at = since + after.as_secs_f64();
    let announce = at - idle_lead(after);
    if now < announce {
        clear(t);
        t.idle_next = Some(announce);
        return None;
    }
    t.inst.idle_since = Some(since);
    t.inst.idle_shutdown_at = Some(at);
    t.idle_next = (now < at).then_some(at);
    let instance = t.inst.clone();
    if now >= at {
        (t.idle_expired != Some(since)).then(|| {
            t.idle_expired = Some(since);
            Event::IdleShutdown { instance }
        })
    } else {
        (t.idle_warned != Some(since)).then(|| {
            t.idle_warned = Some(since);
            Event::IdleWarning { instance }
        })
    }
}

/// Why a record leaves the model.
#[derive(Debug, PartialEq)]
enum Gone {
    /// Seen alive before, gone now: it ended (its entry goes too).
    Exited,
    /// A dead record someone pruned from the registry.
    Pruned,
}

fn gone(t: &Tracked, key: ProcessId, scan: &Scan) -> Option<Gone> {
    let present = t.alive && scan.snap.get_id(key).is_some();
    if !present && t.registry_started_at.is_none() {
        return Some(Gone::Exited);
    }
    let recorded = || {
        scan.registry
            .iter()
            .any(|e| e.is_record_of(key, t.registry_started_at))
    };
    (!t.alive && !recorded()).then_some(Gone::Pruned)
}

/// The state and reason of a record as observed. A session being launched is `starting` until
/// its dashboard answers and its MCP endpoint listens: the moment it turns live is the event
/// its launcher waits for.
/// How long a launched Serena's MCP server listens with no dashboard found before it counts as
/// running without one.
const NO_DASHBOARD_AFTER: Epoch = 3.0;

fn state_of(t: &Tracked, now: Epoch, grace: Duration) -> (State, Option<ZombieReason>) {
    let obs = Observation {
        alive: t.alive,
        orphaned_since: t.orphaned_since,
        silent_since: t.silent_since,
        has_project: t.inst.project_name.is_some(),
    };
    let (state, reason) = classify::classify(&obs, now, grace);
    let ready = match t.args.mcp_port {
        None => t.last_ok.is_some(),
        // Serena starts its dashboard before its MCP server: one whose MCP server has listened
        // a while with no other socket lost the dashboard port race (it runs without one, as
        // Serena does) and is ready all the same. One with another socket waits for it to
        // answer (a dashboard slow to answer on a busy machine is not a lost race).
        Some(_) => {
            t.mcp_listening
                && (t.last_ok.is_some()
                    || (t.mcp_alone
                        && t.mcp_listening_since
                            .is_some_and(|since| now - since >= NO_DASHBOARD_AFTER)))
        }
    };
    if t.launch_root.is_some() && state.is_live() && !ready {
        return (State::Starting, reason);
    }
    (state, reason)
}

/// The event a record's change makes, if any: added when first seen this refresh, else a
/// state change, else a change of what is shown.
fn event_for(before: &Instance, after: &Instance, now: Epoch) -> Option<Event> {
    if after.first_seen == now {
        Some(Event::InstanceAdded {
            instance: after.clone(),
        })
    } else if (after.state, after.state_reason) != (before.state, before.state_reason) {
        Some(Event::StateChanged {
            pid: after.pid,
            from: before.state,
            to: after.state,
            reason: after.state_reason,
            instance: after.clone(),
        })
    } else if !same_shown(before, after) {
        Some(Event::InstanceUpdated {
            instance: after.clone(),
        })
    } else {
        None
    }
}

/// What the registry learns of a record; nothing for an unverified registration, which is
/// shown but never written to the shared file.
fn upsert_for(t: &Tracked, key: ProcessId, scan: &Scan) -> Option<Upsert> {
    if t.base_source == Source::TrayProtocol && !t.inst.verified_serena {
        return None;
    }
    Some(Upsert {
        key,
        known: scan
            .registry
            .iter()
            .any(|e| e.is_record_of(key, t.registry_started_at)),
        exact_started_at: t.registry_started_at,
        inst: t.inst.clone(),
    })
}

/// Folds one probe result into a live instance's record.
fn fold_probe(t: &mut Tracked, result: ProbeResult, now: Epoch) {
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
        t.inst.project_name = match &t.registered {
            Registered::Naming(p) => p.clone(),
            Registered::No => t
                .args
                .project
                .as_deref()
                .map(cmdline::project_name_from_arg),
        };
    }
    t.inst.last_heartbeat = t.last_ok;
    if let (Some(ov), Some(status)) = (result.overview, &result.status) {
        t.overview_for = OverviewFor::Project(status.active_project.clone());
        t.overview = Some(ov);
    }
}

/// Folds the process table (and what the dashboard said) into a live instance's record: its
/// project path, context and modes, and whether its client is gone.
fn observe(t: &mut Tracked, snap: &Snapshot, now: Epoch) {
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
            // Joined component by component, so that the separators are the platform's.
            Some(cwd) if Path::new(arg).is_relative() => Path::new(&cwd)
                .join(arg)
                .components()
                .collect::<std::path::PathBuf>()
                .display()
                .to_string(),
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
    if t.inst.transport == Transport::Stdio && t.orphaned_since.is_none() {
        if let Some(c) = &t.client {
            let parent_now = snap.get(t.inst.pid).and_then(|p| p.ppid);
            let client_alive = snap.get_id(c.id()).is_some();
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
        && a.idle_shutdown_at == b.idle_shutdown_at
}
