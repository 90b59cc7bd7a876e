//! The web page in real headless Chromium (chromedriver, tests/common/browser.rs) against a real
//! `serena-tray daemon` whose discovery sees only what the test starts: the token flow (without
//! the token the page's API calls are refused; `/?token=` sets an HttpOnly SameSite=Strict
//! cookie, leaves the address bar clean, and the API answers the page), and the page loads and
//! runs under the strict CSP without a single violation (checked to be detectable), and the
//! page's `el()` sets `href` and `src` only to http(s) or relative URLs, saying so in the console
//! when it refuses one. Screenshots go to target/screenshots/. Without chromedriver or Chromium:
//! skipped, failed under CI.
//!
//! These tests do not depend on what the page shows; they wait for `data-ready="1"` on `<html>`,
//! which the page sets once its first data has rendered.

mod common;

use common::browser::{screenshots_dir, Browser};
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

/// How long the page may take to load and render its first data.
const PAGE: Duration = Duration::from_secs(30);

/// The headers of a GET without the token.
fn headers(url: &str) -> reqwest::header::HeaderMap {
    block_on(async {
        http::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client")
            .get(url)
            .send()
            .await
            .expect("GET")
            .headers()
            .clone()
    })
}

fn wait_ready(b: &Browser) {
    b.wait_until_js("document.readyState == 'complete'", PAGE);
    b.wait_until_js("document.documentElement.dataset.ready == '1'", PAGE);
}

#[test]
fn the_token_flow_sets_an_http_only_cookie_and_keeps_the_token_out_of_the_address_bar() {
    let Some(b) = Browser::start() else { return };
    let home = Home::new();
    let mut reaper = Reaper::default();
    let fake = reaper.adopt(spawn_fake(&home, &[], &[]));
    let d = home.daemon();
    wait_for("the fake in the list", Duration::from_secs(20), || {
        let (_, list) = d.call("GET", "/api/instances", None);
        find_pid(list.as_array()?, fake)
    });

    // A fresh browser: the page loads (it is public), its API calls are refused.
    b.goto(&d.url("/"));
    b.wait_until_js("document.readyState == 'complete'", PAGE);
    let (status, body) = b.fetch("/api/instances");
    assert_eq!(status, 401, "{body:?}");
    assert_eq!(body["error"]["code"], "no_token");
    assert!(b.cookies().is_empty(), "no cookie before the login URL");

    // The login URL: the cookie is set and the browser ends on `/`, the token gone from view.
    b.goto(&d.url(&format!("/?token={}", d.token)));
    assert_eq!(b.current_url(), d.url("/"));
    let history = b.execute("return window.location.href", vec![]);
    assert!(!history.to_string().contains(&d.token), "{history}");
    let (status, list) = b.fetch("/api/instances");
    assert_eq!(status, 200, "{list:?}");
    assert!(
        find_pid(list.as_array().expect("a JSON list"), fake).is_some(),
        "the page sees the instance: {list:?}"
    );
    let script_sees = b.execute("return document.cookie", vec![]);
    assert!(
        !script_sees.to_string().contains(&d.token),
        "HttpOnly: scripts never see the token ({script_sees})"
    );
    let cookies = b.cookies();
    let cookie = cookies
        .iter()
        .find(|c| c.name() == "serena_tray_token")
        .unwrap_or_else(|| panic!("the token cookie: {cookies:?}"));
    assert_eq!(cookie.value(), d.token);
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");
    wait_ready(&b);

    // A wrong token is refused and changes nothing.
    b.goto(&d.url("/?token=wrong"));
    assert_eq!(b.fetch("/api/instances").0, 200, "the good cookie stays");
}

#[test]
fn the_page_runs_under_the_strict_csp_without_a_violation() {
    let Some(b) = Browser::start() else { return };
    let home = Home::new();
    let d = home.daemon();
    let h = headers(&d.url("/"));
    let csp = h
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert_eq!(
        csp,
        "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; \
         object-src 'none'"
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");

    b.goto(&d.url(&format!("/?token={}", d.token)));
    wait_ready(&b);
    // Let the page paint what it rendered (two animation frames), then read the console.
    b.execute_async(
        "const done = arguments[0]; requestAnimationFrame(() => requestAnimationFrame(done));",
        vec![],
    );
    let logs = b.console_logs();
    let violations: Vec<_> = logs
        .iter()
        .filter(|l| l.message.contains("Content Security Policy"))
        .collect();
    assert!(violations.is_empty(), "CSP violations: {violations:#?}");
    let uncaught: Vec<_> = logs
        .iter()
        .filter(|l| l.level == "SEVERE" && l.source == "javascript")
        .collect();
    assert!(uncaught.is_empty(), "uncaught errors: {uncaught:#?}");

    // Screenshots, light and dark (emulated), and at a narrow width.
    b.set_dark(false);
    b.wait_until_js("matchMedia('(prefers-color-scheme: light)').matches", PAGE);
    let light = b.screenshot("dashboard-light.png");
    b.set_dark(true);
    b.wait_until_js("matchMedia('(prefers-color-scheme: dark)').matches", PAGE);
    let dark = b.screenshot("dashboard-dark.png");
    b.resize(700, 800);
    b.wait_until_js("window.innerWidth <= 700", PAGE);
    let narrow = b.screenshot("dashboard-narrow-dark.png");
    for shot in [&light, &dark, &narrow] {
        assert!(shot.starts_with(screenshots_dir()));
        let png = std::fs::read(shot).expect("screenshot");
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{} is a PNG",
            shot.display()
        );
    }

    // The check above can fail: an inline script is refused, and the console says so.
    let ran = b.execute(
        "const s = document.createElement('script');
         s.textContent = 'window.inlineRan = true';
         document.body.append(s);
         return window.inlineRan === true;",
        vec![],
    );
    assert_eq!(ran, json!(false), "the CSP blocks inline scripts");
    b.wait_until("the violation in the console", PAGE, |b| {
        b.console_logs()
            .iter()
            .any(|l| l.message.contains("Content Security Policy"))
    });
    assert_eq!(
        b.execute("return typeof window.inlineRan", vec![]),
        Value::from("undefined")
    );
}

#[test]
fn el_sets_url_attributes_only_to_http_or_relative_urls() {
    let Some(b) = Browser::start() else { return };
    let home = Home::new();
    let d = home.daemon();
    b.goto(&d.url(&format!("/?token={}", d.token)));
    wait_ready(&b);

    let refused = [
        "javascript:alert(1)",
        " JavaScript:alert(1)",
        "java\tscript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "vbscript:msgbox(1)",
        "file:///etc/passwd",
    ];
    let kept = [
        "https://example.org/x",
        "http://127.0.0.1:9/dashboard/",
        "/api/health",
        "./icon.svg",
        "icon.svg",
        "?q=1",
        "#top",
    ];
    let values: Vec<&str> = refused.iter().chain(&kept).copied().collect();
    // The page's own module (already loaded: the same instance the page uses). Elements that
    // are never attached load nothing.
    let got = b.execute_async(
        "const [values, done] = arguments;
         import(new URL('/util.js', location.href).href).then(({ el }) => done(values.map((v) => [
           el('a', { href: v, text: 'a link' }).getAttribute('href'),
           el('iframe', { src: v }).getAttribute('src'),
         ])), (e) => done(`import failed: ${e}`));",
        vec![json!(values)],
    );
    let got = got
        .as_array()
        .unwrap_or_else(|| panic!("the page's el(): {got}"));
    assert_eq!(got.len(), values.len(), "{got:?}");
    for (value, pair) in values.iter().zip(got) {
        let expected = if refused.contains(value) {
            Value::Null
        } else {
            json!(value)
        };
        assert_eq!(pair, &json!([expected, expected]), "href and src {value:?}");
    }

    // Each refusal is in the console, naming the element, the attribute and the value.
    let refusals = |b: &Browser| -> Vec<String> {
        b.console_logs()
            .into_iter()
            .filter(|l| l.level == "WARNING" && l.message.contains("el(): refused"))
            .map(|l| l.message)
            .collect()
    };
    b.wait_until("the refusals in the console", PAGE, |b| {
        refusals(b).len() >= 2 * refused.len()
    });
    let logged = refusals(&b);
    assert_eq!(logged.len(), 2 * refused.len(), "{logged:#?}");
    assert!(
        logged
            .iter()
            .any(|m| m.contains("refused a href=") && m.contains("javascript:alert(1)")),
        "{logged:#?}"
    );
}
