//! `serena-tray launch --on-demand -- CMD ...` without `--share`: a Serena of the client's own,
//! started only when a message needs one. `launch` is then a line proxy between the client's
//! stdio and CMD's (CMD's stderr stays inherited); without `--on-demand` none of this runs and
//! CMD has the client's stdio itself.
//!
//! With an entry in the handshake cache for CMD (`handshake`, the private key: CMD's argv, the
//! program's Serena version, `serena_config.yml` and the project's `.serena/project.yml`) and a
//! client `initialize` asking the protocol version the entry was asked with, `initialize`, `ping`
//! and the first page of each list are answered from it, and the client's notifications are
//! kept; no CMD runs. The first message that needs Serena (a `tools/call`, anything not cached)
//! starts CMD exactly as plain `launch` does (it dies with this process, on Windows in a Job
//! Object, the client watched, signals passed on, its tree reaped when the client goes), with
//! its stdin and stdout piped. The kept `initialize` (under a private id) and notifications are
//! written to it first, its answer swallowed; then this process's own list requests (private
//! ids, after `notifications/initialized`), whose answers are swallowed too, compared with the
//! entry served (a list that differs: `notifications/<kind>/list_changed` to the client) and
//! stored as the new entry; then the client's messages, in the order they came, one at a time
//! from the one queue they wait in: none is lost or answered twice.
//!
//! Without an entry, CMD starts at once and the cache is filled from its answers to the
//! client's own `initialize` and first-page list requests (matched by id; only answers that
//! parse whole; a list never asked is not in the entry and goes to Serena next time).
//!
//! Deliberately not here: a check of the entry while no CMD runs (an entry is trusted until the
//! next start corrects it: a Serena upgraded in place without a new version folder is seen
//! only then), stopping CMD again once started (this is not `--share`'s sleep), a line that is
//! not JSON (passed on as it is), and a transport other than stdio (started at once, plainly).

use super::handshake::{self, Cache, Entry, KeyParts};
use super::{ensure_dashboard, spawn, supervise, LaunchError, McpClient, Signals};
use crate::core::cmdline;
use crate::core::settings::Settings;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// How long CMD's last lines may take to reach the client once it has ended.
const LAST_LINES: Duration = Duration::from_secs(2);
/// The id of the kept `initialize` written to CMD (the client had its answer from the cache).
const INITIALIZE_ID: &str = "serena-tray-initialize";

/// Why a command is started at once although `--on-demand` was given.
#[derive(Debug, thiserror::Error)]
pub enum NotOnDemand {
    #[error("its transport is {0}, not stdio")]
    Transport(crate::core::Transport),
}

/// CMD, resolved, and its cache file.
pub struct Plan {
    program: PathBuf,
    args: Vec<OsString>,
    cache: Cache,
}

/// CMD (`command`, its program resolved to `program`) on demand, or why not; reads the few
/// small files of its cache key.
pub fn plan(
    settings: &Settings,
    command: &[OsString],
    program: &Path,
) -> Result<Plan, NotOnDemand> {
    let project = project_of(command)?;
    let key = KeyParts::private(command, program, project.as_deref());
    Ok(Plan {
        program: program.to_path_buf(),
        args: command.iter().skip(1).cloned().collect(),
        cache: Cache::keyed(settings, &key),
    })
}

/// The project directory a Serena command names (`--project DIR` relative to the working
/// directory, `--project-from-cwd`); none for another command or a registered project's name.
fn project_of(command: &[OsString]) -> Result<Option<PathBuf>, NotOnDemand> {
    let argv: Vec<String> = command
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let Some(at) = argv.iter().position(|a| a == "start-mcp-server") else {
        return Ok(None);
    };
    let rest = &argv[at + 1..];
    let args = cmdline::parse_server_args(rest);
    if args.transport != crate::core::Transport::Stdio {
        return Err(NotOnDemand::Transport(args.transport));
    }
    let Ok(cwd) = std::env::current_dir() else {
        return Ok(None);
    };
    let project = match &args.project {
        Some(p) => cwd.join(p),
        None if rest.iter().any(|a| a == "--project-from-cwd") => cwd,
        None => return Ok(None),
    };
    Ok(project.canonicalize().ok().filter(|p| p.is_dir()))
}

/// Proxies the client's stdio to CMD, started on demand (see the module docs); CMD's exit code
/// (success when it never ran and the client went or closed its stdin).
pub async fn run(
    settings: Settings,
    dashboard: bool,
    plan: Plan,
    client: McpClient,
) -> Result<ExitCode, LaunchError> {
    if dashboard {
        // Never waited for, as in plain `launch`.
        tokio::spawn(ensure_dashboard(settings));
    }
    let mut signals = Signals::new();
    let gone = client.gone();
    tokio::pin!(gone);
    let (tx, mut lines) = mpsc::channel(64);
    tokio::spawn(read_lines(tx));
    let mut stdout = tokio::io::stdout();
    let loaded = plan.cache.load();
    let mut kept = Kept::default();
    let first = match &loaded {
        None => None,
        Some(entry) => {
            let waited = serve(entry, &mut lines, &mut stdout, &mut kept);
            tokio::select! {
                waited = waited => match waited {
                    Some(line) => Some(line),
                    None => return Ok(ExitCode::SUCCESS),
                },
                () = gone.as_mut() => return Ok(ExitCode::SUCCESS),
                sig = signals.next() => return Ok(Signals::exit_code(sig)),
            }
        }
    };
    let (mut child, _job) = spawn(&plan.program, &plan.args, true)?;
    let (Some(cmd_in), Some(cmd_out)) = (child.stdin.take(), child.stdout.take()) else {
        return Ok(supervise(child, gone, signals).await);
    };
    let served = kept.initialize.is_some().then_some(loaded).flatten();
    let recorder = Arc::new(Mutex::new(Recorder::new(plan.cache, served)));
    let feed = Feed {
        kept,
        first,
        lines,
        recorder: recorder.clone(),
    };
    tokio::spawn(feed.run(cmd_in));
    let told = tokio::spawn(tell(cmd_out, stdout, recorder));
    let code = supervise(child, gone, signals).await;
    let _ = tokio::time::timeout(LAST_LINES, told).await;
    Ok(code)
}

/// Reads the client's stdin line by line (each with its line end) until it ends.
async fn read_lines(tx: mpsc::Sender<Vec<u8>>) {
    let mut stdin = BufReader::new(tokio::io::stdin());
    loop {
        let mut line = Vec::new();
        match stdin.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if tx.send(line).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// What the client sent before CMD ran that CMD must be told.
#[derive(Default)]
struct Kept {
    /// Its `initialize`, answered from the cache.
    initialize: Option<Value>,
    /// Its notifications (`notifications/initialized` among them), in order.
    notifications: Vec<(Vec<u8>, Value)>,
}

/// What becomes of a message from the client while CMD does not run.
enum Here {
    Answer(String),
    Kept,
    NeedsSerena,
}

impl Kept {
    fn here(&mut self, entry: &Entry, line: &[u8], msg: &Value) -> Here {
        let method = msg["method"].as_str().unwrap_or_default();
        if !method.is_empty() && msg["id"].is_null() {
            self.notifications.push((line.to_vec(), msg.clone()));
            return Here::Kept;
        }
        // The lists only after the client's own `initialize`.
        if handshake::LISTS.contains(&method) && self.initialize.is_none() {
            return Here::NeedsSerena;
        }
        let Some(answer) = entry.reply(msg) else {
            return Here::NeedsSerena;
        };
        if method == "initialize" && self.initialize.is_none() {
            self.initialize = Some(msg.clone());
        }
        Here::Answer(answer)
    }
}

/// Answers the client from `entry` until a message needs Serena: that message (`None`: the
/// client's stdin ended, or its stdout is closed).
async fn serve(
    entry: &Entry,
    lines: &mut mpsc::Receiver<Vec<u8>>,
    out: &mut (impl AsyncWrite + Unpin),
    kept: &mut Kept,
) -> Option<Vec<u8>> {
    while let Some(line) = lines.recv().await {
        if line.trim_ascii().is_empty() {
            continue;
        }
        let msg: Value = serde_json::from_slice(&line).unwrap_or(Value::Null);
        match kept.here(entry, &line, &msg) {
            Here::Answer(answer) => write_line(out, answer.as_bytes()).await.ok()?,
            Here::Kept => {}
            Here::NeedsSerena => return Some(line),
        }
    }
    None
}

/// Writes `bytes` and a line end if it has none, and flushes.
async fn write_line(out: &mut (impl AsyncWrite + Unpin), bytes: &[u8]) -> std::io::Result<()> {
    out.write_all(bytes).await?;
    if !bytes.ends_with(b"\n") {
        out.write_all(b"\n").await?;
    }
    out.flush().await
}

/// What goes to CMD's stdin, in this order: the kept handshake (with this process's list
/// requests after `notifications/initialized` when the client was served from the cache), the
/// message that started it, then every line of the client as it comes.
struct Feed {
    kept: Kept,
    first: Option<Vec<u8>>,
    lines: mpsc::Receiver<Vec<u8>>,
    recorder: Arc<Mutex<Recorder>>,
}

impl Feed {
    async fn run(mut self, mut cmd: tokio::process::ChildStdin) {
        let mut checks_due = self.kept.initialize.is_some();
        if let Some(mut init) = self.kept.initialize.take() {
            init["id"] = json!(INITIALIZE_ID);
            if self
                .send(&mut cmd, init.to_string().as_bytes(), &init, false)
                .await
                .is_err()
            {
                return;
            }
        }
        let kept = std::mem::take(&mut self.kept.notifications);
        let first = self.first.take().map(|line| {
            let msg = serde_json::from_slice(&line).unwrap_or(Value::Null);
            (line, msg)
        });
        for (line, msg) in kept.into_iter().chain(first) {
            if self
                .pass(&mut cmd, &line, &msg, &mut checks_due)
                .await
                .is_err()
            {
                return;
            }
        }
        while let Some(line) = self.lines.recv().await {
            let msg = serde_json::from_slice(&line).unwrap_or(Value::Null);
            if self
                .pass(&mut cmd, &line, &msg, &mut checks_due)
                .await
                .is_err()
            {
                return;
            }
        }
        // The client's stdin ended: so does CMD's (dropped here).
    }

    /// One line of the client to CMD, and the list requests of the check after the client's
    /// `notifications/initialized` if they are due.
    async fn pass(
        &mut self,
        cmd: &mut tokio::process::ChildStdin,
        line: &[u8],
        msg: &Value,
        checks_due: &mut bool,
    ) -> std::io::Result<()> {
        self.send(cmd, line, msg, true).await?;
        if !(*checks_due && msg["method"] == "notifications/initialized") {
            return Ok(());
        }
        *checks_due = false;
        for (_, request) in handshake::check_requests() {
            self.send(cmd, request.to_string().as_bytes(), &request, false)
                .await?;
        }
        Ok(())
    }

    /// Writes one message to CMD, its answer awaited first if the cache wants it.
    async fn send(
        &self,
        cmd: &mut tokio::process::ChildStdin,
        line: &[u8],
        msg: &Value,
        to_client: bool,
    ) -> std::io::Result<()> {
        if let Ok(mut r) = self.recorder.lock() {
            r.asking(msg, to_client);
        }
        write_line(cmd, line).await
    }
}

/// Tells the client what CMD writes, line by line, but for the answers to this process's own
/// requests; and the `list_changed` notifications of a check.
async fn tell(
    cmd: tokio::process::ChildStdout,
    mut out: tokio::io::Stdout,
    recorder: Arc<Mutex<Recorder>>,
) {
    let mut cmd = BufReader::new(cmd);
    let mut line = Vec::new();
    loop {
        line.clear();
        match cmd.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let (told, notes) = match recorder.lock() {
            Ok(mut r) => r.answered(&line),
            Err(_) => (true, Vec::new()),
        };
        if told && out.write_all(&line).await.is_err() {
            return;
        }
        for kind in notes {
            let note =
                json!({"jsonrpc": "2.0", "method": format!("notifications/{kind}/list_changed")});
            if write_line(&mut out, note.to_string().as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
        if out.flush().await.is_err() {
            return;
        }
    }
}

/// Fills the cache from CMD's answers, and checks the entry the client was served.
struct Recorder {
    cache: Cache,
    /// The answers awaited, by id (as JSON text): the method asked, and whether the client
    /// asked it (else it is this process's, and swallowed).
    awaited: HashMap<String, (String, bool)>,
    asked: Option<String>,
    initialize: Option<Value>,
    lists: BTreeMap<String, Value>,
    /// The entry the client was served from, until CMD's answers to every list are in.
    served: Option<Entry>,
    /// What the cache holds, as far as this process knows.
    stored: Option<Entry>,
}

impl Recorder {
    fn new(cache: Cache, served: Option<Entry>) -> Recorder {
        Recorder {
            cache,
            awaited: HashMap::new(),
            asked: None,
            initialize: None,
            lists: BTreeMap::new(),
            stored: served.clone(),
            served,
        }
    }

    /// A request about to go to CMD: its answer is awaited if the cache keeps it.
    fn asking(&mut self, msg: &Value, to_client: bool) {
        if msg["id"].is_null() || !handshake::cacheable(msg) {
            return;
        }
        let method = msg["method"].as_str().unwrap_or_default().to_string();
        if method == "initialize" {
            self.asked = handshake::asked_version(msg).map(String::from);
        }
        self.awaited
            .insert(msg["id"].to_string(), (method, to_client));
    }

    /// A line from CMD: whether the client is told it, and the kinds of list to tell it have
    /// changed.
    fn answered(&mut self, line: &[u8]) -> (bool, Vec<&'static str>) {
        if self.awaited.is_empty() {
            return (true, Vec::new());
        }
        let Ok(Value::Object(mut answer)) = serde_json::from_slice::<Value>(line) else {
            return (true, Vec::new());
        };
        let id = answer.remove("id").unwrap_or_default().to_string();
        let is_answer = answer.contains_key("result") || answer.contains_key("error");
        if answer.contains_key("method") || !is_answer {
            return (true, Vec::new());
        }
        let Some((method, to_client)) = self.awaited.remove(&id) else {
            return (true, Vec::new());
        };
        answer.remove("jsonrpc");
        match method.as_str() {
            "initialize" if answer.contains_key("result") => {
                self.initialize = Some(Value::Object(answer));
            }
            "initialize" => {}
            _ => {
                self.lists.insert(method, Value::Object(answer));
            }
        }
        (to_client, self.settle())
    }

    /// Stores what CMD answered once there is an entry to store (with a served entry, once
    /// every list is in): the kinds of list that differ from the one served.
    fn settle(&mut self) -> Vec<&'static str> {
        let Some(initialize) = self.initialize.clone() else {
            return Vec::new();
        };
        let complete = handshake::LISTS.iter().all(|m| self.lists.contains_key(*m));
        if self.served.is_some() && !complete {
            return Vec::new();
        }
        let entry = Entry {
            asked: self.asked.clone().unwrap_or_default(),
            initialize,
            lists: self.lists.clone(),
        };
        let changed = match self.served.take() {
            // Only the lists it had could have been served (a partial entry's others were not).
            Some(served) => {
                let mut seen = entry.clone();
                seen.lists.retain(|m, _| served.lists.contains_key(m));
                served.changed_lists(&seen)
            }
            None => Vec::new(),
        };
        if self.stored.as_ref() != Some(&entry) {
            if let Err(e) = self.cache.store(&entry) {
                tracing::warn!("cannot write {}: {e}", self.cache.path().display());
            }
            self.stored = Some(entry);
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(tools: Value, lists: &[&str]) -> Entry {
        let mut lists: BTreeMap<String, Value> = lists
            .iter()
            .map(|m| (m.to_string(), json!({"result": {}})))
            .collect();
        lists.insert("tools/list".into(), json!({"result": {"tools": tools}}));
        Entry {
            asked: "2025-06-18".into(),
            initialize: json!({"result": {"protocolVersion": "2025-06-18"}}),
            lists,
        }
    }

    fn initialize(id: u64, version: &str) -> Value {
        json!({"jsonrpc": "2.0", "id": id, "method": "initialize",
            "params": {"protocolVersion": version}})
    }

    #[test]
    fn the_handshake_is_answered_and_kept_and_anything_else_needs_serena() {
        let e = entry(json!([{"name": "find_symbol"}]), &[]);
        let mut kept = Kept::default();
        let here = |kept: &mut Kept, msg: Value| kept.here(&e, msg.to_string().as_bytes(), &msg);
        let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
        assert!(
            matches!(here(&mut kept, list.clone()), Here::NeedsSerena),
            "no list before initialize"
        );
        assert!(matches!(
            here(&mut Kept::default(), initialize(1, "2024-11-05")),
            Here::NeedsSerena
        ));
        let Here::Answer(a) = here(&mut kept, initialize(1, "2025-06-18")) else {
            panic!("initialize from the cache");
        };
        assert!(a.contains("\"id\":1"), "{a}");
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        assert!(matches!(here(&mut kept, note), Here::Kept));
        assert!(matches!(here(&mut kept, list), Here::Answer(_)));
        let ping = json!({"jsonrpc": "2.0", "id": "p", "method": "ping"});
        assert!(matches!(here(&mut kept, ping), Here::Answer(_)));
        for msg in [
            json!({"jsonrpc": "2.0", "id": 3, "method": "prompts/list"}),
            json!({"jsonrpc": "2.0", "id": 4, "method": "tools/list", "params": {"cursor": "2"}}),
            json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call"}),
        ] {
            assert!(
                matches!(here(&mut kept, msg), Here::NeedsSerena),
                "not cached"
            );
        }
        assert_eq!(kept.notifications.len(), 1);
        assert!(kept.initialize.is_some());
    }

    fn cache() -> (tempfile::TempDir, Cache) {
        let home = tempfile::tempdir().expect("home");
        let flags = crate::core::settings::Flags {
            serena_home: Some(home.path().into()),
            ..Default::default()
        };
        let (settings, _) = Settings::resolve(&flags).expect("settings");
        let key = KeyParts::private(&["serena".into()], Path::new("/bin/serena"), None);
        (home, Cache::keyed(&settings, &key))
    }

    /// Feeds CMD's answer `result` to the request `msg` through `r`.
    fn answer(
        r: &mut Recorder,
        msg: &Value,
        to_client: bool,
        result: Value,
    ) -> (bool, Vec<&'static str>) {
        r.asking(msg, to_client);
        let line = json!({"jsonrpc": "2.0", "id": msg["id"], "result": result}).to_string();
        r.answered(line.as_bytes())
    }

    #[test]
    fn the_check_swallows_its_answers_and_names_only_the_lists_served_that_changed() {
        let (_home, cache) = cache();
        let served = entry(json!([{"name": "planted"}]), &[]);
        let mut r = Recorder::new(cache.clone(), Some(served));
        let mut init = initialize(1, "2025-06-18");
        init["id"] = json!(INITIALIZE_ID);
        let told = answer(
            &mut r,
            &init,
            false,
            json!({"protocolVersion": "2025-06-18"}),
        );
        assert_eq!(
            told,
            (false, vec![]),
            "swallowed; the check is not complete"
        );
        let serena_line = json!({"jsonrpc": "2.0", "method": "notifications/message"});
        assert_eq!(
            r.answered(serena_line.to_string().as_bytes()),
            (true, vec![])
        );
        let mut notes = Vec::new();
        for (method, request) in handshake::check_requests() {
            let result = match method {
                "tools/list" => json!({"tools": [{"name": "find_symbol"}]}),
                _ => json!({}),
            };
            let (told, changed) = answer(&mut r, &request, false, result);
            assert!(!told, "{method} swallowed");
            notes.extend(changed);
        }
        assert_eq!(notes, ["tools"], "prompts and resources were never served");
        let stored = cache.load().expect("stored");
        assert_eq!(stored.lists.len(), 4);
        assert_eq!(stored.asked, "2025-06-18");
        // The client's own request goes on being told.
        let list = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/list"});
        assert!(answer(&mut r, &list, true, json!({"tools": []})).0);
    }

    #[test]
    fn without_an_entry_the_clients_answers_fill_it_but_a_failed_initialize_does_not() {
        let (_home, cache) = cache();
        let mut r = Recorder::new(cache.clone(), None);
        let init = initialize(1, "2025-06-18");
        r.asking(&init, true);
        let refusal = json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -1}}).to_string();
        assert_eq!(r.answered(refusal.as_bytes()), (true, vec![]));
        assert!(cache.load().is_none(), "no entry from a refused initialize");
        let told = answer(&mut r, &initialize(2, "2025-06-18"), true, json!({}));
        assert_eq!(told, (true, vec![]));
        let list = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"});
        answer(&mut r, &list, true, json!({"tools": []}));
        let stored = cache.load().expect("stored");
        assert_eq!(stored.lists.keys().collect::<Vec<_>>(), ["tools/list"]);
    }
}
