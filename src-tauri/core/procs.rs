//! A snapshot of the process table (through `sysinfo`): PID, parent, start time, name, command
//! line and working directory of every process, plus tree helpers, and the [`Scope`] that limits
//! which processes this program may treat as instances. Read-only: signalling processes is the
//! reaper's business, not this module's. Every `sysinfo::System` of the program is a [`Sys`],
//! and every start time is read through [`Sys::start_time`]: in one frame, whatever the wall
//! clock did (see [`boot`]).

pub mod boot;

use super::model::ProcessId;
use std::collections::{HashMap, HashSet};
use sysinfo::{ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, System, UpdateKind};

/// A `sysinfo::System` and the boot time it counts start times from (Linux: the kernel's
/// `btime` when it was made, which a step of the wall clock moves; see [`boot`]). The only way
/// this program makes one (`clippy.toml` disallows `System::new` and `Process::start_time`
/// elsewhere), so that every start time is read in the one frame of [`boot::frame`].
pub struct Sys {
    inner: System,
    counted_from: Option<u64>,
}

impl Sys {
    /// An empty table (nothing read yet).
    pub fn new() -> Sys {
        // sysinfo reads `btime` while it makes the System: the same value just before and just
        // after is the one it read (a step between the two reads is seen and read again).
        let mut tries = 0;
        loop {
            let before = boot::btime();
            #[allow(clippy::disallowed_methods)]
            let inner = System::new();
            let after = boot::btime();
            tries += 1;
            if before == after || tries == 3 {
                boot::seen(after);
                return Sys {
                    inner,
                    counted_from: after,
                };
            }
        }
    }

    /// The start time of `p`, a process of this table: epoch seconds in the frame of
    /// [`boot::frame`] (elsewhere than Linux: as sysinfo reads it).
    pub fn start_time(&self, p: &sysinfo::Process) -> u64 {
        #[allow(clippy::disallowed_methods)]
        let start = p.start_time();
        match (self.counted_from, boot::frame()) {
            (Some(from), Some(frame)) => boot::corrected(start, from, frame),
            _ => start,
        }
    }
}

impl Default for Sys {
    fn default() -> Sys {
        Sys::new()
    }
}

impl std::ops::Deref for Sys {
    type Target = System;
    fn deref(&self) -> &System {
        &self.inner
    }
}

impl std::ops::DerefMut for Sys {
    fn deref_mut(&mut self) -> &mut System {
        &mut self.inner
    }
}

/// Now in the frame of the start times (epoch seconds, whole): the frame plus the time since
/// boot, which no step of the wall clock moves (elsewhere than Linux: the wall clock). What a
/// process's age is measured against.
pub fn now_in_frame() -> u64 {
    match boot::frame() {
        Some(frame) => frame.saturating_add(System::uptime()),
        None => super::model::now() as u64,
    }
}

/// One process as seen in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub ppid: Option<u32>,
    pub start_time: u64,
    pub name: String,
    pub cmdline: Vec<String>,
    pub cwd: Option<String>,
}

impl Proc {
    /// Whether this process can be a child of `parent`: not older than it. A process whose
    /// parent PID names an older-than-itself process is a child of a parent that died, whose
    /// PID was reused (Windows keeps a dead parent's PID; Linux re-parents, so it never tells).
    pub fn could_be_child_of(&self, parent: &Proc) -> bool {
        self.start_time >= parent.start_time
    }

    pub fn id(&self) -> ProcessId {
        ProcessId {
            pid: self.pid,
            start_time: self.start_time,
        }
    }
}

/// The environment variable that scopes discovery (see [`Scope`]).
pub const SCOPE_VAR: &str = "SERENA_TRAY_SCOPE";

/// Which processes this program may see as instances. `All` in normal use. `Marked(value)` sees
/// only processes whose environment carries `SERENA_TRAY_SCOPE=value` (inherited by everything
/// they start): tests run their Serenas, fakes and daemons with a marker of their own, so no
/// test can see, and so never signal, a process it did not start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Scope {
    #[default]
    All,
    Marked(String),
}

impl Scope {
    /// The scope this program runs in: `SERENA_TRAY_SCOPE` if set and not empty, else all.
    pub fn from_env() -> Scope {
        match std::env::var(SCOPE_VAR) {
            Ok(v) if !v.is_empty() => Scope::Marked(v),
            _ => Scope::All,
        }
    }

    /// Those of `pids` inside the scope; `None` means every process is (no look needed).
    /// Blocking: reads the environment of just these processes.
    pub fn admitted(&self, sys: &mut Sys, pids: &[u32]) -> Option<HashSet<u32>> {
        let Scope::Marked(value) = self else {
            return None;
        };
        let wanted = format!("{SCOPE_VAR}={value}");
        let ids: Vec<sysinfo::Pid> = pids.iter().map(|p| sysinfo::Pid::from_u32(*p)).collect();
        let kind = ProcessRefreshKind::nothing()
            .with_environ(UpdateKind::Always)
            .without_tasks();
        sys.refresh_processes_specifics(ProcessesToUpdate::Some(&ids), false, kind);
        Some(
            pids.iter()
                .copied()
                .filter(|pid| {
                    sys.process(sysinfo::Pid::from_u32(*pid))
                        .is_some_and(|p| p.environ().iter().any(|kv| *kv == *wanted))
                })
                .collect(),
        )
    }
}

/// The processes of `snap` (read through `sys`) whose environment holds `var`, with its value.
/// Blocking: reads every process's environment (a few milliseconds a hundred processes), so
/// for a start-up, not a loop. A process whose environment cannot be read (another user's)
/// does not hold it.
pub fn carrying(sys: &mut Sys, snap: &Snapshot, var: &str) -> Vec<(Proc, String)> {
    let ids: Vec<sysinfo::Pid> = snap.iter().map(|p| sysinfo::Pid::from_u32(p.pid)).collect();
    let kind = ProcessRefreshKind::nothing()
        .with_environ(UpdateKind::Always)
        .without_tasks();
    sys.refresh_processes_specifics(ProcessesToUpdate::Some(&ids), false, kind);
    let prefix = format!("{var}=");
    snap.iter()
        .filter_map(|p| {
            let environ = sys.process(sysinfo::Pid::from_u32(p.pid))?.environ();
            let value = environ.iter().find_map(|kv| {
                let kv = kv.to_str()?;
                kv.strip_prefix(prefix.as_str()).map(str::to_string)
            })?;
            Some((p.clone(), value))
        })
        .collect()
}

/// `f` of the process `pid` as it is now (only that one process is read), if it runs.
fn read_one<T>(pid: u32, f: impl FnOnce(&Sys, &sysinfo::Process) -> T) -> Option<T> {
    let mut sys = Sys::new();
    let p = sysinfo::Pid::from_u32(pid);
    sys.refresh_processes(ProcessesToUpdate::Some(&[p]), true);
    sys.process(p).map(|x| f(&sys, x))
}

/// The identity of the process `pid` now, if it runs (an exited process not yet reaped by its
/// parent does not). Blocking (well under a millisecond).
pub fn identity(pid: u32) -> Option<ProcessId> {
    read_one(pid, |sys, x| {
        (x.status() != ProcessStatus::Zombie).then_some(ProcessId {
            pid,
            start_time: sys.start_time(x),
        })
    })
    .flatten()
}

/// The name of the process `pid` now, if it runs. Blocking (well under a millisecond).
pub fn name(pid: u32) -> Option<String> {
    read_one(pid, |_, x| x.name().to_string_lossy().into_owned())
}

/// The parent of the process `pid` as the process table says, if it runs. On Windows that is
/// the PID of the process that created it, which may have exited since (and the PID been
/// reused): check it. Blocking.
pub fn parent_pid(pid: u32) -> Option<u32> {
    read_one(pid, |_, x| x.parent().map(|pp| pp.as_u32())).flatten()
}

/// Processes by PID at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    procs: HashMap<u32, Proc>,
}

/// How long after its start a process's command line (and environment) is read again on every
/// look: a PID caught between fork and exec shows its parent's until it execs.
pub(crate) const YOUNG_SECS: u64 = 10;

/// The longest a [`ProcTable`] goes without reading the whole table.
const FULL_READ_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// The process table kept between looks, so that a look reads only what can have changed.
///
/// On Linux a look lists `/proc` (one directory read) and reads only the new PIDs, the young
/// ones (see [`YOUNG_SECS`]) and the stat lines of the watched ones with their parents
/// (instances and their clients: an orphan is seen by its parent); everything else is carried
/// over, and the whole
/// table is read again every [`FULL_READ_EVERY`] (parents of unwatched processes, an exec long
/// after start). A process that exited is gone at the next look (its PID is no longer listed),
/// a watched one also when it exited unreaped. Elsewhere every look reads the whole table.
pub struct ProcTable {
    /// See [`YOUNG_SECS`] (a parameter for the tests).
    young_secs: u64,
    snap: std::sync::Arc<Snapshot>,
    full_at: Option<std::time::Instant>,
    /// The processes whose working directory was read (by identity) since the last full read.
    cwd_read: HashSet<ProcessId>,
    /// Listed PIDs read and found not to be processes of the snapshot (kernel threads, exited
    /// ones not reaped yet): not read again until the next full read.
    skipped: HashSet<u32>,
    /// The newest PID the kernel had handed out at the last listing (see [`newest_pid`]).
    newest: Option<u32>,
}

impl Default for ProcTable {
    fn default() -> ProcTable {
        ProcTable {
            young_secs: YOUNG_SECS,
            snap: Default::default(),
            full_at: None,
            cwd_read: HashSet::new(),
            skipped: HashSet::new(),
            newest: None,
        }
    }
}

impl ProcTable {
    /// The table now (blocking). Working directories are not read here, see
    /// [`ProcTable::fill_cwd`].
    pub fn look(&mut self, sys: &mut Sys, watched: &[u32]) -> std::sync::Arc<Snapshot> {
        let due = self.full_at.is_none_or(|t| t.elapsed() >= FULL_READ_EVERY);
        // Read before the listing: a process made after it changes it, so the next look lists.
        let newest = newest_pid();
        let nothing_new = newest.is_some() && newest == self.newest;
        self.newest = newest;
        if due {
            self.read_all(sys);
        } else if nothing_new && watched.is_empty() {
            // No PID handed out since the last listing: no process is new, only the young
            // ones can have exec'd. One that exited unwatched is seen at the next listing.
            self.look_again(sys, None, watched);
        } else if let Some(listed) = listed_pids() {
            self.look_again(sys, Some(&listed), watched);
        } else {
            // Not Linux (or `/proc` unreadable): the whole table at every look.
            std::sync::Arc::make_mut(&mut self.snap).recapture(sys);
        }
        self.snap.clone()
    }

    /// The full read: every process anew, into a table of its own that is let go once the
    /// snapshot is made. sysinfo keeps every process it has read, in a map as large as it ever
    /// was, and the incremental looks need none of them (each reads what it asks about), so
    /// their table starts empty again too: a burst of processes leaves neither behind.
    fn read_all(&mut self, sys: &mut Sys) {
        let mut all = Sys::new();
        let snap = std::sync::Arc::make_mut(&mut self.snap);
        snap.recapture(&mut all);
        snap.procs.shrink_to_fit();
        self.skipped = all
            .processes()
            .keys()
            .map(|p| p.as_u32())
            .filter(|p| snap.get(*p).is_none())
            .collect();
        self.full_at = Some(std::time::Instant::now());
        self.cwd_read.clear();
        drop(all);
        *sys = Sys::new();
        // The read's peak is past (every process and command line read anew, each compared
        // with the snapshot's): its pages go back rather than stay as the heap's high-water
        // mark.
        super::heap::give_back();
    }

    /// An incremental look: see the type's docs. `listed` is what `/proc` lists now; `None`
    /// when nothing can be new since the last listing (nothing is gone then either, as far as
    /// this look knows).
    fn look_again(&mut self, sys: &mut Sys, listed: Option<&HashSet<u32>>, watched: &[u32]) {
        let young_since = now_in_frame().saturating_sub(self.young_secs);
        let snap = std::sync::Arc::make_mut(&mut self.snap);
        // Gone: sysinfo forgets them too (asked about with `remove_dead`, it drops what it
        // cannot read), so churn does not grow its table.
        let gone: Vec<u32> = match listed {
            Some(listed) => snap
                .procs
                .keys()
                .chain(&self.skipped)
                .filter(|pid| !listed.contains(pid))
                .copied()
                .collect(),
            None => Vec::new(),
        };
        for pid in &gone {
            snap.procs.remove(pid);
            self.skipped.remove(pid);
        }
        // Started less than `young_secs` ago, in whole seconds (none when it is 0).
        let young = |p: &Proc| p.start_time > young_since;
        let again: HashSet<u32> = match listed {
            Some(listed) => listed
                .iter()
                .filter(|pid| match snap.procs.get(pid) {
                    Some(p) => young(p),
                    None => !self.skipped.contains(pid),
                })
                .copied()
                .collect(),
            None => snap
                .procs
                .values()
                .filter(|p| young(p))
                .map(|p| p.pid)
                .collect(),
        };
        let ids: Vec<sysinfo::Pid> = again
            .iter()
            .chain(&gone)
            .map(|p| sysinfo::Pid::from_u32(*p))
            .collect();
        // Asked about nothing, sysinfo still reads the uptime and the CPU counts.
        if !ids.is_empty() {
            sys.refresh_processes_specifics(ProcessesToUpdate::Some(&ids), true, table_kind());
        }
        let stat_only = read_stat_lines(sys, snap, watched, &again);
        for pid in again.into_iter().chain(stat_only) {
            match sys
                .process(sysinfo::Pid::from_u32(pid))
                .and_then(|p| as_proc(sys, p))
            {
                Some(mut fresh) => {
                    if let Some(old) = snap.procs.get(&pid).filter(|o| o.id() == fresh.id()) {
                        fresh.cwd = old.cwd.clone();
                    }
                    snap.procs.insert(pid, fresh);
                }
                None => {
                    snap.procs.remove(&pid);
                    if listed.is_none_or(|l| l.contains(&pid)) {
                        self.skipped.insert(pid);
                    }
                }
            }
        }
    }

    /// Reads the working directory of those of `pids` not read since the last full read (it
    /// is only needed for a few, and a Serena does not change it).
    pub fn fill_cwd(&mut self, sys: &mut Sys, pids: &[u32]) -> std::sync::Arc<Snapshot> {
        let snap = std::sync::Arc::make_mut(&mut self.snap);
        let unread: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|pid| {
                snap.get(*pid)
                    .is_some_and(|p| !self.cwd_read.contains(&p.id()))
            })
            .collect();
        if !unread.is_empty() {
            snap.fill_cwd(sys, &unread);
            self.cwd_read
                .extend(unread.iter().filter_map(|p| snap.get(*p)).map(Proc::id));
        }
        self.cwd_read.retain(|id| snap.get_id(*id).is_some());
        self.snap.clone()
    }
}

/// The PID the kernel handed out last (Linux: the last field of `/proc/loadavg`, for this PID
/// namespace), threads' included: while it stays the same, no process was made. One small read,
/// where listing `/proc` costs the kernel a walk of every task.
fn newest_pid() -> Option<u32> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_ascii_whitespace().nth(4)?.parse().ok()
}

/// The PIDs listed in `/proc` (Linux), without reading anything of them.
fn listed_pids() -> Option<HashSet<u32>> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let dir = std::fs::read_dir("/proc").ok()?;
    Some(
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
    )
}

/// What a look reads of a process: its stat line (always) and its command line; never its
/// threads (each would be read as a process of its own).
fn table_kind() -> ProcessRefreshKind {
    ProcessRefreshKind::nothing()
        .with_cmd(UpdateKind::Always)
        .without_tasks()
}

/// A process as a snapshot keeps it; `None` for a thread or an exited, unreaped process (a
/// "zombie" in the kernel's sense), gone for every purpose here.
fn as_proc(sys: &Sys, p: &sysinfo::Process) -> Option<Proc> {
    if p.thread_kind().is_some() || p.status() == ProcessStatus::Zombie {
        return None;
    }
    Some(Proc {
        pid: p.pid().as_u32(),
        ppid: p.parent().map(|pp| pp.as_u32()),
        start_time: sys.start_time(p),
        name: p.name().to_string_lossy().into_owned(),
        cmdline: p
            .cmd()
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect(),
        cwd: None,
    })
}

/// Whether `p` is still the process `old` was, as [`as_proc`] would make it (a name or an
/// argument that is not UTF-8 counts as changed).
fn unchanged(sys: &Sys, old: &Proc, p: &sysinfo::Process) -> bool {
    p.thread_kind().is_none()
        && p.status() != ProcessStatus::Zombie
        && old.start_time == sys.start_time(p)
        && old.ppid == p.parent().map(|pp| pp.as_u32())
        && p.name().to_str() == Some(old.name.as_str())
        && p.cmd().len() == old.cmdline.len()
        && p.cmd()
            .iter()
            .zip(&old.cmdline)
            .all(|(now, then)| now.to_str() == Some(then.as_str()))
}

/// Names of processes that adopt orphans (init and the usual subreapers). A stdio Serena whose
/// parent is one of these has lost its client.
const ADOPTERS: [&str; 8] = [
    "init",
    "systemd",
    "launchd",
    "tini",
    "dumb-init",
    "catatonit",
    "s6-svscan",
    "runsvdir",
];

impl Snapshot {
    /// Reads the whole process table (without working directories, see [`Snapshot::fill_cwd`]).
    /// Blocking (a few ms); call from `spawn_blocking` in async code.
    pub fn capture(sys: &mut Sys) -> Snapshot {
        let mut snap = Snapshot::default();
        snap.recapture(sys);
        snap
    }

    /// Reads the whole process table into this snapshot, keeping the entries (and their
    /// working directories) of processes that did not change: a full read allocates only for
    /// what is new, rather than a second copy of every command line while the first still
    /// lives, whose turns scatter the long-lived heap.
    pub fn recapture(&mut self, sys: &mut Sys) {
        // Command lines are re-read every time: a PID caught between fork and exec would
        // otherwise keep its parent's command line forever.
        sys.refresh_processes_specifics(ProcessesToUpdate::All, true, table_kind());
        self.procs.retain(|pid, old| {
            sys.process(sysinfo::Pid::from_u32(*pid))
                .is_some_and(|p| unchanged(sys, old, p))
        });
        for p in sys.processes().values() {
            if let std::collections::hash_map::Entry::Vacant(slot) =
                self.procs.entry(p.pid().as_u32())
            {
                if let Some(fresh) = as_proc(sys, p) {
                    slot.insert(fresh);
                }
            }
        }
    }

    /// Reads the working directory of just these processes (it is only needed for a few).
    pub fn fill_cwd(&mut self, sys: &mut Sys, pids: &[u32]) {
        let ids: Vec<sysinfo::Pid> = pids.iter().map(|p| sysinfo::Pid::from_u32(*p)).collect();
        let kind = ProcessRefreshKind::nothing()
            .with_cwd(UpdateKind::Always)
            .without_tasks();
        sys.refresh_processes_specifics(ProcessesToUpdate::Some(&ids), false, kind);
        for pid in pids {
            let cwd = sys
                .process(sysinfo::Pid::from_u32(*pid))
                .and_then(|p| p.cwd())
                .map(|c| c.to_string_lossy().into_owned());
            if let Some(p) = self.procs.get_mut(pid) {
                p.cwd = cwd;
            }
        }
    }

    /// Builds a snapshot from given processes (tests, other platforms' adapters).
    pub fn from_procs(procs: impl IntoIterator<Item = Proc>) -> Snapshot {
        Snapshot {
            procs: procs.into_iter().map(|p| (p.pid, p)).collect(),
        }
    }

    pub fn get(&self, pid: u32) -> Option<&Proc> {
        self.procs.get(&pid)
    }

    /// The process with this identity, if it is still the same process.
    pub fn get_id(&self, id: ProcessId) -> Option<&Proc> {
        self.get(id.pid).filter(|p| p.start_time == id.start_time)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Proc> {
        self.procs.values()
    }

    /// Every descendant of `pid` (children, grandchildren, ...), parents before children.
    pub fn descendants(&self, pid: u32) -> Vec<&Proc> {
        let mut children: HashMap<u32, Vec<&Proc>> = HashMap::new();
        for p in self.procs.values() {
            if let Some(pp) = p.ppid {
                // Not a child of what holds that PID now (see `could_be_child_of`).
                if self
                    .get(pp)
                    .is_none_or(|parent| p.could_be_child_of(parent))
                {
                    children.entry(pp).or_default().push(p);
                }
            }
        }
        let mut out = Vec::new();
        let mut stack = vec![pid];
        while let Some(cur) = stack.pop() {
            for c in children.get(&cur).into_iter().flatten() {
                // A PID cycle cannot happen in a real table; guard anyway.
                if c.pid != pid && !out.iter().any(|o: &&Proc| o.pid == c.pid) {
                    out.push(*c);
                    stack.push(c.pid);
                }
            }
        }
        out
    }

    /// Whether the process `ancestor` (that very one) is the parent of `pid`, or its parent's
    /// parent, and so on.
    pub fn has_ancestor(&self, pid: u32, ancestor: ProcessId) -> bool {
        let mut cur = pid;
        // A PID cycle cannot happen in a real table; the bound guards anyway.
        for _ in 0..64 {
            let Some(child) = self.get(cur) else {
                return false;
            };
            let parent = child.ppid.and_then(|pp| self.get(pp));
            match parent {
                Some(parent) if !child.could_be_child_of(parent) => return false,
                Some(parent) if parent.pid == ancestor.pid => {
                    return parent.start_time == ancestor.start_time
                }
                Some(parent) if parent.pid > 1 => cur = parent.pid,
                _ => return false,
            }
        }
        false
    }

    /// Whether the parent of `p` is not a plausible client: none, init, a known subreaper, or a
    /// process younger than `p` (its real parent died and the PID was reused).
    pub fn parent_is_adopter(&self, p: &Proc) -> bool {
        let Some(ppid) = p.ppid else { return true };
        if ppid <= 1 {
            return true;
        }
        match self.get(ppid) {
            None => true,
            Some(parent) => {
                !p.could_be_child_of(parent) || ADOPTERS.contains(&parent.name.as_str())
            }
        }
    }
}

/// The watched processes and their parents that `again` does not read in full: just their stat
/// lines (parent, state), their command lines as read before (read only when sysinfo has none:
/// since the last full read its table has not seen them). Which PIDs were read so.
fn read_stat_lines(
    sys: &mut Sys,
    snap: &Snapshot,
    watched: &[u32],
    again: &HashSet<u32>,
) -> HashSet<u32> {
    let mut stat_only = HashSet::new();
    for pid in watched {
        stat_only.insert(*pid);
        if let Some(pp) = snap.procs.get(pid).and_then(|p| p.ppid) {
            stat_only.insert(pp);
        }
    }
    stat_only.retain(|pid| !again.contains(pid));
    if !stat_only.is_empty() {
        let ids: Vec<sysinfo::Pid> = stat_only
            .iter()
            .map(|p| sysinfo::Pid::from_u32(*p))
            .collect();
        let kind = ProcessRefreshKind::nothing()
            .with_cmd(UpdateKind::OnlyIfNotSet)
            .without_tasks();
        sys.refresh_processes_specifics(ProcessesToUpdate::Some(&ids), true, kind);
    }
    stat_only
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(pid: u32, ppid: u32, start: u64, name: &str) -> Proc {
        Proc {
            pid,
            ppid: Some(ppid),
            start_time: start,
            name: name.into(),
            cmdline: vec![],
            cwd: None,
        }
    }

    #[test]
    fn descendants_walks_the_tree() {
        let s = Snapshot::from_procs([
            proc(10, 1, 5, "client"),
            proc(11, 10, 6, "serena"),
            proc(12, 11, 7, "ls"),
            proc(13, 12, 8, "ls-child"),
            proc(14, 1, 8, "other"),
        ]);
        let mut d: Vec<u32> = s.descendants(10).iter().map(|p| p.pid).collect();
        d.sort();
        assert_eq!(d, vec![11, 12, 13]);
        assert!(s.descendants(14).is_empty());
        let id = |pid, start_time| ProcessId { pid, start_time };
        assert!(s.has_ancestor(13, id(10, 5)));
        assert!(s.has_ancestor(11, id(10, 5)));
        assert!(!s.has_ancestor(10, id(10, 5)), "not its own ancestor");
        assert!(
            !s.has_ancestor(13, id(10, 4)),
            "another process that held PID 10"
        );

        // PID 20 died and its PID went to a younger process: its child (older than that one)
        // is no descendant of it (Windows keeps the dead parent's PID as the child's parent).
        let reused = Snapshot::from_procs([
            proc(20, 1, 50, "new holder of 20"),
            proc(21, 20, 40, "child of the old 20"),
            proc(22, 21, 41, "its child"),
            proc(23, 20, 50, "child of the new 20"),
        ]);
        let d: Vec<u32> = reused.descendants(20).iter().map(|p| p.pid).collect();
        assert_eq!(d, vec![23]);
        assert!(!reused.has_ancestor(22, id(20, 50)));
        assert!(reused.has_ancestor(23, id(20, 50)));
        assert!(reused.parent_is_adopter(&proc(21, 20, 40, "")));
        assert!(!s.has_ancestor(14, id(10, 5)));
    }

    #[cfg(unix)]
    #[test]
    fn an_exited_unreaped_child_is_not_in_the_snapshot() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        // Not waited for yet: it lingers as a defunct entry in the process table.
        std::thread::sleep(std::time::Duration::from_millis(300));
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let snap = Snapshot::capture(&mut Sys::new());
        let _ = child.wait();
        if cfg!(target_os = "linux") {
            assert!(stat.contains(") Z"), "the child is defunct: {stat}");
        }
        assert!(snap.get(pid).is_none(), "a defunct process counts as gone");
        assert!(snap.get(std::process::id()).is_some(), "we are in it");
    }

    #[cfg(unix)]
    #[test]
    fn a_full_read_keeps_what_did_not_change_and_corrects_the_rest() {
        let mut sys = Sys::new();
        let mut snap = Snapshot::capture(&mut sys);
        let me = std::process::id();
        let real = snap.get(me).expect("we are in it").clone();
        // Our entry as a look had it (with a working directory read), another that lies
        // about its command line, and one for a process that does not exist.
        let parent = real.ppid.expect("a parent");
        let mut kept = real.clone();
        kept.cwd = Some("/read/before".into());
        snap.procs.insert(me, kept);
        let mut wrong = snap.get(parent).expect("our parent is in it").clone();
        wrong.cmdline = vec!["not-what-it-runs".into()];
        snap.procs.insert(parent, wrong);
        let gone = u32::MAX - 1; // beyond any PID limit
        snap.procs.insert(gone, proc(gone, 1, 1, "gone"));
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        // Until it has exec'd: a look between fork and exec sees this test's command line.
        let since = std::time::Instant::now();
        while Snapshot::capture(&mut Sys::new())
            .get(child.id())
            .is_none_or(|p| p.name != "sleep")
        {
            assert!(since.elapsed().as_secs() < 10, "sleep never exec'd");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }

        snap.recapture(&mut sys);
        let fresh = Snapshot::capture(&mut Sys::new());
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(
            snap.get(me).and_then(|p| p.cwd.as_deref()),
            Some("/read/before")
        );
        assert_eq!(snap.get(parent), fresh.get(parent), "corrected");
        assert!(snap.get(gone).is_none(), "gone");
        let new = snap.get(child.id()).expect("the new process");
        assert_eq!(new.cmdline, ["sleep", "30"]);
        assert_eq!(
            new.cwd, None,
            "a new entry has no working directory read yet"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_scope_admits_only_processes_that_carry_its_marker() {
        let marker = format!("unit-{}", std::process::id());
        let spawn = |env: Option<&str>| {
            let mut cmd = std::process::Command::new("sleep");
            cmd.arg("30");
            if let Some(v) = env {
                cmd.env(SCOPE_VAR, v);
            }
            cmd.spawn().expect("spawn sleep")
        };
        let mut inside = spawn(Some(&marker));
        let mut other = spawn(Some("someone-else"));
        let mut outside = spawn(None);
        let pids = [inside.id(), other.id(), outside.id()];
        // Between fork and exec a child still shows its parent's environment: wait for exec.
        for pid in pids {
            let start = std::time::Instant::now();
            while !std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.starts_with(b"sleep\0"))
            {
                assert!(start.elapsed() < std::time::Duration::from_secs(10));
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        let mut sys = Sys::new();
        let admitted = Scope::Marked(marker).admitted(&mut sys, &pids);
        assert_eq!(admitted, Some(HashSet::from([inside.id()])));
        assert_eq!(Scope::All.admitted(&mut sys, &pids), None);
        for c in [&mut inside, &mut other, &mut outside] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_look_after_the_first_reads_new_gone_and_watched_processes() {
        use std::io::{BufRead, Write};
        use std::process::{Command, Stdio};
        let mut sys = Sys::new();
        let mut table = ProcTable::default();
        table.look(&mut sys, &[]);
        // A shell that starts a sleep in the background and waits for a line before it exits.
        let mut sh = Command::new("sh")
            .args(["-c", "sleep 30 & echo $!; read x"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn sh");
        let mut line = String::new();
        std::io::BufReader::new(sh.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the sleep's PID");
        let sleep: u32 = line.trim().parse().expect("a PID");
        let wait = |f: &mut dyn FnMut() -> bool| {
            let start = std::time::Instant::now();
            while !f() {
                assert!(start.elapsed() < std::time::Duration::from_secs(10));
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        };
        // Young, it is read again until it shows its own command line (the first look may have
        // caught it between fork and exec).
        wait(&mut || {
            let snap = table.look(&mut sys, &[]);
            snap.get(sleep)
                .is_some_and(|p| p.cmdline == ["sleep", "30"])
        });
        // From here nothing counts as young: only new and watched processes are read again.
        // This look is a full read (which lets sysinfo's table go).
        table.young_secs = 0;
        table.full_at = None;
        let snap = table.look(&mut sys, &[]);
        assert_eq!(snap.get(sleep).and_then(|p| p.ppid), Some(sh.id()));
        assert!(snap.get(sh.id()).is_some());

        // The shell exits: gone at the next look; the sleep, watched, is seen re-parented.
        writeln!(sh.stdin.take().expect("stdin")).expect("the line");
        sh.wait().expect("sh exits");
        let snap = table.look(&mut sys, &[sleep]);
        assert!(snap.get(sh.id()).is_none(), "an exited process is gone");
        let ppid = snap.get(sleep).and_then(|p| p.ppid);
        assert!(
            ppid.is_some_and(|pp| pp != sh.id()),
            "re-parented: {ppid:?}"
        );
        assert_eq!(
            snap.get(sleep).map(|p| p.cmdline.clone()),
            Some(vec!["sleep".to_string(), "30".to_string()]),
            "a watched process keeps its command line after a full read"
        );

        // Killed but not reaped by its parent (init or a subreaper): watched, it is gone.
        let _ = Command::new("kill")
            .args(["-9", &sleep.to_string()])
            .status();
        wait(&mut || table.look(&mut sys, &[sleep]).get(sleep).is_none());
    }

    #[test]
    fn adopters() {
        let s = Snapshot::from_procs([
            proc(1, 0, 0, "init"),
            proc(10, 1, 5, "systemd"),
            proc(20, 1, 5, "code"),
            proc(30, 10, 6, "python3"),
            proc(31, 20, 6, "python3"),
            proc(32, 1, 6, "python3"),
            proc(33, 99, 6, "python3"),
            proc(40, 1, 50, "bash"),
            proc(34, 40, 6, "python3"),
        ]);
        let is = |pid| s.get(pid).map(|p| s.parent_is_adopter(p));
        assert_eq!(is(30), Some(true), "systemd --user subreaper");
        assert_eq!(is(31), Some(false), "live client");
        assert_eq!(is(32), Some(true), "init");
        assert_eq!(is(33), Some(true), "parent gone");
        assert_eq!(is(34), Some(true), "parent PID reused by a younger process");
    }
}
