//! The system benchmark: the whole program as users run it (the release `serena-tray daemon` as a
//! process of its own, or the core in-process for the refresh rounds), against fake Serena
//! instances (tests/bin/fake_serena.rs: many at once, cheaply). Every figure is measured in this
//! run; the table goes to stdout with a progress line per phase on stderr, and the figures to
//! `<target>/bench/system.json`: `[{"metric","value","unit","n","goal","note"}]`.
//!
//! Usage: `cargo bench --bench system [-- [--quick] [PHASE...]]` (`--quick`: the same metrics,
//! fewer runs and shorter windows; a PHASE word, e.g. `idle`, runs only the phases whose name
//! contains it). The fault soak (`soak`, soak.rs: 5 minutes with `--quick`, 30 without) runs
//! only when named (`-- --quick soak`), never in the run of every phase; `SOAK_SEED`,
//! `SOAK_MINUTES` and `SOAK_FAULT_SECONDS` set its seed, length and fault interval.
//!
//! Memory is PSS (`/proc/PID/smaps_rollup`), with RSS and USS (private) in the note; CPU is
//! time on a CPU over wall time: the daemon's and the tray manager's from each thread's
//! `schedstat` (nanoseconds), the instances' from `/proc/PID/stat` (10 ms ticks, but counting
//! the threads each request starts and ends). Discovery is scoped to this run's own
//! processes (the tests' marker), so Serenas already running on the machine are not counted.

#[path = "../../tests/common/mod.rs"]
mod common;

mod anchor;
mod desktop;
mod on_demand;
mod serena;
mod soak;

use common::*;
use serde_json::{json, Value};
use serena_tray::core::Core;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// One measured figure.
pub(crate) struct Metric {
    metric: String,
    value: f64,
    unit: &'static str,
    n: usize,
    /// The goal, as `<= X` (`None`: reported, not judged).
    goal: Option<f64>,
    note: String,
}

impl Metric {
    pub(crate) fn new(
        metric: impl Into<String>,
        value: f64,
        unit: &'static str,
        n: usize,
    ) -> Metric {
        Metric {
            metric: metric.into(),
            value,
            unit,
            n,
            goal: None,
            note: String::new(),
        }
    }

    pub(crate) fn goal(mut self, at_most: f64) -> Metric {
        self.goal = Some(at_most);
        self
    }

    pub(crate) fn note(mut self, note: impl Into<String>) -> Metric {
        self.note = note.into();
        self
    }

    fn met(&self) -> Option<bool> {
        self.goal.map(|g| self.value <= g)
    }
}

pub(crate) struct Config {
    pub(crate) quick: bool,
}

impl Config {
    pub(crate) fn runs(&self, full: usize, quick: usize) -> usize {
        if self.quick {
            quick
        } else {
            full
        }
    }

    pub(crate) fn window(&self) -> Duration {
        Duration::from_secs(if self.quick { 20 } else { 60 })
    }
}

pub(crate) fn progress(what: &str) {
    eprintln!("== {what}");
}

/// A fake Serena of `home`'s scope, its output discarded.
fn fake(home: &Home, env: &[(&str, &str)]) -> Child {
    spawn_fake(home, &[], env)
}

/// CPU time per thread of `pid` (nanoseconds on a CPU, from `/proc/PID/task/*/schedstat`).
pub(crate) fn thread_cpu_ns(pid: u32) -> HashMap<u32, u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return HashMap::new();
    };
    dir.filter_map(|e| {
        let tid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat")).ok()?;
        Some((tid, stat.split_whitespace().next()?.parse().ok()?))
    })
    .collect()
}

/// CPU seconds used between two [`thread_cpu_ns`] samples, and how many threads ended in
/// between (what they used after the first sample is not counted).
pub(crate) fn cpu_between(before: &HashMap<u32, u64>, after: &HashMap<u32, u64>) -> (f64, usize) {
    let used: u64 = after
        .iter()
        .map(|(tid, ns)| ns.saturating_sub(before.get(tid).copied().unwrap_or(0)))
        .sum();
    let ended = before.keys().filter(|t| !after.contains_key(t)).count();
    (used as f64 / 1e9, ended)
}

/// The process's anonymous memory (heap, stacks): what a leak grows, unlike the file-backed
/// pages of its code, which fault in as code first runs.
fn anonymous_mib(pid: u32) -> f64 {
    proc_kib(pid, "smaps_rollup", "Anonymous") as f64 / 1024.0
}

pub(crate) fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn is(v: &Value, kind: &str, pid: u32) -> bool {
    v["type"] == kind
        && (v["pid"].as_u64() == Some(u64::from(pid))
            || v["instance"]["pid"].as_u64() == Some(u64::from(pid)))
}

fn live_count(d: &Daemon) -> usize {
    let (_, list) = d.call("GET", "/api/instances", None);
    list.as_array().map_or(0, |l| {
        l.iter()
            .filter(|i| i["last_heartbeat"].is_number() && i["state"] != "zombie")
            .count()
    })
}

/// Refresh rounds in-process with N instances: the steady round, and (for `first_sight`) the
/// first round of a new core.
fn refresh_phase(cfg: &Config, out: &mut Vec<Metric>, points: &mut Vec<(usize, f64, f64)>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    for n in [10usize, 100, 500] {
        progress(&format!("refresh rounds with {n} live instances"));
        let home = Home::new();
        let mut reaper = Reaper::default();
        for _ in 0..n {
            reaper.adopt(fake(&home, &[]));
        }
        let core: Core = home.core(10.0);
        wait_for(
            &format!("{n} instances answering"),
            Duration::from_secs(300),
            || {
                let all = rt.block_on(core.refresh()).unwrap_or_default();
                (all.iter().filter(|i| i.last_heartbeat.is_some()).count() >= n).then_some(())
            },
        );
        let runs = cfg.runs(50, 15);
        let mut steady = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t = Instant::now();
            let _ = rt.block_on(core.refresh());
            steady.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let goal = match n {
            100 => Some(30.0),
            500 => Some(150.0),
            _ => None,
        };
        points.push((n, median(steady.clone()), p95(steady.clone())));
        let mut m = Metric::new(
            format!("refresh_p95_ms_{n}"),
            p95(steady.clone()),
            "ms",
            runs,
        )
        .note(format!("median {:.1} ms", median(steady)));
        m.goal = goal;
        out.push(m);
        if n == 100 {
            let runs = cfg.runs(20, 8);
            let mut first = Vec::with_capacity(runs);
            for _ in 0..runs {
                let fresh = home.core(10.0);
                let t = Instant::now();
                let _ = rt.block_on(fresh.refresh());
                first.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            out.push(
                Metric::new(
                    "refresh_first_sight_p95_ms_100",
                    p95(first.clone()),
                    "ms",
                    runs,
                )
                .goal(300.0)
                .note(format!("median {:.1} ms", median(first))),
            );
        }
    }
}

/// The idle daemon with 20 live instances: its CPU and memory, what its probes cost the
/// instances, and how often it rewrites the registry.
fn idle_phase(cfg: &Config, out: &mut Vec<Metric>) {
    let n = 20;
    let window = cfg.window();
    progress(&format!(
        "idle: {n} instances, {} s without the daemon, then {} s with it",
        window.as_secs(),
        window.as_secs()
    ));
    let home = Home::new();
    let mut reaper = Reaper::default();
    let fakes: Vec<u32> = (0..n).map(|_| reaper.adopt(fake(&home, &[]))).collect();
    // Until they all serve (their start-up is not idle).
    wait_for("the fakes' dashboards", Duration::from_secs(120), || {
        (home
            .list_json()
            .iter()
            .filter(|i| i["last_heartbeat"].is_number())
            .count()
            >= n)
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let fakes_cpu = || fakes.iter().map(|p| cpu_seconds(*p)).sum::<f64>();
    let before = fakes_cpu();
    std::thread::sleep(window);
    let alone = fakes_cpu() - before;

    let d = home.daemon();
    wait_for(
        "the daemon to see them live",
        Duration::from_secs(60),
        || (live_count(&d) >= n).then_some(()),
    );
    // Past its start-up: the threads its first looks started have gone back (tokio keeps an
    // idle blocking thread 10 s).
    std::thread::sleep(SETTLE);
    progress(&format!("idle window: daemon PID {}", d.pid));
    let registry = home.registry_path();
    let inode =
        || std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&registry).expect("registry"));
    let (daemon_before, fakes_before) = (thread_cpu_ns(d.pid), fakes_cpu());
    let start = Instant::now();
    let mut writes = 0;
    let mut last = inode();
    while start.elapsed() < window {
        std::thread::sleep(Duration::from_millis(50));
        let now = inode();
        if now != last {
            writes += 1;
            last = now;
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let (daemon_cpu, ended) = cpu_between(&daemon_before, &thread_cpu_ns(d.pid));
    let probed = fakes_cpu() - fakes_before;
    let (pss, rss, uss) = memory_mib(d.pid);
    let threads = proc_kib(d.pid, "status", "Threads");
    out.push(
        Metric::new(
            format!("idle_cpu_pct_{n}"),
            100.0 * daemon_cpu / wall,
            "%",
            1,
        )
        .goal(0.1)
        .note(format!(
            "{wall:.0} s window; {ended} threads ended in it, their part uncounted"
        )),
    );
    out.push(
        Metric::new(format!("idle_pss_mb_{n}"), pss, "MiB", 1)
            .goal(20.0)
            .note(format!(
                "RSS {rss:.1} MiB, USS {uss:.1} MiB, {threads} threads"
            )),
    );
    out.push(
        Metric::new(
            format!("probe_cpu_pct_{n}"),
            100.0 * (probed - alone).max(0.0) / wall,
            "%",
            n,
        )
        .goal(0.2)
        .note(format!(
            "the {n} instances: {:.2} % with the daemon, {:.2} % without",
            100.0 * probed / wall,
            100.0 * alone / wall
        )),
    );
    out.push(
        Metric::new(
            "registry_writes_per_min_idle",
            writes as f64 * 60.0 / wall,
            "/min",
            writes,
        )
        .goal(6.0),
    );
}

/// An exit seen: SIGKILL of a live instance to its `instance_removed` on `/api/events`.
fn death_phase(cfg: &Config, out: &mut Vec<Metric>) {
    let runs = cfg.runs(30, 10);
    progress(&format!("death detection, {runs} instances killed"));
    let home = Home::new();
    let d = home.daemon();
    let rx = events(&d);
    let mut latencies = Vec::new();
    for _ in 0..runs {
        let mut reaper = Reaper::default();
        let pid = reaper.adopt(fake(&home, &[]));
        if wait_event(&rx, Duration::from_secs(30), |v| {
            is(v, "instance_added", pid)
        })
        .is_none()
        {
            continue;
        }
        // Its exit watcher armed.
        std::thread::sleep(Duration::from_millis(200));
        let t = Instant::now();
        kill_one(pid);
        if let Some(at) = wait_event(&rx, Duration::from_secs(10), |v| {
            is(v, "instance_removed", pid)
        }) {
            latencies.push(at.duration_since(t).as_secs_f64() * 1000.0);
        }
    }
    out.push(
        Metric::new(
            "death_detect_p95_ms",
            p95(latencies.clone()),
            "ms",
            latencies.len(),
        )
        .goal(50.0)
        .note(format!("median {:.1} ms", median(latencies))),
    );
}

const GRACE: f64 = 1.0;

/// How long the daemon runs before an idle window is measured.
pub(crate) const SETTLE: Duration = Duration::from_secs(12);

fn graceful_daemon(home: &Home) -> Daemon {
    home.daemon_args(&["--zombie-grace", &GRACE.to_string()])
}

/// An orphan seen: the client SIGKILLed to the instance's `state_changed` to zombie
/// (orphaned), less the grace.
fn orphan_phase(cfg: &Config, out: &mut Vec<Metric>) {
    let runs = cfg.runs(20, 8);
    progress(&format!(
        "orphan detection, {runs} clients killed (grace {GRACE} s)"
    ));
    let home = Home::new();
    let d = graceful_daemon(&home);
    let rx = events(&d);
    let mut over = Vec::new();
    for _ in 0..runs {
        let mut reaper = Reaper::default();
        let (client, serena) = spawn_fake_client(&home, &mut reaper);
        if wait_event(&rx, Duration::from_secs(30), |v| {
            is(v, "instance_added", serena)
        })
        .is_none()
        {
            continue;
        }
        std::thread::sleep(Duration::from_millis(200));
        let t = Instant::now();
        kill_one(client);
        if let Some(at) = wait_event(&rx, Duration::from_secs(15), |v| {
            v["type"] == "state_changed"
                && v["pid"].as_u64() == Some(u64::from(serena))
                && v["to"] == "zombie"
        }) {
            over.push(at.duration_since(t).as_secs_f64() * 1000.0 - GRACE * 1000.0);
        }
    }
    out.push(
        Metric::new(
            "orphan_detect_over_grace_p95_ms",
            p95(over.clone()),
            "ms",
            over.len(),
        )
        .goal(250.0)
        .note(format!(
            "median {:.1} ms past the {GRACE} s grace",
            median(over)
        )),
    );
}

/// Kill all zombies: 20 orphans, each with two children in their own sessions (as language
/// servers are), all obeying SIGTERM.
fn kill_all_phase(out: &mut Vec<Metric>) {
    let n = 20;
    progress(&format!("kill all zombies: {n} trees of 3"));
    let home = Home::new();
    let d = graceful_daemon(&home);
    let mut reaper = Reaper::default();
    let mut pairs = Vec::new();
    for _ in 0..n {
        pairs.push(spawn_fake_client_with(
            &home,
            &mut reaper,
            &[("FAKE_SERENA_CHILDREN", "2")],
        ));
    }
    let trees: Vec<u32> = wait_for("the trees", Duration::from_secs(120), || {
        let all: Vec<u32> = pairs.iter().flat_map(|(_, s)| tree(*s)).collect();
        (all.len() >= n * 3).then_some(all)
    });
    for (client, _) in &pairs {
        kill_one(*client);
    }
    wait_for("all zombies", Duration::from_secs(60), || {
        let (_, list) = d.call("GET", "/api/instances", None);
        let zombies = list
            .as_array()
            .map_or(0, |l| l.iter().filter(|i| i["state"] == "zombie").count());
        (zombies >= n).then_some(())
    });
    let t = Instant::now();
    let (status, _) = d.call("POST", "/api/zombies/kill", Some(json!({})));
    let took = t.elapsed().as_secs_f64() * 1000.0;
    let survivors = trees.iter().filter(|p| alive(**p)).count();
    out.push(
        Metric::new(format!("kill_all_{n}_trees_ms"), took, "ms", n)
            .goal(1500.0)
            .note(format!("HTTP {status}, {} processes", trees.len())),
    );
    out.push(
        Metric::new(
            format!("kill_all_{n}_trees_survivors"),
            survivors as f64,
            "",
            trees.len(),
        )
        .goal(0.0),
    );
}

/// Churn: instances started and killed one after another, in eighths; the daemon's memory and
/// fds after against before. `churn_pss_growth_pct` is the PSS growth over the second half (what
/// a leak shows: it grows with every instance; in the first half the heap reaches its working
/// size), `churn_pss_growth_whole_run_pct` (a note) over the whole run.
fn churn_phase(cfg: &Config, out: &mut Vec<Metric>) {
    let rounds = cfg.runs(2000, 300);
    progress(&format!(
        "churn: {rounds} instances started and killed one after another"
    ));
    let home = Home::new();
    let d = home.daemon();
    let rx = events(&d);
    let warm = |count: usize| {
        let mut done = 0;
        for _ in 0..count {
            let mut reaper = Reaper::default();
            let pid = reaper.adopt(fake(&home, &[]));
            if wait_event(&rx, Duration::from_secs(30), |v| {
                is(v, "instance_added", pid)
            })
            .is_some()
            {
                kill_one(pid);
                if wait_event(&rx, Duration::from_secs(10), |v| {
                    is(v, "instance_removed", pid)
                })
                .is_some()
                {
                    done += 1;
                }
            }
        }
        done
    };
    // Each reading of the daemon's memory is taken the same way: after a pause, with nothing
    // starting or ending.
    let pause = Duration::from_secs(2);
    // A first few, so that what is allocated once (pools, caches) is not counted as growth.
    warm(20);
    std::thread::sleep(pause);
    let (pss0, rss0, _) = memory_mib(d.pid);
    let anon0 = anonymous_mib(d.pid);
    let fds0 = fd_count(d.pid);
    // In eighths, each with the memory then: a leak grows with every step, a pool levels off.
    let mut done = 0;
    let mut path = vec![pss0];
    let mut anon_half = anon0;
    for eighth in 1..=8 {
        let n = rounds * eighth / 8 - rounds * (eighth - 1) / 8;
        done += warm(n);
        std::thread::sleep(pause);
        let (pss, _, _) = memory_mib(d.pid);
        let anon = anonymous_mib(d.pid);
        progress(&format!(
            "churn: {done}/{rounds}, PSS {pss:.1} MiB, anonymous {anon:.1} MiB"
        ));
        if eighth == 4 {
            anon_half = anon;
        }
        path.push(pss);
    }
    let (pss1, rss1, _) = memory_mib(d.pid);
    let anon1 = anonymous_mib(d.pid);
    let fds1 = fd_count(d.pid);
    let pss_half = path[4];
    let by_step = path
        .iter()
        .map(|p| format!("{p:.1}"))
        .collect::<Vec<_>>()
        .join(" ");
    out.push(
        Metric::new(
            "churn_pss_growth_pct",
            100.0 * (pss1 - pss_half) / pss_half,
            "%",
            done,
        )
        .goal(5.0)
        .note(format!(
            "the second half: PSS {pss_half:.1} -> {pss1:.1} MiB (by eighths: {by_step}), \
             anonymous {anon_half:.1} -> {anon1:.1} MiB"
        )),
    );
    out.push(
        Metric::new(
            "churn_pss_growth_whole_run_pct",
            100.0 * (pss1 - pss0) / pss0,
            "%",
            done,
        )
        .note(format!(
            "PSS {pss0:.1} -> {pss1:.1} MiB, RSS {rss0:.1} -> {rss1:.1}, anonymous \
             {anon0:.1} -> {anon1:.1} MiB"
        )),
    );
    out.push(
        Metric::new("churn_fd_growth", fds1 as f64 - fds0 as f64, "fds", done)
            .goal(5.0)
            .note(format!("{fds0} -> {fds1}")),
    );
}

/// A small line chart of the steady refresh round against the instance count (median and p95).
fn svg(points: &[(usize, f64, f64)]) -> String {
    let (w, h, left, bottom) = (480.0, 280.0, 56.0, 40.0);
    let max_n = points.iter().map(|p| p.0).max().unwrap_or(1) as f64;
    let max_ms = points.iter().map(|p| p.2).fold(1.0, f64::max) * 1.1;
    let x = |n: usize| left + (w - left - 16.0) * n as f64 / max_n;
    let y = |ms: f64| (h - bottom) - (h - bottom - 16.0) * ms / max_ms;
    let line = |pick: fn(&(usize, f64, f64)) -> f64| {
        points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.0), y(pick(p))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <line x1=\"{left}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"black\"/>\n\
         <line x1=\"{left}\" y1=\"16\" x2=\"{left}\" y2=\"{b}\" stroke=\"black\"/>\n\
         <text x=\"{cx}\" y=\"{tb}\" text-anchor=\"middle\">live instances</text>\n\
         <text x=\"14\" y=\"{cy}\" transform=\"rotate(-90 14 {cy})\" text-anchor=\"middle\">steady refresh (ms)</text>\n",
        b = h - bottom,
        r = w - 16.0,
        cx = (w + left) / 2.0,
        tb = h - 8.0,
        cy = (h - bottom) / 2.0,
    );
    for p in points {
        out.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
            x(p.0),
            h - bottom + 16.0,
            p.0
        ));
    }
    for ms in [0.0, max_ms / 2.0, max_ms / 1.1] {
        out.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{ms:.0}</text>\n",
            left - 4.0,
            y(ms) + 4.0
        ));
    }
    out.push_str(&format!(
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#2e7d32\" stroke-width=\"2\"/>\n\
         <polyline points=\"{}\" fill=\"none\" stroke=\"#c62828\" stroke-width=\"2\" stroke-dasharray=\"5 3\"/>\n\
         <text x=\"{lx}\" y=\"30\" fill=\"#2e7d32\">median</text>\n\
         <text x=\"{lx}\" y=\"46\" fill=\"#c62828\">p95</text>\n</svg>\n",
        line(|p| p.1),
        line(|p| p.2),
        lx = left + 12.0,
    ));
    out
}

pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    // `cargo bench` passes `--bench`; any other word names the phases to run (all if none).
    let only: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let run = |phase: &str| only.is_empty() || only.iter().any(|o| phase.contains(o.as_str()));
    let cfg = Config { quick };
    let started = Instant::now();
    let mut out = Vec::new();
    let mut points = Vec::new();
    if run("death") {
        death_phase(&cfg, &mut out);
    }
    if run("orphan") {
        orphan_phase(&cfg, &mut out);
    }
    if run("kill") {
        kill_all_phase(&mut out);
    }
    if run("idle") {
        idle_phase(&cfg, &mut out);
    }
    if run("refresh") {
        refresh_phase(&cfg, &mut out, &mut points);
    }
    if run("churn") {
        churn_phase(&cfg, &mut out);
    }
    if run("anchor") {
        anchor::anchor_phase(&cfg, &mut out);
    }
    if run("ui") {
        desktop::ui_phase(&cfg, &mut out);
    }
    if run("tray-app") {
        desktop::tray_app_phase(&cfg, &mut out);
    }
    if run("serena") {
        serena::serena_phase(&cfg, &mut out);
    }
    // Part of the serena phase; `serena-on-demand` (or `on-demand`) runs it alone.
    if run("serena-on-demand") {
        on_demand::on_demand_phase(&cfg, &mut out);
    }
    // Only when named: it takes 5 minutes with --quick, 30 without.
    if only.iter().any(|o| "soak".contains(o.as_str())) {
        soak::soak_phase(&cfg, &mut out);
    }

    println!(
        "\nsystem benchmark{} ({:.0} s), release build, {} cores",
        if quick { " --quick" } else { "" },
        started.elapsed().as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<42} {:>10} {:<5} {:>6} {:>8}  note",
        "metric", "value", "unit", "n", "goal"
    );
    for m in &out {
        let verdict = match m.met() {
            Some(true) => "ok",
            Some(false) => "MISSED",
            None => "",
        };
        println!(
            "{:<42} {:>10.2} {:<5} {:>6} {:>8}  {verdict} {}",
            m.metric,
            m.value,
            m.unit,
            m.n,
            m.goal.map_or(String::new(), |g| format!("<= {g}")),
            m.note
        );
    }
    let json: Vec<Value> = out
        .iter()
        .map(|m| {
            json!({
                "metric": m.metric, "value": m.value, "unit": m.unit, "n": m.n,
                "goal": m.goal.map(|g| format!("<= {g}")), "note": m.note,
            })
        })
        .collect();
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir).expect("target/bench");
    let path = dir.join("system.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json).expect("json")).expect("write");
    eprintln!("wrote {}", path.display());
    if !points.is_empty() {
        let plot = dir.join("refresh.svg");
        std::fs::write(&plot, svg(&points)).expect("write");
        eprintln!("wrote {}", plot.display());
    }
}
