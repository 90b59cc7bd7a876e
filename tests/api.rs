//! The daemon's HTTP API over real sockets (`serena-tray daemon` as a process): the security
//! rules of DESIGN "Security" applied on its socket (each rule in depth is tested in-process, in
//! src-tauri/core/api/tests.rs), random bodies at every JSON endpoint never a 5xx, and the
//! daemon's own lifecycle (a second start says the first runs; SIGTERM stops it cleanly).

mod common;

use common::*;
use proptest::prelude::*;
use serde_json::{json, Value};

fn assert_error(got: (u16, Value), status: u16, code: &str) {
    assert_eq!(got.0, status, "{:?}", got.1);
    assert_eq!(got.1["error"]["code"], code, "{:?}", got.1);
    assert!(
        got.1["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{:?}",
        got.1
    );
}

/// Each rule in depth is tested in-process (src-tauri/core/api/tests.rs); here, that the real
/// daemon applies them on its real socket.
#[test]
fn the_daemon_applies_the_security_rules_on_its_socket() {
    let home = Home::new();
    let d = home.daemon();
    let bearer = format!("Bearer {}", d.token);
    let auth = ("authorization", bearer.as_str());

    assert_eq!(d.raw("GET", "/api/health", None, &[]).0, 200);
    assert_error(d.raw("GET", "/api/instances", None, &[]), 401, "no_token");
    assert_eq!(d.raw("GET", "/api/instances", None, &[auth]).0, 200);
    let evil_host = format!("evil.example:{}", d.port);
    assert_error(
        d.raw("GET", "/api/instances", None, &[auth, ("host", &evil_host)]),
        403,
        "bad_host",
    );
    assert_error(
        d.raw(
            "POST",
            "/api/zombies/kill",
            Some("{}".into()),
            &[auth, ("origin", "http://evil.example")],
        ),
        403,
        "cross_origin",
    );
    let big = format!("{{\"session_id\": \"{}\"}}", "x".repeat(70 * 1024));
    assert_error(
        d.raw("POST", "/release-session", Some(big), &[auth]),
        413,
        "body_too_large",
    );
    assert_error(
        d.call(
            "POST",
            "/request-session",
            Some(json!({"project_path": "relative/project"})),
        ),
        400,
        "relative_path",
    );
    assert_error(d.call("GET", "/api/nothing-here", None), 404, "not_found");
}

#[test]
fn a_pid_that_is_not_serena_is_refused_at_registration_and_never_killed() {
    let home = Home::new();
    let mut reaper = Reaper::default();
    // Not Serena, yet it does listen on the port it will claim.
    let (imposter, port) = spawn_non_serena_listener(&home, &mut reaper);
    let d = home.daemon();
    // It registers over Serena's tray protocol, claiming to be an instance: refused outright.
    assert_error(
        d.raw_tray(
            "/register",
            json!({"port": port, "pid": imposter,
                   "dashboard_url": format!("http://127.0.0.1:{port}/dashboard/index.html"),
                   "project": "imposter", "started_at": "2026-01-01T00:00:00", "open_viewer": false}),
        ),
        403,
        "not_serena",
    );
    assert_error(
        d.call(
            "POST",
            &format!("/api/instances/{imposter}/kill"),
            Some(json!({})),
        ),
        404,
        "unknown_pid",
    );
    // Anyone may write the shared registry file, though: a record naming it is shown, but
    // never trusted for killing.
    let now = serena_tray::core::model::now();
    std::fs::write(
        home.registry_path(),
        json!([{"pid": imposter, "port": port, "started_at": now, "last_heartbeat": 0.0,
                "context": null, "modes": [], "project_name": "imposter",
                "state": "live_no_project"}])
        .to_string(),
    )
    .expect("registry");
    let row = wait_for(
        "the registry's record to show",
        std::time::Duration::from_secs(10),
        || {
            let (_, list) = d.call("GET", "/api/instances", None);
            list.as_array()
                .and_then(|l| l.iter().find(|i| i["pid"] == imposter).cloned())
        },
    );
    assert_eq!(row["verified_serena"], false);
    assert_eq!(row["source"], "registry");
    assert_error(
        d.call(
            "POST",
            &format!("/api/instances/{imposter}/kill"),
            Some(json!({})),
        ),
        409,
        "not_serena",
    );
    d.call("POST", "/api/zombies/kill", Some(json!({})));
    assert!(alive(imposter), "a non-Serena process was signalled");
}

impl TrayCall for Daemon {
    fn raw_tray(&self, path: &str, body: Value) -> (u16, Value) {
        json_request("POST", self.tray_port, path, Some(body))
    }
}

trait TrayCall {
    fn raw_tray(&self, path: &str, body: Value) -> (u16, Value);
}

#[test]
fn a_second_daemon_says_the_first_runs_and_sigterm_stops_cleanly() {
    let home = Home::new();
    let mut d = home.daemon();
    let out = home.tray(&[
        "daemon",
        "--port",
        &d.port.to_string(),
        "--tray-protocol-port",
        &free_port().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("already running"), "{stdout}");
    assert_eq!(
        d.call("GET", "/api/health", None).0,
        200,
        "the first still runs"
    );

    let status = d.stop().expect("stopped");
    assert!(status.success(), "SIGTERM exit: {status:?}");
    assert!(!alive(d.pid));
}

#[test]
fn cli_verbs_talk_to_the_daemon_and_say_how_to_start_one() {
    let home = Home::new();
    // No daemon: session verbs say how to start one; `kill` works directly.
    let out = home.tray(&["--port", &free_port().to_string(), "session", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("serena-tray daemon"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let out = home.tray(&["--port", &free_port().to_string(), "kill", "4000000"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no Serena instance with PID 4000000"));

    let d = home.daemon();
    let port = d.port.to_string();
    // Its output went to a log file, not a terminal: the plain URL, never the token.
    let log = std::fs::read_to_string(home.daemon_log(d.port)).expect("daemon log");
    assert!(
        log.contains(&format!("http://127.0.0.1:{port}/")) && log.contains("serena-tray open"),
        "{log}"
    );
    assert!(!log.contains(&d.token), "the token went to a log: {log}");
    let out = home.tray(&["--port", &port, "open"]);
    assert!(out.status.success());
    let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(url, format!("http://127.0.0.1:{port}/?token={}", d.token));
    let out = home.tray(&["--port", &port, "session", "list", "--json"]);
    assert!(out.status.success());
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).expect("json"),
        json!([])
    );
    let out = home.tray(&["--port", &port, "session", "release", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no session"));
    let out = home.tray(&["--port", &port, "kill", "--zombies"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_login_url_sets_an_http_only_strict_cookie_that_authorises() {
    let home = Home::new();
    let d = home.daemon();
    let url = d.url(&format!("/?token={}", d.token));
    let (status, cookie, location) = block_on(async {
        let resp = http::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client")
            .get(url)
            .send()
            .await
            .expect("GET");
        let h = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        (resp.status().as_u16(), h("set-cookie"), h("location"))
    });
    assert!((300..400).contains(&status));
    assert_eq!(location, "/");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().expect("pair").to_string();
    assert_eq!(
        d.raw("GET", "/api/instances", None, &[("cookie", &pair)]).0,
        200
    );
    assert_error(d.raw("GET", "/?token=wrong", None, &[]), 403, "bad_token");
}

/// Arbitrary JSON values, nested a little.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
        Just(json!("/")),
        Just(json!("/tmp")),
        Just(json!("streamable-http")),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("project_path".to_string()),
                    Just("session_id".to_string()),
                    Just("context".to_string()),
                    Just("modes".to_string()),
                    Just("transport".to_string()),
                    Just("shared".to_string()),
                    "[a-z_]{1,12}",
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn random_bodies_at_every_json_endpoint_never_get_a_5xx() {
    let home = Home::new();
    // A Serena command that does not exist: a valid request gets a clean 424, never a launch.
    let tray = home.serena_home().join("tray");
    std::fs::create_dir_all(&tray).expect("mkdir");
    std::fs::write(
        tray.join("config.toml"),
        "serena_command = [\"/nonexistent/bin/serena\"]\n",
    )
    .expect("config");
    let d = home.daemon();
    let dir = home.path().to_str().expect("utf8").to_string();
    let (status, v) = d.call(
        "POST",
        "/request-session",
        Some(json!({"project_path": dir})),
    );
    assert_eq!(status, 424, "{v:?}");
    assert_eq!(v["error"]["code"], "serena_not_found");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("/nonexistent/bin/serena"),
        "says what was looked for: {msg}"
    );
    assert!(
        msg.contains("config.toml"),
        "says how to configure it: {msg}"
    );
    let bearer = format!("Bearer {}", d.token);
    let endpoints = [
        "/request-session",
        "/release-session",
        "/api/zombies/kill",
        "/api/instances/4000000/kill",
        "/api/instances/4000000/shutdown",
    ];
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: 150,
        failure_persistence: None,
        ..Default::default()
    });
    let bodies = prop_oneof![
        any_json().prop_map(|v| v.to_string()),
        // Raw bytes that are mostly not JSON.
        ".{0,200}".prop_map(|s| s),
        Just("{\"project_path\": \"/\", \"modes\": [\"--x\"]}".to_string()),
    ];
    runner
        .run(&(0..endpoints.len(), bodies), |(i, body)| {
            let (status, v) = d.raw(
                "POST",
                endpoints[i],
                Some(body.clone()),
                &[("authorization", &bearer)],
            );
            prop_assert!(status < 500, "{} {body:?} -> {status} {v:?}", endpoints[i]);
            prop_assert!(
                v.get("error").is_some() || (200..300).contains(&status),
                "{} {body:?} -> {status} {v:?}",
                endpoints[i]
            );
            Ok(())
        })
        .expect("no 5xx");
    assert_eq!(d.call("GET", "/api/health", None).0, 200, "still up");
}

/// A port squatter: answers every GET as if it were Serena Tray (claiming another PID) and
/// records the Authorization headers it is sent.
const SQUATTER: &str = r#"
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
log = open(sys.argv[2], "a")
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def handle_any(self):
        log.write("%s %s\n" % (self.path, self.headers.get("Authorization"))); log.flush()
        body = json.dumps({"status": "ok", "app": "serena-tray", "pid": 1}).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    do_GET = handle_any
    do_POST = handle_any
HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

#[test]
fn the_cli_never_sends_the_token_to_a_port_squatter() {
    let home = Home::new();
    let token = serena_tray::core::token::load_or_create(&home.serena_home()).expect("token");
    let port = free_port();
    let seen = home.path().join("squatter.log");
    let mut reaper = Reaper::default();
    reaper.adopt(
        std::process::Command::new("python3")
            .args([
                "-c",
                SQUATTER,
                &port.to_string(),
                seen.to_str().expect("utf8"),
            ])
            .spawn()
            .expect("squatter"),
    );
    wait_for(
        "the squatter to listen",
        std::time::Duration::from_secs(10),
        || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
    );
    for args in [
        vec!["--port", &port.to_string(), "session", "list"],
        vec!["--port", &port.to_string(), "open"],
    ] {
        let out = home.tray(&args.iter().map(|s| s.as_ref()).collect::<Vec<&str>>());
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("no Serena Tray is running"));
    }
    let log = std::fs::read_to_string(&seen).unwrap_or_default();
    assert!(log.contains("/api/health"), "it was asked who it is: {log}");
    assert!(!log.contains(&token), "the token leaked: {log}");
}
