//! The instance model: what one Serena MCP server is, how it is identified and which state it is
//! in. Plain data with serde, no I/O. Deliberately not here: how the data is gathered
//! (`refresh`, `procs`, `probe`) and how states are decided (`classify`).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, as a float (the registry's unit for times).
pub type Epoch = f64;

/// Now as [`Epoch`].
pub fn now() -> Epoch {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `m` minutes as a duration, if `m` is a finite number >= 0.
pub fn minutes(m: f64) -> Option<std::time::Duration> {
    (m.is_finite() && m >= 0.0)
        .then(|| std::time::Duration::try_from_secs_f64(m * 60.0).ok())
        .flatten()
}

/// Locks a std mutex of the core (never held across an `.await`).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; carry on with it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A process identity: a PID alone is not enough, because PIDs are reused. Two processes with the
/// same PID and different start times are different processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProcessId {
    pub pid: u32,
    /// Process start time, whole seconds since the epoch, as the OS reports it.
    pub start_time: u64,
}

impl ProcessId {
    /// The identity a record names by PID and `started_at` (epoch seconds, as the registry and
    /// [`Instance`] hold it): the whole seconds, an unknown or negative time as 0. It is the key
    /// of every instance, live or a dead registry record.
    pub fn of_record(pid: u32, started_at: Epoch) -> ProcessId {
        ProcessId {
            pid,
            start_time: started_at.max(0.0) as u64,
        }
    }
}

impl fmt::Display for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.pid, self.start_time)
    }
}

/// How far a recorded `started_at` may lie *before* the process start time and still name the
/// same process. Writers record `started_at` at or after exec (Serena itself records it once it
/// has started), so a process that started later than this is a reused PID.
pub const START_TIME_TOLERANCE_SECS: f64 = 2.0;

/// Whether a registry record (`pid`, `started_at`) can describe the process that now holds `pid`.
/// An unknown `started_at` cannot be checked and is taken as matching.
pub fn same_process(recorded_started_at: Option<Epoch>, process_start: u64) -> bool {
    match recorded_started_at {
        Some(t) if t > 0.0 => (process_start as f64) <= t + START_TIME_TOLERANCE_SECS,
        _ => true,
    }
}

/// The colour-coded state of an instance (see DESIGN "Instance model and states").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// A session being launched that does not answer yet (grey).
    Starting,
    /// Alive, not orphaned, active project known (green).
    LiveWithProject,
    /// Alive, not orphaned, no active project (yellow).
    LiveNoProject,
    /// Red: see [`ZombieReason`].
    Zombie,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::LiveWithProject => "live_with_project",
            State::LiveNoProject => "live_no_project",
            State::Zombie => "zombie",
        }
    }

    /// The colour word the UI and the CLI show.
    pub fn colour(self) -> &'static str {
        match self {
            State::Starting => "grey",
            State::LiveWithProject => "green",
            State::LiveNoProject => "yellow",
            State::Zombie => "red",
        }
    }

    pub fn is_live(self) -> bool {
        matches!(self, State::LiveWithProject | State::LiveNoProject)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an instance is a zombie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ZombieReason {
    /// A stdio instance whose client (parent) is gone.
    Orphaned,
    /// Its dashboard stopped answering for longer than the grace.
    Unresponsive,
    /// Registered, but its process is gone (or its PID now belongs to another process).
    Dead,
}

impl ZombieReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ZombieReason::Orphaned => "orphaned",
            ZombieReason::Unresponsive => "unresponsive",
            ZombieReason::Dead => "dead",
        }
    }
}

impl fmt::Display for ZombieReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The MCP transport the instance serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    #[default]
    Stdio,
    Sse,
    StreamableHttp,
}

impl Transport {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "stdio" => Some(Transport::Stdio),
            "sse" => Some(Transport::Sse),
            "streamable-http" => Some(Transport::StreamableHttp),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Stdio => "stdio",
            Transport::Sse => "sse",
            Transport::StreamableHttp => "streamable-http",
        }
    }

    /// The path of the MCP endpoint on the MCP port, for HTTP transports.
    pub fn endpoint_path(self) -> Option<&'static str> {
        match self {
            Transport::Stdio => None,
            Transport::Sse => Some("/sse"),
            Transport::StreamableHttp => Some("/mcp"),
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where this program learnt of the instance. When several apply, the most specific wins
/// (session > launch > tray protocol > discovery > registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Registry,
    Discovery,
    TrayProtocol,
    /// Started by `serena-tray launch` (its client is the launcher's parent).
    Launch,
    Session,
}

/// The MCP client that started an instance, as seen the first time the instance was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    pub pid: u32,
    pub name: String,
    pub start_time: u64,
}

impl ClientInfo {
    pub fn id(&self) -> ProcessId {
        ProcessId {
            pid: self.pid,
            start_time: self.start_time,
        }
    }
}

/// Everything known about one Serena instance. This is also the JSON shape of `list --json` and of
/// the HTTP API (field names are a documented contract).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub pid: u32,
    pub state: State,
    pub state_reason: Option<ZombieReason>,
    /// Dashboard port (the one that answers `/heartbeat`), `None` if it has none.
    pub port: Option<u16>,
    pub project_name: Option<String>,
    pub project_path: Option<String>,
    pub context: Option<String>,
    pub modes: Vec<String>,
    pub transport: Transport,
    pub mcp_port: Option<u16>,
    pub mcp_url: Option<String>,
    /// Process start time (epoch seconds).
    pub started_at: Epoch,
    pub client_pid: Option<u32>,
    pub client_name: Option<String>,
    pub source: Source,
    pub cmdline: Vec<String>,
    pub first_seen: Epoch,
    /// Last time the dashboard answered.
    pub last_heartbeat: Option<Epoch>,
    /// Last time the instance's log index moved (it did something).
    pub last_activity: Option<Epoch>,
    /// Under idle shutdown, once its shutdown nears: since when it has been idle ...
    #[serde(default)]
    pub idle_since: Option<Epoch>,
    /// ... and when it is shut down unless it does something first.
    #[serde(default)]
    pub idle_shutdown_at: Option<Epoch>,
    /// Since when the instance has been in its current state.
    pub state_since: Epoch,
    /// False when the PID was only registered (registry, tray protocol) and its command line does
    /// not look like Serena: shown, never killed.
    pub verified_serena: bool,
    /// What its whole process tree costs, as of the last refresh; `None` before the first
    /// measurement and for a process that is gone.
    #[serde(default)]
    pub cost: Option<Cost>,
}

/// What an instance's process tree (Serena, its language servers and their descendants) costs.
/// JSON: `{"memory_bytes", "cpu_percent", "process_count", "processes": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// Resident memory of the whole tree (the sum of each process's RSS), in bytes.
    pub memory_bytes: u64,
    /// CPU of the whole tree over the last refresh interval (at the first look at a process:
    /// its average since it started); 100 is one core (may exceed 100).
    pub cpu_percent: f64,
    /// Processes in the tree, the root included.
    pub process_count: u32,
    /// The root first, then its descendants, the most memory first.
    pub processes: Vec<ProcessCost>,
}

/// One process of an instance's tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessCost {
    pub pid: u32,
    pub ppid: Option<u32>,
    /// What it is: the script or program it runs (`jedi-language-server`, not `python3`).
    pub name: String,
    pub memory_bytes: u64,
    pub cpu_percent: f64,
}

impl Instance {
    /// Its identity, the key it is tracked under (see [`ProcessId::of_record`]).
    pub fn process_id(&self) -> ProcessId {
        ProcessId::of_record(self.pid, self.started_at)
    }

    /// The tab label the UI shows: `<pid> - <PROJECT>` or `<pid> - NO PROJECT`.
    pub fn label(&self) -> String {
        match &self.project_name {
            Some(p) => format!("{} - {}", self.pid, p),
            None => format!("{} - NO PROJECT", self.pid),
        }
    }
}

/// An instance for unit tests: a live stdio Serena with a project (or without, `None`), seen
/// and started at 1000 s, no cost; tests change what they look at.
/// How the root (the Serena process itself) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It exited after `PUT /shutdown`, without a signal.
    ShutDown,
    /// It needed SIGTERM.
    Terminated,
    /// It needed SIGKILL (or, on Windows, the hard kill that stands in for SIGTERM).
    Killed,
    /// It was gone before the reaper did anything to it: no such process, its PID held by
    /// another process (different start time), or it exited by itself before its signal.
    AlreadyGone,
}

impl Outcome {
    /// Its word in JSON and in the CLI's output.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::ShutDown => "shut_down",
            Outcome::Terminated => "terminated",
            Outcome::Killed => "killed",
            Outcome::AlreadyGone => "already_gone",
        }
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

/// One launched session, as persisted and as returned. `Default` is for building one with the
/// struct update syntax (a default session is no session: no process, no URL).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub session_id: String,
    pub host: String,
    /// The MCP port.
    pub port: u16,
    pub url: String,
    pub pid: u32,
    /// Process start time (identity), epoch seconds.
    pub start_time: u64,
    pub dashboard_url: Option<String>,
    pub dashboard_port: Option<u16>,
    pub project_path: String,
    pub context: Option<String>,
    pub modes: Vec<String>,
    pub transport: Transport,
    pub created_at: Epoch,
    pub log_path: String,
    /// Set once it ended (released, or its Serena exited): the ID then answers `already_gone`,
    /// never "unknown", while it is in the history.
    #[serde(
        default,
        alias = "released_at",
        skip_serializing_if = "Option::is_none"
    )]
    pub ended_at: Option<Epoch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<EndReason>,
    /// Its lease, if it has one: renewed (`POST /api/sessions/{id}/renew`) by this many
    /// seconds, released at `expires_at` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Epoch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_shutdown_minutes: Option<f64>,
    /// A shared session (`shared` on the request that created it): its clients attach
    /// (`launch --share`), and it is released `share_linger_seconds` after the last detaches.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
    /// The clients attached to a shared session now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attached: Vec<Attachment>,
    /// When a shared session with no client left is released, unless one attaches first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linger_until: Option<Epoch>,
    /// Created by a bridge that starts Serena on its clients' first call (`share_on_demand`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub on_demand: bool,
    /// A shared session with clients and no call for this many minutes is put to sleep
    /// (`share_sleep_minutes`; none or 0: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sleep_minutes: Option<f64>,
    /// The last call of a client, as its bridge reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<Epoch>,
    /// Set while the session has no Serena (asleep): `pid`, `start_time` and `port` are 0 and
    /// `url` is empty until a call wakes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asleep_since: Option<Epoch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asleep_reason: Option<AsleepReason>,
    /// The memory of the Serena tree put to sleep, as last measured (what sleeping gives back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_back_bytes: Option<u64>,
}

/// Why a shared session has no Serena.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AsleepReason {
    /// Started on demand: none of its clients has called a tool yet.
    NotStarted,
    /// Its clients made no call for `sleep_minutes`.
    Unused,
}

/// One client of a shared session: the `launch --share` process that holds the attachment
/// (watched: its exit detaches it) and the MCP client it serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    pub pid: u32,
    pub start_time: u64,
    pub client_pid: Option<u32>,
    pub client_name: Option<String>,
    pub since: Epoch,
    /// A call of this client is in flight (the session does not sleep under it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub busy: bool,
}

impl Attachment {
    pub(crate) fn process_id(&self) -> ProcessId {
        ProcessId {
            pid: self.pid,
            start_time: self.start_time,
        }
    }
}

/// What a session started on demand is for, and where its Serena will log.
pub(crate) struct SessionKey {
    pub project: String,
    pub context: Option<String>,
    pub modes: Vec<String>,
    pub transport: Transport,
    pub sleep_minutes: Option<f64>,
    pub log: String,
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Released through the API.
    Released,
    /// Its Serena exited (or was killed) by other means.
    Exited,
    /// Its lease ran out.
    LeaseExpired,
    /// A shared session whose last client left `share_linger_seconds` before.
    Unattached,
}

impl Session {
    pub(crate) fn is_active(&self) -> bool {
        self.ended_at.is_none()
    }

    /// The session, ended at `at` for `reason`.
    pub(crate) fn ended(self, reason: EndReason, at: Epoch) -> Session {
        Session {
            ended_at: Some(at),
            end_reason: Some(reason),
            ..self
        }
    }

    pub(crate) fn process_id(&self) -> ProcessId {
        ProcessId {
            pid: self.pid,
            start_time: self.start_time,
        }
    }

    /// Active, with no Serena: started on demand and not called yet, or put to sleep.
    pub(crate) fn is_asleep(&self) -> bool {
        self.is_active() && self.asleep_since.is_some()
    }

    /// Active with a Serena running (as far as the record goes).
    pub(crate) fn is_awake(&self) -> bool {
        self.is_active() && self.asleep_since.is_none()
    }

    /// The session with no Serena since `at`, for `reason`; `given_back` is what its tree cost.
    pub(crate) fn asleep(self, reason: AsleepReason, at: Epoch, given_back: Option<u64>) -> Self {
        Session {
            pid: 0,
            start_time: 0,
            port: 0,
            url: String::new(),
            dashboard_url: None,
            dashboard_port: None,
            asleep_since: Some(at),
            asleep_reason: Some(reason),
            given_back_bytes: given_back,
            ..self
        }
    }

    /// A new session on demand: asleep until its first call, lingering until a client
    /// attaches.
    pub(crate) fn on_demand(session_id: String, key: SessionKey, at: Epoch, linger: f64) -> Self {
        Session {
            session_id,
            host: "127.0.0.1".into(),
            project_path: key.project,
            context: key.context,
            modes: key.modes,
            transport: key.transport,
            created_at: at,
            log_path: key.log,
            shared: true,
            linger_until: Some(at + linger),
            on_demand: true,
            sleep_minutes: key.sleep_minutes,
            asleep_since: Some(at),
            asleep_reason: Some(AsleepReason::NotStarted),
            ..Session::default()
        }
    }

    /// Woken: `serena` is the session of the launch that started its new Serena (its process,
    /// ports, URLs and log); the rest (clients, lease, settings) stays.
    pub(crate) fn woken(self, serena: Session, at: Epoch) -> Session {
        Session {
            port: serena.port,
            url: serena.url,
            pid: serena.pid,
            start_time: serena.start_time,
            dashboard_url: serena.dashboard_url,
            dashboard_port: serena.dashboard_port,
            log_path: serena.log_path,
            asleep_since: None,
            asleep_reason: None,
            given_back_bytes: None,
            last_used: Some(at),
            ..self
        }
    }

    pub(crate) fn idle_shutdown(&self) -> Option<std::time::Duration> {
        self.idle_shutdown_minutes.and_then(minutes)
    }
}

#[cfg(test)]
pub(crate) fn test_instance(pid: u32, project: Option<&str>) -> Instance {
    Instance {
        pid,
        state: if project.is_some() {
            State::LiveWithProject
        } else {
            State::LiveNoProject
        },
        state_reason: None,
        port: Some(24282),
        project_name: project.map(String::from),
        project_path: None,
        context: None,
        modes: vec![],
        transport: Transport::Stdio,
        mcp_port: None,
        mcp_url: None,
        started_at: 1000.0,
        client_pid: None,
        client_name: None,
        source: Source::Discovery,
        cmdline: vec!["serena".into(), "start-mcp-server".into()],
        first_seen: 1000.0,
        last_heartbeat: None,
        last_activity: None,
        idle_since: None,
        idle_shutdown_at: None,
        state_since: 1000.0,
        verified_serena: true,
        cost: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_process_rejects_a_later_start() {
        assert!(same_process(Some(1000.0), 1000));
        assert!(same_process(Some(1000.5), 1002));
        assert!(same_process(Some(1000.0), 900), "registered late is fine");
        assert!(
            !same_process(Some(1000.0), 1010),
            "a later process is a reused PID"
        );
        assert!(same_process(None, 5));
        assert!(same_process(Some(0.0), 5));
    }

    #[test]
    fn a_record_names_the_process_it_was_written_for() {
        // Serena records `started_at` with its fraction; the OS reports whole seconds.
        assert_eq!(
            ProcessId::of_record(7, 1000.93),
            ProcessId {
                pid: 7,
                start_time: 1000
            }
        );
        assert_eq!(ProcessId::of_record(7, -1.0).start_time, 0, "unknown");
        assert_ne!(
            ProcessId::of_record(7, 1000.0),
            ProcessId::of_record(7, 1010.0),
            "same PID, another start: another process"
        );
    }
}
