//! `serena-tray launch --share`: instead of starting a Serena of its own, the MCP client is
//! bridged to the one shared session of its (project, context, modes), a streamable-HTTP
//! Serena that the dashboard launches and keeps warm for `share_linger_seconds` after its last
//! client (`bridge` says how messages go; `Mcp-Session-Id` and `MCP-Protocol-Version` are
//! carried, and the MCP session is DELETEd at the end).
//!
//! On demand (`share_on_demand`, the default), with an entry in the handshake cache for what
//! this client asks (`handshake`), no Serena starts for it until a message needs one: the
//! client's handshake is answered from the cache while this process registers with the
//! session in the background (asleep, if none runs). Without an entry, the session is started
//! at once and the entry is filled from its answers. A shared session whose clients make no call
//! for `share_sleep_minutes` is put to sleep by the dashboard; the next call wakes it.
//!
//! The attachment this process holds keeps the session alive; the dashboard watches this
//! process, so its death (however it dies) detaches it. If the shared Serena dies under it, the
//! calls in flight get a JSON-RPC error, the session is requested again (a new Serena), the
//! client's own handshake is replayed to it, and the next calls work.
//!
//! One call is refused: `activate_project` for another project, which would switch the
//! project of every client of the session (a private `launch` has no such limit).
//!
//! Deliberately not here: deciding what may be shared (`plan`: a Serena over stdio with a
//! project directory; anything else runs privately, as plain `launch` does) and the sessions
//! themselves (the dashboard's instance manager).

mod bridge;
mod sse;

use super::handshake::Cache;
use super::McpClient;
use crate::core::cmdline;
use crate::core::running::{Client, ClientError};
use crate::core::settings::Settings;
use bridge::{Bridge, Setup, Start};
use serde_json::json;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

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

/// The shared session the bridge talks to (its `url` empty while it has no Serena).
#[derive(Clone)]
struct Endpoint {
    session_id: String,
    url: String,
    project_name: String,
}

/// How this process asks for its shared session.
#[derive(Clone, Copy)]
struct Asking {
    /// This process and the MCP client it serves.
    me: u32,
    mcp_client: Option<u32>,
    /// Not to start Serena: the session asleep serves as well.
    on_demand: bool,
    sleep: Duration,
}

/// Requests the shared session of `target` (woken, unless on demand) and attaches this
/// process to it.
async fn connect(client: &Client, target: &Target, asking: Asking) -> Result<Endpoint, Fallback> {
    let project = target.project.display().to_string();
    let sleep_minutes = asking.sleep.as_secs_f64() / 60.0;
    let mut body = json!({"project_path": project, "shared": true, "sleep_minutes": sleep_minutes});
    if asking.on_demand {
        body["on_demand"] = json!(true);
    }
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
            &json!({"pid": asking.me, "client_pid": asking.mcp_client}),
        )
        .await?;
    let pid = session["pid"].as_u64().filter(|p| *p != 0);
    let name = match pid {
        Some(pid) => client.get(&format!("/api/instances/{pid}")).await.ok(),
        None => None,
    };
    let name = name
        .and_then(|i| i["project_name"].as_str().map(String::from))
        .unwrap_or_default();
    Ok(Endpoint {
        session_id: id.to_string(),
        url: url.to_string(),
        project_name: name,
    })
}

/// What the bridge is asked to do: see the module docs.
pub struct Options {
    pub on_demand: bool,
    pub sleep: Duration,
}

/// Bridges this process's stdio to the shared session of `target` until the MCP client is
/// done; `Err` (before anything was read from stdin, the client handed back) when it cannot,
/// and the caller runs Serena privately.
pub async fn run(
    settings: &Settings,
    target: Target,
    options: Options,
    mcp_client: McpClient,
) -> Result<std::process::ExitCode, (Fallback, McpClient)> {
    let asking = Asking {
        me: std::process::id(),
        mcp_client: mcp_client.pid(),
        on_demand: options.on_demand,
        sleep: options.sleep,
    };
    let (dashboard, start, cache) = match start(settings, &target, asking).await {
        Ok(found) => found,
        Err(why) => return Err((why, mcp_client)),
    };
    let setup = Setup {
        dashboard,
        target,
        asking,
        cache,
    };
    let (bridge, out) = Bridge::new(setup, &start);
    bridge.run(out, mcp_client.gone()).await;
    Ok(std::process::ExitCode::SUCCESS)
}

/// The running dashboard (started if it does not run, as every launch does), and how the
/// bridge starts: on demand from the cache entry for `target`, or else attached to its shared
/// session, started now.
async fn start(
    settings: &Settings,
    target: &Target,
    asking: Asking,
) -> Result<(Client, Start, Cache), Fallback> {
    // The cache's key is read while the running daemon is looked for (each takes a few ms).
    let cache = {
        let (settings, target) = (settings.clone(), target.clone());
        tokio::task::spawn_blocking(move || Cache::of(&settings, &target))
    };
    let (found, cache) = tokio::join!(Client::find(settings), cache);
    let cache = cache.map_err(|_| Fallback::NoSession)?;
    // The running daemon (the warm case: one look); else start it.
    let client = match found {
        Some(client) => client,
        None => {
            super::ensure_dashboard(settings.clone()).await;
            Client::find(settings)
                .await
                .ok_or(Fallback::NoDaemon(settings.dashboard.port))?
        }
    };
    if asking.on_demand {
        if let Some(entry) = cache.load() {
            return Ok((client, Start::OnDemand(entry), cache));
        }
    }
    let woken = Asking {
        on_demand: false,
        ..asking
    };
    let endpoint = connect(&client, target, woken).await?;
    Ok((client, Start::Connected(endpoint), cache))
}

#[cfg(test)]
mod tests {
    use super::*;

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
