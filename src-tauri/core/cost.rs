//! What each instance costs: resident memory and CPU of its whole process tree (Serena, its
//! language servers and their descendants), read on the refresh the core already does and only
//! for the instances' own trees, never for the whole process table. CPU is the change of each
//! process's accumulated CPU time between two refreshes over the wall time between them (100 is
//! one core); at the first look at a process, its average since it started.
//!
//! Also here: what a process is called in the breakdown (the script an interpreter runs, not the
//! interpreter), and when a cost has moved enough to tell the page (more than a tenth).
//! Deliberately not here: which processes are instances (`refresh`), and signalling anything.

use super::model::{Cost, ProcessCost, ProcessId};
use super::procs::{Proc, Snapshot, Sys};
use std::collections::HashMap;
use std::time::Instant;
use sysinfo::{ProcessRefreshKind, ProcessesToUpdate};

/// Keeps each process's last CPU sample between refreshes.
#[derive(Debug, Default)]
pub(crate) struct CostMeter {
    cpu: HashMap<ProcessId, (u64, Instant)>,
}

impl CostMeter {
    /// The cost of the tree under each of `roots` (blocking: reads just these trees' memory
    /// and CPU time). A root that is not in `snap` has no cost.
    pub(crate) fn measure(
        &mut self,
        sys: &mut Sys,
        snap: &Snapshot,
        roots: &[u32],
    ) -> HashMap<u32, Cost> {
        let trees: Vec<(u32, Vec<&Proc>)> = roots
            .iter()
            .filter_map(|&root| {
                let top = snap.get(root)?;
                let mut tree = vec![top];
                tree.extend(snap.descendants(root));
                Some((root, tree))
            })
            .collect();
        let ids: Vec<sysinfo::Pid> = trees
            .iter()
            .flat_map(|(_, t)| t.iter().map(|p| sysinfo::Pid::from_u32(p.pid)))
            .collect();
        if ids.is_empty() {
            self.cpu.clear();
            return HashMap::new();
        }
        let kind = ProcessRefreshKind::nothing()
            .with_memory()
            .with_cpu()
            .without_tasks();
        sys.refresh_processes_specifics(ProcessesToUpdate::Some(&ids), false, kind);
        let now = Instant::now();
        // What a first sight's age is measured against (start times are in that frame).
        let frame_now = super::procs::now_in_frame();
        let mut seen = HashMap::with_capacity(ids.len());
        let costs = trees
            .into_iter()
            .map(|(root, tree)| {
                let mut processes: Vec<ProcessCost> = tree
                    .into_iter()
                    .map(|p| {
                        let (memory_bytes, cpu_ms) = sys
                            .process(sysinfo::Pid::from_u32(p.pid))
                            .map(|s| (s.memory(), s.accumulated_cpu_time()))
                            .unwrap_or((0, 0));
                        let cpu_percent = match self.cpu.get(&p.id()) {
                            Some(&(before, at)) if cpu_ms >= before => {
                                let wall = now.duration_since(at).as_secs_f64() * 1000.0;
                                if wall > 0.0 {
                                    (cpu_ms - before) as f64 / wall * 100.0
                                } else {
                                    0.0
                                }
                            }
                            // First sight: its average since it started.
                            _ => {
                                let age = frame_now.saturating_sub(p.start_time) as f64;
                                cpu_ms as f64 / (age.max(1.0) * 1000.0) * 100.0
                            }
                        };
                        seen.insert(p.id(), (cpu_ms, now));
                        ProcessCost {
                            pid: p.pid,
                            ppid: p.ppid,
                            name: display_name(p),
                            memory_bytes,
                            cpu_percent,
                        }
                    })
                    .collect();
                // The root stays first; the rest by memory, the biggest first.
                processes[1..].sort_by_key(|p| std::cmp::Reverse(p.memory_bytes));
                (root, summed(processes))
            })
            .collect();
        // Processes no longer in any tree are forgotten.
        self.cpu = seen;
        costs
    }
}

fn summed(processes: Vec<ProcessCost>) -> Cost {
    Cost {
        memory_bytes: processes.iter().map(|p| p.memory_bytes).sum(),
        cpu_percent: processes.iter().map(|p| p.cpu_percent).sum(),
        process_count: processes.len() as u32,
        processes,
    }
}

/// Programs that run a script named by their first argument.
const INTERPRETERS: [&str; 12] = [
    "python", "python3", "node", "nodejs", "bun", "deno", "ruby", "perl", "java", "sh", "bash",
    "dotnet",
];

fn base(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

/// What a process is called in the breakdown: for an interpreter, the script (or `-m` module) it
/// runs; else its program's name.
pub(crate) fn display_name(p: &Proc) -> String {
    let Some(program) = p.cmdline.first() else {
        return p.name.clone();
    };
    let exe = base(program).trim_end_matches(".exe");
    let interpreter = INTERPRETERS.iter().any(|i| {
        exe == *i
            || exe
                .strip_prefix(i)
                .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'))
    });
    if interpreter {
        let mut args = p.cmdline.iter().skip(1);
        while let Some(a) = args.next() {
            if a == "-m" {
                if let Some(module) = args.next() {
                    return module.clone();
                }
            } else if !a.starts_with('-') {
                return base(a).to_string();
            }
        }
    }
    if exe.is_empty() {
        p.name.clone()
    } else {
        exe.to_string()
    }
}

/// The smallest memory move worth telling, in bytes.
const MEMORY_FLOOR: f64 = (4 << 20) as f64;

/// Whether `now` differs enough from the cost last told (`shown`) to tell again: the process
/// count changed, memory moved by more than a tenth and at least 4 MiB, or CPU by more than a
/// tenth and at least two points (so 0.1 % -> 0.2 % is not news).
pub(crate) fn moved(shown: Option<&Cost>, now: Option<&Cost>) -> bool {
    match (shown, now) {
        (None, None) => false,
        (Some(a), Some(b)) => {
            let mem = (a.memory_bytes as f64 - b.memory_bytes as f64).abs();
            let cpu = (a.cpu_percent - b.cpu_percent).abs();
            a.process_count != b.process_count
                || (mem > a.memory_bytes as f64 / 10.0 && mem >= MEMORY_FLOOR)
                || (cpu > a.cpu_percent / 10.0 && cpu >= 2.0)
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(cmdline: &[&str], name: &str) -> Proc {
        Proc {
            pid: 1,
            ppid: None,
            start_time: 0,
            name: name.into(),
            cmdline: cmdline.iter().map(|s| s.to_string()).collect(),
            cwd: None,
        }
    }

    #[test]
    fn an_interpreter_is_named_by_what_it_runs() {
        let n = |c: &[&str]| display_name(&proc(c, "comm"));
        assert_eq!(
            n(&["/venv/bin/python3", "/venv/bin/jedi-language-server"]),
            "jedi-language-server"
        );
        assert_eq!(n(&["python3.11", "-u", "-m", "pylsp"]), "pylsp");
        assert_eq!(
            n(&[
                "node",
                "--max-old-space-size=4096",
                "/x/pyright-langserver.js",
                "--stdio"
            ]),
            "pyright-langserver.js"
        );
        assert_eq!(n(&["/usr/bin/gopls", "serve"]), "gopls");
        assert_eq!(n(&["C:\\Go\\bin\\gopls.exe"]), "gopls");
        assert_eq!(n(&["python3"]), "python3", "nothing run: the interpreter");
        assert_eq!(n(&[]), "comm", "no command line: the kernel's name");
        assert_eq!(n(&["pythonista", "x"]), "pythonista", "not an interpreter");
    }

    fn cost(memory_bytes: u64, cpu_percent: f64, process_count: u32) -> Cost {
        Cost {
            memory_bytes,
            cpu_percent,
            process_count,
            processes: Vec::new(),
        }
    }

    #[test]
    fn only_a_change_of_more_than_a_tenth_is_news() {
        let mb = 1 << 20;
        let a = cost(100 * mb, 50.0, 2);
        assert!(!moved(None, None));
        assert!(moved(None, Some(&a)), "first measurement");
        assert!(moved(Some(&a), None), "gone");
        assert!(!moved(Some(&a), Some(&cost(109 * mb, 54.0, 2))));
        assert!(
            moved(Some(&a), Some(&cost(111 * mb, 50.0, 2))),
            "memory +11 %"
        );
        assert!(
            moved(Some(&a), Some(&cost(89 * mb, 50.0, 2))),
            "memory -11 %"
        );
        assert!(moved(Some(&a), Some(&cost(100 * mb, 56.0, 2))), "CPU +12 %");
        assert!(
            moved(Some(&a), Some(&cost(100 * mb, 50.0, 3))),
            "a new child"
        );
        let idle = cost(100 * mb, 0.1, 2);
        assert!(!moved(Some(&idle), Some(&cost(100 * mb, 0.2, 2))), "jitter");
        assert!(moved(Some(&idle), Some(&cost(100 * mb, 2.5, 2))), "busy");
        let small = cost(20 * mb, 0.0, 1);
        assert!(
            !moved(Some(&small), Some(&cost(23 * mb, 0.0, 1))),
            "+15 % but 3 MiB"
        );
        assert!(
            moved(Some(&small), Some(&cost(25 * mb, 0.0, 1))),
            "+25 %, 5 MiB"
        );
    }

    #[test]
    fn the_meter_reads_this_process_tree() {
        let mut sys = Sys::new();
        let snap = Snapshot::capture(&mut sys);
        let me = std::process::id();
        let mut meter = CostMeter::default();
        let first = meter.measure(&mut sys, &snap, &[me, u32::MAX]);
        assert!(!first.contains_key(&u32::MAX), "no such process, no cost");
        let c = &first[&me];
        assert_eq!(c.processes[0].pid, me, "the root first");
        assert_eq!(c.process_count as usize, c.processes.len());
        assert!(c.memory_bytes > 1 << 20, "{c:?}");
        assert!(
            c.cpu_percent.is_finite() && c.cpu_percent >= 0.0,
            "since start: {c:?}"
        );
        // Burn some CPU, look again: the figure is the share of one core over the interval.
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed().as_millis() < 300 {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let second = meter.measure(&mut sys, &snap, &[me]);
        let cpu = second[&me].cpu_percent;
        assert!(cpu > 20.0 && cpu.is_finite(), "{cpu}");
    }
}
