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
//!   median of a few samples half a second apart. The note gives the RSS and USS sums, each
//!   process's PSS and RSS, and the same PSS sum before the window was first opened and while
//!   it was open.
//! - `tray_app_rss_mb_window_{never_opened,open,closed}`: the same app's RSS summed over its
//!   processes (the window process and WebKit's web and network processes while it is open),
//!   medians, at the same three moments; the note gives the private dirty part (heap and what
//!   it wrote, no library or file pages) and each process's PSS and RSS.
//! - `tray_app_idle_cpu_pct_{never_opened,window_open}`: the CPU of those processes over an idle
//!   window (`/proc/PID/stat`, 10 ms ticks), in % of one core: before the window was first
//!   opened, and with it open (at most 30 s).
//! - `tray_app_zombie_{notified,icon_red}_ms`: a client SIGKILLed and its Serena orphaned: to the
//!   desktop notification that it became a zombie, and to the tray icon turning red, less the
//!   zombie grace; medians over rounds, the p90 in the note. The icon is looked at every 2 ms
//!   (a D-Bus property read); each orphan is killed through the API before the next round.

use crate::common::browser::Browser;
use crate::common::desktop::{
    has_window, window_process, Desktop, NotificationServer, TrayApp, Watcher,
};
use crate::common::*;
use crate::{graceful_daemon, live_count, progress};
use crate::{Config, Metric, GRACE};
use serde_json::{json, Value};
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

/// Whether a process under the app (the window's WebKit network process) holds an open
/// connection to the app's dashboard port: the page in the window has loaded and listens to
/// `/api/events`.
fn page_connected(app: u32, port: u16) -> bool {
    let to_app: Vec<u64> = sockets::tcp_rows()
        .iter()
        .filter(|r| r.remote.port() == port && r.state == sockets::ESTABLISHED)
        .map(|r| r.inode)
        .collect();
    descendants(app).into_iter().any(|pid| {
        to_app
            .iter()
            .any(|inode| serena_tray::core::sockets::has_socket(pid, *inode))
    })
}

/// The memory of the app's tree: medians over samples half a second apart of the sums (PSS,
/// RSS, USS, private dirty), MiB, and each process's PSS and RSS at the last sample.
struct TreeMemory {
    processes: usize,
    pss: f64,
    rss: f64,
    uss: f64,
    dirty: f64,
    parts: String,
}

fn tree_memory(app: u32, samples: usize) -> TreeMemory {
    let (mut pss, mut rss, mut uss, mut dirty) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut parts: Vec<String> = Vec::new();
    for i in 0..samples {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(500));
        }
        let each: Vec<(String, (f64, f64, f64), f64)> = tree_procs(app)
            .iter()
            .map(|p| {
                let private_dirty = proc_kib(p.pid, "smaps_rollup", "Private_Dirty");
                (
                    short_name(p),
                    memory_mib(p.pid),
                    private_dirty as f64 / 1024.0,
                )
            })
            .collect();
        pss.push(each.iter().map(|(_, m, _)| m.0).sum());
        rss.push(each.iter().map(|(_, m, _)| m.1).sum());
        uss.push(each.iter().map(|(_, m, _)| m.2).sum());
        dirty.push(each.iter().map(|(_, _, d)| d).sum());
        parts = each
            .iter()
            .map(|(name, m, _)| format!("{name} {:.1}/{:.1}", m.0, m.1))
            .collect();
    }
    TreeMemory {
        processes: parts.len(),
        pss: median(pss),
        rss: median(rss),
        uss: median(uss),
        dirty: median(dirty),
        parts: parts.join(", "),
    }
}

/// The CPU the app's processes (those running at the start) use over `window` of idling, in %
/// of one core.
fn idle_cpu(app: u32, window: Duration) -> f64 {
    let pids = tree(app);
    let used = || pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>();
    let before = used();
    let start = Instant::now();
    std::thread::sleep(window);
    100.0 * (used() - before) / start.elapsed().as_secs_f64()
}

/// The `tray_app_*` rows.
pub(crate) fn tray_app_phase(cfg: &Config, out: &mut Vec<Metric>) {
    let n = 20;
    let samples = cfg.runs(10, 4);
    let rounds = cfg.runs(10, 4);
    let (idle, idle_open) = (cfg.window(), cfg.window().min(Duration::from_secs(30)));
    progress(&format!(
        "tray app on Xvfb with {n} instances: its memory before, with and after its window, \
         its CPU over {} s idle and {} s with the window open, {rounds} zombies notified \
         (grace {GRACE} s)",
        idle.as_secs(),
        idle_open.as_secs()
    ));
    // Dropped in reverse: the app and the fakes first, the desktop last.
    let desktop = Desktop::start();
    let watcher = Watcher::start(&desktop);
    let notifications = NotificationServer::start(&desktop);
    let home = Home::new();
    let mut reaper = Reaper::default();
    for _ in 0..n {
        reaper.adopt(spawn_fake(&home, &[], &[]));
    }
    let grace = GRACE.to_string();
    let TrayApp {
        pid: app,
        port,
        api,
        item,
    } = TrayApp::start(
        &tray_exe(),
        &home,
        &desktop,
        &watcher,
        &mut reaper,
        n,
        &["--zombie-grace", &grace],
        WAIT,
    );
    // Its start-up done: the first refreshes and the menu built.
    std::thread::sleep(Duration::from_secs(2));
    let never = tree_memory(app, samples);
    let cpu_never = idle_cpu(app, idle);

    let (status, body) = api.call("POST", "/api/window", Some(json!({})));
    assert_eq!(status, 200, "open the window: {body}");
    wait_for("the page loaded in the window", WAIT, || {
        page_connected(app, port).then_some(())
    });
    // The page's first round of data come and gone.
    std::thread::sleep(Duration::from_secs(3));
    let open = tree_memory(app, samples);
    let cpu_open = idle_cpu(app, idle_open);

    wait_for("the window to close", WAIT, || {
        Some(desktop.close_windows("Serena Tray")).filter(|n| *n > 0)
    });
    wait_for("the window's processes to go", WAIT, || {
        (window_process(app).is_none() && !has_window(app)).then_some(())
    });
    // What the app frees once the window is gone, freed.
    std::thread::sleep(Duration::from_secs(2));
    let closed = tree_memory(app, samples);

    // A client exits and leaves its Serena behind: the notification, and the icon turning red.
    let (mut to_notify, mut to_red) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (client, orphan) = spawn_fake_client(&home, &mut reaper);
        let label = format!("{orphan} - NO PROJECT");
        wait_for("the client's Serena in the tray menu", WAIT, || {
            watcher.menu(&item).find(&format!("◐ {label}")).map(|_| ())
        });
        let icon = watcher.icon_file(&item);
        let seen = notifications.received().len();
        let died = Instant::now();
        kill_one(client);
        let red = wait_for_every(Duration::from_millis(2), "the icon to change", WAIT, || {
            (watcher.icon_file(&item) != icon).then(Instant::now)
        });
        assert_eq!(watcher.icon_colour(&item), "red");
        let notified = wait_for("the notification", WAIT, || {
            notifications
                .received()
                .get(seen)
                .filter(|x| x.body.contains(&label))
                .map(|x| x.at)
        });
        let past_grace = |t: Instant| (t - died).as_secs_f64() * 1000.0 - GRACE * 1000.0;
        to_red.push(past_grace(red));
        to_notify.push(past_grace(notified));
        let (status, body) = api.call(
            "POST",
            &format!("/api/instances/{orphan}/kill"),
            Some(json!({})),
        );
        assert_eq!(status, 200, "kill the orphan: {body}");
        wait_for("the icon back from red", WAIT, || {
            (watcher.icon_colour(&item) != "red").then_some(())
        });
    }

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
    for (moment, m) in [
        ("never_opened", &never),
        ("open", &open),
        ("closed", &closed),
    ] {
        out.push(
            Metric::new(
                format!("tray_app_rss_mb_window_{moment}"),
                m.rss,
                "MiB",
                samples,
            )
            .note(format!(
                "private dirty {:.1} MiB; PSS/RSS of each: {}",
                m.dirty, m.parts
            )),
        );
    }
    out.push(
        Metric::new("tray_app_idle_cpu_pct_never_opened", cpu_never, "%", 1).note(format!(
            "over {} s; processes: {}",
            idle.as_secs(),
            never.processes
        )),
    );
    out.push(
        Metric::new("tray_app_idle_cpu_pct_window_open", cpu_open, "%", 1).note(format!(
            "over {} s; processes: {}",
            idle_open.as_secs(),
            open.processes
        )),
    );
    for (what, v) in [("notified", to_notify), ("icon_red", to_red)] {
        out.push(
            Metric::new(
                format!("tray_app_zombie_{what}_ms"),
                median(v.clone()),
                "ms",
                v.len(),
            )
            .note(format!(
                "median past the {GRACE} s grace; p90 {:.1} ms",
                p90(v)
            )),
        );
    }
}
