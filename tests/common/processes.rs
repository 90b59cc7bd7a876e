//! Processes, as the tests and the benchmark see them from outside: a process tree (a process
//! and everything under it), finding a child or descendant by its command line, killing (one
//! process, a tree, everything a test started through [`Reaper`]), whether a process is alive,
//! and what it uses (memory from `/proc/PID/status` and `smaps_rollup`, CPU seconds from
//! `/proc/PID/stat`). Linux only, like the tests that use it.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serena_tray::core::procs::{Proc, Snapshot, Sys};
use std::process::Child;

/// The processes running now.
pub fn snapshot() -> Snapshot {
    Snapshot::capture(&mut Sys::new())
}

/// The PIDs under `pid` now (its children, theirs, ...).
pub fn descendants(pid: u32) -> Vec<u32> {
    snapshot().descendants(pid).iter().map(|p| p.pid).collect()
}

/// `pid` and the PIDs under it now, `pid` first.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    all.extend(descendants(pid));
    all
}

/// `pid` (if it runs) and every process under it now, `pid` first.
pub fn tree_procs(pid: u32) -> Vec<Proc> {
    let snap = snapshot();
    let root = snap.get(pid).cloned();
    root.into_iter()
        .chain(snap.descendants(pid).into_iter().cloned())
        .collect()
}

/// A process's short name: its program's file name (`serena-tray-window`, `WebKitWebProcess`).
pub fn short_name(p: &Proc) -> String {
    p.cmdline
        .first()
        .and_then(|c| c.rsplit('/').next())
        .unwrap_or(&p.name)
        .to_string()
}

/// The first process under `pid` now that `f` accepts.
pub fn find_under(pid: u32, f: impl Fn(&Proc) -> bool) -> Option<u32> {
    let snap = snapshot();
    let found = snap
        .descendants(pid)
        .into_iter()
        .find(|p| f(p))
        .map(|p| p.pid);
    found
}

/// A child of `parent` now with `arg` among its arguments (`start-mcp-server`, `launch`).
pub fn child_with_arg(parent: u32, arg: &str) -> Option<u32> {
    let snap = snapshot();
    let found = snap
        .iter()
        .find(|p| p.ppid == Some(parent) && p.cmdline.iter().any(|a| a == arg))
        .map(|p| p.pid);
    found
}

/// Kills every process of `pid`'s tree (snapshot first: children get re-parented once it dies).
pub fn kill_tree(pid: u32) {
    for p in tree(pid) {
        kill_one(p);
    }
}

/// SIGKILL to this one process (its children live on: they are to become orphans).
pub fn kill_one(pid: u32) {
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
}

/// Whether a process with this PID exists (and is not a zombie waiting to be reaped).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Processes started by a test; their trees are killed when it is dropped, pass or fail.
#[derive(Default)]
pub struct Reaper {
    pids: Vec<u32>,
    children: Vec<Child>,
}

impl Reaper {
    pub fn adopt(&mut self, child: Child) -> u32 {
        let pid = child.id();
        self.pids.push(pid);
        self.children.push(child);
        pid
    }

    /// Also kill this PID's tree at the end (e.g. an orphan that left our tree).
    pub fn watch(&mut self, pid: u32) {
        self.pids.push(pid);
    }

    pub fn child(&mut self, pid: u32) -> Option<&mut Child> {
        self.children.iter_mut().find(|c| c.id() == pid)
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in self.pids.iter().rev() {
            kill_tree(*pid);
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
    }
}

/// A `key: N kB` line of `/proc/<pid>/<file>`, in KiB (0 if it cannot be read).
pub fn proc_kib(pid: u32, file: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Resident memory of a process, in KiB (0 if it cannot be read).
pub fn rss_kib(pid: u32) -> u64 {
    proc_kib(pid, "status", "VmRSS")
}

/// Sum of `VmRSS` over the process tree of `pid`, in bytes, read from /proc now.
pub fn tree_rss_bytes(pid: u32) -> u64 {
    tree(pid).into_iter().map(rss_kib).sum::<u64>() * 1024
}

/// (PSS, RSS, USS) of `pid` in MiB, from `/proc/PID/smaps_rollup` (0 if it cannot be read).
pub fn memory_mib(pid: u32) -> (f64, f64, f64) {
    let kib = |key| proc_kib(pid, "smaps_rollup", key) as f64 / 1024.0;
    (
        kib("Pss"),
        kib("Rss"),
        kib("Private_Clean") + kib("Private_Dirty"),
    )
}

/// CPU time (user + system, all threads, those that ended too) of `pid`, in seconds, in
/// steps of 10 ms (USER_HZ is 100 on Linux): for processes whose threads come and go. 0 if it
/// cannot be read (gone).
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // After the command name's closing parenthesis: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// The fake Serena servers (tests/common/fake.rs) running for the project `dir` (their command
/// line names it).
pub fn fake_servers_on(dir: &std::path::Path) -> Vec<u32> {
    let d = dir.to_str().unwrap_or_default();
    snapshot()
        .iter()
        .filter(|p| p.cmdline.iter().any(|a| a == d) && super::fake::is_server(&p.cmdline))
        .map(|p| p.pid)
        .collect()
}
