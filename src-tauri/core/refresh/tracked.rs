//! What the refresh remembers between looks: every instance it tracks with the bookkeeping
//! behind its state, the tray-protocol registrations, and the sessions' marks; and how a record
//! starts, at first sight of a process or from a dead registry entry. Plain data, no I/O.

use crate::core::classify::ALREADY;
use crate::core::cmdline::{self, SerenaArgs};
use crate::core::engine::Registration;
use crate::core::model::{
    ClientInfo, Epoch, Instance, ProcessId, Source, State, Transport, ZombieReason,
};
use crate::core::probe::ConfigSummary;
use crate::core::procs::{Proc, Snapshot};
use crate::core::registry::RegistryEntry;
use std::collections::{BTreeMap, HashMap, HashSet};

#[derive(Default)]
pub(crate) struct Model {
    pub(crate) tracked: BTreeMap<ProcessId, Tracked>,
    /// What instances told us over Serena's tray protocol, by dashboard port.
    pub(crate) registrations: BTreeMap<u16, Registration>,
    /// Instances this program launched (sessions), with their session IDs.
    pub(crate) sessions: HashMap<ProcessId, String>,
    /// Sessions being launched that do not answer yet (state `starting`).
    pub(crate) launching: HashSet<ProcessId>,
}

/// One instance and the bookkeeping behind its state.
pub(crate) struct Tracked {
    pub(crate) inst: Instance,
    pub(crate) args: SerenaArgs,
    pub(crate) client: Option<ClientInfo>,
    pub(crate) alive: bool,
    /// For entries known only from the registry: their exact `started_at` there.
    pub(crate) registry_started_at: Option<Epoch>,
    pub(crate) orphaned_since: Option<Epoch>,
    pub(crate) last_ok: Option<Epoch>,
    pub(crate) silent_since: Option<Epoch>,
    pub(crate) log_max_idx: Option<i64>,
    pub(crate) overview: Option<ConfigSummary>,
    /// The active project the overview was fetched for.
    pub(crate) overview_for: Option<Option<String>>,
    /// The project its tray-protocol registration names, if it registered.
    pub(crate) registered_project: Option<Option<String>>,
    /// Where it was first learnt of (the shown source adds registrations and sessions).
    pub(crate) base_source: Source,
    /// Whether its MCP port (HTTP transports) was seen listening at the last scan.
    pub(crate) mcp_listening: bool,
    /// The process a session launch started, when this instance is it or runs under it.
    pub(crate) launch_root: Option<ProcessId>,
}

/// A record for an instance seen for the first time.
pub(crate) fn first_sight(
    snap: &Snapshot,
    proc: &Proc,
    args: SerenaArgs,
    source: Source,
    verified: bool,
    entry: Option<&RegistryEntry>,
    now: Epoch,
) -> Tracked {
    let stdio = args.transport == Transport::Stdio;
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
        mcp_listening: false,
        launch_root: None,
    }
}

/// A record for a registry entry whose process is gone (or whose PID now names another process).
pub(crate) fn dead_from_registry(e: &RegistryEntry, now: Epoch) -> Tracked {
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
        mcp_listening: false,
        launch_root: None,
    }
}
