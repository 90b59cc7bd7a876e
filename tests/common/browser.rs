//! Headless Chromium driven over WebDriver (chromedriver + fantoccini), for the tests of the web
//! page; and the tray app's own window, driven the same way through WebKitWebDriver
//! ([`Browser::webkit`]). [`Browser::start`] starts `chromedriver` on a free port (the binary
//! from `CHROMEDRIVER`, else /usr/bin/chromedriver), waits until it answers `/status`, and opens
//! a session with
//! headless Chromium (`CHROMIUM`, else /usr/bin/chromium) in a fresh profile; dropping the
//! `Browser` closes the session and kills chromedriver's whole tree (Chromium included).
//!
//! Missing chromedriver or Chromium: the test cannot run, said through `skip_unless_ci` (under
//! `CI` it fails; elsewhere it prints `SKIPPED: ...` and [`Browser::start`] returns `None`:
//! `let Some(b) = Browser::start() else { return };`).
//!
//! The API is synchronous, like the rest of tests/common: the browser owns a small tokio
//! runtime and every call blocks on it. Every helper panics with what it was doing when the
//! browser fails, which is what a test wants.
//!
//! Chromedriver quirks handled here: the browser console is read through the legacy
//! `POST /session/{id}/se/log {"type":"browser"}` (W3C WebDriver has no log command), which
//! hands each entry out once, so the entries are kept and [`Browser::console_logs`] returns all
//! of them so far; the colour scheme is emulated through the Chrome DevTools Protocol, which
//! chromedriver exposes as `POST /session/{id}/goog/cdp/execute {cmd, params}`.

use super::{http, kill_tree, poll, repo, skip_unless_ci};
use axum::http::Method;
use fantoccini::elements::Element;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde::Deserialize;
use serde_json::{json, Value};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

/// How long a WebDriver call or a page load may take before the test fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the `wait_*` helpers look again.
const POLL: Duration = Duration::from_millis(50);

/// One entry of the browser console, as chromedriver reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct LogEntry {
    /// `SEVERE`, `WARNING`, `INFO`, `DEBUG`.
    pub level: String,
    pub message: String,
    /// `console-api`, `javascript`, `network`, `security`, ...
    #[serde(default)]
    pub source: String,
    /// Milliseconds since the epoch.
    #[serde(default)]
    pub timestamp: f64,
}

/// A headless Chromium session and the chromedriver that runs it.
pub struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    /// chromedriver's own log (read when it fails to start).
    driver_log: PathBuf,
    logs: Mutex<Vec<LogEntry>>,
    _profile: tempfile::TempDir,
}

/// A binary from the environment variable `var`, else `default`; `None` if it is not there.
fn binary(var: &str, default: &str) -> Option<PathBuf> {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    path.is_file().then_some(path)
}

/// Where screenshots go: `<repo>/target/screenshots/` (whatever `CARGO_TARGET_DIR` says).
pub fn screenshots_dir() -> PathBuf {
    repo().join("target/screenshots")
}

/// A raw WebDriver command on the session: `POST /session/{id}/<path>` with a JSON body.
#[derive(Debug)]
struct SessionCommand {
    path: &'static str,
    body: Value,
}

impl WebDriverCompatibleCommand for SessionCommand {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/{}",
            session_id.unwrap_or_default(),
            self.path
        ))
    }

    fn method_and_body(&self, _url: &url::Url) -> (Method, Option<String>) {
        (Method::POST, Some(self.body.to_string()))
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session. `None` when either is not installed
    /// (after `skip_unless_ci`: under `CI` that fails the test instead).
    pub fn start() -> Option<Browser> {
        let (driver, chromium) = match (
            binary("CHROMEDRIVER", "/usr/bin/chromedriver"),
            binary("CHROMIUM", "/usr/bin/chromium"),
        ) {
            (Some(d), Some(c)) => (d, c),
            (d, c) => {
                let missing = [
                    d.is_none()
                        .then_some("chromedriver (set CHROMEDRIVER or install chromium-driver)"),
                    c.is_none()
                        .then_some("Chromium (set CHROMIUM or install chromium)"),
                ];
                let missing: Vec<&str> = missing.into_iter().flatten().collect();
                skip_unless_ci(&format!(
                    "the page tests need a browser: no {}",
                    missing.join(" and no ")
                ));
                return None;
            }
        };
        let profile = tempfile::Builder::new()
            .prefix("serena-tray-chromium-")
            .tempdir()
            .expect("profile dir");
        let args = [
            "--headless".to_string(),
            "--no-sandbox".to_string(),
            "--disable-gpu".to_string(),
            "--no-first-run".to_string(),
            "--disable-background-networking".to_string(),
            "--disable-component-update".to_string(),
            "--disable-sync".to_string(),
            // Loopback only, whatever proxy the environment names.
            "--no-proxy-server".to_string(),
            format!(
                "--user-data-dir={}",
                profile.path().join("chromium").display()
            ),
            "--window-size=1280,900".to_string(),
        ];
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        });
        let driver_cmd = |port: u16, log: &Path| {
            let mut cmd = Command::new(&driver);
            cmd.arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            cmd
        };
        Some(Browser::launch(profile, driver_cmd, caps))
    }

    /// The tray app's own window, driven by WebKitWebDriver (Debian `webkit2gtk-driver`): the
    /// driver starts `app` with `args` (`configure` sets the environment both inherit: the
    /// desktop, the home) and attaches to the first webview it opens, which must be opened at
    /// start (`web_dashboard_global_open_on_launch`). `TAURI_WEBVIEW_AUTOMATION=true` lets the
    /// app's webviews be automated.
    pub fn webkit(app: &Path, args: &[String], configure: impl Fn(&mut Command)) -> Browser {
        let profile = tempfile::Builder::new()
            .prefix("serena-tray-webkit-")
            .tempdir()
            .expect("log dir");
        let caps = json!({
            "webkitgtk:browserOptions": {"binary": app, "args": args},
        });
        let driver_cmd = |port: u16, log: &Path| {
            let mut cmd = Command::new("WebKitWebDriver");
            configure(&mut cmd);
            let log = std::fs::File::create(log).expect("driver log");
            cmd.arg(format!("--port={port}"))
                .env("TAURI_WEBVIEW_AUTOMATION", "true")
                .stdout(log.try_clone().expect("log"))
                .stderr(log);
            cmd
        };
        Browser::launch(profile, driver_cmd, caps)
    }

    /// Starts the driver `driver_cmd(port, log)` makes on a free port and opens a session with
    /// `caps`.
    fn launch(
        profile: tempfile::TempDir,
        driver_cmd: impl Fn(u16, &Path) -> Command,
        caps: Value,
    ) -> Browser {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        // The port is picked free and then given to the driver: another process may take it in
        // between, so a driver that exits at once is started again on another port.
        let mut attempt = 0;
        let (child, port, driver_log) = loop {
            attempt += 1;
            let port = super::free_port();
            let log = profile.path().join(format!("driver-{port}.log"));
            let mut cmd = driver_cmd(port, &log);
            let mut child = cmd
                .stdin(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
            if wait_status(&rt, &mut child, port) {
                break (child, port, log);
            }
            kill_tree(child.id());
            let _ = child.wait();
            assert!(
                attempt < 3,
                "the WebDriver server did not answer /status on port {port}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let mut browser = Browser {
            rt,
            client: None,
            driver: child,
            driver_log,
            logs: Mutex::new(Vec::new()),
            _profile: profile,
        };
        let caps = caps.as_object().cloned().expect("object");
        let connected = browser.rt.block_on(async {
            let mut builder =
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
            builder.capabilities(caps);
            tokio::time::timeout(
                CALL_TIMEOUT,
                builder.connect(&format!("http://127.0.0.1:{port}")),
            )
            .await
        });
        match connected {
            Ok(Ok(client)) => browser.client = Some(client),
            Ok(Err(e)) => panic!(
                "the WebDriver server could not start the browser: {e}\n{}",
                browser.driver_log_tail()
            ),
            Err(_) => panic!(
                "no browser session within {CALL_TIMEOUT:?}\n{}",
                browser.driver_log_tail()
            ),
        }
        browser
    }

    fn driver_log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.driver_log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("a session")
    }

    /// Runs one WebDriver call to completion; panics with `what` on an error or a timeout.
    #[track_caller]
    fn run<T, E: std::fmt::Display>(&self, what: &str, f: impl Future<Output = Result<T, E>>) -> T {
        match self
            .rt
            .block_on(async { tokio::time::timeout(CALL_TIMEOUT, f).await })
        {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => panic!("browser: {what}: {e}"),
            Err(_) => panic!("browser: {what}: no answer within {CALL_TIMEOUT:?}"),
        }
    }

    /// Opens `url` and waits for it to load.
    #[track_caller]
    pub fn goto(&self, url: &str) {
        self.run(&format!("open {url}"), self.client().goto(url));
    }

    /// The address the browser shows.
    #[track_caller]
    pub fn current_url(&self) -> String {
        self.run("read the URL", self.client().current_url())
            .to_string()
    }

    /// Runs `script` (a function body: `return ...`) in the page with `args`.
    #[track_caller]
    pub fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.run("run a script", self.client().execute(script, args))
    }

    /// Runs `script` in the page; it finishes by calling its last argument (the callback that
    /// WebDriver appends) with the result.
    #[track_caller]
    pub fn execute_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.run(
            "run an async script",
            self.client().execute_async(script, args),
        )
    }

    /// `fetch(path)` from the page (its origin, its cookies): (status, JSON body or Null; 0 if
    /// the request failed).
    #[track_caller]
    pub fn fetch(&self, path: &str) -> (u16, Value) {
        let v = self.execute_async(
            "const [path, done] = arguments;
             fetch(path, {credentials: 'same-origin'})
               .then(async (r) => done({status: r.status, body: await r.text()}),
                     (e) => done({status: 0, body: String(e)}));",
            vec![json!(path)],
        );
        let status = v["status"].as_u64().unwrap_or(0) as u16;
        let body = v["body"]
            .as_str()
            .and_then(|b| serde_json::from_str(b).ok())
            .unwrap_or(Value::Null);
        (status, body)
    }

    /// The first element matching the CSS `selector`, if any.
    #[track_caller]
    pub fn try_find(&self, selector: &str) -> Option<El<'_>> {
        let found = self.rt.block_on(async {
            tokio::time::timeout(CALL_TIMEOUT, self.client().find(Locator::Css(selector))).await
        });
        match found {
            Ok(Ok(e)) => Some(El { b: self, e }),
            Ok(Err(e)) if e.is_no_such_element() => None,
            Ok(Err(e)) => panic!("browser: find {selector:?}: {e}"),
            Err(_) => panic!("browser: find {selector:?}: no answer within {CALL_TIMEOUT:?}"),
        }
    }

    /// The first element matching the CSS `selector`; panics if there is none.
    #[track_caller]
    pub fn find(&self, selector: &str) -> El<'_> {
        self.try_find(selector)
            .unwrap_or_else(|| panic!("browser: no element matches {selector:?}"))
    }

    /// Every element matching the CSS `selector`, in document order.
    #[track_caller]
    pub fn find_all(&self, selector: &str) -> Vec<El<'_>> {
        self.run(
            &format!("find all {selector:?}"),
            self.client().find_all(Locator::Css(selector)),
        )
        .into_iter()
        .map(|e| El { b: self, e })
        .collect()
    }

    /// The rendered text of every element matching `selector`, in document order, read in one
    /// step in the page: a re-render between finding and reading cannot leave a stale element.
    #[track_caller]
    pub fn texts(&self, selector: &str) -> Vec<String> {
        let v = self.execute(
            "return [...document.querySelectorAll(arguments[0])].map((e) => e.innerText);",
            vec![json!(selector)],
        );
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The rendered text of the first element matching `selector`, read like [`Browser::texts`].
    #[track_caller]
    pub fn text_of(&self, selector: &str) -> Option<String> {
        self.texts(selector).into_iter().next()
    }

    /// Attribute `name` of the first element matching `selector` (None if there is no such
    /// element or attribute), read in one step in the page like [`Browser::texts`].
    #[track_caller]
    pub fn attr_of(&self, selector: &str, name: &str) -> Option<String> {
        let v = self.execute(
            "const e = document.querySelector(arguments[0]);
             return e ? e.getAttribute(arguments[1]) : null;",
            vec![json!(selector), json!(name)],
        );
        v.as_str().map(String::from)
    }

    /// The first element matching `selector` whose visible text contains `text`.
    #[track_caller]
    pub fn try_find_text(&self, selector: &str, text: &str) -> Option<El<'_>> {
        self.find_all(selector)
            .into_iter()
            .find(|e| e.text().contains(text))
    }

    /// [`Browser::try_find_text`]; panics if there is none.
    #[track_caller]
    pub fn find_text(&self, selector: &str, text: &str) -> El<'_> {
        self.try_find_text(selector, text)
            .unwrap_or_else(|| panic!("browser: no {selector:?} element shows {text:?}"))
    }

    /// The first element matching `selector` whose attribute `name` is `value`.
    #[track_caller]
    pub fn find_attr(&self, selector: &str, name: &str, value: &str) -> El<'_> {
        self.find_all(selector)
            .into_iter()
            .find(|e| e.attr(name).as_deref() == Some(value))
            .unwrap_or_else(|| panic!("browser: no {selector:?} element with {name}={value:?}"))
    }

    /// Clicks the first element matching `selector`.
    #[track_caller]
    pub fn click(&self, selector: &str) {
        self.find(selector).click();
    }

    /// Waits until an element matches `selector` (up to `timeout`) and returns it.
    #[track_caller]
    pub fn wait_for_css(&self, selector: &str, timeout: Duration) -> El<'_> {
        let mut found = None;
        self.wait_until(&format!("an element {selector:?}"), timeout, |b| {
            found = b.try_find(selector).map(|e| e.e);
            found.is_some()
        });
        El {
            b: self,
            e: found.expect("found"),
        }
    }

    /// Waits until the JavaScript expression `condition` is truthy in the page.
    #[track_caller]
    pub fn wait_until_js(&self, condition: &str, timeout: Duration) {
        let script = format!("return !!({condition});");
        self.wait_until(condition, timeout, |b| {
            b.execute(&script, vec![]).as_bool() == Some(true)
        });
    }

    /// Waits until `f` says yes, looking every 50 ms; panics after `timeout` naming `what`.
    #[track_caller]
    pub fn wait_until(&self, what: &str, timeout: Duration, mut f: impl FnMut(&Browser) -> bool) {
        if poll(POLL, timeout, || f(self).then_some(())).is_none() {
            panic!(
                "browser: timed out after {timeout:?} waiting for {what}; the page said:\n{}",
                self.page_text()
            );
        }
    }

    /// What the page shows (the open tab's panel, else the whole body), shortened, for a
    /// failure's message; never panics.
    fn page_text(&self) -> String {
        const SCRIPT: &str = "const p = document.querySelector('#panel');\
            return String((p && p.innerText) || document.body.innerText).slice(0, 3000);";
        let text = self.rt.block_on(async {
            tokio::time::timeout(CALL_TIMEOUT, self.client().execute(SCRIPT, vec![])).await
        });
        match text {
            Ok(Ok(Value::String(s))) => s,
            Ok(Ok(other)) => other.to_string(),
            Ok(Err(e)) => format!("(could not read the page: {e})"),
            Err(_) => format!("(no answer within {CALL_TIMEOUT:?})"),
        }
    }

    /// Every browser console entry since the session started.
    #[track_caller]
    pub fn console_logs(&self) -> Vec<LogEntry> {
        let fresh = self.run(
            "read the browser log",
            self.client().issue_cmd(SessionCommand {
                path: "se/log",
                body: json!({"type": "browser"}),
            }),
        );
        let fresh: Vec<LogEntry> = serde_json::from_value(fresh.clone())
            .unwrap_or_else(|e| panic!("browser: the log is not a list of entries ({e}): {fresh}"));
        let mut all = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        all.extend(fresh);
        all.clone()
    }

    /// A Chrome DevTools Protocol command (`Emulation.*`, `Network.*`, ...): its result.
    #[track_caller]
    pub fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.run(
            &format!("CDP {cmd}"),
            self.client().issue_cmd(SessionCommand {
                path: "goog/cdp/execute",
                body: json!({"cmd": cmd, "params": params}),
            }),
        )
    }

    /// Emulates `prefers-color-scheme: dark` (or light).
    #[track_caller]
    pub fn set_dark(&self, dark: bool) {
        let scheme = if dark { "dark" } else { "light" };
        self.cdp(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": scheme}]}),
        );
    }

    /// Resizes the window (outer size, in CSS pixels).
    #[track_caller]
    pub fn resize(&self, width: u32, height: u32) {
        self.run(
            &format!("resize to {width}x{height}"),
            self.client().set_window_size(width, height),
        );
    }

    /// Saves a PNG of the viewport to `path`; a relative path is under [`screenshots_dir`].
    /// Returns where it went.
    #[track_caller]
    pub fn screenshot(&self, path: impl AsRef<Path>) -> PathBuf {
        let path = screenshots_dir().join(path);
        let png = self.run("take a screenshot", self.client().screenshot());
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot directory");
        }
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }

    /// Closes the current window, as its close button does.
    #[track_caller]
    pub fn close_window(&self) {
        self.run("close the window", self.client().close_window());
    }

    /// The WebDriver server's PID (the browser it started runs under it).
    pub fn driver_pid(&self) -> u32 {
        self.driver.id()
    }

    /// The cookies the browser holds for the current page (fantoccini's `cookie::Cookie`s).
    #[track_caller]
    pub fn cookies(&self) -> Vec<fantoccini::cookies::Cookie<'static>> {
        self.run("read the cookies", self.client().get_all_cookies())
    }
}

/// Polls chromedriver's `/status` until it says ready; false if it exited or never did.
fn wait_status(rt: &tokio::runtime::Runtime, child: &mut Child, port: u16) -> bool {
    let url = format!("http://127.0.0.1:{port}/status");
    let http = http::client_with_timeout(Duration::from_secs(2));
    poll(POLL, Duration::from_secs(20), || {
        if !matches!(child.try_wait(), Ok(None)) {
            return Some(false);
        }
        let ready = rt.block_on(async {
            match http.get(&url).send().await {
                Ok(r) => r.json::<Value>().await.ok(),
                Err(_) => None,
            }
        });
        ready
            .is_some_and(|v| v["value"]["ready"] == true)
            .then_some(true)
    })
    .unwrap_or(false)
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Ends Chromium cleanly; killing the tree below covers a driver that hangs.
            let _ = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), client.close()).await
            });
        }
        kill_tree(self.driver.id());
        let _ = self.driver.wait();
    }
}

/// One element of the page (valid while its page is).
pub struct El<'b> {
    b: &'b Browser,
    e: Element,
}

impl El<'_> {
    /// Its rendered text.
    #[track_caller]
    pub fn text(&self) -> String {
        self.b.run("read an element's text", self.e.text())
    }

    /// One of its attributes.
    #[track_caller]
    pub fn attr(&self, name: &str) -> Option<String> {
        self.b
            .run(&format!("read attribute {name}"), self.e.attr(name))
    }

    /// A computed style property (`color`, `background-color`, ...).
    #[track_caller]
    pub fn css(&self, property: &str) -> String {
        self.b.run(
            &format!("read style {property}"),
            self.e.css_value(property),
        )
    }

    #[track_caller]
    pub fn is_displayed(&self) -> bool {
        self.b.run("ask if shown", self.e.is_displayed())
    }

    #[track_caller]
    pub fn click(&self) {
        self.b.run("click", self.e.click());
    }

    /// The fantoccini element, for anything not wrapped here (async).
    pub fn element(&self) -> &Element {
        &self.e
    }
}
