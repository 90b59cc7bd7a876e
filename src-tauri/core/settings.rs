//! The two optional settings files, read once at start-up and never fatal. This module owns
//! reading `$SERENA_HOME/serena_config.yml` (Serena's own, large file; only the three top-level
//! `web_dashboard_global*` keys are looked at, everything else in it is Serena's business) and
//! `$SERENA_HOME/tray/config.toml` (this program's settings, all optional), plus turning the
//! configured `serena_command` (or `serena` on PATH) into a runnable argv prefix. A missing file
//! means defaults; a file that cannot be read or parsed, or a key of the wrong type, becomes a
//! human-readable warning naming the file and line, and defaults for what could not be used. It
//! deliberately does not write either file, does not watch them for changes, does not apply
//! command-line overrides (the caller layers `--port` and friends on top of [`Settings`]), and does
//! not log the warnings itself: the caller decides where they are shown.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use yaml_rust2::parser::{MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;
use yaml_rust2::{Event, Yaml, YamlLoader};

use crate::core::config::{DEFAULT_PROBE_TIMEOUT, DEFAULT_ZOMBIE_GRACE};

/// Serena's `web_dashboard_global_port` default: where the one global dashboard listens.
pub const DEFAULT_DASHBOARD_PORT: u16 = 25282;
/// Serena's `tray_manager` port, where instances register themselves.
pub const DEFAULT_TRAY_PROTOCOL_PORT: u16 = 24224;

/// A settings file larger than this is refused (with a warning): neither file is ever that big,
/// and reading an arbitrary huge file at start-up would only delay the tray.
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// The three top-level keys read from Serena's `serena_config.yml`.
const KEY_GLOBAL: &str = "web_dashboard_global";
const KEY_OPEN_ON_LAUNCH: &str = "web_dashboard_global_open_on_launch";
const KEY_PORT: &str = "web_dashboard_global_port";

/// The default of `session_start_timeout`.
pub const DEFAULT_SESSION_START_TIMEOUT: Duration = Duration::from_secs(90);

/// The keys `tray/config.toml` knows.
const TRAY_KEYS: [&str; 7] = [
    "zombie_grace",
    "probe_timeout",
    "session_start_timeout",
    "serena_command",
    "notifications",
    "auto_kill_zombies",
    "tray_protocol_port",
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
}

impl Default for GlobalDashboard {
    fn default() -> Self {
        GlobalDashboard {
            enabled: true,
            open_on_launch: false,
            port: DEFAULT_DASHBOARD_PORT,
        }
    }
}

/// This program's own options, from `tray/config.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct TraySettings {
    /// `zombie_grace` (seconds, >= 0, default 10).
    pub zombie_grace: Duration,
    /// `probe_timeout` (seconds, > 0, default 1.5).
    pub probe_timeout: Duration,
    /// `serena_command`: the argv prefix that launches Serena; `None` = `serena` on PATH.
    /// Never `Some(empty)` when read from the file.
    pub serena_command: Option<Vec<String>>,
    /// `notifications` (default true): desktop notifications about new zombies.
    pub notifications: bool,
    /// `auto_kill_zombies` (default false).
    pub auto_kill_zombies: bool,
    /// `session_start_timeout`: how long a launched session may take to answer (default 90 s).
    pub session_start_timeout: Duration,
    /// `tray_protocol_port` (default 24224).
    pub tray_protocol_port: u16,
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
        }
    }
}

/// Everything read from both files, plus what went wrong while reading them.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub dashboard: GlobalDashboard,
    pub tray: TraySettings,
    /// One line per problem, `<path>:<line>: <what>; <what was used instead>`, in file order.
    /// Empty when both files are absent or fine.
    pub warnings: Vec<String>,
}

/// Reads both files under `serena_home`. A missing file means defaults. A malformed file (bad
/// syntax, or not a table/mapping at the top) yields a warning `<path>:<line>: <what>; using
/// defaults` and the defaults for that file. A known key of the wrong type (or out of range)
/// yields a warning naming the key and its line, and only that key falls back to its default;
/// the file's other keys are kept. Unknown keys of `tray/config.toml` are warnings too (with a
/// suggestion when they look like a typo); unknown keys of `serena_config.yml` are Serena's and
/// silently ignored. Never panics, never returns an error.
pub fn load(serena_home: &Path) -> Settings {
    let mut warnings = Vec::new();
    let dashboard = load_dashboard(&serena_config_path(serena_home), &mut warnings);
    let tray = load_tray(&tray_config_path(serena_home), &mut warnings);
    Settings {
        dashboard,
        tray,
        warnings,
    }
}

// ---------------------------------------------------------------------------------------------
// Reading a file

/// The file's text, or `None` when it is absent (silently) or unusable (with a warning).
fn read_optional(path: &Path, warnings: &mut Vec<String>) -> Option<String> {
    let shown = path.display();
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::debug!("{shown}: absent, using defaults");
            return None;
        }
        Err(e) => {
            warnings.push(format!("{shown}: cannot read it ({e}); using defaults"));
            return None;
        }
    };
    if let Ok(meta) = file.metadata() {
        if meta.is_dir() {
            warnings.push(format!(
                "{shown}: is a directory, not a file; using defaults"
            ));
            return None;
        }
    }
    let mut bytes = Vec::new();
    if let Err(e) = file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes) {
        warnings.push(format!("{shown}: cannot read it ({e}); using defaults"));
        return None;
    }
    if bytes.len() as u64 > MAX_FILE_BYTES {
        warnings.push(format!(
            "{shown}: larger than {} MiB, not a settings file; using defaults",
            MAX_FILE_BYTES / (1024 * 1024)
        ));
        return None;
    }
    match String::from_utf8(bytes) {
        Ok(mut text) => {
            if text.starts_with('\u{feff}') {
                text.drain(..'\u{feff}'.len_utf8());
            }
            tracing::debug!("{shown}: read {} bytes", text.len());
            Some(text)
        }
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let line = line_of(&String::from_utf8_lossy(&e.into_bytes()[..at]), at);
            warnings.push(format!(
                "{shown}:{line}: not valid UTF-8 text; using defaults"
            ));
            None
        }
    }
}

/// The 1-based line on which byte `offset` of `text` lies.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    1 + text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// `path:line` or, when the line is unknown, `path`.
fn location(path: &Path, line: Option<usize>) -> String {
    match line {
        Some(line) => format!("{}:{line}", path.display()),
        None => path.display().to_string(),
    }
}

/// A parser message squeezed onto one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(": ")
}

/// A value shown inside a warning, cut short if long.
fn shorten(text: &str) -> String {
    const MAX: usize = 40;
    if text.chars().count() <= MAX {
        text.to_string()
    } else {
        let cut: String = text.chars().take(MAX).collect();
        format!("{cut}...")
    }
}

fn key_warning(at: &str, key: &str, expected: &str, got: &str, default: &str) -> String {
    format!(
        "{at}: `{key}` must be {expected}, got {got}; using the default {default} for `{key}` \
         (the file's other keys are kept)"
    )
}

fn secs_text(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

// ---------------------------------------------------------------------------------------------
// serena_config.yml

fn load_dashboard(path: &Path, warnings: &mut Vec<String>) -> GlobalDashboard {
    let mut out = GlobalDashboard::default();
    let Some(text) = read_optional(path, warnings) else {
        return out;
    };
    let docs = match YamlLoader::load_from_str(&text) {
        Ok(docs) => docs,
        Err(e) => {
            let at = location(path, Some(e.marker().line().max(1)));
            warnings.push(format!(
                "{at}: not valid YAML ({}, column {}); using defaults",
                e.info(),
                e.marker().col() + 1
            ));
            return out;
        }
    };
    // An empty file (or one holding only comments) has no document; `~` is a null document.
    let hash = match docs.into_iter().next() {
        None | Some(Yaml::Null) => return out,
        Some(Yaml::Hash(hash)) => hash,
        Some(other) => {
            let line = YamlKeyLines::scan(&text).root_line;
            warnings.push(format!(
                "{}: expected a mapping of settings at the top level, found {}; using defaults",
                location(path, line),
                yaml_kind(&other)
            ));
            return out;
        }
    };

    let defaults = GlobalDashboard::default();
    let mut lines: Option<YamlKeyLines> = None;
    let mut warn_key = |key: &str, expected: &str, value: &Yaml, default: String| {
        let line = lines
            .get_or_insert_with(|| YamlKeyLines::scan(&text))
            .keys
            .get(key)
            .copied();
        warnings.push(key_warning(
            &location(path, line),
            key,
            expected,
            &yaml_describe(value),
            &default,
        ));
    };

    for key in [KEY_GLOBAL, KEY_OPEN_ON_LAUNCH, KEY_PORT] {
        let Some(value) = hash.get(&Yaml::String(key.to_string())) else {
            continue;
        };
        if matches!(value, Yaml::Null) {
            // `key:` with no value, or `~`: Serena's way of saying "the default".
            continue;
        }
        match key {
            KEY_GLOBAL => match value {
                Yaml::Boolean(b) => out.enabled = *b,
                _ => warn_key(key, "true or false", value, defaults.enabled.to_string()),
            },
            KEY_OPEN_ON_LAUNCH => match value {
                Yaml::Boolean(b) => out.open_on_launch = *b,
                _ => warn_key(
                    key,
                    "true or false",
                    value,
                    defaults.open_on_launch.to_string(),
                ),
            },
            _ => match value {
                Yaml::Integer(i) if (1..=i64::from(u16::MAX)).contains(i) => {
                    out.port = u16::try_from(*i).unwrap_or(DEFAULT_DASHBOARD_PORT);
                }
                _ => warn_key(
                    key,
                    "a port number from 1 to 65535",
                    value,
                    defaults.port.to_string(),
                ),
            },
        }
    }
    out
}

fn yaml_kind(value: &Yaml) -> &'static str {
    match value {
        Yaml::Real(_) => "a number",
        Yaml::Integer(_) => "an integer",
        Yaml::String(_) => "a string",
        Yaml::Boolean(_) => "a boolean",
        Yaml::Array(_) => "a list",
        Yaml::Hash(_) => "a mapping",
        Yaml::Alias(_) => "an alias",
        Yaml::Null => "null",
        Yaml::BadValue => "an unreadable value",
    }
}

fn yaml_describe(value: &Yaml) -> String {
    match value {
        Yaml::Real(r) => format!("{} {}", yaml_kind(value), shorten(r)),
        Yaml::Integer(i) => format!("{} {i}", yaml_kind(value)),
        Yaml::String(s) => format!("{} {:?}", yaml_kind(value), shorten(s)),
        Yaml::Boolean(b) => format!("{} {b}", yaml_kind(value)),
        _ => yaml_kind(value).to_string(),
    }
}

/// Where the top-level keys of the first YAML document are (1-based lines), found with the
/// event parser because the loaded tree carries no positions. Only used to point warnings at a
/// line, so any parse trouble just leaves entries out.
#[derive(Default)]
struct YamlKeyLines {
    /// Line of the top-level node.
    root_line: Option<usize>,
    /// Top-level key -> line of its last occurrence (the loader also keeps the last).
    keys: HashMap<String, usize>,
    depth: usize,
    root_is_mapping: bool,
    at_key: bool,
    done: bool,
}

impl YamlKeyLines {
    fn scan(text: &str) -> YamlKeyLines {
        let mut recv = YamlKeyLines::default();
        let _ = Parser::new_from_str(text).load(&mut recv, false);
        recv
    }

    /// A complete node was seen at `depth` (before any nesting it opened).
    fn node(&mut self, depth: usize, mark: &Marker) {
        if depth == 0 && self.root_line.is_none() {
            self.root_line = Some(mark.line().max(1));
        }
    }
}

impl MarkedEventReceiver for YamlKeyLines {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.done {
            return;
        }
        match ev {
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                if self.depth == 0 {
                    self.root_is_mapping = matches!(ev, Event::MappingStart(..));
                    self.at_key = true;
                }
                self.node(self.depth, &mark);
                self.depth += 1;
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.depth = self.depth.saturating_sub(1);
                if self.depth == 1 {
                    self.at_key = !self.at_key;
                }
            }
            Event::Scalar(value, ..) => {
                self.node(self.depth, &mark);
                if self.depth == 1 && self.root_is_mapping {
                    if self.at_key {
                        self.keys.insert(value, mark.line().max(1));
                    }
                    self.at_key = !self.at_key;
                }
            }
            Event::Alias(_) => {
                self.node(self.depth, &mark);
                if self.depth == 1 {
                    self.at_key = !self.at_key;
                }
            }
            Event::DocumentEnd => self.done = true,
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// tray/config.toml

fn load_tray(path: &Path, warnings: &mut Vec<String>) -> TraySettings {
    let mut out = TraySettings::default();
    let Some(text) = read_optional(path, warnings) else {
        return out;
    };
    // Every top-level key with its value and both positions; the types are checked below, key by
    // key, so that one bad value does not cost the good ones.
    let table: BTreeMap<Spanned<String>, Spanned<toml::Value>> = match toml::from_str(&text) {
        Ok(table) => table,
        Err(e) => {
            let line = e.span().map(|span| line_of(&text, span.start));
            warnings.push(format!(
                "{}: not valid TOML ({}); using defaults",
                location(path, line),
                one_line(e.message())
            ));
            return out;
        }
    };
    let mut entries: Vec<_> = table.into_iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);

    for (key, value) in entries {
        let at = location(path, Some(line_of(&text, key.span().start)));
        let key = key.get_ref().as_str();
        let value = value.get_ref();
        let got = || toml_describe(value);
        match key {
            // On a bad value the field keeps its default (`out` starts from the defaults).
            "zombie_grace" => match seconds(value, false, DEFAULT_ZOMBIE_GRACE, &at, key) {
                Ok(d) => out.zombie_grace = d,
                Err(w) => warnings.push(w),
            },
            "probe_timeout" => match seconds(value, true, DEFAULT_PROBE_TIMEOUT, &at, key) {
                Ok(d) => out.probe_timeout = d,
                Err(w) => warnings.push(w),
            },
            "session_start_timeout" => {
                match seconds(value, true, DEFAULT_SESSION_START_TIMEOUT, &at, key) {
                    Ok(d) => out.session_start_timeout = d,
                    Err(w) => warnings.push(w),
                }
            }
            "serena_command" => match toml_command(value) {
                Ok(argv) => out.serena_command = Some(argv),
                Err(expected) => warnings.push(key_warning(
                    &at,
                    key,
                    expected,
                    &got(),
                    "(`serena` on PATH)",
                )),
            },
            "notifications" | "auto_kill_zombies" => match value.as_bool() {
                Some(b) if key == "notifications" => out.notifications = b,
                Some(b) => out.auto_kill_zombies = b,
                None => {
                    let default = if key == "notifications" {
                        TraySettings::default().notifications
                    } else {
                        TraySettings::default().auto_kill_zombies
                    };
                    warnings.push(key_warning(
                        &at,
                        key,
                        "true or false",
                        &got(),
                        &default.to_string(),
                    ));
                }
            },
            "tray_protocol_port" => match value.as_integer().map(u16::try_from) {
                Some(Ok(port)) if port != 0 => out.tray_protocol_port = port,
                _ => warnings.push(key_warning(
                    &at,
                    key,
                    "a port number from 1 to 65535",
                    &got(),
                    &DEFAULT_TRAY_PROTOCOL_PORT.to_string(),
                )),
            },
            unknown => {
                let hint = match closest_key(unknown) {
                    Some(known) => format!(" (did you mean `{known}`?)"),
                    None => format!(" (known keys: {})", TRAY_KEYS.join(", ")),
                };
                warnings.push(format!("{at}: unknown key `{unknown}` ignored{hint}"));
            }
        }
    }
    out
}

/// A non-negative, finite number of seconds (integer or float) as a duration.
/// A seconds key: its value, or the warning that says why the default is used instead.
fn seconds(
    value: &toml::Value,
    positive: bool,
    default: Duration,
    at: &str,
    key: &str,
) -> Result<Duration, String> {
    let expected = if positive {
        "a number of seconds > 0"
    } else {
        "a number of seconds >= 0"
    };
    toml_seconds(value)
        .filter(|d| !(positive && d.is_zero()))
        .ok_or_else(|| {
            key_warning(
                at,
                key,
                expected,
                &toml_describe(value),
                &secs_text(default),
            )
        })
}

fn toml_seconds(value: &toml::Value) -> Option<Duration> {
    let secs = match value {
        toml::Value::Integer(i) => *i as f64,
        toml::Value::Float(f) => *f,
        _ => return None,
    };
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Duration::try_from_secs_f64(secs).ok()
}

/// `"serena"` or `["uvx", "--from", "...", "serena"]`; `Err` says what was expected.
fn toml_command(value: &toml::Value) -> Result<Vec<String>, &'static str> {
    const EXPECTED: &str = "a non-empty string or a non-empty array of strings \
                            (the program first)";
    let argv: Vec<String> = match value {
        toml::Value::String(s) => vec![s.clone()],
        toml::Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or(EXPECTED)?,
        _ => return Err(EXPECTED),
    };
    match argv.first() {
        Some(program) if !program.trim().is_empty() => Ok(argv),
        _ => Err(EXPECTED),
    }
}

fn toml_describe(value: &toml::Value) -> String {
    let kind = value.type_str();
    let article = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    match value {
        toml::Value::Table(_) => format!("{article} {kind}"),
        toml::Value::Array(a) if a.is_empty() => "an empty array".to_string(),
        _ => format!("{article} {kind} {}", shorten(&value.to_string())),
    }
}

/// The known key that `unknown` most likely is a typo of (edit distance at most 2).
fn closest_key(unknown: &str) -> Option<&'static str> {
    let lower = unknown.to_ascii_lowercase().replace('-', "_");
    TRAY_KEYS
        .iter()
        .map(|known| (edit_distance(&lower, known), *known))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, known)| known)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            cur.push(substitute.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

// ---------------------------------------------------------------------------------------------
// Resolving the Serena command

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
    /// The argv prefix that launches Serena: the configured `serena_command` (its program
    /// resolved on PATH when it has no path separator, `~/` expanded, checked to be an executable
    /// file), else `serena` found on PATH (then in `~/.local/bin`, where `uv tool` and `pipx`
    /// put it, since a desktop session's PATH often lacks it). A configured command that cannot
    /// be found is an error, never silently replaced by `serena` on PATH. The first element of
    /// the result is an absolute path.
    ///
    /// The hint in the error names the settings file under `$SERENA_HOME` (else `~/.serena`);
    /// a caller that knows the home from `--serena-home` should use
    /// [`TraySettings::resolve_serena_command_in`] so the hint names the right file.
    pub fn resolve_serena_command(&self) -> Result<Vec<String>, SerenaCommandError> {
        let config_file = match crate::core::config::resolve_serena_home(None) {
            Ok(home) => tray_config_path(&home).display().to_string(),
            Err(_) => "$SERENA_HOME/tray/config.toml".to_string(),
        };
        self.resolve_with(&process_search_env(), &config_file)
    }

    /// Like [`TraySettings::resolve_serena_command`], with the error's hint naming
    /// `<serena_home>/tray/config.toml`.
    pub fn resolve_serena_command_in(
        &self,
        serena_home: &Path,
    ) -> Result<Vec<String>, SerenaCommandError> {
        let config_file = tray_config_path(serena_home).display().to_string();
        self.resolve_with(&process_search_env(), &config_file)
    }

    fn resolve_with(
        &self,
        env: &SearchEnv,
        config_file: &str,
    ) -> Result<Vec<String>, SerenaCommandError> {
        match self.serena_command.as_deref() {
            Some([program, args @ ..]) => {
                let resolved = resolve_configured(program, env, config_file)?;
                let mut argv = Vec::with_capacity(args.len() + 1);
                argv.push(resolved);
                argv.extend(args.iter().cloned());
                Ok(argv)
            }
            Some([]) | None => resolve_default(env, config_file).map(|path| vec![path]),
        }
    }
}

/// What the search depends on, passed in so that tests need not touch the process environment.
struct SearchEnv {
    /// The value of `PATH`.
    path_var: Option<std::ffi::OsString>,
    /// The user's home directory, for `~/` and `~/.local/bin`.
    home: Option<PathBuf>,
}

fn process_search_env() -> SearchEnv {
    let home_var = if cfg!(windows) { "USERPROFILE" } else { "HOME" };
    SearchEnv {
        path_var: std::env::var_os("PATH"),
        home: std::env::var_os(home_var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from),
    }
}

fn install_hint(config_file: &str) -> String {
    format!(
        "install Serena (the `serena-agent` package, e.g. `uv tool install serena-agent`) so that \
         `serena` is on PATH, or set serena_command = [\"/path/to/serena\"] in {config_file}"
    )
}

/// `serena` on PATH, then in `~/.local/bin`.
fn resolve_default(env: &SearchEnv, config_file: &str) -> Result<String, SerenaCommandError> {
    let mut dirs = path_dirs(env.path_var.as_deref());
    let on_path = dirs.len();
    if let Some(home) = &env.home {
        let local_bin = home.join(".local").join("bin");
        if !dirs.contains(&local_bin) {
            dirs.push(local_bin);
        }
    }
    if let Some(found) = search_dirs("serena", &dirs) {
        return Ok(found);
    }
    let mut looked_for = format!(
        "`serena` on PATH ({})",
        describe_path(env, &dirs[..on_path])
    );
    if dirs.len() > on_path {
        let extra: Vec<String> = dirs[on_path..]
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        looked_for.push_str(&format!(" and in {}", extra.join(", ")));
    }
    Err(SerenaCommandError::NotFound {
        looked_for,
        hint: install_hint(config_file),
    })
}

/// The configured program: a path (absolute, relative to the current directory, or `~/...`)
/// checked as is, or a bare name searched on PATH.
fn resolve_configured(
    program: &str,
    env: &SearchEnv,
    config_file: &str,
) -> Result<String, SerenaCommandError> {
    let is_path = program.contains('/')
        || (cfg!(windows) && program.contains('\\'))
        || program == "~"
        || Path::new(program).is_absolute();
    if !is_path {
        let dirs = path_dirs(env.path_var.as_deref());
        if let Some(found) = search_dirs(program, &dirs) {
            return Ok(found);
        }
        let mut hint = format!(
            "install `{program}` or put its directory on PATH, or set serena_command in \
             {config_file} to an array whose first element is the program's absolute path"
        );
        if program.contains(char::is_whitespace) {
            hint.push_str(
                " (to pass arguments, use an array such as [\"uvx\", \"--from\", \"...\", \
                 \"serena\"]: a string is one program name, never split)",
            );
        }
        return Err(SerenaCommandError::NotFound {
            looked_for: format!(
                "the configured serena_command `{program}` on PATH ({})",
                describe_path(env, &dirs)
            ),
            hint,
        });
    }

    let expanded = expand_tilde(program, env.home.as_deref());
    let path = std::path::absolute(&expanded).unwrap_or(expanded);
    let fix = format!(
        "point serena_command in {config_file} at an existing executable (or remove it to use \
         `serena` on PATH)"
    );
    let mut candidates = vec![path.clone()];
    if cfg!(windows) && path.extension().is_none() {
        candidates.push(path.with_extension("exe"));
    }
    for candidate in &candidates {
        match check_executable(candidate) {
            Ok(()) => {
                return candidate.to_str().map(str::to_string).ok_or_else(|| {
                    SerenaCommandError::NotExecutable {
                        path: candidate.display().to_string(),
                        why: "its path is not valid UTF-8".to_string(),
                        hint: fix.clone(),
                    }
                });
            }
            Err(Unusable::Missing) => {}
            Err(Unusable::NoExecutePermission) => {
                return Err(SerenaCommandError::NotExecutable {
                    path: candidate.display().to_string(),
                    why: "it has no execute permission".to_string(),
                    hint: format!("make it executable (chmod +x), or {fix}"),
                })
            }
            Err(Unusable::Other(why)) => {
                return Err(SerenaCommandError::NotExecutable {
                    path: candidate.display().to_string(),
                    why,
                    hint: fix,
                })
            }
        }
    }
    let shown: Vec<String> = candidates.iter().map(|c| c.display().to_string()).collect();
    Err(SerenaCommandError::NotFound {
        looked_for: format!(
            "the configured serena_command `{program}` (no such file: {})",
            shown.join(" or ")
        ),
        hint: fix,
    })
}

fn expand_tilde(program: &str, home: Option<&Path>) -> PathBuf {
    let rest = if program == "~" {
        Some("")
    } else {
        program
            .strip_prefix("~/")
            .or_else(|| program.strip_prefix("~\\").filter(|_| cfg!(windows)))
    };
    match (rest, home) {
        (Some(""), Some(home)) => home.to_path_buf(),
        (Some(rest), Some(home)) => home.join(rest),
        _ => PathBuf::from(program),
    }
}

/// The absolute directories of a PATH value, in order, without duplicates. Empty and relative
/// entries are skipped: what they mean depends on the current directory at spawn time.
fn path_dirs(path_var: Option<&OsStr>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(value) = path_var {
        for dir in std::env::split_paths(value) {
            if dir.is_absolute() && !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    dirs
}

fn describe_path(env: &SearchEnv, dirs: &[PathBuf]) -> String {
    match env.path_var.as_deref() {
        None => "PATH is not set".to_string(),
        Some(_) if dirs.is_empty() => "PATH has no absolute directories".to_string(),
        Some(_) => {
            let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            format!("searched {}", shown.join(", "))
        }
    }
}

/// The first `dir/name` (on Windows also `dir/name.exe`) that is an executable file.
fn search_dirs(name: &str, dirs: &[PathBuf]) -> Option<String> {
    let mut names = vec![name.to_string()];
    if cfg!(windows) && Path::new(name).extension().is_none() {
        names.push(format!("{name}.exe"));
    }
    dirs.iter()
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|candidate| check_executable(candidate).is_ok())
        .and_then(|found| found.to_str().map(str::to_string))
}

/// Why a path cannot be run.
enum Unusable {
    /// Nothing is there.
    Missing,
    /// A regular file without any execute bit.
    NoExecutePermission,
    /// Something else is wrong (a directory, a socket, an unreadable parent directory...).
    Other(String),
}

/// `Ok` for an executable regular file (after following symlinks).
fn check_executable(path: &Path) -> Result<(), Unusable> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Unusable::Missing),
        Err(e) => return Err(Unusable::Other(e.to_string())),
    };
    if meta.is_dir() {
        return Err(Unusable::Other("it is a directory".to_string()));
    }
    if !meta.is_file() {
        return Err(Unusable::Other("it is not a regular file".to_string()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o111 == 0 {
            return Err(Unusable::NoExecutePermission);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home() -> tempfile::TempDir {
        tempfile::tempdir().expect("tempdir")
    }

    fn write_yaml(home: &Path, text: &str) -> PathBuf {
        let path = serena_config_path(home);
        std::fs::write(&path, text).expect("write yaml");
        path
    }

    fn write_toml(home: &Path, text: &str) -> PathBuf {
        let path = tray_config_path(home);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir tray");
        std::fs::write(&path, text).expect("write toml");
        path
    }

    fn only_warning(s: &Settings) -> &str {
        assert_eq!(s.warnings.len(), 1, "warnings: {:#?}", s.warnings);
        &s.warnings[0]
    }

    // --- both files ---------------------------------------------------------------------------

    #[test]
    fn missing_files_mean_defaults_and_no_warnings() {
        let dir = home();
        let s = load(dir.path());
        assert_eq!(s.dashboard, GlobalDashboard::default());
        assert_eq!(s.tray, TraySettings::default());
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        assert!(s.dashboard.enabled);
        assert!(!s.dashboard.open_on_launch);
        assert_eq!(s.dashboard.port, 25282);
        assert_eq!(s.tray.zombie_grace, Duration::from_secs(10));
        assert_eq!(s.tray.probe_timeout, Duration::from_millis(1500));
        assert_eq!(s.tray.serena_command, None);
        assert!(s.tray.notifications);
        assert!(!s.tray.auto_kill_zombies);
        assert_eq!(s.tray.tray_protocol_port, 24224);
    }

    #[test]
    fn a_home_that_does_not_exist_is_fine() {
        let dir = home();
        let s = load(&dir.path().join("nope").join("deeper"));
        assert_eq!(s.dashboard, GlobalDashboard::default());
        assert_eq!(s.tray, TraySettings::default());
        assert!(s.warnings.is_empty());
    }

    #[test]
    fn both_files_good_together() {
        let dir = home();
        write_yaml(dir.path(), "web_dashboard_global_port: 31000\n");
        write_toml(dir.path(), "zombie_grace = 3\n");
        let s = load(dir.path());
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        assert_eq!(s.dashboard.port, 31000);
        assert_eq!(s.tray.zombie_grace, Duration::from_secs(3));
    }

    #[test]
    fn a_directory_in_place_of_a_file_is_a_warning() {
        let dir = home();
        std::fs::create_dir_all(serena_config_path(dir.path())).expect("mkdir");
        std::fs::create_dir_all(tray_config_path(dir.path())).expect("mkdir");
        let s = load(dir.path());
        assert_eq!(s.dashboard, GlobalDashboard::default());
        assert_eq!(s.tray, TraySettings::default());
        assert_eq!(s.warnings.len(), 2, "{:?}", s.warnings);
        assert!(s.warnings[0].contains("serena_config.yml"));
        assert!(s.warnings[1].contains("config.toml"));
        assert!(s.warnings.iter().all(|w| w.ends_with("using defaults")));
    }

    #[test]
    fn invalid_utf8_is_a_warning_with_the_line() {
        let dir = home();
        let path = serena_config_path(dir.path());
        std::fs::write(&path, b"a: 1\nb: \xff\xfe\n").expect("write");
        let s = load(dir.path());
        assert_eq!(
            only_warning(&s),
            format!("{}:2: not valid UTF-8 text; using defaults", path.display())
        );
    }

    #[test]
    fn an_oversized_file_is_refused() {
        let dir = home();
        let path = write_toml(dir.path(), "");
        let big = format!("# {}\n", "x".repeat(MAX_FILE_BYTES as usize));
        std::fs::write(&path, big).expect("write");
        let s = load(dir.path());
        assert!(only_warning(&s).contains("larger than 4 MiB"));
        assert_eq!(s.tray, TraySettings::default());
    }

    // --- serena_config.yml --------------------------------------------------------------------

    /// Shaped like the file Serena writes: comments, other keys, nested lists, capitalised
    /// booleans, and our three keys somewhere in the middle.
    const SERENA_YML: &str = r#"# the configuration of Serena, written by Serena
gui_log_window: False
# whether to open a dashboard per instance
web_dashboard: True
web_dashboard_open_on_launch: False
web_dashboard_interface: tray_manager  # or "browser"

# the one global dashboard (read by Serena Tray)
web_dashboard_global: True
web_dashboard_global_open_on_launch: True   # open it once
web_dashboard_global_port: 27000

log_level: 20
trace_lsp_communication: False
tool_timeout: 240
excluded_tools: []
included_optional_tools: []
jetbrains: False
record_tool_usage_stats: False
token_count_estimator: TIKTOKEN_GPT4O
projects:
- /home/someone/code/one
- /home/someone/code/two
"#;

    #[test]
    fn real_looking_serena_config() {
        let dir = home();
        write_yaml(dir.path(), SERENA_YML);
        let s = load(dir.path());
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        assert_eq!(
            s.dashboard,
            GlobalDashboard {
                enabled: true,
                open_on_launch: true,
                port: 27000
            }
        );
        assert_eq!(s.tray, TraySettings::default());
    }

    #[test]
    fn serena_config_without_our_keys_is_defaults() {
        let dir = home();
        write_yaml(
            dir.path(),
            "web_dashboard: true\nlog_level: 20\nprojects: []\n",
        );
        let s = load(dir.path());
        assert!(s.warnings.is_empty());
        assert_eq!(s.dashboard, GlobalDashboard::default());
    }

    #[test]
    fn yaml_disabling_the_global_dashboard() {
        let dir = home();
        write_yaml(dir.path(), "web_dashboard_global: false\n");
        let s = load(dir.path());
        assert!(s.warnings.is_empty());
        assert!(!s.dashboard.enabled);
        assert_eq!(s.dashboard.port, DEFAULT_DASHBOARD_PORT);
    }

    #[test]
    fn empty_comment_only_and_null_yaml_are_defaults() {
        for text in ["", "# nothing here\n\n# at all\n", "~\n", "---\n...\n"] {
            let dir = home();
            write_yaml(dir.path(), text);
            let s = load(dir.path());
            assert!(s.warnings.is_empty(), "{text:?}: {:?}", s.warnings);
            assert_eq!(s.dashboard, GlobalDashboard::default(), "{text:?}");
        }
    }

    #[test]
    fn yaml_null_values_mean_default_silently() {
        let dir = home();
        write_yaml(
            dir.path(),
            "web_dashboard_global:\nweb_dashboard_global_port: ~\nweb_dashboard_global_open_on_launch: null\n",
        );
        let s = load(dir.path());
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        assert_eq!(s.dashboard, GlobalDashboard::default());
    }

    #[test]
    fn malformed_yaml_names_path_and_line() {
        let dir = home();
        // Line 4 holds an unterminated flow sequence continuing with a bad indicator.
        let text = "log_level: 20\nweb_dashboard_global: false\n# fine so far\nprojects: [a, b\nweb_dashboard_global_port: : 5\n";
        let path = write_yaml(dir.path(), text);
        let s = load(dir.path());
        let w = only_warning(&s);
        assert!(w.starts_with(&format!("{}:", path.display())), "{w}");
        assert!(w.ends_with("; using defaults"), "{w}");
        assert!(w.contains("not valid YAML"), "{w}");
        assert_eq!(s.dashboard, GlobalDashboard::default());
    }

    #[test]
    fn malformed_yaml_line_numbers_are_exact() {
        // (text, the line the warning must name)
        let cases = [
            // A tab used for indentation, on line 3.
            ("a: 1\nb:\n\t- x\n", 3),
            // An unterminated quoted scalar starting on line 2 runs to the end.
            ("a: 1\nweb_dashboard_global_port: \"25282\n", 2),
            // A mapping value where none is allowed, on line 4.
            ("# c\na: 1\nb: 2\nweb_dashboard_global: a: b\n", 4),
        ];
        for (text, line) in cases {
            let dir = home();
            let path = write_yaml(dir.path(), text);
            let s = load(dir.path());
            let w = only_warning(&s);
            assert!(
                w.starts_with(&format!("{}:{line}: not valid YAML (", path.display())),
                "{text:?} -> {w}"
            );
            assert!(w.ends_with("; using defaults"), "{w}");
            assert_eq!(s.dashboard, GlobalDashboard::default());
        }
    }

    #[test]
    fn yaml_wrong_types_name_key_and_line_and_keep_the_rest() {
        let dir = home();
        let text = "# header\nlog_level: 20\nweb_dashboard_global: \"yes\"\n\nweb_dashboard_global_open_on_launch: true\nweb_dashboard_global_port: [1, 2]\n";
        let path = write_yaml(dir.path(), text);
        let s = load(dir.path());
        assert_eq!(s.warnings.len(), 2, "{:?}", s.warnings);
        assert_eq!(
            s.warnings[0],
            format!(
                "{}:3: `web_dashboard_global` must be true or false, got a string \"yes\"; \
                 using the default true for `web_dashboard_global` (the file's other keys are kept)",
                path.display()
            )
        );
        assert!(
            s.warnings[1].starts_with(&format!(
                "{}:6: `web_dashboard_global_port` must be a port number from 1 to 65535, got a list;",
                path.display()
            )),
            "{}",
            s.warnings[1]
        );
        // The good key is kept, the bad ones are defaults.
        assert_eq!(
            s.dashboard,
            GlobalDashboard {
                enabled: true,
                open_on_launch: true,
                port: DEFAULT_DASHBOARD_PORT
            }
        );
    }

    #[test]
    fn yaml_port_out_of_range_or_not_an_integer() {
        for (value, got) in [
            ("0", "an integer 0"),
            ("65536", "an integer 65536"),
            ("-1", "an integer -1"),
            ("99999999999", "an integer 99999999999"),
            ("25282.5", "a number 25282.5"),
            ("\"25282\"", "a string \"25282\""),
            ("true", "a boolean true"),
        ] {
            let dir = home();
            let path = write_yaml(
                dir.path(),
                &format!("web_dashboard_global: false\nweb_dashboard_global_port: {value}\n"),
            );
            let s = load(dir.path());
            let w = only_warning(&s);
            assert!(
                w.starts_with(&format!(
                    "{}:2: `web_dashboard_global_port` must be a port number from 1 to 65535, got {got};",
                    path.display()
                )),
                "{value}: {w}"
            );
            assert!(w.contains("using the default 25282"), "{w}");
            assert!(!s.dashboard.enabled, "other keys are kept");
            assert_eq!(s.dashboard.port, DEFAULT_DASHBOARD_PORT);
        }
        for (value, port) in [("1", 1), ("65535", 65535), ("0x6000", 0x6000)] {
            let dir = home();
            write_yaml(dir.path(), &format!("web_dashboard_global_port: {value}\n"));
            let s = load(dir.path());
            assert!(s.warnings.is_empty(), "{value}: {:?}", s.warnings);
            assert_eq!(s.dashboard.port, port);
        }
    }

    #[test]
    fn yaml_top_level_not_a_mapping() {
        let dir = home();
        let path = write_yaml(dir.path(), "# a list, not settings\n- a\n- b\n");
        let s = load(dir.path());
        assert_eq!(
            only_warning(&s),
            format!(
                "{}:2: expected a mapping of settings at the top level, found a list; using defaults",
                path.display()
            )
        );
        assert_eq!(s.dashboard, GlobalDashboard::default());
    }

    #[test]
    fn yaml_key_lines_ignore_nested_and_value_positions() {
        // The same names nested deeper, or as values, must not be taken for the top-level key.
        let text = "nested:\n  web_dashboard_global_port: 1\n  list:\n    - web_dashboard_global_port\nother: web_dashboard_global_port\n? [complex, key]\n: x\nweb_dashboard_global_port: nope\n";
        let lines = YamlKeyLines::scan(text);
        assert_eq!(lines.keys.get("web_dashboard_global_port"), Some(&8));
        assert_eq!(lines.keys.get("nested"), Some(&1));
        assert_eq!(lines.keys.get("other"), Some(&5));
        assert_eq!(lines.keys.len(), 3, "{:?}", lines.keys);

        let dir = home();
        let path = write_yaml(dir.path(), text);
        let s = load(dir.path());
        assert!(
            only_warning(&s).starts_with(&format!("{}:8: ", path.display())),
            "{:?}",
            s.warnings
        );
    }

    #[test]
    fn yaml_duplicate_key_last_one_wins_and_is_the_line_named() {
        let dir = home();
        let path = write_yaml(
            dir.path(),
            "web_dashboard_global_port: 1000\nx: 1\nweb_dashboard_global_port: big\n",
        );
        let s = load(dir.path());
        assert!(only_warning(&s).starts_with(&format!("{}:3: ", path.display())));
    }

    #[test]
    fn yaml_with_bom_and_crlf() {
        let dir = home();
        write_yaml(
            dir.path(),
            "\u{feff}web_dashboard_global: false\r\nweb_dashboard_global_port: 26000\r\n",
        );
        let s = load(dir.path());
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        assert!(!s.dashboard.enabled);
        assert_eq!(s.dashboard.port, 26000);
    }

    #[test]
    fn yaml_unknown_keys_are_serenas_business() {
        let dir = home();
        write_yaml(
            dir.path(),
            "web_dashboard_globall: 3\nsomething_new: {a: 1}\n",
        );
        let s = load(dir.path());
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    }

    // --- tray/config.toml ---------------------------------------------------------------------

    #[test]
    fn good_toml_with_every_key() {
        let dir = home();
        write_toml(
            dir.path(),
            r#"# Serena Tray settings
zombie_grace = 2.5        # seconds
probe_timeout = 3
serena_command = ["uvx", "--from", "git+https://github.com/oraios/serena", "serena"]
notifications = false
auto_kill_zombies = true
tray_protocol_port = 24300
session_start_timeout = 30
"#,
        );
        let s = load(dir.path());
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        assert_eq!(
            s.tray,
            TraySettings {
                zombie_grace: Duration::from_millis(2500),
                probe_timeout: Duration::from_secs(3),
                serena_command: Some(vec![
                    "uvx".into(),
                    "--from".into(),
                    "git+https://github.com/oraios/serena".into(),
                    "serena".into()
                ]),
                notifications: false,
                auto_kill_zombies: true,
                tray_protocol_port: 24300,
                session_start_timeout: Duration::from_secs(30),
            }
        );
        assert_eq!(s.dashboard, GlobalDashboard::default());
    }

    #[test]
    fn toml_command_as_a_string_is_one_program() {
        let dir = home();
        write_toml(dir.path(), "serena_command = \"/opt/my tools/serena\"\n");
        let s = load(dir.path());
        assert!(s.warnings.is_empty());
        assert_eq!(
            s.tray.serena_command,
            Some(vec!["/opt/my tools/serena".to_string()])
        );
    }

    #[test]
    fn toml_zero_grace_is_allowed_zero_timeout_is_not() {
        let dir = home();
        let path = write_toml(dir.path(), "zombie_grace = 0\nprobe_timeout = 0.0\n");
        let s = load(dir.path());
        assert_eq!(s.tray.zombie_grace, Duration::ZERO);
        assert_eq!(s.tray.probe_timeout, DEFAULT_PROBE_TIMEOUT);
        assert_eq!(
            only_warning(&s),
            format!(
                "{}:2: `probe_timeout` must be a number of seconds > 0, got a float 0.0; \
                 using the default 1.5 s for `probe_timeout` (the file's other keys are kept)",
                path.display()
            )
        );
    }

    #[test]
    fn malformed_toml_names_path_and_line_and_uses_defaults() {
        let cases = [
            // A missing value on line 3; the good line 1 is not kept (the file is unusable).
            (
                "zombie_grace = 1\n# comment\nprobe_timeout = \nnotifications = false\n",
                3,
            ),
            // An unterminated string on line 2.
            ("notifications = false\nserena_command = \"serena\n", 2),
            // A duplicate key on line 4.
            (
                "auto_kill_zombies = true\n\n\nauto_kill_zombies = false\n",
                4,
            ),
            // A bad table header on line 1.
            ("[tray\nzombie_grace = 1\n", 1),
        ];
        for (text, line) in cases {
            let dir = home();
            let path = write_toml(dir.path(), text);
            let s = load(dir.path());
            let w = only_warning(&s);
            assert!(
                w.starts_with(&format!("{}:{line}: not valid TOML (", path.display())),
                "{text:?} -> {w}"
            );
            assert!(w.ends_with("); using defaults"), "{w}");
            assert!(!w.contains('\n'), "one line: {w}");
            assert_eq!(s.tray, TraySettings::default(), "{text:?}");
        }
    }

    #[test]
    fn toml_wrong_types_name_key_and_line_and_keep_the_rest() {
        let dir = home();
        let path = write_toml(
            dir.path(),
            "notifications = \"no\"\nzombie_grace = -1\nauto_kill_zombies = true\n\
             serena_command = []\nprobe_timeout = \"fast\"\ntray_protocol_port = 70000\n",
        );
        let s = load(dir.path());
        let p = path.display();
        assert_eq!(s.warnings.len(), 5, "{:#?}", s.warnings);
        assert!(s.warnings[0].starts_with(&format!(
            "{p}:1: `notifications` must be true or false, got a string \"no\"; using the default true"
        )));
        assert!(s.warnings[1].starts_with(&format!(
            "{p}:2: `zombie_grace` must be a number of seconds >= 0, got an integer -1; using the default 10 s"
        )));
        assert!(s.warnings[2].starts_with(&format!(
            "{p}:4: `serena_command` must be a non-empty string or a non-empty array of strings"
        )));
        assert!(s.warnings[2].contains("got an empty array"));
        assert!(s.warnings[3].starts_with(&format!(
            "{p}:5: `probe_timeout` must be a number of seconds > 0, got a string \"fast\""
        )));
        assert!(s.warnings[4].starts_with(&format!(
            "{p}:6: `tray_protocol_port` must be a port number from 1 to 65535, got an integer 70000; \
             using the default 24224"
        )));
        assert!(s
            .warnings
            .iter()
            .all(|w| w.ends_with("(the file's other keys are kept)")));
        assert_eq!(
            s.tray,
            TraySettings {
                auto_kill_zombies: true,
                ..TraySettings::default()
            }
        );
    }

    #[test]
    fn toml_command_with_non_strings_or_blank_program_is_refused() {
        for text in [
            "serena_command = [\"uvx\", 3]\n",
            "serena_command = \"  \"\n",
            "serena_command = [\"\", \"serena\"]\n",
            "serena_command = 5\n",
            "serena_command = [[\"serena\"]]\n",
            "serena_command = { program = \"serena\" }\n",
        ] {
            let dir = home();
            let path = write_toml(dir.path(), text);
            let s = load(dir.path());
            let w = only_warning(&s);
            assert!(
                w.starts_with(&format!("{}:1: `serena_command` must be", path.display())),
                "{text:?} -> {w}"
            );
            assert_eq!(s.tray.serena_command, None);
        }
        let dir = home();
        write_toml(dir.path(), "serena_command = [\"uvx\", 1]\n");
        let s = load(dir.path());
        assert!(
            only_warning(&s).contains("got an array [\"uvx\", 1];"),
            "{:?}",
            s.warnings
        );
    }

    #[test]
    fn toml_port_range() {
        for bad in ["0", "-5", "65536", "24224.0", "\"24224\""] {
            let dir = home();
            write_toml(dir.path(), &format!("tray_protocol_port = {bad}\n"));
            let s = load(dir.path());
            assert!(
                only_warning(&s).contains("`tray_protocol_port` must be a port number"),
                "{bad}"
            );
            assert_eq!(s.tray.tray_protocol_port, DEFAULT_TRAY_PROTOCOL_PORT);
        }
        for (good, port) in [("1", 1u16), ("65535", 65535), ("0x5e80", 0x5e80)] {
            let dir = home();
            write_toml(dir.path(), &format!("tray_protocol_port = {good}\n"));
            let s = load(dir.path());
            assert!(s.warnings.is_empty(), "{good}: {:?}", s.warnings);
            assert_eq!(s.tray.tray_protocol_port, port);
        }
    }

    #[test]
    fn toml_seconds_edge_cases() {
        for bad in ["inf", "nan", "-0.5", "1e300", "true", "\"10\""] {
            let dir = home();
            write_toml(dir.path(), &format!("zombie_grace = {bad}\n"));
            let s = load(dir.path());
            assert!(
                only_warning(&s).contains("`zombie_grace` must be a number of seconds >= 0"),
                "{bad}: {:?}",
                s.warnings
            );
            assert_eq!(s.tray.zombie_grace, DEFAULT_ZOMBIE_GRACE);
        }
        let dir = home();
        write_toml(dir.path(), "zombie_grace = 0.25\nprobe_timeout = 0.001\n");
        let s = load(dir.path());
        assert!(s.warnings.is_empty());
        assert_eq!(s.tray.zombie_grace, Duration::from_millis(250));
        assert_eq!(s.tray.probe_timeout, Duration::from_millis(1));
    }

    #[test]
    fn toml_unknown_keys_are_warnings_with_suggestions() {
        let dir = home();
        let path = write_toml(
            dir.path(),
            "zombie_grase = 4\nnotifications = false\ncolour = \"red\"\n\n[tray]\nzombie_grace = 1\n",
        );
        let s = load(dir.path());
        let p = path.display();
        assert_eq!(s.warnings.len(), 3, "{:#?}", s.warnings);
        assert_eq!(
            s.warnings[0],
            format!("{p}:1: unknown key `zombie_grase` ignored (did you mean `zombie_grace`?)")
        );
        assert!(
            s.warnings[1].starts_with(&format!(
                "{p}:3: unknown key `colour` ignored (known keys: zombie_grace, probe_timeout,"
            )),
            "{}",
            s.warnings[1]
        );
        assert!(
            s.warnings[2].starts_with(&format!("{p}:5: unknown key `tray` ignored")),
            "{}",
            s.warnings[2]
        );
        // Known keys next to unknown ones still count; the misspelt one does not.
        assert!(!s.tray.notifications);
        assert_eq!(s.tray.zombie_grace, DEFAULT_ZOMBIE_GRACE);
    }

    #[test]
    fn empty_and_comment_only_toml_are_defaults() {
        for text in ["", "\n\n", "# just a comment\n"] {
            let dir = home();
            write_toml(dir.path(), text);
            let s = load(dir.path());
            assert!(s.warnings.is_empty(), "{text:?}");
            assert_eq!(s.tray, TraySettings::default());
        }
    }

    #[test]
    fn warnings_from_both_files_come_yaml_first() {
        let dir = home();
        write_yaml(dir.path(), "web_dashboard_global: [\n");
        write_toml(dir.path(), "nope = 1\n");
        let s = load(dir.path());
        assert_eq!(s.warnings.len(), 2, "{:?}", s.warnings);
        assert!(s.warnings[0].contains("serena_config.yml"));
        assert!(s.warnings[1].contains("config.toml:1: unknown key `nope`"));
    }

    #[test]
    fn helpers() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 99), 3);
        assert_eq!(one_line("first\n  second\n\n"), "first: second");
        assert_eq!(shorten("abc"), "abc");
        assert_eq!(shorten(&"y".repeat(50)), format!("{}...", "y".repeat(40)));
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(closest_key("Notification"), Some("notifications"));
        assert_eq!(closest_key("probe-timeout"), Some("probe_timeout"));
        assert_eq!(closest_key("something"), None);
    }

    // --- resolving the Serena command ----------------------------------------------------------

    fn env_with(path_dirs: &[&Path], home: &Path) -> SearchEnv {
        SearchEnv {
            path_var: Some(std::env::join_paths(path_dirs).expect("join_paths")),
            home: Some(home.to_path_buf()),
        }
    }

    /// An executable script (on Unix, mode 755).
    fn script(dir: &Path, name: &str) -> PathBuf {
        let name = if cfg!(windows) {
            format!("{name}.exe")
        } else {
            name.to_string()
        };
        let path = dir.join(name);
        std::fs::write(&path, "#!/bin/sh\nexit 0\n").expect("write script");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        path
    }

    fn with_command(argv: &[&str]) -> TraySettings {
        TraySettings {
            serena_command: Some(argv.iter().map(|s| s.to_string()).collect()),
            ..TraySettings::default()
        }
    }

    const CONF: &str = "/home/u/.serena/tray/config.toml";

    #[test]
    fn configured_absolute_path_to_an_executable() {
        let dir = home();
        let exe = script(dir.path(), "my-serena");
        let exe_s = exe.to_str().expect("utf8").to_string();
        let settings = with_command(&[&exe_s, "--flag"]);
        let empty = home();
        let argv = settings
            .resolve_with(&env_with(&[], empty.path()), CONF)
            .expect("resolves");
        assert_eq!(argv, vec![exe_s.clone(), "--flag".to_string()]);
        // The public entry point agrees (it only differs in the environment it reads).
        assert_eq!(settings.resolve_serena_command().expect("resolves"), argv);
        assert_eq!(
            settings
                .resolve_serena_command_in(Path::new("/x"))
                .expect("resolves"),
            argv
        );
    }

    #[test]
    fn configured_bare_name_is_found_on_the_given_path() {
        let bin1 = home();
        let bin2 = home();
        let exe = script(bin2.path(), "uvx");
        let settings = with_command(&["uvx", "--from", "git+https://x/serena", "serena"]);
        let argv = settings
            .resolve_with(&env_with(&[bin1.path(), bin2.path()], bin1.path()), CONF)
            .expect("resolves");
        assert_eq!(argv[0], exe.to_str().expect("utf8"));
        assert_eq!(&argv[1..], ["--from", "git+https://x/serena", "serena"]);
    }

    #[test]
    fn configured_tilde_path_is_expanded() {
        let home_dir = home();
        std::fs::create_dir_all(home_dir.path().join("bin")).expect("mkdir");
        let exe = script(&home_dir.path().join("bin"), "serena");
        let name = exe.file_name().expect("name").to_str().expect("utf8");
        let settings = with_command(&[&format!("~/bin/{name}")]);
        let argv = settings
            .resolve_with(&env_with(&[], home_dir.path()), CONF)
            .expect("resolves");
        assert_eq!(argv, vec![exe.to_str().expect("utf8").to_string()]);
    }

    #[test]
    fn missing_configured_command_is_an_error_not_a_fallback() {
        let dir = home();
        // `serena` IS on the PATH given, but the configured command wins and is missing.
        script(dir.path(), "serena");
        let missing = dir.path().join("no-such-serena");
        let missing_s = missing.to_str().expect("utf8");
        let settings = with_command(&[missing_s, "start-mcp-server"]);
        let err = settings
            .resolve_with(&env_with(&[dir.path()], dir.path()), CONF)
            .expect_err("must fail");
        let SerenaCommandError::NotFound { looked_for, hint } = &err else {
            panic!("wrong variant: {err:?}");
        };
        assert!(looked_for.contains(missing_s), "{looked_for}");
        assert!(looked_for.contains("no such file"), "{looked_for}");
        assert!(hint.contains(CONF), "{hint}");
        let msg = err.to_string();
        assert!(
            msg.starts_with(
                "cannot find the Serena command: looked for the configured serena_command"
            ),
            "{msg}"
        );
        assert!(msg.contains("To fix:"), "{msg}");
    }

    #[test]
    fn configured_bare_name_not_on_path() {
        let dir = home();
        let settings = with_command(&["uvx", "serena"]);
        let err = settings
            .resolve_with(&env_with(&[dir.path()], dir.path()), CONF)
            .expect_err("must fail");
        let msg = err.to_string();
        assert!(
            msg.contains("the configured serena_command `uvx` on PATH (searched "),
            "{msg}"
        );
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
        assert!(msg.contains(CONF), "{msg}");

        // A string with spaces is one program name: the hint says to use an array.
        let err = with_command(&["uvx --from x serena"])
            .resolve_with(&env_with(&[dir.path()], dir.path()), CONF)
            .expect_err("must fail");
        assert!(err.to_string().contains("use an array"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn configured_file_without_execute_permission_or_a_directory() {
        use std::os::unix::fs::PermissionsExt;
        let dir = home();
        let plain = dir.path().join("serena.txt");
        std::fs::write(&plain, "not a program").expect("write");
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = with_command(&[plain.to_str().expect("utf8")])
            .resolve_with(&env_with(&[], dir.path()), CONF)
            .expect_err("must fail");
        assert!(
            matches!(&err, SerenaCommandError::NotExecutable { why, hint, .. }
                if why.contains("execute permission") && hint.contains("chmod +x")),
            "{err:?}"
        );

        let err = with_command(&[dir.path().to_str().expect("utf8")])
            .resolve_with(&env_with(&[], dir.path()), CONF)
            .expect_err("must fail");
        assert!(err.to_string().contains("it is a directory"), "{err}");
    }

    #[test]
    fn serena_found_on_path_when_nothing_is_configured() {
        let bin1 = home();
        let bin2 = home();
        let bin3 = home();
        let want = script(bin2.path(), "serena");
        script(bin3.path(), "serena"); // later on PATH: not chosen
        let argv = TraySettings::default()
            .resolve_with(
                &env_with(&[bin1.path(), bin2.path(), bin3.path()], bin1.path()),
                CONF,
            )
            .expect("resolves");
        assert_eq!(argv, vec![want.to_str().expect("utf8").to_string()]);
    }

    #[cfg(unix)]
    #[test]
    fn non_executable_serena_on_path_is_skipped() {
        use std::os::unix::fs::PermissionsExt;
        let bin1 = home();
        let bin2 = home();
        let bad = bin1.path().join("serena");
        std::fs::write(&bad, "").expect("write");
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        std::fs::create_dir(bin2.path().join("serena")).expect("a directory named serena");
        let bin3 = home();
        let good = script(bin3.path(), "serena");
        let argv = TraySettings::default()
            .resolve_with(
                &env_with(&[bin1.path(), bin2.path(), bin3.path()], bin1.path()),
                CONF,
            )
            .expect("resolves");
        assert_eq!(argv, vec![good.to_str().expect("utf8").to_string()]);
    }

    #[test]
    fn serena_in_local_bin_when_not_on_path() {
        let home_dir = home();
        let local_bin = home_dir.path().join(".local").join("bin");
        std::fs::create_dir_all(&local_bin).expect("mkdir");
        let want = script(&local_bin, "serena");
        let empty = home();
        let argv = TraySettings::default()
            .resolve_with(&env_with(&[empty.path()], home_dir.path()), CONF)
            .expect("resolves");
        assert_eq!(argv, vec![want.to_str().expect("utf8").to_string()]);
    }

    #[test]
    fn serena_not_found_says_what_was_searched_and_how_to_fix() {
        let bin1 = home();
        let bin2 = home();
        let home_dir = home();
        let env = SearchEnv {
            path_var: Some(
                std::env::join_paths([bin1.path(), Path::new("relative/dir"), bin2.path()])
                    .expect("join"),
            ),
            home: Some(home_dir.path().to_path_buf()),
        };
        let err = TraySettings::default()
            .resolve_with(&env, CONF)
            .expect_err("must fail");
        let SerenaCommandError::NotFound { looked_for, hint } = &err else {
            panic!("wrong variant: {err:?}");
        };
        assert_eq!(
            looked_for,
            &format!(
                "`serena` on PATH (searched {}, {}) and in {}",
                bin1.path().display(),
                bin2.path().display(),
                home_dir.path().join(".local").join("bin").display()
            )
        );
        assert!(hint.contains("serena-agent"), "{hint}");
        assert!(
            hint.contains(&format!(
                "set serena_command = [\"/path/to/serena\"] in {CONF}"
            )),
            "{hint}"
        );
        assert_eq!(
            err.to_string(),
            format!("cannot find the Serena command: looked for {looked_for}. To fix: {hint}")
        );
    }

    #[test]
    fn serena_not_found_without_path_or_home() {
        let env = SearchEnv {
            path_var: None,
            home: None,
        };
        let err = TraySettings::default()
            .resolve_with(&env, CONF)
            .expect_err("must fail");
        assert!(
            err.to_string()
                .contains("looked for `serena` on PATH (PATH is not set)."),
            "{err}"
        );
        let env = SearchEnv {
            path_var: Some("".into()),
            home: None,
        };
        let err = TraySettings::default()
            .resolve_with(&env, CONF)
            .expect_err("must fail");
        assert!(
            err.to_string()
                .contains("(PATH has no absolute directories)"),
            "{err}"
        );
    }

    #[test]
    fn an_empty_configured_command_means_the_default() {
        let bin = home();
        let want = script(bin.path(), "serena");
        let settings = TraySettings {
            serena_command: Some(Vec::new()),
            ..TraySettings::default()
        };
        let argv = settings
            .resolve_with(&env_with(&[bin.path()], bin.path()), CONF)
            .expect("resolves");
        assert_eq!(argv, vec![want.to_str().expect("utf8").to_string()]);
    }

    #[test]
    fn errors_are_clone_and_comparable() {
        let err = SerenaCommandError::NotFound {
            looked_for: "x".into(),
            hint: "y".into(),
        };
        assert_eq!(err.clone(), err);
    }
}
