//! The daemon as a user runs it: server-sent events push every change (a death is seen through
//! the exit watcher, not the next poll) and the timeline keeps them for the API, the overview's
//! eight sections and incremental logs come from the instance's own dashboard with per-section
//! errors when it hangs, so does cancelling an execution (409 without a dashboard, 502 when it
//! fails), ports come from
//! Serena's config file, bad settings files warn with file and line and never stop it, and a
//! launch that fails answers with the log's last lines and leaves nothing running.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn the_event_stream_pushes_every_change_and_sees_a_death_at_once() {
    let home = Home::new();
    let d = home.daemon();
    let rx = events(&d);
    // The first event is the snapshot of every instance.
    let (_, snap) = next_event(&rx, Duration::from_secs(10), |_| true).expect("snapshot");
    assert!(snap["instances"].is_array(), "{snap}");

    let mut reaper = Reaper::default();
    let dir = home.path().join("evproj");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let pid = reaper.adopt(spawn_fake(
        &home,
        &["--project", dir.to_str().expect("utf8")],
        &[],
    ));
    let (_, added) = next_event(&rx, Duration::from_secs(20), |v| {
        v["type"] == "instance_added" && v["instance"]["pid"] == pid
    })
    .expect("instance_added");
    // Once its dashboard answers, the project arrives as an update or a state change.
    next_event(&rx, Duration::from_secs(20), |v| {
        v["instance"]["pid"] == pid && v["instance"]["project_name"] == "evproj"
    })
    .or_else(|| {
        (added["instance"]["project_name"] == "evproj").then(|| (Instant::now(), Value::Null))
    })
    .expect("the project");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    let killed = Instant::now();
    if let Some(c) = reaper.child(pid) {
        let _ = c.wait();
    }
    next_event(&rx, Duration::from_secs(10), |v| {
        v["type"] == "instance_removed" && v["pid"] == pid
    })
    .expect("instance_removed");
    eprintln!(
        "death seen after {} ms (the refresh timer alone would take up to 1000 ms)",
        killed.elapsed().as_millis()
    );
    // The timeline records it too (its own subscriber: it may land a moment after the SSE),
    // and the API reads it back for that PID, gone as it is.
    wait_for("the timeline entry", Duration::from_secs(10), || {
        std::fs::read_to_string(home.serena_home().join("tray/events.jsonl"))
            .ok()
            .filter(|t| {
                t.lines().any(|l| {
                    l.contains("instance_removed") && l.contains(&format!("\"pid\":{pid}"))
                })
            })
    });
    let (status, timeline) = d.call("GET", &format!("/api/instances/{pid}/timeline"), None);
    assert_eq!(status, 200, "{timeline:?}");
    assert_eq!(timeline["pid"], pid);
    let events = timeline["events"].as_array().expect("events");
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        kinds.len(),
        events.len(),
        "every entry has a type: {events:?}"
    );
    assert_eq!(kinds.first(), Some(&"instance_added"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"instance_removed"), "{kinds:?}");
    let times: Vec<f64> = events.iter().filter_map(|e| e["at"].as_f64()).collect();
    assert_eq!(
        times.len(),
        events.len(),
        "every entry has a time: {events:?}"
    );
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "chronological: {times:?}"
    );
    assert!(events.iter().all(|e| e["pid"] == pid), "{events:?}");
    let (status, other) = d.call("GET", "/api/instances/4000000/timeline", None);
    assert_eq!(status, 404, "{other:?}");
}

#[test]
fn the_overview_has_eight_sections_logs_are_incremental_and_a_hang_is_a_section_error() {
    let home = Home::new();
    let mut reaper = Reaper::default();
    let dir = home.path().join("ovproj");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let pid = reaper.adopt(spawn_fake(
        &home,
        &["--project", dir.to_str().expect("utf8")],
        &[],
    ));
    let d = home.daemon();
    wait_for("the fake to answer", Duration::from_secs(20), || {
        let (_, i) = d.call("GET", &format!("/api/instances/{pid}"), None);
        (!i["last_heartbeat"].is_null()).then_some(())
    });
    let (status, ov) = d.call("GET", &format!("/api/instances/{pid}/overview"), None);
    assert_eq!(status, 200, "{ov:?}");
    let sections = ov["sections"].as_object().expect("sections");
    let names: Vec<&str> = sections.keys().map(String::as_str).collect();
    for name in serena_tray::core::api::overview::SECTIONS {
        assert!(names.contains(&name), "{name} missing: {names:?}");
        assert_eq!(sections[name]["ok"], true, "{name}: {:?}", sections[name]);
    }
    assert_eq!(
        sections["current_configuration"]["data"]["active_project"]["name"],
        "ovproj"
    );
    assert_eq!(
        sections["executions_queue"]["data"]["queued_executions"],
        json!([])
    );

    let (status, logs) = d.call("GET", &format!("/api/instances/{pid}/logs?since=0"), None);
    assert_eq!(status, 200);
    let first = logs["messages"].as_array().expect("messages").len();
    assert!(first >= 1, "{logs:?}");
    let next = logs["max_idx"].as_i64().expect("max_idx") + 1;
    let (_, more) = d.call(
        "GET",
        &format!("/api/instances/{pid}/logs?since={next}"),
        None,
    );
    assert_eq!(more["messages"], json!([]), "only what is new");
    let (status, bad) = d.call("GET", &format!("/api/instances/{pid}/logs?since=-4"), None);
    assert_eq!(status, 400, "{bad:?}");

    // Its dashboard hangs: the page still answers, every section says why it is empty.
    hang_dashboard(pid, dashboard_port(&d, pid));
    let started = Instant::now();
    let (status, ov) = d.call("GET", &format!("/api/instances/{pid}/overview"), None);
    assert_eq!(status, 200);
    eprintln!(
        "overview of a hung dashboard took {} ms",
        started.elapsed().as_millis()
    );
    for name in serena_tray::core::api::overview::SECTIONS {
        let s = &ov["sections"][name];
        assert_eq!(s["ok"], false, "{name}: {s:?}");
        assert!(s["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
}

#[test]
fn ports_come_from_serena_config_and_bad_settings_files_warn_with_file_and_line() {
    let home = Home::new();
    let port = free_port();
    std::fs::create_dir_all(home.serena_home()).expect("mkdir");
    std::fs::write(
        home.serena_home().join("serena_config.yml"),
        format!(
            "# Serena's config\nweb_dashboard: true\nweb_dashboard_global: true\nweb_dashboard_global_port: {port}\n"
        ),
    )
    .expect("yml");
    home.tray_config("zombie_grace = 3\nprobe_timeout = [oops\n");
    let log = home.path().join("daemon.log");
    let mut cmd = Command::new(tray_exe());
    home.env(&mut cmd);
    let mut child = cmd
        .arg("--serena-home")
        .arg(home.serena_home())
        .args(["daemon", "--tray-protocol-port", &free_port().to_string()])
        .stdout(Stdio::from(std::fs::File::create(&log).expect("log")))
        .stderr(Stdio::piped())
        .spawn()
        .expect("daemon");
    let stderr = child.stderr.take().expect("stderr");
    let mut reaper = Reaper::default();
    let pid = reaper.adopt(child);
    let warning = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("config.toml"))
        .expect("a warning about config.toml");
    assert!(
        warning.contains("config.toml:2"),
        "names file and line: {warning}"
    );
    assert!(warning.contains("defaults"), "{warning}");
    let d = Daemon::attach(port, pid);
    wait_for(
        "the daemon on the configured port",
        Duration::from_secs(20),
        || (d.raw("GET", "/api/health", None, &[]).0 == 200).then_some(()),
    );
    let stdout = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        stdout.contains(&format!("http://127.0.0.1:{port}/")),
        "{stdout}"
    );
}

/// A session asked of a daemon whose Serena command is the fake with `fake_env`, on a new
/// project `name`, with `session_start_timeout` seconds: the daemon, the project, and the
/// answer.
fn failing_launch(
    home: &Home,
    name: &str,
    session_start_timeout: u32,
    fake_env: (&str, &str),
) -> (Daemon, std::path::PathBuf, u16, Value) {
    let dir = home.path().join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    home.tray_config(&fake::command_config(&format!(
        "session_start_timeout = {session_start_timeout}\n"
    )));
    let d = home.daemon_with(free_port(), free_port(), &[fake_env]);
    let (status, v) = d.call(
        "POST",
        "/request-session",
        Some(json!({"project_path": dir.to_str().expect("utf8")})),
    );
    (d, dir, status, v)
}

#[test]
fn a_launch_that_fails_answers_with_the_log_and_leaves_nothing_running() {
    let home = Home::new();
    let (d, dir, status, v) = failing_launch(&home, "dies", 4, ("FAKE_SERENA_DIE_AT_START", "1"));
    assert_eq!(status, 500, "{v:?}");
    assert_eq!(v["error"]["code"], "launch_failed");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("dying at start-up as asked"),
        "the log's last lines: {msg}"
    );
    assert!(fake_servers_on(&dir).is_empty());
    let (_, sessions) = d.call("GET", "/api/sessions", None);
    assert_eq!(sessions, json!([]));
    wait_for(
        "the failure in the timeline",
        Duration::from_secs(10),
        || {
            let text =
                std::fs::read_to_string(home.serena_home().join("tray/events.jsonl")).ok()?;
            text.lines()
                .any(|l| {
                    l.contains("\"type\":\"session_failed\"") && l.contains("dying at start-up")
                })
                .then_some(())
        },
    );
}

#[test]
fn a_launch_that_never_answers_times_out_and_leaves_nothing_running() {
    let home = Home::new();
    // Its MCP port opens but it never serves a dashboard.
    let (_daemon, dir, status, v) =
        failing_launch(&home, "silent", 3, ("FAKE_SERENA_NO_DASHBOARD", "1"));
    assert_eq!(status, 504, "{v:?}");
    assert_eq!(v["error"]["code"], "launch_timeout");
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("did not answer within 3 s")));
    // The answer comes only once the cleanup is done: nothing is left by then.
    assert!(
        fake_servers_on(&dir).is_empty(),
        "the failed launch left {:?}",
        fake_servers_on(&dir)
    );
}

#[test]
fn a_fake_session_launches_through_the_configured_command_and_is_released() {
    let home = Home::new();
    let dir = home.path().join("fakesession");
    std::fs::create_dir_all(&dir).expect("mkdir");
    home.tray_config(&fake::command_config(""));
    let d = home.daemon();
    let (status, s) = d.call(
        "POST",
        "/request-session",
        Some(
            json!({"project_path": dir.to_str().expect("utf8"), "transport": "sse",
                    "context": "ide", "modes": ["planning", "one-shot"]}),
        ),
    );
    assert_eq!(status, 201, "{s:?}");
    assert!(s["url"].as_str().is_some_and(|u| u.ends_with("/sse")));
    let pid = s["pid"].as_u64().expect("pid") as u32;
    let (_, row) = d.call("GET", &format!("/api/instances/{pid}"), None);
    assert_eq!(row["source"], "session");
    assert_eq!(row["context"], "ide");
    assert_eq!(row["transport"], "sse");
    let out = home.tray(&["--port", &d.port.to_string(), "session", "list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(s["session_id"].as_str().expect("id")));
    let out = home.tray(&[
        "--port",
        &d.port.to_string(),
        "session",
        "release",
        s["session_id"].as_str().expect("id"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("terminated"));
    assert!(!alive(pid));
}

#[test]
fn a_session_is_a_series_of_events_and_one_whose_serena_exits_by_itself_is_ended() {
    let home = Home::new();
    let dir = home.path().join("eventful");
    std::fs::create_dir_all(&dir).expect("mkdir");
    home.tray_config(&fake::command_config(""));
    let d = home.daemon();
    let rx = events(&d);
    let (status, s) = d.call(
        "POST",
        "/request-session",
        Some(json!({"project_path": dir.to_str().expect("utf8")})),
    );
    assert_eq!(status, 201, "{s:?}");
    let id = s["session_id"].as_str().expect("id").to_string();
    let pid = s["pid"].as_u64().expect("pid") as u32;
    let (_, launching) = next_event(&rx, Duration::from_secs(10), |v| {
        v["type"] == "session_launching"
    })
    .expect("session_launching");
    assert_eq!(launching["session_id"], id.as_str());
    let (_, ready) = next_event(&rx, Duration::from_secs(10), |v| {
        v["type"] == "session_ready"
    })
    .expect("session_ready");
    assert_eq!(ready["session"]["session_id"], id.as_str());
    assert_eq!(ready["session"]["pid"], pid);

    // Its Serena goes away without a release: the session ends by itself.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    let (_, exited) = next_event(&rx, Duration::from_secs(10), |v| {
        v["type"] == "session_exited"
    })
    .expect("session_exited");
    assert_eq!(exited["session_id"], id.as_str());
    assert_eq!(exited["pid"], pid);
    let (_, active) = d.call("GET", "/api/sessions", None);
    assert_eq!(active, json!([]), "an ended session leaves the active list");
    let (status, r) = d.call("POST", "/release-session", Some(json!({"session_id": id})));
    assert_eq!((status, r["status"].clone()), (200, json!("already_gone")));
    let stored: Value = serde_json::from_str(
        &std::fs::read_to_string(home.serena_home().join("tray/sessions.json")).expect("store"),
    )
    .expect("sessions.json");
    let row = stored
        .as_array()
        .and_then(|l| l.iter().find(|r| r["session_id"] == id.as_str()).cloned())
        .expect("kept in the history");
    assert_eq!(row["end_reason"], "exited");
    assert!(row["ended_at"].as_f64().is_some());
    wait_for("the timeline entries", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(home.serena_home().join("tray/events.jsonl")).ok()?;
        ["session_launching", "session_ready", "session_exited"]
            .iter()
            .all(|k| text.contains(&format!("\"type\":\"{k}\"")))
            .then_some(())
    });
}

#[test]
fn a_taken_tray_protocol_port_is_taken_over_when_it_frees() {
    let home = Home::new();
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let tp = squatter.local_addr().expect("addr").port();
    let d = home.daemon_on(free_port(), tp);
    // It works on without the receiver, and says why.
    assert_eq!(d.call("GET", "/api/instances", None).0, 200);
    let log = wait_for("the warning", Duration::from_secs(10), || {
        std::fs::read_to_string(home.daemon_log(d.port))
            .ok()
            .filter(|l| l.contains("tray-protocol port"))
    });
    assert!(log.contains(&format!("127.0.0.1:{tp} is taken")), "{log}");
    drop(squatter);
    wait_for(
        "the receiver on the freed port",
        Duration::from_secs(20),
        || {
            block_on(async {
                http::client()
                    .get(format!("http://127.0.0.1:{tp}/health"))
                    .send()
                    .await
                    .ok()?
                    .json::<Value>()
                    .await
                    .ok()
            })
            .filter(|v| v["status"] == "alive")
        },
    );
}

#[test]
fn with_auto_kill_a_zombie_is_killed_as_it_appears() {
    let home = Home::new();
    home.tray_config("auto_kill_zombies = true\nzombie_grace = 1\nprobe_timeout = 0.5\n");
    let mut reaper = Reaper::default();
    let hangs = reaper.adopt(spawn_fake(&home, &[], &[]));
    let fine = reaper.adopt(spawn_fake(&home, &[], &[]));
    // A stale record (from before a reboot, say) names the healthy one's PID: it is a dead
    // zombie to prune, and must never get the live process killed.
    let long_ago = serena_tray::core::model::now() - 7200.0;
    std::fs::write(
        home.registry_path(),
        json!([{"pid": fine, "port": 24001, "started_at": long_ago, "last_heartbeat": long_ago,
                "context": null, "modes": [], "project_name": "old", "state": "live_no_project"}])
        .to_string(),
    )
    .expect("seed");
    let d = home.daemon();
    wait_for("both to answer", Duration::from_secs(20), || {
        let (_, list) = d.call("GET", "/api/instances", None);
        let answered = |pid: u32| {
            list.as_array().is_some_and(|l| {
                l.iter()
                    .any(|i| i["pid"] == pid && !i["last_heartbeat"].is_null())
            })
        };
        (answered(hangs) && answered(fine)).then_some(())
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(hangs as i32),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .expect("hang");
    wait_for(
        "the unresponsive one to be killed",
        Duration::from_secs(30),
        || (!alive(hangs)).then_some(()),
    );
    assert!(alive(fine), "only the zombie was killed");
    wait_for(
        "the stale record to be pruned",
        Duration::from_secs(10),
        || {
            let reg: Vec<Value> = serde_json::from_str(
                &std::fs::read_to_string(home.registry_path()).unwrap_or_default(),
            )
            .unwrap_or_default();
            (!reg.iter().any(|e| e["project_name"] == "old")).then_some(())
        },
    );
    assert!(alive(fine), "pruning a dead record signals nothing");
    wait_for("the kill in the timeline", Duration::from_secs(10), || {
        std::fs::read_to_string(home.serena_home().join("tray/events.jsonl"))
            .ok()
            .filter(|t| {
                t.lines().any(|l| {
                    l.contains("instance_killed") && l.contains(&format!("\"pid\":{hangs}"))
                })
            })
    });
}

#[test]
fn a_launch_whose_port_is_lost_to_a_race_is_retried_on_another() {
    let home = Home::new();
    let dir = home.path().join("raced");
    std::fs::create_dir_all(&dir).expect("mkdir");
    home.tray_config(&fake::command_config(""));
    // The fake exits with Serena's "port taken" status 3 on its first run only.
    let marker = home.path().join("port-taken-once");
    let d = home.daemon_with(
        free_port(),
        free_port(),
        &[(
            "FAKE_SERENA_PORT_TAKEN_ONCE",
            marker.to_str().expect("utf8"),
        )],
    );
    let (status, s) = d.call(
        "POST",
        "/request-session",
        Some(json!({"project_path": dir.to_str().expect("utf8")})),
    );
    assert_eq!(status, 201, "{s:?}");
    assert!(marker.exists(), "the first attempt lost its port");
    let log = std::fs::read_to_string(s["log_path"].as_str().expect("log_path")).expect("log");
    assert_eq!(
        log.matches("MCP port taken (simulated)").count(),
        1,
        "{log}"
    );
    let pid = s["pid"].as_u64().expect("pid") as u32;
    assert!(alive(pid));
    let (status, _) = d.call(
        "POST",
        "/release-session",
        Some(json!({"session_id": s["session_id"]})),
    );
    assert_eq!(status, 200);
}

#[test]
fn shutdown_asks_the_instance_through_its_own_dashboard() {
    let home = Home::new();
    let mut reaper = Reaper::default();
    let pid = reaper.adopt(spawn_fake(&home, &[], &[]));
    let d = home.daemon();
    wait_for("the fake to answer", Duration::from_secs(20), || {
        let (_, i) = d.call("GET", &format!("/api/instances/{pid}"), None);
        (!i["last_heartbeat"].is_null()).then_some(())
    });
    let (status, v) = d.call(
        "POST",
        &format!("/api/instances/{pid}/shutdown"),
        Some(json!({})),
    );
    assert_eq!((status, v), (200, json!({"status": "asked", "pid": pid})));
    // The fake exits on PUT /shutdown, as an HTTP-transport Serena does.
    wait_for("it to exit", Duration::from_secs(10), || {
        if let Some(c) = reaper.child(pid) {
            let _ = c.try_wait();
        }
        (!alive(pid)).then_some(())
    });
}

/// A wrapper that stays the parent of the Serena it runs (as `uvx` does).
fn wrapper_config(home: &Home, extra: &str) -> String {
    let wrapper = home.path().join("wrap.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n# not exec: the shell stays the parent\n{:?} \"$@\"\n",
            fake::exe().to_str().expect("utf8")
        ),
    )
    .expect("wrapper");
    format!(
        "serena_command = [\"/bin/sh\", {:?}]\n{extra}",
        wrapper.to_str().expect("utf8")
    )
}

#[test]
fn a_session_behind_a_wrapper_is_its_serena_and_is_released_with_the_wrapper() {
    let home = Home::new();
    let dir = home.path().join("wrapped");
    std::fs::create_dir_all(&dir).expect("mkdir");
    home.tray_config(&wrapper_config(&home, ""));
    let d = home.daemon();
    let (status, s) = d.call(
        "POST",
        "/request-session",
        Some(json!({"project_path": dir.to_str().expect("utf8")})),
    );
    assert_eq!(status, 201, "{s:?}");
    let pid = s["pid"].as_u64().expect("pid") as u32;
    let snap = snapshot();
    let serena = snap.get(pid).expect("the session's process");
    assert!(
        fake::is_server(&serena.cmdline),
        "the session is the Serena behind the wrapper: {:?}",
        serena.cmdline
    );
    let wrapper = serena.ppid.expect("its parent");
    let (status, r) = d.call(
        "POST",
        "/release-session",
        Some(json!({"session_id": s["session_id"]})),
    );
    assert_eq!((status, &r["status"]), (200, &json!("terminated")), "{r:?}");
    assert!(!alive(pid));
    wait_for("the wrapper to go with it", Duration::from_secs(10), || {
        (!alive(wrapper)).then_some(())
    });
}

#[test]
fn a_wrapper_that_exits_mid_launch_leaves_no_serena_behind() {
    let home = Home::new();
    let dir = home.path().join("wrapquits");
    std::fs::create_dir_all(&dir).expect("mkdir");
    // The wrapper starts Serena in the background and exits while it is still starting (no
    // dashboard ever): the launch fails, and the Serena it recorded under the wrapper is reaped
    // although it is no longer the wrapper's child by then.
    let wrapper = home.path().join("wrap-and-quit.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n{:?} \"$@\" </dev/null >/dev/null 2>&1 &\nsleep 3\nexit 0\n",
            fake::exe().to_str().expect("utf8")
        ),
    )
    .expect("wrapper");
    home.tray_config(&format!(
        "serena_command = [\"/bin/sh\", {:?}]\n",
        wrapper.to_str().expect("utf8")
    ));
    let d = home.daemon_with(
        free_port(),
        free_port(),
        &[("FAKE_SERENA_NO_DASHBOARD", "1")],
    );
    let (status, v) = d.call(
        "POST",
        "/request-session",
        Some(json!({"project_path": dir.to_str().expect("utf8")})),
    );
    assert_eq!(status, 500, "{v:?}");
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("exited with")));
    assert!(
        fake_servers_on(&dir).is_empty(),
        "left {:?}",
        fake_servers_on(&dir)
    );
}

#[test]
fn a_wrapped_launch_that_never_answers_leaves_neither_wrapper_nor_serena() {
    let home = Home::new();
    let dir = home.path().join("wrapsilent");
    std::fs::create_dir_all(&dir).expect("mkdir");
    home.tray_config(&wrapper_config(&home, "session_start_timeout = 3\n"));
    let d = home.daemon_with(
        free_port(),
        free_port(),
        &[("FAKE_SERENA_NO_DASHBOARD", "1")],
    );
    let started = Instant::now();
    let (status, v) = d.call(
        "POST",
        "/request-session",
        Some(json!({"project_path": dir.to_str().expect("utf8")})),
    );
    assert_eq!(status, 504, "{v:?}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the request came back"
    );
    // The answer comes only once the cleanup is done: nothing is left by then.
    assert!(
        fake_servers_on(&dir).is_empty(),
        "left {:?}",
        fake_servers_on(&dir)
    );
    let snap = snapshot();
    let wrap = home.path().join("wrap.sh");
    assert!(
        !snap.iter().any(|p| p
            .cmdline
            .iter()
            .any(|a| a == wrap.to_str().unwrap_or_default())),
        "the wrapper is gone too"
    );
}

#[test]
fn a_client_that_hangs_up_mid_launch_leaves_a_recorded_session_not_a_stray() {
    let home = Home::new();
    let dir = home.path().join("hangup");
    std::fs::create_dir_all(&dir).expect("mkdir");
    home.tray_config(&fake::command_config(""));
    let d = home.daemon_with(
        free_port(),
        free_port(),
        &[("FAKE_SERENA_START_DELAY", "2")],
    );
    let url = d.url("/request-session");
    let token = d.token.clone();
    let body = json!({"project_path": dir.to_str().expect("utf8")});
    // The client gives up after half a second, long before the launch is done.
    let gave_up = block_on(async move {
        http::client_with_timeout(Duration::from_millis(500))
            .post(url)
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .is_err()
    });
    assert!(gave_up, "the request should still have been running");
    // The launch finishes on its own and is recorded: releasable, not a stray "starting".
    let session = wait_for("the launch to be recorded", Duration::from_secs(30), || {
        let (_, list) = d.call("GET", "/api/sessions", None);
        list.as_array().and_then(|l| l.first().cloned())
    });
    let pid = session["pid"].as_u64().expect("pid") as u32;
    let (_, row) = d.call("GET", &format!("/api/instances/{pid}"), None);
    assert_eq!(row["source"], "session");
    assert_ne!(row["state"], "starting");
    let (status, r) = d.call(
        "POST",
        "/release-session",
        Some(json!({"session_id": session["session_id"]})),
    );
    assert_eq!((status, &r["status"]), (200, &json!("terminated")), "{r:?}");
    assert!(fake_servers_on(&dir).is_empty());
}

#[test]
fn an_execution_is_cancelled_through_the_instances_own_dashboard() {
    let home = Home::new();
    let mut reaper = Reaper::default();
    let pid = reaper.adopt(spawn_fake(&home, &[], &[]));
    let nodash = reaper.adopt(spawn_fake(&home, &[], &[("FAKE_SERENA_NO_DASHBOARD", "1")]));
    let d = home.daemon();
    wait_for("the fakes to be seen", Duration::from_secs(20), || {
        let (_, i) = d.call("GET", &format!("/api/instances/{pid}"), None);
        let (status, _) = d.call("GET", &format!("/api/instances/{nodash}"), None);
        (!i["last_heartbeat"].is_null() && status == 200).then_some(())
    });
    // Serena's answer, as it gives it (the fake runs no task, as an idle Serena).
    let (status, v) = d.call(
        "POST",
        &format!("/api/instances/{pid}/executions/7/cancel"),
        None,
    );
    assert_eq!(status, 200, "{v:?}");
    assert_eq!(v["status"], "success");
    assert_eq!(v["was_cancelled"], false);
    assert!(
        v["message"].as_str().is_some_and(|m| m.contains("id 7 ")),
        "the task ID reached it as a number: {v:?}"
    );
    let (status, v) = d.call(
        "POST",
        &format!("/api/instances/{pid}/executions/x7/cancel"),
        None,
    );
    assert_eq!((status, &v["error"]["code"]), (400, &json!("bad_task_id")));

    let (status, v) = d.call(
        "POST",
        &format!("/api/instances/{nodash}/executions/7/cancel"),
        None,
    );
    assert_eq!(status, 409, "{v:?}");
    assert_eq!(v["error"]["code"], "no_dashboard");

    // Its dashboard hangs: the call fails upstream.
    hang_dashboard(pid, dashboard_port(&d, pid));
    let (status, v) = d.call(
        "POST",
        &format!("/api/instances/{pid}/executions/7/cancel"),
        None,
    );
    assert_eq!(status, 502, "{v:?}");
    assert_eq!(v["error"]["code"], "dashboard_error");
}

#[test]
fn with_port_0_the_port_file_says_where_it_listens_and_every_verb_finds_it_without_flags() {
    let home = Home::new();
    let port_file = home.path().join("run/port");
    let mut cmd = Command::new(tray_exe());
    home.env(&mut cmd);
    let log = std::fs::File::create(home.path().join("daemon.log")).expect("log");
    let child = cmd
        .arg("--serena-home")
        .arg(home.serena_home())
        .args(["daemon", "--port", "0", "--port-file"])
        .arg(&port_file)
        .args(["--tray-protocol-port", &free_port().to_string()])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("daemon");
    let mut reaper = Reaper::default();
    let pid = reaper.adopt(child);
    let port: u16 = wait_for("the port file", Duration::from_secs(20), || {
        std::fs::read_to_string(&port_file)
            .ok()?
            .trim()
            .parse()
            .ok()
    });
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&port_file).expect("meta").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let d = Daemon::attach_app(&home, port, pid);
    let (status, health) = d.call("GET", "/api/health", None);
    assert_eq!(
        (status, health["pid"].as_u64()),
        (200, Some(u64::from(pid)))
    );
    let record: Value = serde_json::from_str(
        &std::fs::read_to_string(home.serena_home().join("tray/daemon.json")).expect("daemon.json"),
    )
    .expect("JSON");
    assert_eq!(
        (record["pid"].as_u64(), record["port"].as_u64()),
        (Some(u64::from(pid)), Some(u64::from(port)))
    );

    // No --port: the verbs find it through daemon.json, as a new user would expect.
    let out = home.tray(&["session", "list"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "No sessions.\n");
    let out = home.tray(&["open"]);
    let url = String::from_utf8_lossy(&out.stdout);
    assert!(
        url.starts_with(&format!("http://127.0.0.1:{port}/?token=")),
        "{url}"
    );

    // Stopped: both records go.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    wait_for("the daemon to stop", Duration::from_secs(20), || {
        reaper.child(pid).and_then(|c| c.try_wait().ok()).flatten()
    });
    assert!(!port_file.exists());
    assert!(!home.serena_home().join("tray/daemon.json").exists());
}

/// The dashboard port the daemon knows for the instance `pid`.
fn dashboard_port(d: &Daemon, pid: u32) -> u16 {
    let (_, i) = d.call("GET", &format!("/api/instances/{pid}"), None);
    i["port"].as_u64().expect("a dashboard port") as u16
}
