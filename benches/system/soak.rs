//! The fault soak (`cargo bench --bench system -- [--quick] soak`; run only when named): the
//! release `serena-tray daemon` for [`minutes`] (`--quick` 5, else 30; `SOAK_MINUTES`
//! overrides) under a busy desk's traffic, with one fault injected every [`fault_every`]
//! seconds (20 with `--quick`, else 30; `SOAK_FAULT_SECONDS` overrides). Everything random comes
//! from one seed, printed at the start and in the notes (`SOAK_SEED` sets it); the threads'
//! timing is not replayed by a seed, only their choices. `SOAK_FAULTS=kind,kind` draws from
//! those kinds only (to chase one).
//!
//! The traffic, all in the run's own home and discovery scope (the tests' marker), its
//! `SERENA_HOME` a 64 MiB tmpfs the harness mounts (as root), after one real Serena session
//! requested and released before the clock starts ([`warm_up`]: Serena writes a file of its
//! own there at its first start):
//! - a steady crowd of [`CROWD`] fake Serenas (tests/bin/fake_serena.rs), children of the
//!   harness, one now and then stopped (SIGTERM) and replaced;
//! - plain clients (the fake's `fake-client` running a fake Serena), started and ended;
//! - `serena-tray launch` clients (a `fake-client` running `launch -- <fake Serena with a fake
//!   language server>`), started and ended (SIGTERM to the client: `launch` must reap the tree);
//! - `launch --share` clients on a jedi project with the test venv's real Serena 2.1.0, the
//!   harness their MCP client (`initialize`, `tools/list`, sometimes `initial_instructions`,
//!   which starts or wakes the shared Serena), each for a random while; sessions sleep after
//!   [`SHARE_SLEEP_MINUTES`] and end [`SHARE_LINGER_SECONDS`] after their last client;
//! - private real Serena sessions on another jedi project, `POST /request-session`, held for a
//!   random while and `POST /release-session`d (each in a thread of its own, so that a fault
//!   can land in the middle of a request or a release).
//!
//! The faults, one at a time, drawn uniformly (a daemon kill weighing 1 / [`DAEMON_KILLS_UNTIL`]
//! while it may be drawn, so that there are as many as a uniform draw over the whole run
//! would give):
//! - `daemon_kill`: SIGKILL to the daemon (whoever owns its port), started again at once; half
//!   of them 0.3 to 1.5 s after a session request was sent (while the daemon launches its
//!   Serena); only in the first [`DAEMON_KILLS_UNTIL`] of the run, so that one daemon, warmed
//!   up for a quarter of the run, lives through the second half that the memory figures cover;
//! - `client_kill`: SIGKILL to a client (plain, `launch` or `launch --share`) drawn at random;
//!   a plain client's Serena is left an orphan, which the harness then kills through
//!   `POST /api/instances/{pid}/kill` once the grace has passed, as a user would;
//! - `disk_full`: a filler file takes every free byte of `SERENA_HOME` for 5 to 15 s, then is
//!   removed. Without root (no tmpfs) it is NOT injected, and the figures say so;
//! - `corrupt_registry`: `instances.json` overwritten with garbage in place, as a careless
//!   program would;
//! - `burst`: 500 short-lived processes (`sleep`, in scope) started at once.
//!
//! What is measured at the end:
//! - `soak_faults`: the faults injected, by kind in the note.
//! - `soak_records_lost`: once the last fault is over and a grace has passed (polled up to
//!   [`RECORDS_WAIT`]): live Serenas in scope missing from `instances.json` or `/api/instances`,
//!   held sessions missing from `/api/sessions` (active, same PID) or `sessions.json`, and
//!   real Serenas that no active session claims.
//! - `soak_orphans_left`: after the share and API clients ended, the harness's orphans were
//!   killed through the API, and the grace and linger passed (polled up to [`ORPHANS_WAIT`]):
//!   Serena processes in scope that no live client, no active session and no `launch` owns,
//!   and language servers whose Serena is gone.
//! - `soak_wrong_kills`: the harness records every process it starts (PID and start time) with
//!   what it expects of it: to live until the harness ends it, or to end by itself with status
//!   0 (the burst). Checked every second: a process that ended while the harness still
//!   expected it to live (or a burst process ended by a signal) was ended by someone else: a
//!   wrong kill, listed with the last fault before it. A process is marked as allowed to end
//!   before the harness signals it, kills its client, or asks the API to kill or release it.
//! - `soak_daemon_pss_growth_pct`: the PSS of the daemon's anonymous memory (`Pss_Anon`: heap
//!   and stacks, what a leak grows) from the half to the end (read at the half, each eighth
//!   after it and the end, each after a 2 s pause with no action of the main loop; the path and
//!   the whole PSS in the note: the share of the binary's pages it is charged rises as the
//!   `launch` clients that map the same binary end). No daemon kill after
//!   [`DAEMON_KILLS_UNTIL`] of the run, so every reading is of one daemon process (if one died
//!   meanwhile, the figure says so and is not met).
//! - `soak_fd_growth`: the same daemon's open files, read every second of the second half: the
//!   fewest of the last quarter less the fewest of the third. The count at a moment follows the
//!   clients (their connections, the processes watched): up to 20 apart from one second to the
//!   next here; what a leak holds raises the floor.
//! - `soak_daemon_failures`: the daemon found dead without a kill of the harness, or not
//!   answering within [`DAEMON_START`] after a (re)start.

use crate::common::fake;
use crate::common::*;
use crate::{fd_count, progress, Config, Metric};
use serde_json::{json, Value};
use serena_tray::core::cmdline::serena_server_args;
use serena_tray::core::procs::{identity, Snapshot};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Fake Serenas of the steady crowd.
const CROWD: usize = 12;
/// Plain clients, `launch` clients, `launch --share` clients and API sessions at most at once.
const PLAIN: usize = 3;
const LAUNCHES: usize = 3;
const SHARES: usize = 3;
const API_SESSIONS: usize = 2;
/// The zombie grace the daemon runs with (seconds).
const GRACE: f64 = 2.0;
const SHARE_LINGER_SECONDS: f64 = 5.0;
const SHARE_SLEEP_MINUTES: f64 = 0.5;
/// The part of the run in which the daemon may be killed.
const DAEMON_KILLS_UNTIL: f64 = 0.25;
/// How long a (re)started daemon may take to answer.
const DAEMON_START: Duration = Duration::from_secs(60);
const RECORDS_WAIT: Duration = Duration::from_secs(30);
const ORPHANS_WAIT: Duration = Duration::from_secs(60);
/// Processes in a burst.
const BURST: usize = 500;
const TMPFS: &str = "size=64m,mode=0700";

fn minutes(cfg: &Config) -> f64 {
    env_f64("SOAK_MINUTES").unwrap_or(if cfg.quick { 5.0 } else { 30.0 })
}

fn fault_every(cfg: &Config) -> Duration {
    let secs = env_f64("SOAK_FAULT_SECONDS").unwrap_or(if cfg.quick { 20.0 } else { 30.0 });
    Duration::from_secs_f64(secs.max(1.0))
}

fn env_f64(name: &str) -> Option<f64> {
    std::env::var(name).ok()?.parse().ok()
}

/// splitmix64: small, seeded, good enough to draw actions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / ((1u64 << 53) as f64)
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    fn secs(&mut self, from: f64, to: f64) -> Duration {
        Duration::from_secs_f64(from + (to - from) * self.unit())
    }
}

fn seed() -> u64 {
    std::env::var("SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

// ---------------------------------------------------------------------------------------------
// The ledger: every process the harness starts, and what it expects of it.

#[derive(Clone, Copy, PartialEq, Debug)]
enum Fate {
    /// Must live until the harness ends it (or asks for its end).
    Lives,
    /// Ends by itself, with status 0 (the burst).
    EndsByItself,
    /// The harness ended it or asked for its end.
    MayEnd,
}

struct Owned {
    start_time: u64,
    what: String,
    fate: Fate,
}

#[derive(Default)]
struct Ledger {
    owned: HashMap<u32, Owned>,
    /// Children of the harness not yet waited for.
    children: Vec<Child>,
    exits: HashMap<u32, ExitStatus>,
    wrong: Vec<String>,
    /// The last fault injected, for the evidence of a wrong kill.
    last_fault: String,
}

impl Ledger {
    /// Records `pid` (if it still runs) as the harness's `what`.
    fn own(&mut self, pid: u32, what: &str, fate: Fate) {
        if let Some(id) = identity(pid) {
            self.owned.insert(
                pid,
                Owned {
                    start_time: id.start_time,
                    what: what.to_string(),
                    fate,
                },
            );
        }
    }

    fn own_child(&mut self, child: Child, what: &str, fate: Fate) -> u32 {
        let pid = child.id();
        self.own(pid, what, fate);
        self.children.push(child);
        pid
    }

    fn may_end(&mut self, pid: u32) {
        if let Some(o) = self.owned.get_mut(&pid) {
            o.fate = Fate::MayEnd;
        }
    }

    fn fate(&self, pid: u32) -> Option<Fate> {
        self.owned.get(&pid).map(|o| o.fate)
    }

    /// Waits for the children that ended, then judges every owned process that is gone.
    fn check(&mut self, at: f64) {
        let exits = &mut self.exits;
        self.children.retain_mut(|c| match c.try_wait() {
            Ok(Some(status)) => {
                exits.insert(c.id(), status);
                false
            }
            _ => true,
        });
        let gone: Vec<u32> = self
            .owned
            .iter()
            .filter(|(pid, o)| !same_process(**pid, o.start_time))
            .map(|(pid, _)| *pid)
            .collect();
        for pid in gone {
            let o = self.owned.remove(&pid).expect("owned");
            let status = self.exits.remove(&pid);
            if let Some(why) = wrong_end(o.fate, status) {
                self.wrong.push(format!(
                    "{at:.0} s: {} (pid {pid}) {why}; last fault: {}",
                    o.what, self.last_fault
                ));
            }
        }
    }

    /// Ends every child left (SIGKILL) and waits for it.
    fn kill_all(&mut self) {
        for pid in self.owned.keys() {
            kill_one(*pid);
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
    }
}

/// Whether `pid` is still the process that started at `start_time` (and not a zombie).
fn same_process(pid: u32, start_time: u64) -> bool {
    alive(pid) && identity(pid).is_some_and(|id| id.start_time == start_time)
}

/// Why an end was wrong for a process of this fate (None: it was not).
fn wrong_end(fate: Fate, status: Option<ExitStatus>) -> Option<String> {
    use std::os::unix::process::ExitStatusExt;
    let said = status.map_or("ended (not our child: status unknown)".to_string(), |s| {
        format!("ended: {s}")
    });
    match fate {
        Fate::Lives => Some(format!("{said}, while it was to live")),
        Fate::EndsByItself if status.is_some_and(|s| s.signal().is_some()) => {
            Some(format!("{said}, by a signal"))
        }
        _ => None,
    }
}

/// What the harness counts as it goes, for the notes.
#[derive(Default)]
struct Tally {
    faults: BTreeMap<&'static str, usize>,
    not_injected: Vec<String>,
    started: BTreeMap<&'static str, usize>,
    requests_ok: usize,
    requests_failed: Vec<String>,
    releases: usize,
    releases_failed: Vec<String>,
    share_calls_ok: usize,
    share_failed: Vec<String>,
    daemon_failures: Vec<String>,
    orphan_kills: usize,
}

impl Tally {
    fn started(&mut self, what: &'static str) {
        *self.started.entry(what).or_default() += 1;
    }
}

// ---------------------------------------------------------------------------------------------
// The daemon: started, killed, started again; whoever answers on its port is it.

#[derive(Clone)]
struct Api {
    port: u16,
    token: String,
}

impl Api {
    /// An authorised call: (status, JSON body or Null); status 0 when there was no answer.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        timeout: Duration,
    ) -> (u16, Value) {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        block_on(async {
            let client = http::client_with_timeout(timeout);
            let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
            let mut req = client.request(method, &url).bearer_auth(&self.token);
            if let Some(b) = body {
                req = req.json(&b);
            }
            let Ok(resp) = req.send().await else {
                return (0, Value::Null);
            };
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            (status, serde_json::from_str(&text).unwrap_or(Value::Null))
        })
    }

    fn get(&self, path: &str) -> Option<Value> {
        let (status, v) = self.call("GET", path, None, Duration::from_secs(10));
        (status == 200).then_some(v)
    }
}

struct DaemonProc {
    port: u16,
    tray_port: u16,
    /// The process answering on `port` (the harness's, or one a `launch` started).
    pid: Option<u32>,
    child: Option<Child>,
    log: PathBuf,
    token: String,
    starts: usize,
}

impl DaemonProc {
    fn new(home: &Home) -> DaemonProc {
        DaemonProc {
            port: free_port(),
            tray_port: free_port(),
            pid: None,
            child: None,
            log: home.path().join("daemon.log"),
            token: String::new(),
            starts: 0,
        }
    }

    fn api(&self) -> Api {
        Api {
            port: self.port,
            token: self.token.clone(),
        }
    }

    /// Starts `serena-tray daemon` (its output appended to `daemon.log`) and waits until its
    /// port answers; the PID is then the port's owner (a `launch` may have started one first).
    fn start(&mut self, home: &Home) -> Result<u32, String> {
        self.reap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("daemon log: {e}"))?;
        let mut cmd = Command::new(tray_exe());
        home.env(&mut cmd);
        let child = cmd
            .arg("--serena-home")
            .arg(home.serena_home())
            .args(["daemon", "--port", &self.port.to_string()])
            .args(["--tray-protocol-port", &self.tray_port.to_string()])
            .env("SERENA_TRAY_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn daemon: {e}"))?;
        self.child = Some(child);
        self.starts += 1;
        let owner = poll(Duration::from_millis(100), DAEMON_START, || {
            let (status, _) = self
                .api()
                .call("GET", "/api/health", None, Duration::from_secs(2));
            (status == 200).then_some(())?;
            port_owner(home, self.port)
        });
        let Some(pid) = owner else {
            self.pid = None;
            return Err(format!(
                "no answer on port {} within {DAEMON_START:?}",
                self.port
            ));
        };
        self.pid = Some(pid);
        let token = std::fs::read_to_string(home.serena_home().join("tray/token"))
            .map_err(|e| format!("token: {e}"))?;
        self.token = token.trim().to_string();
        Ok(pid)
    }

    fn kill(&mut self) {
        if let Some(pid) = self.pid.take() {
            kill_one(pid);
            poll(Duration::from_millis(20), Duration::from_secs(5), || {
                (!alive(pid)).then_some(())
            });
        }
        self.reap();
    }

    /// Waits for the harness's daemon child if it ended (it exits at once when another
    /// answers on its port).
    fn reap(&mut self) {
        if let Some(c) = &mut self.child {
            if matches!(c.try_wait(), Ok(Some(_))) {
                self.child = None;
            }
        }
    }

    /// Whether the daemon the harness knows is alive.
    fn up(&self) -> bool {
        self.pid.is_some_and(alive)
    }

    fn stop(&mut self) {
        if let Some(pid) = self.pid {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            poll(Duration::from_millis(100), Duration::from_secs(15), || {
                (!alive(pid)).then_some(())
            });
        }
        self.kill();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The process of `home`'s scope that listens on `port`.
fn port_owner(home: &Home, port: u16) -> Option<u32> {
    home.scoped_pids()
        .into_iter()
        .find(|p| sockets::listening_ports(*p).contains(&port))
}

// ---------------------------------------------------------------------------------------------
// SERENA_HOME on a tmpfs of its own, for the disk-full window.

struct Tmpfs {
    dir: PathBuf,
    mounted: bool,
    /// Why it could not be mounted.
    why_not: Option<String>,
    filler: Option<(PathBuf, Instant)>,
}

impl Tmpfs {
    fn mount(dir: &Path) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("SERENA_HOME");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", TMPFS, "tmpfs"])
            .arg(dir)
            .output();
        let why_not = match out {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(String::from_utf8_lossy(&o.stderr).trim().to_string()),
            Err(e) => Some(format!("cannot run mount: {e}")),
        };
        Tmpfs {
            dir: dir.to_path_buf(),
            mounted: why_not.is_none(),
            why_not,
            filler: None,
        }
    }

    /// Fills every free byte with a file, until `until`: how many MiB it took.
    fn fill(&mut self, until: Instant) -> usize {
        let path = self.dir.join("soak-filler");
        let Ok(mut f) = std::fs::File::create(&path) else {
            return 0;
        };
        let chunk = vec![0x5au8; 1 << 20];
        let mut mib = 0;
        while f.write_all(&chunk).is_ok() {
            mib += 1;
        }
        // The last partial chunk: whatever bytes are left.
        for _ in 0..1024 {
            if f.write_all(&chunk[..1024]).is_err() {
                break;
            }
        }
        self.filler = Some((path, until));
        mib
    }

    /// Removes the filler once its time is up (or now, with `force`); true while it is there.
    fn full(&mut self, force: bool) -> bool {
        match &self.filler {
            Some((path, until)) if force || Instant::now() >= *until => {
                let _ = std::fs::remove_file(path);
                self.filler = None;
                false
            }
            Some(_) => true,
            None => false,
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        self.full(true);
        if self.mounted {
            let ok = Command::new("umount")
                .arg(&self.dir)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                eprintln!("soak: {} busy, unmounting lazily", self.dir.display());
                let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The clients the main loop keeps (plain and `launch`), and the threads (share, API).

/// A client the main loop started: its process, and what runs under it.
struct Client {
    kind: &'static str,
    client: u32,
    /// `launch` (for a launch client).
    launch: Option<u32>,
    serena: Option<u32>,
    /// What runs under Serena (the fake language server).
    below: Vec<u32>,
}

/// An orphan the harness made (a plain client killed): to be killed through the API.
struct Orphan {
    serena: u32,
    since: Instant,
    asked: bool,
}

/// A thread of the harness (a share client, an API session): told to stop at the end; the
/// client (or session Serena) PID it runs, for the client-kill fault.
struct Actor {
    stop: Arc<AtomicBool>,
    pid: Arc<Mutex<Option<u32>>>,
    handle: std::thread::JoinHandle<()>,
}

/// A thread's side of its [`Actor`].
struct Side {
    stop: Arc<AtomicBool>,
    pid: Arc<Mutex<Option<u32>>>,
}

impl Side {
    /// Sleeps up to `d` in steps; false once told to stop.
    fn wait(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        while Instant::now() < end {
            if self.stop.load(Ordering::Relaxed) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        !self.stop.load(Ordering::Relaxed)
    }
}

/// Starts `f` on a thread of its own, as an [`Actor`].
fn actor(f: impl FnOnce(Side) + Send + 'static) -> Actor {
    let (stop, pid) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(None)));
    let side = Side {
        stop: stop.clone(),
        pid: pid.clone(),
    };
    Actor {
        stop,
        pid,
        handle: std::thread::spawn(move || f(side)),
    }
}

/// What the harness and its threads share.
#[derive(Clone)]
struct World {
    home: Arc<Home>,
    ledger: Arc<Mutex<Ledger>>,
    tally: Arc<Mutex<Tally>>,
    /// The sessions the harness holds now (session ID -> its Serena's PID).
    held: Arc<Mutex<BTreeMap<String, u32>>>,
    api: Api,
    started: Instant,
}

impl World {
    fn at(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One side of an MCP stdio stream that never panics: lines written, lines read.
struct Pipe {
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Pipe {
    fn of(child: &mut Child) -> Pipe {
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Pipe {
            stdin: child.stdin.take(),
            lines,
        }
    }

    fn send(&mut self, msg: &Value) -> bool {
        let Some(stdin) = &mut self.stdin else {
            return false;
        };
        writeln!(stdin, "{msg}").and_then(|_| stdin.flush()).is_ok()
    }

    /// Sends a request and waits for the answer with its id (other lines skipped).
    fn ask(&mut self, id: u64, method: &str, params: Value, timeout: Duration) -> Option<Value> {
        let msg = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        if !self.send(&msg) {
            return None;
        }
        let end = Instant::now() + timeout;
        loop {
            let left = end.checked_duration_since(Instant::now())?;
            let line = self.lines.recv_timeout(left).ok()?;
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if v["id"] == id {
                return Some(v);
            }
        }
    }
}

/// A `launch --share` client on `project` with the harness as its MCP client, under a
/// `fake-client` (the client a fault kills): its handshake, calls now and then, for `life`.
fn share_client(w: &World, side: Side, project: &str, life: Duration, calls: usize) {
    let serena = serena_exe().display().to_string();
    let port = w.api.port.to_string();
    let argv = mcp::launch_args(
        &w.home,
        &["--port", &port],
        &["--share"],
        &serena_mcp(&serena, project),
    );
    let log = w.home.path().join("share-clients.log");
    let mut cmd = fake::client(tray_exe(), &argv);
    w.home.env(&mut cmd);
    let Ok(err) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
    else {
        return;
    };
    let Ok(mut child) = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
    else {
        return;
    };
    let client = child.id();
    w.ledger().own(client, "share client", Fate::Lives);
    *side.pid.lock().expect("pid") = Some(client);
    let bridge = poll(Duration::from_millis(20), Duration::from_secs(10), || {
        child_with_arg(client, "launch")
    });
    if let Some(b) = bridge {
        w.ledger().own(b, &bridge_name(client), Fate::Lives);
    }
    let mut pipe = Pipe::of(&mut child);
    let failed = |what: String| {
        let at = w.at();
        w.tally().share_failed.push(format!("{at:.0} s: {what}"));
    };
    let init = pipe.ask(
        1,
        "initialize",
        http::mcp_initialize("soak")["params"].clone(),
        Duration::from_secs(90),
    );
    let gone = || !alive(client);
    if init.is_none() {
        if !gone() {
            failed(format!("client {client}: no initialize answer"));
        }
    } else {
        pipe.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        pipe.ask(2, "tools/list", json!({}), Duration::from_secs(30));
        let step = life / (calls as u32 + 1);
        for i in 0..calls {
            if !side.wait(step) || gone() {
                break;
            }
            let call = json!({"name": "initial_instructions", "arguments": {}});
            match pipe.ask(10 + i as u64, "tools/call", call, Duration::from_secs(120)) {
                Some(v) if v.get("result").is_some() => w.tally().share_calls_ok += 1,
                Some(v) if !gone() => failed(format!("client {client}: call answered {v}")),
                None if !gone() => failed(format!("client {client}: no answer to a call")),
                _ => {}
            }
        }
        side.wait(step);
    }
    // Its end: stdin closed, as a client that quits does.
    {
        let mut ledger = w.ledger();
        ledger.may_end(client);
        if let Some(b) = bridge {
            ledger.may_end(b);
        }
    }
    pipe.stdin = None;
    let ended = poll(Duration::from_millis(100), Duration::from_secs(30), || {
        child.try_wait().ok().flatten()
    });
    if ended.is_none() {
        failed(format!(
            "client {client}: still running 30 s after its stdin closed"
        ));
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// How the ledger names the bridge of the share client `client`.
fn bridge_name(client: u32) -> String {
    format!("share bridge of client {client}")
}

/// A private real Serena session on `project`: requested, held for `hold`, released. The
/// release is retried (the daemon may be down) until it is answered.
fn api_session(w: &World, side: Side, project: &str, hold: Duration) {
    let body = json!({"project_path": project, "transport": "streamable-http"});
    let (status, v) = w.api.call(
        "POST",
        "/request-session",
        Some(body),
        Duration::from_secs(180),
    );
    let at = w.at();
    let (Some(id), Some(pid)) = (v["session_id"].as_str(), v["pid"].as_u64()) else {
        w.tally()
            .requests_failed
            .push(format!("{at:.0} s: HTTP {status} {v}"));
        return;
    };
    let pid = pid as u32;
    progress(&format!(
        "soak: {at:.0} s: session {id} ready, Serena {pid}"
    ));
    w.tally().requests_ok += 1;
    w.ledger()
        .own(pid, &format!("session {id}'s Serena"), Fate::Lives);
    *side.pid.lock().expect("pid") = Some(pid);
    w.held.lock().expect("held").insert(id.to_string(), pid);
    side.wait(hold);
    w.ledger().may_end(pid);
    let released = poll(Duration::from_secs(1), Duration::from_secs(180), || {
        let (status, v) = w.api.call(
            "POST",
            "/release-session",
            Some(json!({"session_id": id})),
            Duration::from_secs(60),
        );
        (status != 0).then_some((status, v))
    });
    w.held.lock().expect("held").remove(id);
    let mut tally = w.tally();
    match released {
        Some((200, _)) => tally.releases += 1,
        other => tally
            .releases_failed
            .push(format!("{:.0} s: session {id}: {other:?}", w.at())),
    }
}

// ---------------------------------------------------------------------------------------------
// The run.

/// Every fault kind, as named in `soak_faults`.
const FAULTS: [&str; 5] = [
    "daemon_kill",
    "client_kill",
    "disk_full",
    "corrupt_registry",
    "burst",
];

struct Soak {
    w: World,
    rng: Rng,
    seed: u64,
    duration: Duration,
    every: Duration,
    daemon: DaemonProc,
    disk: Tmpfs,
    crowd: Vec<u32>,
    clients: Vec<Client>,
    orphans: Vec<Orphan>,
    shares: Vec<Actor>,
    sessions: Vec<Actor>,
    /// The projects of the API sessions and of the share clients.
    api_project: String,
    share_project: String,
}

/// A daemon reading: its PID, PSS (MiB) and open files.
/// A reading of the daemon: its PID, PSS and the PSS of its anonymous memory (MiB), open
/// files.
#[derive(Clone, Copy, Debug)]
struct Reading {
    pid: u32,
    pss: f64,
    anon: f64,
    fds: usize,
}

/// The daemon's open files at a moment of the second half: (the part of the run, its PID,
/// how many).
type FdSample = (f64, u32, usize);

/// What the end's checks found.
struct Findings {
    records_lost: Vec<String>,
    orphans: Vec<String>,
    bridges_left: Vec<String>,
    unheld_sessions: usize,
}

pub(crate) fn soak_phase(cfg: &Config, out: &mut Vec<Metric>) {
    let seed = seed();
    let duration = Duration::from_secs_f64(minutes(cfg) * 60.0);
    let every = fault_every(cfg);
    progress(&format!(
        "soak: {:.1} min, a fault every {} s, seed {seed} (SOAK_SEED={seed} replays its choices)",
        duration.as_secs_f64() / 60.0,
        every.as_secs_f64()
    ));
    let home = Arc::new(Home::new());
    let disk = Tmpfs::mount(&home.serena_home());
    if let Some(why) = &disk.why_not {
        eprintln!(
            "soak: WARNING: SERENA_HOME cannot be a tmpfs here ({why}): the disk-full fault \
             will NOT be injected"
        );
    }
    let mut soak = Soak::new(home, disk, seed, duration, every);
    let wall = Instant::now();
    let (readings, fds) = soak.run();
    let found = soak.finish();
    soak.keep_logs();
    soak.cleanup();
    soak.metrics(out, (&readings, &fds), &found, wall.elapsed());
}

impl Soak {
    fn new(home: Arc<Home>, disk: Tmpfs, seed: u64, duration: Duration, every: Duration) -> Soak {
        let mut daemon = DaemonProc::new(&home);
        home.tray_config(&format!(
            "serena_command = [{:?}]\nzombie_grace = {GRACE}\ntray_protocol_port = {}\n\
             share_linger_seconds = {SHARE_LINGER_SECONDS}\n\
             share_sleep_minutes = {SHARE_SLEEP_MINUTES}\n",
            serena_exe().to_str().expect("utf8"),
            daemon.tray_port
        ));
        // Built (if it is not up to date) before the clock starts.
        fake::exe();
        progress("soak: two jedi projects");
        let api_project = home.jedi_project("soak-api").display().to_string();
        let share_project = home.jedi_project("soak-share").display().to_string();
        let pid = daemon
            .start(&home)
            .unwrap_or_else(|e| panic!("the daemon did not start: {e}"));
        progress(&format!("soak: daemon PID {pid} on port {}", daemon.port));
        warm_up(&daemon.api(), &api_project);
        let w = World {
            home,
            ledger: Default::default(),
            tally: Default::default(),
            held: Default::default(),
            api: daemon.api(),
            started: Instant::now(),
        };
        Soak {
            w,
            rng: Rng(seed),
            seed,
            duration,
            every,
            daemon,
            disk,
            crowd: Vec::new(),
            clients: Vec::new(),
            orphans: Vec::new(),
            shares: Vec::new(),
            sessions: Vec::new(),
            api_project,
            share_project,
        }
    }

    fn at(&self) -> f64 {
        self.w.at()
    }

    /// The soak itself: traffic every second, a fault every `every`; the daemon read at the
    /// half, at each eighth after it, and at the end.
    fn run(&mut self) -> (Vec<Option<Reading>>, Vec<FdSample>) {
        let mut next_fault = Instant::now() + self.every;
        let mut readings = Vec::new();
        let mut fds = Vec::new();
        let mut minute = 0;
        while self.w.started.elapsed() < self.duration {
            self.check();
            self.act();
            let full = self.disk.full(false);
            if Instant::now() >= next_fault && !full {
                self.fault();
                next_fault = Instant::now() + self.every;
            }
            if self.w.started.elapsed() >= self.duration * (4 + readings.len() as u32) / 8 {
                readings.push(self.quiet_reading());
            }
            let part = self.w.started.elapsed().as_secs_f64() / self.duration.as_secs_f64();
            if let Some(pid) = self.daemon.pid.filter(|p| part >= 0.5 && alive(*p)) {
                fds.push((part, pid, fd_count(pid)));
            }
            let m = self.w.started.elapsed().as_secs() / 60;
            if m > minute {
                minute = m;
                self.say_progress();
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        self.disk.full(true);
        self.check();
        readings.push(self.quiet_reading());
        (readings, fds)
    }

    fn say_progress(&self) {
        let t = self.w.tally();
        let faults: usize = t.faults.values().sum();
        progress(&format!(
            "soak: {:.0} s, {faults} faults, {} sessions requested, {} wrong kills so far",
            self.at(),
            t.requests_ok,
            self.w.ledger().wrong.len()
        ));
    }

    /// A reading of the daemon after a 2 s pause with no action.
    fn quiet_reading(&mut self) -> Option<Reading> {
        std::thread::sleep(Duration::from_secs(2));
        let pid = self.daemon.pid.filter(|p| alive(*p))?;
        Some(Reading {
            pid,
            pss: memory_mib(pid).0,
            anon: proc_kib(pid, "smaps_rollup", "Pss_Anon") as f64 / 1024.0,
            fds: fd_count(pid),
        })
    }

    /// The ledger judged; the daemon checked (and started again if it is not there).
    fn check(&mut self) {
        let at = self.at();
        self.w.ledger().check(at);
        self.daemon.reap();
        if self.daemon.up() {
            return;
        }
        if let Some(pid) = self.daemon.pid {
            self.w.tally().daemon_failures.push(format!(
                "{at:.0} s: daemon {pid} gone, not killed by the harness"
            ));
        }
        self.restart_daemon();
    }

    fn restart_daemon(&mut self) {
        let began = Instant::now();
        match self.daemon.start(&self.w.home) {
            Ok(pid) => progress(&format!(
                "soak: {:.0} s: daemon {pid} answering after {:.1} s",
                self.at(),
                began.elapsed().as_secs_f64()
            )),
            Err(e) => {
                let at = self.at();
                self.w
                    .tally()
                    .daemon_failures
                    .push(format!("{at:.0} s: daemon did not come back: {e}"));
            }
        }
    }

    // ----- traffic

    fn act(&mut self) {
        self.crowd_step();
        self.clients_step();
        self.actors_step();
        self.orphans_step();
    }

    fn crowd_step(&mut self) {
        let ledger = self.w.ledger.clone();
        self.crowd
            .retain(|p| ledger.lock().is_ok_and(|l| l.fate(*p) == Some(Fate::Lives)));
        if self.crowd.len() < CROWD {
            let child = spawn_fake(&self.w.home, &[], &[]);
            let pid = self
                .w
                .ledger()
                .own_child(child, "crowd fake Serena", Fate::Lives);
            self.crowd.push(pid);
            self.w.tally().started("crowd");
        } else if self.rng.chance(0.03) {
            let pid = self.crowd.swap_remove(self.rng.below(self.crowd.len()));
            self.w.ledger().may_end(pid);
            term(pid);
        }
    }

    fn clients_step(&mut self) {
        self.clients.retain(|c| alive(c.client));
        let count = |s: &Soak, kind| s.clients.iter().filter(|c| c.kind == kind).count();
        if count(self, "plain") < PLAIN && self.rng.chance(0.2) {
            let c = self.start_plain();
            self.clients.push(c);
        }
        if count(self, "launch") < LAUNCHES && self.rng.chance(0.2) {
            let c = self.start_launch();
            self.clients.push(c);
        }
        if !self.clients.is_empty() && self.rng.chance(0.04) {
            let c = self.clients.swap_remove(self.rng.below(self.clients.len()));
            self.end_client(&c);
        }
    }

    /// A plain client: the fake's `fake-client` running a fake Serena.
    fn start_plain(&mut self) -> Client {
        let mut cmd = fake::client_of_server(&[]);
        self.w.home.env(&mut cmd);
        let child = cmd.spawn().expect("spawn a plain client");
        let client = self
            .w
            .ledger()
            .own_child(child, "plain client", Fate::Lives);
        let serena = under(client, fake::SERVER);
        if let Some(s) = serena {
            self.w
                .ledger()
                .own(s, "plain client's fake Serena", Fate::Lives);
        }
        self.w.tally().started("plain");
        Client {
            kind: "plain",
            client,
            launch: None,
            serena,
            below: Vec::new(),
        }
    }

    /// A `launch` client: `fake-client` running `launch -- <fake Serena>` with one fake language
    /// server.
    fn start_launch(&mut self) -> Client {
        let port = self.daemon.port.to_string();
        let server = fake::exe().display().to_string();
        let argv = mcp::launch_args(
            &self.w.home,
            &["--port", &port],
            &[],
            &[&server, fake::SERVER],
        );
        let mut cmd = fake::client(tray_exe(), &argv);
        self.w.home.env(&mut cmd);
        let child = cmd
            .env("FAKE_SERENA_CHILDREN", "1")
            .spawn()
            .expect("spawn a launch client");
        let mut ledger = self.w.ledger.lock().expect("ledger");
        let client = ledger.own_child(child, "launch client", Fate::Lives);
        drop(ledger);
        let launch = under(client, "launch");
        let serena = launch.and_then(|l| under(l, fake::SERVER));
        let below: Vec<u32> = serena
            .and_then(|s| {
                poll(Duration::from_millis(20), Duration::from_secs(10), || {
                    find_under(s, |p| p.cmdline.iter().any(|a| a == "fake-language-server"))
                })
            })
            .into_iter()
            .collect();
        let mut ledger = self.w.ledger();
        for (pid, what) in [(launch, "launch"), (serena, "launch's fake Serena")] {
            if let Some(p) = pid {
                ledger.own(p, what, Fate::Lives);
            }
        }
        for p in &below {
            ledger.own(*p, "launch's fake language server", Fate::Lives);
        }
        drop(ledger);
        self.w.tally().started("launch");
        Client {
            kind: "launch",
            client,
            launch,
            serena,
            below,
        }
    }

    /// A client's end as users end them: a plain client's Serena stopped (SIGTERM, then its
    /// client exits); a launch client's client stopped (SIGTERM: `launch` reaps the tree).
    fn end_client(&mut self, c: &Client) {
        self.allow_end(c);
        match (c.kind, c.serena) {
            ("plain", Some(s)) => term(s),
            _ => term(c.client),
        }
    }

    fn allow_end(&self, c: &Client) {
        let mut ledger = self.w.ledger();
        ledger.may_end(c.client);
        for p in c.launch.iter().chain(&c.serena).chain(&c.below) {
            ledger.may_end(*p);
        }
    }

    fn actors_step(&mut self) {
        self.shares.retain(|a| !a.handle.is_finished());
        self.sessions.retain(|a| !a.handle.is_finished());
        if self.shares.len() < SHARES && self.rng.chance(0.1) {
            let (w, project) = (self.w.clone(), self.share_project.clone());
            let (life, calls) = (self.rng.secs(20.0, 90.0), self.rng.below(3));
            self.shares.push(actor(move |side| {
                share_client(&w, side, &project, life, calls)
            }));
            self.w.tally().started("share");
        }
        if self.sessions.len() < API_SESSIONS && self.rng.chance(0.05) {
            self.start_api_session();
        }
    }

    fn start_api_session(&mut self) {
        let (w, project) = (self.w.clone(), self.api_project.clone());
        let hold = self.rng.secs(15.0, 60.0);
        self.sessions
            .push(actor(move |side| api_session(&w, side, &project, hold)));
        self.w.tally().started("api session");
    }

    /// The harness's orphans, killed through the API once the grace has passed.
    fn orphans_step(&mut self) {
        self.orphans.retain(|o| alive(o.serena));
        let due = Duration::from_secs_f64(GRACE + 3.0);
        for o in self
            .orphans
            .iter_mut()
            .filter(|o| !o.asked && o.since.elapsed() > due)
        {
            self.w.ledger.lock().expect("ledger").may_end(o.serena);
            let path = format!("/api/instances/{}/kill", o.serena);
            let (status, _) = self
                .w
                .api
                .call("POST", &path, None, Duration::from_secs(30));
            if (200..300).contains(&status) {
                o.asked = true;
                self.w.tally.lock().expect("tally").orphan_kills += 1;
            }
        }
    }

    // ----- faults

    fn fault(&mut self) {
        let daemon_ok = self.w.started.elapsed().as_secs_f64()
            < self.duration.as_secs_f64() * DAEMON_KILLS_UNTIL;
        let only = std::env::var("SOAK_FAULTS").unwrap_or_default();
        // A daemon kill weighs 1 / DAEMON_KILLS_UNTIL while it may be drawn: as many as a
        // uniform draw over the whole run would give, all in its first part.
        let daemon_weight = (1.0 / DAEMON_KILLS_UNTIL).round() as usize;
        let kinds: Vec<&'static str> = FAULTS
            .iter()
            .copied()
            .filter(|k| only.is_empty() || only.split(',').any(|o| o.trim() == *k))
            .filter(|k| *k != "daemon_kill" || daemon_ok)
            .filter(|k| *k != "client_kill" || self.killable() > 0)
            .flat_map(|k| {
                std::iter::repeat_n(k, if k == "daemon_kill" { daemon_weight } else { 1 })
            })
            .collect();
        let Some(kind) = kinds.get(self.rng.below(kinds.len())).copied() else {
            return;
        };
        let what = match kind {
            "daemon_kill" => self.kill_daemon(),
            "client_kill" => self.kill_client(),
            "disk_full" => self.fill_disk(),
            "corrupt_registry" => self.corrupt_registry(),
            _ => self.burst(),
        };
        let at = self.at();
        progress(&format!("soak: {at:.0} s: {kind}: {what}"));
        self.w.ledger().last_fault = format!("{kind} at {at:.0} s ({what})");
        *self.w.tally().faults.entry(kind).or_default() += 1;
    }

    /// Half the time in the middle of a session request: one is started and the daemon killed
    /// 0.3 to 1.5 s later, while the daemon launches its Serena.
    fn kill_daemon(&mut self) -> String {
        let pid = self.daemon.pid;
        let mid_request = self.rng.chance(0.5);
        if mid_request {
            self.start_api_session();
            std::thread::sleep(self.rng.secs(0.3, 1.5));
        }
        self.w.ledger().last_fault = format!("daemon_kill at {:.0} s", self.at());
        self.daemon.kill();
        self.restart_daemon();
        let when = if mid_request { " mid-request" } else { "" };
        format!("{pid:?} killed{when}, now {:?}", self.daemon.pid)
    }

    /// The clients a fault can kill: the main loop's and the share threads'.
    fn killable(&self) -> usize {
        self.clients.len() + self.share_clients().len()
    }

    fn share_clients(&self) -> Vec<u32> {
        self.shares
            .iter()
            .filter_map(|a| *a.pid.lock().expect("pid"))
            .filter(|p| alive(*p))
            .collect()
    }

    fn kill_client(&mut self) -> String {
        let shares = self.share_clients();
        let pick = self.rng.below(self.clients.len() + shares.len());
        if pick < self.clients.len() {
            let c = self.clients.swap_remove(pick);
            if c.kind == "plain" {
                self.w.ledger().may_end(c.client);
                if let Some(s) = c.serena {
                    self.orphans.push(Orphan {
                        serena: s,
                        since: Instant::now(),
                        asked: false,
                    });
                }
            } else {
                self.allow_end(&c);
            }
            kill_one(c.client);
            return format!("{} client {} (Serena {:?})", c.kind, c.client, c.serena);
        }
        let client = shares[pick - self.clients.len()];
        let mut ledger = self.w.ledger();
        ledger.may_end(client);
        let bridge = bridge_name(client);
        let bridges: Vec<u32> = ledger
            .owned
            .iter()
            .filter(|(_, o)| o.what == bridge)
            .map(|(p, _)| *p)
            .collect();
        for b in bridges {
            ledger.may_end(b);
        }
        drop(ledger);
        kill_one(client);
        format!("share client {client}")
    }

    fn fill_disk(&mut self) -> String {
        if let Some(why) = &self.disk.why_not {
            let at = self.at();
            self.w
                .tally()
                .not_injected
                .push(format!("disk_full at {at:.0} s NOT INJECTED: {why}"));
            return format!("NOT INJECTED (no tmpfs: {why})");
        }
        let hold = self.rng.secs(5.0, 15.0);
        let mib = self.disk.fill(Instant::now() + hold);
        format!("{mib} MiB filler for {:.1} s", hold.as_secs_f64())
    }

    /// `instances.json` overwritten in place with garbage (half a record, then noise).
    fn corrupt_registry(&mut self) -> String {
        let n = 64 + self.rng.below(4000);
        let mut bytes = br#"[{"pid": 4242, "port": 24282, "started_at": "#.to_vec();
        bytes.extend((0..n).map(|_| (self.rng.next() & 0xff) as u8));
        match std::fs::write(self.w.home.registry_path(), &bytes) {
            Ok(()) => format!("{} bytes written", bytes.len()),
            Err(e) => format!("write failed: {e}"),
        }
    }

    /// [`BURST`] `sleep`s of 0.2 to 2 s, in scope, at once; each must end by itself.
    fn burst(&mut self) -> String {
        let mut started = 0;
        for _ in 0..BURST {
            let secs = format!("{:.2}", self.rng.secs(0.2, 2.0).as_secs_f64());
            let mut cmd = Command::new("sleep");
            self.w.home.env(&mut cmd);
            cmd.arg(secs).stdin(Stdio::null()).stdout(Stdio::null());
            if let Ok(child) = cmd.spawn() {
                self.w
                    .ledger()
                    .own_child(child, "burst process", Fate::EndsByItself);
                started += 1;
            }
        }
        format!("{started} processes")
    }
}

/// One real Serena session requested and released before the clock starts: Serena 2.1.0
/// writes a file of its own in `SERENA_HOME` at its first start (the news it has shown, a
/// pickle) and fails every start after if that write was cut short by a full disk. On a desk
/// Serena has run before; so here.
fn warm_up(api: &Api, project: &str) {
    progress("soak: one real Serena session first (Serena's own files written)");
    let body = json!({"project_path": project, "transport": "streamable-http"});
    let (status, v) = api.call(
        "POST",
        "/request-session",
        Some(body),
        Duration::from_secs(180),
    );
    let id = v["session_id"]
        .as_str()
        .unwrap_or_else(|| panic!("the first session did not start: HTTP {status} {v}"));
    let release = json!({"session_id": id});
    let (status, v) = api.call(
        "POST",
        "/release-session",
        Some(release),
        Duration::from_secs(60),
    );
    assert_eq!(status, 200, "the first session's release: {v}");
}

/// SIGTERM to `pid`.
fn term(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
}

/// The child of `parent` with `arg` in its command line, once it runs (10 s at most).
fn under(parent: u32, arg: &str) -> Option<u32> {
    poll(Duration::from_millis(20), Duration::from_secs(10), || {
        child_with_arg(parent, arg)
    })
}

// ---------------------------------------------------------------------------------------------
// The end: records, then orphans; the figures.

impl Soak {
    /// The checks, once the last fault is over: records with every client still there, then
    /// the share and API clients ended, the harness's orphans killed, and orphans counted.
    fn finish(&mut self) -> Findings {
        progress("soak: over; checking records after a grace");
        if !self.daemon.up() {
            self.restart_daemon();
        }
        std::thread::sleep(Duration::from_secs_f64(GRACE + 3.0));
        let records_lost = poll(Duration::from_secs(1), RECORDS_WAIT, || {
            let lost = self.lost_records();
            lost.is_empty().then_some(Vec::new())
        })
        .unwrap_or_else(|| self.lost_records());
        progress("soak: ending the share and API clients, killing the harness's orphans");
        self.end_actors();
        for o in &mut self.orphans {
            o.since = Instant::now() - Duration::from_secs(3600);
        }
        self.orphans_step();
        progress("soak: checking for orphans after the grace and linger");
        std::thread::sleep(Duration::from_secs_f64(GRACE + SHARE_LINGER_SECONDS));
        let orphans = poll(Duration::from_secs(1), ORPHANS_WAIT, || {
            let (left, _) = self.unowned();
            left.is_empty().then_some(Vec::new())
        })
        .unwrap_or_else(|| self.unowned().0);
        let (_, bridges_left) = self.unowned();
        let unheld_sessions = self.active_sessions().len();
        self.check();
        Findings {
            records_lost,
            orphans,
            bridges_left,
            unheld_sessions,
        }
    }

    fn end_actors(&mut self) {
        for a in self.shares.iter().chain(&self.sessions) {
            a.stop.store(true, Ordering::Relaxed);
        }
        for a in self.shares.drain(..).chain(self.sessions.drain(..)) {
            let _ = a.handle.join();
        }
    }

    /// The active sessions now: their Serena's PID -> session ID.
    fn active_sessions(&self) -> HashMap<u32, String> {
        let list = self.w.api.get("/api/sessions").unwrap_or(Value::Null);
        list.as_array()
            .into_iter()
            .flatten()
            .filter(|s| s.get("ended_at").is_none_or(Value::is_null))
            .filter_map(|s| {
                let pid = s["pid"].as_u64()? as u32;
                Some((pid, s["session_id"].as_str()?.to_string()))
            })
            .filter(|(pid, _)| alive(*pid))
            .collect()
    }

    /// The Serena processes of the run's scope now.
    fn scoped_serenas(&self) -> (Snapshot, Vec<u32>) {
        let snap = snapshot();
        let scoped: HashSet<u32> = self.w.home.scoped_pids().into_iter().collect();
        let serenas = snap
            .iter()
            .filter(|p| scoped.contains(&p.pid) && alive(p.pid))
            .filter(|p| serena_server_args(&p.cmdline).is_some())
            .map(|p| p.pid)
            .collect();
        (snap, serenas)
    }

    /// Live Serenas missing from `instances.json` or `/api/instances`, real ones no session
    /// claims, and held sessions missing from `/api/sessions` or `sessions.json`.
    fn lost_records(&self) -> Vec<String> {
        let (snap, serenas) = self.scoped_serenas();
        let registry: HashSet<u64> = std::fs::read_to_string(self.w.home.registry_path())
            .ok()
            .and_then(|t| serde_json::from_str::<Vec<Value>>(&t).ok())
            .unwrap_or_default()
            .iter()
            .filter_map(|r| r["pid"].as_u64())
            .collect();
        let listed: HashSet<u64> = self
            .w
            .api
            .get("/api/instances")
            .and_then(|l| l.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter(|i| i["state_reason"] != "dead")
            .filter_map(|i| i["pid"].as_u64())
            .collect();
        let sessions = self.active_sessions();
        let mut lost = Vec::new();
        let ledger = self.w.ledger();
        for pid in serenas {
            let what = describe(&ledger, &snap, pid);
            if !registry.contains(&u64::from(pid)) {
                lost.push(format!("{what}: not in instances.json"));
            }
            if !listed.contains(&u64::from(pid)) {
                lost.push(format!("{what}: not in /api/instances"));
            }
            let real = snap.get(pid).is_some_and(|p| !fake::is_server(&p.cmdline));
            if real && !sessions.contains_key(&pid) {
                lost.push(format!("{what}: real Serena, no active session claims it"));
            }
        }
        let stored = std::fs::read_to_string(self.w.home.serena_home().join("tray/sessions.json"))
            .unwrap_or_default();
        for (id, pid) in self.w.held.lock().expect("held").iter() {
            if !alive(*pid) {
                continue;
            }
            if sessions.get(pid) != Some(id) {
                lost.push(format!(
                    "held session {id} (Serena {pid}): not active in /api/sessions"
                ));
            }
            if !stored.contains(id.as_str()) {
                lost.push(format!(
                    "held session {id} (Serena {pid}): not in sessions.json"
                ));
            }
        }
        lost
    }

    /// Serenas in scope that nothing owns (no live ancestor of the harness's, no active
    /// session), language servers whose Serena is gone; and `launch` processes whose client
    /// is gone (for the note).
    fn unowned(&self) -> (Vec<String>, Vec<String>) {
        let (snap, serenas) = self.scoped_serenas();
        let sessions = self.active_sessions();
        let ledger = self.w.ledger();
        let harness = std::process::id();
        let owner_lives = |pid: u32| {
            ancestors(&snap, pid)
                .iter()
                .any(|a| *a == harness || ledger.fate(*a) == Some(Fate::Lives) && alive(*a))
        };
        let mut left: Vec<String> = serenas
            .iter()
            .filter(|p| !sessions.contains_key(p) && !owner_lives(**p))
            .map(|p| describe(&ledger, &snap, *p))
            .collect();
        let scoped: HashSet<u32> = self.w.home.scoped_pids().into_iter().collect();
        let serena_set: HashSet<u32> = serenas.iter().copied().collect();
        for p in snap
            .iter()
            .filter(|p| scoped.contains(&p.pid) && alive(p.pid))
        {
            let server = p
                .cmdline
                .iter()
                .any(|a| a == "fake-language-server" || a.contains("jedi-language-server"));
            let has_serena = ancestors(&snap, p.pid)
                .iter()
                .any(|a| serena_set.contains(a));
            if server && !has_serena {
                left.push(format!("language server {} ({})", p.pid, short_name(p)));
            }
        }
        let bridges = snap
            .iter()
            .filter(|p| scoped.contains(&p.pid) && alive(p.pid))
            .filter(|p| p.cmdline.iter().any(|a| a == "launch"))
            .filter(|p| !owner_lives(p.pid))
            .map(|p| format!("launch {} without its client", p.pid))
            .collect();
        (left, bridges)
    }

    /// Copies the run's logs (the daemon's, the share clients') to `<target>/bench/soak-<seed>/`.
    fn keep_logs(&self) {
        let dir = crate::target_dir()
            .join("bench")
            .join(format!("soak-{}", self.seed));
        let _ = std::fs::create_dir_all(&dir);
        for name in ["daemon.log", "share-clients.log"] {
            let _ = std::fs::copy(self.w.home.path().join(name), dir.join(name));
        }
        let logs = self.w.home.serena_home().join("tray/logs");
        for e in std::fs::read_dir(logs).into_iter().flatten().flatten() {
            let _ = std::fs::copy(e.path(), dir.join(e.file_name()));
        }
        let _ = std::fs::write(
            dir.join("registry-at-end.json"),
            std::fs::read(self.w.home.registry_path()).unwrap_or_default(),
        );
        eprintln!("soak: logs kept in {}", dir.display());
    }

    /// Everything the run started, ended: clients, the daemon, whatever carries the scope.
    fn cleanup(&mut self) {
        self.end_actors();
        self.w.ledger().kill_all();
        self.daemon.stop();
        poll(Duration::from_millis(200), Duration::from_secs(20), || {
            let left = self.w.home.scoped_pids();
            left.iter().for_each(|p| kill_one(*p));
            left.is_empty().then_some(())
        });
        self.disk.full(true);
    }

    fn metrics(
        &self,
        out: &mut Vec<Metric>,
        (readings, fds): (&[Option<Reading>], &[FdSample]),
        f: &Findings,
        wall: Duration,
    ) {
        let t = self.w.tally();
        let ledger = self.w.ledger();
        let total: usize = t.faults.values().sum();
        let by_kind: Vec<String> = FAULTS
            .iter()
            .map(|k| format!("{k} {}", t.faults.get(k).copied().unwrap_or(0)))
            .collect();
        let mut note = format!(
            "seed {}, {:.1} min ({:.0} s wall), a fault every {:.0} s: {}",
            self.seed,
            self.duration.as_secs_f64() / 60.0,
            wall.as_secs_f64(),
            self.every.as_secs_f64(),
            by_kind.join(", ")
        );
        if let Some(why) = &self.disk.why_not {
            note.push_str(&format!(
                "; disk_full NOT INJECTED ({} times drawn): {why}",
                t.not_injected.len()
            ));
        }
        note.push_str(&format!(
            "; traffic: {}; sessions {} requested, {} failed, {} released, {} releases failed; \
             share calls answered {}, share clients failing {}; orphans killed through the API {}",
            t.started
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect::<Vec<_>>()
                .join(", "),
            t.requests_ok,
            t.requests_failed.len(),
            t.releases,
            t.releases_failed.len(),
            t.share_calls_ok,
            t.share_failed.len(),
            t.orphan_kills
        ));
        out.push(Metric::new("soak_faults", total as f64, "", total).note(note));
        let orphans_note = format!(
            "launch processes left without their client: {}; active sessions at the end (after \
             every holder released): {}",
            f.bridges_left.len(),
            f.unheld_sessions
        );
        out.push(
            none_of("soak_orphans_left", &f.orphans, f.orphans.len())
                .note(format!("{}; {orphans_note}", evidence(&f.orphans))),
        );
        out.push(none_of(
            "soak_records_lost",
            &f.records_lost,
            f.records_lost.len(),
        ));
        out.push(none_of(
            "soak_wrong_kills",
            &ledger.wrong,
            ledger.wrong.len(),
        ));
        let starts = self.daemon.starts;
        out.push(
            none_of("soak_daemon_failures", &t.daemon_failures, starts)
                .note(format!("{starts} starts; {}", evidence(&t.daemon_failures))),
        );
        out.push(pss_growth(readings).goal(2.0));
        out.push(fd_growth(readings, fds).goal(5.0));
        for (what, list) in [
            ("orphan", &f.orphans),
            ("record lost", &f.records_lost),
            ("wrong kill", &ledger.wrong),
            ("daemon failure", &t.daemon_failures),
            ("launch left", &f.bridges_left),
            ("request failed", &t.requests_failed),
            ("release failed", &t.releases_failed),
            ("share client", &t.share_failed),
        ] {
            for line in list {
                eprintln!("soak: {what}: {line}");
            }
        }
    }
}

/// Whether every reading of the second half is of one daemon process: the readings.
fn one_daemon(readings: &[Option<Reading>]) -> Option<Vec<Reading>> {
    let all: Vec<Reading> = readings.iter().flatten().copied().collect();
    let one = all.len() >= 2
        && all.len() == readings.len()
        && all.windows(2).all(|w| w[0].pid == w[1].pid);
    one.then_some(all)
}

fn not_one_daemon(metric: &str, unit: &'static str, readings: &[Option<Reading>]) -> Metric {
    Metric::new(metric, f64::NAN, unit, 0).note(format!(
        "not one daemon process through the second half: {readings:?}"
    ))
}

/// The daemon's PSS growth (%) from the half to the end, if one daemon process lived through
/// every reading of the second half: the PSS of its anonymous memory (heap, stacks: what a leak
/// grows). Its whole PSS is in the note: the share of its code pages it is charged moves with
/// how many other processes map the same binary (every `serena-tray launch` client does), so
/// it rises when clients end, without a byte more in the daemon.
fn pss_growth(readings: &[Option<Reading>]) -> Metric {
    let Some(all) = one_daemon(readings) else {
        return not_one_daemon("soak_daemon_pss_growth_pct", "%", readings);
    };
    let (a, b) = (all[0], all[all.len() - 1]);
    let path = |f: fn(&Reading) -> f64| {
        let v: Vec<String> = all.iter().map(|r| format!("{:.2}", f(r))).collect();
        v.join(" ")
    };
    Metric::new(
        "soak_daemon_pss_growth_pct",
        100.0 * (b.anon - a.anon) / a.anon,
        "%",
        all.len(),
    )
    .note(format!(
        "daemon {}, the second half: anonymous PSS {:.2} -> {:.2} MiB (by eighths: {}); \
         whole PSS {:.1} -> {:.1} MiB (by eighths: {})",
        a.pid,
        a.anon,
        b.anon,
        path(|r| r.anon),
        a.pss,
        b.pss,
        path(|r| r.pss),
    ))
}

/// The daemon's open files: the floor (fewest) of the last quarter less that of the third.
/// Connections and watched processes come and go with the clients above the floor; what a
/// leak holds raises it.
fn fd_growth(readings: &[Option<Reading>], fds: &[FdSample]) -> Metric {
    let Some(all) = one_daemon(readings) else {
        return not_one_daemon("soak_fd_growth", "fds", readings);
    };
    let pid = all[0].pid;
    let floor = |from: f64, to: f64| {
        fds.iter()
            .filter(|(part, p, _)| *p == pid && (from..to).contains(part))
            .map(|(_, _, n)| *n)
            .min()
    };
    let (Some(third), Some(last)) = (floor(0.5, 0.75), floor(0.75, 2.0)) else {
        return not_one_daemon("soak_fd_growth", "fds", readings);
    };
    let path: Vec<String> = all.iter().map(|r| r.fds.to_string()).collect();
    Metric::new(
        "soak_fd_growth",
        last as f64 - third as f64,
        "fds",
        fds.len(),
    )
    .note(format!(
        "daemon {pid}: the fewest open files in the third quarter {third}, in the last {last} \
         ({} readings, one a second); at the eighths {}",
        fds.len(),
        path.join(" ")
    ))
}

/// A Serena process, as the ledger names it (else fake or real, not the harness's).
fn describe(ledger: &Ledger, snap: &Snapshot, pid: u32) -> String {
    match ledger.owned.get(&pid) {
        Some(o) => format!("{} {pid}", o.what),
        None => {
            let fake = snap.get(pid).is_some_and(|p| fake::is_server(&p.cmdline));
            let kind = if fake { "fake" } else { "real" };
            format!("{kind} Serena {pid} (not started by the harness)")
        }
    }
}

/// The first few of a list of evidence, and how many more.
/// A figure that must be 0: how many of `list` there are (over `n` looked at), the first few
/// in the note.
fn none_of(metric: &str, list: &[String], n: usize) -> Metric {
    Metric::new(metric, list.len() as f64, "", n)
        .goal(0.0)
        .note(evidence(list))
}

fn evidence(list: &[String]) -> String {
    if list.is_empty() {
        return "none".into();
    }
    let first: Vec<&str> = list.iter().take(4).map(String::as_str).collect();
    let more = list.len().saturating_sub(4);
    let mut s = first.join(" | ");
    if more > 0 {
        s.push_str(&format!(" | and {more} more (stderr lists all)"));
    }
    s
}

/// The ancestors of `pid` in `snap`, nearest first.
fn ancestors(snap: &Snapshot, pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut at = snap.get(pid).and_then(|p| p.ppid);
    while let Some(p) = at.filter(|p| *p > 1 && !out.contains(p)) {
        out.push(p);
        at = snap.get(p).and_then(|x| x.ppid);
    }
    out
}
