//! The dashboard page in real headless Chromium against a real `serena-tray daemon` and REAL
//! Serena 2.1.0 instances (jedi language server, a temporary home, discovery scoped to what each
//! test starts): the tabs' labels and colours (green with a project, yellow without), Serena's
//! eight sections with real content and log lines arriving, the memory a tab shows against
//! `/proc`, an orphan's tab turning red live (no reload) and "Kill all zombies" reaping its whole
//! tree, a session started from the page that answers MCP `initialize` and is released from its
//! tab, untrusted project names rendered as text, 50 tabs at 800 px, the keyboard, the
//! first-run panel, and the event stream: an event the page does not know is logged, and the
//! page goes on to show the notice of a registry file that stopped parsing. Screenshots (light,
//! dark, 50 tabs) go to target/screenshots/.
//!
//! Without chromedriver or Chromium the tests are skipped (and fail under CI).

mod common;

use common::browser::{screenshots_dir, Browser};
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

/// Real Serena's start-up (language server included) on a busy 2-core machine.
const STARTUP: Duration = Duration::from_secs(90);
/// How long the page may take to show what the daemon knows.
const PAGE: Duration = Duration::from_secs(30);

fn login(b: &Browser, d: &Daemon) {
    b.goto(&d.url(&format!("/?token={}", d.token)));
    b.wait_until_js("document.documentElement.dataset.ready == '1'", PAGE);
}

/// Waits until the tab of `pid` shows `colour`; returns its label.
fn tab_turns(b: &Browser, pid: u32, colour: &str, timeout: Duration) -> String {
    let sel = format!("[role=tab][data-pid='{pid}']");
    b.wait_until(&format!("the tab of {pid} to be {colour}"), timeout, |b| {
        b.attr_of(&sel, "data-colour").as_deref() == Some(colour)
    });
    b.find(&format!("{sel} .tab-label")).text()
}

fn no_csp_violation(b: &Browser) {
    let logs = b.console_logs();
    let bad: Vec<_> = logs
        .iter()
        .filter(|l| l.message.contains("Content Security Policy") || l.message.contains("Uncaught"))
        .collect();
    assert!(bad.is_empty(), "console: {bad:?}");
}

#[test]
fn live_instances_get_coloured_tabs_sections_logs_and_costs_and_an_orphan_turns_red_and_is_reaped()
{
    let Some(b) = Browser::start() else { return };
    let home = Home::new();
    home.tray_config("zombie_grace = 2\n");
    let webapp = home.jedi_project("webapp");
    let orphan_project = home.jedi_project("orphanage");
    let mut reaper = Reaper::default();
    let (green, _stdin1) = spawn_serena(&home, &["--project", webapp.to_str().expect("utf8")]);
    let green = reaper.adopt(green);
    let (yellow, _stdin2) = spawn_serena(&home, &[]);
    let yellow = reaper.adopt(yellow);
    // A client that will go away while the test holds Serena's stdin: an orphan.
    let (client, _held) = spawn_client(
        &home,
        &["--project", orphan_project.to_str().expect("utf8")],
    );
    let client = reaper.adopt(client);
    let orphan = serena_under(client);
    reaper.watch(orphan);

    let d = home.daemon();
    login(&b, &d);

    // Labels and colours.
    assert_eq!(
        tab_turns(&b, green, "green", STARTUP),
        format!("{green} - webapp")
    );
    assert_eq!(
        tab_turns(&b, yellow, "yellow", STARTUP),
        format!("{yellow} - NO PROJECT")
    );
    assert_eq!(
        tab_turns(&b, orphan, "green", STARTUP),
        format!("{orphan} - orphanage")
    );
    let green_tab = b.find(&format!("[role=tab][data-pid='{green}']"));
    assert_eq!(
        green_tab.attr("data-state").as_deref(),
        Some("live_with_project")
    );
    assert!(
        green_tab.text().contains("live"),
        "the state in words for screen readers"
    );
    assert_eq!(
        b.find(&format!("[role=tab][data-pid='{yellow}']"))
            .attr("data-state")
            .as_deref(),
        Some("live_no_project")
    );
    assert_eq!(b.find("[data-count=green]").text(), "2");
    assert_eq!(b.find("[data-count=yellow]").text(), "1");

    // The green tab: the eight sections with what Serena reports, and its logs.
    green_tab.click();
    b.wait_until_js(&format!("location.hash == '#{green}'"), PAGE);
    let sections = [
        (
            "current_configuration",
            "Current Configuration",
            "python_jedi",
        ),
        ("tool_usage", "Tool Usage", "No tool calls yet."),
        ("executions_queue", "Executions Queue", "Nothing queued."),
        ("last_execution", "Last Execution", "init_project_services"),
        ("registered_projects", "Registered Projects", "webapp"),
        ("available_tools", "Available Tools", "activate_project"),
        ("available_modes", "Available Modes", "editing"),
        ("available_contexts", "Available Contexts", "desktop-app"),
    ];
    for (id, title, content) in sections {
        let sel = format!("#panel section[data-section={id}]");
        // Shown once its dashboard answers (the project may be known from its command line first).
        b.wait_until(&format!("the section {title}"), PAGE, |b| {
            b.text_of(&format!("{sel} h3")).as_deref() == Some(title)
        });
        b.wait_until(&format!("{title} to show {content:?}"), PAGE, |b| {
            b.text_of(&format!("{sel} .section-body"))
                .is_some_and(|t| t.contains(content))
        });
        assert!(
            b.try_find(&format!("{sel} .error")).is_none(),
            "{title} failed"
        );
    }
    assert!(b
        .find("#panel [data-section=current_configuration]")
        .text()
        .contains("webapp"));
    b.wait_until("log lines", PAGE, |b| {
        b.texts("#panel .log-line")
            .iter()
            .any(|l| l.contains("Starting MCP server"))
    });
    let lines = b.find_all("#panel .log-line").len();
    assert!(b
        .find("#panel .log-status")
        .text()
        .starts_with(&format!("{lines} lines")));

    // What it costs: the tab's memory is its tree's (Serena and jedi) within 10 %.
    tree_with_language_server(green);
    b.wait_until(
        "the cost breakdown to name the language server",
        PAGE,
        |b| {
            b.text_of("#panel .cost-breakdown")
                .is_some_and(|t| t.contains("jedi"))
        },
    );
    b.wait_until("the tab's memory to match /proc within 10 %", PAGE, |b| {
        let shown: f64 = b
            .attr_of(
                &format!("[role=tab][data-pid='{green}']"),
                "data-memory-bytes",
            )
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let real = tree_rss_bytes(green) as f64;
        let off = (shown - real).abs() / real;
        eprintln!(
            "memory shown {shown} B, /proc {real} B: {:.1} % off",
            off * 100.0
        );
        off <= 0.10
    });
    assert!(b.find("#total").text().contains("3 instances"));

    // The client dies with Serena's stdin held elsewhere: the tab turns red, live.
    b.execute("window.__same_page = true", vec![]);
    let tree = tree_with_language_server(orphan);
    // Only the client: its Serena lives on.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(client as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the client");
    if let Some(c) = reaper.child(client) {
        let _ = c.wait();
    }
    assert_eq!(
        tab_turns(&b, orphan, "red", PAGE),
        format!("{orphan} - orphanage")
    );
    assert_eq!(
        b.execute("return window.__same_page === true", vec![]),
        Value::Bool(true),
        "no reload"
    );
    let red_tab = b.find(&format!("[role=tab][data-pid='{orphan}']"));
    assert_eq!(red_tab.attr("data-reason").as_deref(), Some("orphaned"));
    assert!(red_tab
        .attr("title")
        .unwrap_or_default()
        .contains("orphaned"));
    red_tab.click();
    b.wait_until("the red tab to say why", PAGE, |b| {
        b.text_of("#panel .why")
            .is_some_and(|t| t.contains("orphaned"))
    });
    assert!(b
        .find("#panel .why")
        .text()
        .contains("Kill asks Serena to shut down"));

    let shots = screenshots_dir();
    b.set_dark(false);
    b.screenshot(shots.join("dashboard-light.png"));
    b.set_dark(true);
    b.screenshot(shots.join("dashboard-dark.png"));
    b.set_dark(false);
    no_csp_violation(&b);

    // Kill all zombies from the header: confirm, the tab goes, the tree is gone.
    let kill = b.find("#kill-zombies");
    assert_eq!(kill.text(), "Kill all zombies (1)");
    kill.click();
    b.wait_until_js("document.getElementById('confirm').open", PAGE);
    assert!(b
        .find("#confirm-body")
        .text()
        .contains(&format!("{orphan} - orphanage")));
    b.click("#confirm-ok");
    b.wait_until("the red tab to vanish", PAGE, |b| {
        b.try_find(&format!("[role=tab][data-pid='{orphan}']"))
            .is_none()
    });
    b.wait_until("the notice to tell what was killed", PAGE, |b| {
        b.text_of("#notice-text")
            .is_some_and(|t| t.contains(&format!("Killed {orphan} - orphanage")))
    });
    wait_for(
        "the orphan's whole tree to be gone",
        Duration::from_secs(20),
        || tree.iter().all(|p| !alive(*p)).then_some(()),
    );
    assert!(alive(green) && alive(yellow), "only the zombie was killed");
    assert_eq!(b.find("#kill-zombies").text(), "Kill all zombies (0)");
    assert_eq!(
        b.find("#kill-zombies").attr("disabled"),
        Some("true".into())
    );
}

#[test]
fn a_session_started_from_the_page_answers_mcp_and_is_released_from_its_tab() {
    let Some(b) = Browser::start() else { return };
    let home = home_with_serena();
    let project = home.jedi_project("from-the-page");
    let d = home.daemon();
    login(&b, &d);
    assert!(
        b.find("#first-run").is_displayed(),
        "nothing runs yet: the first-run panel"
    );
    assert!(b
        .find("#first-run")
        .text()
        .contains("web_dashboard_interface: tray_manager"));

    // A bad path: the server's message, in place.
    b.click("#new-session");
    b.execute(
        "document.getElementById('session-path').value = arguments[0]",
        vec![json!("relative/path")],
    );
    b.click("#session-submit");
    b.wait_until("the error in place", PAGE, |b| {
        b.find("#session-error").is_displayed()
    });
    assert!(
        b.find("#session-error").text().contains("relative"),
        "{}",
        b.find("#session-error").text()
    );

    b.execute(
        "document.getElementById('session-path').value = arguments[0]",
        vec![json!(project.to_str().expect("utf8"))],
    );
    // Its Serena takes a dashboard port as the other tests' do: through the start gate.
    let gate = start_gate();
    b.click("#session-submit");
    b.wait_until("the session to be ready", STARTUP, |b| {
        b.find("#session-result").is_displayed()
    });
    drop(gate);
    let url = b.execute(
        "return document.getElementById('session-url').value",
        vec![],
    );
    let url = url.as_str().expect("the MCP URL").to_string();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/mcp"),
        "{url}"
    );
    let claude = b.execute(
        "return document.getElementById('session-claude').value",
        vec![],
    );
    assert_eq!(
        claude.as_str().expect("the claude line"),
        format!("claude mcp add --transport http serena-from-the-page {url}")
    );
    // The MCP URL works: initialize, initialized, tools/list.
    assert!(!tools_over_mcp(&url).is_empty());

    // Its tab appears (green: the session has its project), and Release is offered there.
    let (_, sessions) = d.call("GET", "/api/sessions", None);
    let pid = sessions[0]["pid"].as_u64().expect("session pid") as u32;
    b.click("#session-close");
    assert_eq!(
        tab_turns(&b, pid, "green", STARTUP),
        format!("{pid} - from-the-page")
    );
    assert!(!b.find("#first-run").is_displayed());
    b.click(&format!("[role=tab][data-pid='{pid}']"));
    b.wait_for_css("#panel [data-action=release]", PAGE).click();
    b.wait_until_js("document.getElementById('confirm').open", PAGE);
    b.click("#confirm-ok");
    b.wait_until("the session's tab to vanish", PAGE, |b| {
        b.try_find(&format!("[role=tab][data-pid='{pid}']"))
            .is_none()
    });
    wait_for(
        "the session's Serena to be gone",
        Duration::from_secs(20),
        || (!alive(pid)).then_some(()),
    );
    no_csp_violation(&b);
}

/// A PID that no process holds now: a child that has exited and been reaped.
fn unused_pid() -> u32 {
    let mut c = std::process::Command::new("true").spawn().expect("true");
    let pid = c.id();
    c.wait().expect("wait");
    pid
}

#[test]
fn untrusted_names_are_text_and_fifty_tabs_fit_800_px_and_the_keyboard_moves_between_them() {
    let Some(b) = Browser::start() else { return };
    let home = Home::new();
    let evil = "<img src=x onerror=alert(1)>";
    let now = serena_tray::core::model::now();
    let records: Vec<Value> = (0..50)
        .map(|i| {
            json!({"pid": unused_pid(), "port": null, "started_at": now - 100.0 + i as f64,
                   "last_heartbeat": now, "context": null, "modes": [],
                   "project_name": if i == 0 { evil.to_string() } else { format!("project-{i:02}") },
                   "state": "live_with_project"})
        })
        .collect();
    std::fs::create_dir_all(home.serena_home()).expect("mkdir");
    std::fs::write(
        home.registry_path(),
        Value::Array(records.clone()).to_string(),
    )
    .expect("seed");
    let d = home.daemon();
    b.resize(800, 900);
    login(&b, &d);
    b.wait_until("50 tabs", PAGE, |b| b.find_all("[role=tab]").len() == 50);

    // The name is shown as text, exactly; no element was made from it.
    let first = records[0]["pid"].as_u64().expect("pid");
    let label = b
        .find(&format!("[role=tab][data-pid='{first}'] .tab-label"))
        .text();
    assert_eq!(label, format!("{first} - {evil}"));
    assert_eq!(
        b.find(&format!("[role=tab][data-pid='{first}']"))
            .attr("data-colour")
            .as_deref(),
        Some("red")
    );
    assert!(b.find("#panel .panel-title").text().contains(evil));
    assert_eq!(
        b.execute("return document.querySelectorAll('img').length", vec![]),
        json!(1),
        "only the page's own icon"
    );

    // 50 tabs at 800 px: nothing overflows the page sideways; the strip wraps or scrolls.
    assert_eq!(
        b.execute(
            "return document.documentElement.scrollWidth <= window.innerWidth",
            vec![]
        ),
        Value::Bool(true)
    );
    let strip = b.execute(
        "const r = document.getElementById('tabs').getBoundingClientRect(); return [r.right, window.innerWidth]",
        vec![],
    );
    assert!(strip[0].as_f64() <= strip[1].as_f64(), "{strip}");
    b.screenshot(screenshots_dir().join("dashboard-50-tabs-800px.png"));

    // A proper tablist: the open tab is the one in the focus order; arrows move and select.
    let order: Vec<String> = b
        .find_all("[role=tab]")
        .iter()
        .filter_map(|t| t.attr("data-pid"))
        .collect();
    let expected: Vec<String> = records.iter().map(|r| r["pid"].to_string()).collect();
    assert_eq!(order, expected, "stable order: as first seen");
    b.execute(
        "document.querySelector('[role=tab][aria-selected=true]').focus()",
        vec![],
    );
    let key = |k: &str| {
        b.execute(
            "document.activeElement.dispatchEvent(new KeyboardEvent('keydown', {key: arguments[0], bubbles: true}))",
            vec![json!(k)],
        );
    };
    key("ArrowRight");
    let second = &expected[1];
    b.wait_until_js(&format!("location.hash == '#{second}'"), PAGE);
    assert_eq!(
        b.find(&format!("[role=tab][data-pid='{second}']"))
            .attr("aria-selected")
            .as_deref(),
        Some("true")
    );
    key("End");
    b.wait_until_js(&format!("location.hash == '#{}'", expected[49]), PAGE);
    // The open tab survives a reload (URL fragment).
    b.goto(&d.url(&format!("/#{}", expected[49])));
    b.wait_until_js("document.documentElement.dataset.ready == '1'", PAGE);
    assert_eq!(
        b.find(&format!("[role=tab][data-pid='{}']", expected[49]))
            .attr("aria-selected")
            .as_deref(),
        Some("true")
    );
    no_csp_violation(&b);
}

#[test]
fn the_page_follows_a_daemon_restart_by_itself() {
    let Some(b) = Browser::start() else { return };
    let home = Home::new();
    let mut reaper = Reaper::default();
    let first = reaper.adopt(spawn_fake(&home, &[], &[]));
    let mut d = home.daemon();
    login(&b, &d);
    assert_eq!(
        tab_turns(&b, first, "yellow", PAGE),
        format!("{first} - NO PROJECT")
    );
    b.execute("window.__same_page = true", vec![]);

    let (port, tray_port) = (d.port, d.tray_port);
    d.stop();
    b.wait_until_js(
        "document.getElementById('conn').dataset.state != 'open'",
        PAGE,
    );
    // While it is down a new instance starts; the restarted daemon finds it and the page, which
    // reconnected by itself with the same cookie, shows it.
    let second = reaper.adopt(spawn_fake(&home, &[], &[]));
    let _d = home.daemon_on(port, tray_port);
    assert_eq!(
        tab_turns(&b, second, "yellow", PAGE),
        format!("{second} - NO PROJECT")
    );
    b.wait_until_js(
        "document.getElementById('conn').dataset.state == 'open'",
        PAGE,
    );
    assert!(b
        .try_find(&format!("[role=tab][data-pid='{first}']"))
        .is_some());
    assert_eq!(
        b.execute("return window.__same_page === true", vec![]),
        Value::Bool(true),
        "no reload"
    );
}

#[test]
fn the_clients_view_shows_the_diff_routes_the_serena_entry_and_undoes_it() {
    let Some(b) = Browser::start() else { return };
    let home = Home::new();
    let cursor = home.path().join(".cursor/mcp.json");
    std::fs::create_dir_all(cursor.parent().expect("dir")).expect("mkdir");
    let original = "{\n  \"mcpServers\": {\n    \"serena\": {\n      \"command\": \"serena\",\n      \"args\": [\"start-mcp-server\", \"--context\", \"ide\"]\n    },\n    \"fetch\": {\"command\": \"uvx\", \"args\": [\"mcp-server-fetch\"]}\n  }\n}\n";
    std::fs::write(&cursor, original).expect("cursor config");
    let windsurf = home.path().join(".codeium/windsurf/mcp_config.json");
    std::fs::create_dir_all(windsurf.parent().expect("dir")).expect("mkdir");
    std::fs::write(
        &windsurf,
        "{\n  \"mcpServers\": {\n    \"serena\": {\"command\": \n",
    )
    .expect("windsurf");
    let d = home.daemon();
    login(&b, &d);
    assert!(b.find("#first-run").text().contains("Clients"));

    b.click("#clients");
    let entry = "#clients-dialog .client-file[data-client=cursor] li[data-status=direct]";
    let direct = b.wait_for_css(entry, PAGE).text();
    assert!(
        direct.contains("serena (mcpServers): runs Serena directly"),
        "{direct}"
    );
    let diff = b
        .find("#clients-dialog .client-file[data-client=cursor] .diff")
        .text();
    assert!(
        diff.contains("+      \"args\": [\"launch\", \"--\", \"serena\""),
        "{diff}"
    );
    let broken = b
        .find("#clients-dialog .client-file[data-client=windsurf] .error")
        .text();
    assert!(
        broken.contains("Left alone: does not parse: line 4"),
        "{broken}"
    );
    assert_eq!(
        std::fs::read_to_string(&cursor).expect("read"),
        original,
        "shown, not written"
    );
    b.screenshot(screenshots_dir().join("dashboard-clients.png"));

    b.click("#clients-route");
    b.wait_until_js("document.getElementById('confirm').open", PAGE);
    assert!(b
        .find("#confirm-body")
        .text()
        .contains(&cursor.display().to_string()));
    b.click("#confirm-ok");
    b.wait_for_css(
        "#clients-dialog .client-file[data-client=cursor] li[data-status=launched]",
        PAGE,
    );
    let routed = std::fs::read_to_string(&cursor).expect("read");
    assert!(
        routed.contains("\"launch\", \"--\", \"serena\", \"start-mcp-server\""),
        "{routed}"
    );
    assert!(routed.contains("\"fetch\": {\"command\": \"uvx\", \"args\": [\"mcp-server-fetch\"]}"));
    assert!(
        b.find("#notice-text").text().contains("1 file changed"),
        "{}",
        b.find("#notice-text").text()
    );

    b.click("#clients-undo");
    b.wait_until_js("document.getElementById('confirm').open", PAGE);
    b.click("#confirm-ok");
    b.wait_for_css(entry, PAGE);
    assert_eq!(std::fs::read_to_string(&cursor).expect("read"), original);
    no_csp_violation(&b);
}

/// Run in every document before its own scripts: the page's `fetch` of `/api/events` gets a
/// stream that starts with an event no daemon sends, then goes on as the daemon's.
const AN_UNKNOWN_EVENT_FIRST: &str = r#"
const realFetch = window.fetch;
window.fetch = async function (input, init) {
  const response = await realFetch.call(this, input, init);
  const url = new URL(input instanceof Request ? input.url : String(input), location.href);
  if (url.pathname !== '/api/events' || !response.ok || !response.body) return response;
  window.__unknown_events_sent = (window.__unknown_events_sent ?? 0) + 1;
  const first = new TextEncoder().encode(
    'event: no_such_event\ndata: {"type": "no_such_event"}\n\n');
  const reader = response.body.getReader();
  let sent = false;
  const body = new ReadableStream({
    async pull(c) {
      if (!sent) {
        sent = true;
        c.enqueue(first);
        return;
      }
      const { done, value } = await reader.read();
      if (done) c.close();
      else c.enqueue(value);
    },
    cancel: (why) => reader.cancel(why),
  });
  return new Response(body, { status: response.status, headers: response.headers });
};
"#;

#[test]
fn an_unknown_event_is_logged_and_the_page_goes_on_to_show_a_recovered_registry() {
    let Some(b) = Browser::start() else { return };
    let home = Home::new();
    let d = home.daemon();
    b.cdp(
        "Page.addScriptToEvaluateOnNewDocument",
        json!({"source": AN_UNKNOWN_EVENT_FIRST}),
    );
    // Ready: the snapshot, which came after the unknown event, was shown.
    login(&b, &d);
    assert_eq!(
        b.execute("return window.__unknown_events_sent", vec![]),
        json!(1),
        "the page read the stream the test gave it"
    );
    b.wait_until("the unknown event in the console", PAGE, |b| {
        b.console_logs()
            .iter()
            .any(|l| l.level == "WARNING" && l.message.contains("no_such_event"))
    });
    assert_eq!(
        b.attr_of("#conn", "data-state").as_deref(),
        Some("open"),
        "still following"
    );

    // The registry file stops parsing (replaced whole, as a writer does): the daemon moves it
    // aside and says so, and the page, still on the same stream, shows where it went.
    let registry = home.registry_path();
    let garbage = "[{\"pid\": 1, this is not JSON";
    let tmp = registry.with_extension("json.test-tmp");
    std::fs::write(&tmp, garbage).expect("write");
    std::fs::rename(&tmp, &registry).expect("rename");
    b.wait_until("the notice of the recovered registry", PAGE, |b| {
        b.text_of("#notice-text")
            .is_some_and(|t| t.contains("did not parse"))
    });
    assert!(b.find("#notice").is_displayed());
    assert_eq!(
        b.attr_of("#notice", "data-kind").as_deref(),
        Some("warning")
    );
    let text = b.text_of("#notice-text").unwrap_or_default();
    let moved = std::fs::read_dir(home.serena_home())
        .expect("SERENA_HOME")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("instances.json.corrupt-"))
        })
        .unwrap_or_else(|| panic!("the moved file beside the registry; the page says {text:?}"));
    assert!(
        text.contains(&moved.display().to_string()),
        "the notice names {}: {text:?}",
        moved.display()
    );
    assert_eq!(std::fs::read_to_string(&moved).expect("moved"), garbage);
    assert_eq!(
        b.execute("return window.__unknown_events_sent", vec![]),
        json!(1),
        "no reconnect in between"
    );
    no_csp_violation(&b);
}

#[test]
fn a_kill_made_elsewhere_takes_the_tab_away_and_the_page_says_so() {
    let Some(b) = Browser::start() else { return };
    let home = Home::new();
    let mut reaper = Reaper::default();
    let fake = reaper.adopt(spawn_fake(&home, &[], &[]));
    let d = home.daemon();
    login(&b, &d);
    let label = tab_turns(&b, fake, "yellow", PAGE);

    // Killed through the API, as the CLI and the tray do: not from this page.
    let (status, report) = d.call(
        "POST",
        &format!("/api/instances/{fake}/kill"),
        Some(json!({})),
    );
    assert_eq!(status, 200, "{report}");
    let outcome = report["outcome"]
        .as_str()
        .expect("outcome")
        .replace('_', " ");
    b.wait_until("the killed instance's tab to vanish", PAGE, |b| {
        b.try_find(&format!("[role=tab][data-pid='{fake}']"))
            .is_none()
    });
    b.wait_until("the notice of the kill", PAGE, |b| {
        b.text_of("#notice-text").as_deref()
            == Some(&format!("Serena Tray killed {label} ({outcome})."))
    });
    assert!(b.find("#notice").is_displayed());
    no_csp_violation(&b);
}
