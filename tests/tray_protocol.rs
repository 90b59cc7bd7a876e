//! Serena's own tray protocol, received by the daemon. Serena's tray port is a constant (24224):
//! when it is free, a REAL Serena configured with `web_dashboard_interface: tray_manager` reports
//! straight to the daemon's receiver there; the protocol is also driven with Serena's exact
//! request bodies (from serena/dashboard.py) on a private port, including the update and
//! unregister calls real Serena only makes at project switches and clean exits. A registration
//! is information, never authority: the refusals (a web page's Origin, a PID that does not listen
//! on the port, a process that is not Serena, a caller outside the instance's process family, an
//! overlong project, more than 256 registrations) are each exercised here with real processes.

mod common;

use common::*;
use serde_json::{json, Value};
use serena_tray::core::engine::MAX_REGISTRATIONS;
use serena_tray::core::tray_protocol::{MAX_PROJECT_BYTES, SERENA_TRAY_PORT};
use std::process::Command;
use std::time::{Duration, Instant};

fn post(port: u16, path: &str, body: Value) -> (u16, Value) {
    json_request("POST", port, path, Some(body))
}

fn get(port: u16, path: &str) -> (u16, Value) {
    json_request("GET", port, path, None)
}

fn row(d: &Daemon, pid: u32) -> Option<Value> {
    let (_, list) = d.call("GET", "/api/instances", None);
    list.as_array()?.iter().find(|i| i["pid"] == pid).cloned()
}

#[test]
fn a_real_serena_with_tray_manager_reports_to_the_daemon_on_24224() {
    if std::net::TcpListener::bind(("127.0.0.1", SERENA_TRAY_PORT)).is_err() {
        // Taken (Serena's own tray manager runs here): the exact-bodies test below covers the
        // protocol on a private port. Say so rather than pass silently.
        // A developer's desk may run Serena's own tray manager; CI must exercise it.
        skip_unless_ci(&format!(
            "port {SERENA_TRAY_PORT} is taken: real-Serena registration not exercised"
        ));
        return;
    }
    let home = Home::new();
    let project = home.jedi_project("trayproj");
    // Serena reads the interface from its config file (there is no CLI flag).
    let cfg = home.serena_home().join("serena_config.yml");
    let text = std::fs::read_to_string(&cfg).expect("serena_config.yml");
    let text = text.replace(
        "\nweb_dashboard_interface:\n",
        "\nweb_dashboard_interface: tray_manager\n",
    );
    assert!(text.contains("web_dashboard_interface: tray_manager"));
    std::fs::write(&cfg, text).expect("write config");

    let d = home.daemon_on(free_port(), SERENA_TRAY_PORT);
    assert_eq!(get(SERENA_TRAY_PORT, "/health").1["status"], "alive");
    let mut reaper = Reaper::default();
    let (serena, _stdin) = spawn_serena(&home, &["--project", project.to_str().expect("utf8")]);
    let pid = reaper.adopt(serena);

    let r = wait_for("Serena to register", Duration::from_secs(60), || {
        row(&d, pid).filter(|r| r["source"] == "tray_protocol")
    });
    assert_eq!(r["project_name"], "trayproj");
    assert_eq!(r["verified_serena"], true);
    // Serena did not spawn its own tray manager (it found ours answering).
    let snap = snapshot();
    assert!(
        !snap.iter().any(|p| p
            .cmdline
            .iter()
            .any(|a| a.contains("SerenaDashboardTrayManager"))),
        "Serena started its own tray manager"
    );
}

/// A fake Serena listening on `n` extra ports that accept nothing (and, if `dashboard`, serving
/// its dashboard on a port of its own): its PID and the extra ports, once they all listen.
fn fake_listening(home: &Home, reaper: &mut Reaper, n: usize, dashboard: bool) -> (u32, Vec<u16>) {
    let dash = free_port();
    let n_env = n.to_string();
    let dash_env = dash.to_string();
    let mut env = vec![("FAKE_SERENA_EXTRA_LISTENERS", n_env.as_str())];
    if dashboard {
        env.push(("FAKE_SERENA_PORT", dash_env.as_str()));
    } else {
        env.push(("FAKE_SERENA_NO_DASHBOARD", "1"));
    }
    let pid = reaper.adopt(spawn_fake(home, &[], &env));
    let want = n + usize::from(dashboard);
    let ports = wait_for("the fake's sockets", Duration::from_secs(30), || {
        let ports = serena_tray::core::sockets::platform()
            .listening_ports(&[pid])
            .remove(&pid)
            .unwrap_or_default();
        (ports.len() >= want).then_some(ports)
    });
    (pid, ports.into_iter().filter(|p| *p != dash).collect())
}

/// A registration body exactly as Serena sends it.
fn registration(pid: u32, port: u16, project: Option<&str>) -> Value {
    json!({"port": port, "pid": pid,
           "dashboard_url": format!("http://127.0.0.1:{port}/dashboard/index.html"),
           "project": project, "started_at": "2026-11-23T10:00:00", "open_viewer": false})
}

fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

/// A POST sent by a separate process (a Python child of the test: a sibling of any fake the
/// test started, so of none of their process families).
fn post_from_another_process(home: &Home, port: u16, path: &str, body: Value) -> (u16, Value) {
    let script = r#"
import sys, urllib.request, urllib.error
req = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode(),
                             headers={"Content-Type": "application/json"}, method="POST")
try:
    r = urllib.request.urlopen(req, timeout=30)
    print(r.status); print(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); print(e.read().decode())
"#;
    let mut cmd = Command::new("python3");
    home.env(&mut cmd);
    let out = cmd
        .args(["-c", script])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .arg(body.to_string())
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, body) = text.split_once('\n').unwrap_or((text.as_str(), ""));
    (
        status.trim().parse().unwrap_or(0),
        serde_json::from_str(body.trim()).unwrap_or(Value::Null),
    )
}

#[test]
fn serenas_exact_request_bodies_register_update_and_unregister() {
    let home = Home::new();
    // Its only socket never answers, so the registration is all the daemon hears from it:
    // keep it from turning into an unresponsive zombie meanwhile.
    home.tray_config("zombie_grace = 600\n");
    let mut reaper = Reaper::default();
    // A fake Serena stands in for the process; the bodies are Serena's own.
    let (pid, ports) = fake_listening(&home, &mut reaper, 1, false);
    let dash_port = ports[0];
    let d = home.daemon();
    let tp = d.tray_port;
    assert_eq!(get(tp, "/health"), (200, json!({"status": "alive"})));

    let (status, body) = post(tp, "/register", registration(pid, dash_port, None));
    assert_eq!((status, body), (200, json!({"status": "registered"})));
    let r = wait_for("the registration", Duration::from_secs(10), || {
        row(&d, pid).filter(|r| r["source"] == "tray_protocol")
    });
    assert_eq!(r["project_name"], Value::Null);
    assert_eq!(r["state"], "live_no_project");
    assert_eq!(r["verified_serena"], true);

    let (status, body) = post(
        tp,
        "/update_project",
        json!({"port": dash_port, "project": "renamed"}),
    );
    assert_eq!((status, body), (200, json!({"status": "updated"})));
    wait_for("the project update", Duration::from_secs(10), || {
        row(&d, pid).filter(|r| r["project_name"] == "renamed" && r["state"] == "live_with_project")
    });

    let (status, body) = post(tp, "/unregister", json!({"port": dash_port}));
    assert_eq!((status, body), (200, json!({"status": "unregistered"})));
    // The source falls back to discovery, and the registration's project goes with it (one
    // refresh later: the source is settled before the probe, the project after it).
    wait_for(
        "the source to fall back to discovery, without the project",
        Duration::from_secs(10),
        || row(&d, pid).filter(|r| r["source"] == "discovery" && r["project_name"].is_null()),
    );
    // Nothing is registered on that port any more.
    let (status, body) = post(tp, "/unregister", json!({"port": dash_port}));
    assert_eq!((status, error_code(&body)), (404, "not_registered"));

    // Bad bodies are refused clearly, never a crash.
    assert_eq!(post(tp, "/register", json!({"port": "x"})).0, 422);
    assert_eq!(post(tp, "/unregister", json!({})).0, 422);
    let (status, _) = block_on(async move {
        let resp = http::client()
            .post(format!("http://127.0.0.1:{tp}/register"))
            .header("content-type", "application/json")
            .header("host", "evil.example")
            .body("{}")
            .send()
            .await
            .expect("POST");
        (resp.status().as_u16(), ())
    });
    assert_eq!(status, 403, "rebinding Host refused");
}

#[test]
fn a_request_with_an_origin_header_is_refused() {
    let home = Home::new();
    let mut reaper = Reaper::default();
    let (pid, ports) = fake_listening(&home, &mut reaper, 1, false);
    let d = home.daemon();
    let tp = d.tray_port;
    let send = |method: &str, path: &str, body: Option<Value>| {
        json_request_with(method, tp, path, body, &[("origin", "http://evil.example")])
    };
    // Everything else about this registration checks out.
    let (status, body) = send("POST", "/register", Some(registration(pid, ports[0], None)));
    assert_eq!(
        (status, error_code(&body)),
        (403, "origin_refused"),
        "{body}"
    );
    assert_eq!(send("GET", "/health", None).0, 403);
    // Without the header the same registration is accepted: the Origin was the only fault.
    assert_eq!(
        post(tp, "/register", registration(pid, ports[0], None)).0,
        200
    );
    let (status, body) = send("POST", "/unregister", Some(json!({"port": ports[0]})));
    assert_eq!((status, error_code(&body)), (403, "origin_refused"));
}

#[test]
fn a_registration_for_a_pid_that_does_not_listen_on_the_port_is_refused() {
    let home = Home::new();
    let mut reaper = Reaper::default();
    let (pid, _) = fake_listening(&home, &mut reaper, 1, false);
    let d = home.daemon();
    let elsewhere = free_port();
    let start = Instant::now();
    let (status, body) = post(d.tray_port, "/register", registration(pid, elsewhere, None));
    eprintln!(
        "a registration for a port the PID does not listen on was refused after {:?} (the grace \
         for a dashboard still binding)",
        start.elapsed()
    );
    assert_eq!(
        (status, error_code(&body)),
        (403, "port_not_owned"),
        "{body}"
    );
    // A PID that does not exist at all.
    let (status, body) = post(
        d.tray_port,
        "/register",
        registration(4_000_000, elsewhere, None),
    );
    assert_eq!(status, 403, "{body}");
    assert!(row(&d, pid).is_none_or(|r| r["source"] != "tray_protocol"));
}

#[test]
fn a_registration_for_a_process_that_is_not_serena_is_refused() {
    let home = Home::new();
    let mut reaper = Reaper::default();
    let (server, port) = spawn_non_serena_listener(&home, &mut reaper);
    let d = home.daemon();
    let (status, body) = post(d.tray_port, "/register", registration(server, port, None));
    assert_eq!((status, error_code(&body)), (403, "not_serena"), "{body}");
    assert!(
        row(&d, server).is_none(),
        "a refused registration shows nothing"
    );
}

#[test]
fn only_the_instances_own_process_family_may_update_or_unregister_it() {
    let home = Home::new();
    home.tray_config("zombie_grace = 600\n");
    let mut reaper = Reaper::default();
    let (pid, ports) = fake_listening(&home, &mut reaper, 1, false);
    let d = home.daemon();
    let tp = d.tray_port;
    // The test is the fake's parent: an ancestor may speak for it.
    assert_eq!(
        post(tp, "/register", registration(pid, ports[0], Some("mine"))).0,
        200
    );
    // A process outside its family may not register for it, rename it, or remove it.
    for (path, body) in [
        ("/register", registration(pid, ports[0], Some("stolen"))),
        (
            "/update_project",
            json!({"port": ports[0], "project": "stolen"}),
        ),
        ("/unregister", json!({"port": ports[0]})),
    ] {
        let (status, answer) = post_from_another_process(&home, tp, path, body);
        assert_eq!(
            (status, error_code(&answer)),
            (403, "not_the_instance"),
            "{path}: {answer}"
        );
    }
    // Shown with its own project (the project settles one probe after the source).
    wait_for(
        "the registration, untouched",
        Duration::from_secs(10),
        || row(&d, pid).filter(|r| r["source"] == "tray_protocol" && r["project_name"] == "mine"),
    );
    // An update or unregistration names only a port: one nobody registered is not found.
    let (status, body) = post(tp, "/update_project", json!({"port": 9, "project": "x"}));
    assert_eq!((status, error_code(&body)), (404, "not_registered"));
}

#[test]
fn an_overlong_project_is_refused() {
    let home = Home::new();
    let mut reaper = Reaper::default();
    let (pid, ports) = fake_listening(&home, &mut reaper, 1, false);
    let d = home.daemon();
    let tp = d.tray_port;
    let long = "x".repeat(MAX_PROJECT_BYTES + 1);
    let (status, body) = post(tp, "/register", registration(pid, ports[0], Some(&long)));
    assert_eq!(
        (status, error_code(&body)),
        (422, "project_too_long"),
        "{body}"
    );
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains(&MAX_PROJECT_BYTES.to_string())));
    // Exactly the limit is fine; then an update beyond it is refused too.
    let longest = "y".repeat(MAX_PROJECT_BYTES);
    assert_eq!(
        post(tp, "/register", registration(pid, ports[0], Some(&longest))).0,
        200
    );
    let (status, body) = post(
        tp,
        "/update_project",
        json!({"port": ports[0], "project": long}),
    );
    assert_eq!((status, error_code(&body)), (422, "project_too_long"));
}

#[test]
fn a_flood_of_registrations_keeps_at_most_256_and_memory_flat() {
    const FLOOD: usize = 1000;
    const LISTENING: usize = MAX_REGISTRATIONS + 44;
    let home = Home::new();
    let mut reaper = Reaper::default();
    // One fake Serena listening on 300 ports: the first 300 registrations each name a real
    // socket of a real Serena-looking process, so only the bound stops them; the other 700 name
    // ports nobody listens on, and the bound turns them away before anything is checked.
    let (pid, owned) = fake_listening(&home, &mut reaper, LISTENING, true);
    assert!(owned.len() >= LISTENING);
    let ports: Vec<u16> = owned
        .iter()
        .copied()
        .take(LISTENING)
        .chain(
            (20000u16..)
                .filter(|p| !owned.contains(p))
                .take(FLOOD - LISTENING),
        )
        .collect();
    let d = home.daemon();
    let tp = d.tray_port;
    // Settled: the daemon found its dashboard among its sockets (the one look at all of them).
    wait_for(
        "the fake's dashboard to answer",
        Duration::from_secs(60),
        || row(&d, pid).filter(|r| !r["last_heartbeat"].is_null()),
    );
    // Warm up the paths the flood takes, then measure.
    assert_eq!(
        post(tp, "/register", registration(pid, ports[0], Some("warm"))).0,
        200
    );
    assert_eq!(post(tp, "/unregister", json!({"port": ports[0]})).0, 200);
    let rss_before = rss_kib(d.pid);

    let start = Instant::now();
    let (accepted, full, other) = block_on(async {
        let client = http::client();
        let (mut accepted, mut full, mut other) = (0usize, 0usize, Vec::new());
        for (i, port) in ports.iter().enumerate() {
            let body = registration(
                pid,
                *port,
                Some(&format!("flood-{i:04}-{}", "z".repeat(200))),
            );
            let resp = client
                .post(format!("http://127.0.0.1:{tp}/register"))
                .json(&body)
                .send()
                .await
                .expect("register");
            let status = resp.status().as_u16();
            let answer: Value = resp.json().await.unwrap_or(Value::Null);
            match (status, error_code(&answer)) {
                (200, _) => accepted += 1,
                (507, "too_many_registrations") => full += 1,
                _ => other.push((status, answer)),
            }
        }
        (accepted, full, other)
    });
    let took = start.elapsed();
    let rss_after = rss_kib(d.pid);
    eprintln!(
        "{FLOOD} registrations in {took:?}: {accepted} accepted, {full} refused as full; daemon \
         RSS {rss_before} KiB before, {rss_after} KiB after ({:+} KiB)",
        rss_after as i64 - rss_before as i64
    );
    assert!(other.is_empty(), "unexpected answers: {other:?}");
    assert_eq!(accepted, MAX_REGISTRATIONS);
    assert_eq!(full, FLOOD - MAX_REGISTRATIONS);
    assert!(
        rss_after < rss_before + 32 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    // Still held at the bound: one more is refused until one ends, then there is room.
    let spare = ports[LISTENING - 1];
    assert_eq!(post(tp, "/register", registration(pid, spare, None)).0, 507);
    assert_eq!(post(tp, "/unregister", json!({"port": ports[0]})).0, 200);
    assert_eq!(post(tp, "/register", registration(pid, spare, None)).0, 200);
    // The flood is one instance, shown once.
    let (_, list) = d.call("GET", "/api/instances", None);
    let rows = list
        .as_array()
        .map(|l| l.iter().filter(|i| i["pid"] == pid).count());
    assert_eq!(rows, Some(1));
}
