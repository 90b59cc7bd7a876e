//! Helpers shared by the integration tests: a hermetic home, real Serena and the fake Serena
//! (`fake`: tests/bin/fake_serena.rs) as child processes that are killed (with their whole tree)
//! when the test ends, the `serena-tray` binary, and waiting for a condition.
#![allow(dead_code)]

pub mod browser;
pub mod desktop;
pub mod fake;
pub mod mcp;
pub mod wait;

pub use wait::{block_on, wait_for};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use serena_tray::core::procs::{Scope, Snapshot, SCOPE_VAR};
use serena_tray::core::{Core, Settings};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::time::{Duration, Instant};
use sysinfo::System;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv with serena-agent 2.1.0 and jedi-language-server that the test command creates.
pub fn venv() -> PathBuf {
    let dir = std::env::var_os("SERENA_TRAY_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".test-env/venv"));
    assert!(
        dir.join("bin/serena").exists(),
        "no Serena venv at {} (the README's test command creates it; or set SERENA_TRAY_TEST_VENV)",
        dir.display()
    );
    dir
}

pub fn serena_exe() -> PathBuf {
    venv().join("bin/serena")
}

/// Real Serena's MCP server over stdio on `project`, no browser opened: `serena` and its
/// arguments.
pub fn serena_mcp<'a>(serena: &'a str, project: &'a str) -> [&'a str; 6] {
    [
        serena,
        "start-mcp-server",
        "--project",
        project,
        "--open-web-dashboard",
        "False",
    ]
}

pub fn tray_exe() -> PathBuf {
    // Known to integration tests and benches (cargo sets CARGO_BIN_EXE_* for both); the
    // examples that share this module cannot use it.
    let Some(exe) = option_env!("CARGO_BIN_EXE_serena-tray") else {
        panic!("only the integration tests and benches know the serena-tray binary");
    };
    PathBuf::from(exe)
}

/// The tray app binary (`serena-tray` hands over to it when there is a display).
pub fn tray_app_exe() -> PathBuf {
    tray_exe().with_file_name("serena-tray-app")
}

/// A temporary HOME with its own `.serena`, and the discovery scope of one test: every process
/// started through [`Home::env`] carries the scope's marker, and every core and daemon of this
/// home sees only those, so a test never sees (or signals) a process it did not start.
pub struct Home {
    pub dir: tempfile::TempDir,
}

impl Home {
    pub fn new() -> Home {
        Home {
            dir: tempfile::Builder::new()
                .prefix("serena-tray-test-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// This test's discovery scope marker (unique per home).
    pub fn scope(&self) -> String {
        self.path().display().to_string()
    }

    pub fn serena_home(&self) -> PathBuf {
        self.path().join(".serena")
    }

    pub fn registry_path(&self) -> PathBuf {
        self.serena_home().join("instances.json")
    }

    /// The hermetic environment for a child: no network look-ups, no browser, no usage reports,
    /// and the venv first on PATH (Serena starts `jedi-language-server` by name, as an activated
    /// venv would provide it).
    pub fn env(&self, cmd: &mut Command) {
        let mut path = vec![venv().join("bin")];
        path.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        cmd.env("PATH", std::env::join_paths(path).expect("PATH"))
            .env("HOME", self.path())
            .env("SERENA_HOME", self.serena_home())
            .env(SCOPE_VAR, self.scope())
            .env("SERENA_USAGE_REPORTING", "false")
            .env("no_proxy", "127.0.0.1,localhost")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("http_proxy", "http://127.0.0.1:9")
            .env("https_proxy", "http://127.0.0.1:9")
            .env("HTTP_PROXY", "http://127.0.0.1:9")
            .env("HTTPS_PROXY", "http://127.0.0.1:9")
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY");
    }

    /// Where the daemon on `port` writes its stdout and stderr.
    pub fn daemon_log(&self, port: u16) -> PathBuf {
        self.path().join(format!("daemon-{port}.log"))
    }

    /// Writes `$SERENA_HOME/tray/config.toml`.
    pub fn tray_config(&self, text: &str) {
        let tray = self.serena_home().join("tray");
        std::fs::create_dir_all(&tray).expect("mkdir");
        std::fs::write(tray.join("config.toml"), text).expect("config.toml");
    }

    /// A small Python project registered with the offline jedi language server.
    pub fn jedi_project(&self, name: &str) -> PathBuf {
        let dir = self.path().join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("app.py"), "def hello():\n    return 1\n").expect("write");
        let mut cmd = Command::new(serena_exe());
        self.env(&mut cmd);
        let out = cmd
            .args(["project", "create", "--ls", "python_jedi"])
            .arg(&dir)
            .output()
            .expect("serena project create");
        assert!(
            out.status.success(),
            "serena project create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    }

    /// Settings for an in-process core or app on this home: its scope, short probes, any free
    /// ports, no settings file read.
    pub fn settings(&self) -> Settings {
        let mut s = Settings::defaults(self.serena_home());
        s.scope = Scope::Marked(self.scope());
        s.tray.probe_timeout = Duration::from_millis(700);
        s.dashboard.port = 0;
        s.tray.tray_protocol_port = 0;
        s
    }

    /// A core on this home with the given grace.
    pub fn core(&self, grace_secs: f64) -> Core {
        let mut s = self.settings();
        s.tray.zombie_grace = Duration::from_secs_f64(grace_secs);
        Core::new(s)
    }

    /// Runs `serena-tray --serena-home <home> ARGS`.
    pub fn tray(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(tray_exe());
        self.env(&mut cmd);
        cmd.arg("--serena-home")
            .arg(self.serena_home())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run serena-tray")
    }

    /// `serena-tray list --json`, parsed.
    pub fn list_json(&self) -> Vec<Value> {
        let out = self.tray(&["list", "--json"]);
        assert!(
            out.status.success(),
            "list --json failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("list --json prints JSON")
    }

    pub fn registry(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.registry_path()).expect("registry");
        serde_json::from_str(&text).expect("registry JSON")
    }
}

impl Drop for Home {
    /// The last line of defence, pass or fail: every process still carrying this home's scope
    /// marker (anything a test started, and what that started: sessions a daemon launched,
    /// orphans) is killed. Nothing else carries it.
    fn drop(&mut self) {
        let mut sys = System::new();
        let snap = Snapshot::capture(&mut sys);
        let pids: Vec<u32> = snap.iter().map(|p| p.pid).collect();
        let ours = Scope::Marked(self.scope())
            .admitted(&mut sys, &pids)
            .unwrap_or_default();
        for pid in ours {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// Kills every process of `pid`'s tree (snapshot first: children get re-parented once it dies).
pub fn kill_tree(pid: u32) {
    let snap = Snapshot::capture(&mut System::new());
    let mut pids: Vec<u32> = snap.descendants(pid).iter().map(|p| p.pid).collect();
    pids.push(pid);
    for p in pids {
        let _ = kill(Pid::from_raw(p as i32), Signal::SIGKILL);
    }
}

/// SIGKILL to this one process (its children live on: they are to become orphans).
pub fn kill_one(pid: u32) {
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
}

/// A client process (the fake's `fake-client`) that starts a fake Serena and waits on it, as an
/// MCP client does: (client, Serena).
pub fn spawn_fake_client(home: &Home, reaper: &mut Reaper) -> (u32, u32) {
    spawn_fake_client_with(home, reaper, &[])
}

/// [`spawn_fake_client`] with extra environment for both (e.g. `FAKE_SERENA_CHILDREN`).
pub fn spawn_fake_client_with(
    home: &Home,
    reaper: &mut Reaper,
    env: &[(&str, &str)],
) -> (u32, u32) {
    let mut cmd = fake::client_of_server(&[]);
    home.env(&mut cmd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let client = cmd.spawn().expect("client");
    let client = reaper.adopt(client);
    let serena = serena_under(client);
    reaper.watch(serena);
    (client, serena)
}

/// The median of measured figures (the benchmarks).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The 90th percentile of measured figures (the benchmarks).
pub fn p90(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * 0.9).round() as usize]
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

/// Serena has no dashboard-port option: it takes the first free port from 24282 by test-binding,
/// so two started at the same moment can pick the same one, and the loser runs without a
/// dashboard (../shared/SERENA.md). Tests of one binary run in parallel threads (and binaries one
/// after another), so every real Serena a test starts goes through this gate: held from the start
/// until the new process listens (its dashboard is up), exits, or [`STARTUP_GATE`] passes.
static START_GATE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The longest one start holds [`START_GATE`] (real Serena on a busy 2-core machine).
pub const STARTUP_GATE: Duration = Duration::from_secs(90);

/// Holds the start gate, for a test that races Serenas on purpose (and must not steal ports from
/// other tests' starts meanwhile).
pub fn start_gate() -> std::sync::MutexGuard<'static, ()> {
    START_GATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits (holding nothing) until `pid` listens on a TCP port or is gone, at most [`STARTUP_GATE`].
fn dashboard_up_or_gone(pid: u32) {
    let start = Instant::now();
    let sockets = serena_tray::core::sockets::platform();
    while start.elapsed() < STARTUP_GATE && alive(pid) {
        let listening = sockets
            .listening_ports(&[pid])
            .get(&pid)
            .is_some_and(|p| !p.is_empty());
        if listening {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A real Serena, stdio transport, its stdin held open by the test (as an MCP client would);
/// returned once its dashboard is up (see [`START_GATE`]).
pub fn spawn_serena(home: &Home, args: &[&str]) -> (Child, ChildStdin) {
    let _gate = start_gate();
    let started = spawn_serena_racing(home, args, &[]);
    dashboard_up_or_gone(started.0.id());
    started
}

/// [`spawn_serena`] with extra environment and without the start gate: for a test of the port
/// race itself, which holds [`start_gate`] around its starts.
pub fn spawn_serena_racing(
    home: &Home,
    args: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
) -> (Child, ChildStdin) {
    let mut cmd = Command::new(serena_exe());
    home.env(&mut cmd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let log = std::fs::File::create(home.path().join(format!("serena-{}.log", rand_suffix())))
        .expect("log file");
    let mut child = cmd
        .arg("start-mcp-server")
        .args(["--open-web-dashboard", "False"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn serena");
    let stdin = child.stdin.take().expect("stdin");
    (child, stdin)
}

/// A client (a Python process) that starts a real Serena with the client's own stdin, then
/// waits, as an MCP client does. The test holds the stdin, so killing the client closes nothing.
/// Returned once that Serena's dashboard is up (see [`START_GATE`]).
pub fn spawn_client(home: &Home, serena_args: &[&str]) -> (Child, ChildStdin) {
    let _gate = start_gate();
    let mut cmd = Command::new(venv().join("bin/python3"));
    home.env(&mut cmd);
    let mut child = cmd
        .args([
            "-c",
            "import subprocess, sys; subprocess.Popen(sys.argv[1:]).wait()",
        ])
        .arg(serena_exe())
        .arg("start-mcp-server")
        .args(["--open-web-dashboard", "False"])
        .args(serena_args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn client");
    let stdin = child.stdin.take().expect("stdin");
    dashboard_up_or_gone(serena_under(child.id()));
    (child, stdin)
}

/// The Serena process a client started, once it runs.
pub fn serena_under(client_pid: u32) -> u32 {
    wait_for("Serena under its client", Duration::from_secs(60), || {
        let snap = Snapshot::capture(&mut System::new());
        let found = snap
            .iter()
            .find(|p| {
                p.ppid == Some(client_pid) && p.cmdline.iter().any(|a| a == "start-mcp-server")
            })
            .map(|p| p.pid);
        found
    })
}

/// The fake Serena (tests/bin/fake_serena.rs), `start-mcp-server ARGS`, with extra environment.
pub fn spawn_fake(home: &Home, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut cmd = fake::server(args);
    home.env(&mut cmd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn fake serena")
}

/// Makes the fake Serena `pid` hang its dashboard on `port` (SIGUSR1) and waits until it does:
/// the fake's signal thread takes the signal a moment after `kill` returns, not at once.
pub fn hang_dashboard(pid: u32, port: u16) {
    use std::io::{Read, Write};
    kill(Pid::from_raw(pid as i32), Signal::SIGUSR1).expect("hang");
    wait_for("the dashboard to hang", Duration::from_secs(10), || {
        let answered = (|| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
            s.set_read_timeout(Some(Duration::from_millis(300)))?;
            s.write_all(b"GET /heartbeat HTTP/1.0\r\n\r\n")?;
            let mut first = [0u8; 1];
            s.read_exact(&mut first)
        })()
        .is_ok();
        (!answered).then_some(())
    });
}

fn rand_suffix() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )
}

/// The `list --json` object for `pid` (the live one, if a dead record shares the PID).
pub fn find_pid(list: &[Value], pid: u32) -> Option<Value> {
    let mut rows = list.iter().filter(|v| v["pid"] == pid);
    let first = rows.next()?.clone();
    Some(
        rows.find(|v| v["state_reason"] != "dead")
            .cloned()
            .filter(|_| first["state_reason"] == "dead")
            .unwrap_or(first),
    )
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

/// The events of a daemon's `/api/events`, each with the instant it arrived, on a channel.
pub fn events(d: &Daemon) -> std::sync::mpsc::Receiver<(Instant, Value)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (open_tx, open) = std::sync::mpsc::channel();
    let url = d.url("/api/events");
    let auth = format!("Bearer {}", d.token);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let client = reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("client");
            let Ok(mut resp) = client.get(&url).header("authorization", auth).send().await else {
                return;
            };
            let _ = open_tx.send(());
            let mut buf = String::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                let at = Instant::now();
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let block: String = buf.drain(..end + 2).collect();
                    let data: String = block
                        .lines()
                        .filter_map(|l| l.strip_prefix("data:"))
                        .map(str::trim_start)
                        .collect();
                    if let Ok(v) = serde_json::from_str::<Value>(&data) {
                        if tx.send((at, v)).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    });
    open.recv_timeout(Duration::from_secs(10))
        .expect("the event stream to open");
    rx
}

/// Waits for the first event `f` accepts: when it arrived, and its data.
pub fn next_event(
    rx: &std::sync::mpsc::Receiver<(Instant, Value)>,
    timeout: Duration,
    f: impl Fn(&Value) -> bool,
) -> Option<(Instant, Value)> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match rx.recv_timeout(left) {
            Ok((at, v)) if f(&v) => return Some((at, v)),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

/// Waits for the first event `f` accepts; its arrival instant.
pub fn wait_event(
    rx: &std::sync::mpsc::Receiver<(Instant, Value)>,
    timeout: Duration,
    f: impl Fn(&Value) -> bool,
) -> Option<Instant> {
    next_event(rx, timeout, f).map(|(at, _)| at)
}

/// A free TCP port on loopback (bound and released: a race is possible but rare).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A `serena-tray daemon` process on its own ports, killed at the end of the test.
pub struct Daemon {
    pub port: u16,
    pub tray_port: u16,
    pub token: String,
    pub pid: u32,
    child: Option<Child>,
}

impl Home {
    /// Starts `serena-tray daemon` on free ports and waits until it answers.
    pub fn daemon(&self) -> Daemon {
        self.daemon_on(free_port(), free_port())
    }

    pub fn daemon_on(&self, port: u16, tray_port: u16) -> Daemon {
        self.daemon_with(port, tray_port, &[])
    }

    /// A daemon with extra environment (inherited by the sessions it launches).
    pub fn daemon_with(&self, port: u16, tray_port: u16, env: &[(&str, &str)]) -> Daemon {
        self.daemon_with_args(port, tray_port, env, &[])
    }

    /// A daemon on free ports with extra arguments (`--idle-shutdown-minutes 0.2`).
    pub fn daemon_args(&self, args: &[&str]) -> Daemon {
        self.daemon_with_args(free_port(), free_port(), &[], args)
    }

    fn daemon_with_args(
        &self,
        port: u16,
        tray_port: u16,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Daemon {
        let mut cmd = Command::new(tray_exe());
        self.env(&mut cmd);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let log = std::fs::File::create(self.daemon_log(port)).expect("daemon log");
        let child = cmd
            .arg("--serena-home")
            .arg(self.serena_home())
            .args(["daemon", "--port", &port.to_string()])
            .args(["--tray-protocol-port", &tray_port.to_string()])
            .args(args)
            .env("SERENA_TRAY_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn daemon");
        let pid = child.id();
        let mut d = Daemon {
            port,
            tray_port,
            token: String::new(),
            pid,
            child: Some(child),
        };
        wait_for("the daemon to answer", Duration::from_secs(30), || {
            (d.call("GET", "/api/health", None).0 == 200).then_some(())
        });
        d.token = std::fs::read_to_string(self.serena_home().join("tray/token"))
            .expect("token file")
            .trim()
            .to_string();
        d
    }
}

impl Daemon {
    /// A handle on the app `pid` of `home` started some other way (not owned: not killed on
    /// drop), once its API answers on `port`, with its token.
    pub fn attach_app(home: &Home, port: u16, pid: u32) -> Daemon {
        let mut d = Daemon::attach(port, pid);
        wait_for("the app's API to answer", Duration::from_secs(60), || {
            (d.raw("GET", "/api/health", None, &[]).0 == 200).then_some(())
        });
        d.token = std::fs::read_to_string(home.serena_home().join("tray/token"))
            .expect("token file")
            .trim()
            .to_string();
        d
    }

    /// A handle on a daemon started some other way (not owned: not killed on drop).
    pub fn attach(port: u16, pid: u32) -> Daemon {
        Daemon {
            port,
            tray_port: 0,
            token: String::new(),
            pid,
            child: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// An authorised call: (status, JSON body or Null).
    /// `POST /request-session` with this body, holding the start gate (see [`START_GATE`]):
    /// the daemon answers once the session's Serena has its dashboard.
    pub fn request_session(&self, body: Value) -> (u16, Value) {
        let _gate = start_gate();
        self.call("POST", "/request-session", Some(body))
    }

    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut headers = vec![];
        let auth = format!("Bearer {}", self.token);
        if !self.token.is_empty() {
            headers.push(("authorization", auth.as_str()));
        }
        self.raw(method, path, body.map(|b| b.to_string()), &headers)
    }

    /// A call with exactly these headers and this raw body (JSON content type if a body).
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let url = self.url(path);
        block_on(async {
            let client = reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(200))
                .build()
                .expect("client");
            let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
            let mut req = client.request(method, &url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if let Some(b) = body {
                req = req.header("content-type", "application/json").body(b);
            }
            match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let text = resp.text().await.unwrap_or_default();
                    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
                }
                // Not listening (yet): status 0.
                Err(e) if e.is_connect() => (0, Value::Null),
                Err(e) => panic!("{url}: {e}"),
            }
        })
    }

    /// Stops it with SIGTERM and waits; returns its exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A plain JSON request to a loopback port (no token): (status, JSON body or Null).
pub fn json_request(method: &str, port: u16, path: &str, body: Option<Value>) -> (u16, Value) {
    json_request_with(method, port, path, body, &[])
}

/// [`json_request`] with extra headers.
pub fn json_request_with(
    method: &str,
    port: u16,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let url = format!("http://127.0.0.1:{port}{path}");
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    block_on(async move {
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let mut req = client.request(method, &url);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    })
}

/// A process of this test that is not Serena yet listens on a port (Python's web server, in the
/// test's scope): (its PID, its port), once it listens.
pub fn spawn_non_serena_listener(home: &Home, reaper: &mut Reaper) -> (u32, u16) {
    let port = free_port();
    let mut cmd = Command::new("python3");
    home.env(&mut cmd);
    let pid = reaper.adopt(
        cmd.args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m http.server"),
    );
    wait_for("the web server to listen", Duration::from_secs(20), || {
        serena_tray::core::sockets::pid_owns_port(pid, port).then_some(())
    });
    (pid, port)
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

/// A home whose tray config points at the test venv's Serena.
pub fn home_with_serena() -> Home {
    let home = Home::new();
    let tray = home.serena_home().join("tray");
    std::fs::create_dir_all(&tray).expect("mkdir");
    std::fs::write(
        tray.join("config.toml"),
        format!(
            "serena_command = [{:?}]\n",
            serena_exe().to_str().expect("utf8")
        ),
    )
    .expect("config");
    home
}

/// One MCP JSON-RPC call over streamable HTTP; returns (session header, JSON reply or Null).
pub async fn mcp(
    client: &reqwest::Client,
    url: &str,
    session: Option<&str>,
    body: Value,
) -> (Option<String>, u16, Value) {
    let mut req = client
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .json(&body);
    if let Some(s) = session {
        req = req
            .header("mcp-session-id", s)
            .header("mcp-protocol-version", "2025-03-26");
    }
    let resp = req.send().await.expect("MCP request");
    let status = resp.status().as_u16();
    let sid = resp
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let text = resp.text().await.unwrap_or_default();
    // The reply is JSON or one server-sent event carrying it.
    let json = serde_json::from_str(&text).ok().or_else(|| {
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .find_map(|d| serde_json::from_str(d.trim()).ok())
    });
    (sid, status, json.unwrap_or(Value::Null))
}

pub fn tools_over_mcp(url: &str) -> Vec<String> {
    block_on(async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let (sid, status, init) = mcp(
            &client,
            url,
            None,
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-03-26", "capabilities": {},
                "clientInfo": {"name": "serena-tray-test", "version": "1"}}}),
        )
        .await;
        assert_eq!(status, 200, "{init:?}");
        assert!(init["result"]["serverInfo"].is_object(), "{init:?}");
        let sid = sid.expect("mcp-session-id");
        let (_, status, _) = mcp(
            &client,
            url,
            Some(&sid),
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        )
        .await;
        assert_eq!(status, 202);
        let (_, status, list) = mcp(
            &client,
            url,
            Some(&sid),
            json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
        )
        .await;
        assert_eq!(status, 200, "{list:?}");
        list["result"]["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .filter_map(|t| t["name"].as_str().map(String::from))
            .collect()
    })
}

/// The process tree under `pid` once its language server has started.
pub fn tree_with_language_server(pid: u32) -> Vec<u32> {
    wait_for(
        "the language server under Serena",
        Duration::from_secs(90),
        || {
            let snap = Snapshot::capture(&mut System::new());
            let d: Vec<u32> = snap
                .descendants(pid)
                .iter()
                .filter(|p| p.cmdline.iter().any(|a| a.contains("jedi-language-server")))
                .map(|p| p.pid)
                .collect();
            (!d.is_empty()).then(|| {
                let mut all: Vec<u32> = snap.descendants(pid).iter().map(|p| p.pid).collect();
                all.push(pid);
                all
            })
        },
    )
}

/// Sum of `VmRSS` over the process tree of `pid`, in bytes, read from /proc now.
pub fn tree_rss_bytes(pid: u32) -> u64 {
    let snap = Snapshot::capture(&mut System::new());
    let mut pids: Vec<u32> = snap.descendants(pid).iter().map(|p| p.pid).collect();
    pids.push(pid);
    pids.into_iter().map(rss_kib).sum::<u64>() * 1024
}
