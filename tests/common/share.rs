//! `launch --share` clients for the tests: a client as a process with its MCP stream, its
//! requests and answers, the session list and the Serenas of a home, the handshake cache's
//! files (also private `launch --on-demand`'s).

use super::mcp::*;
use super::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Child;

/// A `launch --share` client on `project`, with more `launch` options (after `--share`) and
/// more Serena arguments; its stderr goes to `share-clients.log` in the home.
pub fn client(
    home: &Home,
    d: &Daemon,
    project: &str,
    options: &[&str],
    extra: &[&str],
) -> (Child, Stream) {
    let serena = serena_exe().display().to_string();
    let mut cmd = serena_mcp(&serena, project).to_vec();
    cmd.extend(extra);
    let port = d.port.to_string();
    let opts: Vec<&str> = ["--share"].iter().chain(options).copied().collect();
    let args = launch_args(home, &["--port", &port], &opts, &cmd);
    let log = home.path().join("share-clients.log");
    let mut c = client_logged(home, &tray_exe(), &strs(&args), Some(&log));
    let stream = Stream::of(&mut c).with_logs(vec![log, home.daemon_log(d.port)]);
    (c, stream)
}

/// A JSON-RPC request and its answer (parsed).
pub fn ask(stream: &mut Stream, id: u64, method: &str, params: Value) -> Value {
    stream.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
    let line = stream.line(ANSWER);
    let v: Value = serde_json::from_str(&line).expect("a JSON-RPC answer");
    assert_eq!(v["id"], id, "{line}");
    v
}

/// The text of a tool call's answer.
pub fn tool_text(v: &Value) -> String {
    v["result"]["content"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|x| x["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// The Serena session id `initial_instructions` tells this client.
pub fn serena_session_id(stream: &mut Stream, id: u64) -> String {
    let v = ask(
        stream,
        id,
        "tools/call",
        json!({"name": "initial_instructions", "arguments": {}}),
    );
    let text = tool_text(&v);
    let at = text
        .find("session")
        .unwrap_or_else(|| panic!("no session id in: {text}"));
    text[at..]
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .find(|w| w.len() >= 6 && w.chars().any(|c| c.is_ascii_digit()))
        .unwrap_or_else(|| panic!("no session id in: {text}"))
        .to_string()
}

/// The processes whose command line is Serena's, of this home.
pub fn serenas(home: &Home) -> Vec<u32> {
    home.list_json()
        .iter()
        .filter(|i| i["state_reason"] != "dead")
        .filter_map(|i| i["pid"].as_u64().map(|p| p as u32))
        .collect()
}

pub fn sessions(d: &Daemon) -> Vec<Value> {
    let (_, list) = d.call("GET", "/api/sessions", None);
    list.as_array().cloned().unwrap_or_default()
}

/// The handshake cache's files of a home.
pub fn cache_files(home: &Home) -> Vec<PathBuf> {
    let dir = home.serena_home().join("tray/handshakes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

/// The names of the tools in a `tools/list` answer.
pub fn tool_names(answer: &Value) -> Vec<String> {
    answer["result"]["tools"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|x| x["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The next line of `stream`, as JSON.
pub fn next(stream: &Stream) -> Value {
    serde_json::from_str(&stream.line(ANSWER)).expect("JSON")
}

/// A `tools/call` of `initial_instructions` (no language server work) with this id.
pub fn initial_instructions(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "initial_instructions", "arguments": {}}})
}

/// Plants a wrong tool list (one tool, `planted_tool`) in the cache entry `file`.
pub fn plant_wrong_tools(file: &std::path::Path) {
    let text = std::fs::read_to_string(file).expect("the cache entry");
    let mut entry: Value = serde_json::from_str(&text).expect("JSON");
    entry["lists"]["tools/list"]["result"]["tools"] =
        json!([{"name": "planted_tool", "inputSchema": {"type": "object"}}]);
    std::fs::write(file, entry.to_string()).expect("plant");
}

/// The first call (`initial_instructions`, id `id`) of a client served the planted list from
/// `file`: its answer, and `notifications/tools/list_changed` (in either order); then the
/// entry is seen replaced. Returns the call's answer.
pub fn first_call_corrects_the_list(stream: &mut Stream, id: u64, file: &std::path::Path) -> Value {
    stream.send(&initial_instructions(id));
    let mut said = vec![next(stream), next(stream)];
    said.sort_by_key(|v| v["id"].is_null());
    assert_eq!(said[0]["id"], id, "{said:?}");
    assert_eq!(
        said[1]["method"], "notifications/tools/list_changed",
        "{said:?}"
    );
    super::wait_for("the entry replaced", ANSWER, || {
        let text = std::fs::read_to_string(file).ok()?;
        (!text.contains("planted_tool")).then_some(())
    });
    said.swap_remove(0)
}
