//! The bridge between the MCP client's stdio and the shared Serena's streamable-HTTP endpoint.
//!
//! Live, it is a raw forwarder: every JSON-RPC message from stdin is POSTed as it is, every
//! message the server sends back (a JSON answer, the events of an SSE answer, the events of the
//! GET stream) is written to stdout as it is, one per line; several are in flight at once.
//!
//! Before its session has a Serena (on demand, or asleep), the handshake is answered from the
//! cache (`initialize`, `ping`, the first page of each list; `notifications/initialized` is
//! kept); the first message that needs Serena wakes the session, and it and every later one go
//! through one queue, in the order they came. A (re)connection replays the client's handshake
//! to the new Serena, its answers not told, then checks the cache against the real answers on
//! an MCP session of its own: a difference replaces the entry and, where the client was served
//! from it, tells the client `notifications/<list>/list_changed`.
//!
//! A message that did not reach a Serena (refused connection, an MCP session it forgot) is
//! sent again once the session is back; one cut off mid-answer gets a JSON-RPC error, as a
//! tool may have run. The client's calls in flight are reported to the dashboard (`touch`):
//! a session does not sleep under a call, and sleeps after its `sleep_minutes` without one.

mod check;

use super::sse::Events;
use super::{connect, Asking, Endpoint, Target};
use crate::core::running::Client;
use crate::launch::handshake::{Cache, Entry};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch, Mutex};

/// How long the end waits for a check of the cache under way.
const CHECK_AT_END: Duration = Duration::from_secs(5);

/// What a POST to the shared Serena is, and where its answer goes.
#[derive(Debug, Clone, Copy)]
struct Posting {
    /// An `initialize`: the MCP session's ID and protocol version are taken from its answer.
    initialize: bool,
    /// Its answer goes to the client on stdout (a replayed handshake's does not).
    to_client: bool,
}

/// The MCP connection to the current shared Serena.
#[derive(Default)]
struct Conn {
    /// The session (with no URL while it has no Serena).
    endpoint: Option<Endpoint>,
    /// Set once the client's handshake reached this Serena: the bridge is live.
    mcp_session: Option<String>,
    protocol: Option<String>,
}

/// Where the bridge's messages go, as one read of the connection.
#[derive(Debug, Clone, Default)]
struct Now {
    /// Empty while the session has no Serena (or none is known yet).
    url: String,
    mcp_session: Option<String>,
    protocol: Option<String>,
    /// The shared session's ID, once registered.
    session_id: Option<String>,
}

/// A POST that did not get its answer.
enum Failure {
    /// It never reached a Serena (nothing listens, or the MCP session is unknown there): safe
    /// to send again once the session is back.
    NotDelivered,
    /// Cut off mid-answer: the Serena went away while it worked on it.
    Gone,
    /// An HTTP error answer for this message.
    Status(u16),
}

/// What becomes of a message from the client before the bridge is live.
enum Here {
    /// Answered from the cache (or a `ping`).
    Answer(String),
    /// `notifications/initialized`: kept for the replay, nothing to answer.
    Kept,
    NeedsSerena,
}

/// Why a message cannot be sent to a Serena at all.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Unreachable(String);

pub(super) struct Bridge {
    http: reqwest::Client,
    dashboard: Client,
    target: Target,
    asking: Asking,
    cache: Cache,
    /// The entry the client's handshake was answered from (on demand), if any.
    served: Mutex<Option<Entry>>,
    conn: Mutex<Conn>,
    /// Bumped at every (re)connection; the GET stream follows it.
    generation: watch::Sender<u64>,
    /// The client's `initialize` and `notifications/initialized`, replayed to a new Serena.
    handshake: Mutex<Vec<String>>,
    out: mpsc::UnboundedSender<String>,
    /// Whether it starts on demand: it registers with the session in the background, while
    /// the handshake is answered here.
    registers: bool,
    /// That registration, under way until the first message that needs Serena waits for it.
    registration: Mutex<Option<tokio::task::JoinHandle<()>>>,
    reconnecting: Mutex<()>,
    /// Requests in flight to Serena; the dashboard is told when it goes from and to zero.
    in_flight: AtomicUsize,
    busy: watch::Sender<bool>,
    /// The last generation whose Serena the cache was checked against: the end waits for the
    /// current one (a client that only looks, as `claude mcp list` does, still fills the cache).
    checked: watch::Sender<u64>,
}

/// How the bridge starts: connected already, or on demand from a cache entry.
pub(super) enum Start {
    Connected(Endpoint),
    OnDemand(Entry),
}

pub(super) struct Setup {
    pub dashboard: Client,
    pub target: Target,
    pub asking: Asking,
    pub cache: Cache,
}

impl Bridge {
    pub(super) fn new(
        setup: Setup,
        start: &Start,
    ) -> (Arc<Bridge>, mpsc::UnboundedReceiver<String>) {
        let (out, out_rx) = mpsc::unbounded_channel();
        let http = crate::core::http::loopback_client()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        let (endpoint, served) = match start {
            Start::Connected(e) => (Some(e.clone()), None),
            Start::OnDemand(entry) => (None, Some(entry.clone())),
        };
        let registers = served.is_some();
        let bridge = Bridge {
            http,
            dashboard: setup.dashboard,
            target: setup.target,
            asking: setup.asking,
            cache: setup.cache,
            served: Mutex::new(served),
            conn: Mutex::new(Conn {
                endpoint,
                ..Conn::default()
            }),
            generation: watch::Sender::new(0),
            handshake: Mutex::new(Vec::new()),
            out,
            registers,
            registration: Mutex::new(None),
            reconnecting: Mutex::new(()),
            in_flight: AtomicUsize::new(0),
            busy: watch::Sender::new(false),
            checked: watch::Sender::new(0),
        };
        (Arc::new(bridge), out_rx)
    }

    /// Until stdin ends or the client exits.
    pub(super) async fn run(
        self: Arc<Self>,
        out_rx: mpsc::UnboundedReceiver<String>,
        client_gone: impl std::future::Future<Output = ()>,
    ) {
        let writer = tokio::spawn(write_out(out_rx));
        if self.registers {
            // Before the dispatcher starts: its first message waits for this.
            *self.registration.lock().await = Some(tokio::spawn(self.clone().register()));
        }
        let (to_serena, queue) = mpsc::unbounded_channel();
        let dispatcher = tokio::spawn(self.clone().dispatch(queue));
        tokio::spawn(self.clone().report_calls());
        tokio::spawn(self.clone().listen());
        tokio::spawn(self.clone().check_each_serena());
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        tokio::pin!(client_gone);
        // A client that ends the server with a signal (SIGTERM, Ctrl+C) ends it as if it had
        // closed stdin: the MCP session closed, the attachment given back.
        let mut signals = crate::launch::Signals::new();
        loop {
            let line = tokio::select! {
                line = lines.next_line() => match line {
                    Ok(Some(line)) => line,
                    _ => break,
                },
                () = &mut client_gone => break,
                _ = signals.next() => break,
            };
            if line.trim().is_empty() {
                continue;
            }
            let msg: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if let Some(refusal) = self.refusal(&msg).await {
                let _ = self.out.send(refusal);
                continue;
            }
            match self.answered_here(&line, &msg).await {
                Here::Answer(answer) => {
                    let _ = self.out.send(answer);
                }
                Here::Kept => {}
                Here::NeedsSerena => {
                    let _ = to_serena.send((line, msg));
                }
            }
        }
        drop(to_serena);
        dispatcher.abort();
        self.end().await;
        writer.abort();
    }

    /// What is answered here while the bridge is not live: the handshake and the lists from
    /// the cache, `ping` (`notifications/initialized` is kept for the replay).
    async fn answered_here(&self, line: &str, msg: &Value) -> Here {
        if self.conn.lock().await.mcp_session.is_some() {
            return Here::NeedsSerena;
        }
        let served = self.served.lock().await;
        let Some(entry) = served.as_ref() else {
            return Here::NeedsSerena;
        };
        let method = msg["method"].as_str().unwrap_or_default();
        if method == "notifications/initialized" {
            self.handshake.lock().await.push(line.to_string());
            return Here::Kept;
        }
        let Some(answer) = entry.reply(msg) else {
            return Here::NeedsSerena;
        };
        if method == "initialize" {
            self.handshake.lock().await.push(line.to_string());
        }
        Here::Answer(answer)
    }

    /// Sends the messages that need Serena, in the order they came: the first wakes the
    /// session; the handshake goes one at a time, the rest at once.
    async fn dispatch(self: Arc<Self>, mut queue: mpsc::UnboundedReceiver<(String, Value)>) {
        while let Some((line, msg)) = queue.recv().await {
            if let Err(e) = self.ensure_live().await {
                self.fail(&msg, &format!("the shared Serena cannot start: {e}"));
                continue;
            }
            match msg["method"].as_str() {
                Some("initialize") | Some("notifications/initialized") => {
                    self.handshake.lock().await.push(line.clone());
                    self.clone().forward(line, msg).await;
                }
                _ => {
                    tokio::spawn(self.clone().forward(line, msg));
                }
            }
        }
    }

    /// An error answer to a request (nothing for a notification or an answer).
    fn fail(&self, msg: &Value, why: &str) {
        if msg["id"].is_null() || msg.get("method").is_none() {
            return;
        }
        let error =
            json!({"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32603, "message": why}});
        let _ = self.out.send(error.to_string());
    }

    /// Registers this client with its session on demand (in the background: the handshake is
    /// answered meanwhile).
    async fn register(self: Arc<Self>) {
        match self.connect(true).await {
            Ok(endpoint) => self.conn.lock().await.endpoint = Some(endpoint),
            Err(e) => tracing::warn!("cannot register with the shared session: {e}"),
        }
    }

    async fn connect(&self, on_demand: bool) -> Result<Endpoint, String> {
        let asking = Asking {
            on_demand,
            ..self.asking
        };
        let connected = connect(&self.dashboard, &self.target, asking).await;
        connected.map_err(|e| e.to_string())
    }

    /// Makes sure the client's handshake reached a running Serena: the session woken if it
    /// has none, the handshake replayed to it.
    async fn ensure_live(&self) -> Result<(), Unreachable> {
        // The registration under way ends first (a failed one leaves no endpoint: woken below).
        let registering = self.registration.lock().await.take();
        if let Some(registering) = registering {
            let _ = registering.await;
        }
        let _one = self.reconnecting.lock().await;
        if self.conn.lock().await.mcp_session.is_some() {
            return Ok(());
        }
        let has_serena = {
            let c = self.conn.lock().await;
            c.endpoint.as_ref().is_some_and(|e| !e.url.is_empty())
        };
        if has_serena && self.replay().await {
            return Ok(());
        }
        self.wake().await
    }

    /// Wakes the session (a new Serena, or the one another client woke) and replays the
    /// handshake to it. Called under `reconnecting`.
    async fn wake(&self) -> Result<(), Unreachable> {
        let endpoint = self.connect(false).await.map_err(Unreachable)?;
        {
            let mut c = self.conn.lock().await;
            c.endpoint = Some(endpoint);
            c.mcp_session = None;
            c.protocol = None;
        }
        if self.replay().await {
            Ok(())
        } else {
            Err(Unreachable(
                "the woken Serena did not take the handshake".into(),
            ))
        }
    }

    /// Replays the client's handshake to the current Serena (its answers not told), then
    /// checks the cache in the background. False when it did not reach a Serena.
    async fn replay(&self) -> bool {
        let handshake = self.handshake.lock().await.clone();
        for (i, line) in handshake.iter().enumerate() {
            let how = Posting {
                initialize: i == 0,
                to_client: false,
            };
            if let Err(Failure::NotDelivered | Failure::Gone) = self.post(line, how).await {
                return false;
            }
        }
        if handshake.is_empty() {
            // Not initialized yet: the client's own `initialize` comes next, and opens it.
            return true;
        }
        self.generation.send_modify(|g| *g += 1);
        true
    }

    /// `activate_project` for another project: an error answer instead of forwarding it.
    async fn refusal(&self, msg: &Value) -> Option<String> {
        if msg["method"] != "tools/call" || msg["params"]["name"] != "activate_project" {
            return None;
        }
        let asked = msg["params"]["arguments"]["project"].as_str()?;
        let name = self.project_name().await;
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

    async fn project_name(&self) -> String {
        let known = self
            .conn
            .lock()
            .await
            .endpoint
            .as_ref()
            .map(|e| e.project_name.clone());
        known.filter(|n| !n.is_empty()).unwrap_or_else(|| {
            let name = self.target.project.file_name();
            name.map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
    }

    /// Sends one message; its answers go to stdout. One that did not reach a Serena is sent
    /// again once the session is back; a request that cannot be answered gets an error.
    async fn forward(self: Arc<Self>, line: String, msg: Value) {
        let initialize = msg["method"] == "initialize";
        let how = Posting {
            initialize,
            to_client: true,
        };
        let request = !msg["id"].is_null() && msg.get("method").is_some();
        let _call = request.then(|| Call::begin(&self));
        let seen = *self.generation.borrow();
        let mut result = self.post(&line, how).await;
        if let Err(Failure::NotDelivered) = result {
            self.lost_serena(seen).await;
            result = match self.ensure_live().await {
                Ok(()) => self.post(&line, how).await,
                Err(e) => {
                    self.fail(&msg, &format!("the shared Serena cannot start: {e}"));
                    return;
                }
            };
        }
        match result {
            Ok(()) => {
                if initialize {
                    // The client's own handshake opened this Serena's session.
                    self.generation.send_modify(|g| *g += 1);
                }
            }
            Err(Failure::Status(s)) => {
                self.fail(&msg, &format!("the shared Serena answered HTTP {s}"))
            }
            Err(Failure::Gone | Failure::NotDelivered) => {
                self.fail(
                    &msg,
                    "the shared Serena went away while it worked on this: call again",
                );
                self.lost_serena(seen).await;
            }
        }
    }

    /// The Serena this bridge talked to at generation `seen` is gone (asleep, or died): the
    /// next message wakes the session (unless it was woken since).
    async fn lost_serena(&self, seen: u64) {
        let mut c = self.conn.lock().await;
        if *self.generation.borrow() == seen {
            c.mcp_session = None;
            c.protocol = None;
        }
    }

    /// The connection as it is now.
    async fn now(&self) -> Now {
        let c = self.conn.lock().await;
        let e = c.endpoint.as_ref();
        Now {
            url: e.map(|e| e.url.clone()).unwrap_or_default(),
            mcp_session: c.mcp_session.clone(),
            protocol: c.protocol.clone(),
            session_id: e.map(|e| e.session_id.clone()),
        }
    }

    /// POSTs `body` to the session; see [`Posting`] for what becomes of the answer.
    async fn post(&self, body: &str, how: Posting) -> Result<(), Failure> {
        let Now {
            url,
            mcp_session: session,
            protocol,
            ..
        } = self.now().await;
        if url.is_empty() {
            return Err(Failure::NotDelivered);
        }
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
        let resp = req.send().await.map_err(|e| match e.is_connect() {
            true => Failure::NotDelivered,
            false => Failure::Gone,
        })?;
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
            // The MCP session was forgotten (another Serena on the port, or it restarted).
            404 if session.is_some() => return Err(Failure::NotDelivered),
            s => return Err(Failure::Status(s)),
        }
        if !is_sse(&resp) {
            let body = resp.bytes().await.map_err(|_| Failure::Gone)?;
            let text = String::from_utf8_lossy(&body);
            if !text.trim().is_empty() {
                self.tell(text.trim(), how).await;
            }
            return Ok(());
        }
        let mut events = Events::default();
        let mut resp = resp;
        loop {
            // Told as they come: a progress notification before the result.
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    for m in events.feed(&chunk) {
                        self.tell(&m, how).await;
                    }
                }
                Ok(None) => return Ok(()),
                Err(_) => return Err(Failure::Gone),
            }
        }
    }

    async fn tell(&self, m: &str, how: Posting) {
        if how.initialize {
            if let Some(p) = serde_json::from_str::<Value>(m)
                .ok()
                .and_then(|v| v["result"]["protocolVersion"].as_str().map(String::from))
            {
                self.conn.lock().await.protocol = Some(p);
            }
        }
        if how.to_client {
            let _ = self.out.send(m.to_string());
        }
    }

    /// The GET stream of server-initiated messages, for each Serena the bridge is live on.
    /// While asleep it waits for the next one: the client's stdout stays open meanwhile.
    async fn listen(self: Arc<Self>) {
        let mut generations = self.generation.subscribe();
        loop {
            generations.borrow_and_update();
            let Now {
                url,
                mcp_session: session,
                protocol,
                ..
            } = self.now().await;
            let Some(session) = session.filter(|_| !url.is_empty()) else {
                if generations.changed().await.is_err() {
                    return;
                }
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
                Err(e) if e.is_connect() => {
                    // No Serena there (asleep): wait for the next.
                    if generations.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                _ => {}
            }
            // Ended: open it again (on the same session, or on the next one).
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Tells the dashboard when the client's calls in flight go from and to zero (the last
    /// state wins when they change faster than it is told).
    async fn report_calls(self: Arc<Self>) {
        let mut busy = self.busy.subscribe();
        while busy.changed().await.is_ok() {
            let now = *busy.borrow_and_update();
            let id = self.now().await.session_id;
            let Some(id) = id else { continue };
            let body = json!({"pid": self.asking.me, "busy": now});
            if let Err(e) = self
                .dashboard
                .post(&format!("/api/sessions/{id}/touch"), &body)
                .await
            {
                tracing::debug!("cannot report the client's calls: {e}");
            }
        }
    }

    /// The client is done: a check of the cache under way is finished (for a few seconds at
    /// most), the MCP session is closed and the attachment given back.
    async fn end(&self) {
        let current = *self.generation.borrow();
        let mut checked = self.checked.subscribe();
        let _ = tokio::time::timeout(CHECK_AT_END, checked.wait_for(|c| *c >= current)).await;
        let Now {
            url,
            mcp_session: session,
            session_id: id,
            ..
        } = self.now().await;
        if let Some(s) = session.filter(|_| !url.is_empty()) {
            let _ = self
                .http
                .delete(&url)
                .header("mcp-session-id", s)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
        }
        if let Some(id) = id {
            let _ = self
                .dashboard
                .post(
                    &format!("/api/sessions/{id}/detach"),
                    &json!({"pid": self.asking.me}),
                )
                .await;
        }
    }
}

/// A request in flight to Serena, counted while it lives.
struct Call<'a> {
    bridge: &'a Bridge,
}

impl<'a> Call<'a> {
    fn begin(bridge: &'a Bridge) -> Call<'a> {
        if bridge.in_flight.fetch_add(1, Ordering::SeqCst) == 0 {
            bridge.busy.send_replace(true);
        }
        Call { bridge }
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        if self.bridge.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.bridge.busy.send_replace(false);
        }
    }
}

fn is_sse(resp: &reqwest::Response) -> bool {
    resp.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/event-stream"))
}

/// Writes each message to stdout on a line of its own, in the order they come.
async fn write_out(mut rx: mpsc::UnboundedReceiver<String>) {
    let mut stdout = tokio::io::stdout();
    while let Some(m) = rx.recv().await {
        let mut line = m.into_bytes();
        line.push(b'\n');
        if stdout.write_all(&line).await.is_err() || stdout.flush().await.is_err() {
            return;
        }
    }
}
