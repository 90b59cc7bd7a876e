//! Benchmark: what one refresh of the core costs, idle and with N instances, and what the
//! process holds in memory. Prints a table of measured figures (medians over many runs on a
//! shared, noisy machine), never asserts.
//!
//! Usage: cargo run --release --example bench-refresh [-- INSTANCES RUNS]
//! (defaults: 10 fake Serena instances from tests/fake-serena, 50 refreshes each).

use serena_tray::core::procs::{Scope, SCOPE_VAR};
use serena_tray::core::{Core, Settings};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn measure(rt: &tokio::runtime::Runtime, core: &Core, runs: usize) -> (Vec<f64>, usize) {
    let mut times = Vec::with_capacity(runs);
    let mut seen = 0;
    for _ in 0..runs {
        let t = Instant::now();
        seen = rt.block_on(core.refresh()).map(|v| v.len()).unwrap_or(0);
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    (times, seen)
}

/// The benchmark's settings: its own scope (the marker its fakes carry), so that Serenas already
/// running on the machine neither count nor skew the figures.
fn settings(serena_home: &std::path::Path) -> Settings {
    let mut s = Settings::defaults(serena_home.to_path_buf());
    s.scope = Scope::Marked(marker(serena_home));
    s
}

fn marker(serena_home: &std::path::Path) -> String {
    format!("bench-refresh-{}", serena_home.display())
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(10);
    let runs = args.get(1).copied().unwrap_or(50).max(1);
    let home = tempfile::tempdir().expect("tempdir");
    let serena_home = home.path().join(".serena");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    let core = Core::new(settings(&serena_home));
    let (idle, _) = measure(&rt, &core, runs);

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fake-serena/serena");
    let mut fakes: Vec<Child> = (0..n)
        .map(|_| {
            Command::new("python3")
                .arg(&script)
                .arg("start-mcp-server")
                .env("SERENA_HOME", &serena_home)
                .env(SCOPE_VAR, marker(&serena_home))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("fake serena")
        })
        .collect();
    // Wait until all answer.
    let core = Core::new(settings(&serena_home));
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let all = rt.block_on(core.refresh()).unwrap_or_default();
        if all.iter().filter(|i| i.last_heartbeat.is_some()).count() >= n {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (busy, seen) = measure(&rt, &core, runs);

    // One-shot `list` as a user runs it: a new core each time (first sight: overview fetches).
    let mut first = Vec::new();
    for _ in 0..runs.min(20) {
        let fresh = Core::new(settings(&serena_home));
        let t = Instant::now();
        let _ = rt.block_on(fresh.refresh());
        first.push(t.elapsed().as_secs_f64() * 1000.0);
    }

    for f in &mut fakes {
        let _ = f.kill();
        let _ = f.wait();
    }

    // How soon the running daemon sees an instance exit (pidfd on Linux vs the 1 s timer).
    let exits = rt.block_on(exit_latencies(&serena_home, &script, runs.min(15)));

    println!("refresh cost ({runs} runs each; ms)");
    println!("{:<34} {:>9} {:>9}", "case", "median", "p90");
    println!(
        "{:<34} {:>9.2} {:>9.2}",
        "steady, no Serena instance",
        median(idle.clone()),
        percentile(idle.clone(), 0.9)
    );
    println!(
        "{:<34} {:>9.2} {:>9.2}",
        format!("steady, {seen} instances"),
        median(busy.clone()),
        percentile(busy.clone(), 0.9)
    );
    println!(
        "{:<34} {:>9.2} {:>9.2}",
        format!("first sight (list), {seen} instances"),
        median(first.clone()),
        percentile(first, 0.9)
    );
    if !exits.is_empty() {
        println!(
            "{:<34} {:>9.2} {:>9.2}",
            format!("exit seen by the daemon ({} runs)", exits.len()),
            median(exits.clone()),
            percentile(exits, 0.9)
        );
    }
    println!(
        "per-instance steady cost: {:.2} ms; RSS of this process: {} KiB",
        (median(busy) - median(idle)) / n.max(1) as f64,
        rss_kib()
    );
}

/// Starts the daemon in-process and measures, for `runs` fake instances, the time from SIGKILL
/// to the `instance_removed` event.
async fn exit_latencies(
    serena_home: &std::path::Path,
    script: &std::path::Path,
    runs: usize,
) -> Vec<f64> {
    use serena_tray::core::app::{App, Started};
    use serena_tray::core::Event;
    let mut settings = settings(serena_home);
    settings.dashboard.port = 0;
    settings.tray.tray_protocol_port = 0;
    let Ok(Started::Running(app)) = App::start(settings).await else {
        eprintln!("the daemon did not start; no exit figures");
        return Vec::new();
    };
    let mut out = Vec::new();
    for _ in 0..runs {
        let mut rx = app.core().subscribe();
        let Ok(mut child) = tokio::process::Command::new("python3")
            .arg(script)
            .arg("start-mcp-server")
            .env(SCOPE_VAR, marker(serena_home))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        else {
            break;
        };
        let pid = child.id().unwrap_or(0);
        // Wait until the daemon has seen it (and its exit watcher is armed).
        let seen = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match rx.recv().await {
                    Ok(Event::InstanceAdded { instance }) if instance.pid == pid => return true,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return false,
                    _ => {}
                }
            }
        })
        .await;
        if !matches!(seen, Ok(true)) {
            let _ = child.kill().await;
            continue;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = Instant::now();
        let _ = child.start_kill();
        let removed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match rx.recv().await {
                    Ok(Event::InstanceRemoved { pid: p, .. }) if p == pid => return true,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return false,
                    _ => {}
                }
            }
        })
        .await;
        let _ = child.wait().await;
        if matches!(removed, Ok(true)) {
            out.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    app.shutdown().await;
    out
}
