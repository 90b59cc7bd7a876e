//! The security layer and the handlers in-process: `router(app)` driven with
//! `tower::ServiceExt::oneshot`: requests go straight to the router, not through a socket, and no
//! daemon process runs (the app does bind its ports, as it always does). The app's discovery is
//! scoped to a marker no process carries, so nothing on this machine is seen, let alone signalled.
//! The end-to-end tests through the binary are in tests/api.rs.

use super::router;
use crate::core::app::{App, Show};
use crate::core::background::{self, Started};
use crate::core::procs::Scope;
use crate::core::settings::Settings;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;

struct TestApi {
    app: App,
    _home: tempfile::TempDir,
}

async fn test_api() -> TestApi {
    let home = tempfile::tempdir().expect("tempdir");
    let mut settings = Settings::defaults(home.path().join(".serena"));
    settings.scope = Scope::Marked(format!("api-unit-test-{}", std::process::id()));
    settings.dashboard.port = 0;
    settings.tray.tray_protocol_port = 0;
    match background::start(settings).await {
        Ok(Started::Running(app)) => TestApi { app, _home: home },
        _ => panic!("the app did not start on a free port"),
    }
}

/// One request: `headers` on top of the right Host; a body is JSON unless a content type is given.
struct Req<'a> {
    method: &'a str,
    path: &'a str,
    body: Option<String>,
    headers: Vec<(&'a str, String)>,
}

fn get(path: &str) -> Req<'_> {
    Req {
        method: "GET",
        path,
        body: None,
        headers: vec![],
    }
}

fn post(path: &str, body: impl Into<String>) -> Req<'_> {
    Req {
        method: "POST",
        path,
        body: Some(body.into()),
        headers: vec![],
    }
}

impl<'a> Req<'a> {
    fn header(mut self, name: &'a str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

impl TestApi {
    fn bearer(&self) -> String {
        format!("Bearer {}", self.app.token())
    }

    /// Sends `req` with the token.
    async fn call(&self, req: Req<'_>) -> (StatusCode, Value, axum::http::HeaderMap) {
        let auth = self.bearer();
        self.send(req.header("authorization", auth)).await
    }

    /// Sends `req` as it is (plus the Host header, unless it sets one).
    async fn send(&self, req: Req<'_>) -> (StatusCode, Value, axum::http::HeaderMap) {
        let (status, bytes, headers) = self.send_raw(req).await;
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, v, headers)
    }

    /// [`TestApi::send`], the body as bytes.
    async fn send_raw(&self, req: Req<'_>) -> (StatusCode, Vec<u8>, axum::http::HeaderMap) {
        let mut b = Request::builder().method(req.method).uri(req.path);
        if !req.headers.iter().any(|(k, _)| *k == "host") {
            b = b.header(header::HOST, format!("127.0.0.1:{}", self.app.port()));
        }
        if req.body.is_some() && !req.headers.iter().any(|(k, _)| *k == "content-type") {
            b = b.header(header::CONTENT_TYPE, "application/json");
        }
        for (k, v) in &req.headers {
            b = b.header(*k, v);
        }
        let body = req.body.map(Body::from).unwrap_or_else(Body::empty);
        let resp = router(self.app.clone())
            .oneshot(b.body(body).expect("request"))
            .await
            .expect("infallible");
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("body");
        (parts.status, bytes.to_vec(), parts.headers)
    }
}

#[track_caller]
fn assert_error(got: (StatusCode, Value, axum::http::HeaderMap), status: u16, code: &str) {
    let (s, v, _) = got;
    assert_eq!(s.as_u16(), status, "{v:?}");
    assert_eq!(v["error"]["code"], code, "{v:?}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v:?}"
    );
}

#[tokio::test]
async fn the_token_is_needed_everywhere_but_health_and_the_page() {
    let api = test_api().await;
    assert_eq!(api.send(get("/api/health")).await.0, StatusCode::OK);
    assert_eq!(api.send(get("/")).await.0, StatusCode::OK);
    assert_error(api.send(get("/api/instances")).await, 401, "no_token");
    assert_error(
        api.send(get("/api/instances").header("authorization", "Bearer nope"))
            .await,
        403,
        "bad_token",
    );
    assert_eq!(api.call(get("/api/instances")).await.0, StatusCode::OK);
    let cookie = format!("{}={}", super::security::COOKIE, api.app.token());
    assert_eq!(
        api.send(get("/api/instances").header("cookie", cookie))
            .await
            .0,
        StatusCode::OK
    );
    assert_error(
        api.send(get("/api/events").header("cookie", "serena_tray_token=wrong"))
            .await,
        403,
        "bad_token",
    );
    api.app.shutdown().await;
}

#[tokio::test]
async fn the_login_url_sets_a_strict_http_only_cookie_and_leaves_the_address_bar() {
    let api = test_api().await;
    let (status, _, headers) = api.send(get(&format!("/?token={}", api.app.token()))).await;
    assert!(status.is_redirection(), "{status}");
    assert_eq!(headers[header::LOCATION], "/");
    let cookie = headers[header::SET_COOKIE].to_str().expect("ascii");
    assert!(cookie.contains(api.app.token()), "{cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    assert_error(api.send(get("/?token=wrong")).await, 403, "bad_token");
    api.app.shutdown().await;
}

#[tokio::test]
async fn a_foreign_host_or_a_cross_origin_change_is_refused() {
    let api = test_api().await;
    let port = api.app.port();
    for host in [
        format!("evil.example:{port}"),
        "127.0.0.1:1".to_string(),
        "127.0.0.1".to_string(),
    ] {
        assert_error(
            api.call(get("/api/instances").header("host", host)).await,
            403,
            "bad_host",
        );
    }
    assert_eq!(
        api.call(get("/api/instances").header("host", format!("localhost:{port}")))
            .await
            .0,
        StatusCode::OK
    );
    assert_error(
        api.call(post("/api/zombies/kill", "{}").header("origin", "http://evil.example"))
            .await,
        403,
        "cross_origin",
    );
    let (status, sweep, _) = api
        .call(post("/api/zombies/kill", "{}").header("origin", format!("http://127.0.0.1:{port}")))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sweep, json!({"killed": [], "failed": [], "pruned": []}));
    api.app.shutdown().await;
}

#[tokio::test]
async fn bad_bodies_get_a_clear_status_and_a_json_error() {
    let api = test_api().await;
    assert_error(
        api.call(post("/request-session", "{\"project_path\": "))
            .await,
        400,
        "malformed_json",
    );
    for body in [
        json!({"project_path": 5}),
        json!({}),
        json!({"project_path": "/", "surprise": true}),
    ] {
        assert_error(
            api.call(post("/request-session", body.to_string())).await,
            422,
            "invalid_body",
        );
    }
    assert_error(
        api.call(post(
            "/release-session",
            json!({"session_id": ["x"]}).to_string(),
        ))
        .await,
        422,
        "invalid_body",
    );
    assert_error(
        api.call(post("/request-session", "{}").header("content-type", "text/plain"))
            .await,
        415,
        "unsupported_media_type",
    );
    let big = format!("{{\"session_id\": \"{}\"}}", "x".repeat(70 * 1024));
    assert_error(
        api.call(post("/release-session", big)).await,
        413,
        "body_too_large",
    );
    api.app.shutdown().await;
}

#[tokio::test]
async fn project_paths_and_names_are_checked_before_anything_runs() {
    let api = test_api().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").expect("write");
    let missing = dir.path().join("no-such-project");
    let dir = dir.path().to_str().expect("utf8");
    for (body, code) in [
        (json!({"project_path": "relative/project"}), "relative_path"),
        (json!({"project_path": ""}), "relative_path"),
        (json!({"project_path": missing}), "missing_path"),
        (json!({"project_path": file}), "not_a_directory"),
        (
            json!({"project_path": dir, "transport": "stdio"}),
            "bad_transport",
        ),
        (
            json!({"project_path": dir, "context": "--help"}),
            "bad_name",
        ),
        (
            json!({"project_path": dir, "modes": ["ok", "-x"]}),
            "bad_name",
        ),
    ] {
        assert_error(
            api.call(post("/request-session", body.to_string())).await,
            400,
            code,
        );
    }
    api.app.shutdown().await;
}

#[tokio::test]
async fn unknown_sessions_pids_and_routes_are_not_found() {
    let api = test_api().await;
    assert_error(
        api.call(post(
            "/release-session",
            json!({"session_id": "nope"}).to_string(),
        ))
        .await,
        404,
        "unknown_session",
    );
    for path in [
        "/api/instances/4000000",
        "/api/instances/4000000/overview",
        "/api/instances/4000000/logs",
    ] {
        assert_error(api.call(get(path)).await, 404, "unknown_pid");
    }
    for path in [
        "/api/instances/4000000/kill",
        "/api/instances/4000000/shutdown",
    ] {
        assert_error(api.call(post(path, "{}")).await, 404, "unknown_pid");
    }
    for path in [
        "/api/instances/abc",
        "/api/instances/0",
        "/api/instances/-1",
    ] {
        assert_error(api.call(get(path)).await, 400, "bad_pid");
    }
    assert_error(api.call(get("/api/nothing-here")).await, 404, "not_found");
    let (status, sessions, _) = api.call(get("/api/sessions")).await;
    assert_eq!((status, sessions), (StatusCode::OK, json!([])));
    api.app.shutdown().await;
}

fn header_of<'h>(headers: &'h axum::http::HeaderMap, name: &str) -> &'h str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

#[tokio::test]
async fn every_ui_file_is_served_with_its_type_and_an_etag_that_revalidates() {
    let api = test_api().await;
    let names: Vec<String> = super::ui::names().collect();
    assert!(names.iter().any(|n| n == "index.html"), "{names:?}");
    for name in &names {
        let path = format!("/{name}");
        // Static files need no token.
        let (status, body, headers) = api.send_raw(get(&path)).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(
            header_of(&headers, "content-type"),
            super::ui::content_type(name),
            "{path}"
        );
        let want = match name.rsplit_once('.').map(|(_, e)| e) {
            Some("html") => Some("text/html; charset=utf-8"),
            Some("js") => Some("text/javascript; charset=utf-8"),
            Some("css") => Some("text/css; charset=utf-8"),
            Some("svg") => Some("image/svg+xml; charset=utf-8"),
            Some("png") => Some("image/png"),
            Some("json") => Some("application/json; charset=utf-8"),
            _ => None,
        };
        if let Some(want) = want {
            assert_eq!(header_of(&headers, "content-type"), want, "{path}");
        }
        let on_disk = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("ui")
                .join(name),
        )
        .expect("the file in ui/");
        assert!(
            body == on_disk,
            "{path} is not the file as it is in ui/ ({} bytes served, {} on disk)",
            body.len(),
            on_disk.len()
        );
        assert_eq!(header_of(&headers, "cache-control"), "no-cache", "{path}");
        let etag = header_of(&headers, "etag").to_string();
        assert!(
            etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"'),
            "a strong ETag: {etag:?}"
        );

        let (status, body, again) = api
            .send_raw(get(&path).header("if-none-match", etag.clone()))
            .await;
        assert_eq!(status, StatusCode::NOT_MODIFIED, "{path}");
        assert!(body.is_empty());
        assert_eq!(header_of(&again, "etag"), etag);
        assert_eq!(header_of(&again, "cache-control"), "no-cache");
        let (status, _, _) = api
            .send_raw(get(&path).header("if-none-match", "\"something-else\""))
            .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{path}: another ETag is not this file"
        );
        let (status, _, _) = api
            .send_raw(get(&path).header("if-none-match", format!("\"x\", W/{etag}")))
            .await;
        assert_eq!(status, StatusCode::NOT_MODIFIED, "{path}: one of a list");
    }
    // `/` is index.html, with the same validator.
    let (_, root, root_headers) = api.send_raw(get("/")).await;
    let (_, index, index_headers) = api.send_raw(get("/index.html")).await;
    assert_eq!(root, index);
    assert_eq!(
        header_of(&root_headers, "etag"),
        header_of(&index_headers, "etag")
    );
    assert!(String::from_utf8_lossy(&root).contains("<html"));
    let (status, _, _) = api
        .send_raw(get("/").header(
            "if-none-match",
            header_of(&index_headers, "etag").to_string(),
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    api.app.shutdown().await;
}

#[tokio::test]
async fn every_response_carries_the_csp_nosniff_and_no_referrer() {
    let api = test_api().await;
    let port = api.app.port();
    let cases: Vec<(&str, (StatusCode, Value, axum::http::HeaderMap))> = vec![
        ("page", api.send(get("/")).await),
        ("health", api.send(get("/api/health")).await),
        ("API JSON", api.call(get("/api/instances")).await),
        ("404", api.call(get("/api/nothing-here")).await),
        ("401", api.send(get("/api/instances")).await),
        (
            "403 host",
            api.call(get("/api/instances").header("host", format!("evil.example:{port}")))
                .await,
        ),
        (
            "login redirect",
            api.send(get(&format!("/?token={}", api.app.token()))).await,
        ),
        (
            "413",
            api.call(post("/release-session", "x".repeat(70 * 1024)))
                .await,
        ),
    ];
    for (what, (status, _, headers)) in cases {
        assert_eq!(
            header_of(&headers, "content-security-policy"),
            "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; \
             object-src 'none'",
            "{what} ({status})"
        );
        assert!(
            !header_of(&headers, "content-security-policy").contains("unsafe-inline"),
            "{what}"
        );
        assert_eq!(
            header_of(&headers, "x-content-type-options"),
            "nosniff",
            "{what}"
        );
        assert_eq!(
            header_of(&headers, "referrer-policy"),
            "no-referrer",
            "{what}"
        );
    }
    api.app.shutdown().await;
}

#[tokio::test]
async fn paths_outside_ui_are_not_found_however_they_are_spelt() {
    let api = test_api().await;
    for path in [
        "/../Cargo.toml",
        "/..%2fCargo.toml",
        "/%2e%2e/Cargo.toml",
        "/%2E%2E%2FCargo.toml",
        "/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/icons/../../Cargo.toml",
        "/icons/..%2f..%2fCargo.toml",
        "/..%5cCargo.toml",
        "/./index.html",
        "//index.html",
        "/.%2e/.ci/run",
        "/ui/index.html",
        "/Cargo.toml",
        "/tests/common/mod.rs",
    ] {
        let (status, body, headers) = api.call(get(path)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body:?}");
        assert_eq!(body["error"]["code"], "not_found", "{path}");
        assert!(
            header_of(&headers, "content-type").starts_with("application/json"),
            "{path}"
        );
        // Without the token it is no file either.
        assert_ne!(api.send(get(path)).await.0, StatusCode::OK, "{path}");
    }
    // Only GET and HEAD read files.
    let (status, _, _) = api.call(post("/index.html", "{}")).await;
    assert_ne!(status, StatusCode::OK);
    api.app.shutdown().await;
}

#[tokio::test]
async fn the_timeline_of_a_pid_comes_from_both_files_and_an_unknown_pid_is_not_found() {
    let api = test_api().await;
    let dir = api.app.settings().tray_dir();
    let path = dir.join(crate::core::timeline::FILE_NAME);
    let old = crate::core::timeline::Timeline::new(&path);
    std::fs::write(
        old.previous_path(),
        "{\"type\":\"instance_added\",\"at\":10.5,\"pid\":4000000,\"state\":\"live_no_project\"}\n",
    )
    .expect("write");
    for line in [
        json!({"type": "state_changed", "at": 11.5, "pid": 4000000, "from": "live_no_project",
               "to": "zombie", "reason": "orphaned"})
        .to_string(),
        "{broken".to_string(),
        json!({"type": "instance_added", "at": 11.7, "pid": 4000002}).to_string(),
        json!({"type": "instance_removed", "at": 12.5, "pid": 4000000, "started_at": 1.0})
            .to_string(),
    ] {
        old.append(&line).expect("append");
    }
    let (status, v, _) = api.call(get("/api/instances/4000000/timeline")).await;
    assert_eq!(status, StatusCode::OK, "{v:?}");
    assert_eq!(v["pid"], 4000000);
    let events = v["events"].as_array().expect("events");
    let seen: Vec<(&str, f64)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or("?"),
                e["at"].as_f64().unwrap_or(-1.0),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("instance_added", 10.5),
            ("state_changed", 11.5),
            ("instance_removed", 12.5)
        ]
    );
    assert_eq!(events[1]["reason"], "orphaned");
    // The token is needed, as for every other route.
    assert_error(
        api.send(get("/api/instances/4000000/timeline")).await,
        401,
        "no_token",
    );
    assert_error(
        api.call(get("/api/instances/4000001/timeline")).await,
        404,
        "unknown_pid",
    );
    assert_error(
        api.call(get("/api/instances/x/timeline")).await,
        400,
        "bad_pid",
    );
    api.app.shutdown().await;
}

#[tokio::test]
async fn cancelling_an_execution_checks_the_task_id_and_the_pid() {
    let api = test_api().await;
    for task in [
        "abc",
        "-1",
        "+5",
        "1.5",
        "1e3",
        "99999999999999999999999",
        "%20",
    ] {
        assert_error(
            api.call(post(
                &format!("/api/instances/4000000/executions/{task}/cancel"),
                "{}",
            ))
            .await,
            400,
            "bad_task_id",
        );
    }
    assert_error(
        api.call(post("/api/instances/4000000/executions/3/cancel", "{}"))
            .await,
        404,
        "unknown_pid",
    );
    assert_error(
        api.send(post("/api/instances/4000000/executions/3/cancel", "{}"))
            .await,
        401,
        "no_token",
    );
    assert_error(
        api.call(
            post("/api/instances/4000000/executions/3/cancel", "{}")
                .header("origin", "http://evil.example"),
        )
        .await,
        403,
        "cross_origin",
    );
    api.app.shutdown().await;
}

#[tokio::test]
async fn a_window_request_reaches_the_window_host_and_the_headless_daemon_says_it_has_none() {
    let api = test_api().await;
    // No window host: the daemon says so, with the URL to open instead.
    let (status, v, _) = api.call(post("/api/window", "{}")).await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["error"]["code"], "no_window");
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains(&api.app.url())));

    let mut host = api.app.window_requests();
    for (body, shown) in [
        ("{}", Show::Dashboard),
        (r#"{"pid": 4242}"#, Show::Instance(4242)),
        (r#"{"new_session": true}"#, Show::NewSession),
    ] {
        let (status, v, _) = api.call(post("/api/window", body)).await;
        assert_eq!((status, &v["status"]), (StatusCode::OK, &json!("shown")));
        assert_eq!(host.try_recv().expect("the host was asked"), shown);
    }
    assert_error(
        api.call(post("/api/window", r#"{"pid": 1, "new_session": true}"#))
            .await,
        400,
        "bad_window_request",
    );
    assert_error(
        api.call(post("/api/window", r#"{"tab": 1}"#)).await,
        422,
        "invalid_body",
    );
    assert_error(api.send(post("/api/window", "{}")).await, 401, "no_token");
    assert!(host.try_recv().is_err(), "refused requests reach no one");
    assert_eq!(Show::Instance(7).path(), "/#7");
    assert_eq!(Show::NewSession.path(), "/#new-session");
    api.app.shutdown().await;
}
