//! `serena-tray configure`: shows (by default), applies or undoes routing every MCP client's
//! Serena entries through `serena-tray launch` (the work is `core::configure`'s).

use super::CliError;
use crate::core::configure::{self, Change, Client, FileReport, Status, Wrapping};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub(crate) struct ConfigureArgs {
    /// Only this client's configs (repeatable): claude-code, claude-desktop, cursor, vscode,
    /// codex, windsurf [default: all]
    #[arg(long = "client", value_name = "NAME", value_parser = client)]
    clients: Vec<Client>,
    /// The project whose configs (.mcp.json, .cursor/, .vscode/) count too [default: the
    /// current directory]
    #[arg(long, value_name = "DIR")]
    project: Option<PathBuf>,
    /// Wrap with `launch --share` (one shared Serena per project)
    #[arg(long)]
    share: bool,
    /// Wrap with `launch --web-dashboard-global=BOOL`
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    web_dashboard_global: Option<bool>,
    /// Make the changes (a backup of each file is written beside it first)
    #[arg(long, conflicts_with = "undo")]
    apply: bool,
    /// Route the entries back to running Serena directly
    #[arg(long)]
    undo: bool,
    /// Print what was found (and would change) as JSON
    #[arg(long)]
    json: bool,
}

fn client(name: &str) -> Result<Client, String> {
    Client::parse(name).ok_or_else(|| {
        let names: Vec<&str> = Client::ALL.iter().map(|c| c.name()).collect();
        format!("unknown client {name:?}: one of {}", names.join(", "))
    })
}

pub(crate) fn run(args: ConfigureArgs) -> Result<ExitCode, CliError> {
    let home = configure::home_dir().ok_or(configure::NoHome)?;
    let project = match &args.project {
        Some(p) => std::path::absolute(p).map_err(CliError::Project)?,
        None => std::env::current_dir().map_err(CliError::Project)?,
    };
    let (wrapping, warning) = Wrapping::installed(args.share, args.web_dashboard_global);
    let change = if args.undo {
        Change::Unwrap
    } else {
        Change::Wrap
    };
    let reports = configure::plan_all(&args.clients, Some(&project), Some(change), &wrapping)?;
    let failed = reports.iter().filter(|r| r.error.is_some()).count();

    if args.json {
        let out: Vec<Value> = reports
            .iter()
            .map(|r| {
                let mut v = json!(r);
                v["diff"] = json!((r.changed.is_some()).then(|| r.diff()));
                v
            })
            .collect();
        super::print_json(&json!(out))?;
        if !(args.apply || args.undo) {
            return Ok(exit(failed));
        }
    }
    if let Some(w) = &warning {
        if change == Change::Wrap && reports.iter().any(|r| r.changed.is_some()) {
            eprintln!("serena-tray: {w}");
        }
    }
    let (mut text, changes) = apply_or_show(&reports, &args, &home);
    text.push_str(closing(&reports, &args, changes, failed));
    if !args.json {
        super::print(&text)?;
    } else {
        eprint!("{text}");
    }
    Ok(exit(failed))
}

/// Each file's report, and with `--apply` or `--undo` the change made (or why not), else its
/// diff; how many files change.
fn apply_or_show(reports: &[FileReport], args: &ConfigureArgs, home: &Path) -> (String, usize) {
    let mut text = String::new();
    let mut changes = 0;
    for r in reports {
        text.push_str(&describe(r, home));
        if r.changed.is_none() {
            continue;
        }
        if !(args.apply || args.undo) {
            changes += 1;
            text.push_str(&r.diff());
            continue;
        }
        match configure::write(r) {
            Ok(Some(backup)) => {
                changes += 1;
                let done = if args.undo {
                    "restored"
                } else {
                    "routed through serena-tray launch"
                };
                text.push_str(&format!("  {done} (backup: {})\n", backup.display()));
            }
            Ok(None) => changes += 1,
            Err(e) => text.push_str(&format!("  not changed: {e}\n")),
        }
    }
    (text, changes)
}

/// The last line: nothing found, nothing to change, or how to make the changes shown.
fn closing(
    reports: &[FileReport],
    args: &ConfigureArgs,
    changes: usize,
    failed: usize,
) -> &'static str {
    if reports.is_empty() {
        "No MCP client config found.\n"
    } else if changes == 0 && failed > 0 {
        "Nothing else to change.\n"
    } else if changes == 0 && args.undo {
        "Nothing to undo: no Serena entry goes through serena-tray launch.\n"
    } else if changes == 0 {
        "Nothing to change: every Serena entry already goes through serena-tray launch.\n"
    } else if !(args.apply || args.undo) {
        "\nNothing was changed. `serena-tray configure --apply` makes these changes (a backup of \
         each file is kept beside it); `--undo` reverses them.\n"
    } else {
        ""
    }
}

fn exit(failed: usize) -> ExitCode {
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `~/...` for paths under the home.
fn short(path: &Path, home: &Path) -> String {
    match path.strip_prefix(home) {
        Ok(rest) => format!("~/{}", rest.display()),
        Err(_) => path.display().to_string(),
    }
}

fn describe(r: &FileReport, home: &Path) -> String {
    let mut s = format!(
        "{} ({}) {}\n",
        r.file.client.name(),
        r.file.scope,
        short(&r.file.path, home)
    );
    if let Some(e) = &r.error {
        s.push_str(&format!("  left alone: {e}\n"));
        return s;
    }
    if r.entries.is_empty() {
        s.push_str("  no Serena entry\n");
    }
    for e in &r.entries {
        let how = match e.status {
            Status::Direct => "runs Serena directly",
            Status::Launched => "goes through serena-tray launch",
        };
        s.push_str(&format!("  {} ({}): {how}\n", e.name, e.location));
    }
    s
}
