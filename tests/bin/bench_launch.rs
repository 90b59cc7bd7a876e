//! Benchmark: what `serena-tray launch` adds to an MCP session with real Serena (the test venv's
//! serena-agent 2.1.0), measured against Serena started directly, interleaved run by run:
//! - cold: from starting the command to the `initialize` answer on stdout;
//! - warm: one `tools/list` round trip once initialised;
//!
//! and whether the bytes of both answers are the same with and without it. Prints medians and
//! p90 in milliseconds, never asserts.
//!
//! Usage: cargo build --release && cargo run --release --example bench-launch [-- RUNS]
//! (default 20 runs each way).

#[path = "../common/mod.rs"]
mod common;

use common::*;
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

/// The release `serena-tray` next to this example.
fn tray_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("this example's path");
    let bin = exe
        .parent()
        .and_then(|examples| examples.parent())
        .map(|dir| dir.join("serena-tray"))
        .expect("a target directory");
    if !bin.is_file() {
        eprintln!("bench-launch runs the app binary: build it first (cargo build --release)");
        std::process::exit(1);
    }
    bin
}

/// One session: (ms to the initialize answer, ms of a tools/list round trip, the two answers).
fn session(home: &Home, via_launch: Option<&PathBuf>, project: &str) -> (f64, f64, String, String) {
    let serena = serena_exe();
    let mut cmd = match via_launch {
        Some(tray) => {
            let mut c = Command::new(tray);
            c.arg("--serena-home")
                .arg(home.serena_home())
                .args(["launch", "--web-dashboard-global=false", "--"])
                .arg(&serena);
            c
        }
        None => Command::new(&serena),
    };
    home.env(&mut cmd);
    let started = Instant::now();
    let mut child = cmd
        .args([
            "start-mcp-server",
            "--project",
            project,
            "--open-web-dashboard",
            "False",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("serena");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut send = |v: serde_json::Value| {
        writeln!(stdin, "{v}").expect("write");
        stdin.flush().expect("flush");
    };
    send(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-03-26", "capabilities": {},
        "clientInfo": {"name": "bench", "version": "1"}}}),
    );
    let init = lines.next().expect("an answer").expect("a line");
    let cold = started.elapsed().as_secs_f64() * 1000.0;
    send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    let asked = Instant::now();
    send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}));
    let tools = lines.next().expect("an answer").expect("a line");
    let warm = asked.elapsed().as_secs_f64() * 1000.0;
    drop(stdin);
    let _ = child.wait();
    (cold, warm, init, tools)
}

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20)
        .max(1);
    let tray = tray_binary();
    let home = Home::new();
    let project = home.jedi_project("bench");
    let project = project.to_str().expect("utf8");
    let (mut cold, mut warm) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    let mut same = true;
    for _ in 0..runs {
        let (c0, w0, i0, t0) = session(&home, None, project);
        let (c1, w1, i1, t1) = session(&home, Some(&tray), project);
        same &= i0 == i1 && t0 == t1;
        cold[0].push(c0);
        cold[1].push(c1);
        warm[0].push(w0);
        warm[1].push(w1);
    }
    println!("MCP over stdio with real Serena, {runs} runs each way, interleaved (ms)");
    println!(
        "{:<44} {:>9} {:>9} {:>9} {:>9}",
        "measure", "direct", "launch", "added", "p90 add"
    );
    for (what, [direct, launched]) in [
        ("start to the initialize answer", cold),
        ("tools/list round trip", warm),
    ] {
        let added: Vec<f64> = launched.iter().zip(&direct).map(|(l, d)| l - d).collect();
        println!(
            "{what:<44} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            median(direct.clone()),
            median(launched.clone()),
            median(added.clone()),
            p90(added)
        );
    }
    println!(
        "answers byte for byte the same: {}",
        if same { "yes" } else { "NO" }
    );
}
