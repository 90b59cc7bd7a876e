//! MCP over stdio for the tests of `launch`: a stream to a process's stdin and from its stdout,
//! a stand-in MCP client (a Python process running the given command with the test's pipes as
//! its stdio, as an MCP client does), and the command lines of `launch`.

use super::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a real Serena may take to answer its first message.
pub const FIRST_ANSWER: Duration = Duration::from_secs(90);
/// How long any later answer may take.
pub const ANSWER: Duration = Duration::from_secs(30);

/// One side of an MCP stdio stream: lines written to a process, lines read from it.
pub struct Stream {
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    /// Logs worth reading when an answer does not come (the client's stderr, the daemon's).
    logs: Vec<PathBuf>,
}

impl Stream {
    pub fn of(child: &mut Child) -> Stream {
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Stream {
            stdin,
            lines,
            logs: Vec::new(),
        }
    }

    /// Names logs whose ends a timeout prints (they are gone with the test's home after).
    pub fn with_logs(mut self, logs: Vec<PathBuf>) -> Stream {
        self.logs = logs;
        self
    }

    pub fn send(&mut self, msg: &Value) {
        writeln!(self.stdin, "{msg}").expect("write to the MCP stream");
        self.stdin.flush().expect("flush");
    }

    /// The next line, as the server wrote it.
    pub fn line(&self, timeout: Duration) -> String {
        self.lines.recv_timeout(timeout).unwrap_or_else(|e| {
            let mut said = String::new();
            for log in &self.logs {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                let start = text.len().saturating_sub(4000);
                let start = (start..text.len())
                    .find(|i| text.is_char_boundary(*i))
                    .unwrap_or(0);
                said.push_str(&format!(
                    "\n--- {} (end):\n{}",
                    log.display(),
                    &text[start..]
                ));
            }
            panic!("no line on the MCP stream within {timeout:?} ({e}){said}")
        })
    }

    /// The next line if one comes within `timeout`.
    pub fn line_within(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// initialize, initialized, tools/list: the two answers, exactly as written.
    pub fn handshake(&mut self) -> (String, String) {
        let init = self.initialize("serena-tray-test");
        (init, self.tools_list())
    }

    /// `initialize` from a client named `client_name`: its answer, exactly as written.
    pub fn initialize(&mut self, client_name: &str) -> String {
        self.send(&http::mcp_initialize(client_name));
        self.line(FIRST_ANSWER)
    }

    /// `notifications/initialized`, then `tools/list`: its answer, exactly as written.
    pub fn tools_list(&mut self) -> String {
        self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        self.send(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}));
        self.line(ANSWER)
    }
}

/// A stand-in MCP client running `program args...` with the test's pipes as its stdio.
pub fn client(home: &Home, program: &Path, args: &[&str]) -> Child {
    client_logged(home, program, args, None)
}

/// [`client`] with the program's stderr appended to `log`.
pub fn client_logged(home: &Home, program: &Path, args: &[&str], log: Option<&Path>) -> Child {
    let stderr = match log {
        Some(l) => Stdio::from(files_append(l)),
        None => Stdio::null(),
    };
    let mut cmd = Command::new(venv().join("bin/python3"));
    home.env(&mut cmd);
    cmd.args([
        "-c",
        "import subprocess, sys; sys.exit(subprocess.Popen(sys.argv[1:]).wait())",
    ])
    .arg(program)
    .args(args)
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(stderr)
    .env("SERENA_TRAY_LOG", "debug")
    .spawn()
    .expect("the stand-in client")
}

fn files_append(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("client log")
}

/// `serena-tray --serena-home H [global...] launch [opts...] -- cmd...` as argv for [`client`].
pub fn launch_args(home: &Home, global: &[&str], opts: &[&str], cmd: &[&str]) -> Vec<String> {
    let mut v = vec![
        "--serena-home".to_string(),
        home.serena_home().display().to_string(),
    ];
    v.extend(global.iter().map(|s| s.to_string()));
    v.push("launch".into());
    v.extend(opts.iter().map(|s| s.to_string()));
    v.push("--".into());
    v.extend(cmd.iter().map(|s| s.to_string()));
    v
}

pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The launch process under a stand-in client, once it runs.
pub fn launch_under(client: u32) -> u32 {
    wait_for("launch under the client", ANSWER, || {
        child_with_arg(client, "launch")
    })
}

/// A tool call on the MCP stream (`initial_instructions`), answered.
pub fn call_tool(stream: &mut Stream, id: u64) {
    stream.send(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "initial_instructions", "arguments": {}}}));
    let answer = stream.line(ANSWER);
    assert!(answer.contains(&format!("\"id\":{id}")), "{answer}");
}

/// The types of the timeline of `pid`, in order.
pub fn timeline(d: &Daemon, pid: u32) -> Vec<String> {
    let (_, t) = d.call("GET", &format!("/api/instances/{pid}/timeline"), None);
    t["events"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|x| x["type"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}
