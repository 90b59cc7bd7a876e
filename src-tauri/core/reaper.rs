//! The reaper: kills one Serena instance together with its whole process tree, and never
//! anything else. It snapshots the tree first (language servers run in their own sessions and
//! are re-parented once Serena dies, so the tree cannot be found afterwards), asks Serena to stop
//! through its dashboard (`PUT /shutdown`), then escalates to SIGTERM and SIGKILL for whatever of
//! the snapshot is left, and verifies that all of it is gone. Before every signal it looks at the
//! PID again: a PID now held by a process with another start time is a different process and is
//! never signalled, and a root that no longer looks like Serena is not touched.
//!
//! Deliberately not here: deciding *what* to kill (the caller picks the instance), and what
//! follows a kill: the reaper touches neither the registry nor the in-memory model; the caller
//! unregisters and publishes events from the [`KillReport`].
//!
//! Platforms: signals go through `sysinfo`, so the same steps run everywhere. Windows has no
//! SIGTERM; there the polite step is the dashboard's shutdown and the SIGTERM step falls back to
//! a hard kill (`TerminateProcess`, reported under `signalled_kill`). Each process is pinned
//! before its identity is checked and signalled through the pin (a pidfd on Linux, a process
//! handle on Windows), so a PID freed and reused between the check and the signal cannot be
//! hit.

use super::cmdline;
use super::model::ProcessId;
use super::probe::{ProbeError, Prober};
use super::procs::{Snapshot, Sys};
use super::sockets;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use sysinfo::{Pid, ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, UpdateKind};
use tokio::time::Instant;

/// How often the reaper looks whether processes have exited.
const POLL: Duration = Duration::from_millis(100);

/// How long each step of a kill may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timings {
    /// After `PUT /shutdown`: how long Serena gets to exit by itself.
    pub shutdown_wait: Duration,
    /// After SIGTERM: how long the tree gets to exit.
    pub term_wait: Duration,
    /// After SIGKILL: how long to wait until all are confirmed gone.
    pub verify_wait: Duration,
}

impl Default for Timings {
    fn default() -> Timings {
        Timings {
            shutdown_wait: Duration::from_secs(3),
            term_wait: Duration::from_secs(2),
            verify_wait: Duration::from_secs(2),
        }
    }
}

pub use super::model::Outcome;

/// What a kill did (also read back from the daemon's answers by the CLI).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillReport {
    /// The root's PID (the Serena process).
    pub pid: u32,
    pub outcome: Outcome,
    /// Every PID of the snapshot: the root first, then its descendants (parents before children).
    pub tree: Vec<u32>,
    /// PIDs that were sent SIGTERM.
    pub signalled_term: Vec<u32>,
    /// PIDs that were sent SIGKILL.
    pub signalled_kill: Vec<u32>,
    /// PIDs still alive at the end (empty on success; see [`ReapError::Survivors`]).
    pub survivors: Vec<u32>,
}

impl KillReport {
    /// The report for a process that was gone before anything was done to it.
    pub fn already_gone(pid: u32) -> KillReport {
        KillReport::new(pid, Vec::new())
    }

    fn new(pid: u32, tree: Vec<u32>) -> KillReport {
        KillReport {
            pid,
            outcome: Outcome::AlreadyGone,
            tree,
            signalled_term: Vec::new(),
            signalled_kill: Vec::new(),
            survivors: Vec::new(),
        }
    }
}

/// Why a kill was refused or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum ReapError {
    /// The process holding the PID is not a Serena MCP server: nothing was signalled.
    #[error("process {pid} is not a Serena MCP server; it was left alone")]
    NotSerena { pid: u32 },
    /// Some processes of the tree could not be confirmed gone (still alive after SIGKILL, or
    /// the process table could not be read).
    #[error("instance {pid}: processes {pids:?} are still alive after SIGKILL")]
    Survivors { pid: u32, pids: Vec<u32> },
}

/// What the first snapshot says about the target.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    AlreadyGone,
    NotSerena,
    /// The root, then its descendants, each with its start time.
    Tree(Vec<ProcessId>),
}

/// Decides from one snapshot what a kill of `target` covers.
fn plan(snap: &Snapshot, target: ProcessId) -> Plan {
    let Some(root) = snap.get_id(target) else {
        return Plan::AlreadyGone;
    };
    if cmdline::parse(&root.cmdline).is_none() {
        return Plan::NotSerena;
    }
    Plan::Tree(tree_of(snap, root))
}

/// `root` and all its descendants, root first, each with its start time; never ourselves,
/// whatever the table says.
fn tree_of(snap: &Snapshot, root: &crate::core::procs::Proc) -> Vec<ProcessId> {
    let me = std::process::id();
    let mut tree = vec![root.id()];
    tree.extend(
        snap.descendants(root.pid)
            .into_iter()
            .filter(|p| p.pid != me)
            .map(|p| p.id()),
    );
    tree
}

/// Kills the Serena instance `target` with its whole process tree (see the module docs).
///
/// `dashboard_port` is the instance's dashboard; it is asked to shut down only if the root
/// process itself listens on that port (a stale port may belong to another instance by now).
pub async fn reap(
    target: ProcessId,
    dashboard_port: Option<u16>,
    prober: &Prober,
    timings: &Timings,
) -> Result<KillReport, ReapError> {
    let not_confirmed = |pids: Vec<u32>| ReapError::Survivors {
        pid: target.pid,
        pids,
    };
    let mut sys = Sys::new();
    let snap = on_table(&mut sys, Snapshot::capture)
        .await
        .ok_or_else(|| not_confirmed(vec![target.pid]))?;
    let tree = match plan(&snap, target) {
        Plan::AlreadyGone => return Ok(KillReport::already_gone(target.pid)),
        Plan::NotSerena => return Err(ReapError::NotSerena { pid: target.pid }),
        Plan::Tree(tree) => tree,
    };
    drop(snap);
    let mut report = KillReport::new(target.pid, tree.iter().map(|p| p.pid).collect());

    // 1. Ask Serena to stop, through its own dashboard.
    let mut asked = false;
    if let Some(port) = dashboard_port {
        if root_listens_on(target.pid, port).await {
            asked = ask_to_shut_down(prober, port).await;
            tracing::debug!(pid = target.pid, port, asked, "PUT /shutdown");
        } else {
            tracing::debug!(pid = target.pid, port, "not its dashboard: not asking");
        }
    }
    if asked {
        wait_gone(&mut sys, &[target], timings.shutdown_wait).await;
    }

    // 2. SIGTERM whatever of the snapshot is left, 3. SIGKILL the rest.
    let round = escalate(&mut sys, &tree, Some(target), timings)
        .await
        .map_err(|halt| match halt {
            Halt::NotSerena => ReapError::NotSerena { pid: target.pid },
            Halt::NoTable(left) => not_confirmed(left),
        })?;
    report.signalled_term = round.term;
    report.signalled_kill = round.kill;

    report.outcome = if report.signalled_kill.contains(&target.pid) {
        Outcome::Killed
    } else if report.signalled_term.contains(&target.pid) {
        Outcome::Terminated
    } else if asked {
        Outcome::ShutDown
    } else {
        Outcome::AlreadyGone
    };
    report.survivors = wait_gone(&mut sys, &tree, Duration::ZERO)
        .await
        .iter()
        .map(|p| p.pid)
        .collect();
    if report.survivors.is_empty() {
        tracing::info!(pid = target.pid, outcome = ?report.outcome, tree = ?report.tree, "reaped");
        Ok(report)
    } else {
        Err(not_confirmed(report.survivors))
    }
}

/// Kills a process this program launched itself (a session that failed to start, possibly
/// behind a wrapper such as `uvx`) with its whole tree: SIGTERM, then SIGKILL, each PID
/// re-checked first. No Serena check: the caller owns the child, so `root` is verifiably the
/// process it started. Returns the PIDs still alive at the end.
pub async fn kill_own_tree(root: ProcessId, timings: &Timings) -> Vec<u32> {
    let mut sys = Sys::new();
    let Some(snap) = on_table(&mut sys, Snapshot::capture).await else {
        return vec![root.pid];
    };
    let Some(r) = snap.get_id(root) else {
        return Vec::new();
    };
    let tree = tree_of(&snap, r);
    drop(snap);
    // No Serena guard: whatever the result, the survivors are counted below.
    let _ = escalate(&mut sys, &tree, None, timings).await;
    wait_gone(&mut sys, &tree, Duration::ZERO)
        .await
        .iter()
        .map(|p| p.pid)
        .collect()
}

/// Why [`escalate`] stopped early.
enum Halt {
    /// The root no longer looks like Serena: nothing more is signalled.
    NotSerena,
    /// The process table could not be read; these were still left.
    NoTable(Vec<u32>),
}

/// SIGTERM what is left of `tree` and wait `term_wait`, then SIGKILL the rest and wait
/// `verify_wait`. With `serena_root`, a round is not sent once that root stops looking like
/// Serena. Returns who got which signal.
async fn escalate(
    sys: &mut Sys,
    tree: &[ProcessId],
    serena_root: Option<ProcessId>,
    timings: &Timings,
) -> Result<Round, Halt> {
    let mut sent = Round::default();
    for (sig, wait) in [
        (Sig::Term, timings.term_wait),
        (Sig::Kill, timings.verify_wait),
    ] {
        let left = wait_gone(sys, tree, Duration::ZERO).await;
        if left.is_empty() {
            break;
        }
        let left_pids: Vec<u32> = left.iter().map(|p| p.pid).collect();
        let round = on_table(sys, move |s| signal_all(s, serena_root, &left, sig))
            .await
            .ok_or(Halt::NoTable(left_pids))?
            .map_err(|NotSerenaAnyMore| Halt::NotSerena)?;
        sent.term.extend(round.term);
        sent.kill.extend(round.kill);
        wait_gone(sys, tree, wait).await;
    }
    Ok(sent)
}

/// Runs `f` on the process table off the async threads. `None` if the task failed (then `sys`
/// is a fresh table).
async fn on_table<T, F>(sys: &mut Sys, f: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce(&mut Sys) -> T + Send + 'static,
{
    let mut owned = std::mem::take(sys);
    let done = tokio::task::spawn_blocking(move || {
        let out = f(&mut owned);
        (owned, out)
    })
    .await;
    match done {
        Ok((back, out)) => {
            *sys = back;
            Some(out)
        }
        Err(e) => {
            tracing::warn!("reaper: process table task failed: {e}");
            None
        }
    }
}

/// Whether the process `pid` owns a listening socket on `port`.
async fn root_listens_on(pid: u32, port: u16) -> bool {
    tokio::task::spawn_blocking(move || sockets::pid_owns_port(pid, port))
        .await
        .unwrap_or(false)
}

/// `PUT /shutdown`. Anything but a failed connection counts as asked: a stdio Serena exits
/// without answering, and a slow answer (timeout) may still mean it is on its way out.
async fn ask_to_shut_down(prober: &Prober, port: u16) -> bool {
    match prober.shutdown(port).await {
        Ok(()) => true,
        Err(ProbeError::Http { source, .. }) => !source.is_connect(),
        Err(
            ProbeError::Status { .. }
            | ProbeError::NotADashboard { .. }
            | ProbeError::Reported { .. },
        ) => true,
    }
}

/// Waits up to `limit` for every process of `ids` to be gone; returns those still there
/// (all of them if the table could not be read). `limit` zero looks once.
async fn wait_gone(sys: &mut Sys, ids: &[ProcessId], limit: Duration) -> Vec<ProcessId> {
    let deadline = Instant::now() + limit;
    loop {
        let owned = ids.to_vec();
        let left = on_table(sys, move |s| still_there(s, &owned))
            .await
            .unwrap_or_else(|| ids.to_vec());
        let now = Instant::now();
        if left.is_empty() || now >= deadline {
            return left;
        }
        tokio::time::sleep(POLL.min(deadline - now)).await;
    }
}

/// Whether a process in this state has exited (a zombie waits only for its parent to reap it).
fn exited(status: ProcessStatus) -> bool {
    matches!(status, ProcessStatus::Zombie | ProcessStatus::Dead)
}

/// Re-reads just these processes: the ones that are still the same, running process.
fn still_there(sys: &mut Sys, ids: &[ProcessId]) -> Vec<ProcessId> {
    let pids: Vec<Pid> = ids.iter().map(|id| Pid::from_u32(id.pid)).collect();
    sys.refresh_processes_specifics(
        ProcessesToUpdate::Some(&pids),
        true,
        ProcessRefreshKind::nothing(),
    );
    ids.iter()
        .filter(|id| is_same(sys, **id))
        .copied()
        .collect()
}

/// Whether the table (freshly refreshed for `id.pid`) holds this very process, not exited.
fn is_same(sys: &Sys, id: ProcessId) -> bool {
    sys.process(Pid::from_u32(id.pid))
        .is_some_and(|p| sys.start_time(p) == id.start_time && !exited(p.status()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sig {
    Term,
    Kill,
}

/// The root runs something else now (it exec'ed): it is not the instance that was asked for.
#[derive(Debug, PartialEq, Eq)]
struct NotSerenaAnyMore;

/// Who got which signal in one round.
#[derive(Debug, Default, PartialEq, Eq)]
struct Round {
    term: Vec<u32>,
    kill: Vec<u32>,
}

/// Sends `sig` to each process of `ids` that is still the same process. A given `serena_root`
/// must also still look like Serena, else nothing is signalled.
fn signal_all(
    sys: &mut Sys,
    serena_root: Option<ProcessId>,
    ids: &[ProcessId],
    sig: Sig,
) -> Result<Round, NotSerenaAnyMore> {
    if let Some(root) = serena_root {
        if ids.contains(&root) && !root_still_serena(sys, root) {
            return Err(NotSerenaAnyMore);
        }
    }
    let mut round = Round::default();
    for id in ids {
        match signal(sys, *id, sig) {
            Some(Sig::Term) => round.term.push(id.pid),
            Some(Sig::Kill) => round.kill.push(id.pid),
            None => {}
        }
    }
    Ok(round)
}

/// False only if the root is alive, the same process, and its command line is readable and not
/// Serena's. (An exiting process shows an empty command line; it is not signalled this round.)
fn root_still_serena(sys: &mut Sys, root: ProcessId) -> bool {
    let pid = Pid::from_u32(root.pid);
    sys.refresh_processes_specifics(
        ProcessesToUpdate::Some(&[pid]),
        true,
        ProcessRefreshKind::nothing().with_cmd(UpdateKind::Always),
    );
    match sys.process(pid) {
        Some(p) if is_same(sys, root) && !p.cmd().is_empty() => {
            let argv: Vec<String> = p
                .cmd()
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            cmdline::parse(&argv).is_some()
        }
        _ => true,
    }
}

/// Sends `sig` to `id` if the PID still names that process. Returns the signal actually sent
/// (on Windows a SIGTERM becomes a hard kill), `None` if nothing was sent.
fn signal(sys: &mut Sys, id: ProcessId, sig: Sig) -> Option<Sig> {
    // Pin the process first (Linux): whatever the PID names later, the pin names this one.
    let pin = pin::open(id.pid);
    let pid = Pid::from_u32(id.pid);
    sys.refresh_processes_specifics(
        ProcessesToUpdate::Some(&[pid]),
        true,
        ProcessRefreshKind::nothing(),
    );
    if !is_same(sys, id) {
        return None;
    }
    if let Some(pin) = &pin {
        return pin::send(pin, sig);
    }
    let process = sys.process(pid)?;
    let wanted = match sig {
        Sig::Term => sysinfo::Signal::Term,
        Sig::Kill => sysinfo::Signal::Kill,
    };
    match process.kill_with(wanted) {
        Some(sent) => sent.then_some(sig),
        // No such signal here (SIGTERM on Windows): the platform's kill.
        None => process.kill().then_some(Sig::Kill),
    }
}

/// A handle that names one process for good (a pidfd), where the platform has one.
#[cfg(target_os = "linux")]
mod pin {
    use super::Sig;
    use rustix::fd::OwnedFd;
    use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};

    pub(super) type Pin = OwnedFd;

    /// `None` when the process is gone or pidfds are not available (old kernel): the caller then
    /// signals by PID right after its identity check.
    pub(super) fn open(pid: u32) -> Option<Pin> {
        let pid = Pid::from_raw(i32::try_from(pid).ok()?)?;
        pidfd_open(pid, PidfdFlags::empty()).ok()
    }

    /// The signal sent, if it was.
    pub(super) fn send(pin: &Pin, sig: Sig) -> Option<Sig> {
        let signal = match sig {
            Sig::Term => Signal::TERM,
            Sig::Kill => Signal::KILL,
        };
        pidfd_send_signal(pin, signal).is_ok().then_some(sig)
    }
}

/// Windows: a process handle (`watch::Pinned`). While it is open the PID cannot name another
/// process, so the identity checked after opening it is the identity of what gets terminated.
#[cfg(windows)]
mod pin {
    use super::Sig;
    use crate::core::watch::Pinned;

    pub(super) type Pin = Pinned;

    /// `None` when the process is gone or may not be ended by this user.
    pub(super) fn open(pid: u32) -> Option<Pin> {
        Pinned::open_to_end(pid)
    }

    /// Windows has no SIGTERM for a process without a window or console of its own to close:
    /// either signal ends it at once (`TerminateProcess`, exit code 1), reported as a kill.
    pub(super) fn send(pin: &Pin, _sig: Sig) -> Option<Sig> {
        pin.terminate().then_some(Sig::Kill)
    }
}

#[cfg(not(any(target_os = "linux", windows)))]
mod pin {
    use super::Sig;

    pub(super) enum Pin {}

    pub(super) fn open(_pid: u32) -> Option<Pin> {
        None
    }

    pub(super) fn send(pin: &Pin, _sig: Sig) -> Option<Sig> {
        match *pin {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::procs::Proc;

    fn proc(pid: u32, ppid: u32, start: u64, cmd: &str) -> Proc {
        Proc {
            pid,
            ppid: Some(ppid),
            start_time: start,
            name: cmd.split_whitespace().next().unwrap_or_default().into(),
            cmdline: cmd.split_whitespace().map(String::from).collect(),
            cwd: None,
        }
    }

    const SERENA: &str = "/v/bin/python3 /v/bin/serena start-mcp-server --project /w/p";

    fn table() -> Snapshot {
        Snapshot::from_procs([
            proc(10, 1, 100, "client"),
            proc(20, 10, 200, SERENA),
            proc(21, 20, 210, "/v/bin/python3 /v/bin/jedi-language-server"),
            proc(22, 21, 220, "node server.js"),
            proc(30, 10, 300, "sleep 600"),
            proc(40, 1, 400, SERENA),
        ])
    }

    fn id(pid: u32, start_time: u64) -> ProcessId {
        ProcessId { pid, start_time }
    }

    #[test]
    fn plan_covers_the_root_and_every_descendant_with_its_start_time() {
        assert_eq!(
            plan(&table(), id(20, 200)),
            Plan::Tree(vec![id(20, 200), id(21, 210), id(22, 220)])
        );
        assert_eq!(plan(&table(), id(40, 400)), Plan::Tree(vec![id(40, 400)]));
    }

    #[test]
    fn plan_refuses_a_reused_pid_and_a_non_serena_process() {
        // The PID is held by a process with another start time: not the instance asked for.
        assert_eq!(plan(&table(), id(20, 199)), Plan::AlreadyGone);
        assert_eq!(plan(&table(), id(99, 200)), Plan::AlreadyGone);
        assert_eq!(plan(&table(), id(30, 300)), Plan::NotSerena);
        assert_eq!(plan(&table(), id(10, 100)), Plan::NotSerena);
    }

    #[test]
    fn plan_never_includes_this_process() {
        let me = std::process::id();
        let snap = Snapshot::from_procs([proc(20, 1, 200, SERENA), proc(me, 20, 250, "tray")]);
        assert_eq!(plan(&snap, id(20, 200)), Plan::Tree(vec![id(20, 200)]));
    }

    /// A live `sleep` child and its identity as the process table reports it.
    #[cfg(unix)]
    fn sleeper() -> (std::process::Child, ProcessId) {
        let child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("spawn sleep");
        let mut sys = Sys::new();
        let snap = Snapshot::capture(&mut sys);
        let me = snap.get(child.id()).expect("sleep in the table").id();
        (child, me)
    }

    #[cfg(unix)]
    #[test]
    fn a_pid_with_another_start_time_is_never_signalled() {
        let (mut child, me) = sleeper();
        let mut sys = Sys::new();
        let impostor = id(me.pid, me.start_time - 100);
        assert_eq!(signal(&mut sys, impostor, Sig::Kill), None);
        assert_eq!(still_there(&mut sys, &[impostor]), vec![]);
        assert_eq!(still_there(&mut sys, &[me]), vec![me]);
        assert!(child.try_wait().expect("try_wait").is_none(), "still runs");

        assert_eq!(signal(&mut sys, me, Sig::Term), Some(Sig::Term));
        // Dead but not yet reaped by us (a zombie): gone as far as the reaper is concerned.
        let start = std::time::Instant::now();
        while !still_there(&mut sys, &[me]).is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "sleep ignored TERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = child.wait().expect("wait");
        assert!(!status.success());
        assert_eq!(signal(&mut sys, me, Sig::Kill), None, "gone: nothing sent");
    }

    #[cfg(unix)]
    #[test]
    fn a_root_that_is_not_serena_is_not_signalled() {
        let (mut child, me) = sleeper();
        let mut sys = Sys::new();
        assert!(!root_still_serena(&mut sys, me));
        assert_eq!(
            signal_all(&mut sys, Some(me), &[me], Sig::Kill),
            Err(NotSerenaAnyMore)
        );
        assert!(child.try_wait().expect("try_wait").is_none(), "still runs");
        let _ = child.kill();
        let _ = child.wait();
    }
}
