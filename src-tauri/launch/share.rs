//! `serena-tray launch --share`: instead of starting a Serena of its own, the MCP client is
//! bridged to the one shared session of its (project, context, modes), a streamable-HTTP
//! Serena that the dashboard launches on first use and keeps warm for `share_linger_seconds`
//! after its last client. The bridge is a raw forwarder: every JSON-RPC message from stdin is
//! POSTed as it is (its bytes untouched), every message the server sends back (a JSON answer,
//! the events of an SSE answer, the events of the GET stream for server-initiated messages) is
//! written to stdout as it is, one per line; `Mcp-Session-Id` and `MCP-Protocol-Version` are
//! carried, and the MCP session is DELETEd at the end. Several messages are in flight at once
//! (a long tool call never holds back a cancellation).
//!
//! The attachment this process holds keeps the session alive; the dashboard watches this
//! process, so its death (however it dies) detaches it. If the shared Serena dies under it, the
//! calls in flight get a JSON-RPC error, the session is requested again (a new Serena), the
//! client's own `initialize` is replayed to it, and the next calls work.
//!
//! One call is refused: `activate_project` for another project, which would switch the
//! project of every client of the session (a private `launch` has no such limit).
//!
//! Deliberately not here: deciding what may be shared (`plan`: a Serena over stdio with a
//! project directory; anything else runs privately, as plain `launch` does) and the sessions
//! themselves (the dashboard's instance manager).

use super::McpClient;
use crate::core::cmdline;
use crate::core::running::{Client, ClientError};
use crate::core::settings::Settings;
use serde_json::{json, Value};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Mutex};

/// What a shared session is for: what the client's command asks of Serena.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub project: PathBuf,
    pub context: Option<String>,
    pub modes: Vec<String>,
}

/// Why a command cannot be shared.
#[derive(Debug, thiserror::Error)]
pub enum NotShareable {
    #[error("the command is not UTF-8 text")]
    NotText,
    #[error("the command is not `serena start-mcp-server ...`")]
    NotSerena,
    #[error("its transport is {0}, not stdio (an HTTP Serena can be shared as it is)")]
    Transport(crate::core::Transport),
    #[error("no working directory: {0}")]
    NoWorkingDir(#[source] std::io::Error),
    #[error("it has no --project (a shared session is one project's)")]
    NoProject,
    #[error(
        "--project {0} is not a directory (a registered project's name cannot be shared: give \
         its path)"
    )]
    NotADirectory(String),
}

/// Whether the command can be shared, and as what; the reason when it cannot.
pub fn plan(command: &[OsString]) -> Result<Target, NotShareable> {
    let argv: Vec<String> = command
        .iter()
        .map(|a| a.to_str().map(String::from))
        .collect::<Option<_>>()
        .ok_or(NotShareable::NotText)?;
    // `serena start-mcp-server ...`, also behind a wrapper such as `uvx ... serena`.
    let at = argv
        .iter()
        .position(|a| a == "start-mcp-server")
        .ok_or(NotShareable::NotSerena)?;
    let rest = &argv[at + 1..];
    let args = cmdline::parse_server_args(rest);
    if args.transport != crate::core::Transport::Stdio {
        return Err(NotShareable::Transport(args.transport));
    }
    let cwd = std::env::current_dir().map_err(NotShareable::NoWorkingDir)?;
    let project = match &args.project {
        Some(p) => cwd.join(p),
        None if rest.iter().any(|a| a == "--project-from-cwd") => cwd,
        None => return Err(NotShareable::NoProject),
    };
    let project = project
        .canonicalize()
        .ok()
        .filter(|p| p.is_dir())
        .ok_or_else(|| NotShareable::NotADirectory(args.project.unwrap_or_default()))?;
    Ok(Target {
        project,
        context: args.context,
        modes: args.modes,
    })
}

/// Why the bridge cannot start: the client then gets a private Serena.
#[derive(Debug, thiserror::Error)]
pub enum Fallback {
    #[error("no Serena Tray answers on port {0}")]
    NoDaemon(u16),
    /// The daemon refused or failed the request (its first line: a failed launch adds the
    /// log's last lines).
    #[error("{}", first_line(.0))]
    Refused(#[from] ClientError),
    #[error("the dashboard's answer has no session")]
    NoSession,
}

fn first_line(e: &impl std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

/// The shared session the bridge talks to.
#[derive(Clone)]
struct Endpoint {
    session_id: String,
    url: String,
    project_name: String,
}

/// Requests the shared session of `target` and attaches this process to it.
async fn connect(
    client: &Client,
    target: &Target,
    me: u32,
    mcp_client: Option<u32>,
) -> Result<Endpoint, Fallback> {
    let project = target.project.display().to_string();
    let mut body = json!({"project_path": project, "shared": true});
    if let Some(c) = &target.context {
        body["context"] = json!(c);
    }
    if !target.modes.is_empty() {
        body["modes"] = json!(target.modes);
    }
    let session = client.post("/request-session", &body).await?;
    let (Some(id), Some(url)) = (session["session_id"].as_str(), session["url"].as_str()) else {
        return Err(Fallback::NoSession);
    };
    client
        .post(
            &format!("/api/sessions/{id}/attach"),
            &json!({"pid": me, "client_pid": mcp_client}),
        )
        .await?;
    let pid = session["pid"].as_u64().unwrap_or(0);
    let name = client
        .get(&format!("/api/instances/{pid}"))
        .await
        .ok()
        .and_then(|i| i["project_name"].as_str().map(String::from))
        .or_else(|| {
            target
                .project
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    Ok(Endpoint {
        session_id: id.to_string(),
        url: url.to_string(),
        project_name: name,
    })
}

/// Bridges this process's stdio to the shared session of `target` until the MCP client is
/// done; `Err` (before anything was read from stdin, the client handed back) when it cannot,
/// and the caller runs Serena privately.
pub async fn run(
    settings: &Settings,
    target: Target,
    mcp_client: McpClient,
) -> Result<std::process::ExitCode, (Fallback, McpClient)> {
    let (client, endpoint) = match start(settings, &target, mcp_client.pid()).await {
        Ok(found) => found,
        Err(why) => return Err((why, mcp_client)),
    };
    let bridge = Bridge::new(
        endpoint,
        client,
        target,
        std::process::id(),
        mcp_client.pid(),
    );
    bridge.run(mcp_client).await;
    Ok(std::process::ExitCode::SUCCESS)
}

/// The running dashboard (started if it does not run, as every launch does) and the shared
/// session of `target`, this process attached to it.
async fn start(
    settings: &Settings,
    target: &Target,
    mcp_client: Option<u32>,
) -> Result<(Client, Endpoint), Fallback> {
    // The running daemon (the warm case: one look); else start it.
    let client = match Client::find(settings).await {
        Some(client) => client,
        None => {
            super::ensure_dashboard(settings.clone()).await;
            Client::find(settings)
                .await
                .ok_or(Fallback::NoDaemon(settings.dashboard.port))?
        }
    };
    let endpoint = connect(&client, target, std::process::id(), mcp_client).await?;
    Ok((client, endpoint))
}

/// What a POST to the shared Serena is, and where its answer goes.
#[derive(Debug, Clone, Copy)]
struct Posting {
    /// An `initialize`: the MCP session's ID and protocol version are taken from its answer.
    initialize: bool,
    /// Its answer goes to the client on stdout (a replayed handshake's does not).
    to_client: bool,
}

/// The MCP connection to the current shared Serena.
struct Conn {
    endpoint: Endpoint,
    mcp_session: Option<String>,
    protocol: Option<String>,
    /// Bumped at every reconnection: a failure seen on an older one is not acted on twice.
    generation: u64,
}

struct Bridge {
    http: reqwest::Client,
    dashboard: Client,
    target: Target,
    me: u32,
    mcp_client: Option<u32>,
    conn: Mutex<Conn>,
    /// The client's `initialize` and `notifications/initialized`, replayed to a new Serena.
    handshake: Mutex<Vec<String>>,
    out: mpsc::UnboundedSender<String>,
    out_rx: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
    reconnecting: Mutex<()>,
}

/// A POST that did not reach a live session.
enum Failure {
    /// The session is gone (Serena died or forgot it): reconnect.
    Gone,
    /// An HTTP error answer for this message.
    Status(u16),
}

impl Bridge {
    fn new(
        endpoint: Endpoint,
        dashboard: Client,
        target: Target,
        me: u32,
        mcp_client: Option<u32>,
    ) -> Arc<Bridge> {
        let (out, out_rx) = mpsc::unbounded_channel();
        let http = crate::core::http::loopback_client()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Arc::new(Bridge {
            http,
            dashboard,
            target,
            me,
            mcp_client,
            conn: Mutex::new(Conn {
                endpoint,
                mcp_session: None,
                protocol: None,
                generation: 0,
            }),
            handshake: Mutex::new(Vec::new()),
            out,
            out_rx: Mutex::new(Some(out_rx)),
            reconnecting: Mutex::new(()),
        })
    }

    /// Until stdin ends or the client exits.
    async fn run(self: Arc<Self>, mcp_client: McpClient) {
        let writer = tokio::spawn(write_out(self.out_rx.lock().await.take()));
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let client_gone = mcp_client.gone();
        tokio::pin!(client_gone);
        let mut listening = false;
        loop {
            let line = tokio::select! {
                line = lines.next_line() => match line {
                    Ok(Some(line)) => line,
                    _ => break,
                },
                () = &mut client_gone => break,
            };
            if line.trim().is_empty() {
                continue;
            }
            let msg: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            let method = msg["method"].as_str().unwrap_or_default().to_string();
            if let Some(refusal) = self.refusal(&msg).await {
                let _ = self.out.send(refusal);
                continue;
            }
            match method.as_str() {
                // In order, before anything else: it opens the MCP session.
                "initialize" => {
                    self.handshake.lock().await.push(line.clone());
                    self.clone().forward(line, msg).await;
                    if !listening {
                        listening = true;
                        tokio::spawn(self.clone().listen());
                    }
                }
                "notifications/initialized" => {
                    self.handshake.lock().await.push(line.clone());
                    self.clone().forward(line, msg).await;
                }
                _ => {
                    tokio::spawn(self.clone().forward(line, msg));
                }
            }
        }
        self.end().await;
        writer.abort();
    }

    /// `activate_project` for another project: an error answer instead of forwarding it.
    async fn refusal(&self, msg: &Value) -> Option<String> {
        if msg["method"] != "tools/call" || msg["params"]["name"] != "activate_project" {
            return None;
        }
        let asked = msg["params"]["arguments"]["project"].as_str()?;
        let name = self.conn.lock().await.endpoint.project_name.clone();
        let path = self.target.project.display().to_string();
        let same_path = std::path::Path::new(asked)
            .canonicalize()
            .is_ok_and(|p| p == self.target.project);
        if asked == name || asked == path || same_path {
            return None;
        }
        let error = json!({"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32602, "message": format!(
            "this Serena is shared by every client on project {name} ({path}) and stays bound to \
             it: activating {asked} would switch the project for all of them. Work on another \
             project from a client of its own (`serena-tray launch` without --share, or a \
             --share launch with that --project)."
        )}});
        Some(error.to_string())
    }

    /// Sends one message; its answers go to stdout. A request that cannot be answered gets a
    /// JSON-RPC error; a session that is gone is replaced.
    async fn forward(self: Arc<Self>, line: String, msg: Value) {
        let generation = self.conn.lock().await.generation;
        let how = Posting {
            initialize: msg["method"] == "initialize",
            to_client: true,
        };
        match self.post(&line, how).await {
            Ok(()) => {}
            Err(failure) => {
                let id = &msg["id"];
                let gone = matches!(failure, Failure::Gone);
                if !id.is_null() && msg.get("method").is_some() {
                    let why = match failure {
                        Failure::Gone => {
                            "the shared Serena went away; it is being started again: call again"
                                .to_string()
                        }
                        Failure::Status(s) => format!("the shared Serena answered HTTP {s}"),
                    };
                    let error = json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32603, "message": why}});
                    let _ = self.out.send(error.to_string());
                }
                if gone {
                    self.reconnect(generation).await;
                }
            }
        }
    }

    /// POSTs `body` to the session; see [`Posting`] for what becomes of the answer.
    async fn post(&self, body: &str, how: Posting) -> Result<(), Failure> {
        let (url, session, protocol) = {
            let c = self.conn.lock().await;
            (
                c.endpoint.url.clone(),
                c.mcp_session.clone(),
                c.protocol.clone(),
            )
        };
        let mut req = self
            .http
            .post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body.to_string());
        if let Some(s) = session.as_deref().filter(|_| !how.initialize) {
            req = req.header("mcp-session-id", s);
        }
        if let Some(p) = protocol.as_deref().filter(|_| !how.initialize) {
            req = req.header("mcp-protocol-version", p);
        }
        let resp = req.send().await.map_err(|_| Failure::Gone)?;
        let status = resp.status().as_u16();
        if how.initialize {
            if let Some(s) = resp
                .headers()
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
            {
                self.conn.lock().await.mcp_session = Some(s.to_string());
            }
        }
        match status {
            200 => {}
            202 | 204 => return Ok(()),
            // The session was forgotten (the server restarted): as good as gone.
            404 if session.is_some() => return Err(Failure::Gone),
            s => return Err(Failure::Status(s)),
        }
        let sse = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("text/event-stream"));
        let mut events = Events::default();
        let mut resp = resp;
        let mut messages = Vec::new();
        if sse {
            loop {
                match resp.chunk().await {
                    Ok(Some(chunk)) => messages.extend(events.feed(&chunk)),
                    Ok(None) => break,
                    // Cut off mid-answer: the server went away.
                    Err(_) => {
                        self.tell(&messages, how).await;
                        return Err(Failure::Gone);
                    }
                }
                // Told as they come: a progress notification before the result.
                self.tell(&std::mem::take(&mut messages), how).await;
            }
        } else {
            let body = resp.bytes().await.map_err(|_| Failure::Gone)?;
            let text = String::from_utf8_lossy(&body).trim().to_string();
            if !text.is_empty() {
                messages.push(text);
            }
        }
        self.tell(&messages, how).await;
        Ok(())
    }

    async fn tell(&self, messages: &[String], how: Posting) {
        for m in messages {
            if how.initialize {
                if let Some(p) = serde_json::from_str::<Value>(m)
                    .ok()
                    .and_then(|v| v["result"]["protocolVersion"].as_str().map(String::from))
                {
                    self.conn.lock().await.protocol = Some(p);
                }
            }
            if how.to_client {
                let _ = self.out.send(m.clone());
            }
        }
    }

    /// The GET stream of server-initiated messages, for as long as the bridge runs.
    async fn listen(self: Arc<Self>) {
        loop {
            let (url, session, protocol) = {
                let c = self.conn.lock().await;
                (
                    c.endpoint.url.clone(),
                    c.mcp_session.clone(),
                    c.protocol.clone(),
                )
            };
            let Some(session) = session else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let mut req = self
                .http
                .get(&url)
                .header("accept", "text/event-stream")
                .header("mcp-session-id", session);
            if let Some(p) = protocol {
                req = req.header("mcp-protocol-version", p);
            }
            match req.send().await {
                Ok(resp) if resp.status().as_u16() == 405 => return,
                Ok(mut resp) if resp.status().is_success() => {
                    let mut events = Events::default();
                    while let Ok(Some(chunk)) = resp.chunk().await {
                        for m in events.feed(&chunk) {
                            let _ = self.out.send(m);
                        }
                    }
                }
                _ => {}
            }
            // Ended: open it again (on the same session, or on the next one).
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Replaces a session that is gone: a new shared session, this client attached to it, the
    /// client's handshake replayed (its answers not told: the client has them already).
    async fn reconnect(&self, failed: u64) {
        let _one = self.reconnecting.lock().await;
        if self.conn.lock().await.generation != failed {
            return;
        }
        tracing::warn!("the shared Serena is gone: requesting the session again");
        match connect(&self.dashboard, &self.target, self.me, self.mcp_client).await {
            Ok(endpoint) => {
                {
                    let mut c = self.conn.lock().await;
                    c.endpoint = endpoint;
                    c.mcp_session = None;
                    c.generation += 1;
                }
                let handshake = self.handshake.lock().await.clone();
                for (i, line) in handshake.iter().enumerate() {
                    let how = Posting {
                        initialize: i == 0,
                        to_client: false,
                    };
                    let _ = self.post(line, how).await;
                }
            }
            Err(e) => tracing::warn!("cannot get the shared session again: {e}"),
        }
    }

    /// The client is done: the MCP session is closed and the attachment given back.
    async fn end(&self) {
        let (url, session, id) = {
            let c = self.conn.lock().await;
            (
                c.endpoint.url.clone(),
                c.mcp_session.clone(),
                c.endpoint.session_id.clone(),
            )
        };
        if let Some(s) = session {
            let _ = self
                .http
                .delete(&url)
                .header("mcp-session-id", s)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
        }
        let _ = self
            .dashboard
            .post(
                &format!("/api/sessions/{id}/detach"),
                &json!({"pid": self.me}),
            )
            .await;
    }
}

/// Writes each message to stdout on a line of its own, in the order they come.
async fn write_out(rx: Option<mpsc::UnboundedReceiver<String>>) {
    let Some(mut rx) = rx else { return };
    let mut stdout = tokio::io::stdout();
    while let Some(m) = rx.recv().await {
        let mut line = m.into_bytes();
        line.push(b'\n');
        if stdout.write_all(&line).await.is_err() || stdout.flush().await.is_err() {
            return;
        }
    }
}

/// A server-sent-events parser: bytes in, the data of each complete event out.
#[derive(Default)]
struct Events {
    buf: Vec<u8>,
}

impl Events {
    fn feed(&mut self, chunk: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        // An event ends at a blank line (LF LF, or CR LF CR LF).
        while let Some((end, sep)) = find_blank_line(&self.buf) {
            let event: Vec<u8> = self.buf.drain(..end + sep).collect();
            let text = String::from_utf8_lossy(&event[..end]);
            let data: Vec<&str> = text
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if !data.is_empty() {
                out.push(data.join("\n"));
            }
        }
        out
    }
}

fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_come_out_whole_however_the_bytes_are_cut() {
        let stream = b"event: message\r\ndata: {\"id\":1}\r\n\r\n: a comment\n\ndata: a\ndata: b\n\nid: 7\ndata:{\"id\":2}\n\n";
        let whole = Events::default().feed(stream);
        assert_eq!(whole, ["{\"id\":1}", "a\nb", "{\"id\":2}"]);
        for cut in 1..stream.len() {
            let mut e = Events::default();
            let mut got = e.feed(&stream[..cut]);
            got.extend(e.feed(&stream[cut..]));
            assert_eq!(got, whole, "cut at {cut}");
        }
    }

    #[test]
    fn only_a_stdio_serena_with_a_project_directory_is_shared() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().display().to_string();
        let argv = |s: &str| -> Vec<OsString> { s.split(' ').map(OsString::from).collect() };
        let t = plan(&argv(&format!(
            "serena start-mcp-server --project {p} --context ide --mode a --mode b"
        )))
        .expect("shared");
        assert_eq!(t.project, dir.path().canonicalize().expect("canonical"));
        assert_eq!(t.context.as_deref(), Some("ide"));
        assert_eq!(t.modes, ["a", "b"]);
        let behind_uvx = plan(&argv(&format!(
            "uvx --from git+https://x/serena serena start-mcp-server --project={p}"
        )));
        assert!(behind_uvx.is_ok());
        for (cmd, why) in [
            ("serena start-mcp-server", "no --project"),
            (
                "serena start-mcp-server --project my-registered-name",
                "not a directory",
            ),
            (
                &format!("serena start-mcp-server --project {p} --transport sse") as &str,
                "not stdio",
            ),
            ("python3 server.py", "not `serena start-mcp-server"),
        ] {
            let err = plan(&argv(cmd)).expect_err(cmd).to_string();
            assert!(err.contains(why), "{cmd}: {err}");
        }
    }
}
