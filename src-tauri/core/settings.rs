//! Everything this program is configured by, resolved once at start into one typed
//! [`Settings`]: defaults, then the two optional files, then the command-line flags. It owns
//! where Serena's home is (`--serena-home`, else `$SERENA_HOME`, else `~/.serena`), reading
//! `$SERENA_HOME/serena_config.yml` (Serena's own file: only the three `web_dashboard_global*`
//! keys are read, every other key is Serena's and silently ignored) and
//! `$SERENA_HOME/tray/config.toml` (this program's settings), and turning `serena_command` (or
//! `serena` on PATH) into a runnable argv. A missing file means defaults. A file that cannot be
//! read, does not parse or holds a bad value gives one warning `<file>:<line>:<col>: <what>;
//! using defaults` and the defaults for that whole file; an unknown key of `tray/config.toml` is
//! a warning too, and only that key is ignored. It deliberately does not write or watch either
//! file, and does not print the warnings: the caller decides where they go.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{Error as _, Unexpected};
use serde::{Deserialize, Deserializer};
use serde_saphyr::MessageFormatter as _;

pub use crate::core::model::minutes;
use crate::core::procs::Scope;

/// The default zombie grace (DESIGN: 10 s).
pub const DEFAULT_ZOMBIE_GRACE: Duration = Duration::from_secs(10);
/// The default timeout of one dashboard probe.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// Serena's `web_dashboard_global_port` default: where the one global dashboard listens.
pub const DEFAULT_DASHBOARD_PORT: u16 = 25282;
/// Serena's `tray_manager` port, where instances register themselves.
pub const DEFAULT_TRAY_PROTOCOL_PORT: u16 = 24224;
/// The default of `session_start_timeout`.
pub const DEFAULT_SESSION_START_TIMEOUT: Duration = Duration::from_secs(90);

/// The default of `share_linger_seconds`.
pub const DEFAULT_SHARE_LINGER: Duration = Duration::from_secs(120);

/// The default of `share_sleep_minutes`.
pub const DEFAULT_SHARE_SLEEP: Duration = Duration::from_secs(15 * 60);

/// The keys of `tray/config.toml` (the fields of [`TraySettings`]), named in the warning about
/// an unknown key.
const TRAY_KEYS: [&str; 10] = [
    "zombie_grace",
    "probe_timeout",
    "session_start_timeout",
    "serena_command",
    "notifications",
    "auto_kill_zombies",
    "tray_protocol_port",
    "share_linger_seconds",
    "share_on_demand",
    "share_sleep_minutes",
];

/// `$SERENA_HOME/serena_config.yml`, Serena's own configuration file.
pub fn serena_config_path(serena_home: &Path) -> PathBuf {
    serena_home.join("serena_config.yml")
}

/// `$SERENA_HOME/tray/config.toml`, this program's optional settings.
pub fn tray_config_path(serena_home: &Path) -> PathBuf {
    serena_home.join("tray").join("config.toml")
}

/// The global dashboard options, from Serena's `serena_config.yml`.
#[derive(Debug, Clone, PartialEq)]
pub struct GlobalDashboard {
    /// `web_dashboard_global` (default true): serve the one global dashboard at all.
    pub enabled: bool,
    /// `web_dashboard_global_open_on_launch` (default false): open it once at start.
    pub open_on_launch: bool,
    /// `web_dashboard_global_port` (default 25282).
    pub port: u16,
    /// `idle_shutdown_minutes` (default none: off; decimals allowed): an instance idle that
    /// long is shut down.
    pub idle_shutdown: Option<Duration>,
}

impl Default for GlobalDashboard {
    fn default() -> Self {
        GlobalDashboard {
            enabled: true,
            open_on_launch: false,
            port: DEFAULT_DASHBOARD_PORT,
            idle_shutdown: None,
        }
    }
}

/// This program's own options: the schema of `tray/config.toml`, where every key is optional.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct TraySettings {
    /// `zombie_grace` (seconds, >= 0, default 10).
    #[serde(deserialize_with = "seconds_at_least_zero")]
    pub zombie_grace: Duration,
    /// `probe_timeout` (seconds, > 0, default 1.5).
    #[serde(deserialize_with = "seconds_above_zero")]
    pub probe_timeout: Duration,
    /// `serena_command`: the argv prefix that launches Serena, `"serena"` or
    /// `["uvx", "--from", "...", "serena"]`; `None` = `serena` on PATH. Never `Some(empty)`
    /// when read from the file.
    #[serde(deserialize_with = "command")]
    pub serena_command: Option<Vec<String>>,
    /// `notifications` (default true): desktop notifications about new zombies.
    pub notifications: bool,
    /// `auto_kill_zombies` (default false).
    pub auto_kill_zombies: bool,
    /// `session_start_timeout`: how long a launched session may take to answer (default 90 s).
    #[serde(deserialize_with = "seconds_above_zero")]
    pub session_start_timeout: Duration,
    /// `tray_protocol_port` (1 to 65535, default 24224).
    #[serde(deserialize_with = "port")]
    pub tray_protocol_port: u16,
    /// `share_linger_seconds` (>= 0, default 120): how long a shared session outlives its last
    /// client.
    #[serde(deserialize_with = "seconds_at_least_zero")]
    pub share_linger_seconds: Duration,
    /// `share_on_demand` (default true): `launch --share` answers the MCP handshake from its
    /// cache and starts Serena on the first call that needs it.
    pub share_on_demand: bool,
    /// `share_sleep_minutes` (>= 0, default 15; 0: never): a shared session whose clients made
    /// no call for this long is stopped, its clients kept, until the next call.
    #[serde(deserialize_with = "minutes_at_least_zero")]
    pub share_sleep_minutes: Duration,
}

impl Default for TraySettings {
    fn default() -> Self {
        TraySettings {
            zombie_grace: DEFAULT_ZOMBIE_GRACE,
            probe_timeout: DEFAULT_PROBE_TIMEOUT,
            serena_command: None,
            notifications: true,
            auto_kill_zombies: false,
            session_start_timeout: DEFAULT_SESSION_START_TIMEOUT,
            tray_protocol_port: DEFAULT_TRAY_PROTOCOL_PORT,
            share_linger_seconds: DEFAULT_SHARE_LINGER,
            share_on_demand: true,
            share_sleep_minutes: DEFAULT_SHARE_SLEEP,
        }
    }
}

/// Everything this program is configured by, resolved once: see the module docs. Every part
/// (the core, the sessions, the app, the CLI) reads its settings from here.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `$SERENA_HOME`, absolute (it need not exist yet).
    pub serena_home: PathBuf,
    /// Which processes may be seen as instances: all, except where `SERENA_TRAY_SCOPE` is set
    /// (tests).
    pub scope: Scope,
    /// From `serena_config.yml`; `port` overridden by `--port`.
    pub dashboard: GlobalDashboard,
    /// From `tray/config.toml`; `zombie_grace` and `tray_protocol_port` overridden by their flags.
    pub tray: TraySettings,
    /// `--port-file`: where the running program writes the port it listens on.
    pub port_file: Option<PathBuf>,
}

/// The command-line flags that override the files.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub serena_home: Option<PathBuf>,
    pub zombie_grace: Option<Duration>,
    pub port: Option<u16>,
    pub tray_protocol_port: Option<u16>,
    pub open_on_launch: Option<bool>,
    /// `--idle-shutdown-minutes` (zero: off).
    pub idle_shutdown: Option<Duration>,
    pub share_linger: Option<Duration>,
    pub port_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error("cannot find the home directory: set SERENA_HOME or pass --serena-home")]
    NoHome,
    #[error("--serena-home {}: empty path", .0.display())]
    EmptyHome(PathBuf),
    #[error("--serena-home {}: {source}", path.display())]
    BadHome {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--serena-home {}: not a directory", .0.display())]
    HomeNotADirectory(PathBuf),
    #[error("--port-file: {0}")]
    BadPortFile(#[source] std::io::Error),
}

impl Settings {
    /// Resolves the settings: the defaults, then both files under the Serena home, then
    /// `flags`. Returns the warnings about the files with them (never fatal); only a home that
    /// cannot be found or is not a directory is an error.
    pub fn resolve(flags: &Flags) -> Result<(Settings, Vec<String>), HomeError> {
        let serena_home = resolve_serena_home(flags.serena_home.as_deref())?;
        let Files {
            mut dashboard,
            mut tray,
            warnings,
        } = read_files(&serena_home);
        if let Some(port) = flags.port {
            dashboard.port = port;
        }
        if let Some(grace) = flags.zombie_grace {
            tray.zombie_grace = grace;
        }
        if let Some(port) = flags.tray_protocol_port {
            tray.tray_protocol_port = port;
        }
        if let Some(linger) = flags.share_linger {
            tray.share_linger_seconds = linger;
        }
        if let Some(open) = flags.open_on_launch {
            dashboard.open_on_launch = open;
        }
        if let Some(idle) = flags.idle_shutdown {
            // 0 on the command line turns a file's idle shutdown off.
            dashboard.idle_shutdown = (!idle.is_zero()).then_some(idle);
        }
        let port_file = flags
            .port_file
            .as_deref()
            .map(std::path::absolute)
            .transpose()
            .map_err(HomeError::BadPortFile)?;
        let settings = Settings {
            serena_home,
            scope: Scope::from_env(),
            dashboard,
            tray,
            port_file,
        };
        Ok((settings, warnings))
    }

    /// The defaults for a Serena home, no file read (tests, benchmarks).
    pub fn defaults(serena_home: PathBuf) -> Settings {
        Settings {
            serena_home,
            scope: Scope::All,
            dashboard: GlobalDashboard::default(),
            tray: TraySettings::default(),
            port_file: None,
        }
    }

    /// This program's own state directory, `$SERENA_HOME/tray`.
    pub fn tray_dir(&self) -> PathBuf {
        self.serena_home.join("tray")
    }

    /// The argv prefix that launches Serena (see [`TraySettings::resolve_serena_command_in`]).
    pub fn serena_command(&self) -> Result<Vec<String>, SerenaCommandError> {
        self.tray.resolve_serena_command_in(&self.serena_home)
    }
}

/// `--serena-home` if given, else `$SERENA_HOME`, else `~/.serena`; made absolute. It need not
/// exist yet (it is created on first write) but must not be a file.
pub fn resolve_serena_home(flag: Option<&Path>) -> Result<PathBuf, HomeError> {
    let chosen = match flag {
        Some(p) => p.to_path_buf(),
        None => match std::env::var_os("SERENA_HOME").filter(|v| !v.is_empty()) {
            Some(v) => PathBuf::from(v),
            None => std::env::home_dir()
                .filter(|h| !h.as_os_str().is_empty())
                .ok_or(HomeError::NoHome)?
                .join(".serena"),
        },
    };
    if chosen.as_os_str().is_empty() {
        return Err(HomeError::EmptyHome(chosen));
    }
    let abs = std::path::absolute(&chosen).map_err(|source| HomeError::BadHome {
        path: chosen.clone(),
        source,
    })?;
    if abs.exists() && !abs.is_dir() {
        return Err(HomeError::HomeNotADirectory(abs));
    }
    Ok(abs)
}

/// What the two files say, plus what went wrong while reading them.
#[derive(Debug, Clone, PartialEq)]
pub struct Files {
    pub dashboard: GlobalDashboard,
    pub tray: TraySettings,
    /// One line per problem, `<file>:<line>:<col>: <what>[; using defaults]`, the YAML file's
    /// first. Empty when both files are absent or fine.
    pub warnings: Vec<String>,
}

/// Reads both files under `serena_home`. Never panics, never fails: see the module docs.
pub fn read_files(serena_home: &Path) -> Files {
    let mut warnings = Vec::new();
    let dashboard = load_file(
        &serena_config_path(serena_home),
        &mut warnings,
        parse_dashboard,
    );
    let tray = load_file(&tray_config_path(serena_home), &mut warnings, parse_tray);
    Files {
        dashboard,
        tray,
        warnings,
    }
}

/// Something wrong in a file: where (1-based line and column, when known) and what.
struct Problem {
    at: Option<(usize, usize)>,
    message: String,
}

/// Reads `path` and parses it with `parse`, which may also note problems that it got past.
fn load_file<T: Default>(
    path: &Path,
    warnings: &mut Vec<String>,
    parse: fn(&str, &mut Vec<Problem>) -> Result<T, Problem>,
) -> T {
    let Some(text) = read_text(path, warnings) else {
        return T::default();
    };
    let shown = |problem: &Problem| {
        // One line, whatever a parser put into its message.
        let message: String = problem
            .message
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        match problem.at {
            Some((line, column)) => format!("{}:{line}:{column}: {message}", path.display()),
            None => format!("{}: {message}", path.display()),
        }
    };
    let mut notes = Vec::new();
    let parsed = parse(&text, &mut notes);
    warnings.extend(notes.iter().map(shown));
    parsed.unwrap_or_else(|problem| {
        warnings.push(format!("{}; using defaults", shown(&problem)));
        T::default()
    })
}

/// The file's text, or `None` when it is absent (silently) or unusable (with a warning).
fn read_text(path: &Path, warnings: &mut Vec<String>) -> Option<String> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            let shown = path.display();
            warnings.push(format!("{shown}: cannot read it ({e}); using defaults"));
            return None;
        }
    };
    String::from_utf8(bytes)
        .map_err(|e| {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = 1 + valid.iter().filter(|&&b| b == b'\n').count();
            let shown = path.display();
            warnings.push(format!("{shown}:{line}: not UTF-8 text; using defaults"));
        })
        .ok()
}

/// `serena_config.yml`. Serena reads it as YAML 1.2, so only `true`/`false` (any case) are
/// booleans here too; a key with no value (null) means its default.
fn parse_dashboard(text: &str, _: &mut Vec<Problem>) -> Result<GlobalDashboard, Problem> {
    #[derive(Deserialize)]
    struct SerenaConfig {
        web_dashboard_global: Option<bool>,
        web_dashboard_global_open_on_launch: Option<bool>,
        web_dashboard_global_port: Option<Port>,
        idle_shutdown_minutes: Option<Minutes>,
    }
    let options = serde_saphyr::options! { strict_booleans: true };
    // `None`: a file with no document (empty, comments only) or a null one.
    let file: Option<SerenaConfig> =
        serde_saphyr::from_str_with_options(text, options).map_err(|e| Problem {
            at: e
                .location()
                .map(|at| (at.line() as usize, at.column() as usize)),
            message: serde_saphyr::UserMessageFormatter
                .format_message(e.without_snippet())
                .into_owned(),
        })?;
    let defaults = GlobalDashboard::default();
    let Some(file) = file else {
        return Ok(defaults);
    };
    Ok(GlobalDashboard {
        enabled: file.web_dashboard_global.unwrap_or(defaults.enabled),
        open_on_launch: file
            .web_dashboard_global_open_on_launch
            .unwrap_or(defaults.open_on_launch),
        port: file
            .web_dashboard_global_port
            .map_or(defaults.port, |p| p.0),
        // 0 is off, as absent is.
        idle_shutdown: file
            .idle_shutdown_minutes
            .map(|m| m.0)
            .filter(|d| !d.is_zero()),
    })
}

/// `tray/config.toml`; an unknown top-level key is noted and otherwise ignored.
fn parse_tray(text: &str, notes: &mut Vec<Problem>) -> Result<TraySettings, Problem> {
    let problem = |e: toml::de::Error| Problem {
        at: e.span().map(|span| line_col(text, span.start)),
        message: e.message().to_string(),
    };
    let table = toml::de::DeTable::parse(text).map_err(problem)?;
    let mut unknown: Vec<_> = table
        .get_ref()
        .keys()
        .filter(|key| !TRAY_KEYS.contains(&key.get_ref().as_ref()))
        .collect();
    unknown.sort_by_key(|key| key.span().start);
    notes.extend(unknown.into_iter().map(|key| Problem {
        at: Some(line_col(text, key.span().start)),
        message: format!(
            "unknown key `{}` ignored (known keys: {})",
            key.get_ref(),
            TRAY_KEYS.join(", ")
        ),
    }));
    TraySettings::deserialize(toml::de::Deserializer::from(table)).map_err(problem)
}

/// The 1-based line and column (in characters) of byte `offset` of `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count();
    (1 + before.matches('\n').count(), 1 + column)
}

/// A number of minutes (decimals allowed), finite and not negative.
#[derive(Deserialize)]
#[serde(try_from = "f64")]
struct Minutes(Duration);

impl TryFrom<f64> for Minutes {
    type Error = String;

    fn try_from(m: f64) -> Result<Minutes, String> {
        minutes(m)
            .map(Minutes)
            .ok_or_else(|| format!("expected a number of minutes >= 0, got {m}"))
    }
}

/// A TCP port number, 1 to 65535.
#[derive(Deserialize)]
#[serde(try_from = "i64")]
struct Port(u16);

impl TryFrom<i64> for Port {
    type Error = String;

    fn try_from(n: i64) -> Result<Port, String> {
        match u16::try_from(n) {
            Ok(port) if port != 0 => Ok(Port(port)),
            _ => Err(format!("expected a port number from 1 to 65535, got {n}")),
        }
    }
}

fn port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    Port::deserialize(d).map(|p| p.0)
}

/// A number of seconds (integer or float), finite and not negative; zero too if `zero_ok`.
fn seconds<'de, D: Deserializer<'de>>(d: D, zero_ok: bool) -> Result<Duration, D::Error> {
    let secs = f64::deserialize(d)?;
    let expected = if zero_ok {
        "a number of seconds >= 0"
    } else {
        "a number of seconds > 0"
    };
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|duration| zero_ok || !duration.is_zero())
        .ok_or_else(|| D::Error::invalid_value(Unexpected::Float(secs), &expected))
}

fn minutes_at_least_zero<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let minutes = f64::deserialize(d)?;
    self::minutes(minutes).ok_or_else(|| {
        D::Error::invalid_value(Unexpected::Float(minutes), &"a number of minutes >= 0")
    })
}

fn seconds_at_least_zero<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    seconds(d, true)
}

fn seconds_above_zero<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    seconds(d, false)
}

/// `"program"` or `["program", "arg", ...]`, the program not blank.
fn command<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(
        untagged,
        expecting = "expected a program name or a non-empty array of strings, the program first"
    )]
    enum Command {
        Program(String),
        Argv(Vec<String>),
    }
    let argv = match Command::deserialize(d)? {
        Command::Program(program) => vec![program],
        Command::Argv(argv) => argv,
    };
    match argv.first() {
        Some(program) if !program.trim().is_empty() => Ok(Some(argv)),
        _ => Err(D::Error::custom(
            "expected a program name or a non-empty array of strings, the program first \
             (got no program)",
        )),
    }
}

/// Why no runnable Serena command could be found. The message says what was looked for and how
/// to fix it, in one line, fit for an HTTP error body or stderr.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SerenaCommandError {
    /// Nothing runnable where we looked.
    #[error("cannot find the Serena command: looked for {looked_for}. To fix: {hint}")]
    NotFound { looked_for: String, hint: String },
    /// The configured command names something that exists but cannot be run.
    #[error("the configured serena_command `{path}` cannot be run: {why}. To fix: {hint}")]
    NotExecutable {
        path: String,
        why: String,
        hint: String,
    },
}

impl TraySettings {
    /// The argv prefix that launches Serena, its first element an absolute path: the configured
    /// `serena_command` (a bare program name is searched on PATH, a path is taken as is, `~/`
    /// expanded), else `serena` on PATH, else in `~/.local/bin` (where `uv tool` and `pipx` put
    /// it, and which a desktop session's PATH often lacks). A configured command that cannot be
    /// run is an error, never silently replaced by `serena` on PATH. The error's hint names
    /// `<serena_home>/tray/config.toml`.
    pub fn resolve_serena_command_in(
        &self,
        serena_home: &Path,
    ) -> Result<Vec<String>, SerenaCommandError> {
        let path_var = std::env::var_os("PATH");
        let home = std::env::home_dir();
        let config_file = tray_config_path(serena_home);
        self.resolve_with(path_var.as_deref(), home.as_deref(), &config_file)
    }

    /// [`TraySettings::resolve_serena_command_in`] with the environment passed in.
    fn resolve_with(
        &self,
        path_var: Option<&OsStr>,
        home: Option<&Path>,
        config_file: &Path,
    ) -> Result<Vec<String>, SerenaCommandError> {
        let cwd = std::env::current_dir().unwrap_or_default();
        let Some([program, args @ ..]) = self.serena_command.as_deref() else {
            return default_serena(path_var, home, &cwd, config_file).map(|path| vec![path]);
        };
        let program = configured_program(program, path_var, home, &cwd, config_file)?;
        Ok(std::iter::once(program)
            .chain(args.iter().cloned())
            .collect())
    }
}

/// `serena` on PATH, else in `~/.local/bin`.
fn default_serena(
    path_var: Option<&OsStr>,
    home: Option<&Path>,
    cwd: &Path,
    config_file: &Path,
) -> Result<String, SerenaCommandError> {
    let local_bin = home.map(|home| home.join(".local").join("bin"));
    let in_local_bin = || {
        let dir = local_bin.as_ref()?;
        which::which_in(dir.join("serena"), None::<&OsStr>, cwd).ok()
    };
    if let Some(found) = which::which_in("serena", path_var, cwd)
        .ok()
        .or_else(in_local_bin)
    {
        return Ok(found.to_string_lossy().into_owned());
    }
    let path = path_var.map_or("PATH is not set".to_string(), |p| {
        format!("PATH={}", p.to_string_lossy())
    });
    let also = local_bin
        .as_ref()
        .map_or(String::new(), |dir| format!(" and in {}", dir.display()));
    Err(SerenaCommandError::NotFound {
        looked_for: format!("`serena` on PATH ({path}){also}"),
        hint: format!(
            "install Serena (the `serena-agent` package, e.g. `uv tool install serena-agent`) so \
             that `serena` is on PATH, or set serena_command = [\"/path/to/serena\"] in {}",
            config_file.display()
        ),
    })
}

/// The program an MCP client's config names for `serena-tray launch -- PROGRAM ...`: a path is
/// taken as it is (if it can be run), a bare name is searched on PATH, then in `~/.local/bin`
/// (where `uv tool` and `pipx` put `serena`, and which the PATH of a desktop app often lacks).
pub fn find_program(program: &OsStr) -> Result<PathBuf, SerenaCommandError> {
    let path_var = std::env::var_os("PATH");
    let cwd = std::env::current_dir().unwrap_or_default();
    let local_bin = std::env::home_dir().map(|home| home.join(".local").join("bin"));
    let found = which::which_in(program, path_var.as_deref(), &cwd)
        .ok()
        .or_else(|| {
            let is_path = Path::new(program).components().count() > 1;
            let dir = local_bin.as_ref().filter(|_| !is_path)?;
            which::which_in(dir.join(program), None::<&OsStr>, &cwd).ok()
        });
    if let Some(found) = found {
        return Ok(found);
    }
    let name = program.to_string_lossy();
    let path = path_var
        .as_ref()
        .map_or("PATH is not set".to_string(), |p| {
            format!("PATH={}", p.to_string_lossy())
        });
    let also = local_bin
        .as_ref()
        .map_or(String::new(), |dir| format!(" and in {}", dir.display()));
    Err(SerenaCommandError::NotFound {
        looked_for: format!("`{name}` on PATH ({path}){also}"),
        hint: format!(
            "install it (for Serena: the `serena-agent` package, e.g. `uv tool install \
             serena-agent`), or give its absolute path after `--` in the MCP client's config \
             (`serena-tray launch -- /path/to/{name} ...`)"
        ),
    })
}

/// The configured program: a bare name is searched on PATH, a path (`~/` expanded) is checked.
fn configured_program(
    program: &str,
    path_var: Option<&OsStr>,
    home: Option<&Path>,
    cwd: &Path,
    config_file: &Path,
) -> Result<String, SerenaCommandError> {
    let path = match (program.strip_prefix("~/"), home) {
        (Some(rest), Some(home)) => home.join(rest),
        _ => PathBuf::from(program),
    };
    if let Ok(found) = which::which_in(&path, path_var, cwd) {
        return Ok(found.to_string_lossy().into_owned());
    }
    let config_file = config_file.display();
    let is_path = path.components().count() > 1;
    if is_path && path.exists() {
        let why = if path.is_dir() {
            "it is a directory"
        } else {
            "it has no execute permission"
        };
        return Err(SerenaCommandError::NotExecutable {
            path: path.display().to_string(),
            why: why.to_string(),
            hint: format!(
                "make it an executable file (chmod +x), or point serena_command in {config_file} \
                 at one"
            ),
        });
    }
    let looked_for = if is_path {
        format!(
            "the configured serena_command `{program}` (no such file: {})",
            path.display()
        )
    } else {
        format!("the configured serena_command `{program}` on PATH")
    };
    let mut hint = format!(
        "install it, or point serena_command in {config_file} at an installed program, e.g. \
         [\"/path/to/serena\"] (or remove it to use `serena` on PATH)"
    );
    if program.contains(char::is_whitespace) {
        hint.push_str(
            "; a string is one program name: to pass arguments, use an array such as \
             [\"uvx\", \"--from\", \"...\", \"serena\"]",
        );
    }
    Err(SerenaCommandError::NotFound { looked_for, hint })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_home_flag_wins_and_a_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            resolve_serena_home(Some(dir.path())).expect("ok"),
            dir.path()
        );
        let file = dir.path().join("f");
        std::fs::write(&file, "").expect("write");
        assert!(matches!(
            resolve_serena_home(Some(&file)),
            Err(HomeError::HomeNotADirectory(..))
        ));
    }

    #[test]
    fn flags_override_the_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            serena_config_path(dir.path()),
            "web_dashboard_global_port: 26000\nweb_dashboard_global_open_on_launch: true\n",
        )
        .expect("yml");
        std::fs::create_dir_all(dir.path().join("tray")).expect("mkdir");
        std::fs::write(
            tray_config_path(dir.path()),
            "zombie_grace = 3\ntray_protocol_port = 24300\nprobe_timeout = 0.5\n",
        )
        .expect("toml");
        let mut flags = Flags {
            serena_home: Some(dir.path().to_path_buf()),
            ..Flags::default()
        };
        let (files_only, warnings) = Settings::resolve(&flags).expect("resolved");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(files_only.dashboard.port, 26000);
        assert!(files_only.dashboard.open_on_launch);
        assert_eq!(files_only.tray.zombie_grace, Duration::from_secs(3));
        assert_eq!(files_only.tray.tray_protocol_port, 24300);
        flags.port = Some(27000);
        flags.zombie_grace = Some(Duration::from_secs(1));
        flags.tray_protocol_port = Some(24301);
        let (s, _) = Settings::resolve(&flags).expect("resolved");
        assert_eq!(s.dashboard.port, 27000);
        assert_eq!(s.tray.zombie_grace, Duration::from_secs(1));
        assert_eq!(s.tray.tray_protocol_port, 24301);
        assert_eq!(s.tray.probe_timeout, Duration::from_millis(500), "kept");
        assert!(s.dashboard.open_on_launch, "kept");
        assert_eq!(s.dashboard.idle_shutdown, None, "off by default");

        std::fs::write(
            serena_config_path(dir.path()),
            "idle_shutdown_minutes: 30\nweb_dashboard_global_open_on_launch: true\n",
        )
        .expect("yml");
        let (s, _) = Settings::resolve(&flags).expect("resolved");
        assert_eq!(
            s.dashboard.idle_shutdown,
            Some(Duration::from_secs(30 * 60))
        );
        flags.open_on_launch = Some(false);
        flags.idle_shutdown = Some(Duration::ZERO);
        flags.port_file = Some("relative/port".into());
        let (s, _) = Settings::resolve(&flags).expect("resolved");
        assert!(!s.dashboard.open_on_launch, "the flag wins");
        assert_eq!(s.dashboard.idle_shutdown, None, "0 turns it off");
        let port_file = s.port_file.expect("a port file");
        assert!(port_file.is_absolute() && port_file.ends_with("relative/port"));
    }

    use super::*;

    fn home() -> tempfile::TempDir {
        tempfile::tempdir().expect("tempdir")
    }

    fn write_yaml(home: &Path, text: &str) -> String {
        let path = serena_config_path(home);
        std::fs::write(&path, text).expect("write yaml");
        path.display().to_string()
    }

    fn write_toml(home: &Path, text: &str) -> String {
        let path = tray_config_path(home);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir tray");
        std::fs::write(&path, text).expect("write toml");
        path.display().to_string()
    }

    fn only_warning(s: &Files) -> &str {
        assert_eq!(s.warnings.len(), 1, "warnings: {:#?}", s.warnings);
        &s.warnings[0]
    }

    // --- both files ---------------------------------------------------------------------------

    #[test]
    fn missing_files_mean_defaults_silently() {
        let dir = home();
        let s = read_files(&dir.path().join("does-not-exist"));
        assert_eq!(s.dashboard, GlobalDashboard::default());
        assert_eq!(s.tray, TraySettings::default());
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    }

    #[test]
    fn a_directory_or_non_utf8_text_is_a_warning_and_defaults() {
        let dir = home();
        std::fs::create_dir_all(serena_config_path(dir.path())).expect("mkdir");
        let toml = write_toml(dir.path(), "");
        std::fs::write(&toml, b"notifications = false\n# \xff\xfe\n").expect("write");
        let s = read_files(dir.path());
        assert_eq!(s.dashboard, GlobalDashboard::default());
        assert_eq!(s.tray, TraySettings::default());
        assert_eq!(s.warnings.len(), 2, "{:?}", s.warnings);
        let yml = serena_config_path(dir.path()).display().to_string();
        assert!(s.warnings[0].starts_with(&format!("{yml}: cannot read it (")));
        assert!(s.warnings[0].ends_with("; using defaults"));
        assert_eq!(
            s.warnings[1],
            format!("{toml}:2: not UTF-8 text; using defaults")
        );
    }

    // --- serena_config.yml --------------------------------------------------------------------

    #[test]
    fn serena_config_as_serena_writes_it() {
        // Comments, Serena's own keys (nested too), capitalised booleans, ours in the middle.
        let text = "# written by Serena\ngui_log_window: False\nweb_dashboard: True\n\
                    web_dashboard_interface: tray_manager  # or browser\n\
                    web_dashboard_global: False\nweb_dashboard_global_open_on_launch: True\n\
                    web_dashboard_global_port: 27000\nexcluded_tools: []\n\
                    projects:\n- /home/someone/one\n- {path: /two, name: two}\n";
        let dir = home();
        write_yaml(dir.path(), text);
        let s = read_files(dir.path());
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        let want = GlobalDashboard {
            enabled: false,
            open_on_launch: true,
            port: 27000,
            idle_shutdown: None,
        };
        assert_eq!(s.dashboard, want);
    }

    #[test]
    fn yaml_nulls_and_empty_documents_mean_defaults() {
        for text in [
            "",
            "# only a comment\n",
            "~\n",
            "web_dashboard_global:\nweb_dashboard_global_port: ~\n\
             web_dashboard_global_open_on_launch: null\n",
        ] {
            let dir = home();
            write_yaml(dir.path(), text);
            let s = read_files(dir.path());
            assert!(s.warnings.is_empty(), "{text:?}: {:?}", s.warnings);
            assert_eq!(s.dashboard, GlobalDashboard::default(), "{text:?}");
        }
    }

    #[test]
    fn bad_yaml_is_one_warning_with_line_and_column_and_all_defaults() {
        // (text, line:column, part of the message); each file also holds a good key, which is
        // not used either.
        let cases = [
            // Syntax: a tab for indentation, an unclosed quote, a list for a mapping.
            ("web_dashboard_global: false\nb:\n\t- x\n", "3:2", "tabs"),
            (
                "web_dashboard_global: false\nx: \"open\n",
                "2:4",
                "unclosed quote",
            ),
            ("- web_dashboard_global: false\n", "1:1", "mapping"),
            // Values: out of range, wrong type, a YAML 1.1 boolean Serena would not read as one.
            (
                "web_dashboard_global: false\nweb_dashboard_global_port: 0\n",
                "2:28",
                "got 0",
            ),
            (
                "web_dashboard_global: false\nweb_dashboard_global_port: 65536\n",
                "2:28",
                "65536",
            ),
            (
                "web_dashboard_global_port: 26000\nweb_dashboard_global: [1]\n",
                "2:23",
                "",
            ),
            (
                "web_dashboard_global_port: 26000\nweb_dashboard_global: yes\n",
                "2:23",
                "boolean",
            ),
        ];
        for (text, at, what) in cases {
            let dir = home();
            let path = write_yaml(dir.path(), text);
            let s = read_files(dir.path());
            let w = only_warning(&s);
            assert!(w.starts_with(&format!("{path}:{at}: ")), "{text:?} -> {w}");
            assert!(w.ends_with("; using defaults"), "{w}");
            assert!(w.contains(what), "{text:?} -> {w}");
            assert_eq!(s.dashboard, GlobalDashboard::default(), "{text:?}");
        }
    }

    // --- tray/config.toml ---------------------------------------------------------------------

    #[test]
    fn every_tray_key_is_read() {
        let dir = home();
        write_toml(
            dir.path(),
            "zombie_grace = 0\nprobe_timeout = 0.25\nsession_start_timeout = 30\n\
             serena_command = [\"uvx\", \"--from\", \"git+https://x/serena\", \"serena\"]\n\
             notifications = false\nauto_kill_zombies = true\ntray_protocol_port = 24300\n\
             share_linger_seconds = 5\nshare_on_demand = false\nshare_sleep_minutes = 0.5\n",
        );
        let s = read_files(dir.path());
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        let want = TraySettings {
            zombie_grace: Duration::ZERO,
            probe_timeout: Duration::from_millis(250),
            session_start_timeout: Duration::from_secs(30),
            serena_command: Some(vec![
                "uvx".into(),
                "--from".into(),
                "git+https://x/serena".into(),
                "serena".into(),
            ]),
            notifications: false,
            auto_kill_zombies: true,
            tray_protocol_port: 24300,
            share_linger_seconds: Duration::from_secs(5),
            share_on_demand: false,
            share_sleep_minutes: Duration::from_secs(30),
        };
        assert_eq!(s.tray, want);
    }

    #[test]
    fn serena_command_as_a_string_is_one_program() {
        let dir = home();
        write_toml(dir.path(), "serena_command = \"/opt/my tools/serena\"\n");
        let s = read_files(dir.path());
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        let want = Some(vec!["/opt/my tools/serena".to_string()]);
        assert_eq!(s.tray.serena_command, want);
    }

    #[test]
    fn bad_toml_is_one_warning_with_line_and_column_and_all_defaults() {
        // (text, line:column, part of the message); the good first line is not used either.
        let cases = [
            // Syntax: what the daemon's integration test writes, an unclosed string, a
            // duplicate key.
            (
                "notifications = false\nprobe_timeout = [oops\n",
                "2:22",
                "unclosed array",
            ),
            (
                "notifications = false\nserena_command = \"serena\n",
                "2:25",
                "string",
            ),
            (
                "notifications = false\nnotifications = true\n",
                "2:1",
                "duplicate key",
            ),
            // Values out of range.
            (
                "notifications = false\nzombie_grace = -1\n",
                "2:16",
                "seconds >= 0",
            ),
            (
                "notifications = false\nprobe_timeout = 0.0\n",
                "2:17",
                "seconds > 0",
            ),
            (
                "notifications = false\nsession_start_timeout = nan\n",
                "2:25",
                "seconds > 0",
            ),
            (
                "notifications = false\ntray_protocol_port = 0\n",
                "2:22",
                "from 1 to 65535",
            ),
            (
                "notifications = false\ntray_protocol_port = 70000\n",
                "2:22",
                "got 70000",
            ),
            (
                "notifications = false\nserena_command = []\n",
                "2:18",
                "no program",
            ),
            (
                "notifications = false\nserena_command = [\" \"]\n",
                "2:18",
                "no program",
            ),
            // Wrong types.
            (
                "notifications = false\nauto_kill_zombies = \"yes\"\n",
                "2:21",
                "a boolean",
            ),
            (
                "notifications = false\nzombie_grace = \"10\"\n",
                "2:16",
                "invalid type",
            ),
            (
                "notifications = false\nserena_command = [\"uvx\", 1]\n",
                "2:18",
                "array",
            ),
            (
                "notifications = false\ntray_protocol_port = 24224.0\n",
                "2:22",
                "invalid type",
            ),
        ];
        for (text, at, what) in cases {
            let dir = home();
            let path = write_toml(dir.path(), text);
            let s = read_files(dir.path());
            let w = only_warning(&s);
            assert!(w.starts_with(&format!("{path}:{at}: ")), "{text:?} -> {w}");
            assert!(w.ends_with("; using defaults"), "{w}");
            assert!(w.contains(what), "{text:?} -> {w}");
            assert_eq!(s.tray, TraySettings::default(), "{text:?}");
        }
    }

    #[test]
    fn unknown_toml_keys_are_warnings_with_their_line_and_the_rest_is_kept() {
        let dir = home();
        let path = write_toml(
            dir.path(),
            "zombie_grase = 4\nnotifications = false\n\n[tray]\nzombie_grace = 1\n",
        );
        let s = read_files(dir.path());
        assert_eq!(s.warnings.len(), 2, "{:#?}", s.warnings);
        let known = TRAY_KEYS.join(", ");
        assert_eq!(
            s.warnings[0],
            format!("{path}:1:1: unknown key `zombie_grase` ignored (known keys: {known})")
        );
        assert!(s.warnings[1].starts_with(&format!("{path}:4:2: unknown key `tray` ignored")));
        let want = TraySettings {
            notifications: false,
            ..TraySettings::default()
        };
        assert_eq!(s.tray, want);
    }

    #[test]
    fn a_byte_order_mark_and_crlf_line_ends_are_fine() {
        let dir = home();
        write_yaml(dir.path(), "\u{feff}web_dashboard_global_port: 26000\r\n");
        write_toml(
            dir.path(),
            "\u{feff}zombie_grace = 2\r\nnotifications = false\r\n",
        );
        let s = read_files(dir.path());
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        assert_eq!(s.dashboard.port, 26000);
        assert_eq!(s.tray.zombie_grace, Duration::from_secs(2));
        assert!(!s.tray.notifications);
    }

    #[test]
    fn warnings_of_both_files_come_yaml_first() {
        let dir = home();
        write_yaml(dir.path(), "web_dashboard_global: [\n");
        write_toml(dir.path(), "nope = 1\n");
        let s = read_files(dir.path());
        assert_eq!(s.warnings.len(), 2, "{:?}", s.warnings);
        assert!(
            s.warnings[0].contains("serena_config.yml:"),
            "{:?}",
            s.warnings
        );
        assert!(s.warnings[1].contains("config.toml:1:1: unknown key `nope`"));
    }

    #[test]
    fn line_col_counts_characters() {
        let text = "a = 1\néé = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, text.find('2').expect("2")), (2, 6));
        assert_eq!(line_col(text, 9999), (3, 1));
    }

    // --- resolving the Serena command ----------------------------------------------------------

    const CONF: &str = "/home/u/.serena/tray/config.toml";

    /// An executable file named `name` in `dir` (`name.exe` on Windows, where a command is
    /// found through its extension, PATHEXT).
    fn script(dir: &Path, name: &str) -> String {
        let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
        std::fs::write(&path, "#!/bin/sh\nexit 0\n").expect("write script");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        path.display().to_string()
    }

    fn with_command(argv: &[&str]) -> TraySettings {
        TraySettings {
            serena_command: Some(argv.iter().map(|s| s.to_string()).collect()),
            ..TraySettings::default()
        }
    }

    fn resolve(
        settings: &TraySettings,
        path: &[&Path],
        home: &Path,
    ) -> Result<Vec<String>, SerenaCommandError> {
        let path_var = std::env::join_paths(path).expect("join_paths");
        settings.resolve_with(Some(&path_var), Some(home), Path::new(CONF))
    }

    #[test]
    fn a_configured_path_or_name_is_resolved_and_its_arguments_kept() {
        let bin = home();
        let uvx = script(bin.path(), "uvx");
        let other = home();
        let argv = resolve(
            &with_command(&["uvx", "--from", "x"]),
            &[other.path(), bin.path()],
            other.path(),
        );
        assert_eq!(argv, Ok(vec![uvx.clone(), "--from".into(), "x".into()]));
        let argv = resolve(&with_command(&[&uvx, "start"]), &[], other.path());
        assert_eq!(argv, Ok(vec![uvx.clone(), "start".into()]));
        // `~/` is the home directory.
        let argv = resolve(&with_command(&["~/uvx"]), &[], bin.path());
        assert_eq!(argv, Ok(vec![uvx]));
    }

    #[test]
    fn a_missing_configured_command_is_an_error_not_a_fallback() {
        let bin = home();
        script(bin.path(), "serena"); // on PATH, but not what was configured
        let missing = bin.path().join("no-such-serena").display().to_string();
        let err =
            resolve(&with_command(&[&missing]), &[bin.path()], bin.path()).expect_err("must fail");
        let msg = err.to_string();
        assert!(
            matches!(err, SerenaCommandError::NotFound { .. }),
            "{err:?}"
        );
        assert!(msg.contains(&format!("(no such file: {missing})")), "{msg}");
        assert!(msg.contains(CONF), "says where to fix it: {msg}");

        let err = resolve(
            &with_command(&["uvx --from x serena"]),
            &[bin.path()],
            bin.path(),
        )
        .expect_err("must fail");
        let msg = err.to_string();
        assert!(
            msg.contains("serena_command `uvx --from x serena` on PATH"),
            "{msg}"
        );
        assert!(msg.contains("use an array"), "{msg}");
    }

    #[cfg(unix)]
    #[test]
    fn a_configured_file_that_is_not_executable_says_so() {
        use std::os::unix::fs::PermissionsExt;
        let dir = home();
        let plain = dir.path().join("serena.txt");
        std::fs::write(&plain, "not a program").expect("write");
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = resolve(
            &with_command(&[plain.to_str().expect("utf8")]),
            &[],
            dir.path(),
        )
        .expect_err("must fail");
        assert!(
            matches!(&err, SerenaCommandError::NotExecutable { why, hint, .. }
                if why.contains("execute permission") && hint.contains("chmod +x")),
            "{err:?}"
        );
        let err = resolve(
            &with_command(&[dir.path().to_str().expect("utf8")]),
            &[],
            dir.path(),
        )
        .expect_err("must fail");
        assert!(err.to_string().contains("it is a directory"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn serena_is_the_first_executable_on_path_then_in_local_bin() {
        use std::os::unix::fs::PermissionsExt;
        let (bin1, bin2, bin3, user) = (home(), home(), home(), home());
        let not_executable = bin1.path().join("serena");
        std::fs::write(&not_executable, "").expect("write");
        std::fs::set_permissions(&not_executable, std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        let want = script(bin2.path(), "serena");
        script(bin3.path(), "serena"); // later on PATH
        let local_bin = user.path().join(".local").join("bin");
        std::fs::create_dir_all(&local_bin).expect("mkdir");
        let in_local_bin = script(&local_bin, "serena");
        let dirs = [bin1.path(), bin2.path(), bin3.path()];
        let default = TraySettings::default();
        assert_eq!(resolve(&default, &dirs, user.path()), Ok(vec![want]));
        assert_eq!(
            resolve(&default, &[bin1.path()], user.path()),
            Ok(vec![in_local_bin])
        );
    }

    #[test]
    fn serena_not_found_says_what_was_searched_and_how_to_fix() {
        let (bin, user) = (home(), home());
        let err =
            resolve(&TraySettings::default(), &[bin.path()], user.path()).expect_err("must fail");
        let local_bin = user.path().join(".local").join("bin");
        let SerenaCommandError::NotFound { looked_for, hint } = &err else {
            panic!("wrong variant: {err:?}");
        };
        assert_eq!(
            looked_for,
            &format!(
                "`serena` on PATH (PATH={}) and in {}",
                bin.path().display(),
                local_bin.display()
            )
        );
        assert!(hint.contains("uv tool install serena-agent"), "{hint}");
        assert!(
            hint.contains(&format!("[\"/path/to/serena\"] in {CONF}")),
            "{hint}"
        );
        let err = TraySettings::default()
            .resolve_with(None, None, Path::new(CONF))
            .expect_err("must fail");
        assert!(err
            .to_string()
            .contains("looked for `serena` on PATH (PATH is not set)."));
    }
}
