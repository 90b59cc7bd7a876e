//! Serena on demand (`launch --share` with the handshake cache and sleep), with real Serena
//! 2.1.0: part of the `serena` phase (`serena-on-demand` runs it alone). Each project's cache is
//! filled first by one client (as the first chat on a project does), its session released.
//!
//! - `on_demand_idle_serena_pss_mb_10`: ten clients attached on three projects, each through its
//!   handshake (`initialize`, `tools/list`), no tool called: the PSS of every Serena and language
//!   server in the run's scope.
//! - `on_demand_bridges_pss_mb_10`: the ten `launch --share` bridges themselves, summed.
//! - `on_demand_initialize_p95_ms`: from starting a client's `launch --share` to its
//!   `initialize` answer, from the cache (the ten above); direct Serena's start-up is in the note.
//! - `on_demand_first_call_ratio`: the first `tools/call` on a cold key (no Serena runs): from
//!   starting `launch --share` through `initialize` to the call's answer, over the same from
//!   starting `serena start-mcp-server` (stdio) directly; interleaved, medians.
//! - `wake_call_ratio`: a call to a session put to sleep, from sending it to its answer, over
//!   the same for the first call of a session not started yet (the same bridge, the same
//!   tool); medians.
//! - `bridge_call_overhead_p95_ms`: a warm `tools/call` through the bridge less the same call
//!   made directly over HTTP to the same shared Serena, interleaved: the p95 of one less the
//!   p95 of the other (the median of the pairs' differences in the note).
//!
//! The call is `initial_instructions` (no language server work, so the figure is the path, not
//! the tool).

use crate::common::mcp::{launch_args, Stream};
use crate::common::*;
use crate::serena::{settle, stdio_client, Http, CLIENT};
use crate::{progress, Config, Metric};
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};

/// The tool every timed call calls.
fn call(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "initial_instructions", "arguments": {}}})
}

/// How long a session may take to fall asleep in the wake runs.
const SLEEP_MINUTES: &str = "0.03";

pub(crate) fn on_demand_phase(cfg: &Config, out: &mut Vec<Metric>) {
    progress("serena on demand: a home with real Serena and three jedi projects");
    let home = home_with_serena();
    let projects: Vec<String> = ["od-a", "od-b", "od-c"]
        .iter()
        .map(|n| home.jedi_project(n).display().to_string())
        .collect();
    // Released as soon as its last client goes: each run starts with no Serena.
    let d = home.daemon_args(&["--share-linger-seconds", "0"]);
    for p in &projects {
        fill_cache(&home, &d, p);
    }
    idle_clients(out, &home, &d, &projects);
    first_call(cfg, out, &home, &d, &projects[0]);
    wake_call(cfg, out, &home, &d, &projects[1]);
    call_overhead(cfg, out, &home, &d, &projects[2]);
}

/// A `launch --share` client (with more launch options) on `project`, started with the
/// benchmark's pipes; its stream and PID.
fn bridge(
    home: &Home,
    d: &Daemon,
    project: &str,
    opts: &[&str],
    reaper: &mut Reaper,
) -> (Stream, u32) {
    let serena = serena_exe().display().to_string();
    let port = d.port.to_string();
    let opts: Vec<&str> = ["--share"].iter().chain(opts).copied().collect();
    let mut cmd = Command::new(tray_exe());
    home.env(&mut cmd);
    cmd.args(launch_args(
        home,
        &["--port", &port],
        &opts,
        &serena_mcp(&serena, project),
    ));
    stdio_client(home, cmd, reaper)
}

/// One client with no cache entry: Serena starts at once and the entry is filled; then it
/// goes, and so does its session.
fn fill_cache(home: &Home, d: &Daemon, project: &str) {
    let mut reaper = Reaper::default();
    let (mut s, _) = bridge(home, d, project, &[], &mut reaper);
    s.initialize(CLIENT);
    s.tools_list();
    let entries = || {
        let dir = home.serena_home().join("tray/handshakes");
        std::fs::read_dir(dir).map_or(0, |d| d.count())
    };
    let before = entries();
    wait_for(
        "the handshake cache filled",
        Duration::from_secs(60),
        || (entries() > before).then_some(()),
    );
    drop(s);
    drop(reaper);
    settle(home, &[d.pid]);
}

/// `on_demand_idle_serena_pss_mb_10`, `on_demand_bridges_pss_mb_10`,
/// `on_demand_initialize_p95_ms`.
fn idle_clients(out: &mut Vec<Metric>, home: &Home, d: &Daemon, projects: &[String]) {
    let n = 10;
    progress(&format!(
        "serena on demand: {n} clients on 3 projects, no call"
    ));
    let mut reaper = Reaper::default();
    let (mut streams, mut bridges, mut init) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let began = Instant::now();
        let (mut s, pid) = bridge(home, d, &projects[i % projects.len()], &[], &mut reaper);
        s.initialize(CLIENT);
        init.push(began.elapsed().as_secs_f64() * 1000.0);
        s.tools_list();
        streams.push(s);
        bridges.push(pid);
    }
    // Every client attached (registered in the background) before anything is read.
    wait_for("ten clients attached", Duration::from_secs(30), || {
        let (_, list) = d.call("GET", "/api/sessions", None);
        let attached: usize = list
            .as_array()?
            .iter()
            .filter_map(|s| s["attached"].as_array().map(Vec::len))
            .sum();
        (attached == n).then_some(())
    });
    let mut others = home.scoped_pids();
    others.retain(|p| *p != d.pid && !bridges.contains(p) && alive(*p));
    // Folded from +0.0 (an empty f64 sum is -0.0).
    let serena_pss = others.iter().fold(0.0, |sum, p| sum + memory_mib(*p).0);
    let bridges_pss: f64 = bridges.iter().map(|p| memory_mib(*p).0).sum();
    let (_, list) = d.call("GET", "/api/sessions", None);
    let asleep = list.as_array().map_or(0, |l| {
        l.iter().filter(|s| s.get("asleep_since").is_some()).count()
    });
    out.push(
        Metric::new(
            format!("on_demand_idle_serena_pss_mb_{n}"),
            serena_pss,
            "MiB",
            n,
        )
        .goal(0.0)
        .note(format!(
            "{} other processes in scope; {asleep} sessions asleep (not started)",
            others.len()
        )),
    );
    out.push(
        Metric::new(
            format!("on_demand_bridges_pss_mb_{n}"),
            bridges_pss,
            "MiB",
            n,
        )
        .goal(20.0)
        .note(format!("{:.1} MiB a bridge", bridges_pss / n as f64)),
    );
    out.push(
        Metric::new("on_demand_initialize_p95_ms", p95(init.clone()), "ms", n)
            .goal(20.0)
            .note(format!(
                "median {:.1} ms, from starting launch --share to the initialize answer; \
                 a direct Serena answers after its start-up (over 1 s, see \
                 on_demand_first_call_ratio)",
                median(init)
            )),
    );
    drop(streams);
    drop(reaper);
    settle(home, &[d.pid]);
}

/// `on_demand_first_call_ratio`.
fn first_call(cfg: &Config, out: &mut Vec<Metric>, home: &Home, d: &Daemon, project: &str) {
    let runs = cfg.runs(10, 4);
    progress(&format!(
        "serena on demand: first call on a cold key against a direct Serena, {runs} runs each"
    ));
    let (mut bridged, mut direct) = (Vec::new(), Vec::new());
    for run in 0..runs {
        for via_bridge in [run % 2 == 0, run % 2 == 1] {
            let mut reaper = Reaper::default();
            let began = Instant::now();
            let (mut s, _) = if via_bridge {
                bridge(home, d, project, &[], &mut reaper)
            } else {
                let serena = serena_exe().display().to_string();
                let argv = serena_mcp(&serena, project);
                let mut cmd = Command::new(argv[0]);
                home.env(&mut cmd);
                cmd.args(&argv[1..]);
                stdio_client(home, cmd, &mut reaper)
            };
            s.initialize(CLIENT);
            s.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
            s.send(&call(5));
            let answer = s.line(Duration::from_secs(120));
            assert!(answer.contains("\"result\""), "{answer}");
            let ms = began.elapsed().as_secs_f64() * 1000.0;
            if via_bridge {
                bridged.push(ms);
            } else {
                direct.push(ms);
            }
            drop(s);
            drop(reaper);
            settle(home, &[d.pid]);
        }
    }
    let (b, r) = (median(bridged), median(direct));
    out.push(
        Metric::new("on_demand_first_call_ratio", b / r, "x", runs)
            .goal(1.05)
            .note(format!(
                "medians: through the bridge {b:.0} ms, direct {r:.0} ms (launch, initialize, \
                 the first tools/call)"
            )),
    );
}

/// `wake_call_ratio`.
fn wake_call(cfg: &Config, out: &mut Vec<Metric>, home: &Home, d: &Daemon, project: &str) {
    let runs = cfg.runs(10, 5);
    progress(&format!(
        "serena on demand: a call to a sleeping session against a first call, {runs} runs"
    ));
    let (mut cold, mut woken) = (Vec::new(), Vec::new());
    let timed = |s: &mut Stream, id: u64| {
        let sent = Instant::now();
        s.send(&call(id));
        let answer = s.line(Duration::from_secs(120));
        assert!(answer.contains("\"result\""), "{answer}");
        sent.elapsed().as_secs_f64() * 1000.0
    };
    for _ in 0..runs {
        let mut reaper = Reaper::default();
        let sleep = ["--share-sleep-minutes", SLEEP_MINUTES];
        let (mut s, _) = bridge(home, d, project, &sleep, &mut reaper);
        s.initialize(CLIENT);
        s.tools_list();
        cold.push(timed(&mut s, 10));
        wait_for("the session asleep", Duration::from_secs(60), || {
            let (_, list) = d.call("GET", "/api/sessions", None);
            let asleep = list.as_array()?.first()?["asleep_reason"] == "unused";
            (asleep && serenas_of(d).is_empty()).then_some(())
        });
        woken.push(timed(&mut s, 11));
        drop(s);
        drop(reaper);
        settle(home, &[d.pid]);
    }
    let (w, c) = (median(woken), median(cold));
    out.push(
        Metric::new("wake_call_ratio", w / c, "x", runs)
            .goal(1.05)
            .note(format!(
                "medians: a call to a sleeping session {w:.0} ms, a first call {c:.0} ms"
            )),
    );
}

/// The sessions' Serenas and their language servers: the processes under the daemon.
fn serenas_of(d: &Daemon) -> Vec<u32> {
    let mut under = descendants(d.pid);
    under.retain(|p| alive(*p));
    under
}

/// `bridge_call_overhead_p95_ms`.
fn call_overhead(cfg: &Config, out: &mut Vec<Metric>, home: &Home, d: &Daemon, project: &str) {
    let runs = cfg.runs(200, 60);
    progress(&format!(
        "serena on demand: warm calls through the bridge and directly, {runs} each"
    ));
    let mut reaper = Reaper::default();
    let (mut s, _) = bridge(home, d, project, &["--on-demand=false"], &mut reaper);
    s.initialize(CLIENT);
    s.tools_list();
    let (_, list) = d.call("GET", "/api/sessions", None);
    let url = list[0]["url"]
        .as_str()
        .expect("the session's URL")
        .to_string();
    let http = Http::new();
    let direct_session = http.rt.block_on(async {
        let (sid, _, _) = http::mcp(&http.client, &url, None, http::mcp_initialize(CLIENT)).await;
        let sid = sid.expect("an MCP session");
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        http::mcp(&http.client, &url, Some(&sid), note).await;
        sid
    });
    let direct = |id: u64| {
        let sent = Instant::now();
        let (_, status, v) = http.rt.block_on(http::mcp(
            &http.client,
            &url,
            Some(&direct_session),
            call(id),
        ));
        assert_eq!(status, 200, "{v}");
        sent.elapsed().as_secs_f64() * 1000.0
    };
    let mut bridged = |id: u64| {
        let sent = Instant::now();
        s.send(&call(id));
        let answer = s.line(Duration::from_secs(30));
        assert!(answer.contains("\"result\""), "{answer}");
        sent.elapsed().as_secs_f64() * 1000.0
    };
    // Warm both paths first.
    direct(1);
    bridged(1);
    let mut diffs = Vec::new();
    let (mut b_all, mut d_all) = (Vec::new(), Vec::new());
    for i in 0..runs as u64 {
        let (b, r) = if i % 2 == 0 {
            let b = bridged(100 + i);
            (b, direct(100 + i))
        } else {
            let r = direct(100 + i);
            (bridged(100 + i), r)
        };
        diffs.push(b - r);
        b_all.push(b);
        d_all.push(r);
    }
    // The p95 of each path, then the difference: a pair's difference carries Serena's own
    // jitter twice (a tool call waits on its task queue; tens of ms now and then, either way).
    let (b95, d95) = (p95(b_all.clone()), p95(d_all.clone()));
    out.push(
        Metric::new("bridge_call_overhead_p95_ms", b95 - d95, "ms", runs)
            .goal(2.0)
            .note(format!(
                "p95: through the bridge {b95:.1} ms, direct {d95:.1} ms; medians {:.1} and \
                 {:.1} ms; the median of the pairs' differences {:.2} ms",
                median(b_all),
                median(d_all),
                median(diffs)
            )),
    );
    drop(s);
    drop(reaper);
    settle(home, &[d.pid]);
}
