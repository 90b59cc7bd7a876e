//! `serena-tray launch --share` with real Serena under stand-in MCP clients: two clients on one
//! project are served by one Serena (one language server), each with its own `initialize`
//! answer and its own Serena session id, calling tools at the same time; one client killed
//! leaves the other working; with both gone the session is released after the linger, its tree
//! with it, and a client within the linger finds the same Serena; other contexts get another
//! Serena; a command without `--project` runs privately, saying why; the shared Serena killed
//! under a client: the call in flight gets a JSON-RPC error, the next works on a new Serena;
//! `activate_project` for another project is refused.

mod common;

use common::mcp::*;
use common::share::{self, ask, serena_session_id, serenas, sessions, tool_text};
use common::*;
use serde_json::{json, Value};
use std::process::Child;
use std::time::Duration;

/// The linger of these tests' daemons.
const LINGER: &str = "3";

/// A `launch --share` client on `project` (with extra Serena arguments).
fn share_client(home: &Home, d: &Daemon, project: &str, extra: &[&str]) -> (Child, Stream) {
    share::client(home, d, project, &[], extra)
}

#[test]
fn two_clients_share_one_serena_and_it_ends_after_the_last_leaves_and_the_linger() {
    let home = home_with_serena();
    let project = home.jedi_project("shared");
    let project = project.to_str().expect("utf8");
    let d = home.daemon_args(&["--share-linger-seconds", LINGER]);
    let mut reaper = Reaper::default();

    let (a, mut sa) = share_client(&home, &d, project, &[]);
    let a = reaper.adopt(a);
    let (b, mut sb) = share_client(&home, &d, project, &[]);
    let b = reaper.adopt(b);
    let (ia, _) = sa.handshake();
    let (ib, _) = sb.handshake();
    assert!(
        ia.contains("\"serverInfo\"") && ib.contains("\"serverInfo\""),
        "{ia}\n{ib}"
    );

    // One session, one Serena, one language server, both clients attached (a client answered
    // from the handshake cache attaches in the background).
    let list = wait_for("both clients attached", ANSWER, || {
        let list = sessions(&d);
        let both = list.first()?["attached"].as_array()?.len() == 2;
        both.then_some(list)
    });
    assert_eq!(list.len(), 1, "{list:?}");
    let s = &list[0];
    assert_eq!(s["shared"], true);
    let pid = s["pid"].as_u64().expect("pid") as u32;
    let attached: Vec<u64> = s["attached"]
        .as_array()
        .expect("attached")
        .iter()
        .filter_map(|x| x["pid"].as_u64())
        .collect();
    assert_eq!(attached.len(), 2, "{s}");
    assert_eq!(serenas(&home), [pid], "one Serena serves both");
    let tree = tree_with_language_server(pid);
    assert_eq!(tree.len(), 2, "Serena and one language server: {tree:?}");

    // Each is its own Serena session; both call tools at the same time.
    let id_a = serena_session_id(&mut sa, 10);
    let id_b = serena_session_id(&mut sb, 10);
    assert_ne!(id_a, id_b, "told apart");
    let code = "s.lsp.find_symbol(\"hello\")";
    sa.send(&json!({"jsonrpc": "2.0", "id": 11, "method": "tools/call",
        "params": {"name": "serena_repl", "arguments": {"session": id_a, "code": code}}}));
    sb.send(&json!({"jsonrpc": "2.0", "id": 11, "method": "tools/call",
        "params": {"name": "serena_repl", "arguments": {"session": id_b, "code": code}}}));
    for stream in [&sa, &sb] {
        let v: Value = serde_json::from_str(&stream.line(ANSWER)).expect("JSON");
        assert_eq!(v["id"], 11);
        assert!(tool_text(&v).contains("hello"), "{v}");
    }

    // One client goes: the other works on.
    kill_one(a);
    wait_for("a to detach", ANSWER, || {
        (sessions(&d).first()?["attached"].as_array()?.len() == 1).then_some(())
    });
    assert_eq!(ask(&mut sb, 12, "tools/list", json!({}))["id"], 12);

    // The last goes: the session lingers; a client within the linger gets the same Serena.
    kill_one(b);
    let lingering = wait_for("the linger", ANSWER, || {
        let s = sessions(&d).into_iter().next()?;
        s["linger_until"].as_f64().map(|_| s)
    });
    assert!(lingering.get("attached").is_none(), "{lingering}");
    let (c, mut sc) = share_client(&home, &d, project, &[]);
    let c = reaper.adopt(c);
    sc.handshake();
    assert_eq!(sessions(&d)[0]["pid"], pid, "the warm Serena");
    kill_one(c);
    // Then nobody: released after the linger, its whole tree gone.
    wait_for(
        "the session released after the linger",
        Duration::from_secs(30),
        || sessions(&d).is_empty().then_some(()),
    );
    wait_for("its tree gone", ANSWER, || {
        tree.iter().all(|p| !alive(*p)).then_some(())
    });
    drop((sa, sb, sc));
}

#[test]
fn other_contexts_get_their_own_serena_and_no_project_runs_privately() {
    let home = home_with_serena();
    let project = home.jedi_project("ctx");
    let project = project.to_str().expect("utf8");
    let d = home.daemon_args(&["--share-linger-seconds", LINGER]);
    let mut reaper = Reaper::default();
    let (a, mut sa) = share_client(&home, &d, project, &["--context", "ide"]);
    reaper.adopt(a);
    let (b, mut sb) = share_client(&home, &d, project, &["--context", "claude-code"]);
    reaper.adopt(b);
    sa.handshake();
    sb.handshake();
    let list = sessions(&d);
    assert_eq!(list.len(), 2, "{list:?}");
    assert_ne!(list[0]["pid"], list[1]["pid"]);

    // No --project: a Serena of its own, and one line saying why.
    let serena = serena_exe().display().to_string();
    let port = d.port.to_string();
    let args = launch_args(
        &home,
        &["--port", &port],
        &["--share"],
        &[&serena, "start-mcp-server", "--open-web-dashboard", "False"],
    );
    let mut cmd = std::process::Command::new(tray_exe());
    home.env(&mut cmd);
    let log = home.path().join("private.err");
    let mut private = cmd
        .args(&args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("launch");
    let mut sp = Stream::of(&mut private);
    let launcher = reaper.adopt(private);
    sp.handshake();
    assert!(serena_under(launcher) > 0, "its own Serena, under it");
    let err = std::fs::read_to_string(&log).expect("stderr");
    let said: Vec<&str> = err.lines().filter(|l| l.contains("--share")).collect();
    assert_eq!(said.len(), 1, "{err}");
    assert!(said[0].contains("no --project"), "{err}");
    assert_eq!(sessions(&d).len(), 2, "no session for it");
}

#[test]
fn a_shared_serena_that_dies_fails_the_call_in_flight_and_the_next_works_on_a_new_one() {
    let home = home_with_serena();
    let project = home.jedi_project("phoenix");
    let project_path = project.to_str().expect("utf8");
    let d = home.daemon_args(&["--share-linger-seconds", LINGER]);
    let mut reaper = Reaper::default();
    let (a, mut sa) = share_client(&home, &d, project_path, &[]);
    reaper.adopt(a);
    sa.handshake();
    let first = sessions(&d)[0]["pid"].as_u64().expect("pid") as u32;

    // activate_project for another project: refused, in place.
    let other = home.jedi_project("elsewhere");
    let v = ask(
        &mut sa,
        20,
        "tools/call",
        json!({"name": "activate_project", "arguments": {"project": other.to_str().expect("utf8")}}),
    );
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("shared"), "{v}");
    assert!(message.contains("phoenix"), "{v}");

    // A long call in flight, and Serena killed under it.
    let id = serena_session_id(&mut sa, 21);
    sa.send(&json!({"jsonrpc": "2.0", "id": 22, "method": "tools/call",
        "params": {"name": "serena_repl", "arguments": {"session": id,
            "code": "import time\ntime.sleep(30)\n1"}}}));
    wait_for("the call running in Serena", ANSWER, || {
        let (_, overview) = d.call("GET", &format!("/api/instances/{first}/overview"), None);
        let queue = &overview["sections"]["executions_queue"]["data"]["queued_executions"];
        queue
            .as_array()?
            .iter()
            .any(|e| {
                // Serena names a task `Task-<n>:<tool class>`.
                let name = e["name"].as_str().unwrap_or_default();
                name.ends_with(":SerenaReplTool") && e["is_running"] == true
            })
            .then_some(())
    });
    kill_tree(first);
    let v: Value = serde_json::from_str(&sa.line(ANSWER)).expect("JSON");
    assert_eq!(v["id"], 22);
    assert!(v["error"]["message"].is_string(), "a JSON-RPC error: {v}");

    // The next call works, on a new Serena (a list would be answered from the cache).
    let v = wait_for("a call to work again", Duration::from_secs(90), || {
        let v = ask(
            &mut sa,
            23,
            "tools/call",
            json!({"name": "initial_instructions", "arguments": {}}),
        );
        v.get("result").is_some().then_some(v)
    });
    assert!(!tool_text(&v).is_empty(), "{v}");
    let second = sessions(&d)[0]["pid"].as_u64().expect("pid") as u32;
    assert_ne!(second, first);
    let (_, timeline) = d.call("GET", &format!("/api/instances/{first}/timeline"), None);
    assert!(
        timeline.to_string().contains("session_exited"),
        "{timeline}"
    );
}
