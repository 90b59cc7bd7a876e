//! Serena on demand with real Serena 2.1.0 under `launch --share` clients: a client's handshake
//! answered from the cache with no Serena running; the first calls of three clients at once
//! starting exactly one; a session with no call for its sleep time stopped while its clients
//! stay, a call in flight keeping it awake, and the next call waking it; a changed
//! `project.yml` making a new cache key; a planted wrong tool list corrected with
//! `notifications/tools/list_changed`; Claude Code's own CLI connecting with no Serena started.

mod common;

use common::mcp::*;
use common::share::{
    self, ask, cache_files, initial_instructions, next, serenas, sessions, tool_names, tool_text,
};
use common::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Child;

/// The linger of these tests' daemons.
const LINGER: &str = "2";

/// A first client on `project` fills the cache (Serena started at once), then goes; returns
/// its tool list once the session is released and no Serena is left.
fn fill_the_cache(home: &Home, d: &Daemon, project: &str) -> Vec<String> {
    let before = cache_files(home).len();
    let (c, mut s) = share::client(home, d, project, &[], &[]);
    let (_, tools) = s.handshake();
    let tools: Value = serde_json::from_str(&tools).expect("JSON");
    assert_ne!(
        sessions(d)[0]["pid"],
        0,
        "no entry yet: Serena started at once"
    );
    wait_for("the cache filled", ANSWER, || {
        (cache_files(home).len() == before + 1).then_some(())
    });
    kill_one(c.id());
    wait_for("the session released", ANSWER, || {
        (sessions(d).is_empty() && serenas(home).is_empty()).then_some(())
    });
    drop(s);
    tool_names(&tools)
}

#[test]
fn the_handshake_is_answered_with_no_serena_and_three_first_calls_start_exactly_one() {
    let home = home_with_serena();
    let project = home.jedi_project("ondemand");
    let project = project.to_str().expect("utf8");
    let d = home.daemon_args(&["--share-linger-seconds", LINGER]);
    let real_tools = fill_the_cache(&home, &d, project);
    let file = &cache_files(&home)[0];
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(file)
        .expect("cache file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{}", file.display());

    let mut reaper = Reaper::default();
    let mut streams: Vec<Stream> = Vec::new();
    for _ in 0..3 {
        let (c, mut s) = share::client(&home, &d, project, &[], &[]);
        reaper.adopt(c);
        let (init, tools) = s.handshake();
        assert!(init.contains("\"serverInfo\""), "{init}");
        let tools: Value = serde_json::from_str(&tools).expect("JSON");
        assert_eq!(tool_names(&tools), real_tools, "the cached list");
        assert_eq!(ask(&mut s, 3, "ping", json!({}))["result"], json!({}));
        streams.push(s);
    }
    assert!(serenas(&home).is_empty(), "no Serena for a handshake");
    let asleep = wait_for("three clients on one session asleep", ANSWER, || {
        let list = sessions(&d);
        let s = list.first()?;
        (list.len() == 1 && s["attached"].as_array()?.len() == 3).then(|| s.clone())
    });
    assert_eq!(asleep["asleep_reason"], "not_started", "{asleep}");
    assert_eq!(asleep["pid"], 0, "{asleep}");

    // Three first calls at the same moment: one Serena, three right answers.
    for s in &mut streams {
        s.send(&initial_instructions(10));
    }
    for s in &streams {
        let v = next(s);
        assert_eq!(v["id"], 10, "{v}");
        assert!(tool_text(&v).contains("Serena"), "{v}");
    }
    let list = sessions(&d);
    assert_eq!(list.len(), 1, "{list:?}");
    assert!(list[0].get("asleep_since").is_none(), "{list:?}");
    let pid = list[0]["pid"].as_u64().expect("pid") as u32;
    assert_eq!(serenas(&home), [pid], "exactly one Serena");
}

#[test]
fn an_unused_session_sleeps_with_its_clients_kept_and_the_next_call_wakes_it() {
    let home = home_with_serena();
    let project = home.jedi_project("sleepy");
    let project = project.to_str().expect("utf8");
    let d = home.daemon_args(&["--share-linger-seconds", LINGER]);
    let mut reaper = Reaper::default();
    // Asleep after 3 s without a call.
    let sleep = ["--share-sleep-minutes", "0.05"];
    let (c, mut s) = share::client(&home, &d, project, &sleep, &[]);
    let client: Child = c;
    let client_pid = reaper.adopt(client);
    s.handshake();
    let id = share::serena_session_id(&mut s, 10);
    let first = sessions(&d)[0]["pid"].as_u64().expect("pid") as u32;
    let tree = tree_with_language_server(first);

    // A call longer than the sleep time keeps it awake.
    let code = "import time\ntime.sleep(5)\n'still awake'";
    let v = ask(
        &mut s,
        11,
        "tools/call",
        json!({"name": "serena_repl", "arguments": {"session": id, "code": code}}),
    );
    assert!(tool_text(&v).contains("still awake"), "{v}");
    assert!(alive(first), "not put to sleep under a call");

    // No call for 3 s: asleep, its whole tree gone, the client still there.
    let asleep = wait_for("the session asleep", ANSWER, || {
        let s = sessions(&d).into_iter().next()?;
        s.get("asleep_since").is_some().then_some(s)
    });
    assert_eq!(asleep["asleep_reason"], "unused", "{asleep}");
    assert_eq!(asleep["attached"].as_array().map(Vec::len), Some(1));
    wait_for("its tree gone", ANSWER, || {
        tree.iter().all(|p| !alive(*p)).then_some(())
    });
    assert!(serenas(&home).is_empty(), "no Serena while asleep");
    assert!(alive(client_pid), "the client stays connected");

    // The next call wakes it: a new Serena, the right answer, the same session.
    s.send(&initial_instructions(12));
    let v = next(&s);
    assert!(tool_text(&v).contains("Serena"), "{v}");
    let woken = sessions(&d).into_iter().next().expect("the session");
    assert_eq!(woken["session_id"], asleep["session_id"]);
    let second = woken["pid"].as_u64().expect("pid") as u32;
    assert_ne!(second, first);
    assert_eq!(serenas(&home), [second]);
    let timeline =
        std::fs::read_to_string(home.serena_home().join("tray/events.jsonl")).expect("timeline");
    assert!(timeline.contains("\"session_asleep\""), "{timeline}");
    assert!(timeline.contains("\"session_woke\""), "{timeline}");
}

#[test]
fn a_planted_wrong_tool_list_is_corrected_and_a_changed_project_yml_is_a_new_key() {
    let home = home_with_serena();
    let project_dir = home.jedi_project("planted");
    let project = project_dir.to_str().expect("utf8");
    let d = home.daemon_args(&["--share-linger-seconds", LINGER]);
    let real_tools = fill_the_cache(&home, &d, project);

    // A wrong tool list planted in the entry: served, then corrected at the first start.
    let file = cache_files(&home)[0].clone();
    share::plant_wrong_tools(&file);
    let mut reaper = Reaper::default();
    let (c, mut s) = share::client(&home, &d, project, &[], &[]);
    reaper.adopt(c);
    let (_, tools) = s.handshake();
    let tools: Value = serde_json::from_str(&tools).expect("JSON");
    assert_eq!(
        tool_names(&tools),
        ["planted_tool"],
        "served from the cache"
    );
    let v = share::first_call_corrects_the_list(&mut s, 10, &file);
    assert!(tool_text(&v).contains("Serena"), "{v}");
    let v = ask(&mut s, 11, "tools/list", json!({}));
    assert_eq!(tool_names(&v), real_tools, "the real list, live");
    let timeline =
        std::fs::read_to_string(home.serena_home().join("tray/events.jsonl")).expect("timeline");
    assert!(timeline.contains("\"handshake_replaced\""), "{timeline}");
    drop(reaper);
    wait_for("the session released", ANSWER, || {
        (sessions(&d).is_empty() && serenas(&home).is_empty()).then_some(())
    });

    // project.yml changed: no entry for the new key, so Serena starts at once.
    let yml = project_dir.join(".serena/project.yml");
    let mut text = std::fs::read_to_string(&yml).expect("project.yml");
    text.push_str("\n# changed by the test\n");
    std::fs::write(&yml, text).expect("write");
    let mut reaper = Reaper::default();
    let (c, mut s) = share::client(&home, &d, project, &[], &[]);
    reaper.adopt(c);
    s.handshake();
    assert_ne!(sessions(&d)[0]["pid"], 0, "a new key: started at once");
    wait_for("a second entry", ANSWER, || {
        (cache_files(&home).len() == 2).then_some(())
    });
}

/// Claude Code's CLI (the npm package the test command installs under `.test-env/`).
fn claude() -> PathBuf {
    let p = venv()
        .parent()
        .expect(".test-env")
        .join("claude-code/node_modules/.bin/claude");
    assert!(p.exists(), "{} is missing", p.display());
    p
}

/// `claude mcp list` in `project`: its line for the server `serena`.
fn claude_mcp_list(home: &Home, project: &str) -> String {
    let mut cmd = std::process::Command::new(claude());
    home.env(&mut cmd);
    let listed = cmd
        .args(["mcp", "list"])
        .current_dir(project)
        .env("DISABLE_AUTOUPDATER", "1")
        .env("DISABLE_TELEMETRY", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .output()
        .expect("claude mcp list");
    let said = String::from_utf8_lossy(&listed.stdout).into_owned();
    said.lines()
        .find(|l| l.starts_with("serena:"))
        .unwrap_or_else(|| panic!("no serena in `claude mcp list`: {listed:?}"))
        .to_string()
}

#[test]
fn claude_codes_cli_connects_through_launch_share_and_its_check_starts_no_serena() {
    let home = home_with_serena();
    let project = home.jedi_project("claude");
    let project = project.to_str().expect("utf8");
    let d = home.daemon_args(&["--share-linger-seconds", LINGER]);
    let serena = serena_exe().display().to_string();
    let mut cmd = serena_mcp(&serena, project).to_vec();
    cmd.extend(["--context", "claude-code"]);
    let port = d.port.to_string();
    let args = launch_args(&home, &["--port", &port], &["--share"], &cmd);
    let config = json!({"mcpServers": {"serena": {
        "command": tray_exe().display().to_string(),
        "args": args,
    }}});
    std::fs::write(home.path().join(".claude.json"), config.to_string()).expect("write");

    // The first check fills the cache (no entry: Serena starts, then goes after the linger).
    let line = claude_mcp_list(&home, project);
    assert!(line.contains("Connected"), "{line}");
    wait_for("the cache filled", ANSWER, || {
        (cache_files(&home).len() == 1).then_some(())
    });
    wait_for("the session released", ANSWER, || {
        (sessions(&d).is_empty() && serenas(&home).is_empty()).then_some(())
    });
    let timeline = home.serena_home().join("tray/events.jsonl");
    let launches = || {
        let text = std::fs::read_to_string(&timeline).unwrap_or_default();
        text.matches("\"session_launching\"").count()
    };
    let before = launches();
    assert_eq!(before, 1, "the first check started one Serena");

    // The next check is answered from the cache: connected, and no Serena started.
    let line = claude_mcp_list(&home, project);
    assert!(line.contains("Connected"), "{line}");
    assert!(serenas(&home).is_empty());
    assert_eq!(launches(), before, "no Serena started by the check");
}

#[test]
fn the_on_demand_api_refuses_bad_input_and_loses_nothing() {
    let home = Home::new();
    home.tray_config("serena_command = \"/nonexistent/serena\"\n");
    let project = home.path().join("p");
    std::fs::create_dir(&project).expect("mkdir");
    let project = project.to_str().expect("utf8");
    let d = home.daemon();
    let code = |(status, v): (u16, Value)| (status, v["error"]["code"].as_str().map(String::from));
    let bad = |body: Value| code(d.call("POST", "/request-session", Some(body)));
    let refused = Some("bad_value".to_string());
    let on_demand_private = json!({"project_path": project, "on_demand": true});
    assert_eq!(bad(on_demand_private), (400, refused.clone()));
    let negative = json!({"project_path": project, "shared": true, "sleep_minutes": -1});
    assert_eq!(bad(negative), (400, refused));
    let text = json!({"project_path": project, "shared": true, "sleep_minutes": "x"});
    assert_eq!(bad(text).0, 422);
    assert!(sessions(&d).is_empty(), "nothing recorded");

    // On demand: recorded asleep, started by nothing (no Serena command is needed for that).
    let ask = json!({"project_path": project, "shared": true, "on_demand": true});
    let (status, s) = d.call("POST", "/request-session", Some(ask.clone()));
    assert_eq!(status, 200, "{s}");
    assert_eq!(
        (&s["asleep_reason"], &s["pid"]),
        (&json!("not_started"), &json!(0))
    );
    let id = s["session_id"].as_str().expect("id").to_string();
    let (_, again) = d.call("POST", "/request-session", Some(ask));
    assert_eq!(again["session_id"], id.as_str(), "the same asleep session");

    let touch = |pid: u32| {
        let body = json!({"pid": pid, "busy": true});
        code(d.call("POST", &format!("/api/sessions/{id}/touch"), Some(body)))
    };
    let me = std::process::id();
    assert_eq!(touch(me), (409, Some("not_attached".into())));
    let attach = json!({"pid": me});
    let (status, _) = d.call("POST", &format!("/api/sessions/{id}/attach"), Some(attach));
    assert_eq!(status, 200);
    assert_eq!(touch(me), (200, None));
    let unknown = json!({"pid": me, "busy": false});
    let (status, _) = d.call("POST", "/api/sessions/nope/touch", Some(unknown));
    assert_eq!(status, 404);
    let replaced = json!({"lists": ["tools"]});
    let (status, _) = d.call(
        "POST",
        "/api/sessions/nope/handshake-replaced",
        Some(replaced),
    );
    assert_eq!(status, 404);

    // Waking with no Serena to run: a clear error, and the session is still there, asleep.
    let (status, e) = d.call("POST", &format!("/api/sessions/{id}/wake"), Some(json!({})));
    assert_eq!(
        (status, &e["error"]["code"]),
        (424, &json!("serena_not_found")),
        "{e}"
    );
    let kept = sessions(&d);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0]["asleep_reason"], "not_started");
    assert_eq!(kept[0]["attached"][0]["busy"], true);

    // Stopped: nothing to kill, gone from the list.
    let stop = json!({"session_id": id});
    let (status, r) = d.call("POST", "/release-session", Some(stop));
    assert_eq!((status, &r["status"]), (200, &json!("already_gone")));
    assert!(sessions(&d).is_empty());
}
