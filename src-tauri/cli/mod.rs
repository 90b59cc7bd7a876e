//! The command line: parsing (clap) and one function per verb. Output for people (tables) and for
//! scripts (`--json`, JSON bodies). Errors are one line on stderr and a non-zero exit. Verbs that
//! act (`kill`, `session`) go through the running daemon's API when there is one, so that the
//! daemon's view stays the truth; `list` and `kill` also work without one, on the core directly.

mod configure;
mod output;

use crate::core::app::{App, AppError};
use crate::core::background::{self, Started};
use crate::core::kill::ZombieSweep;
use crate::core::model::Session;
use crate::core::reaper::KillReport;
use crate::core::running::{Client, ClientError};
use crate::core::sessions::{ReleaseStatus, Released, SessionRequest};
use crate::core::settings::{Flags, HomeError, Settings};
use crate::core::Core;
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "serena-tray",
    version = env!("SERENA_TRAY_VERSION"),
    about = "One tray and one dashboard for every Serena MCP server; finds and reaps zombies."
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    /// With no command: start the tray app in the tray, its window closed (unless
    /// web_dashboard_global_open_on_launch); launch at login and `launch` start it so. Without
    /// it the app opens its window, or shows the running app's.
    #[arg(long)]
    minimized: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Args)]
struct Global {
    /// Serena's home directory [default: $SERENA_HOME, else ~/.serena]
    #[arg(long, global = true, value_name = "DIR")]
    serena_home: Option<PathBuf>,
    /// Seconds an instance may be orphaned or unresponsive before it is a zombie [default: 10,
    /// or zombie_grace in tray/config.toml]
    #[arg(long, global = true, value_name = "SECONDS", value_parser = seconds)]
    zombie_grace: Option<std::time::Duration>,
    /// Port of the dashboard and API [default: web_dashboard_global_port in serena_config.yml, else
    /// 25282]
    #[arg(
        long,
        global = true,
        value_name = "N",
        alias = "web-dashboard-global-port"
    )]
    port: Option<u16>,
    /// With --port 0: write the chosen port to this file once it listens (removed on exit)
    #[arg(long, global = true, value_name = "PATH")]
    port_file: Option<PathBuf>,
    /// Open the dashboard once at start [default: web_dashboard_global_open_on_launch in
    /// serena_config.yml, else false]
    #[arg(long, global = true, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    web_dashboard_global_open_on_launch: Option<bool>,
    /// Shut down an instance idle for this many minutes, 0 for never [default:
    /// idle_shutdown_minutes in serena_config.yml, else never]
    #[arg(long, global = true, value_name = "MINUTES", value_parser = minutes)]
    idle_shutdown_minutes: Option<std::time::Duration>,
    /// How long a shared session outlives its last client [default: share_linger_seconds in
    /// tray/config.toml, else 120]
    #[arg(long, global = true, value_name = "SECONDS", value_parser = seconds)]
    share_linger_seconds: Option<std::time::Duration>,
    /// Port of the receiver for Serena's tray protocol [default: 24224]
    #[arg(long, global = true, value_name = "N")]
    tray_protocol_port: Option<u16>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List every Serena instance on this machine, with its state (works without a daemon)
    List {
        /// Print a JSON array (the documented, stable format) instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Run headless (for servers, SSH, WSL): the API, the dashboard, the tray protocol
    Daemon,
    /// Kill instances with their whole process tree (through the daemon if one runs)
    Kill {
        /// PIDs of the instances to kill
        #[arg(
            value_name = "PID",
            required_unless_present = "zombies",
            conflicts_with = "zombies"
        )]
        pids: Vec<u32>,
        /// Kill every zombie and prune dead registry entries
        #[arg(long)]
        zombies: bool,
    },
    /// Launch, release and list dedicated Serena sessions (needs a running daemon)
    #[command(subcommand)]
    Session(SessionCommand),
    /// Show the tray app's dashboard window (or print the URL that logs a browser in)
    Open,
    /// Run Serena for an MCP client (put this in the client's config): starts the dashboard
    /// once, passes stdio through, and ends Serena with its whole tree when the client goes
    Launch(LaunchArgs),
    /// Route the Serena entries of every MCP client's config through `serena-tray launch`
    /// (shows the change; --apply makes it, --undo reverses it)
    Configure(configure::ConfigureArgs),
}

#[derive(Debug, Args)]
struct LaunchArgs {
    /// Make sure the global dashboard runs [default: web_dashboard_global in
    /// serena_config.yml, else true]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    web_dashboard_global: Option<bool>,
    /// Serve this client from the one shared Serena of its project, context and modes
    /// (started on first use, kept warm after its last client) instead of a Serena of its own
    #[arg(long)]
    share: bool,
    /// Answer the MCP handshake from a cache and start Serena on the first call that needs it
    /// [default: with --share, share_on_demand in tray/config.toml, else true; without, false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    on_demand: Option<bool>,
    /// With --share: stop the shared Serena after this many minutes without a call, its
    /// clients kept, until the next call; 0 for never [default: share_sleep_minutes in
    /// tray/config.toml, else 15]
    #[arg(long, value_name = "MINUTES", value_parser = minutes)]
    share_sleep_minutes: Option<std::time::Duration>,
    /// The command and its arguments, after `--` (e.g. `-- serena start-mcp-server --context
    /// ide`)
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<std::ffi::OsString>,
}

#[derive(Debug, Subcommand)]
enum SessionCommand {
    /// Launch a dedicated Serena for a project; prints the session as JSON
    Request {
        /// The project directory
        path: PathBuf,
        #[arg(long)]
        context: Option<String>,
        /// A mode (repeatable)
        #[arg(long = "mode", value_name = "MODE")]
        modes: Vec<String>,
        /// streamable-http (default) or sse
        #[arg(long)]
        transport: Option<String>,
        /// Reuse the live session already serving this project and context
        #[arg(long)]
        shared: bool,
        /// Release it unless renewed (`session renew`) within this many seconds (with
        /// --idle-shutdown-minutes, it is also shut down once idle that long)
        #[arg(long, value_name = "SECONDS")]
        lease_seconds: Option<f64>,
    },
    /// Renew a session's lease (by its own length, or --lease-seconds)
    Renew {
        id: String,
        #[arg(long, value_name = "SECONDS")]
        lease_seconds: Option<f64>,
    },
    /// Stop a session and its whole process tree
    Release { id: String },
    /// List the sessions
    List {
        #[arg(long)]
        json: bool,
    },
}

/// A failure of a verb: printed as one line.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    #[error(transparent)]
    Home(#[from] HomeError),
    #[error(transparent)]
    Core(#[from] crate::core::CoreError),
    #[error(transparent)]
    App(#[from] AppError),
    #[error(transparent)]
    Kill(#[from] crate::core::kill::KillError),
    #[error(transparent)]
    Launch(#[from] crate::launch::LaunchError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    NoHome(#[from] crate::core::configure::NoHome),
    #[error("cannot tell the project's directory: {0}")]
    Project(#[source] std::io::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot write the output: {0}")]
    Output(std::io::Error),
    #[error("{0}")]
    Gui(#[source] AppHostError),
    #[error("{0}")]
    Other(String),
}

/// What only the app binary (`serena-tray-app`, with the GUI libraries) can run: the tray app (its
/// window is `serena-tray-window`, which it starts). The `serena-tray` binary has none, and starts
/// no GUI library at all (a `launch`, `list` or the daemon start in a few milliseconds, also where
/// GTK is missing): it hands the tray app over to `serena-tray-app`.
pub trait AppHost {
    /// Runs the tray app until it quits; its window opens at start unless `minimized` (or
    /// with `web_dashboard_global_open_on_launch`).
    fn run_app(&self, settings: Settings, minimized: bool) -> Result<AppOutcome, AppHostError>;
}

/// Why the tray app could not run (the shell's own error, which this crate's front end cannot
/// name without the GUI).
pub type AppHostError = Box<dyn std::error::Error + Send + Sync>;

/// How the tray app ended.
pub enum AppOutcome {
    Quit,
    /// Serena Tray already serves the port: nothing was started.
    AlreadyRunning,
}

/// The app binary's name, next to `serena-tray`.
pub const APP_BINARY: &str = "serena-tray-app";

/// Entry point of the `serena-tray` binary (no GUI).
pub fn main() -> ExitCode {
    main_with(None)
}

/// Entry point of both binaries: `host` is the app binary's GUI, `None` in `serena-tray`.
pub fn main_with(host: Option<&dyn AppHost>) -> ExitCode {
    crate::core::heap::one_arena();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_error(e),
    };
    init_logging();
    match run(cli, host) {
        Ok(code) => code,
        Err(e) => {
            let msg = e.to_string();
            eprintln!("serena-tray: {}", msg.lines().next().unwrap_or(""));
            ExitCode::FAILURE
        }
    }
}

/// Help and version go to stdout as clap writes them; a usage error is one line on stderr.
fn clap_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let rendered = e.render().to_string();
    let first = rendered
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid arguments");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    eprintln!("serena-tray: {first} (see serena-tray --help)");
    ExitCode::from(2)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SERENA_TRAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
}

/// The settings every verb runs with: the files under the Serena home, then the flags. The
/// files' warnings go to stderr.
fn settings(g: &Global) -> Result<Settings, CliError> {
    let (settings, warnings) = Settings::resolve(&Flags {
        serena_home: g.serena_home.clone(),
        zombie_grace: g.zombie_grace,
        port: g.port,
        tray_protocol_port: g.tray_protocol_port,
        open_on_launch: g.web_dashboard_global_open_on_launch,
        idle_shutdown: g.idle_shutdown_minutes,
        share_linger: g.share_linger_seconds,
        port_file: g.port_file.clone(),
    })?;
    for w in &warnings {
        eprintln!("serena-tray: warning: {w}");
    }
    Ok(settings)
}

/// A number of minutes (decimals allowed), >= 0.
fn minutes(arg: &str) -> Result<std::time::Duration, String> {
    arg.parse::<f64>()
        .ok()
        .and_then(crate::core::settings::minutes)
        .ok_or_else(|| format!("{arg:?} is not a number of minutes >= 0"))
}

/// A number of seconds, >= 0.
fn seconds(arg: &str) -> Result<std::time::Duration, String> {
    arg.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(std::time::Duration::from_secs_f64)
        .ok_or_else(|| format!("{arg:?} is not a number of seconds >= 0"))
}

fn run(cli: Cli, host: Option<&dyn AppHost>) -> Result<ExitCode, CliError> {
    let ctx = settings(&cli.global)?;
    match cli.command {
        Some(Command::List { json }) => list(ctx, json).map(|()| ExitCode::SUCCESS),
        Some(Command::Daemon) => run_daemon(ctx).map(|()| ExitCode::SUCCESS),
        Some(Command::Kill { pids, zombies }) => kill(ctx, pids, zombies),
        Some(Command::Session(cmd)) => {
            session(ctx, cmd, cli.global.idle_shutdown_minutes).map(|()| ExitCode::SUCCESS)
        }
        Some(Command::Open) => open(ctx).map(|()| ExitCode::SUCCESS),
        Some(Command::Launch(args)) => launch(ctx, args),
        Some(Command::Configure(args)) => configure::run(args),
        None => default_verb(ctx, host, cli.minimized).map(|()| ExitCode::SUCCESS),
    }
}

fn print(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(CliError::Output)
}

fn print_json(v: &Value) -> Result<(), CliError> {
    let mut s = serde_json::to_string_pretty(v).map_err(|e| CliError::Other(e.to_string()))?;
    s.push('\n');
    print(&s)
}

/// No verb: the tray app where there is a display (run here by the app binary, handed over to
/// it by `serena-tray`), else the daemon.
fn default_verb(
    ctx: Settings,
    host: Option<&dyn AppHost>,
    minimized: bool,
) -> Result<(), CliError> {
    if !has_display() {
        eprintln!("serena-tray: no display (DISPLAY and WAYLAND_DISPLAY are unset): running as the daemon");
        return run_daemon(ctx);
    }
    let Some(host) = host else {
        return hand_to_app().or_else(|e| {
            eprintln!("serena-tray: {e}: running as the daemon");
            run_daemon(ctx)
        });
    };
    match host
        .run_app(ctx.clone(), minimized)
        .map_err(CliError::Gui)?
    {
        AppOutcome::Quit => Ok(()),
        AppOutcome::AlreadyRunning if minimized => {
            println!("serena-tray is already running");
            Ok(())
        }
        AppOutcome::AlreadyRunning => open(ctx),
    }
}

/// Becomes `serena-tray-app` (next to this binary) with the same arguments: on Unix the same
/// process (its PID, its environment); on Windows a detached process of its own (the console
/// this one may have opened goes away), this one ending at once. Returns only if it could not.
fn hand_to_app() -> Result<(), CliError> {
    let exe = std::env::current_exe().map_err(|e| CliError::Other(e.to_string()))?;
    let app = exe.with_file_name(format!("{APP_BINARY}{}", std::env::consts::EXE_SUFFIX));
    if !app.is_file() {
        return Err(CliError::Other(format!(
            "the tray app ({}) is not installed next to serena-tray",
            app.display()
        )));
    }
    let mut cmd = std::process::Command::new(&app);
    cmd.args(std::env::args_os().skip(1));
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let e = cmd.exec();
        Err(CliError::Other(format!(
            "cannot run {}: {e}",
            app.display()
        )))
    }
    #[cfg(windows)]
    {
        use std::os::windows::process::CommandExt;
        use windows_sys::Win32::System::Threading::{CREATE_NO_WINDOW, DETACHED_PROCESS};
        cmd.creation_flags(DETACHED_PROCESS | CREATE_NO_WINDOW)
            .spawn()
            .map_err(|e| CliError::Other(format!("cannot run {}: {e}", app.display())))?;
        std::process::exit(0);
    }
    #[cfg(not(any(unix, windows)))]
    {
        let status = cmd
            .status()
            .map_err(|e| CliError::Other(format!("cannot run {}: {e}", app.display())))?;
        std::process::exit(status.code().unwrap_or(1));
    }
}

/// `serena-tray launch ... -- CMD...`; its exit code is CMD's.
fn launch(ctx: Settings, args: LaunchArgs) -> Result<ExitCode, CliError> {
    let dashboard = args.web_dashboard_global.unwrap_or(ctx.dashboard.enabled);
    let launch = crate::launch::Launch {
        dashboard,
        share: args.share,
        on_demand: args.on_demand.unwrap_or(ctx.tray.share_on_demand),
        private_on_demand: args.on_demand == Some(true),
        sleep: args
            .share_sleep_minutes
            .unwrap_or(ctx.tray.share_sleep_minutes),
        command: args.command,
    };
    Ok(crate::launch::run(ctx, launch)?)
}

/// Whether a desktop session is there to show a tray in (always, outside X11/Wayland systems).
fn has_display() -> bool {
    if cfg!(any(target_os = "windows", target_os = "macos")) {
        return true;
    }
    ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
}

fn list(ctx: Settings, json: bool) -> Result<(), CliError> {
    let core = Core::new(ctx);
    let instances = runtime()?.block_on(core.refresh())?;
    if json {
        print_json(&json!(instances))
    } else {
        let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        print(&output::render_table(
            &instances,
            crate::core::model::now(),
            colour,
        ))
    }
}

fn run_daemon(ctx: Settings) -> Result<(), CliError> {
    let rt = runtime()?;
    rt.block_on(async move {
        match background::start(ctx).await? {
            Started::AlreadyRunning { url } => {
                println!("serena-tray is already running: {url}");
                Ok(())
            }
            Started::Running(app) => {
                println!("Serena Tray daemon listening on {}", app.url());
                println!("{}", dashboard_line(&app));
                let _ = std::io::stdout().flush();
                if app.settings().dashboard.open_on_launch {
                    if let Err(e) = app.open_in_browser() {
                        eprintln!("serena-tray: cannot open the dashboard in a browser: {e}");
                    }
                }
                wait_for_signal().await;
                eprintln!("serena-tray: stopping");
                app.shutdown().await;
                Ok(())
            }
        }
    })
}

/// Where to open the dashboard. The URL with the token only on a terminal: autostart and service
/// logs are read by others.
pub(crate) fn dashboard_line(app: &App) -> String {
    if std::io::stdout().is_terminal() {
        format!("Dashboard: {}", app.login_url())
    } else {
        format!(
            "Dashboard: {} (log in with the URL that `serena-tray open` prints)",
            app.url()
        )
    }
}

/// SIGINT or SIGTERM; on Windows Ctrl+C, Ctrl+Break, the console closed, or the system
/// shutting down.
pub(crate) async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(windows)]
    {
        use tokio::signal::windows::{ctrl_break, ctrl_close, ctrl_shutdown};
        let (Ok(mut brk), Ok(mut close), Ok(mut shutdown)) =
            (ctrl_break(), ctrl_close(), ctrl_shutdown())
        else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = brk.recv() => {}
            _ = close.recv() => {}
            _ = shutdown.recv() => {}
        }
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Where `kill` acts: through the running daemon, or on a core of its own when none runs.
enum Killer {
    Daemon(Client),
    Core(Core),
}

impl Killer {
    async fn kill(&self, pid: u32) -> Result<KillReport, CliError> {
        match self {
            Killer::Daemon(c) => {
                let path = format!("/api/instances/{pid}/kill");
                Ok(c.post_as(&path, &json!({})).await?)
            }
            Killer::Core(core) => Ok(core.kill(pid).await?),
        }
    }

    async fn kill_zombies(&self) -> Result<ZombieSweep, CliError> {
        match self {
            Killer::Daemon(c) => Ok(c.post_as("/api/zombies/kill", &json!({})).await?),
            Killer::Core(core) => Ok(core.kill_zombies().await),
        }
    }
}

fn kill(ctx: Settings, pids: Vec<u32>, zombies: bool) -> Result<ExitCode, CliError> {
    let rt = runtime()?;
    rt.block_on(async move {
        let killer = match Client::find(&ctx).await {
            Some(c) => Killer::Daemon(c),
            None => Killer::Core(Core::new(ctx.clone())),
        };
        let mut ok = true;
        if zombies {
            let sweep = killer.kill_zombies().await?;
            println!(
                "killed {} zombie(s), pruned {} dead registry entr(y/ies)",
                sweep.killed.len(),
                sweep.pruned.len()
            );
            for f in &sweep.failed {
                ok = false;
                eprintln!("serena-tray: {}: {}", f.pid, f.error);
            }
        }
        for pid in pids {
            match killer.kill(pid).await {
                Ok(r) => println!(
                    "{pid}: {} ({} process(es))",
                    r.outcome.as_str(),
                    r.tree.len()
                ),
                Err(e) => {
                    ok = false;
                    eprintln!("serena-tray: {pid}: {e}");
                }
            }
        }
        Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}

async fn need_daemon(ctx: &Settings) -> Result<Client, CliError> {
    Client::find(ctx)
        .await
        .ok_or_else(|| {
            CliError::Other(format!(
                "no Serena Tray is running on port {}: start one with `serena-tray daemon` (or `serena-tray` on a desktop)",
                ctx.dashboard.port
            ))
        })
}

fn session(
    ctx: Settings,
    cmd: SessionCommand,
    idle: Option<std::time::Duration>,
) -> Result<(), CliError> {
    runtime()?.block_on(async move {
        let client = need_daemon(&ctx).await?;
        match cmd {
            SessionCommand::Request {
                path,
                context,
                modes,
                transport,
                shared,
                lease_seconds,
            } => {
                let body = SessionRequest {
                    project_path: absolute(&path)?,
                    context,
                    modes: (!modes.is_empty()).then_some(modes),
                    transport,
                    shared: shared.then_some(true),
                    lease_seconds,
                    // `--idle-shutdown-minutes` given for this session.
                    idle_shutdown_minutes: idle.map(|d| d.as_secs_f64() / 60.0),
                    ..SessionRequest::default()
                };
                // Printed as the daemon wrote it: the documented JSON of a session.
                print_json(&client.post("/request-session", &body).await?)
            }
            SessionCommand::Release { id } => {
                let r: Released = client
                    .post_as("/release-session", &json!({"session_id": id}))
                    .await?;
                let status = match r.status {
                    ReleaseStatus::Terminated => "terminated",
                    ReleaseStatus::AlreadyGone => "already_gone",
                };
                println!("{}: {status}", r.session_id);
                Ok(())
            }
            SessionCommand::Renew { id, lease_seconds } => {
                let path = format!("/api/sessions/{id}/renew");
                let s: Session = client
                    .post_as(&path, &json!({"lease_seconds": lease_seconds}))
                    .await?;
                let left = s
                    .expires_at
                    .map_or(0.0, |at| at - crate::core::model::now());
                println!(
                    "{}: lease renewed, {} left",
                    s.session_id,
                    output::age(left)
                );
                Ok(())
            }
            SessionCommand::List { json } => {
                let list: Vec<Session> = client.get_as("/api/sessions").await?;
                if json {
                    print_json(&json!(list))
                } else {
                    print(&output::render_sessions(&list, crate::core::model::now()))
                }
            }
        }
    })
}

fn absolute(path: &Path) -> Result<String, CliError> {
    std::path::absolute(path)
        .map_err(|e| CliError::Other(format!("{}: {e}", path.display())))
        .map(|p| p.display().to_string())
}

/// Shows the running tray app's dashboard window; a headless daemon has none: then prints the
/// URL that logs a browser in.
fn open(ctx: Settings) -> Result<(), CliError> {
    runtime()?.block_on(async move {
        let client = need_daemon(&ctx).await?;
        if client.show_window(&json!({})).await? {
            println!("serena-tray is running: showing its dashboard window");
        } else {
            println!("{}", client.login_url());
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_arguments_are_refused() {
        for args in [
            vec!["serena-tray", "list", "--bogus"],
            vec!["serena-tray", "frobnicate"],
            vec!["serena-tray", "--zombie-grace", "soon", "list"],
            vec!["serena-tray", "kill"],
            vec!["serena-tray", "kill", "12", "--zombies"],
            vec!["serena-tray", "kill", "abc"],
            vec!["serena-tray", "session", "request"],
            vec!["serena-tray", "--port", "70000", "daemon"],
        ] {
            assert!(Cli::try_parse_from(&args).is_err(), "{args:?}");
        }
        for args in [
            vec!["serena-tray", "list", "--json", "--serena-home", "/tmp"],
            vec!["serena-tray", "kill", "1", "2"],
            vec!["serena-tray", "kill", "--zombies"],
            vec![
                "serena-tray",
                "session",
                "request",
                ".",
                "--mode",
                "a",
                "--mode",
                "b",
            ],
            vec!["serena-tray", "daemon", "--port", "0"],
        ] {
            assert!(Cli::try_parse_from(&args).is_ok(), "{args:?}");
        }
    }
}
