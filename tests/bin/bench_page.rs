//! Benchmark: the dashboard page in headless Chromium (chromedriver), against the app running
//! in-process with N fake Serena instances (tests/fake-serena, scoped to this run). Prints
//! measured figures as medians and p90 over many runs, never asserts:
//! - page load: from navigation start to the first data rendered (the page's
//!   `serena-tray-ready` mark: tabs for every instance), and to `DOMContentLoaded`;
//! - death to red: from SIGKILL of an instance to its tab turning red in the page (clock of this
//!   machine on both sides, milliseconds).
//!
//! Usage: cargo run --release --example bench-page [-- INSTANCES RUNS]
//! (defaults: 10 instances, 20 page loads, 10 deaths).

#[path = "../common/mod.rs"]
mod common;

use common::browser::Browser;
use common::*;
use serde_json::json;
use serena_tray::core::app::{App, Started};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const WAIT: Duration = Duration::from_secs(30);
/// The zombie grace of this run: an orphan turns red this long after its client died.
const GRACE_MS: f64 = 1000.0;

/// Records in the page when the tab of `pid` turns red (`window.__seen.red`) or goes
/// (`window.__seen.gone`), on this machine's clock.
fn watch_tab(b: &Browser, pid: u32) {
    b.execute(
        "window.__seen = {};
         const pid = String(arguments[0]);
         const look = () => {
           const t = document.querySelector(`[role=tab][data-pid='${pid}']`);
           if (!t && !window.__seen.gone) window.__seen.gone = Date.now();
           if (t && t.dataset.colour === 'red' && !window.__seen.red) window.__seen.red = Date.now();
         };
         new MutationObserver(look).observe(document.getElementById('tabs'),
           { subtree: true, attributes: true, childList: true });",
        vec![json!(pid)],
    );
}

/// Milliseconds from `since` to what `watch_tab` saw as `what`.
fn seen_after(b: &Browser, what: &str, since: f64) -> f64 {
    let script = format!("return window.__seen.{what} || null");
    b.wait_until(&format!("the tab to be {what}"), WAIT, |b| {
        !b.execute(&script, vec![]).is_null()
    });
    b.execute(&script, vec![]).as_f64().unwrap_or(f64::NAN) - since
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

fn live_tabs(b: &Browser) -> usize {
    b.execute(
        "return document.querySelectorAll('[role=tab][data-colour=green], [role=tab][data-colour=yellow]').length",
        vec![],
    )
    .as_u64()
    .unwrap_or(0) as usize
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(10).max(1);
    let runs = args.get(1).copied().unwrap_or(20).max(1);
    let deaths = runs.div_ceil(2);
    let Some(b) = Browser::start() else {
        eprintln!("bench-page needs chromium and chromedriver");
        std::process::exit(1);
    };
    let home = Home::new();
    let mut reaper = Reaper::default();
    let mut fakes: Vec<u32> = (0..n)
        .map(|_| reaper.adopt(spawn_fake(&home, &[], &[])))
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut settings = home.settings();
    settings.tray.zombie_grace = Duration::from_secs_f64(GRACE_MS / 1000.0);
    let app = match rt.block_on(App::start(settings)) {
        Ok(Started::Running(app)) => app,
        Ok(Started::AlreadyRunning { url }) => panic!("port taken by {url}"),
        Err(e) => panic!("start: {e}"),
    };
    b.goto(&app.login_url());
    b.wait_until("every instance in the page", WAIT, |b| live_tabs(b) == n);

    let mut ready = Vec::new();
    let mut dom = Vec::new();
    for _ in 0..runs {
        b.goto(&app.url());
        b.wait_until("the page to render every instance", WAIT, |b| {
            b.execute(
                "return document.documentElement.dataset.ready == '1'",
                vec![],
            ) == json!(true)
                && live_tabs(b) == n
        });
        let t = b.execute(
            "const nav = performance.getEntriesByType('navigation')[0];
             const mark = performance.getEntriesByName('serena-tray-ready')[0];
             return [mark ? mark.startTime : null, nav.domContentLoadedEventEnd];",
            vec![],
        );
        ready.extend(t[0].as_f64());
        dom.extend(t[1].as_f64());
    }

    // An instance exits: its tab goes. A client exits and leaves its Serena behind: after the
    // grace, the orphan's tab turns red.
    let mut gone = Vec::new();
    let mut to_red = Vec::new();
    for _ in 0..deaths {
        let pid = fakes.remove(0);
        watch_tab(&b, pid);
        let killed = now_ms();
        kill_tree(pid);
        gone.push(seen_after(&b, "gone", killed));
        let (client, orphan) = spawn_fake_client(&home, &mut reaper);
        b.wait_until("the client's Serena in the page", WAIT, |b| {
            live_tabs(b) == n
        });
        watch_tab(&b, orphan);
        let killed = now_ms();
        kill_one(client);
        to_red.push(seen_after(&b, "red", killed) - GRACE_MS);
        rt.block_on(app.core().kill_zombies());
        fakes.push(reaper.adopt(spawn_fake(&home, &[], &[])));
        b.wait_until("the replacement in the page", WAIT, |b| {
            live_tabs(b) == n
                && b.execute(
                    "return document.querySelectorAll('[role=tab][data-colour=red]').length",
                    vec![],
                ) == 0
        });
    }
    rt.block_on(app.shutdown());

    println!("dashboard page in headless Chromium, {n} instances (ms)");
    println!(
        "{:<50} {:>8} {:>8} {:>5}",
        "measure", "median", "p90", "runs"
    );
    for (what, v) in [
        ("page load: navigation to first data rendered", ready),
        ("page load: navigation to DOMContentLoaded", dom),
        ("instance exit (SIGKILL) to its tab gone", gone),
        ("client exit to the orphan's tab red, past grace", to_red),
    ] {
        let runs = v.len();
        println!(
            "{what:<50} {:>8.1} {:>8.1} {runs:>5}",
            median(v.clone()),
            p90(v)
        );
    }
}
