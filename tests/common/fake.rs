//! The fake Serena of the tests (tests/bin/fake_serena.rs, the example `serena`; its module
//! documentation lists what it does): where its binary is, and commands that run it.
//!
//! The binary is `target/<profile>/examples/serena` (`serena.exe` on Windows), next to the
//! running test, bench or example. Outside Windows it is built (`cargo build --example serena`,
//! the caller's profile and features) the first time a process asks for it, whether or not it
//! is there, so that it is never stale: a `cargo build` run from inside `cargo test`, `cargo
//! bench` or `cargo run` does not wait for the outer one (cargo holds its build lock only while
//! it builds), and when everything is fresh it only checks. A Windows test (under Wine, where
//! cargo cannot run) finds it built beforehand.
//!
//! Std only and no Unix API, so that it compiles for Windows too: a Windows test includes this
//! file alone (`#[path = "common/fake.rs"] mod fake;`).
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

/// The subcommand that makes the fake a Serena MCP server (what discovery recognises).
pub const SERVER: &str = "start-mcp-server";

/// `target/<profile>` of the running executable: tests and benches run from its `deps/`,
/// examples from its `examples/`.
fn profile_dir() -> PathBuf {
    let me = std::env::current_exe().expect("the running executable's path");
    let dir = me.parent().expect("the running executable's directory");
    match dir.file_name().and_then(OsStr::to_str) {
        Some("deps" | "examples") => dir.parent().expect("target/<profile>").to_path_buf(),
        _ => dir.to_path_buf(),
    }
}

/// The fake's binary, built first (once per process) where cargo can run.
pub fn exe() -> PathBuf {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        let profile = profile_dir();
        let exe = profile
            .join("examples")
            .join(format!("serena{}", std::env::consts::EXE_SUFFIX));
        if !cfg!(windows) {
            build(&profile, &exe);
        }
        assert!(
            exe.exists(),
            "the fake Serena {} is missing: build it with `cargo build --example serena` (the \
             same target and profile as this program)",
            exe.display()
        );
        exe
    })
    .clone()
}

/// `cargo build --example serena` for the profile of `profile` (its directory's name) and the
/// caller's features. If cargo cannot be started at all, an `exe` already there is used as it
/// is (said on stderr); a failed build is an error.
fn build(profile: &Path, exe: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "--quiet", "--locked", "--example", "serena"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null());
    match profile.file_name().and_then(OsStr::to_str) {
        Some("debug") | None => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
    }
    if !cfg!(feature = "gui") {
        // The library the example links, as the caller has it (no GTK build for nothing).
        cmd.arg("--no-default-features");
    }
    match cmd.output() {
        Ok(out) => assert!(
            out.status.success(),
            "building the fake Serena failed ({:?}): {}",
            cmd,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) if exe.exists() => eprintln!(
            "cannot run {} ({e}): using the fake Serena as built, {}",
            Path::new(&cargo).display(),
            exe.display()
        ),
        Err(e) => panic!(
            "cannot run {} to build the fake Serena: {e}",
            Path::new(&cargo).display()
        ),
    }
}

/// The fake as a Serena MCP server: `serena start-mcp-server ARGS`, no stdin, its output
/// discarded (add environment, e.g. `FAKE_SERENA_CHILDREN`, before spawning).
pub fn server(args: &[&str]) -> Command {
    let mut cmd = Command::new(exe());
    cmd.arg(SERVER)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// The fake as a stand-in MCP client: `serena fake-client PROGRAM ARGS` starts PROGRAM ARGS with
/// the client's own stdin, stdout and stderr (here none, none, discarded) and waits for it.
pub fn client<S: AsRef<OsStr>>(program: impl AsRef<OsStr>, args: &[S]) -> Command {
    let mut cmd = Command::new(exe());
    cmd.arg("fake-client")
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// A client (the fake's `fake-client`) that starts a fake Serena MCP server with `args`.
pub fn client_of_server(args: &[&str]) -> Command {
    let mut all = vec![SERVER];
    all.extend_from_slice(args);
    client(exe(), &all)
}

/// Whether a command line (argv) is the fake's as a Serena MCP server.
pub fn is_server(cmdline: &[String]) -> bool {
    let exe = exe();
    cmdline.first().is_some_and(|a| Path::new(a) == exe)
        && cmdline.get(1).is_some_and(|a| a == SERVER)
}

/// Spawns `cmd` (e.g. [`server`]) with its stderr read here: the child and the dashboard port it
/// printed, once it serves (`None`: no dashboard, or it exited). The rest of its stderr is
/// drained in a thread of its own.
pub fn spawn_reading_port(mut cmd: Command) -> (Child, Option<u16>) {
    let mut child = cmd
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the fake Serena");
    let stderr = child.stderr.take().expect("its stderr");
    let mut reader = BufReader::new(stderr);
    let mut port = None;
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
        if let Some(value) = line.trim_end().strip_prefix("FAKE_SERENA_DASHBOARD_PORT=") {
            port = value.parse().ok();
            break;
        }
        line.clear();
    }
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    (child, port)
}

/// `config.toml` with the fake as the Serena command (sessions and wakes start it), then
/// `extra` settings.
pub fn command_config(extra: &str) -> String {
    format!(
        "serena_command = [{:?}]\n{extra}",
        exe().to_str().expect("utf8")
    )
}
