//! The phases on a desktop: the dashboard page in headless Chromium (`ui`), and the tray app on
//! an X server of its own (`tray-app`). Both run the release binary as a process of its own, like
//! the other phases, against fake Serena instances.
//!
//! - `ui_first_paint_ms_50`: the daemon with 50 live instances; the dashboard loaded in
//!   headless Chromium (signed in; the sign-in load itself not counted), from navigation start
//!   to the first frame painted with 50 labelled tabs. A script the benchmark adds to every
//!   document (before the page's own) sees the tabs in the DOM and marks the end of the next
//!   frame (`requestAnimationFrame`, then a task). Median over the loads; the p95, the page's own
//!   `serena-tray-ready` mark (the first snapshot rendered into the DOM) and DOMContentLoaded
//!   in the note.
//! - `ui_red_tab_p95_ms`: on that page, a client SIGKILLed and its Serena orphaned: to the first
//!   frame painted with the orphan's tab red, less the zombie grace; p95 over rounds. The note
//!   gives the daemon's own `state_changed` to zombie (on `/api/events`, past the grace), so
//!   that what the page adds shows. Each orphan is killed through the API before the next round.
//! - `tray_app_pss_mb_window_closed`: the tray app (`serena-tray --minimized`, which becomes
//!   `serena-tray-app`) on Xvfb with a tray host and a notification server of the benchmark's
//!   own, 20 live instances in its menu, after its dashboard window was opened
//!   (`POST /api/window`, the page loaded) and closed again (`WM_DELETE_WINDOW`, the window
//!   process and WebKit's gone): PSS summed over the app and every process under it, the
//!   median of a few samples. The note gives the RSS and USS sums, each process's PSS, and the
//!   same PSS sum before the window was first opened and while it was open.

use crate::common::browser::Browser;
use crate::common::desktop::{Desktop, NotificationServer, TrayApp, Watcher};
use crate::common::*;
use crate::{graceful_daemon, live_count, memory_mib, p95, progress};
use crate::{Config, Metric, GRACE};
use serde_json::{json, Value};
use serena_tray::core::procs::Snapshot;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long the page, the app or its window may take to show what is waited for.
const WAIT: Duration = Duration::from_secs(60);

/// Live tabs in the page: green or yellow.
const LIVE_TABS: &str = "document.querySelectorAll(\
    '#tabs [role=tab][data-colour=green], #tabs [role=tab][data-colour=yellow]').length";

/// Added to every document before the page's own scripts, called with the number of tabs
/// wanted: once that many are in the DOM, each labelled, the mark `bench-painted` at the end of
/// the next frame (a `requestAnimationFrame` callback runs just before the frame is painted; a
/// task posted from it runs after).
const PAINTED_SCRIPT: &str = "(want) => {
  const seen = new MutationObserver(() => {
    const tabs = document.querySelectorAll('#tabs [role=tab]');
    if (tabs.length < want) return;
    for (const t of tabs) if (!t.querySelector('.tab-label')?.textContent) return;
    seen.disconnect();
    requestAnimationFrame(() => setTimeout(() => performance.mark('bench-painted')));
  });
  seen.observe(document, { subtree: true, childList: true, characterData: true });
}";

/// Records in the page (`window.__red`, this machine's clock in ms) the end of the first frame
/// painted with the tab of `arguments[0]` red.
const WATCH_RED_SCRIPT: &str = "window.__red = null;
const pid = String(arguments[0]);
const tabs = document.getElementById('tabs');
const look = new MutationObserver(() => {
  const t = tabs.querySelector(`[role=tab][data-pid='${pid}']`);
  if (!t || t.dataset.colour !== 'red') return;
  look.disconnect();
  requestAnimationFrame(() => setTimeout(() => { window.__red = Date.now(); }));
});
look.observe(tabs, { subtree: true, attributes: true, childList: true });";

/// This machine's clock in ms since the epoch, as the page's `Date.now()` reads it.
fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// The colour of `pid`'s tab in the page (`green`, `yellow`, `red`, `grey`); `None`: no tab.
fn tab_colour(b: &Browser, pid: u32) -> Option<String> {
    b.execute(
        "return document.querySelector(`#tabs [role=tab][data-pid='${arguments[0]}']`)\
           ?.dataset.colour ?? null",
        vec![json!(pid)],
    )
    .as_str()
    .map(str::to_owned)
}

/// A number the JavaScript expression `expr` gives in the page (0 if it is not one).
fn count(b: &Browser, expr: &str) -> u64 {
    b.execute(&format!("return {expr}"), vec![])
        .as_u64()
        .unwrap_or(0)
}

/// `ui_first_paint_ms_50`, `ui_red_tab_p95_ms`.
pub(crate) fn ui_phase(cfg: &Config, out: &mut Vec<Metric>) {
    let n = 50;
    let (loads, rounds) = (cfg.runs(30, 8), cfg.runs(20, 6));
    progress(&format!(
        "ui: the dashboard in headless Chromium with {n} instances, {loads} loads, \
         {rounds} orphans (grace {GRACE} s)"
    ));
    let Some(b) = Browser::start() else {
        progress("ui: skipped (no Chromium or chromedriver)");
        return;
    };
    let home = Home::new();
    let mut reaper = Reaper::default();
    for _ in 0..n {
        reaper.adopt(spawn_fake(&home, &[], &[]));
    }
    let d = graceful_daemon(&home);
    wait_for(
        "the daemon to see them live",
        Duration::from_secs(120),
        || (live_count(&d) >= n).then_some(()),
    );
    b.cdp(
        "Page.addScriptToEvaluateOnNewDocument",
        json!({ "source": format!("({PAINTED_SCRIPT})({n});") }),
    );
    // Signs in (the token becomes a cookie) and warms the browser's cache; not counted.
    b.goto(&d.url(&format!("/?token={}", d.token)));
    b.wait_until("every instance in the page", WAIT, |b| {
        count(b, LIVE_TABS) == n as u64
    });

    let (mut painted, mut ready, mut dom) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..loads {
        b.goto(&d.url("/"));
        b.wait_until("the page to paint every instance", WAIT, |b| {
            count(b, "performance.getEntriesByName('bench-painted').length") > 0
        });
        let t = b.execute(
            "const mark = (name) => performance.getEntriesByName(name)[0]?.startTime ?? null;
             const dom = performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd;
             return [mark('bench-painted'), mark('serena-tray-ready'), dom];",
            vec![],
        );
        painted.extend(t[0].as_f64());
        ready.extend(t[1].as_f64());
        dom.extend(t[2].as_f64());
    }
    out.push(
        Metric::new(
            format!("ui_first_paint_ms_{n}"),
            median(painted.clone()),
            "ms",
            painted.len(),
        )
        .goal(500.0)
        .note(format!(
            "median {:.0} ms, p95 {:.0} ms; the page's serena-tray-ready {:.0} ms, \
             DOMContentLoaded {:.0} ms (medians)",
            median(painted.clone()),
            p95(painted),
            median(ready),
            median(dom)
        )),
    );

    // A client dies and leaves its Serena behind: after the grace, the orphan's tab turns red.
    let rx = events(&d);
    let past_grace = |ms: f64| ms - GRACE * 1000.0;
    let (mut to_red, mut to_event) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (client, orphan) = spawn_fake_client(&home, &mut reaper);
        b.wait_until("the client's Serena live in the page", WAIT, |b| {
            matches!(tab_colour(b, orphan).as_deref(), Some("green" | "yellow"))
        });
        // The daemon's exit watcher on the client armed (as in the orphan phase).
        std::thread::sleep(Duration::from_millis(200));
        b.execute(WATCH_RED_SCRIPT, vec![json!(orphan)]);
        let (killed, killed_ms) = (Instant::now(), now_ms());
        kill_one(client);
        let event = wait_event(&rx, WAIT, |v| {
            v["type"] == "state_changed"
                && v["pid"].as_u64() == Some(u64::from(orphan))
                && v["to"] == "zombie"
        });
        let mut red = Value::Null;
        b.wait_until("the orphan's tab red", WAIT, |b| {
            red = b.execute("return window.__red", vec![]);
            !red.is_null()
        });
        to_red.extend(red.as_f64().map(|at| past_grace(at - killed_ms)));
        let event_ms = event.map(|at| at.duration_since(killed).as_secs_f64() * 1000.0);
        to_event.extend(event_ms.map(past_grace));
        let (status, body) = d.call(
            "POST",
            &format!("/api/instances/{orphan}/kill"),
            Some(json!({})),
        );
        assert_eq!(status, 200, "kill the orphan: {body}");
        b.wait_until("the orphan's tab gone", WAIT, |b| {
            tab_colour(b, orphan).is_none()
        });
    }
    out.push(
        Metric::new("ui_red_tab_p95_ms", p95(to_red.clone()), "ms", to_red.len())
            .goal(300.0)
            .note(format!(
                "median {:.0} ms past the {GRACE} s grace; the daemon's state_changed: \
                 median {:.0} ms, p95 {:.0} ms",
                median(to_red),
                median(to_event.clone()),
                p95(to_event)
            )),
    );
}

/// A process of the app's tree: its PID and a short name (`serena-tray-app`,
/// `serena-tray-window`, `WebKitWebProcess`).
struct Proc {
    pid: u32,
    name: String,
}

/// The app and every process under it.
fn tree(app: u32) -> Vec<Proc> {
    let snap = Snapshot::capture(&mut sysinfo::System::new());
    let name = |p: &serena_tray::core::procs::Proc| {
        p.cmdline
            .first()
            .and_then(|c| c.rsplit('/').next())
            .unwrap_or(&p.name)
            .to_string()
    };
    let root = snap.get(app).map(|p| Proc {
        pid: app,
        name: name(p),
    });
    root.into_iter()
        .chain(snap.descendants(app).into_iter().map(|p| Proc {
            pid: p.pid,
            name: name(p),
        }))
        .collect()
}

/// Whether the window is up: its process, or WebKit's under it.
fn has_window(app: u32) -> bool {
    tree(app)
        .iter()
        .any(|p| p.name.ends_with(" window") || p.name.starts_with("WebKit"))
}

/// Whether a process under the app (the window's WebKit network process) holds an open
/// connection to the app's dashboard port: the page in the window has loaded and listens to
/// `/api/events`.
fn page_connected(app: u32, port: u16) -> bool {
    // `/proc/net/tcp{,6}`: `sl local remote st ... inode`, addresses as `HEXIP:HEXPORT`, state 01
    // established.
    let inodes: Vec<u64> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|row| {
                    let f: Vec<&str> = row.split_whitespace().collect();
                    let (_, remote_port) = f.get(2)?.rsplit_once(':')?;
                    let to_us = u16::from_str_radix(remote_port, 16).ok()? == port;
                    if !to_us || *f.get(3)? != "01" {
                        return None;
                    }
                    f.get(9)?.parse().ok()
                })
                .collect::<Vec<u64>>()
        })
        .collect();
    tree(app).iter().filter(|p| p.pid != app).any(|p| {
        inodes
            .iter()
            .any(|i| serena_tray::core::sockets::has_socket(p.pid, *i))
    })
}

/// The memory of the app's tree: medians over samples half a second apart of the (PSS, RSS,
/// USS) sums, MiB, and each process's PSS at the last sample.
struct TreeMemory {
    processes: usize,
    pss: f64,
    rss: f64,
    uss: f64,
    parts: String,
}

fn tree_memory(app: u32, samples: usize) -> TreeMemory {
    let (mut pss, mut rss, mut uss) = (Vec::new(), Vec::new(), Vec::new());
    let mut parts: Vec<String> = Vec::new();
    for i in 0..samples {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(500));
        }
        let each: Vec<(String, (f64, f64, f64))> = tree(app)
            .into_iter()
            .map(|p| (p.name, memory_mib(p.pid)))
            .collect();
        pss.push(each.iter().map(|(_, m)| m.0).sum());
        rss.push(each.iter().map(|(_, m)| m.1).sum());
        uss.push(each.iter().map(|(_, m)| m.2).sum());
        parts = each
            .iter()
            .map(|(name, m)| format!("{name} {:.1}", m.0))
            .collect();
    }
    TreeMemory {
        processes: parts.len(),
        pss: median(pss),
        rss: median(rss),
        uss: median(uss),
        parts: parts.join(", "),
    }
}

/// `tray_app_pss_mb_window_closed`.
pub(crate) fn tray_app_phase(cfg: &Config, out: &mut Vec<Metric>) {
    let n = 20;
    let samples = cfg.runs(10, 4);
    progress(&format!(
        "tray app on Xvfb with {n} instances: its memory before, with and after its window"
    ));
    // Dropped in reverse: the app and the fakes first, the desktop last.
    let desktop = Desktop::start();
    let watcher = Watcher::start(&desktop);
    let _notifications = NotificationServer::start(&desktop);
    let home = Home::new();
    let mut reaper = Reaper::default();
    for _ in 0..n {
        reaper.adopt(spawn_fake(&home, &[], &[]));
    }
    let TrayApp {
        pid: app,
        port,
        api,
        ..
    } = TrayApp::start(
        &tray_exe(),
        &home,
        &desktop,
        &watcher,
        &mut reaper,
        n,
        &[],
        WAIT,
    );
    // Its start-up done: the first refreshes and the menu built.
    std::thread::sleep(Duration::from_secs(2));
    let never = tree_memory(app, samples);

    let (status, body) = api.call("POST", "/api/window", Some(json!({})));
    assert_eq!(status, 200, "open the window: {body}");
    wait_for("the page loaded in the window", WAIT, || {
        page_connected(app, port).then_some(())
    });
    // The page's first round of data come and gone.
    std::thread::sleep(Duration::from_secs(3));
    let open = tree_memory(app, samples);

    wait_for("the window to close", WAIT, || {
        Some(desktop.close_windows("Serena Tray")).filter(|n| *n > 0)
    });
    wait_for("the window's processes to go", WAIT, || {
        (!has_window(app)).then_some(())
    });
    // What the app frees once the window is gone, freed.
    std::thread::sleep(Duration::from_secs(2));
    let closed = tree_memory(app, samples);
    out.push(
        Metric::new("tray_app_pss_mb_window_closed", closed.pss, "MiB", samples)
            .goal(50.0)
            .note(format!(
                "RSS {:.1} MiB, USS {:.1} MiB ({}); PSS before the window {:.1} MiB, \
                 with it open {:.1} MiB ({} processes: {})",
                closed.rss,
                closed.uss,
                closed.parts,
                never.pss,
                open.pss,
                open.processes,
                open.parts
            )),
    );
}
