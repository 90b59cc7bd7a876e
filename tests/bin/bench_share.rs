//! Benchmark: N MCP clients on one project (real Serena, the test venv's), served by one shared
//! Serena through `launch --share`, against N private `launch`es. Prints, never asserts:
//! - processes and resident memory of the Serenas and their language servers (the bridges'
//!   own processes apart);
//! - time from starting a client to its `initialize` answer: the first shared client (cold),
//!   the later ones (warm), and private ones;
//! - the round trip of `tools/list`, through the bridge and straight to a private Serena
//!   (medians and p95 over many calls).
//!
//! Usage: cargo build --release && cargo run --release --example bench-share [-- CLIENTS CALLS]
//! (defaults: 5 clients, 200 calls).

#[path = "../common/mod.rs"]
mod common;

use common::mcp::*;
use common::*;
use serde_json::json;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

fn tray_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("this example's path");
    let bin = exe
        .parent()
        .and_then(|examples| examples.parent())
        .map(|dir| dir.join("serena-tray"))
        .expect("a target directory");
    if !bin.is_file() {
        eprintln!("bench-share runs the app binary: build it first (cargo build --release)");
        std::process::exit(1);
    }
    bin
}

/// The Serena processes the dashboard sees (its instances) with their trees: how many, and
/// their resident memory, MiB.
fn serena_trees(api: &Daemon) -> (usize, f64) {
    let snap = serena_tray::core::procs::Snapshot::capture(&mut sysinfo::System::new());
    let mut procs = 0;
    let mut bytes = 0;
    let (_, list) = api.call("GET", "/api/instances", None);
    for i in list.as_array().cloned().unwrap_or_default() {
        let Some(pid) = i["pid"].as_u64().map(|p| p as u32) else {
            continue;
        };
        if i["state_reason"] == "dead" {
            continue;
        }
        procs += 1 + snap.descendants(pid).len();
        bytes += tree_rss_bytes(pid);
    }
    (procs, bytes as f64 / (1024.0 * 1024.0))
}

fn p95(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * 0.95).round() as usize]
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(5).max(1);
    let calls = args.get(1).copied().unwrap_or(200).max(1);
    let tray = tray_binary();
    let home = home_with_serena();
    let project = home.jedi_project("bench");
    let project = project.to_str().expect("utf8").to_string();
    let mut reaper = Reaper::default();
    let port = free_port();
    let mut daemon = Command::new(&tray);
    home.env(&mut daemon);
    let d = daemon
        .arg("--serena-home")
        .arg(home.serena_home())
        .args(["daemon", "--port", &port.to_string()])
        .args(["--tray-protocol-port", &free_port().to_string()])
        .args(["--share-linger-seconds", "600"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("daemon");
    let d = reaper.adopt(d);
    let api = Daemon::attach_app(&home, port, d);
    let serena = serena_exe().display().to_string();
    let serena_cmd = [
        serena.as_str(),
        "start-mcp-server",
        "--project",
        &project,
        "--open-web-dashboard",
        "False",
    ];
    let port_s = port.to_string();
    let start = |share: bool, reaper: &mut Reaper| -> (Stream, f64) {
        let opts: &[&str] = if share { &["--share"] } else { &[] };
        let args = launch_args(&home, &["--port", &port_s], opts, &serena_cmd);
        let began = Instant::now();
        let mut c = client(&home, &tray, &strs(&args));
        let mut stream = Stream::of(&mut c);
        reaper.adopt(c);
        let _ = stream.handshake();
        (stream, began.elapsed().as_secs_f64() * 1000.0)
    };

    // Shared: the first is cold, the others attach to it.
    let mut shared = Vec::new();
    let mut warm = Vec::new();
    let (first, cold) = start(true, &mut reaper);
    shared.push(first);
    for _ in 1..n {
        let (s, ms) = start(true, &mut reaper);
        warm.push(ms);
        shared.push(s);
    }
    let (shared_procs, shared_mib) = serena_trees(&api);
    let mut bridged = Vec::with_capacity(calls);
    for i in 0..calls {
        let s = &mut shared[i % n];
        let t = Instant::now();
        s.send(&json!({"jsonrpc": "2.0", "id": 1000 + i, "method": "tools/list"}));
        let _ = s.line(ANSWER);
        bridged.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    drop(shared);

    // Private: N launches of their own.
    let mut private = Vec::new();
    let mut private_start = Vec::new();
    for _ in 0..n {
        let (s, ms) = start(false, &mut reaper);
        private_start.push(ms);
        private.push(s);
    }
    // Once the refresh has seen them all (the shared one and the private ones).
    wait_for("every Serena in the dashboard", ANSWER, || {
        let (_, list) = api.call("GET", "/api/instances", None);
        (list.as_array().map_or(0, Vec::len) > n).then_some(())
    });
    let (all_procs, all_mib) = serena_trees(&api);
    let mut direct = Vec::with_capacity(calls);
    for i in 0..calls {
        let s = &mut private[i % n];
        let t = Instant::now();
        s.send(&json!({"jsonrpc": "2.0", "id": 1000 + i, "method": "tools/list"}));
        let _ = s.line(ANSWER);
        direct.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    // The shared Serena still lingers (600 s): the private ones are the rest.
    let (private_procs, private_mib) = (all_procs - shared_procs, all_mib - shared_mib);

    println!("{n} MCP clients on one project, real Serena (release serena-tray)");
    println!(
        "{:<46} {:>9} {:>11}",
        "Serenas and language servers", "processes", "RSS (MiB)"
    );
    println!(
        "{:<46} {shared_procs:>9} {shared_mib:>11.1}",
        "shared (launch --share)"
    );
    println!(
        "{:<46} {private_procs:>9} {private_mib:>11.1}",
        "private (launch)"
    );
    println!(
        "{:<46} {:>9} {:>9}",
        "client start to its initialize answer (ms)", "median", "p95"
    );
    println!("{:<46} {cold:>9.1} {:>9}", "shared, the first (cold)", "-");
    if !warm.is_empty() {
        println!(
            "{:<46} {:>9.1} {:>9.1}",
            "shared, attaching to it (warm)",
            median(warm.clone()),
            p95(warm)
        );
    }
    println!(
        "{:<46} {:>9.1} {:>9.1}",
        "private",
        median(private_start.clone()),
        p95(private_start)
    );
    println!(
        "{:<46} {:>9} {:>9}",
        "tools/list round trip (ms)", "median", "p95"
    );
    println!(
        "{:<46} {:>9.2} {:>9.2}",
        "through the bridge",
        median(bridged.clone()),
        p95(bridged.clone())
    );
    println!(
        "{:<46} {:>9.2} {:>9.2}",
        "private Serena over stdio",
        median(direct.clone()),
        p95(direct.clone())
    );
    println!(
        "{:<46} {:>9.2}",
        "added by the bridge (median)",
        median(bridged) - median(direct)
    );
}
