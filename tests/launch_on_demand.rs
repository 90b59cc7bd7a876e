//! A private `serena-tray launch --on-demand` (no `--share`, no dashboard) with real Serena 2.1.0
//! under a stand-in MCP client: plain `launch` still hands Serena the client's own pipes; the first
//! on-demand launch starts Serena at once and fills the handshake cache (0600); the next answers
//! `initialize`, `tools/list` and `ping` with no process under it, and its first `tools/call`
//! starts exactly one Serena and is answered right (what comes meanwhile waits and is answered
//! exactly once); a planted wrong tool list is served, then corrected with
//! `notifications/tools/list_changed`; the client killed takes Serena's whole tree with it, whether
//! Serena started at once or on demand.

mod common;

use common::mcp::*;
use common::share::{self, ask, cache_files, initial_instructions, next, tool_names, tool_text};
use common::*;
use serde_json::{json, Value};
use std::process::Child;
use std::time::Duration;

const SOON: Duration = Duration::from_secs(30);

/// A private `launch` of real Serena on `project` (with `--on-demand` if asked) under a
/// stand-in client; its stderr goes to `clients.log` in the home.
fn client(home: &Home, project: &str, on_demand: bool) -> (Child, Stream) {
    let serena = serena_exe().display().to_string();
    let mut opts = vec!["--web-dashboard-global=false"];
    if on_demand {
        opts.push("--on-demand");
    }
    let args = launch_args(home, &[], &opts, &serena_mcp(&serena, project));
    let log = home.path().join("clients.log");
    let mut c = client_logged(home, &tray_exe(), &strs(&args), Some(&log));
    let stream = Stream::of(&mut c).with_logs(vec![log]);
    (c, stream)
}

/// The Serenas that are children of `launcher` now.
fn serenas_under(launcher: u32) -> Vec<u32> {
    let snap = snapshot();
    let found = snap
        .iter()
        .filter(|p| p.ppid == Some(launcher))
        .filter(|p| p.cmdline.iter().any(|a| a == "start-mcp-server"))
        .map(|p| p.pid)
        .collect();
    found
}

/// Kills the stand-in client only and waits for `tree` (Serena's) and the launch to be gone.
fn kill_client_and_wait(client: u32, launcher: u32, tree: &[u32]) {
    kill_one(client);
    wait_for("Serena's tree to be gone with its client", SOON, || {
        tree.iter().all(|p| !alive(*p)).then_some(())
    });
    wait_for("launch to end", SOON, || (!alive(launcher)).then_some(()));
}

/// What a process has as its stdin (`pipe:[inode]`).
fn stdin_of(pid: u32) -> String {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/0")).expect("fd 0");
    link.display().to_string()
}

/// The first on-demand client on `project`: Serena starts before any message, the cache is
/// filled from its answers; then the client is killed and Serena's tree goes with it. Returns
/// the real tool list.
fn fill_the_cache(home: &Home, project: &str) -> Vec<String> {
    let mut reaper = Reaper::default();
    let (c, mut s) = client(home, project, true);
    let client_pid = reaper.adopt(c);
    let launcher = launch_under(client_pid);
    let serena = serena_under(launcher);
    assert_ne!(
        stdin_of(serena),
        stdin_of(launcher),
        "on demand, launch is the proxy between the client's pipes and Serena's"
    );
    let (init, tools) = s.handshake();
    assert!(init.contains("\"serverInfo\""), "{init}");
    let tools: Value = serde_json::from_str(&tools).expect("JSON");
    let file = wait_for("the cache filled", SOON, || {
        let files = cache_files(home);
        let text = std::fs::read_to_string(files.first()?).ok()?;
        text.contains("tools/list").then(|| files[0].clone())
    });
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    let tree = tree_with_language_server(serena);
    kill_client_and_wait(client_pid, launcher, &tree);
    tool_names(&tools)
}

#[test]
fn a_second_launch_answers_the_handshake_with_no_serena_and_its_first_call_starts_one() {
    let home = Home::new();
    let project = home.jedi_project("private");
    let project = project.to_str().expect("utf8");

    // Without --on-demand nothing changes: Serena has the client's own stdin, no cache.
    let mut reaper = Reaper::default();
    let (c, _plain) = client(&home, project, false);
    let plain_client = reaper.adopt(c);
    let launcher = launch_under(plain_client);
    let serena = serena_under(launcher);
    assert_eq!(
        stdin_of(serena),
        stdin_of(launcher),
        "plain launch: inherited"
    );
    kill_client_and_wait(plain_client, launcher, &tree(serena));
    assert!(cache_files(&home).is_empty(), "plain launch caches nothing");

    let real_tools = fill_the_cache(&home, project);
    assert!(real_tools.iter().any(|t| t == "initial_instructions"));

    let (c, mut s) = client(&home, project, true);
    let client_pid = reaper.adopt(c);
    let (init, tools) = s.handshake();
    assert!(init.contains("\"serverInfo\""), "{init}");
    let tools: Value = serde_json::from_str(&tools).expect("JSON");
    assert_eq!(tool_names(&tools), real_tools, "the cached list");
    assert_eq!(ask(&mut s, 3, "ping", json!({}))["result"], json!({}));
    let launcher = launch_under(client_pid);
    assert!(
        descendants(launcher).is_empty(),
        "no process under launch for a handshake: {:?}",
        tree_procs(launcher)
    );

    // The first call starts exactly one Serena; what comes while it starts waits, and every
    // request is answered exactly once, the call by Serena.
    s.send(&initial_instructions(10));
    s.send(&json!({"jsonrpc": "2.0", "id": 11, "method": "ping"}));
    s.send(&json!({"jsonrpc": "2.0", "id": 12, "method": "tools/list", "params": {}}));
    let mut said: Vec<Value> = (0..3).map(|_| next(&s)).collect();
    said.sort_by_key(|v| v["id"].as_u64());
    let ids: Vec<&Value> = said.iter().map(|v| &v["id"]).collect();
    assert_eq!(ids, [&json!(10), &json!(11), &json!(12)], "{said:?}");
    assert!(tool_text(&said[0]).contains("Serena"), "{said:?}");
    assert_eq!(tool_names(&said[2]), real_tools, "live from Serena");
    assert!(
        s.line_within(Duration::from_millis(500)).is_none(),
        "nothing twice"
    );
    let started = serenas_under(launcher);
    assert_eq!(started.len(), 1, "exactly one Serena: {started:?}");
    // Its check completed the entry with every list.
    wait_for("the entry completed", SOON, || {
        let text = std::fs::read_to_string(&cache_files(&home)[0]).ok()?;
        let entry: Value = serde_json::from_str(&text).ok()?;
        (entry["lists"].as_object()?.len() == 4).then_some(())
    });

    // The client killed: the Serena started on demand goes with its tree.
    let tree = tree_with_language_server(started[0]);
    kill_client_and_wait(client_pid, launcher, &tree);
    assert_eq!(cache_files(&home).len(), 1, "one key throughout");
}

#[test]
fn a_planted_wrong_tool_list_is_served_then_corrected_with_list_changed() {
    let home = Home::new();
    let project = home.jedi_project("planted");
    let project = project.to_str().expect("utf8");
    let real_tools = fill_the_cache(&home, project);

    let file = cache_files(&home)[0].clone();
    share::plant_wrong_tools(&file);

    let mut reaper = Reaper::default();
    let (c, mut s) = client(&home, project, true);
    let client_pid = reaper.adopt(c);
    let (_, tools) = s.handshake();
    let tools: Value = serde_json::from_str(&tools).expect("JSON");
    assert_eq!(
        tool_names(&tools),
        ["planted_tool"],
        "served from the cache"
    );
    let launcher = launch_under(client_pid);
    assert!(descendants(launcher).is_empty(), "no Serena yet");

    let v = share::first_call_corrects_the_list(&mut s, 10, &file);
    assert!(tool_text(&v).contains("Serena"), "{v}");
    let v = ask(&mut s, 11, "tools/list", json!({}));
    assert_eq!(tool_names(&v), real_tools, "the real list, live");
    // Nothing else was told: the check's own answers were swallowed.
    assert!(
        s.line_within(Duration::from_millis(500)).is_none(),
        "nothing more on the stream"
    );
}
