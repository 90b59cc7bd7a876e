//! The command line: parsing (clap), one verb per function, output for people (a table) and for
//! scripts (`--json`). Errors are one line on stderr and a non-zero exit. Every verb calls the
//! same core functions as the HTTP API and the tray.

use crate::core::config::{resolve_serena_home, Config};
use crate::core::{Core, Instance, State};
use clap::{Parser, Subcommand};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "serena-tray",
    version,
    about = "One tray and one dashboard for every Serena MCP server; finds and reaps zombies."
)]
struct Cli {
    /// Serena's home directory [default: $SERENA_HOME, else ~/.serena]
    #[arg(long, global = true, value_name = "DIR")]
    serena_home: Option<PathBuf>,
    /// Seconds an instance may be orphaned or unresponsive before it counts as a zombie
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 10.0)]
    zombie_grace: f64,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List every Serena instance on this machine, with its state (one-shot, no daemon needed)
    List {
        /// Print a JSON array (the documented, stable format) instead of a table
        #[arg(long)]
        json: bool,
    },
}

/// A failure of a verb: printed as one line.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Config(#[from] crate::core::config::ConfigError),
    #[error(transparent)]
    Core(#[from] crate::core::CoreError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot write the output: {0}")]
    Output(std::io::Error),
    #[error("{0}")]
    Other(String),
}

/// Entry point of the `serena-tray` binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_error(e),
    };
    init_logging();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("serena-tray: {e}");
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

fn run(cli: Cli) -> Result<(), CliError> {
    let home = resolve_serena_home(cli.serena_home.as_deref())?;
    let config = Config::new(home).with_grace_secs(cli.zombie_grace)?;
    match cli.command {
        Some(Command::List { json }) => list(config, json),
        None => default_verb(config),
    }
}

#[cfg(feature = "gui")]
fn default_verb(config: Config) -> Result<(), CliError> {
    if !has_display() {
        return Err(CliError::Other(
            "no display (DISPLAY and WAYLAND_DISPLAY are unset): the tray app needs a desktop \
             session; `serena-tray list` works anywhere"
                .into(),
        ));
    }
    crate::shell::run(Core::new(config)).map_err(|e| CliError::Other(e.to_string()))
}

/// Whether a desktop session is there to show a tray in (always, outside X11/Wayland systems).
#[cfg(feature = "gui")]
fn has_display() -> bool {
    if cfg!(any(target_os = "windows", target_os = "macos")) {
        return true;
    }
    ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
}

#[cfg(not(feature = "gui"))]
fn default_verb(_config: Config) -> Result<(), CliError> {
    Err(CliError::Other(
        "this build has no tray app (built without the `gui` feature); try `serena-tray list`"
            .into(),
    ))
}

fn list(config: Config, json: bool) -> Result<(), CliError> {
    let core = Core::new(config);
    let instances = runtime()?.block_on(core.refresh())?;
    let mut out = std::io::stdout().lock();
    let text = if json {
        let mut s =
            serde_json::to_string_pretty(&instances).map_err(|e| CliError::Other(e.to_string()))?;
        s.push('\n');
        s
    } else {
        let colour = out.is_terminal() && std::env::var_os("NO_COLOR").is_none();
        render_table(&instances, crate::core::model::now(), colour)
    };
    out.write_all(text.as_bytes()).map_err(CliError::Output)
}

fn age(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

fn paint(word: &str, state: State, colour: bool) -> String {
    if !colour {
        return word.to_string();
    }
    let code = match state {
        State::LiveWithProject => "32",
        State::LiveNoProject => "33",
        State::Zombie => "31",
        State::Starting => "90",
    };
    format!("\x1b[{code}m{word}\x1b[0m")
}

/// The human table of `list`.
fn render_table(instances: &[Instance], now: f64, colour: bool) -> String {
    if instances.is_empty() {
        return "No Serena instances found.\n".to_string();
    }
    let header = [
        "PID",
        "STATE",
        "REASON",
        "PROJECT",
        "PORT",
        "TRANSPORT",
        "CLIENT",
        "AGE",
    ];
    let dash = || "-".to_string();
    let rows: Vec<(State, [String; 8])> = instances
        .iter()
        .map(|i| {
            let client = match (&i.client_name, i.client_pid) {
                (Some(n), Some(p)) => format!("{n} ({p})"),
                _ => dash(),
            };
            let state = format!("{} {}", i.state.colour(), i.state);
            (
                i.state,
                [
                    i.pid.to_string(),
                    state,
                    i.state_reason.map(|r| r.to_string()).unwrap_or_else(dash),
                    i.project_name
                        .clone()
                        .unwrap_or_else(|| "NO PROJECT".into()),
                    i.port.map(|p| p.to_string()).unwrap_or_else(dash),
                    i.transport.to_string(),
                    client,
                    age(now - i.started_at),
                ],
            )
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for (_, r) in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (k, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if k + 1 == cells.len() {
                s.push_str(c);
            } else {
                let visible = strip_ansi_len(c);
                s.push_str(c);
                s.push_str(&" ".repeat(w.saturating_sub(visible) + 2));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for (state, mut r) in rows {
        r[1] = paint(&r[1], state, colour);
        out.push_str(&line(r.to_vec()));
    }
    out
}

fn strip_ansi_len(s: &str) -> usize {
    let mut n = 0;
    let mut in_esc = false;
    for ch in s.chars() {
        match (in_esc, ch) {
            (false, '\x1b') => in_esc = true,
            (true, 'm') => in_esc = false,
            (true, _) => {}
            (false, _) => n += 1,
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_well() {
        assert_eq!(age(5.2), "5s");
        assert_eq!(age(125.0), "2m");
        assert_eq!(age(3.0 * 3600.0 + 65.0), "3h01m");
        assert_eq!(age(-4.0), "0s");
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(Cli::try_parse_from(["serena-tray", "list", "--bogus"]).is_err());
        assert!(Cli::try_parse_from(["serena-tray", "frobnicate"]).is_err());
        assert!(Cli::try_parse_from(["serena-tray", "--zombie-grace", "soon", "list"]).is_err());
        let ok = Cli::try_parse_from(["serena-tray", "list", "--json", "--serena-home", "/tmp"]);
        assert!(ok.is_ok());
    }
}
