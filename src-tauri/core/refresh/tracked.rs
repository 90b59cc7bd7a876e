//! What the refresh remembers between looks: every instance it tracks with the bookkeeping
//! behind its state, the tray-protocol registrations, and the sessions' marks; and how a record
//! starts, at first sight of a process or from a dead registry entry. Plain data, no I/O.

use crate::core::classify::BEFORE_FIRST_LOOK;
use crate::core::clock::{shift, shift_opt, Reading, StepWatch};
use crate::core::cmdline::{self, LauncherArgs, SerenaArgs};
use crate::core::model::{
    ClientInfo, Cost, Epoch, Instance, ProcessId, Registration, Source, State, Transport,
    ZombieReason,
};
use crate::core::probe::ConfigSummary;
use crate::core::procs::{Proc, Snapshot};
use crate::core::registry::RegistryEntry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

/// Everything the refresh tracks, keyed by process identity.
#[derive(Default)]
pub(crate) struct Model {
    pub(crate) tracked: BTreeMap<ProcessId, Tracked>,
    /// The idle shutdown setting (every instance's unless its own says otherwise): a steady
    /// dashboard is asked often enough for it (see `plan`).
    pub(crate) idle_default: Option<std::time::Duration>,
    /// What instances told us over Serena's tray protocol, by dashboard port.
    pub(crate) registrations: BTreeMap<u16, Registration>,
    /// Instances this program launched (sessions), with their session IDs.
    pub(crate) sessions: HashMap<ProcessId, String>,
    /// Sessions being launched that do not answer yet (state `starting`).
    pub(crate) launching: HashSet<ProcessId>,
    /// Sessions' own idle shutdown (zero: never), over the launcher's and the default.
    pub(crate) session_idle: HashMap<ProcessId, Duration>,
    /// The wall clock's steps since the last refresh (see [`Model::look`]).
    pub(crate) clock: StepWatch,
}

impl Model {
    /// Looks at the clocks, as read in `r`, for a refresh: after a step of the wall clock since
    /// the last look, every stamp of this program's own moves by the step (see `clock`), so that
    /// what remains of each grace and idle time is what the monotonic clock says. Returns now
    /// and the step (0: none).
    pub(crate) fn look(&mut self, r: Reading) -> (Epoch, Epoch) {
        let step = self.clock.look(r);
        if step != 0.0 {
            self.tracked.values_mut().for_each(|t| t.shift(step));
        }
        (r.wall, step)
    }

    /// Drops every trace of an instance (after a kill, or a pruned record). Returns the
    /// `started_at` of its registry entry if it was known only from there.
    pub(crate) fn forget(&mut self, key: ProcessId) -> Option<Epoch> {
        let exact = self
            .tracked
            .remove(&key)
            .and_then(|t| t.registry_started_at);
        self.sessions.remove(&key);
        self.launching.remove(&key);
        self.session_idle.remove(&key);
        self.registrations.retain(|_, r| r.pid != key.pid);
        exact
    }
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
    pub(crate) overview_for: OverviewFor,
    pub(crate) registered: Registered,
    /// Where it was first learnt of (the shown source adds registrations and sessions).
    pub(crate) base_source: Source,
    /// Whether its MCP port (HTTP transports) was seen listening at the last scan.
    pub(crate) mcp_listening: bool,
    /// Since when it has (as of the scans).
    pub(crate) mcp_listening_since: Option<Epoch>,
    /// Whether its MCP port was the only port it listened on at the last scan (no dashboard
    /// among its sockets, answering or not).
    pub(crate) mcp_alone: bool,
    /// The process a session launch started, when this instance is it or runs under it.
    pub(crate) launch_root: Option<ProcessId>,
    /// The cost last published in an event (the page shows that one).
    pub(crate) cost_told: Option<Cost>,
    /// The `serena-tray launch` it runs under (its parent), if it does.
    pub(crate) launcher: Option<cmdline::LauncherArgs>,
    /// The idle stretch (by its start) already announced, and the one already shut down.
    pub(crate) idle_warned: Option<Epoch>,
    pub(crate) idle_expired: Option<Epoch>,
    /// When its dashboard was last asked (planned), and whether this refresh left it out (a
    /// steady instance is asked every [`super::plan::STEADY_PROBE_INTERVAL`]).
    pub(crate) probed_at: Option<Epoch>,
    pub(crate) probe_skipped: bool,
    /// When its page was last open somewhere (its overview or logs asked for): while it is,
    /// its dashboard is asked every refresh.
    pub(crate) viewed_at: Option<Epoch>,
    /// When its idle shutdown is next to be looked at (its announcement, then the shutdown):
    /// the refresh loop runs then, however quiet it is.
    pub(crate) idle_next: Option<Epoch>,
}

/// Which active project the overview an instance's record holds was fetched for.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) enum OverviewFor {
    /// None fetched yet.
    #[default]
    Unfetched,
    /// Fetched while this project was active (`None`: no project was).
    Project(Option<String>),
}

impl OverviewFor {
    /// Whether the overview still describes an instance whose active project is `active`.
    pub(crate) fn is_current(&self, active: &Option<String>) -> bool {
        matches!(self, OverviewFor::Project(p) if p == active)
    }
}

/// Whether an instance registered over Serena's tray protocol (as of the last plan).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) enum Registered {
    #[default]
    No,
    /// Registered; its registration names this project (`None`: no active project).
    Naming(Option<String>),
}

/// How a live process came to be tracked.
pub(crate) enum Sighting<'a> {
    /// Its command line is Serena's; `entry` is the registry entry that names it, if any.
    Serena {
        args: SerenaArgs,
        entry: Option<&'a RegistryEntry>,
    },
    /// Not a Serena command line, but someone recorded it in the registry: shown, probed on
    /// its recorded port, never trusted for killing.
    InRegistry(&'a RegistryEntry),
    /// Not a Serena command line, but it registered over the tray protocol: shown, never
    /// trusted for killing.
    Registration(&'a Registration),
}

impl Sighting<'_> {
    fn source(&self) -> Source {
        match self {
            Sighting::Serena { .. } => Source::Discovery,
            Sighting::InRegistry(_) => Source::Registry,
            Sighting::Registration(_) => Source::TrayProtocol,
        }
    }

    /// The dashboard port it is known by before any probe.
    fn port(&self) -> Option<u16> {
        match self {
            Sighting::Serena { .. } => None,
            Sighting::InRegistry(e) => e.port,
            Sighting::Registration(r) => Some(r.port),
        }
    }

    /// The project it is shown with before its dashboard answers.
    fn project(&self) -> Option<String> {
        match self {
            Sighting::Serena { args, .. } => {
                args.project.as_deref().map(cmdline::project_name_from_arg)
            }
            Sighting::InRegistry(e) => e.project_name.clone(),
            Sighting::Registration(r) => r.project.clone(),
        }
    }

    /// What the registry remembers of its dashboard's last answer.
    fn last_heartbeat(&self) -> Option<Epoch> {
        match self {
            Sighting::Serena { entry, .. } => entry.map(|e| e.last_heartbeat),
            Sighting::InRegistry(e) => Some(e.last_heartbeat),
            Sighting::Registration(_) => None,
        }
        .filter(|t| *t > 0.0)
    }
}

/// The clients of a process as first seen: its parent (whose exit orphans it), none when an
/// adopter (init, a subreaper) is its parent; the one to show (under `serena-tray launch`, the
/// launcher's own parent); and the launcher's options, if it runs under one.
fn clients_of(
    snap: &Snapshot,
    proc: &Proc,
    adopted: bool,
) -> (Option<ClientInfo>, Option<ClientInfo>, Option<LauncherArgs>) {
    let info = |c: &Proc| ClientInfo {
        pid: c.pid,
        name: c.name.clone(),
        start_time: c.start_time,
    };
    let parent = if adopted {
        None
    } else {
        proc.ppid.and_then(|pp| snap.get(pp))
    };
    let client = parent.map(info);
    let launcher = parent.and_then(|p| cmdline::launcher_args(&p.cmdline));
    let shown = match launcher {
        Some(_) => parent
            .and_then(|p| p.ppid)
            .and_then(|pp| snap.get(pp))
            .filter(|c| !snap.parent_is_adopter(parent.unwrap_or(c)))
            .map(info),
        None => client.clone(),
    };
    (client, shown, launcher)
}

/// A record for a live process seen for the first time.
pub(crate) fn first_sight(snap: &Snapshot, proc: &Proc, how: Sighting, now: Epoch) -> Tracked {
    let (source, port, project_name) = (how.source(), how.port(), how.project());
    let last_heartbeat = how.last_heartbeat();
    // Only a Serena command line is trusted: registrations are information, never authority.
    let verified = source == Source::Discovery;
    let args = match how {
        Sighting::Serena { args, .. } => args,
        _ => SerenaArgs::default(),
    };
    let stdio = args.transport == Transport::Stdio;
    let adopted = snap.parent_is_adopter(proc);
    let (client, shown_client, launcher) = clients_of(snap, proc, adopted);
    let source = if launcher.is_some() && source == Source::Discovery {
        Source::Launch
    } else {
        source
    };
    let inst = Instance {
        pid: proc.pid,
        state: State::LiveNoProject,
        state_reason: None,
        port,
        project_name,
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
        client_pid: shown_client.as_ref().map(|c| c.pid),
        client_name: shown_client.as_ref().map(|c| c.name.clone()),
        source,
        cmdline: proc.cmdline.clone(),
        first_seen: now,
        last_heartbeat: None,
        last_activity: None,
        idle_since: None,
        idle_shutdown_at: None,
        state_since: now,
        verified_serena: verified,
        cost: None,
    };
    Tracked {
        // Already orphaned when first seen: a zombie at once, no grace.
        orphaned_since: (stdio && verified && adopted).then_some(BEFORE_FIRST_LOOK),
        // What the registry remembers of its last answer counts towards "unresponsive".
        last_ok: last_heartbeat,
        launcher,
        ..Tracked::fresh(inst, args, client)
    }
}

impl Tracked {
    /// Moves its own stamps by a step of the wall clock (see [`Model::look`]); the process's
    /// start time and what the registry holds are others' wall times and stay.
    fn shift(&mut self, step: Epoch) {
        let i = &mut self.inst;
        shift(&mut i.first_seen, step);
        shift(&mut i.state_since, step);
        for s in [
            &mut i.last_heartbeat,
            &mut i.last_activity,
            &mut i.idle_since,
            &mut i.idle_shutdown_at,
            &mut self.orphaned_since,
            &mut self.last_ok,
            &mut self.silent_since,
            &mut self.mcp_listening_since,
            &mut self.idle_warned,
            &mut self.idle_expired,
            &mut self.probed_at,
            &mut self.viewed_at,
            &mut self.idle_next,
        ] {
            shift_opt(s, step);
        }
    }

    /// A live record with nothing learnt yet beyond its instance, its options and its client.
    fn fresh(inst: Instance, args: SerenaArgs, client: Option<ClientInfo>) -> Tracked {
        Tracked {
            base_source: inst.source,
            inst,
            args,
            client,
            alive: true,
            registry_started_at: None,
            orphaned_since: None,
            last_ok: None,
            silent_since: None,
            log_max_idx: None,
            overview: None,
            overview_for: OverviewFor::Unfetched,
            registered: Registered::No,
            mcp_listening: false,
            mcp_listening_since: None,
            mcp_alone: false,
            launch_root: None,
            cost_told: None,
            launcher: None,
            idle_warned: None,
            idle_expired: None,
            probed_at: None,
            probe_skipped: false,
            viewed_at: None,
            idle_next: None,
        }
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
        idle_since: None,
        idle_shutdown_at: None,
        state_since: now,
        verified_serena: false,
        cost: None,
    };
    Tracked {
        alive: false,
        registry_started_at: Some(e.started_at),
        ..Tracked::fresh(inst, SerenaArgs::default(), None)
    }
}
