//! `serena-tray launch` with real Serena under a stand-in MCP client (a Python process that runs
//! the command it is given with the test's pipes as its stdin and stdout, as an MCP client
//! does): the MCP stream goes through byte for byte; the instance is shown as launched, with the
//! real client; the client killed while the test still holds the pipes takes Serena and its
//! language server with it; SIGTERM to launch ends Serena; exit codes pass through; a missing
//! command is one clear line; ten launches at once start exactly one dashboard and open it
//! exactly once (a recording `xdg-open` on PATH stands in for the browser).

mod common;

use common::mcp::*;
use common::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SOON: Duration = Duration::from_secs(30);

#[test]
fn mcp_goes_through_byte_for_byte_and_serena_goes_with_its_client() {
    let home = Home::new();
    let project = home.jedi_project("through");
    let project = project.to_str().expect("utf8");
    let d = home.daemon();
    let mut reaper = Reaper::default();
    let serena_cmd = [
        serena_exe().display().to_string(),
        "start-mcp-server".into(),
        "--project".into(),
        project.into(),
        "--open-web-dashboard".into(),
        "False".into(),
    ];

    // The same session straight to Serena, for comparison.
    let mut direct = Command::new(serena_exe());
    home.env(&mut direct);
    let mut direct = direct
        .args(&serena_cmd[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("serena");
    let mut direct_stream = Stream::of(&mut direct);
    reaper.adopt(direct);
    let (direct_init, direct_tools) = direct_stream.handshake();

    let args = launch_args(
        &home,
        &["--port", &d.port.to_string()],
        &["--web-dashboard-global"],
        &strs(&serena_cmd),
    );
    let mut c = client(&home, &tray_exe(), &strs(&args));
    let mut stream = Stream::of(&mut c);
    let client_pid = reaper.adopt(c);
    let (init, tools) = stream.handshake();
    assert_eq!(init, direct_init, "initialize, byte for byte");
    assert_eq!(tools, direct_tools, "tools/list, byte for byte");
    assert!(init.contains("\"serverInfo\""), "{init}");

    // The dashboard (already running: launch left it alone) shows it as launched, with the
    // real client.
    let launcher = launch_under(client_pid);
    let serena = serena_under(launcher);
    let tree = tree_with_language_server(serena);
    let shown = wait_for("the instance in the dashboard", SOON, || {
        let (_, list) = d.call("GET", "/api/instances", None);
        find_pid(list.as_array()?, serena).filter(|i| i["project_name"] == "through")
    });
    assert_eq!(shown["source"], "launch", "{shown}");
    assert_eq!(shown["client_pid"], client_pid, "{shown}");
    assert_eq!(shown["state"], "live_with_project");

    // The client dies; the test still holds the pipes, so nothing closes: launch ends Serena.
    kill_one(client_pid);
    wait_for("Serena and its language server to be gone", SOON, || {
        tree.iter().all(|p| !alive(*p)).then_some(())
    });
    wait_for("launch to end", SOON, || (!alive(launcher)).then_some(()));
    assert!(alive(d.pid), "the dashboard outlives the MCP session");
    drop(stream);
}

/// Runs `serena-tray launch --web-dashboard-global=false -- cmd` directly; returns it (its
/// stdin a pipe the returned child holds open, as a client does).
fn launch_directly(home: &Home, cmd: &[&str]) -> Child {
    let args = launch_args(home, &[], &["--web-dashboard-global=false"], cmd);
    let mut c = Command::new(tray_exe());
    home.env(&mut c);
    c.args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serena-tray launch")
}

#[test]
fn exit_codes_and_signals_pass_through_and_a_missing_command_is_one_line() {
    let home = Home::new();
    let out = launch_directly(&home, &["sh", "-c", "exit 7"])
        .wait_with_output()
        .expect("launch");
    assert_eq!(out.status.code(), Some(7));
    assert!(
        out.stdout.is_empty(),
        "launch writes nothing of its own on stdout"
    );
    let out = launch_directly(&home, &["sh", "-c", "kill -9 $$"])
        .wait_with_output()
        .expect("launch");
    assert_eq!(out.status.code(), Some(128 + 9), "died by SIGKILL");

    let out = launch_directly(&home, &["no-such-serena-xyz", "start-mcp-server"])
        .wait_with_output()
        .expect("launch");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("`no-such-serena-xyz` on PATH"), "{err}");
    assert!(err.contains("absolute path after `--`"), "{err}");

    // SIGTERM to launch: passed on; real Serena ends (its language server with it), and
    // launch exits with Serena's code.
    let project = home.jedi_project("term");
    let mut reaper = Reaper::default();
    let serena = serena_exe().display().to_string();
    let child = launch_directly(&home, &serena_mcp(&serena, project.to_str().expect("utf8")));
    let launcher = reaper.adopt(child);
    let serena = serena_under(launcher);
    let tree = tree_with_language_server(serena);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(launcher as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = wait_for("launch to end", SOON, || {
        reaper
            .child(launcher)
            .and_then(|c| c.try_wait().ok())
            .flatten()
    });
    assert!(tree.iter().all(|p| !alive(*p)), "Serena's tree is gone");
    let code = status.code().expect("an exit code");
    assert!(
        code == 0 || code == 128 + 15,
        "Serena's own code: {status:?}"
    );
}

#[test]
fn ten_launches_at_once_start_one_dashboard_and_open_it_once() {
    let home = Home::new();
    let port = free_port();
    // The user's browser: records what it is asked to open.
    let bin = home.path().join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let opened = home.path().join("opened");
    let script = bin.join("xdg-open");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$@\" >> '{}'\n", opened.display()),
    )
    .expect("xdg-open");
    let mut perms = std::fs::metadata(&script).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&script, perms).expect("chmod");

    let start = |n: usize| -> Vec<Child> {
        (0..n)
            .map(|_| {
                let args = launch_args(
                    &home,
                    &["--port", &port.to_string()],
                    &[
                        "--web-dashboard-global",
                        "--web-dashboard-global-open-on-launch",
                    ],
                    &["sleep", "120"],
                );
                let mut c = Command::new(tray_exe());
                home.env(&mut c);
                let path = format!(
                    "{}:{}",
                    bin.display(),
                    c.get_envs()
                        .find(|(k, _)| *k == "PATH")
                        .and_then(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()))
                        .unwrap_or_default()
                );
                c.env("PATH", path)
                    .args(&args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("serena-tray launch")
            })
            .collect()
    };
    let mut reaper = Reaper::default();
    let first: Vec<u32> = start(10).into_iter().map(|c| reaper.adopt(c)).collect();
    let d = Daemon::attach_app(&home, port, 0);
    // The dashboards of this home: serena-tray processes that are not a launch.
    let daemons = || {
        let snap = snapshot();
        snap.iter()
            .filter(|p| {
                p.cmdline
                    .first()
                    .is_some_and(|c| c.ends_with("/serena-tray"))
            })
            .filter(|p| !p.cmdline.iter().any(|a| a == "launch"))
            .filter(|p| {
                p.cmdline
                    .iter()
                    .any(|a| a == &home.serena_home().display().to_string())
            })
            .map(|p| p.pid)
            .collect::<Vec<u32>>()
    };
    wait_for("the browser to be asked once", SOON, || {
        std::fs::read_to_string(&opened)
            .ok()
            .filter(|t| !t.is_empty())
    });
    // Every launch has looked (each started its command and its look at the dashboard); the
    // losers of the lock found the winner's dashboard answering.
    for pid in &first {
        assert!(alive(*pid), "launch {pid} runs its command");
    }
    let (_, health) = d.call("GET", "/api/health", None);
    assert_eq!(daemons(), vec![health["pid"].as_u64().expect("pid") as u32]);
    // More clients later: still one dashboard, never opened again.
    let more: Vec<u32> = start(3).into_iter().map(|c| reaper.adopt(c)).collect();
    for pid in more {
        wait_for("a later launch to find the dashboard", SOON, || {
            // It has looked once its command runs and the lock is free again.
            (!descendants(pid).is_empty()).then_some(())
        });
    }
    let log = std::fs::read_to_string(&opened).expect("opened");
    assert_eq!(log.lines().count(), 1, "opened exactly once: {log}");
    let page = log.trim();
    assert!(page.ends_with("tray/open.html"), "{page}");
    // The page it opened signs the browser in; the token is in a private file, not on a
    // command line.
    let html = std::fs::read_to_string(page).expect("the page");
    assert!(html.contains(&format!("http://127.0.0.1:{port}/?token={}", d.token)));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(page).expect("meta").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(daemons().len(), 1);
}

#[test]
fn idle_shutdown_ends_an_idle_serena_and_spares_one_in_use() {
    let home = Home::new();
    let idle_dir = home.jedi_project("idle");
    let busy_dir = home.jedi_project("busy");
    // Nine seconds of idleness (announced 1.8 s before).
    let d = home.daemon_args(&["--idle-shutdown-minutes", "0.15"]);
    let mut reaper = Reaper::default();
    let (idle, _idle_stdin) = spawn_serena(&home, &["--project", idle_dir.to_str().expect("utf8")]);
    let idle = reaper.adopt(idle);
    let idle_tree = tree_with_language_server(idle);

    let serena = serena_exe().display().to_string();
    let args = launch_args(
        &home,
        &["--port", &d.port.to_string()],
        &["--web-dashboard-global=false"],
        &serena_mcp(&serena, busy_dir.to_str().expect("utf8")),
    );
    let mut c = client(&home, &tray_exe(), &strs(&args));
    let mut stream = Stream::of(&mut c);
    let client_pid = reaper.adopt(c);
    stream.handshake();
    // Used every two seconds, for longer than the idle one lives.
    let busy = serena_under(launch_under(client_pid));
    let mut id = 10;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while alive(idle) {
        assert!(
            std::time::Instant::now() < deadline,
            "the idle one was not shut down"
        );
        call_tool(&mut stream, id);
        id += 1;
        std::thread::sleep(Duration::from_secs(2));
    }
    wait_for("the idle one's tree to be gone", SOON, || {
        idle_tree.iter().all(|p| !alive(*p)).then_some(())
    });
    // The tree can be gone a moment before the kill is reported (the reaper verifies, then
    // the core publishes, then the timeline records): wait for the record, not a fixed time.
    let kinds = ["idle_warning", "idle_shutdown", "instance_killed"];
    let has_all = |told: &[String]| kinds.iter().all(|k| told.iter().any(|t| t == k));
    let told = poll(Duration::from_millis(50), SOON, || {
        Some(timeline(&d, idle)).filter(|t| has_all(t))
    })
    .unwrap_or_else(|| timeline(&d, idle));
    for kind in kinds {
        assert!(told.iter().any(|t| t == kind), "{kind} in {told:?}");
    }
    // The busy one: a few more calls, then still alive and never announced.
    for _ in 0..3 {
        call_tool(&mut stream, id);
        id += 1;
        std::thread::sleep(Duration::from_secs(2));
    }
    assert!(alive(busy), "the one in use lives on");
    let told = timeline(&d, busy);
    assert!(!told.iter().any(|t| t.starts_with("idle")), "{told:?}");
}

#[test]
fn launch_killed_outright_takes_its_serena_with_it() {
    // SIGKILL leaves launch no chance to reap: Serena dies by PR_SET_PDEATHSIG, and its
    // language server with it (Serena gives it its own).
    let home = Home::new();
    let project = home.jedi_project("pdeath");
    let mut reaper = Reaper::default();
    let serena = serena_exe().display().to_string();
    let launcher = reaper.adopt(launch_directly(
        &home,
        &serena_mcp(&serena, project.to_str().expect("utf8")),
    ));
    let serena = serena_under(launcher);
    let tree = tree_with_language_server(serena);
    kill_one(launcher);
    wait_for("Serena and its language server to be gone", SOON, || {
        tree.iter().all(|p| !alive(*p)).then_some(())
    });
}
