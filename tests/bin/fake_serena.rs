//! A small fake Serena MCP server, for the faults real Serena will not produce on demand.
//!
//! It is a fake and says so: the integration tests use real Serena wherever the real thing can
//! show the behaviour, and this only where it cannot (a dashboard that hangs, a server that
//! ignores SIGTERM, one that dies at start-up, child trees on demand, hundreds of instances for
//! the benchmarks). It is the example `serena` of this package, so its binary is
//! `target/<profile>/examples/serena` (`serena.exe` on Windows): run as
//! `.../serena start-mcp-server ...`, its command line is one discovery recognises as a Serena
//! MCP server, as a console script's is. `tests/common/fake.rs` finds it (and builds it, once per
//! test process).
//!
//! Subcommands:
//! - `serena start-mcp-server [--project P] [--context C] [--mode M]... [--transport T]
//!   [--port N]` (each also as `--opt=value`): the server. It serves the dashboard routes of
//!   Serena 2.1.0 that Serena Tray reads on 127.0.0.1 (GET `/heartbeat`,
//!   `/get_config_overview`, `/get_tool_names`, `/get_tool_stats`, `/queued_task_executions`,
//!   `/last_execution`; POST `/get_log_messages` and `/cancel_task_execution`, the latter with
//!   2.1.0's quirk: a task ID given as a decimal string gets "not found", as a JSON number an
//!   error; PUT `/shutdown`, answered, then the fake exits with status 0 about 0.2 s later; 404
//!   for any other route), one request per connection, and prints
//!   `FAKE_SERENA_DASHBOARD_PORT=<port>` (or `=none`) on stderr once everything listens. With
//!   `--transport sse` or `streamable-http` it also listens on the MCP port (`--port`, default
//!   8000), which answers 404 to everything (only the socket matters: it must not pass for the
//!   dashboard). It never reads its stdin (a client that dies or closes it does not end it)
//!   unless `FAKE_SERENA_STDIO_MCP=1`.
//! - `serena fake-language-server`: what the server starts as its children (like a language
//!   server): sleeps for an hour. Not a Serena command line (the subcommand is not
//!   `start-mcp-server`).
//! - `serena fake-client CMD ARGS...`: a stand-in MCP client: starts CMD ARGS with its own
//!   stdin, stdout and stderr, waits for it and exits with its status (128 + the signal if a
//!   signal ended it). Not a Serena command line either.
//!
//! Environment (of `start-mcp-server`):
//! - `FAKE_SERENA_PORT=N`: the dashboard's port (default: any free port).
//! - `FAKE_SERENA_NO_DASHBOARD=1`: no dashboard (like the loser of Serena's port race).
//! - `FAKE_SERENA_EXTRA_LISTENERS=N`: also listen on N more ports (any free ones) that accept
//!   nothing: sockets a registration can name (find them from the process's sockets). On Unix
//!   the soft limit of open files is raised (up to the hard one) when N needs it.
//! - `FAKE_SERENA_IGNORE_TERM=1`: on Unix SIGTERM is ignored by the fake and by its children
//!   (blocked: in the fake before it starts any thread, in each child from before it runs, and
//!   the child mode blocks it too when it sees the variable, which children inherit); on Windows
//!   (no signals) PUT `/shutdown` is answered but not obeyed, and Ctrl+C and Ctrl+Break console
//!   events are ignored, by the children too.
//! - `FAKE_SERENA_CHILDREN_IGNORE_TERM=1`: only its children ignore SIGTERM (a language server
//!   that does), the fake itself obeys it.
//! - `FAKE_SERENA_CHILDREN=N`: start N children (`serena fake-language-server`), each in a new
//!   session on Unix (setsid), a detached process in a new process group on Windows
//!   (`DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP`). They outlive the fake when it dies: a
//!   killer must reap them from a snapshot of the tree.
//! - `FAKE_SERENA_DIE_AT_START=1`: exit with status 1 at once (saying so on stderr).
//! - `FAKE_SERENA_START_DELAY=SECS`: wait that long before serving anything (a slow start-up).
//! - `FAKE_SERENA_PORT_TAKEN_ONCE=FILE`: the first run (FILE absent: it is created) exits with
//!   status 3, as Serena does when its MCP port was taken meanwhile.
//! - `FAKE_SERENA_STDIO_MCP=1` (with the stdio transport): an MCP server over stdin and stdout
//!   that answers at once, once everything else is up: one JSON-RPC message a line, `initialize`,
//!   `ping` and `tools/list` (one tool, `fake_tool`) answered, notifications not, any other
//!   request an error; the fake exits (status 0) when its stdin ends. For the benchmark's
//!   measure of what `serena-tray launch` adds to a start, without Serena's own start-up.
//!
//! Signals (Unix only): SIGUSR1 makes the dashboard hang (it accepts connections and reads
//! requests, never answers GET or POST); SIGUSR2 ends the hang. Both take effect at once: they
//! are blocked in every thread and taken by one thread waiting for them (sigwait). PUT
//! `/shutdown` is never held by a hang.
//!
//! A std-only server (a thread per connection, a small HTTP/1.1 request parser that honours
//! `Content-Length`) that starts in about a millisecond; a request it cannot parse gets a 400,
//! never ends the fake.

use serde_json::{json, Map, Value};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, ExitCode};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

const USAGE: &str = "usage: serena start-mcp-server [options] | serena fake-language-server | serena fake-client CMD [ARGS...]";

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let sub = args.next();
    match sub.as_ref().and_then(|s| s.to_str()) {
        Some("start-mcp-server") => {
            let rest: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
            server(&rest)
        }
        Some("fake-language-server") => language_server(),
        Some("fake-client") => client(args.collect()),
        _ => {
            say(USAGE);
            ExitCode::from(2)
        }
    }
}

/// A line on stderr. Never panics: a closed stderr must not end the fake.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// An error at start-up: said, exit status 1.
fn fail(what: &str) -> ExitCode {
    say(&format!("fake serena: {what}"));
    ExitCode::from(1)
}

fn env_is_1(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v == "1")
}

/// A numeric variable (default when unset or empty), or a message saying what is wrong.
fn env_number<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}={v}: not a number")),
        _ => Ok(default),
    }
}

/// Every value of option `name` in `args`, as `name VALUE` or `name=VALUE` (scanned token by
/// token, as Serena's fake always did: a value that looks like an option counts as one too).
fn option<'a>(args: &'a [String], name: &str) -> Vec<&'a str> {
    let mut values = Vec::new();
    for (i, tok) in args.iter().enumerate() {
        if tok == name {
            if let Some(v) = args.get(i + 1) {
                values.push(v.as_str());
            }
        } else if let Some(v) = tok.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
            values.push(v);
        }
    }
    values
}

/// `path` made absolute against the current directory, `.` and `..` resolved by name (no
/// symbolic link followed), no trailing separator: what Python's `os.path.abspath` gives.
fn absolute(path: &str) -> PathBuf {
    let path = if path.is_empty() { "." } else { path };
    let joined = std::path::absolute(path).unwrap_or_else(|_| PathBuf::from(path));
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if matches!(out.components().next_back(), Some(Component::Normal(_))) {
                    out.pop();
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// What the dashboard reports, fixed at start-up.
struct Dashboard {
    project_name: Option<String>,
    project_path: Option<String>,
    context: String,
    modes: Vec<String>,
    log: Vec<String>,
    /// Windows with `FAKE_SERENA_IGNORE_TERM=1`: PUT /shutdown is answered, not obeyed.
    shutdown_ignored: bool,
}

fn server(args: &[String]) -> ExitCode {
    if let Some(once) = std::env::var_os("FAKE_SERENA_PORT_TAKEN_ONCE").filter(|v| !v.is_empty()) {
        if !Path::new(&once).exists() {
            if let Err(e) = std::fs::File::create(&once) {
                return fail(&format!(
                    "cannot create {}: {e}",
                    Path::new(&once).display()
                ));
            }
            say("fake serena: MCP port taken (simulated), exiting with 3");
            return ExitCode::from(3);
        }
    }
    if env_is_1("FAKE_SERENA_DIE_AT_START") {
        say("fake serena: dying at start-up as asked");
        return ExitCode::from(1);
    }
    let ignore_term = env_is_1("FAKE_SERENA_IGNORE_TERM");
    // Before any other thread starts (they inherit the signal mask).
    if let Err(e) = signals::watch(ignore_term) {
        return fail(&format!("signals: {e}"));
    }

    let delay: f64 = match env_number("FAKE_SERENA_START_DELAY", 0.0) {
        Ok(d) => d,
        Err(e) => return fail(&e),
    };
    if delay > 0.0 {
        std::thread::sleep(Duration::try_from_secs_f64(delay).unwrap_or(Duration::MAX));
    }

    let project_path = option(args, "--project").first().map(|p| absolute(p));
    let project_name = project_path.as_ref().map(|p| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let context = option(args, "--context")
        .first()
        .copied()
        .unwrap_or("desktop-app")
        .to_string();
    let mut modes: Vec<String> = option(args, "--mode")
        .into_iter()
        .map(String::from)
        .collect();
    if modes.is_empty() {
        modes = vec!["interactive".into(), "editing".into()];
    }
    let transport = option(args, "--transport")
        .first()
        .copied()
        .unwrap_or("stdio")
        .to_string();
    let dashboard = Arc::new(Dashboard {
        project_name,
        project_path: project_path.map(|p| p.to_string_lossy().into_owned()),
        context,
        modes,
        log: vec!["INFO fake serena started".into()],
        shutdown_ignored: cfg!(windows) && ignore_term,
    });

    let children = match env_number("FAKE_SERENA_CHILDREN", 0usize) {
        Ok(n) => n,
        Err(e) => return fail(&e),
    };
    let mut kids: Vec<Child> = Vec::with_capacity(children);
    for _ in 0..children {
        match language_server_command(ignore_term || children_ignore_term()).spawn() {
            Ok(child) => kids.push(child),
            Err(e) => return fail(&format!("cannot start a child: {e}")),
        }
    }

    let extra = match env_number("FAKE_SERENA_EXTRA_LISTENERS", 0u64) {
        Ok(n) => n,
        Err(e) => return fail(&e),
    };
    if extra > 0 {
        raise_open_files(extra + 64);
    }
    let mut listeners = Vec::new();
    for _ in 0..extra {
        match TcpListener::bind(("127.0.0.1", 0)) {
            Ok(l) => listeners.push(l),
            Err(e) => return fail(&format!("an extra listener: {e}")),
        }
    }

    let dashboard_port = if env_is_1("FAKE_SERENA_NO_DASHBOARD") {
        None
    } else {
        let port = match env_number("FAKE_SERENA_PORT", 0u16) {
            Ok(p) => p,
            Err(e) => return fail(&e),
        };
        let listener = match TcpListener::bind(("127.0.0.1", port)) {
            Ok(l) => l,
            Err(e) => return fail(&format!("the dashboard on port {port}: {e}")),
        };
        let port = match listener.local_addr() {
            Ok(a) => a.port(),
            Err(e) => return fail(&format!("the dashboard's address: {e}")),
        };
        let dashboard = Arc::clone(&dashboard);
        serve(listener, move |req| dashboard.answer(req));
        Some(port)
    };

    if transport != "stdio" {
        let port = option(args, "--port")
            .first()
            .copied()
            .unwrap_or("8000")
            .trim();
        let Ok(port) = port.parse::<u16>() else {
            return fail(&format!("--port {port}: not a port"));
        };
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(l) => serve(l, |req| match req.method.as_str() {
                "GET" | "POST" => Reply::not_found(),
                _ => Reply::not_implemented(),
            }),
            Err(e) => return fail(&format!("the MCP endpoint on port {port}: {e}")),
        }
    }

    match dashboard_port {
        Some(port) => say(&format!("FAKE_SERENA_DASHBOARD_PORT={port}")),
        None => say("FAKE_SERENA_DASHBOARD_PORT=none"),
    }
    // The listeners, the children and this thread live until the process ends.
    let _keep = (listeners, kids);
    if transport == "stdio" && env_is_1("FAKE_SERENA_STDIO_MCP") {
        return stdio_mcp();
    }
    loop {
        std::thread::park();
    }
}

/// MCP over stdio (`FAKE_SERENA_STDIO_MCP=1`): each request line answered at once, until stdin
/// ends.
fn stdio_mcp() -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let reply = match serde_json::from_str::<Value>(&line) {
            Err(e) => json!({"jsonrpc": "2.0", "id": null,
                "error": {"code": -32700, "message": format!("parse error: {e}")}}),
            // A notification: nothing to answer.
            Ok(msg) if msg.get("id").is_none() => continue,
            Ok(msg) => {
                let result = match msg["method"].as_str().unwrap_or_default() {
                    "initialize" => Some(json!({
                        "protocolVersion": msg["params"]["protocolVersion"]
                            .as_str()
                            .unwrap_or("2025-06-18"),
                        "capabilities": {"tools": {"listChanged": false}},
                        "serverInfo": {"name": "fake serena", "version": "0"},
                    })),
                    "ping" => Some(json!({})),
                    "tools/list" => Some(json!({"tools": [{
                        "name": "fake_tool",
                        "description": "does nothing",
                        "inputSchema": {"type": "object", "properties": {}},
                    }]})),
                    _ => None,
                };
                match result {
                    Some(result) => json!({"jsonrpc": "2.0", "id": msg["id"], "result": result}),
                    None => json!({"jsonrpc": "2.0", "id": msg["id"],
                        "error": {"code": -32601, "message": "method not found"}}),
                }
            }
        };
        if writeln!(stdout, "{reply}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            break;
        }
    }
    ExitCode::SUCCESS
}

/// `serena fake-language-server`, as the server starts it (see [`language_server`]).
fn language_server_command(ignore_term: bool) -> Command {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("serena"));
    let mut cmd = Command::new(exe);
    cmd.arg("fake-language-server");
    detach(&mut cmd, ignore_term);
    cmd
}

/// A child in a session of its own, SIGTERM blocked from its first instruction if asked.
#[cfg(unix)]
#[allow(unsafe_code)]
fn detach(cmd: &mut Command, ignore_term: bool) {
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
    use std::os::unix::process::CommandExt;
    let mut mask = SigSet::empty();
    if ignore_term {
        mask.add(Signal::SIGTERM);
    }
    // SAFETY: the closure runs in the forked child before exec and only makes two
    // async-signal-safe system calls (setsid, pthread_sigmask) on data prepared before the
    // fork: no allocation, no lock.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::setsid()?;
            // The mask set here survives exec (the fake's own mask blocks SIGUSR1 and SIGUSR2,
            // which the child must not inherit).
            pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&mask), None)?;
            Ok(())
        });
    }
}

/// A detached child in a process group of its own: no console, so no console event of the
/// fake's reaches it.
#[cfg(windows)]
fn detach(cmd: &mut Command, _ignore_term: bool) {
    use std::os::windows::process::CommandExt;
    use windows_sys::Win32::System::Threading::{CREATE_NEW_PROCESS_GROUP, DETACHED_PROCESS};
    cmd.creation_flags(DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP);
}

/// Whether only the children ignore SIGTERM (`FAKE_SERENA_CHILDREN_IGNORE_TERM=1`).
fn children_ignore_term() -> bool {
    env_is_1("FAKE_SERENA_CHILDREN_IGNORE_TERM")
}

/// `serena fake-language-server`: sleeps for an hour (SIGTERM, or Ctrl+C and Ctrl+Break,
/// ignored if `FAKE_SERENA_IGNORE_TERM=1` or `FAKE_SERENA_CHILDREN_IGNORE_TERM=1`).
fn language_server() -> ExitCode {
    if env_is_1("FAKE_SERENA_IGNORE_TERM") || children_ignore_term() {
        // Already so when the fake started it; also when started some other way.
        let _ = signals::ignore_term();
    }
    std::thread::sleep(Duration::from_secs(3600));
    ExitCode::SUCCESS
}

/// `serena fake-client CMD ARGS...`: runs CMD with this process's stdio and waits.
fn client(mut cmd: Vec<OsString>) -> ExitCode {
    if cmd.is_empty() {
        say(USAGE);
        return ExitCode::from(2);
    }
    let program = cmd.remove(0);
    match Command::new(&program).args(&cmd).status() {
        Ok(status) => std::process::exit(exit_code(status)),
        Err(e) => {
            say(&format!(
                "fake client: cannot start {}: {e}",
                program.to_string_lossy()
            ));
            ExitCode::from(127)
        }
    }
}

/// The child's exit code (all of it: Windows' are 32-bit), 128 + the signal that ended it.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    if let Some(code) = status.code() {
        return code;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return 128 + sig;
        }
    }
    1
}

/// Raises the soft limit of open files to `want` if it is lower and the hard limit allows it.
#[cfg(unix)]
fn raise_open_files(want: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let soft_lower = limit.current.is_some_and(|soft| soft < want);
    let hard_allows = limit.maximum.is_none_or(|hard| want <= hard);
    if soft_lower && hard_allows {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(want),
                maximum: limit.maximum,
            },
        );
    }
}

#[cfg(not(unix))]
fn raise_open_files(_want: u64) {}

/// Whether the dashboard hangs (SIGUSR1 on, SIGUSR2 off), and the change of it.
static HUNG: Mutex<bool> = Mutex::new(false);
static HUNG_CHANGED: Condvar = Condvar::new();

#[cfg(unix)]
fn set_hung(hung: bool) {
    *HUNG.lock().unwrap_or_else(PoisonError::into_inner) = hung;
    HUNG_CHANGED.notify_all();
}

fn wait_while_hung() {
    let mut hung = HUNG.lock().unwrap_or_else(PoisonError::into_inner);
    while *hung {
        hung = HUNG_CHANGED
            .wait(hung)
            .unwrap_or_else(PoisonError::into_inner);
    }
}

#[cfg(unix)]
mod signals {
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};

    /// Blocks SIGUSR1, SIGUSR2 (and SIGTERM if `ignore_term`) in this thread, and so in every
    /// thread started after, and takes them in a thread of their own: the hang signals act at
    /// once, SIGTERM does nothing. Call before any other thread starts.
    pub fn watch(ignore_term: bool) -> std::io::Result<()> {
        let mut set = SigSet::empty();
        set.add(Signal::SIGUSR1);
        set.add(Signal::SIGUSR2);
        if ignore_term {
            set.add(Signal::SIGTERM);
        }
        pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
        std::thread::Builder::new()
            .name("signals".into())
            .stack_size(64 * 1024)
            .spawn(move || loop {
                match set.wait() {
                    Ok(Signal::SIGUSR1) => super::set_hung(true),
                    Ok(Signal::SIGUSR2) => super::set_hung(false),
                    _ => {}
                }
            })?;
        Ok(())
    }

    /// SIGTERM blocked in this thread (a single-threaded child: the process), never delivered.
    pub fn ignore_term() -> std::io::Result<()> {
        let mut set = SigSet::empty();
        set.add(Signal::SIGTERM);
        pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
        Ok(())
    }
}

#[cfg(windows)]
mod signals {
    /// No signals on Windows; with `ignore_term`, Ctrl+C and Ctrl+Break are ignored.
    pub fn watch(ignore_term: bool) -> std::io::Result<()> {
        if ignore_term {
            ignore_term_events()?;
        }
        Ok(())
    }

    /// Ctrl+C and Ctrl+Break are handled (by tokio's console handler, which answers "handled"
    /// while a listener exists) and nothing is done about them.
    pub fn ignore_term() -> std::io::Result<()> {
        ignore_term_events()
    }

    fn ignore_term_events() -> std::io::Result<()> {
        let listeners = (
            tokio::signal::windows::ctrl_c()?,
            tokio::signal::windows::ctrl_break()?,
        );
        // Held for the life of the process.
        std::mem::forget(listeners);
        Ok(())
    }
}

/// One HTTP request, its body read.
struct Request {
    method: String,
    target: String,
    body: Vec<u8>,
}

/// A reply: status, reason, content type, body.
struct Reply {
    status: u16,
    reason: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Reply {
    fn json(v: &Value) -> Reply {
        Reply {
            status: 200,
            reason: "OK",
            content_type: "application/json",
            body: v.to_string().into_bytes(),
        }
    }

    fn error(status: u16, reason: &'static str) -> Reply {
        Reply {
            status,
            reason,
            content_type: "text/plain; charset=utf-8",
            body: format!("{status} {reason}\n").into_bytes(),
        }
    }

    fn not_found() -> Reply {
        Reply::error(404, "Not Found")
    }

    fn not_implemented() -> Reply {
        Reply::error(501, "Not Implemented")
    }

    fn bad_request(why: &str) -> Reply {
        Reply {
            status: 400,
            reason: "Bad Request",
            content_type: "application/json",
            body: json!({ "error": why }).to_string().into_bytes(),
        }
    }
}

/// Serves `listener` in a thread of its own: a thread per connection, one request each,
/// answered by `answer` (which may block, as a hung dashboard does).
fn serve(listener: TcpListener, answer: impl Fn(&Request) -> Reply + Send + Sync + 'static) {
    let answer = Arc::new(answer);
    let spawned = std::thread::Builder::new()
        .name("accept".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let answer = Arc::clone(&answer);
                // A thread that cannot start drops the connection; the fake goes on.
                let _ = std::thread::Builder::new()
                    .name("conn".into())
                    .stack_size(256 * 1024)
                    .spawn(move || connection(conn, &*answer));
            }
        });
    if let Err(e) = spawned {
        say(&format!("fake serena: cannot start a server thread: {e}"));
    }
}

/// The longest request head and body read.
const MAX_HEAD: u64 = 64 * 1024;
const MAX_BODY: usize = 1 << 20;

fn connection(conn: TcpStream, answer: &dyn Fn(&Request) -> Reply) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
    let Ok(read_half) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let reply = match read_request(&mut reader) {
        Ok(Some(req)) => answer(&req),
        Ok(None) => return, // closed before a request
        Err(reply) => reply,
    };
    let mut out = conn;
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reply.status,
        reply.reason,
        reply.content_type,
        reply.body.len()
    );
    let _ = out
        .write_all(head.as_bytes())
        .and_then(|()| out.write_all(&reply.body))
        .and_then(|()| out.flush());
    let _ = out.shutdown(Shutdown::Write);
}

/// Reads one request (line, headers, body by `Content-Length`). `Ok(None)`: the
/// connection closed first; `Err`: the reply to a malformed request.
fn read_request(reader: &mut impl BufRead) -> Result<Option<Request>, Reply> {
    let mut head = reader.by_ref().take(MAX_HEAD);
    let mut line = String::new();
    // Blank lines before the request line are allowed (RFC 9112, 2.2).
    loop {
        line.clear();
        match head.read_line(&mut line) {
            Ok(0) => return Ok(None),
            Ok(_) if line.trim().is_empty() => continue,
            Ok(_) => break,
            Err(_) => return Err(Reply::bad_request("unreadable request line")),
        }
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(Reply::bad_request("malformed request line"));
    };
    let (method, target) = (method.to_string(), target.to_string());
    let mut length: Option<usize> = None;
    let mut chunked = false;
    loop {
        line.clear();
        match head.read_line(&mut line) {
            Ok(0) => return Err(Reply::bad_request("headers cut short")),
            Ok(_) => {}
            Err(_) => return Err(Reply::bad_request("unreadable headers")),
        }
        let header = line.trim_end_matches(['\r', '\n']);
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            return Err(Reply::bad_request("malformed header"));
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            match value.parse() {
                Ok(n) => length = Some(n),
                Err(_) => return Err(Reply::bad_request("bad Content-Length")),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    if chunked {
        // Nothing that talks to a Serena dashboard sends one.
        return Err(Reply::bad_request("chunked bodies are not read here"));
    }
    let n = length.unwrap_or(0);
    if n > MAX_BODY {
        return Err(Reply::error(413, "Content Too Large"));
    }
    let mut body = vec![0; n];
    head.into_inner()
        .read_exact(&mut body)
        .map_err(|_| Reply::bad_request("body cut short"))?;
    Ok(Some(Request {
        method,
        target,
        body,
    }))
}

impl Dashboard {
    fn answer(&self, req: &Request) -> Reply {
        match req.method.as_str() {
            "GET" => {
                wait_while_hung();
                self.get(&req.target)
            }
            "POST" => {
                wait_while_hung();
                self.post(&req.target, &req.body)
            }
            "PUT" if req.target == "/shutdown" => {
                if !self.shutdown_ignored {
                    let _ = std::thread::Builder::new().stack_size(64 * 1024).spawn(|| {
                        std::thread::sleep(Duration::from_millis(200));
                        std::process::exit(0);
                    });
                }
                Reply::json(&json!({"status": "shutting down"}))
            }
            "PUT" => Reply::not_found(),
            _ => Reply::not_implemented(),
        }
    }

    fn get(&self, target: &str) -> Reply {
        let v = match target {
            "/heartbeat" => json!({"status": "alive"}),
            "/get_config_overview" => json!({
                "active_project": {
                    "name": self.project_name, "path": self.project_path,
                    "language": "python", "is_trusted": true,
                },
                "context": {"name": self.context, "description": "", "path": ""},
                "modes": self.modes.iter()
                    .map(|m| json!({"name": m, "description": "", "path": ""}))
                    .collect::<Vec<_>>(),
                "registered_projects": [], "available_modes": [], "available_contexts": [],
                "active_tools": [], "available_tools": [], "tool_stats_summary": {},
                "serena_version": "fake",
            }),
            "/get_tool_names" => json!({"tool_names": ["fake_tool"]}),
            "/get_tool_stats" => json!({"stats": {}}),
            "/queued_task_executions" => json!({"queued_executions": [], "status": "success"}),
            "/last_execution" => json!({"last_execution": null, "status": "success"}),
            _ => return Reply::not_found(),
        };
        Reply::json(&v)
    }

    fn post(&self, target: &str, body: &[u8]) -> Reply {
        if target != "/get_log_messages" && target != "/cancel_task_execution" {
            return Reply::not_found();
        }
        let body: Map<String, Value> = if body.iter().all(u8::is_ascii_whitespace) {
            Map::new()
        } else {
            match serde_json::from_slice(body) {
                Ok(Value::Object(m)) => m,
                Ok(_) => return Reply::bad_request("the body is not a JSON object"),
                Err(e) => return Reply::bad_request(&format!("the body is not JSON: {e}")),
            }
        };
        if target == "/get_log_messages" {
            let start = match body.get("start_idx") {
                None => 0,
                Some(v) => match v.as_i64() {
                    Some(n) => n,
                    None => return Reply::bad_request("start_idx: not an integer"),
                },
            };
            let start = usize::try_from(start.max(0)).unwrap_or(usize::MAX);
            let messages = self.log.get(start..).unwrap_or_default();
            return Reply::json(&json!({
                "messages": messages,
                "max_idx": self.log.len() as i64 - 1,
                "active_project": self.project_name,
            }));
        }
        Reply::json(&cancel_reply(body.get("task_id").unwrap_or(&Value::Null)))
    }
}

/// What Serena 2.1.0 answers to a cancel when no running task has that ID (the fake runs none):
/// the ID is validated as an int (a decimal string passes), and the "not found" message
/// escapes the raw value with `html.escape`, which fails for a JSON number (Serena's own bug),
/// so only a string ID gets a "success" reply.
fn cancel_reply(raw: &Value) -> Value {
    let error =
        |message: String| json!({"status": "error", "message": message, "was_cancelled": false});
    match raw {
        Value::String(s) if s.trim().parse::<i64>().is_ok() => json!({
            "status": "success", "was_cancelled": false,
            "message": format!(
                "Task with id {} not found, maybe execution was already finished",
                s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
            ),
        }),
        Value::Number(n) if n.is_i64() || n.is_u64() => {
            error("'int' object has no attribute 'replace'".into())
        }
        other => error(format!("task_id: not an integer: {other}")),
    }
}
