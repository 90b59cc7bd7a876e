//! Serena's own tray protocol, received by the daemon. Serena's tray port is a constant (24224):
//! when it is free, a REAL Serena configured with `web_dashboard_interface: tray_manager` reports
//! straight to the daemon's receiver there; the protocol is also driven with Serena's exact
//! request bodies (from serena/dashboard.py) on a private port, including the update and
//! unregister calls real Serena only makes at project switches and clean exits.

mod common;

use common::*;
use serde_json::{json, Value};
use serena_tray::core::tray_protocol::SERENA_TRAY_PORT;
use std::time::Duration;

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
        eprintln!("port {SERENA_TRAY_PORT} is taken: real-Serena registration not exercised");
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
    let snap = serena_tray::core::procs::Snapshot::capture(&mut sysinfo::System::new());
    assert!(
        !snap.iter().any(|p| p
            .cmdline
            .iter()
            .any(|a| a.contains("SerenaDashboardTrayManager"))),
        "Serena started its own tray manager"
    );
}

#[test]
fn serenas_exact_request_bodies_register_update_and_unregister() {
    let home = Home::new();
    let mut reaper = Reaper::default();
    // A fake Serena stands in for the process; the bodies are Serena's own.
    let pid = reaper.adopt(spawn_fake(&home, &[], &[("FAKE_SERENA_NO_DASHBOARD", "1")]));
    let d = home.daemon();
    let tp = d.tray_port;
    assert_eq!(get(tp, "/health"), (200, json!({"status": "alive"})));

    let dash_port = 24777;
    let (status, body) = post(
        tp,
        "/register",
        json!({"port": dash_port, "pid": pid,
               "dashboard_url": format!("http://127.0.0.1:{dash_port}/dashboard/index.html"),
               "project": null, "started_at": "2026-11-23T10:00:00", "open_viewer": false}),
    );
    assert_eq!((status, body), (200, json!({"status": "registered"})));
    let r = wait_for("the registration", Duration::from_secs(10), || {
        row(&d, pid).filter(|r| r["source"] == "tray_protocol")
    });
    assert_eq!(r["project_name"], Value::Null);
    assert_eq!(r["state"], "live_no_project");

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
    let r = wait_for(
        "the source to fall back to discovery",
        Duration::from_secs(10),
        || row(&d, pid).filter(|r| r["source"] == "discovery"),
    );
    assert_eq!(
        r["project_name"],
        Value::Null,
        "the registration's project went with it"
    );

    // Bad bodies are refused clearly, never a crash.
    assert_eq!(post(tp, "/register", json!({"port": "x"})).0, 422);
    assert_eq!(post(tp, "/unregister", json!({})).0, 422);
    let (status, _) = block_on(async move {
        let resp = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
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
