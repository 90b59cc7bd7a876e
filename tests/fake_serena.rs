//! Faults real Serena will not produce on demand, with the fake Serena
//! (tests/bin/fake_serena.rs): a dashboard that hangs (`unresponsive`, and it must not stall the
//! others), a process that is gone while its registry entry stays (`dead`), and PID reuse (a new
//! process holding a recorded PID is not the old instance). And the fake itself: discovery takes
//! its server, and only it, for Serena; its dashboard answers as Serena 2.1.0's does.

mod common;

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use serena_tray::core::cmdline::serena_server_args;
use serena_tray::core::model::{State, ZombieReason};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const STARTUP: Duration = Duration::from_secs(20);

fn project_dir(home: &Home, name: &str) -> String {
    let dir = home.path().join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir.to_str().expect("utf8").to_string()
}

#[test]
fn a_hung_dashboard_turns_unresponsive_after_the_grace_and_stalls_nobody() {
    let home = Home::new();
    let mut reaper = Reaper::default();
    let hung_dir = project_dir(&home, "hangs");
    let fine_dir = project_dir(&home, "fine");
    let hung = reaper.adopt(spawn_fake(&home, &["--project", &hung_dir], &[]));
    let fine = reaper.adopt(spawn_fake(&home, &["--project", &fine_dir], &[]));

    let grace = 3.0;
    let core = home.core(grace);
    wait_for("both fakes green", STARTUP, || {
        let all = block_on(core.refresh()).expect("refresh");
        let green = |pid| {
            all.iter()
                .any(|i| i.pid == pid && i.state == State::LiveWithProject && i.port.is_some())
        };
        (green(hung) && green(fine)).then_some(())
    });

    kill(Pid::from_raw(hung as i32), Signal::SIGUSR1).expect("make it hang");
    let hung_at = Instant::now();
    let red = wait_for("the hung one to turn red", Duration::from_secs(30), || {
        let started = Instant::now();
        let all = block_on(core.refresh()).expect("refresh");
        // One refresh waits for the hung dashboard at most about one probe timeout, never
        // for the hang itself (the fake hangs forever).
        assert!(started.elapsed() < Duration::from_secs(10));
        let fine_row = all.iter().find(|i| i.pid == fine).expect("fine listed");
        assert_eq!(fine_row.state, State::LiveWithProject, "{fine_row:?}");
        all.into_iter()
            .find(|i| i.pid == hung && i.state == State::Zombie)
    });
    assert_eq!(red.state_reason, Some(ZombieReason::Unresponsive));
    assert!(hung_at.elapsed().as_secs_f64() >= grace - 1.0);
    assert_eq!(
        red.project_name.as_deref(),
        Some("hangs"),
        "last known project kept"
    );

    // It answers again: live again.
    kill(Pid::from_raw(hung as i32), Signal::SIGUSR2).expect("end the hang");
    wait_for("it to come back", Duration::from_secs(20), || {
        block_on(core.refresh())
            .expect("refresh")
            .into_iter()
            .find(|i| i.pid == hung && i.state == State::LiveWithProject)
    });
}

#[test]
fn a_gone_process_with_a_registry_entry_is_dead() {
    let home = Home::new();
    let mut reaper = Reaper::default();
    let dir = project_dir(&home, "shortlived");
    let pid = reaper.adopt(spawn_fake(&home, &["--project", &dir], &[]));
    let row = wait_for("the fake to answer", STARTUP, || {
        find_pid(&home.list_json(), pid).filter(|r| !r["port"].is_null())
    });
    assert_eq!(row["state"], "live_with_project");
    assert!(home.registry().iter().any(|e| e["pid"] == pid));

    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("kill");
    if let Some(c) = reaper.child(pid) {
        let _ = c.wait();
    }
    let row = find_pid(&home.list_json(), pid).expect("still listed from the registry");
    assert_eq!(row["state"], "zombie");
    assert_eq!(row["state_reason"], "dead");
    assert_eq!(row["source"], "registry");
    assert_eq!(row["project_name"], "shortlived");
    let entry = home
        .registry()
        .into_iter()
        .find(|e| e["pid"] == pid)
        .expect("entry kept until pruned");
    assert_eq!(entry["state"], "zombie");
}

#[test]
fn a_reused_pid_is_not_the_recorded_instance() {
    let home = Home::new();
    let mut reaper = Reaper::default();
    let dir = project_dir(&home, "newcomer");
    // A live Serena (fake) and a live non-Serena process, both holding PIDs that the registry
    // recorded for instances that started long before them.
    let serena = reaper.adopt(spawn_fake(&home, &["--project", &dir], &[]));
    let sleeper = reaper.adopt(
        std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .expect("sleep"),
    );
    let long_ago = serena_tray::core::model::now() - 3600.0;
    std::fs::create_dir_all(home.serena_home()).expect("mkdir");
    let seeded = json!([
        {"pid": serena, "port": 24299, "started_at": long_ago, "last_heartbeat": long_ago + 5.0,
         "context": "ide", "modes": [], "project_name": "oldproj", "state": "live_with_project"},
        {"pid": sleeper, "port": 24298, "started_at": long_ago, "last_heartbeat": long_ago + 5.0,
         "context": null, "modes": [], "project_name": "older", "state": "live_no_project"},
    ]);
    std::fs::write(home.registry_path(), seeded.to_string()).expect("seed");

    let list = wait_for("the fake to answer", STARTUP, || {
        let list = home.list_json();
        list.iter()
            .any(|r| r["pid"] == serena && r["state"] == "live_with_project")
            .then_some(list)
    });
    let rows_for = |pid: u32| -> Vec<&Value> { list.iter().filter(|r| r["pid"] == pid).collect() };

    // The recorded instance is dead; the newcomer with its PID is a different, live instance.
    let serena_rows = rows_for(serena);
    assert_eq!(serena_rows.len(), 2, "{serena_rows:?}");
    let old = serena_rows
        .iter()
        .find(|r| r["state_reason"] == "dead")
        .expect("old record dead");
    assert_eq!(old["project_name"], "oldproj");
    let new = serena_rows
        .iter()
        .find(|r| r["state"] == "live_with_project")
        .expect("newcomer live");
    assert_eq!(new["project_name"], "newcomer");
    assert!(new["started_at"].as_f64().expect("f64") > long_ago + 60.0);
    assert_ne!(new["port"], 24299);

    // A non-Serena process that took a recorded PID: the record is dead, the sleeper is nobody.
    let sleeper_rows = rows_for(sleeper);
    assert_eq!(sleeper_rows.len(), 1, "{sleeper_rows:?}");
    assert_eq!(sleeper_rows[0]["state"], "zombie");
    assert_eq!(sleeper_rows[0]["state_reason"], "dead");
    assert!(alive(sleeper) && alive(serena), "nothing was signalled");

    // The registry keeps both records apart.
    let reg = home.registry();
    let for_serena: Vec<&Value> = reg.iter().filter(|e| e["pid"] == serena).collect();
    assert_eq!(for_serena.len(), 2);
    assert!(for_serena
        .iter()
        .any(|e| e["state"] == "zombie" && e["project_name"] == "oldproj"));
    assert!(for_serena
        .iter()
        .any(|e| e["state"] == "live_with_project" && e["project_name"] == "newcomer"));
}

#[test]
fn an_instance_without_a_dashboard_is_live_with_its_command_line_project() {
    let home = Home::new();
    let mut reaper = Reaper::default();
    let dir = project_dir(&home, "nodash");
    let pid = reaper.adopt(spawn_fake(
        &home,
        &["--project", &dir, "--context", "ide", "--mode", "planning"],
        &[("FAKE_SERENA_NO_DASHBOARD", "1")],
    ));
    let row = wait_for("the fake to be listed", STARTUP, || {
        find_pid(&home.list_json(), pid)
    });
    assert_eq!(row["state"], "live_with_project");
    assert_eq!(row["port"], Value::Null);
    assert_eq!(row["project_name"], "nodash");
    assert_eq!(row["project_path"], dir.as_str());
    assert_eq!(row["context"], "ide");
    assert_eq!(row["modes"], json!(["planning"]));
}

#[test]
fn http_transport_instances_report_their_mcp_port_apart_from_the_dashboard() {
    let home = Home::new();
    let mut reaper = Reaper::default();
    // The fake listens on its dashboard and on the MCP port (which answers 404 everywhere).
    let mcp_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let pid = reaper.adopt(spawn_fake(
        &home,
        &[
            "--transport",
            "streamable-http",
            "--port",
            &mcp_port.to_string(),
        ],
        &[],
    ));
    let row = wait_for("the fake to answer", STARTUP, || {
        find_pid(&home.list_json(), pid).filter(|r| !r["port"].is_null())
    });
    let ss = std::process::Command::new("ss")
        .arg("-ltnpH")
        .output()
        .expect("ss");
    let ss = String::from_utf8_lossy(&ss.stdout).to_string();
    assert!(
        ss.lines()
            .any(|l| l.contains(&format!(":{mcp_port} ")) && l.contains(&format!("pid={pid},"))),
        "the fake listens on its MCP port: {ss}"
    );
    assert_eq!(row["transport"], "streamable-http");
    assert_eq!(row["mcp_port"], mcp_port);
    assert_eq!(
        row["mcp_url"],
        format!("http://127.0.0.1:{mcp_port}/mcp").as_str()
    );
    assert_ne!(row["port"], mcp_port);
    assert_eq!(row["state"], "live_no_project");
}

/// An orphaned fake Serena in `home`'s scope: started through a shell that exits at once, so it
/// is re-parented (a zombie for its scope as soon as it is seen). Returns its PID.
fn spawn_orphan(home: &Home, reaper: &mut Reaper) -> u32 {
    let pid_file = home.path().join("orphan.pid");
    let mut cmd = std::process::Command::new("sh");
    home.env(&mut cmd);
    let status = cmd
        .arg("-c")
        .arg(r#""$0" start-mcp-server </dev/null >/dev/null 2>&1 & echo $! > "$1""#)
        .arg(fake::exe())
        .arg(&pid_file)
        .status()
        .expect("sh");
    assert!(status.success());
    let pid: u32 = wait_for("the orphan's PID", STARTUP, || {
        std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
    });
    reaper.watch(pid);
    pid
}

#[test]
fn discovery_sees_and_kills_only_the_processes_of_its_own_scope() {
    let mine = Home::new();
    let theirs = Home::new();
    let mut reaper = Reaper::default();
    let own = reaper.adopt(spawn_fake(&mine, &[], &[]));
    let other_live = reaper.adopt(spawn_fake(&theirs, &[], &[]));
    let other_orphan = spawn_orphan(&theirs, &mut reaper);

    // The other scope's core sees its orphan as a zombie: it would be killed if it were seen.
    let their_core = theirs.core(0.0);
    wait_for("their orphan red in their scope", STARTUP, || {
        let all = block_on(their_core.refresh()).expect("refresh");
        all.iter()
            .any(|i| i.pid == other_orphan && i.state == State::Zombie)
            .then_some(())
    });

    let core = mine.core(0.0);
    let all = wait_for("our own fake", STARTUP, || {
        let all = block_on(core.refresh()).expect("refresh");
        all.iter().any(|i| i.pid == own).then_some(all)
    });
    let pids: Vec<u32> = all.iter().map(|i| i.pid).collect();
    assert_eq!(pids, vec![own], "only our own instance is seen");
    let sweep = block_on(core.kill_zombies());
    assert!(
        sweep.killed.is_empty() && sweep.failed.is_empty(),
        "{sweep:?}"
    );
    assert!(alive(other_orphan) && alive(other_live) && alive(own));
    assert!(
        block_on(core.kill(other_orphan)).is_err(),
        "a PID outside the scope is unknown"
    );
    assert!(alive(other_orphan));

    // The CLI and the daemon take the scope from the environment the same way.
    let listed = mine.list_json();
    assert_eq!(
        listed.iter().map(|v| v["pid"].clone()).collect::<Vec<_>>(),
        vec![json!(own)]
    );
}

#[test]
fn discovery_takes_the_fake_server_for_serena_and_neither_its_client_nor_its_children() {
    let home = Home::new();
    let mut reaper = Reaper::default();
    let (client, serena) =
        spawn_fake_client_with(&home, &mut reaper, &[("FAKE_SERENA_CHILDREN", "1")]);
    let child = wait_for("the fake's child", STARTUP, || {
        descendants(serena).first().copied()
    });
    reaper.watch(child);
    let snap = snapshot();
    let argv = |pid: u32| snap.get(pid).expect("running").cmdline.clone();
    let (server, client, child) = (argv(serena), argv(client), argv(child));
    assert!(serena_server_args(&server).is_some(), "{server:?}");
    assert!(fake::is_server(&server), "{server:?}");
    assert_eq!(client.get(1).map(String::as_str), Some("fake-client"));
    assert!(serena_server_args(&client).is_none(), "{client:?}");
    assert_eq!(
        child.get(1).map(String::as_str),
        Some("fake-language-server")
    );
    assert!(serena_server_args(&child).is_none(), "{child:?}");

    let core = home.core(600.0);
    let all = wait_for("the fake live with its dashboard", STARTUP, || {
        let all = block_on(core.refresh()).expect("refresh");
        all.iter()
            .any(|i| i.pid == serena && i.port.is_some())
            .then_some(all)
    });
    let pids: Vec<u32> = all.iter().map(|i| i.pid).collect();
    assert_eq!(pids, vec![serena], "the server alone is an instance");
}

/// One raw HTTP exchange with a loopback port: everything the server sent before it closed.
fn raw_http(port: u16, request: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(request).expect("send");
    let mut reply = String::new();
    s.read_to_string(&mut reply)
        .expect("the reply, then the connection closed");
    reply
}

#[test]
fn the_fakes_dashboard_answers_as_serena_2_1_0_and_lives_through_bad_requests() {
    let home = Home::new();
    let mut reaper = Reaper::default();
    let dir = project_dir(&home, "answers");
    let mut cmd = fake::server(&[
        "--project",
        &dir,
        "--context=ide",
        "--mode",
        "a",
        "--mode=b",
    ]);
    home.env(&mut cmd);
    let (child, port) = fake::spawn_reading_port(cmd);
    let pid = reaper.adopt(child);
    let port = port.expect("the dashboard's port, printed once it serves");

    let get = |path| json_request("GET", port, path, None);
    let post = |path, body| json_request("POST", port, path, Some(body));
    assert_eq!(get("/heartbeat"), (200, json!({"status": "alive"})));
    let (status, overview) = get("/get_config_overview");
    assert_eq!(status, 200);
    assert_eq!(overview["active_project"]["name"], "answers");
    assert_eq!(overview["active_project"]["path"], dir.as_str());
    assert_eq!(overview["context"]["name"], "ide");
    let modes: Vec<&Value> = overview["modes"]
        .as_array()
        .expect("modes")
        .iter()
        .map(|m| &m["name"])
        .collect();
    assert_eq!(modes, [&json!("a"), &json!("b")]);
    assert_eq!(
        get("/get_tool_names"),
        (200, json!({"tool_names": ["fake_tool"]}))
    );
    assert_eq!(get("/get_tool_stats"), (200, json!({"stats": {}})));
    assert_eq!(
        get("/queued_task_executions"),
        (200, json!({"queued_executions": [], "status": "success"}))
    );
    assert_eq!(
        get("/last_execution"),
        (200, json!({"last_execution": null, "status": "success"}))
    );
    assert_eq!(get("/nothing-here").0, 404);

    let logs = json!({"messages": ["INFO fake serena started"], "max_idx": 0,
                      "active_project": "answers"});
    assert_eq!(
        post("/get_log_messages", json!({"start_idx": 0})),
        (200, logs)
    );
    let (_, past) = post("/get_log_messages", json!({"start_idx": 1_i64 << 40}));
    assert_eq!(past["messages"], json!([]));
    assert_eq!(past["max_idx"], 0);

    // Serena 2.1.0's cancel: a string ID is "not found", a number trips its html.escape.
    let cancel = |id: Value| post("/cancel_task_execution", json!({ "task_id": id })).1;
    let found = cancel(json!("7"));
    assert_eq!(found["status"], "success", "{found}");
    assert_eq!(found["was_cancelled"], false);
    assert!(found["message"]
        .as_str()
        .is_some_and(|m| m.contains("id 7 not found")));
    for (id, message) in [
        (json!(7), "'int' object has no attribute 'replace'"),
        (json!("x7"), "task_id: not an integer: \"x7\""),
        (json!(true), "task_id: not an integer: true"),
        (json!(null), "task_id: not an integer: null"),
    ] {
        let v = cancel(id);
        assert_eq!(
            v,
            json!({"status": "error", "message": message, "was_cancelled": false})
        );
    }

    // A malformed request or body is answered 400, and the fake serves on.
    let bad = raw_http(
        port,
        b"POST /get_log_messages HTTP/1.1\r\nContent-Length: 5\r\n\r\n{nope",
    );
    assert!(bad.starts_with("HTTP/1.1 400 "), "{bad}");
    let bad = raw_http(
        port,
        b"POST /get_log_messages HTTP/1.1\r\nContent-Length: x\r\n\r\n",
    );
    assert!(bad.starts_with("HTTP/1.1 400 "), "{bad}");
    let bad = raw_http(port, b"garbage\r\n\r\n");
    assert!(bad.starts_with("HTTP/1.1 400 "), "{bad}");
    assert_eq!(get("/heartbeat").0, 200);

    // PUT /shutdown: answered, then the fake exits with status 0.
    assert_eq!(
        json_request("PUT", port, "/shutdown", None),
        (200, json!({"status": "shutting down"}))
    );
    let status = wait_for("the fake to exit", Duration::from_secs(10), || {
        reaper
            .child(pid)
            .and_then(|c| c.try_wait().expect("try_wait"))
    });
    assert!(status.success(), "{status:?}");
}
