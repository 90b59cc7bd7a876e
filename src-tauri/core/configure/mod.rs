//! `serena-tray configure`: finds the Serena entries in every known MCP client's config (for
//! the user, and for the current project) and routes them through `serena-tray launch`, or back.
//!
//! A Serena entry is a stdio server whose command line runs Serena (`serena start-mcp-server`,
//! `serena-mcp-server`, `python -m serena ...`, or one of those behind `uvx`, `uv run`, `pipx
//! run` and the like). Wrapping sets its `command` to the installed `serena-tray` and puts
//! `launch [options] --` and the old command in front of its `args`; nothing else of the file
//! changes (see [`edit`]). Writing is atomic, after a timestamped backup beside the file, and
//! keeps the file's permissions; a file that does not parse is reported and left alone.

pub mod edit;

use crate::core::cmdline;
use crate::core::files;
use edit::{Entry, Layout, ParseFailure};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The user's home directory, where the clients' configs are, cannot be found.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("cannot find the home directory (HOME)")]
pub struct NoHome;

/// The MCP clients whose configs are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Client {
    ClaudeCode,
    ClaudeDesktop,
    Cursor,
    Vscode,
    Codex,
    Windsurf,
}

impl Client {
    pub const ALL: [Client; 6] = [
        Client::ClaudeCode,
        Client::ClaudeDesktop,
        Client::Cursor,
        Client::Vscode,
        Client::Codex,
        Client::Windsurf,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Client::ClaudeCode => "claude-code",
            Client::ClaudeDesktop => "claude-desktop",
            Client::Cursor => "cursor",
            Client::Vscode => "vscode",
            Client::Codex => "codex",
            Client::Windsurf => "windsurf",
        }
    }

    pub fn parse(name: &str) -> Option<Client> {
        Client::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// A config file a client reads.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigFile {
    pub client: Client,
    /// `user` or `project`.
    pub scope: &'static str,
    pub path: PathBuf,
    #[serde(skip)]
    pub layout: Layout,
}

/// Where the clients keep their configs on this platform, for `home` (the user's home) and
/// `project` (the current project, if any), `appdata` being `%APPDATA%` on Windows.
pub fn known_files(home: &Path, project: Option<&Path>, appdata: Option<&Path>) -> Vec<ConfigFile> {
    let roaming = appdata.map_or_else(|| home.join("AppData").join("Roaming"), Path::to_owned);
    let config = if cfg!(target_os = "macos") {
        home.join("Library").join("Application Support")
    } else if cfg!(windows) {
        roaming
    } else {
        home.join(".config")
    };
    let codex = std::env::var_os("CODEX_HOME").map_or_else(|| home.join(".codex"), PathBuf::from);
    use Client::*;
    use Layout::*;
    let mut files = vec![
        (ClaudeCode, "user", home.join(".claude.json"), ClaudeJson),
        (
            ClaudeDesktop,
            "user",
            config.join("Claude").join("claude_desktop_config.json"),
            McpServers,
        ),
        (
            Cursor,
            "user",
            home.join(".cursor").join("mcp.json"),
            McpServers,
        ),
        (
            Vscode,
            "user",
            config.join("Code").join("User").join("mcp.json"),
            Servers,
        ),
        (Codex, "user", codex.join("config.toml"), CodexToml),
        (
            Windsurf,
            "user",
            home.join(".codeium")
                .join("windsurf")
                .join("mcp_config.json"),
            McpServers,
        ),
    ];
    if let Some(p) = project {
        files.extend([
            (ClaudeCode, "project", p.join(".mcp.json"), McpServers),
            (
                Cursor,
                "project",
                p.join(".cursor").join("mcp.json"),
                McpServers,
            ),
            (
                Vscode,
                "project",
                p.join(".vscode").join("mcp.json"),
                Servers,
            ),
        ]);
    }
    files
        .into_iter()
        .map(|(client, scope, path, layout)| ConfigFile {
            client,
            scope,
            path,
            layout,
        })
        .collect()
}

/// The installed `serena-tray` wrapped entries run: the one on PATH (an absolute path), else
/// the one next to this program, with a warning that it is not on PATH.
pub fn installed_program() -> (String, Option<String>) {
    if let Ok(p) = which::which("serena-tray") {
        return (p.display().to_string(), None);
    }
    let exe = std::env::current_exe()
        .map(|e| e.with_file_name(format!("serena-tray{}", std::env::consts::EXE_SUFFIX)))
        .unwrap_or_else(|_| PathBuf::from("serena-tray"));
    let warning = format!(
        "serena-tray is not on PATH: the entries will run {} (install it to keep them working)",
        exe.display()
    );
    (exe.display().to_string(), Some(warning))
}

/// The user's home (`HOME`, else `USERPROFILE`).
pub fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .or_else(|| std::env::var_os("USERPROFILE"))
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// The files of `clients` (all when empty) for the user and `project`, each planned for
/// `change`; missing files left out.
pub fn plan_all(
    clients: &[Client],
    project: Option<&Path>,
    change: Option<Change>,
    wrapping: &Wrapping,
) -> Result<Vec<FileReport>, NoHome> {
    let home = home_dir().ok_or(NoHome)?;
    let appdata = std::env::var_os("APPDATA").map(PathBuf::from);
    Ok(known_files(&home, project, appdata.as_deref())
        .iter()
        .filter(|f| clients.is_empty() || clients.contains(&f.client))
        .filter_map(|f| plan(f, change, wrapping))
        .collect())
}

/// Programs that run another command line given to them (`uvx --from X serena ...`).
const RUNNERS: [&str; 8] = [
    "uvx", "uv", "pipx", "poetry", "pdm", "hatch", "conda", "pixi",
];

/// Whether `argv` runs a Serena MCP server, directly or through a runner.
pub fn runs_serena(argv: &[String]) -> bool {
    if cmdline::serena_server_args(argv).is_some() {
        return true;
    }
    let Some(first) = argv.first() else {
        return false;
    };
    let base = first.rsplit(['/', '\\']).next().unwrap_or(first);
    let base = base.strip_suffix(".exe").unwrap_or(base);
    RUNNERS.contains(&base)
        && (1..argv.len()).any(|i| cmdline::serena_server_args(&argv[i..]).is_some())
}

/// What an entry is to `configure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Runs Serena directly: `--apply` routes it through `launch`.
    Direct,
    /// Already goes through `serena-tray launch`.
    Launched,
}

/// A Serena entry found in a file.
#[derive(Debug, Clone, Serialize)]
pub struct Found {
    pub name: String,
    pub location: String,
    pub command: Vec<String>,
    pub status: Status,
}

/// One file: what it holds, and the text `configure` would make of it.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    #[serde(flatten)]
    pub file: ConfigFile,
    pub entries: Vec<Found>,
    /// Why the file was left alone (it does not parse, it cannot be read).
    pub error: Option<String>,
    #[serde(skip)]
    pub text: String,
    #[serde(skip)]
    pub changed: Option<String>,
}

impl FileReport {
    /// The unified diff of the change (empty when none).
    pub fn diff(&self) -> String {
        let Some(new) = &self.changed else {
            return String::new();
        };
        let path = self.file.path.display().to_string();
        similar::TextDiff::from_lines(self.text.as_str(), new.as_str())
            .unified_diff()
            .context_radius(3)
            .header(&path, &path)
            .to_string()
    }
}

/// What wrapping puts in front: `serena-tray`'s path and `launch`'s options.
#[derive(Debug, Clone)]
pub struct Wrapping {
    pub program: String,
    pub options: Vec<String>,
}

impl Wrapping {
    /// The installed `serena-tray` (see [`installed_program`]), with `launch --share` and
    /// `--web-dashboard-global=BOOL` as asked; and the warning of `installed_program`.
    pub fn installed(
        share: bool,
        web_dashboard_global: Option<bool>,
    ) -> (Wrapping, Option<String>) {
        let (program, warning) = installed_program();
        let mut options = Vec::new();
        if share {
            options.push("--share".to_owned());
        }
        if let Some(b) = web_dashboard_global {
            options.push(format!("--web-dashboard-global={b}"));
        }
        (Wrapping { program, options }, warning)
    }

    fn prefix(&self) -> Vec<String> {
        let mut p = vec!["launch".to_owned()];
        p.extend(self.options.iter().cloned());
        p.push("--".to_owned());
        p
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Wrap,
    Unwrap,
}

fn is_launch(argv: &[String]) -> bool {
    cmdline::launcher_args(argv).is_some()
}

/// Reads `file` and plans `change` (`None`: only look). A file that is missing gives `None`.
pub fn plan(file: &ConfigFile, change: Option<Change>, wrapping: &Wrapping) -> Option<FileReport> {
    // Through a symbolic link: the user's configs are often links (dotfile managers).
    let bytes = match std::fs::read(&file.path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some(failed(file, format!("cannot read it: {e}"))),
    };
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(_) => return Some(failed(file, "not UTF-8 text".to_owned())),
    };
    let all = match edit::entries(&text, file.layout) {
        Ok(all) => all,
        Err(ParseFailure {
            line,
            column,
            message,
        }) => {
            let mut r = failed(
                file,
                format!("does not parse: line {line}, column {column}: {message}"),
            );
            r.text = text;
            return Some(r);
        }
    };
    let serena: Vec<&Entry> = all
        .iter()
        .filter(|e| runs_serena(&e.argv) || (is_launch(&e.argv) && wrapped_serena(e)))
        .collect();
    let entries = serena
        .iter()
        .map(|e| Found {
            name: e.name.clone(),
            location: e.location.clone(),
            command: e.argv.clone(),
            status: if is_launch(&e.argv) {
                Status::Launched
            } else {
                Status::Direct
            },
        })
        .collect();
    let changed = match change {
        None => None,
        Some(Change::Wrap) => {
            let prefix = wrapping.prefix();
            let wraps: Vec<(&Entry, &str, &[String])> = serena
                .iter()
                .filter(|e| !is_launch(&e.argv))
                .map(|e| (*e, wrapping.program.as_str(), prefix.as_slice()))
                .collect();
            (!wraps.is_empty()).then(|| edit::wrap(&text, &wraps))
        }
        Some(Change::Unwrap) => restore_backup(&file.path, &text, file.layout, &serena)
            .or_else(|| unwrap_all(&text, file.layout, &serena)),
    };
    Some(FileReport {
        file: file.clone(),
        entries,
        error: None,
        text,
        changed,
    })
}

fn wrapped_serena(e: &Entry) -> bool {
    edit::wrapped_at(e).is_some_and(|at| runs_serena(&e.argv[1 + at..]))
}

/// The newest backup of `path`, if wrapping it the way its entries are wrapped now gives
/// `text`: the file as it was, to the byte, nothing else having changed since.
fn restore_backup(path: &Path, text: &str, layout: Layout, serena: &[&Entry]) -> Option<String> {
    let launched = serena.iter().find(|e| is_launch(&e.argv))?;
    let at = edit::wrapped_at(launched)?;
    let program = &launched.argv[0];
    let prefix = &launched.argv[1..1 + at];
    let backup = newest_backup(path)?;
    let before = String::from_utf8(std::fs::read(&backup).ok()?).ok()?;
    let found = edit::entries(&before, layout).ok()?;
    let wraps: Vec<(&Entry, &str, &[String])> = found
        .iter()
        .filter(|e| runs_serena(&e.argv))
        .map(|e| (e, program.as_str(), prefix))
        .collect();
    (!wraps.is_empty() && edit::wrap(&before, &wraps) == text).then_some(before)
}

const BACKUP_MARK: &str = ".serena-tray-backup-";

fn newest_backup(path: &Path) -> Option<PathBuf> {
    let path = std::fs::canonicalize(path).ok()?;
    let name = path.file_name()?.to_string_lossy().into_owned();
    std::fs::read_dir(path.parent()?)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let millis: u128 = n
                .strip_prefix(&name)?
                .strip_prefix(BACKUP_MARK)?
                .parse()
                .ok()?;
            Some((millis, e.path()))
        })
        .max()
        .map(|(_, p)| p)
}

/// Unwraps the wrapped Serena entries one by one (each edit moves the later spans).
fn unwrap_all(text: &str, layout: Layout, serena: &[&Entry]) -> Option<String> {
    let keys: Vec<(String, String)> = serena
        .iter()
        .filter(|e| is_launch(&e.argv))
        .map(|e| (e.name.clone(), e.location.clone()))
        .collect();
    if keys.is_empty() {
        return None;
    }
    let mut current = text.to_owned();
    for (name, location) in keys {
        let found = edit::entries(&current, layout).ok()?;
        let entry = found
            .iter()
            .find(|e| e.name == name && e.location == location)?;
        current = edit::unwrap_one(&current, layout, entry)?;
    }
    (current != text).then_some(current)
}

fn failed(file: &ConfigFile, error: String) -> FileReport {
    FileReport {
        file: file.clone(),
        entries: Vec::new(),
        error: Some(error),
        text: String::new(),
        changed: None,
    }
}

/// Writes a planned change: a backup of the file as it was beside it
/// (`<name>.serena-tray-backup-<unix millis>`), then the new text atomically with the file's own
/// permissions; through a symbolic link to its target (dotfile managers link configs).
/// Returns the backup's path.
pub fn write(report: &FileReport) -> std::io::Result<Option<PathBuf>> {
    let Some(new) = &report.changed else {
        return Ok(None);
    };
    let path = std::fs::canonicalize(&report.file.path)?;
    let meta = std::fs::metadata(&path)?;
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!("{BACKUP_MARK}{millis}"));
    let backup = path.with_file_name(name);
    // Written as it was read: a change made to the file meanwhile is refused, not lost.
    let now = std::fs::read(&path)?;
    if now != report.text.as_bytes() {
        return Err(std::io::Error::other(
            "the file changed while it was being read; run configure again",
        ));
    }
    files::create_atomic(&backup, &now)?;
    files::write_atomic(&path, new.as_bytes())?;
    std::fs::set_permissions(&path, meta.permissions())?;
    Ok(Some(backup))
}
