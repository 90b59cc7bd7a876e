//! The page's view of sharing and sleep, in real headless Chromium against a real
//! `serena-tray daemon` whose Serena command is the fake Serena (tests/common/fake.rs) and whose
//! discovery sees only what each test starts:
//! - an asleep shared session (planted in `sessions.json` before the daemon starts, as the
//!   daemon keeps it) has a grey tab `asleep - <PROJECT>` with its reason, its clients and the
//!   memory it gave back, the header counts it and says what sleep saves, "Wake now" posts to
//!   `/api/sessions/{id}/wake` and the page follows the woken Serena's tab, "Stop" posts
//!   `/release-session` and the tab goes;
//! - two Serenas of one client on one project get a "same project" badge with the count and
//!   their summed memory, a shared session's Serena on that project does not, and "Share from
//!   now on" opens the Clients view on that client's configs with `--share` ticked (every config,
//!   saying so, when no config belongs to the clients behind).
//!
//! Screenshots go to target/screenshots/. Without chromedriver or Chromium: skipped, failed
//! under CI.

mod common;

use common::asleep::{asleep_record, attachment, bridge, epoch_now, plant_sessions};
use common::browser::{screenshots_dir, Browser};
use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// How long the page may take to show what the daemon knows.
const PAGE: Duration = Duration::from_secs(30);
const MIB: u64 = 1024 * 1024;

/// Run in every document before its own scripts: each POST the page makes is recorded in
/// `window.__posts` as `[path, body]`, then sent on unchanged.
const RECORD_POSTS: &str = r#"
window.__posts = [];
const realFetch = window.fetch;
window.fetch = function (input, init) {
  if ((init?.method ?? 'GET') === 'POST') {
    const url = new URL(input instanceof Request ? input.url : String(input), location.href);
    window.__posts.push([url.pathname, init.body ? JSON.parse(init.body) : null]);
  }
  return realFetch.call(this, input, init);
};
"#;

fn login(b: &Browser, d: &Daemon) {
    b.goto(&d.url(&format!("/?token={}", d.token)));
    b.wait_until_js("document.documentElement.dataset.ready == '1'", PAGE);
}

/// The fake Serena as the daemon's Serena command (sessions and wakes start it).
fn fake_serena_command(home: &Home) {
    home.tray_config(&common::fake::command_config(""));
}

fn project(home: &Home, name: &str) -> PathBuf {
    let dir = home.path().join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

/// `HH:MM` of the epoch `t` in the browser's local time (not the page's own formatting).
fn hh_mm(b: &Browser, t: f64) -> String {
    b.execute(
        "return new Date(arguments[0] * 1000).toTimeString().slice(0, 5)",
        vec![json!(t)],
    )
    .as_str()
    .expect("a time")
    .to_string()
}

/// The PID of the Serena of session `id` once it is awake.
fn woken_pid(d: &Daemon, id: &str) -> u64 {
    wait_for(&format!("session {id} to wake"), PAGE, || {
        let (_, list) = d.call("GET", "/api/sessions", None);
        list.as_array()?
            .iter()
            .find(|s| s["session_id"] == id && s["asleep_since"].is_null())?["pid"]
            .as_u64()
            .filter(|p| *p > 0)
    })
}

fn posts(b: &Browser) -> Vec<Value> {
    b.execute("return window.__posts", vec![])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn an_asleep_session_has_a_grey_tab_with_its_reason_clients_and_memory_and_wakes_or_stops() {
    let Some(b) = Browser::start() else { return };
    let home = Home::new();
    fake_serena_command(&home);
    let mut reaper = Reaper::default();
    let sleepy = project(&home, "sleepy");
    let fresh = project(&home, "fresh");
    let napper = project(&home, "napper");
    let (bridge1, bridge2, bridge3, bridge4) = (
        bridge(&home, &mut reaper),
        bridge(&home, &mut reaper),
        bridge(&home, &mut reaper),
        bridge(&home, &mut reaper),
    );
    let since = epoch_now() - 90.0;
    let given = 412 * MIB;
    let attached = since - 300.0;
    // It sleeps again 9 s after a wake.
    let mut nap = asleep_record(
        "napper1",
        &napper,
        "unused",
        since,
        None,
        vec![attachment(bridge4, "claude", attached)],
    );
    nap["sleep_minutes"] = json!(0.15);
    plant_sessions(
        &home,
        &[
            asleep_record(
                "sleepy1",
                &sleepy,
                "unused",
                since,
                Some(given),
                vec![
                    attachment(bridge1, "claude", attached),
                    attachment(bridge2, "cursor", attached),
                ],
            ),
            asleep_record(
                "fresh1",
                &fresh,
                "not_started",
                since,
                None,
                vec![attachment(bridge3, "codex", attached)],
            ),
            nap,
        ],
    );
    let d = home.daemon();
    b.cdp(
        "Page.addScriptToEvaluateOnNewDocument",
        json!({"source": RECORD_POSTS}),
    );
    login(&b, &d);

    // Two grey tabs named by their projects, counted in the header with what sleep saves.
    let sleepy_tab = "[role=tab][data-session='sleepy1']";
    let fresh_tab = "[role=tab][data-session='fresh1']";
    b.wait_for_css(sleepy_tab, PAGE);
    b.wait_for_css(fresh_tab, PAGE);
    for (tab, name) in [
        (sleepy_tab, "asleep - sleepy"),
        (fresh_tab, "asleep - fresh"),
    ] {
        assert_eq!(b.attr_of(tab, "data-colour").as_deref(), Some("grey"));
        assert_eq!(b.attr_of(tab, "data-state").as_deref(), Some("asleep"));
        assert_eq!(
            b.text_of(&format!("{tab} .tab-label")).as_deref(),
            Some(name)
        );
    }
    assert_eq!(b.find("[data-count=asleep]").text(), "3");
    // Two clients of a session that gave back 412 MB: 824 MB against a Serena each.
    assert_eq!(
        b.attr_of("#saved", "data-saved-bytes"),
        Some((2 * given).to_string())
    );
    assert_eq!(b.find("#saved").text(), "sharing and sleep save 824 MB");

    // Its tab: the reason, the clients, the memory given back.
    b.click(sleepy_tab);
    b.wait_until_js("location.hash == '#asleep-sleepy1'", PAGE);
    let at = hh_mm(&b, since);
    assert_eq!(
        b.find("#panel .asleep-reason").text(),
        format!("asleep since {at}, no call for 15 min")
    );
    assert!(b
        .find("#panel .panel-title")
        .text()
        .ends_with("asleep - sleepy"));
    let clients = b.texts("#panel .asleep-client");
    let then = hh_mm(&b, attached);
    assert_eq!(
        clients,
        [
            format!("claude (PID {}), since {then}", bridge1.0),
            format!("cursor (PID {}), since {then}", bridge2.0)
        ]
    );
    assert_eq!(
        b.attr_of("#panel .given-back .memory", "data-memory-bytes"),
        Some(given.to_string())
    );
    assert!(b
        .find("#panel .given-back")
        .text()
        .starts_with("412 MB given back"));
    b.screenshot("dashboard-asleep.png");
    b.set_dark(true);
    b.wait_until_js("matchMedia('(prefers-color-scheme: dark)').matches", PAGE);
    b.screenshot("dashboard-asleep-dark.png");
    b.set_dark(false);

    // Waiting for a first call: its own reason, no memory given back.
    b.click(fresh_tab);
    b.wait_until_js("location.hash == '#asleep-fresh1'", PAGE);
    assert_eq!(
        b.find("#panel .asleep-reason").text(),
        format!("waiting for its first call since {at}")
    );
    assert!(!b.find("#panel .given-back").is_displayed());

    // Stop: confirmed, then `/release-session` for it; its tab goes.
    b.click("#panel [data-action=stop]");
    b.wait_until_js("document.getElementById('confirm').open", PAGE);
    b.click("#confirm-ok");
    b.wait_until("the Stop request", PAGE, |b| {
        posts(b)
            .iter()
            .any(|p| p == &json!(["/release-session", {"session_id": "fresh1"}]))
    });
    b.wait_until("the stopped session's tab to go", PAGE, |b| {
        b.try_find(fresh_tab).is_none()
    });
    let (_, list) = d.call("GET", "/api/sessions", None);
    let ended = list
        .as_array()
        .and_then(|l| l.iter().find(|s| s["session_id"] == "fresh1"))
        .map(|s| !s["ended_at"].is_null());
    assert_ne!(ended, Some(false), "fresh1 is not active: {list}");

    // Wake now: `/api/sessions/{id}/wake`; its Serena starts and the page opens its tab.
    b.click(sleepy_tab);
    b.wait_until_js("location.hash == '#asleep-sleepy1'", PAGE);
    b.click("#panel [data-action=wake]");
    b.wait_until("the Wake request", PAGE, |b| {
        posts(b)
            .iter()
            .any(|p| p[0] == "/api/sessions/sleepy1/wake")
    });
    let pid = woken_pid(&d, "sleepy1");
    reaper.watch(pid as u32);
    b.wait_until_js(&format!("location.hash == '#{pid}'"), PAGE);
    b.wait_until("the asleep tab to go", PAGE, |b| {
        b.try_find(sleepy_tab).is_none()
    });
    assert_eq!(b.find("[data-count=asleep]").text(), "1");

    // A Serena that falls asleep while its tab is open: the page follows it to its asleep tab.
    let napper_tab = "[role=tab][data-session='napper1']";
    b.click(napper_tab);
    b.wait_until_js("location.hash == '#asleep-napper1'", PAGE);
    b.click("#panel [data-action=wake]");
    let woken = woken_pid(&d, "napper1");
    reaper.watch(woken as u32);
    b.wait_until_js(&format!("location.hash == '#{woken}'"), PAGE);
    b.wait_until_js("location.hash == '#asleep-napper1'", PAGE);
    let reason = b.find("#panel .asleep-reason").text();
    assert!(
        reason.starts_with("asleep since ") && reason.ends_with(", no call for 9 s"),
        "{reason}"
    );
    assert!(b.try_find(&tab(woken as u32)).is_none());
    b.screenshot("dashboard-asleep-followed.png");
    let uncaught: Vec<_> = b
        .console_logs()
        .into_iter()
        .filter(|l| {
            (l.level == "SEVERE" && l.source == "javascript") || l.message.contains("does not know")
        })
        .collect();
    assert!(uncaught.is_empty(), "{uncaught:#?}");
}

/// A copy of the fake Serena named `name` (a stand-in MCP client with that process name).
fn client_program(home: &Home, name: &str) -> PathBuf {
    let dir = home.path().join("bin");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let path = dir.join(name);
    std::fs::copy(common::fake::exe(), &path).expect("copy the fake");
    path
}

/// A client program `program` that starts a fake Serena on `project` and waits on it, as an MCP
/// client does: (client, Serena).
fn client_with_fake(
    home: &Home,
    reaper: &mut Reaper,
    program: &Path,
    project: &Path,
) -> (u32, u32) {
    let fake = common::fake::exe();
    let mut cmd = Command::new(program);
    home.env(&mut cmd);
    cmd.arg("fake-client")
        .arg(&fake)
        .arg(common::fake::SERVER)
        .args(["--project", project.to_str().expect("utf8")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // The copied client may still be open for writing in a child another thread is forking
    // (ETXTBSY): tried again until that child has exec'd.
    let spawned = poll(
        Duration::from_millis(20),
        Duration::from_secs(5),
        || match cmd.spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => None,
            other => Some(other),
        },
    );
    let client = reaper.adopt(
        spawned
            .expect("the client's file stays busy")
            .expect("spawn the client"),
    );
    let serena = serena_under(client);
    reaper.watch(serena);
    (client, serena)
}

/// The tab of `pid`.
fn tab(pid: u32) -> String {
    format!("[role=tab][data-pid='{pid}']")
}

#[test]
fn serenas_side_by_side_on_a_project_get_a_badge_and_share_from_now_on_opens_the_clients_view() {
    let Some(b) = Browser::start() else { return };
    let home = Home::new();
    fake_serena_command(&home);
    let mut reaper = Reaper::default();
    let webapp = project(&home, "webapp");
    let lonely = project(&home, "lonely");
    let orphans = project(&home, "orphans");
    // Cursor started two Serenas on webapp; a shared session serves webapp too.
    let cursor = client_program(&home, "cursor");
    let (_, first) = client_with_fake(&home, &mut reaper, &cursor, &webapp);
    let (_, second) = client_with_fake(&home, &mut reaper, &cursor, &webapp);
    let (_, single) = client_with_fake(&home, &mut reaper, &cursor, &lonely);
    // Two more on one project, whose client (this test) reads no client config.
    let project_arg = |p: &Path| p.to_str().expect("utf8").to_string();
    let strays: Vec<u32> = (0..2)
        .map(|_| {
            reaper.adopt(spawn_fake(
                &home,
                &["--project", &project_arg(&orphans)],
                &[],
            ))
        })
        .collect();
    // The configs: Cursor's (behind the badge) and Windsurf's (not).
    let config =
        "{\n  \"mcpServers\": {\n    \"serena\": {\n      \"command\": \"serena\",\n      \
                  \"args\": [\"start-mcp-server\", \"--context\", \"ide\"]\n    }\n  }\n}\n";
    for file in [".cursor/mcp.json", ".codeium/windsurf/mcp_config.json"] {
        let path = home.path().join(file);
        std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        std::fs::write(&path, config).expect("config");
    }
    let d = home.daemon();
    let (status, shared) = d.request_session(json!({
        "project_path": project_arg(&webapp), "shared": true,
    }));
    assert_eq!(status, 201, "{shared}");
    let shared_pid = shared["pid"].as_u64().expect("pid") as u32;
    reaper.watch(shared_pid);
    login(&b, &d);

    // The badge on each of Cursor's two, with the count and the three Serenas' memory.
    for pid in [first, second, shared_pid, single, strays[0], strays[1]] {
        b.wait_for_css(&tab(pid), PAGE);
    }
    let badge = |pid: u32| format!("{} .tab-same", tab(pid));
    for pid in [first, second] {
        b.wait_until(&format!("the badge on {pid}"), PAGE, |b| {
            b.find(&badge(pid)).is_displayed()
        });
        let text = b.find(&badge(pid)).text();
        assert!(text.starts_with("same project x3 · "), "{text}");
    }
    for pid in [shared_pid, single] {
        assert!(!b.find(&badge(pid)).is_displayed(), "no badge on {pid}");
    }
    // What the badge says they cost is the three tabs' memory together, read at one moment
    // (costs move) and formatted by the page's own module.
    b.wait_until("every tab's memory", PAGE, |b| {
        [first, second, shared_pid]
            .iter()
            .all(|p| b.attr_of(&tab(*p), "data-memory-bytes").is_some())
    });
    let read = b.execute_async(
        "const [pids, done] = arguments;
         const tab = (p) => document.querySelector(`[role=tab][data-pid='${p}']`);
         const sum = pids.reduce((s, p) => s + Number(tab(p).dataset.memoryBytes), 0);
         const badge = tab(pids[0]).querySelector('.tab-same');
         const said = [Number(badge.dataset.memoryBytes), badge.textContent];
         import(new URL('/util.js', location.href).href)
           .then((u) => done([sum, `same project x3 · ${u.bytes(sum)}`, ...said]));",
        vec![json!([first, second, shared_pid])],
    );
    assert_eq!((&read[2], &read[3]), (&read[0], &read[1]), "{read}");
    assert!(read[0].as_u64().is_some_and(|m| m > 0), "{read}");

    // Its panel says why it matters and offers to share from now on.
    b.click(&tab(first));
    b.wait_until("the same-project note", PAGE, |b| {
        b.find("#panel .same-project").is_displayed()
    });
    let note = b.find("#panel .same-project").text();
    assert!(
        note.starts_with("same project x3: 3 Serenas run on "),
        "{note}"
    );
    assert!(
        note.contains("(1 of them a shared session), together "),
        "{note}"
    );
    assert!(
        note.contains("one language-server workspace") && note.contains("corrupted indexes"),
        "{note}"
    );
    b.screenshot("dashboard-same-project.png");

    // Share from now on: the Clients view on Cursor's config, `--share` ticked, nothing written.
    b.click("#panel [data-action=share-from-now-on]");
    b.wait_until_js("document.getElementById('clients-dialog').open", PAGE);
    b.wait_for_css("#clients-dialog .client-file[data-client=cursor]", PAGE);
    assert_eq!(
        b.execute(
            "return document.getElementById('clients-share').checked",
            vec![]
        ),
        json!(true)
    );
    assert!(b
        .try_find("#clients-dialog .client-file[data-client=windsurf]")
        .is_none());
    let scope = b.find("#clients-scope").text();
    assert!(
        scope.starts_with("The configs of cursor: the clients behind the 2 Serenas on "),
        "{scope}"
    );
    // Route writes what the diff shows: with `--share` in the diff, or not offered.
    let diff = b
        .find("#clients-dialog .client-file[data-client=cursor] .diff")
        .text();
    let route = b.find("#clients-route").attr("disabled").is_none();
    assert_eq!(route, diff.contains("--share"), "{diff}");
    if !route {
        assert!(b
            .find("#clients-body [data-problem=no-share-preview]")
            .is_displayed());
    }
    b.screenshot("dashboard-share-from-now-on.png");
    assert_eq!(
        std::fs::read_to_string(home.path().join(".cursor/mcp.json")).expect("read"),
        config,
        "shown, not written"
    );
    if route {
        // Route writes `launch --share` into Cursor's config only, after the confirmation.
        b.click("#clients-route");
        b.wait_until_js("document.getElementById('confirm').open", PAGE);
        assert!(b.find("#confirm-body").text().contains("launch --share"));
        b.click("#confirm-ok");
        b.wait_for_css(
            "#clients-dialog .client-file[data-client=cursor] li[data-status=launched]",
            PAGE,
        );
        let routed = std::fs::read_to_string(home.path().join(".cursor/mcp.json")).expect("read");
        assert!(
            routed.contains("\"launch\", \"--share\", \"--\", \"serena\""),
            "{routed}"
        );
        let windsurf = home.path().join(".codeium/windsurf/mcp_config.json");
        assert_eq!(std::fs::read_to_string(windsurf).expect("read"), config);
    }
    b.click("#clients-scope [data-action=show-all]");
    b.wait_for_css("#clients-dialog .client-file[data-client=windsurf]", PAGE);
    assert!(b.find("#clients-scope").attr("hidden").is_some());
    b.click("#clients-close");

    // No config belongs to the strays' client: every config is shown, and the view says so.
    b.find(&tab(strays[0])).click();
    b.wait_for_css("#panel [data-action=share-from-now-on]", PAGE);
    assert!(b
        .find(&badge(strays[0]))
        .text()
        .starts_with("same project x2 · "));
    b.click("#panel [data-action=share-from-now-on]");
    b.wait_for_css("#clients-dialog .client-file[data-client=windsurf]", PAGE);
    b.wait_for_css("#clients-dialog .client-file[data-client=cursor]", PAGE);
    let scope = b.find("#clients-scope").text();
    assert!(
        scope.starts_with("No config found here belongs to the clients behind the 2 Serenas on "),
        "{scope}"
    );
    assert!(scope.ends_with(": every config is shown."), "{scope}");
    assert!(screenshots_dir()
        .join("dashboard-same-project.png")
        .exists());
}
