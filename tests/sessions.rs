//! The instance manager against REAL Serena 2.1.0: request a session for a temp project (jedi),
//! speak MCP to it (initialize, tools/list), cancel a task of its Executions Queue through the
//! API, read its timeline, release it and prove Serena and its language server are gone; the
//! daemon restarted between request and release still releases it; `shared` returns the same
//! session. Also: an orphaned real Serena reaped by `POST /api/zombies/kill`
//! with its language server.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

#[test]
fn a_session_is_requested_spoken_to_over_mcp_survives_a_daemon_restart_and_is_released() {
    let home = home_with_serena();
    let project = home.jedi_project("sessionproj");
    let mut d = home.daemon();
    let port = d.port;
    let tray_port = d.tray_port;

    let (status, s) = d.request_session(json!({"project_path": project.to_str().expect("utf8")}));
    assert_eq!(status, 201, "{s:?}");
    let id = s["session_id"].as_str().expect("session_id").to_string();
    let pid = s["pid"].as_u64().expect("pid") as u32;
    assert_ne!(id, pid.to_string(), "the session id is not the PID");
    assert!(id.len() >= 32);
    assert_eq!(s["host"], "127.0.0.1");
    let url = s["url"].as_str().expect("url").to_string();
    assert_eq!(url, format!("http://127.0.0.1:{}/mcp", s["port"]));
    assert!(s["dashboard_url"]
        .as_str()
        .is_some_and(|u| u.starts_with("http://127.0.0.1:")));

    let tools = tools_over_mcp(&url);
    assert!(tools.iter().any(|t| t == "activate_project"), "{tools:?}");

    // It is listed as a session, green, with its project.
    let row = wait_for("the session in the list", Duration::from_secs(20), || {
        let (_, list) = d.call("GET", "/api/instances", None);
        list.as_array()?
            .iter()
            .find(|i| i["pid"] == pid && i["state"] == "live_with_project")
            .cloned()
    });
    assert_eq!(row["source"], "session");
    assert_eq!(row["project_name"], "sessionproj");
    assert_eq!(row["transport"], "streamable-http");

    // Its tab's eight sections come from its own dashboard.
    let (status, ov) = d.call("GET", &format!("/api/instances/{pid}/overview"), None);
    assert_eq!(status, 200, "{ov:?}");
    for name in serena_tray::core::api::overview::SECTIONS {
        assert_eq!(
            ov["sections"][name]["ok"], true,
            "{name}: {:?}",
            ov["sections"][name]
        );
    }
    assert_eq!(
        ov["sections"]["current_configuration"]["data"]["active_project"]["name"],
        "sessionproj"
    );
    assert!(ov["sections"]["available_tools"]["data"]["available_tools"]
        .as_array()
        .is_some_and(|t| !t.is_empty()));
    let (status, logs) = d.call("GET", &format!("/api/instances/{pid}/logs?since=0"), None);
    assert_eq!(status, 200);
    assert!(logs["messages"].as_array().is_some_and(|m| !m.is_empty()));

    // Its Executions Queue: a task that is not running is not cancelled, in Serena's words.
    let (status, c) = d.call(
        "POST",
        &format!("/api/instances/{pid}/executions/424242/cancel"),
        None,
    );
    assert_eq!(status, 200, "{c:?}");
    assert_eq!(c["status"], "success", "{c:?}");
    assert_eq!(c["was_cancelled"], false, "{c:?}");
    assert!(
        c["message"].as_str().is_some_and(|m| m.contains("424242")),
        "{c:?}"
    );
    // Its timeline: launched, seen, ready (and nothing about other PIDs).
    let (status, t) = d.call("GET", &format!("/api/instances/{pid}/timeline"), None);
    assert_eq!(status, 200, "{t:?}");
    let kinds: Vec<&str> = t["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    for kind in ["session_launching", "instance_added", "session_ready"] {
        assert!(kinds.contains(&kind), "{kind} missing: {kinds:?}");
    }

    // `shared` never hands out a private session: it makes a shared one, and gives that one
    // back instead of a duplicate.
    let shared = || {
        d.request_session(json!({"project_path": project.to_str().expect("utf8"), "shared": true}))
    };
    let (status, first) = shared();
    assert_eq!(status, 201, "{first:?}");
    assert_ne!(first["session_id"], id.as_str(), "not the private one");
    assert_eq!(first["shared"], true);
    let (status, again) = shared();
    assert_eq!(status, 200, "{again:?}");
    assert_eq!(again["session_id"], first["session_id"]);
    let (status, _) = d.call(
        "POST",
        "/release-session",
        Some(json!({"session_id": first["session_id"]})),
    );
    assert_eq!(status, 200);

    let tree = tree_with_language_server(pid);

    // Restart the daemon: the session is re-adopted from sessions.json.
    assert!(d.stop().expect("stopped").success());
    assert!(alive(pid), "a session outlives the daemon");
    let d = home.daemon_on(port, tray_port);
    let (_, sessions) = d.call("GET", "/api/sessions", None);
    assert!(
        sessions
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x["session_id"] == id.as_str())),
        "{sessions:?}"
    );

    let (status, r) = d.call("POST", "/release-session", Some(json!({"session_id": id})));
    assert_eq!(status, 200, "{r:?}");
    assert_eq!(r["status"], "terminated");
    assert_eq!(r["session_id"], id.as_str());
    for p in &tree {
        assert!(!alive(*p), "{p} of the session's tree {tree:?} survived");
    }
    // Released: the ID was issued, so it answers `already_gone` (404 is for IDs never issued).
    let (status, again) = d.call("POST", "/release-session", Some(json!({"session_id": id})));
    assert_eq!(status, 200, "{again:?}");
    assert_eq!(again["status"], "already_gone");
    let (_, sessions) = d.call("GET", "/api/sessions", None);
    assert_eq!(sessions, json!([]), "a released session is not listed");
}

#[test]
fn an_orphaned_real_serena_is_reaped_by_kill_all_zombies_with_its_language_server() {
    let home = home_with_serena();
    let project = home.jedi_project("orphan");
    let mut reaper = Reaper::default();
    let (client, _held) = spawn_client(&home, &["--project", project.to_str().expect("utf8")]);
    let client_pid = reaper.adopt(client);
    let serena = serena_under(client_pid);
    reaper.watch(serena);
    let tree = tree_with_language_server(serena);
    for p in &tree {
        reaper.watch(*p);
    }

    let d = home.daemon();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(client_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill client");
    if let Some(c) = reaper.child(client_pid) {
        let _ = c.wait();
    }
    wait_for("the orphan to turn red", Duration::from_secs(40), || {
        let (_, list) = d.call("GET", "/api/instances", None);
        list.as_array()?
            .iter()
            .find(|i| i["pid"] == serena && i["state"] == "zombie")
            .cloned()
    });
    let (status, sweep) = d.call("POST", "/api/zombies/kill", Some(json!({})));
    assert_eq!(status, 200, "{sweep:?}");
    let killed: Vec<u64> = sweep["killed"]
        .as_array()
        .expect("killed")
        .iter()
        .filter_map(|r| r["pid"].as_u64())
        .collect();
    assert!(killed.contains(&(serena as u64)), "{sweep:?}");
    for p in &tree {
        assert!(!alive(*p), "{p} of {tree:?} survived the reaper");
    }
    let (_, list) = d.call("GET", "/api/instances", None);
    assert!(
        !list
            .as_array()
            .is_some_and(|l| l.iter().any(|i| i["pid"] == serena)),
        "{list:?}"
    );
}

#[test]
fn a_lease_not_renewed_releases_its_session_and_renewing_keeps_it() {
    let home = home_with_serena();
    let project = home.jedi_project("leased");
    let d = home.daemon();
    let request = |lease: f64| {
        let (status, s) = d.request_session(
            json!({"project_path": project.to_str().expect("utf8"), "lease_seconds": lease}),
        );
        assert_eq!(status, 201, "{s:?}");
        assert_eq!(s["lease_seconds"], lease);
        assert!(s["expires_at"]
            .as_f64()
            .is_some_and(|at| at > s["created_at"].as_f64().unwrap_or(0.0)));
        (
            s["session_id"].as_str().expect("id").to_string(),
            s["pid"].as_u64().expect("pid") as u32,
        )
    };
    let (kept, kept_pid) = request(4.0);
    // The kept one is renewed every second and a half from the moment it is handed out (as
    // its client would), while the other is requested and left to run out.
    let done = std::sync::atomic::AtomicBool::new(false);
    let renewals = std::sync::atomic::AtomicUsize::new(0);
    let dropped = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let (status, s) = d.call(
                    "POST",
                    &format!("/api/sessions/{kept}/renew"),
                    Some(json!({})),
                );
                assert_eq!(status, 200, "{s:?}");
                renewals.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(1500));
            }
        });
        // Stops the renewals however this ends (a failed assertion too, or the scope waits).
        struct Stop<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let _stop = Stop(&done);
        let (dropped, dropped_pid) = request(4.0);
        let dropped_tree = tree_with_language_server(dropped_pid);
        wait_for("the lease to run out", Duration::from_secs(60), || {
            (!alive(dropped_pid)).then_some(())
        });
        wait_for(
            "the dropped session's tree to be gone",
            Duration::from_secs(20),
            || dropped_tree.iter().all(|p| !alive(*p)).then_some(()),
        );
        dropped
    });
    assert!(
        renewals.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "renewed while the other ran out"
    );
    assert!(alive(kept_pid), "the renewed one lives on");
    let (_, list) = d.call("GET", "/api/sessions", None);
    let ids: Vec<&str> = list
        .as_array()
        .expect("sessions")
        .iter()
        .filter_map(|s| s["session_id"].as_str())
        .collect();
    assert_eq!(ids, [kept.as_str()], "the expired one left the list");
    let (status, r) = d.call(
        "POST",
        "/release-session",
        Some(json!({"session_id": dropped})),
    );
    assert_eq!((status, &r["status"]), (200, &json!("already_gone")));
    let (status, e) = d.call(
        "POST",
        &format!("/api/sessions/{dropped}/renew"),
        Some(json!({})),
    );
    assert_eq!((status, &e["error"]["code"]), (409, &json!("already_gone")));
    let (status, e) = d.call("POST", "/api/sessions/nope/renew", Some(json!({})));
    assert_eq!(
        (status, &e["error"]["code"]),
        (404, &json!("unknown_session"))
    );
    let (status, e) = d.call(
        "POST",
        &format!("/api/sessions/{kept}/renew"),
        Some(json!({"lease_seconds": -1})),
    );
    assert_eq!((status, &e["error"]["code"]), (400, &json!("bad_value")));
    // `session list` shows the time left.
    let table = String::from_utf8(
        home.tray(&["--port", &d.port.to_string(), "session", "list"])
            .stdout,
    )
    .expect("utf8");
    let row = table
        .lines()
        .find(|l| l.starts_with(&kept))
        .expect("its row");
    assert!(
        row.split_whitespace()
            .nth(3)
            .is_some_and(|lease| lease.ends_with('s')),
        "{table}"
    );
    let (status, _) = d.call(
        "POST",
        "/release-session",
        Some(json!({"session_id": kept})),
    );
    assert_eq!(status, 200);
}

/// A Serena that has no dashboard (the loser of Serena's dashboard port race runs so; here
/// `web_dashboard: false` makes it on demand) is still a session: ready once its MCP port has
/// listened a moment, and it answers MCP.
#[test]
fn a_session_whose_serena_runs_without_a_dashboard_is_ready_and_answers_mcp() {
    let home = home_with_serena();
    let project = home.jedi_project("dashboardless");
    let config = home.serena_home().join("serena_config.yml");
    let text = std::fs::read_to_string(&config).expect("serena_config.yml");
    assert!(text.contains("\nweb_dashboard: true"), "Serena's own key");
    let text = text.replace("\nweb_dashboard: true", "\nweb_dashboard: false");
    std::fs::write(&config, text).expect("serena_config.yml");
    let d = home.daemon();
    let (status, s) = d.request_session(json!({"project_path": project.to_str().expect("utf8")}));
    assert_eq!(status, 201, "{s:?}");
    let url = s["url"].as_str().expect("url");
    assert!(!tools_over_mcp(url).is_empty());
    let pid = s["pid"].as_u64().expect("pid");
    let (_, inst) = d.call("GET", &format!("/api/instances/{pid}"), None);
    assert_eq!(inst["port"], Value::Null, "no dashboard: {inst}");
    assert_ne!(inst["state"], "zombie", "{inst}");
}

/// Two sessions asked for at once: their Serenas start one after the other, the second once the
/// first's dashboard port is known, so each gets a dashboard of its own (started together, both
/// could pick the same port, and the loser would run without one: SERENA.md).
#[test]
fn sessions_asked_for_at_once_start_one_after_the_other_each_with_its_own_dashboard() {
    let home = home_with_serena();
    let projects = [home.jedi_project("first"), home.jedi_project("second")];
    let d = home.daemon();
    let rx = events(&d);
    // No other start of this test binary meanwhile.
    let _gate = start_gate();
    let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
        let asks: Vec<_> = projects
            .iter()
            .map(|p| {
                let body = json!({"project_path": p.to_str().expect("utf8")});
                let d = &d;
                s.spawn(move || d.call("POST", "/request-session", Some(body)))
            })
            .collect();
        asks.into_iter().map(|a| a.join().expect("asked")).collect()
    });
    let dashboard = |s: &Value| {
        s["dashboard_url"]
            .as_str()
            .and_then(|u| u.strip_prefix("http://127.0.0.1:"))
            .and_then(|u| u.split('/').next())
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("a dashboard: {s}"))
    };
    for (status, s) in &answers {
        assert_eq!(*status, 201, "{s}");
    }
    let ports: Vec<u16> = answers.iter().map(|(_, s)| dashboard(s)).collect();
    assert_ne!(ports[0], ports[1], "{answers:?}");

    // In the order of events: the second `session_launching` comes after an event that shows
    // the first one's Serena with its dashboard port.
    let mut seen: Vec<Value> = Vec::new();
    while seen.iter().filter(|v| v["type"] == "session_ready").count() < 2 {
        let (_, v) = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("both sessions ready on the event stream: {seen:?}"));
        seen.push(v);
    }
    let launching: Vec<usize> = (0..seen.len())
        .filter(|i| seen[*i]["type"] == "session_launching")
        .collect();
    assert_eq!(launching.len(), 2, "{seen:?}");
    let first = &seen[launching[0]]["pid"];
    assert!(
        seen[..launching[1]]
            .iter()
            .any(|v| v["instance"]["pid"] == *first && v["instance"]["port"].is_u64()),
        "the first Serena's dashboard known before the second starts: {seen:?}"
    );
    for (_, s) in &answers {
        let (status, r) = d.call(
            "POST",
            "/release-session",
            Some(json!({"session_id": s["session_id"]})),
        );
        assert_eq!(status, 200, "{r}");
    }
}
