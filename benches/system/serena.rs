//! The phase with real Serena 2.1.0 (the test venv's serena-agent, its jedi language server),
//! one project (`bench`, jedi) in one home for every sub-measurement; the processes of one run
//! are all gone (checked by the scope marker) before the next starts. Both sides of a comparison
//! run interleaved run by run, in alternating order, so that drift and warm caches favour
//! neither.
//!
//! - `request_session_overhead_ratio`: the daemon's instance manager against Serena started by
//!   hand. From `POST /request-session` to the session's MCP endpoint answering `initialize`,
//!   divided by the same for `serena start-mcp-server` with the arguments a session gets
//!   (streamable-http on a free port), started here and polled until it answers; medians. Each
//!   session is released (`POST /release-session`) and its tree seen gone before the next run.
//!   A session is handed out once Serena's dashboard answers too (Serena opens it a few tens of
//!   ms after its MCP endpoint), as the instance manager's readiness is defined. As Serena's
//!   start-up varies from run to run by about as much as the goal allows, the note also gives
//!   the hand-out delay within each session run: from the moment the session's own Serena
//!   answers `initialize` (polled from its spawn on, as the hand-started one is) to the moment
//!   the client's does.
//! - `launch_initialize_overhead_ms`: what `serena-tray launch` adds to an MCP client's start:
//!   from starting the command to the `initialize` answer on its stdout (stdio, as MCP clients
//!   run Serena), through `launch` less directly, against an MCP server that answers at once
//!   (the fake Serena with `FAKE_SERENA_STDIO_MCP=1`), so that no server's start-up spread hides
//!   it: [`FAKE_RUNS`] runs each way, interleaved (launch, direct, launch, ...), cold (a process
//!   each), the difference within each pair; the median of the differences, their p95 in
//!   `launch_initialize_overhead_p95_ms`. The note gives `launch`'s own whole life
//!   (`launch -- true` against `true`) and whether the answers (`initialize`, `tools/list`) are
//!   the same bytes both ways.
//! - `launch_initialize_overhead_real_serena_ms` (a note, not judged): the same against real
//!   Serena, medians of fewer runs, in alternating order. Serena's own start-up varies by far
//!   more from run to run than `launch` adds, so this is mostly noise: the note gives the spread.
//! - `share_memory_ratio_5`: five MCP clients on one project: the PSS of the Serena processes
//!   and their language servers when they share one Serena (`launch --share`) divided by the
//!   same for five plain `launch`es (the bridges' and launchers' own processes apart, given in
//!   the note). Each side is read once every language server runs;
//!   the shared session is released before the private side starts, so no page is shared
//!   between the two sides.
//! - `share_warm_attach_ms`: from starting `launch --share --on-demand=false` to its
//!   `initialize` answer once the shared session is warm (the clients after the first); median,
//!   p95 in the note.
//!
//! The clients here are `serena-tray` (or Serena) themselves with the benchmark's pipes, no
//! stand-in client process between: what is timed is the program, not a Python start-up.

use crate::common::fake;
use crate::common::mcp::{launch_args, Stream};
use crate::common::*;
use crate::{progress, Config, Metric};
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How often a Serena started by hand is asked whether it answers `initialize` yet (a refused
/// connection costs microseconds; this bounds what the polling adds to its side).
const POLL: Duration = Duration::from_millis(5);
/// How long one real Serena may take to answer `initialize` over HTTP.
const READY: Duration = Duration::from_secs(120);
/// How long a run's processes may take to be gone once ended (then they are killed).
const GONE: Duration = Duration::from_secs(20);
/// The MCP client name the benchmark gives in `initialize`.
pub(crate) const CLIENT: &str = "serena-tray-bench";
/// Runs of each side of `launch_initialize_overhead_ms` (with `--quick` too: they take
/// milliseconds).
const FAKE_RUNS: usize = 50;

/// `request_session_overhead_ratio`, `launch_initialize_overhead_ms` (and its p95 and real
/// Serena's), `share_memory_ratio_5`, `share_warm_attach_ms`.
pub(crate) fn serena_phase(cfg: &Config, out: &mut Vec<Metric>) {
    progress("serena: a home with real Serena and a jedi project");
    let home = home_with_serena();
    let project = home.jedi_project("bench");
    let project = project.to_str().expect("utf8");
    request_session(cfg, out, &home, project);
    launch_overhead(cfg, out, &home, project);
    share(out, &home, project);
}

/// `request_session_overhead_ratio`.
fn request_session(cfg: &Config, out: &mut Vec<Metric>, home: &Home, project: &str) {
    // Even, so that each side goes first equally often.
    let runs = cfg.runs(10, 4);
    progress(&format!(
        "serena: /request-session against serena start-mcp-server to MCP-ready, {runs} runs each"
    ));
    let d = home.daemon();
    let http = Http::new();
    // One start first, not counted: the first Serena reads its files from disk.
    raw_http_start(home, project, &http);
    let mut leftovers = settle(home, &[d.pid]);
    let (mut raw, mut session, mut handout) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        for by_hand in [run % 2 == 0, run % 2 == 1] {
            if by_hand {
                raw.push(raw_http_start(home, project, &http));
            } else {
                let (ms, after_serena) = session_start(&d, project, &http);
                session.push(ms);
                handout.push(after_serena);
            }
            leftovers += settle(home, &[d.pid]);
        }
    }
    let (raw_ms, session_ms) = (median(raw), median(session));
    let mut note = format!(
        "medians: session {session_ms:.0} ms, serena start-mcp-server {raw_ms:.0} ms \
         ({:+.0} ms); a session is handed out {:.0} ms (median; p90 {:.0} ms) after its own \
         Serena answers initialize",
        session_ms - raw_ms,
        median(handout.clone()),
        p90(handout)
    );
    note_leftovers(&mut note, leftovers);
    out.push(
        Metric::new(
            "request_session_overhead_ratio",
            session_ms / raw_ms,
            "x",
            runs,
        )
        .goal(1.05)
        .note(note),
    );
}

/// Serena started here as a session would be, until its MCP endpoint answers `initialize`; ms.
/// Its tree is killed at the end.
fn raw_http_start(home: &Home, project: &str, http: &Http) -> f64 {
    let port = free_port().to_string();
    let log = home.path().join(format!("raw-{port}.log"));
    let log = std::fs::File::create(log).expect("log file");
    let mut cmd = Command::new(serena_exe());
    home.env(&mut cmd);
    cmd.args(["start-mcp-server", "--project", project])
        .args(["--transport", "streamable-http"])
        .args(["--host", "127.0.0.1", "--port", &port])
        .args(["--open-web-dashboard", "False"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    let mut reaper = Reaper::default();
    let began = Instant::now();
    reaper.adopt(cmd.spawn().expect("serena"));
    let at = http.initialized(&format!("http://127.0.0.1:{port}/mcp"));
    at.duration_since(began).as_secs_f64() * 1000.0
}

/// A session requested and its MCP endpoint answering `initialize`: (ms, of which ms after its
/// Serena first answered `initialize`, asked from the moment the daemon announced it). Released
/// at the end.
fn session_start(d: &Daemon, project: &str, http: &Http) -> (f64, f64) {
    let events = events(d);
    // Serena's own readiness inside the session, with the daemon's hand-out time apart: its
    // MCP port read from its command line as soon as the daemon has spawned it, then polled
    // as the hand-started Serena is.
    let serena_ready = std::thread::spawn(move || {
        let pid = loop {
            let (_, v) = events.recv_timeout(READY).expect("session_launching");
            if v["type"] == "session_launching" {
                break v["pid"].as_u64().expect("pid");
            }
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("its command line");
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let port = args
            .iter()
            .position(|a| a == "--port")
            .and_then(|i| args.get(i + 1))
            .expect("--port")
            .clone();
        Http::new().initialized(&format!("http://127.0.0.1:{port}/mcp"))
    });
    let began = Instant::now();
    let (status, s) = http.post(
        &d.url("/request-session"),
        &d.token,
        json!({ "project_path": project }),
    );
    assert_eq!(status, 201, "request-session: {s}");
    let at = http.initialized(s["url"].as_str().expect("url"));
    let ms = at.duration_since(began).as_secs_f64() * 1000.0;
    let serena_at = serena_ready.join().expect("the session's own readiness");
    let handout = at.saturating_duration_since(serena_at).as_secs_f64() * 1000.0;
    let (status, r) = d.call(
        "POST",
        "/release-session",
        Some(json!({ "session_id": s["session_id"] })),
    );
    assert_eq!(status, 200, "release-session: {r}");
    (ms, handout)
}

/// `launch_initialize_overhead_ms`, `launch_initialize_overhead_p95_ms`,
/// `launch_initialize_overhead_real_serena_ms`.
fn launch_overhead(cfg: &Config, out: &mut Vec<Metric>, home: &Home, project: &str) {
    launch_overhead_fake(cfg, out, home, project);
    launch_overhead_real(cfg, out, home, project);
}

/// `launch_initialize_overhead_ms` and its p95: against the fake's stdio MCP server.
fn launch_overhead_fake(cfg: &Config, out: &mut Vec<Metric>, home: &Home, project: &str) {
    progress(&format!(
        "serena: the initialize answer of an MCP server that answers at once (the fake's stdio \
         mode) through serena-tray launch and directly, {FAKE_RUNS} runs each"
    ));
    // One each first, not counted: the binaries' pages read from disk.
    for via_launch in [true, false] {
        stdio_start(home, project, Server::Fake, via_launch);
        settle(home, &[]);
    }
    let (mut launched, mut direct, mut diff) = (Vec::new(), Vec::new(), Vec::new());
    let mut same = true;
    let mut leftovers = 0;
    for _ in 0..FAKE_RUNS {
        let (l, l_answers) = stdio_start(home, project, Server::Fake, true);
        leftovers += settle(home, &[]);
        let (d, d_answers) = stdio_start(home, project, Server::Fake, false);
        leftovers += settle(home, &[]);
        same &= l_answers == d_answers;
        launched.push(l);
        direct.push(d);
        diff.push(l - d);
    }
    let own = launch_own_cost(home, cfg.runs(50, 20));
    let mut note = format!(
        "median of {FAKE_RUNS} interleaved differences; launch {:.1} ms (p95 {:.1}), direct \
         {:.1} ms (p95 {:.1}), medians; launch -- true exits {own:.1} ms after true; same \
         answers: {}",
        median(launched.clone()),
        p95(launched),
        median(direct.clone()),
        p95(direct),
        if same { "yes" } else { "NO" }
    );
    note_leftovers(&mut note, leftovers);
    out.push(
        Metric::new(
            "launch_initialize_overhead_ms",
            median(diff.clone()),
            "ms",
            FAKE_RUNS,
        )
        .goal(5.0)
        .note(note),
    );
    out.push(Metric::new(
        "launch_initialize_overhead_p95_ms",
        p95(diff),
        "ms",
        FAKE_RUNS,
    ));
}

/// `launch_initialize_overhead_real_serena_ms`: the same against real Serena (a note).
fn launch_overhead_real(cfg: &Config, out: &mut Vec<Metric>, home: &Home, project: &str) {
    // Even, so that each side goes first equally often.
    let runs = cfg.runs(20, 6);
    progress(&format!(
        "serena: real Serena's initialize answer through serena-tray launch and directly, \
         {runs} runs each"
    ));
    let (mut direct, mut launched) = (Vec::new(), Vec::new());
    let mut same = true;
    let mut leftovers = 0;
    for run in 0..runs {
        let mut answers = Vec::new();
        for via_launch in [run % 2 == 1, run % 2 == 0] {
            let (ms, bytes) = stdio_start(home, project, Server::Real, via_launch);
            if via_launch {
                launched.push(ms);
            } else {
                direct.push(ms);
            }
            answers.push(bytes);
            leftovers += settle(home, &[]);
        }
        same &= answers[0] == answers[1];
    }
    let (launched_ms, direct_ms) = (median(launched.clone()), median(direct.clone()));
    let spread = |v: &[f64]| {
        let (lo, hi) = v
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
        format!("{lo:.0}-{hi:.0}")
    };
    let mut note = format!(
        "medians: launch {launched_ms:.0} ms ({} ms), direct {direct_ms:.0} ms ({} ms); \
         same answers: {}",
        spread(&launched),
        spread(&direct),
        if same { "yes" } else { "NO" }
    );
    note_leftovers(&mut note, leftovers);
    out.push(
        Metric::new(
            "launch_initialize_overhead_real_serena_ms",
            launched_ms - direct_ms,
            "ms",
            runs,
        )
        .note(note),
    );
}

/// What `launch` costs by itself, without the spread of Serena's start-up: how much later
/// `serena-tray launch -- true` exits than `true` alone, medians of `runs` each, interleaved
/// (its whole life: start-up, spawn, wait and exit, so at least what it adds to a start).
fn launch_own_cost(home: &Home, runs: usize) -> f64 {
    let time = |via_launch: bool| {
        let mut cmd = if via_launch {
            let mut c = Command::new(tray_exe());
            c.arg("--serena-home").arg(home.serena_home()).args([
                "launch",
                "--web-dashboard-global=false",
                "--",
                "true",
            ]);
            c
        } else {
            Command::new("true")
        };
        home.env(&mut cmd);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let began = Instant::now();
        let status = cmd.status().expect("run true");
        assert!(status.success(), "{status}");
        began.elapsed().as_secs_f64() * 1000.0
    };
    let (mut direct, mut launched) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        direct.push(time(false));
        launched.push(time(true));
    }
    median(launched) - median(direct)
}

/// The MCP server whose start is timed over stdio.
#[derive(Clone, Copy)]
enum Server {
    /// Real Serena 2.1.0.
    Real,
    /// The fake Serena's stdio MCP server, which answers at once.
    Fake,
}

/// An MCP server over stdio (through `serena-tray launch` or not), as an MCP client starts it:
/// ms from starting the command to the `initialize` answer, and the answers to `initialize` and
/// `tools/list`. Its tree is killed at the end.
fn stdio_start(
    home: &Home,
    project: &str,
    server: Server,
    via_launch: bool,
) -> (f64, (String, String)) {
    let exe = match server {
        Server::Real => serena_exe(),
        Server::Fake => fake::exe(),
    };
    let mut cmd = if via_launch {
        let mut c = Command::new(tray_exe());
        c.arg("--serena-home")
            .arg(home.serena_home())
            .args(["launch", "--web-dashboard-global=false", "--"])
            .arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    home.env(&mut cmd);
    if let Server::Fake = server {
        cmd.env("FAKE_SERENA_STDIO_MCP", "1");
    }
    cmd.args(["start-mcp-server", "--project", project])
        .args(["--open-web-dashboard", "False"]);
    let mut reaper = Reaper::default();
    let began = Instant::now();
    let (mut stream, _) = stdio_client(home, cmd, &mut reaper);
    let init = stream.initialize(CLIENT);
    let ms = began.elapsed().as_secs_f64() * 1000.0;
    (ms, (init, stream.tools_list()))
}

/// `share_memory_ratio_5`, `share_warm_attach_ms`.
fn share(out: &mut Vec<Metric>, home: &Home, project: &str) {
    let n = 5;
    progress(&format!(
        "serena: {n} clients on one project, launch --share against plain launch"
    ));
    // The shared session lingers after its clients; it is released by hand.
    let d = home.daemon_args(&["--share-linger-seconds", "600"]);
    let serena = serena_exe().display().to_string();
    let serena_cmd = serena_mcp(&serena, project);
    let port = d.port.to_string();
    // One client: (its stream, its PID, ms from its start to the initialize answer).
    let start = |share: bool, reaper: &mut Reaper| {
        // On demand off: what is timed is the attach to the warm session (the answer from the
        // handshake cache is `on_demand_initialize_p95_ms`).
        let opts: &[&str] = if share {
            &["--share", "--on-demand=false"]
        } else {
            &[]
        };
        let mut cmd = Command::new(tray_exe());
        home.env(&mut cmd);
        cmd.args(launch_args(home, &["--port", &port], opts, &serena_cmd));
        let began = Instant::now();
        let (mut stream, pid) = stdio_client(home, cmd, reaper);
        let _ = stream.initialize(CLIENT);
        let ms = began.elapsed().as_secs_f64() * 1000.0;
        // A round trip too, as a client makes before it is of use.
        let _ = stream.tools_list();
        (stream, pid, ms)
    };

    // Shared: the first client is cold (its session is launched), the others attach to it.
    let mut reaper = Reaper::default();
    let (first, bridge, cold) = start(true, &mut reaper);
    let (mut streams, mut bridges, mut warm) = (vec![first], vec![bridge], Vec::new());
    for _ in 1..n {
        let (s, pid, ms) = start(true, &mut reaper);
        streams.push(s);
        bridges.push(pid);
        warm.push(ms);
    }
    let (_, sessions) = d.call("GET", "/api/sessions", None);
    let shared = sessions
        .as_array()
        .and_then(|l| l.iter().find(|s| s["shared"] == true))
        .cloned()
        .expect("the shared session");
    let shared_pid = shared["pid"].as_u64().expect("pid") as u32;
    tree_with_language_server(shared_pid);
    let shared_mem = trees_memory(&[shared_pid]);
    let bridges_pss: f64 = bridges.iter().map(|p| memory_mib(*p).0).sum();
    // Where an attach's time goes (after the reading: these add MCP sessions to Serena). Serena's
    // part: its answer to `initialize` over HTTP, asked directly.
    let http = Http::new();
    let url = shared["url"].as_str().expect("url");
    let serena_init: Vec<f64> = (0..5)
        .map(|_| {
            let asked = Instant::now();
            http.initialized(url).duration_since(asked).as_secs_f64() * 1000.0
        })
        .collect();
    // The dashboard's part: its answer to the bridge's first request (the warm session's).
    let asked_for: Vec<f64> = (0..5)
        .map(|_| {
            let asked = Instant::now();
            let (status, s) = http.post(
                &d.url("/request-session"),
                &d.token,
                json!({ "project_path": project, "shared": true }),
            );
            assert_eq!(status, 200, "the shared session again: {s}");
            asked.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    // Its clients gone, the lingering session released: the private side runs alone.
    drop(streams);
    drop(reaper);
    let (status, r) = d.call(
        "POST",
        "/release-session",
        Some(json!({ "session_id": shared["session_id"] })),
    );
    assert_eq!(status, 200, "release-session: {r}");
    let mut leftovers = settle(home, &[d.pid]);

    // Private: a launch (and a Serena) per client.
    let mut reaper = Reaper::default();
    let (mut streams, mut serenas, mut launchers, mut private) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let (s, pid, ms) = start(false, &mut reaper);
        streams.push(s);
        launchers.push(pid);
        serenas.push(serena_under(pid));
        private.push(ms);
    }
    for pid in &serenas {
        tree_with_language_server(*pid);
    }
    let private_mem = trees_memory(&serenas);
    let launchers_pss: f64 = launchers.iter().map(|p| memory_mib(*p).0).sum();
    drop(streams);
    drop(reaper);
    leftovers += settle(home, &[d.pid]);

    let mut note = format!(
        "PSS: shared {:.0} MiB ({} processes; RSS {:.0} MiB; and its {n} bridges {:.1} MiB), \
         private {:.0} MiB ({} processes; RSS {:.0} MiB; and their launchers {:.1} MiB)",
        shared_mem.pss,
        shared_mem.procs,
        shared_mem.rss,
        bridges_pss,
        private_mem.pss,
        private_mem.procs,
        private_mem.rss,
        launchers_pss
    );
    if leftovers > 0 {
        note.push_str(&format!(
            "; {leftovers} processes outlived it and were killed"
        ));
    }
    out.push(
        Metric::new(
            format!("share_memory_ratio_{n}"),
            shared_mem.pss / private_mem.pss,
            "x",
            n,
        )
        .goal(0.3)
        .note(note),
    );
    out.push(
        Metric::new(
            "share_warm_attach_ms",
            median(warm.clone()),
            "ms",
            warm.len(),
        )
        .goal(100.0)
        .note(format!(
            "p95 {:.0} ms; the dashboard answers a shared /request-session in {:.1} ms, \
             Serena an initialize over HTTP in {:.1} ms; the first (cold) {cold:.0} ms, a private \
             launch {:.0} ms (medians)",
            p95(warm),
            median(asked_for),
            median(serena_init),
            median(private)
        )),
    );
}

/// `cmd` started with the benchmark's pipes as its stdio (as an MCP client runs a server), its
/// stderr to a log in the home; its stream and PID (its tree is killed with `reaper`).
pub(crate) fn stdio_client(home: &Home, mut cmd: Command, reaper: &mut Reaper) -> (Stream, u32) {
    static CLIENTS: AtomicUsize = AtomicUsize::new(0);
    let log = home.path().join(format!(
        "client-{}.log",
        CLIENTS.fetch_add(1, Ordering::Relaxed)
    ));
    let err = std::fs::File::create(&log).expect("client log");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .expect("the MCP server command");
    let stream = Stream::of(&mut child).with_logs(vec![log]);
    (stream, reaper.adopt(child))
}

/// The memory of process trees (each root and its descendants), MiB.
struct TreesMemory {
    procs: usize,
    pss: f64,
    rss: f64,
}

fn trees_memory(roots: &[u32]) -> TreesMemory {
    let mut m = TreesMemory {
        procs: 0,
        pss: 0.0,
        rss: 0.0,
    };
    for root in roots {
        for pid in tree(*root) {
            let (pss, rss, _) = memory_mib(pid);
            m.procs += 1;
            m.pss += pss;
            m.rss += rss;
        }
    }
    m
}

/// The live processes of `home`'s scope (everything this phase started, and what those
/// started, language servers and orphans included), `keep` apart.
fn scoped(home: &Home, keep: &[u32]) -> Vec<u32> {
    let mut ours = home.scoped_pids();
    ours.retain(|p| !keep.contains(p) && alive(*p));
    ours
}

/// Waits until a run's processes are all gone (`keep`, the daemon, apart); any still there
/// after [`GONE`] are killed, and counted.
pub(crate) fn settle(home: &Home, keep: &[u32]) -> usize {
    let gone = || scoped(home, keep).is_empty().then_some(());
    if poll(Duration::from_millis(50), GONE, gone).is_some() {
        return 0;
    }
    let left = scoped(home, keep);
    for pid in &left {
        kill_one(*pid);
    }
    wait_for("the killed leftovers to be gone", GONE, gone);
    left.len()
}

/// HTTP for the timed parts: one runtime and one client, made once.
pub(crate) struct Http {
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) client: reqwest::Client,
}

impl Http {
    pub(crate) fn new() -> Http {
        Http {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            client: http::client_with_timeout(Duration::from_secs(180)),
        }
    }

    /// An authorised JSON POST: (status, JSON body or Null).
    fn post(&self, url: &str, token: &str, body: Value) -> (u16, Value) {
        self.rt.block_on(async {
            let resp = self
                .client
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{url}: {e}"));
            let status = resp.status().as_u16();
            (status, resp.json().await.unwrap_or(Value::Null))
        })
    }

    /// Asks the MCP endpoint `url` (streamable HTTP) to `initialize` until it answers (not
    /// listening yet, or not yet answering in kind: again after [`POLL`]); the instant of the
    /// answer.
    fn initialized(&self, url: &str) -> Instant {
        let deadline = Instant::now() + READY;
        let body = http::mcp_initialize(CLIENT);
        self.rt.block_on(async {
            loop {
                let answer = self
                    .client
                    .post(url)
                    .header("accept", "application/json, text/event-stream")
                    .json(&body)
                    .send()
                    .await;
                if let Ok(resp) = answer {
                    let ok = resp.status().is_success();
                    // JSON, or one server-sent event carrying it.
                    let text = resp.text().await.unwrap_or_default();
                    if ok && text.contains("\"serverInfo\"") {
                        return Instant::now();
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "{url} did not answer initialize within {READY:?}"
                );
                tokio::time::sleep(POLL).await;
            }
        })
    }
}

/// Says in `note` how many processes outlived their run (and were killed), if any did.
fn note_leftovers(note: &mut String, leftovers: usize) {
    if leftovers > 0 {
        note.push_str(&format!(
            "; {leftovers} processes outlived their run and were killed"
        ));
    }
}
