//! Discovery and classification against REAL Serena 2.1.0 processes (stdio, hermetic HOME, the
//! offline jedi language server): green with a project, yellow without, red `orphaned` after the
//! grace when the client is SIGKILLed but stdin stays open, and the right dashboard port when
//! several instances race for the same one.

mod common;

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use serena_tray::core::model::{State, ZombieReason};
use std::process::Command;
use std::time::{Duration, Instant};

const STARTUP: Duration = Duration::from_secs(60);

/// The instance row once its dashboard has answered (`last_heartbeat` set).
fn answered(home: &Home, pid: u32) -> Option<Value> {
    find_pid(&home.list_json(), pid).filter(|v| !v["last_heartbeat"].is_null())
}

#[test]
fn project_instance_is_green_and_projectless_is_yellow() {
    let home = Home::new();
    let project = home.jedi_project("greenproj");
    let mut reaper = Reaper::default();
    let (with, _stdin1) = spawn_serena(&home, &["--project", project.to_str().expect("utf8")]);
    let with = reaper.adopt(with);
    let (without, _stdin2) = spawn_serena(&home, &[]);
    let without = reaper.adopt(without);

    let green = wait_for("the project instance to answer", STARTUP, || {
        answered(&home, with).filter(|v| v["state"] == "live_with_project")
    });
    assert_eq!(green["project_name"], "greenproj");
    assert_eq!(green["project_path"], project.to_str().expect("utf8"));
    assert_eq!(green["state_reason"], Value::Null);
    assert_eq!(green["transport"], "stdio");
    assert_eq!(green["source"], "discovery");
    assert_eq!(green["context"], "desktop-app");
    assert_eq!(green["client_pid"], std::process::id());
    let port = green["port"].as_u64().expect("a dashboard port") as u16;
    let hb: Value = json_request("GET", port, "/heartbeat", None).1;
    assert_eq!(hb["status"], "alive");

    let yellow = wait_for("the project-less instance to answer", STARTUP, || {
        answered(&home, without)
    });
    assert_eq!(yellow["state"], "live_no_project");
    assert_eq!(yellow["project_name"], Value::Null);
    assert_ne!(yellow["port"], green["port"]);

    // The human table says the same, with colour words.
    let table = String::from_utf8(home.tray(&["list"]).stdout).expect("utf8");
    let line = |pid: u32| {
        table
            .lines()
            .find(|l| l.starts_with(&pid.to_string()))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line(with).contains("green live_with_project"), "{table}");
    assert!(line(with).contains("greenproj"), "{table}");
    assert!(line(without).contains("yellow live_no_project"), "{table}");
    assert!(line(without).contains("NO PROJECT"), "{table}");

    // What `list` learnt is in the shared registry, in the seed's schema.
    let reg = home.registry();
    let entry = reg
        .iter()
        .find(|e| e["pid"] == with)
        .expect("registry entry");
    assert_eq!(entry["project_name"], "greenproj");
    assert_eq!(entry["state"], "live_with_project");
    assert_eq!(entry["port"], port);
    let mut keys: Vec<&str> = entry
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "context",
            "last_heartbeat",
            "modes",
            "pid",
            "port",
            "project_name",
            "started_at",
            "state"
        ]
    );
}

#[test]
fn client_killed_with_stdin_held_open_turns_red_orphaned_after_the_grace() {
    let home = Home::new();
    let mut reaper = Reaper::default();
    // The test keeps the write end of Serena's stdin: killing the client closes nothing.
    let (client_pid, serena_pid, _held_stdin) =
        client_with_serena(&home, &mut reaper, "orphanproj");

    let grace = 4.0;
    let core = home.core(grace);
    let seen = wait_for("the instance to be green", STARTUP, || {
        block_on(core.refresh())
            .expect("refresh")
            .into_iter()
            .find(|i| i.pid == serena_pid && i.state == State::LiveWithProject)
    });
    assert_eq!(seen.client_pid, Some(client_pid));
    assert_eq!(seen.project_name.as_deref(), Some("orphanproj"));
    let mut events = core.subscribe();

    kill(Pid::from_raw(client_pid as i32), Signal::SIGKILL).expect("kill client");
    if let Some(c) = reaper.child(client_pid) {
        let _ = c.wait();
    }
    let killed_at = Instant::now();
    assert!(alive(serena_pid), "Serena must outlive its client here");

    // Within the grace it is still live (the grace delays what is seen live)...
    let right_after = block_on(core.refresh()).expect("refresh");
    let i = right_after
        .iter()
        .find(|i| i.pid == serena_pid)
        .expect("still listed");
    if killed_at.elapsed().as_secs_f64() < grace {
        assert!(i.state.is_live(), "zombie before the grace: {i:?}");
    }
    // ...and red with reason `orphaned` once it has passed.
    let red = wait_for("the orphan to turn red", Duration::from_secs(30), || {
        block_on(core.refresh())
            .expect("refresh")
            .into_iter()
            .find(|i| i.pid == serena_pid && i.state == State::Zombie)
    });
    assert!(killed_at.elapsed().as_secs_f64() >= grace - 0.5);
    assert_eq!(red.state_reason, Some(ZombieReason::Orphaned));
    assert!(alive(serena_pid), "classifying must not kill anything");

    // The change went out as a typed event.
    let mut saw_event = false;
    while let Ok(e) = events.try_recv() {
        if let serena_tray::core::Event::StateChanged {
            pid, to, reason, ..
        } = e
        {
            if pid == serena_pid && to == State::Zombie {
                assert_eq!(reason, Some(ZombieReason::Orphaned));
                saw_event = true;
            }
        }
    }
    assert!(saw_event, "no StateChanged event for the orphan");

    // A one-shot `list` sees an instance that is already orphaned as a zombie at once.
    let row = find_pid(&home.list_json(), serena_pid).expect("listed");
    assert_eq!(row["state"], "zombie");
    assert_eq!(row["state_reason"], "orphaned");
    assert_eq!(row["client_pid"], Value::Null);
}

/// Serena picks its dashboard port by test-binding from 24282 up and binds it for real a moment
/// later; instances started together can pick the same port and the loser runs with no
/// dashboard. That window is a few milliseconds, so the test widens it: a `sitecustomize` on
/// PYTHONPATH sleeps one second before every bind in the dashboard range. Serena's own code
/// then loses the race for real, on demand.
const RACE_HOOK: &str = "\
import socket, time
_bind = socket.socket.bind
def _slow_bind(self, address):
    if isinstance(address, tuple) and len(address) >= 2 and 24282 <= address[1] < 24482:
        time.sleep(1.0)
    return _bind(self, address)
socket.socket.bind = _slow_bind
";

#[test]
fn dashboard_ports_are_right_when_instances_race_for_the_same_port() {
    let home = Home::new();
    let hook = home.path().join("race-hook");
    std::fs::create_dir_all(&hook).expect("mkdir");
    std::fs::write(hook.join("sitecustomize.py"), RACE_HOOK).expect("hook");
    // Serena's first start in a home writes its news state non-atomically, and three first
    // starts at once can read it half-written and crash (a race of Serena's own, not the one
    // under test): it is made once beforehand.
    let mut news = Command::new(venv().join("bin/python3"));
    home.env(&mut news);
    let made = news
        .args([
            "-c",
            "from serena.dashboard import ReadNews; ReadNews.load()",
        ])
        .output()
        .expect("python3");
    assert!(made.status.success(), "{made:?}");
    let mut reaper = Reaper::default();
    let mut stdins = Vec::new();
    let mut pids = Vec::new();
    // No other test's Serena may start (and take a port) while these three race.
    let gate = start_gate();
    for _ in 0..3 {
        let (c, s) = spawn_serena_racing(&home, &[], &[("PYTHONPATH", hook.as_os_str())]);
        pids.push(reaper.adopt(c));
        stdins.push(s);
    }
    // Wait until every one has picked its port (the log line follows the test-bind) and made
    // its real bind (the hook's one second later): it listens, or it lost the port.
    let tails = || -> String {
        let tails: Vec<String> = pids.iter().map(|p| log_tail(&home, *p)).collect();
        tails.join("\n---\n")
    };
    let picked = |p: &u32| log_says(&home, *p, "Starting dashboard (listen_address");
    poll(Duration::from_millis(200), Duration::from_secs(120), || {
        pids.iter().all(picked).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "not all three picked a port in 120 s; their logs:\n{}",
            tails()
        )
    });
    poll(Duration::from_millis(200), Duration::from_secs(60), || {
        pids.iter().all(|p| bound_or_lost(*p)).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "not all three bound their port in 60 s; their logs:\n{}",
            tails()
        )
    });
    drop(gate);
    let list = home.list_json();
    let rows: Vec<Value> = pids
        .iter()
        .map(|p| find_pid(&list, *p).expect("every instance is listed"))
        .collect();

    let ss = Command::new("ss").arg("-ltnpH").output().expect("ss");
    let ss = String::from_utf8_lossy(&ss.stdout).to_string();
    let mut ports = Vec::new();
    let mut losers = 0;
    for r in &rows {
        let pid = r["pid"].as_u64().expect("pid");
        match r["port"].as_u64() {
            Some(port) => {
                // The port is one this very PID listens on (independent check with ss).
                let owned = ss.lines().any(|l| {
                    l.contains(&format!(":{port} ")) && l.contains(&format!("pid={pid},"))
                });
                assert!(
                    owned,
                    "pid {pid} was given port {port} it does not own:\n{ss}"
                );
                assert_eq!(
                    json_request("GET", port as u16, "/heartbeat", None).1["status"],
                    "alive"
                );
                ports.push(port);
            }
            None => {
                losers += 1;
                assert!(
                    !ss.lines().any(|l| l.contains(&format!("pid={pid},"))),
                    "pid {pid} listens but was given no port"
                );
                assert!(
                    r["state"] == "live_no_project",
                    "a loser is still live: {r}"
                );
            }
        }
    }
    let mut unique = ports.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        ports.len(),
        "two instances share a port: {ports:?}"
    );
    eprintln!(
        "port race: {} instances, {} with a dashboard, {} lost the race",
        rows.len(),
        ports.len(),
        losers
    );
    assert!(losers >= 1, "the race did not happen: {rows:?}");
    // The losers' own logs claim a port they do not have: never trust them.
    for r in rows.iter().filter(|r| r["port"].is_null()) {
        let pid = r["pid"].as_u64().expect("pid") as u32;
        assert!(log_says(&home, pid, "Serena web dashboard started at"));
    }
}

/// Whether the Serena `pid` has made its dashboard's real bind: it listens, or it lost the port
/// (werkzeug says so on its stderr, a file: "Port N is in use by another program"), or it is
/// gone.
fn bound_or_lost(pid: u32) -> bool {
    let stderr = std::fs::read_link(format!("/proc/{pid}/fd/2"))
        .and_then(std::fs::read_to_string)
        .unwrap_or_default();
    !alive(pid)
        || !sockets::listening_ports(pid).is_empty()
        || stderr.contains("is in use by another program")
}

/// The last lines of the Serena log of `pid`, for failure messages.
fn log_tail(home: &Home, pid: u32) -> String {
    let text = log_text(home, pid).unwrap_or_else(|| format!("(no log for {pid})"));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Whether the Serena log of `pid` (in the test's home) contains `needle`.
fn log_says(home: &Home, pid: u32, needle: &str) -> bool {
    log_text(home, pid).is_some_and(|t| t.contains(needle))
}

/// The Serena log of `pid` (in the test's home).
fn log_text(home: &Home, pid: u32) -> Option<String> {
    let suffix = format!("_{pid}.txt");
    let days = std::fs::read_dir(home.serena_home().join("logs")).ok()?;
    days.flatten()
        .flat_map(|day| {
            std::fs::read_dir(day.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .find(|f| f.file_name().to_string_lossy().ends_with(&suffix))
        .and_then(|f| std::fs::read_to_string(f.path()).ok())
}

#[test]
fn what_an_instance_costs_is_its_whole_tree_language_server_included() {
    let home = Home::new();
    let project = home.jedi_project("costly");
    let mut reaper = Reaper::default();
    let (serena, _stdin) = spawn_serena(&home, &["--project", project.to_str().expect("utf8")]);
    let serena = reaper.adopt(serena);
    let tree = tree_with_language_server(serena);
    let core = home.core(10.0);
    // Two looks: the second has a CPU figure over the interval between them.
    block_on(core.refresh()).expect("refresh");
    // The tree's figure and the language server's own must both match /proc: the
    // language server may still be loading (and growing) at the first looks.
    let within = |figure: u64, real: u64| (figure as f64 - real as f64).abs() <= 0.10 * real as f64;
    let cost = wait_for("the cost to match /proc within 10 %", STARTUP, || {
        let i = block_on(core.refresh())
            .expect("refresh")
            .into_iter()
            .find(|i| i.pid == serena)?;
        let cost = i.cost?;
        let ls = cost.processes.iter().find(|p| p.name.contains("jedi"))?;
        let whole = within(cost.memory_bytes, tree_rss_bytes(serena));
        (whole && within(ls.memory_bytes, rss_kib(ls.pid) * 1024)).then_some(cost)
    });
    assert_eq!(cost.processes[0].pid, serena, "Serena first");
    assert_eq!(cost.process_count as usize, tree.len(), "{cost:?}");
    let ls = cost
        .processes
        .iter()
        .find(|p| p.name.contains("jedi"))
        .unwrap_or_else(|| panic!("the language server in {cost:?}"));
    assert!(tree.contains(&ls.pid), "{ls:?} in {tree:?}");
    // A Python interpreter, however early in its start-up, holds several MiB.
    assert!(ls.memory_bytes > 4 << 20, "{ls:?}");
    assert!(cost.cpu_percent.is_finite() && cost.cpu_percent >= 0.0);
    assert!(cost.memory_bytes >= cost.processes.iter().map(|p| p.memory_bytes).sum::<u64>());

    // The CLI shows it: `list --json` carries the cost, the table a MEM and a CPU column.
    let row = find_pid(&home.list_json(), serena).expect("listed");
    assert!(
        row["cost"]["memory_bytes"].as_u64().expect("memory") > 20 << 20,
        "{row}"
    );
    let table = String::from_utf8(home.tray(&["list"]).stdout).expect("utf8");
    let header = table.lines().next().expect("a header");
    assert!(header.contains("MEM") && header.contains("CPU"), "{table}");
}
