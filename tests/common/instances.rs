//! Serena instances as processes of the test's own, in its home's scope: real Serena (the test
//! venv's, over stdio, its stdin held by the test; or under a stand-in client, as an MCP client
//! runs it), the fake Serena (tests/bin/fake_serena.rs) alone or under its own stand-in client,
//! the start gate that keeps real Serenas from racing for a dashboard port, and what runs under
//! a Serena (its language server).

use super::processes::{alive, child_with_arg, find_under, tree, Reaper};
use super::sockets::listening_ports;
use super::{fake, free_port, poll, serena_exe, venv, wait_for, Home};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

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
    poll(Duration::from_millis(100), STARTUP_GATE, || {
        (!alive(pid) || !listening_ports(pid).is_empty()).then_some(())
    });
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
        child_with_arg(client_pid, "start-mcp-server")
    })
}

/// A real Serena on a new jedi project `project` of `home`, under a stand-in client (see
/// [`spawn_client`]) whose stdin the test holds, both owned by `reaper`: (the client's PID,
/// Serena's, the stdin). Killing the client orphans Serena and closes nothing.
pub fn client_with_serena(
    home: &Home,
    reaper: &mut Reaper,
    project: &str,
) -> (u32, u32, ChildStdin) {
    let dir = home.jedi_project(project);
    let (client, stdin) = spawn_client(home, &["--project", dir.to_str().expect("utf8")]);
    let client = reaper.adopt(client);
    let serena = serena_under(client);
    reaper.watch(serena);
    (client, serena, stdin)
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

/// The language server (jedi) under the Serena `serena`, if it runs.
pub fn language_server(serena: u32) -> Option<u32> {
    find_under(serena, |p| {
        p.cmdline.iter().any(|a| a.contains("jedi-language-server"))
    })
}

/// The process tree of `pid` (`pid` first) once its language server has started.
pub fn tree_with_language_server(pid: u32) -> Vec<u32> {
    wait_for(
        "the language server under Serena",
        Duration::from_secs(90),
        || language_server(pid).map(|_| tree(pid)),
    )
}
