//! Benchmark: the tray app, the release binary itself, on a desktop of its own (Xvfb and a
//! private session bus with a tray host and a notification server, tests/common/desktop.rs),
//! with N fake Serena instances scoped to this run (tests/bin/fake_serena.rs: cheap, so that N
//! can be 20 on a small machine). Prints measured figures, never asserts:
//! - memory: resident memory (VmRSS) of the app and every process it spawned (the window
//!   process and WebKit's web and network processes included), and the private dirty part of it
//!   (heap, no library or file pages), sampled every half second, medians: with the window
//!   never opened, open (the dashboard loaded), and closed again;
//! - CPU: the same processes over an idle stretch, with the window never opened and open;
//! - zombie latency: from a client's exit to the notification that its Serena became a zombie,
//!   and to the tray icon turning red, past the zombie grace (medians and p90 over rounds).
//!
//! Usage: cargo build --release && cargo run --release --example bench-tray
//! [-- INSTANCES ROUNDS IDLE_SECONDS] (defaults: 20 instances, 10 rounds, 60 s idle).

#[path = "../common/mod.rs"]
mod common;

use common::desktop::{Desktop, NotificationServer, TrayApp, Watcher};
use common::*;
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);
/// The zombie grace of this run.
const GRACE: Duration = Duration::from_secs(1);
/// How many memory samples each figure is the median of.
const SAMPLES: usize = 20;
/// Linux reports process CPU times in clock ticks of 1/100 s (USER_HZ).
const TICKS_PER_SEC: f64 = 100.0;

/// The release `serena-tray` next to this example (target/release/examples/..).
fn tray_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("this example's path");
    let bin = exe
        .parent()
        .and_then(|examples| examples.parent())
        .map(|dir| dir.join("serena-tray"))
        .expect("a target directory");
    if !bin.is_file() {
        eprintln!(
            "bench-tray measures the app binary: build it first (cargo build --release); not found: {}",
            bin.display()
        );
        std::process::exit(1);
    }
    bin
}

/// The app's processes: it and everything under it.
fn tree(pid: u32) -> Vec<u32> {
    let snap = serena_tray::core::procs::Snapshot::capture(&mut sysinfo::System::new());
    let mut pids: Vec<u32> = snap.descendants(pid).iter().map(|p| p.pid).collect();
    pids.push(pid);
    pids
}

fn has_webview(pid: u32) -> bool {
    let snap = serena_tray::core::procs::Snapshot::capture(&mut sysinfo::System::new());
    let found = snap.descendants(pid).iter().any(|p| {
        p.cmdline
            .first()
            .is_some_and(|c| c.ends_with("WebKitWebProcess"))
    });
    found
}

/// A process's private dirty memory (its heap and what it wrote; no library or file pages), KiB.
fn private_dirty_kib(pid: u32) -> u64 {
    proc_kib(pid, "smaps_rollup", "Private_Dirty")
}

/// Median resident memory of the app's tree and median of its private dirty memory, MiB, and
/// what each of its processes held at the last sample (`app 120, WebKitNetworkProcess 40`).
fn memory(pid: u32) -> (f64, f64, String) {
    let mut mib = Vec::with_capacity(SAMPLES);
    let mut dirty = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        mib.push(tree_rss_bytes(pid) as f64 / (1024.0 * 1024.0));
        let kib: u64 = tree(pid).into_iter().map(private_dirty_kib).sum();
        dirty.push(kib as f64 / 1024.0);
        std::thread::sleep(Duration::from_millis(500));
    }
    let snap = serena_tray::core::procs::Snapshot::capture(&mut sysinfo::System::new());
    let parts: Vec<String> = tree(pid)
        .into_iter()
        .rev()
        .map(|p| {
            let name = if p == pid {
                "app".to_string()
            } else {
                snap.get(p)
                    .and_then(|x| x.cmdline.first())
                    .and_then(|c| c.rsplit('/').next())
                    .unwrap_or("?")
                    .to_string()
            };
            format!("{name} {:.0}", rss_kib(p) as f64 / 1024.0)
        })
        .collect();
    (median(mib), median(dirty), parts.join(", "))
}

/// CPU seconds the processes have used so far (user + system).
fn cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter_map(|stat| {
            // The fields after the command name (which may hold spaces) in parentheses.
            let rest = stat.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / TICKS_PER_SEC)
        })
        .sum()
}

/// CPU of the app's tree over `secs` of idling, in % of one core.
fn idle_cpu(pid: u32, secs: u64) -> f64 {
    let pids = tree(pid);
    let before = cpu_seconds(&pids);
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let used = cpu_seconds(&pids) - before;
    100.0 * used / start.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(20).max(1) as usize;
    let rounds = args.get(1).copied().unwrap_or(10).max(1) as usize;
    let idle_secs = args.get(2).copied().unwrap_or(60).max(1);
    let bin = tray_binary();

    let desktop = Desktop::start();
    let watcher = Watcher::start(&desktop);
    let notifications = NotificationServer::start(&desktop);
    let home = Home::new();
    let mut reaper = Reaper::default();
    for _ in 0..n {
        reaper.adopt(spawn_fake(&home, &[], &[]));
    }
    let grace = GRACE.as_secs_f64().to_string();
    let extra = ["--zombie-grace", grace.as_str()];
    let TrayApp {
        pid: app,
        api,
        item,
        ..
    } = TrayApp::start(
        &bin,
        &home,
        &desktop,
        &watcher,
        &mut reaper,
        n,
        &extra,
        WAIT,
    );

    // Memory and CPU: never opened, open, closed again.
    let never = memory(app);
    let cpu_never = idle_cpu(app, idle_secs);
    assert_eq!(
        api.call("POST", "/api/window", Some(json!({}))).0,
        200,
        "the window opens"
    );
    wait_for("the window's webview", WAIT, || {
        has_webview(app).then_some(())
    });
    // Loaded and polling: the page's first round of data has come and gone.
    std::thread::sleep(Duration::from_secs(5));
    let open = memory(app);
    let cpu_open = idle_cpu(app, idle_secs.min(30));
    wait_for("the window to close", WAIT, || {
        Some(desktop.close_windows("Serena Tray")).filter(|n| *n > 0)
    });
    wait_for("the webview's processes to go", WAIT, || {
        (!has_webview(app)).then_some(())
    });
    let closed = memory(app);

    // A client exits and leaves its Serena behind: the notification, and the icon turning red.
    let mut to_notify = Vec::new();
    let mut to_red = Vec::new();
    for _ in 0..rounds {
        let (client, orphan) = spawn_fake_client(&home, &mut reaper);
        let label = format!("{orphan} - NO PROJECT");
        wait_for("the client's Serena in the tray menu", WAIT, || {
            watcher.menu(&item).find(&format!("◐ {label}")).map(|_| ())
        });
        let icon = watcher.icon_file(&item);
        let seen = notifications.received().len();
        let died = Instant::now();
        kill_one(client);
        // Looked at every 2 ms (a D-Bus property read), not at the tests' pace.
        let red = loop {
            if watcher.icon_file(&item) != icon {
                break Instant::now();
            }
            assert!(died.elapsed() < WAIT, "the icon did not change");
            std::thread::sleep(Duration::from_millis(2));
        };
        assert_eq!(watcher.icon_colour(&item), "red");
        let notified = wait_for("the notification", WAIT, || {
            notifications
                .received()
                .get(seen)
                .filter(|x| x.body.contains(&label))
                .map(|x| x.at)
        });
        let past_grace =
            |t: Instant| (t - died).as_secs_f64() * 1000.0 - GRACE.as_secs_f64() * 1000.0;
        to_red.push(past_grace(red));
        to_notify.push(past_grace(notified));
        let (status, _) = api.call(
            "POST",
            &format!("/api/instances/{orphan}/kill"),
            Some(json!({})),
        );
        assert_eq!(status, 200);
        wait_for("the icon back from red", WAIT, || {
            (watcher.icon_colour(&item) != "red").then_some(())
        });
    }

    println!("tray app (release), {n} instances, on Xvfb with a test tray host");
    println!(
        "{:<52} {:>8} {:>8}  RSS of each process (MiB)",
        "memory of the app and its processes (MiB)", "RSS", "private"
    );
    for (what, (mib, dirty, parts)) in [
        ("window never opened", never),
        ("window open (dashboard loaded)", open),
        ("window closed again", closed),
    ] {
        println!("{what:<52} {mib:>8.1} {dirty:>8.1}  {parts}");
    }
    println!("{:<52} {:>10}", "CPU idle (% of one core)", "%");
    println!(
        "{:<52} {cpu_never:>10.2}",
        format!("window never opened, over {idle_secs} s")
    );
    println!(
        "{:<52} {cpu_open:>10.2}",
        format!("window open, over {} s", idle_secs.min(30))
    );
    println!(
        "{:<52} {:>10} {:>8} {:>5}",
        "client exit to ..., past the grace (ms)", "median", "p90", "runs"
    );
    for (what, v) in [
        ("... the notification", to_notify),
        ("... the tray icon red", to_red),
    ] {
        let runs = v.len();
        println!(
            "{what:<52} {:>10.1} {:>8.1} {runs:>5}",
            median(v.clone()),
            p90(v)
        );
    }
}
