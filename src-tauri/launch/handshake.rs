//! The handshake cache of `launch` on demand (`--share`, and private with `--on-demand`):
//! Serena's answers to `initialize` and to the list requests (`tools/list`, `prompts/list`,
//! `resources/list`, `resources/templates/list`), kept so that a client's handshake is answered
//! with no Serena running. One file per key in `$SERENA_HOME/tray/handshakes/` (0600, replaced
//! atomically), named by a SHA-256 digest of what decides the answers ([`KeyParts`]):
//! - `--share`: the command the dashboard starts Serena with (`serena_command`, the program
//!   resolved) and the client's project, context and modes; private: the client's own command
//!   (CMD's argv, as given) and its project directory, if it names one;
//! - Serena's version: the names of the `serena*.dist-info` folders of the environment the
//!   program lives in (else the program file's size and modification time);
//! - the content of `$SERENA_HOME/serena_config.yml` and of the project's `.serena/project.yml`
//!   (a private command without a project directory has no project file part).
//!
//! An entry is written only from a real Serena's answers (see `Bridge::check_cache` and
//! `on_demand`), and serves a client's `initialize` only when the client asks for the protocol
//! version the entry was asked with. A file that does not parse is no entry (and is replaced by
//! the next check).
//!
//! Deliberately not here: when the cache is used or checked (the bridge, `on_demand`), and
//! anything else Serena reads (its contexts and modes folders, a project registered by name, the
//! environment): a change there shows only at the next start's check.

use super::share::Target;
use crate::core::files;
use crate::core::settings::Settings;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The list requests answered from the cache (without a cursor: a later page is Serena's).
pub const LISTS: [&str; 4] = [
    "tools/list",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
];

/// Serena's answers for one key. Each answer is the JSON-RPC response without its `id`
/// (a `result`, or an `error`: a method Serena does not serve is cached as its refusal).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The `protocolVersion` the `initialize` that filled it asked for.
    pub asked: String,
    pub initialize: Value,
    /// By method, of [`LISTS`].
    pub lists: BTreeMap<String, Value>,
}

impl Entry {
    /// The cached answer to `method` for the request `id`, if it has one.
    pub fn answer(&self, method: &str, id: &Value) -> Option<String> {
        let cached = match method {
            "initialize" => &self.initialize,
            list => self.lists.get(list)?,
        };
        let mut answer = cached.clone();
        answer["jsonrpc"] = json!("2.0");
        answer["id"] = id.clone();
        Some(answer.to_string())
    }

    /// What this entry answers in Serena's stead, if it may: `initialize` (asked with the
    /// protocol version it was filled with), `ping`, and the first page of a list; `None` for
    /// anything that needs Serena. What a caller keeps of the client's handshake is its own.
    pub fn reply(&self, msg: &Value) -> Option<String> {
        let method = msg["method"].as_str().unwrap_or_default();
        match method {
            "initialize" if asked_version(msg) != Some(self.asked.as_str()) => None,
            "ping" if !msg["id"].is_null() => {
                Some(json!({"jsonrpc": "2.0", "id": msg["id"], "result": {}}).to_string())
            }
            _ if cacheable(msg) => self.answer(method, &msg["id"]),
            _ => None,
        }
    }

    /// Which lists' answers differ from `other`'s, as the names of their `list_changed`
    /// notifications (`tools`, `prompts`, `resources`), each once.
    pub fn changed_lists(&self, other: &Entry) -> Vec<&'static str> {
        let mut changed = Vec::new();
        for method in LISTS {
            if self.lists.get(method) != other.lists.get(method) {
                let kind = notification_kind(method);
                if !changed.contains(&kind) {
                    changed.push(kind);
                }
            }
        }
        changed
    }
}

/// `tools/list` -> `tools`; both resource lists -> `resources`.
fn notification_kind(method: &str) -> &'static str {
    match method {
        "tools/list" => "tools",
        "prompts/list" => "prompts",
        _ => "resources",
    }
}

/// The protocol version a client's `initialize` asks for.
pub fn asked_version(initialize: &Value) -> Option<&str> {
    initialize["params"]["protocolVersion"].as_str()
}

/// The requests that read a started Serena's lists, to check the cache against them: one per
/// list of [`LISTS`] (first page), with IDs no client uses (`serena-tray-check-1`, ...).
pub fn check_requests() -> impl Iterator<Item = (&'static str, Value)> {
    LISTS.iter().enumerate().map(|(i, method)| {
        let id = format!("serena-tray-check-{}", i + 1);
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": {}});
        (*method, request)
    })
}

/// Whether a request may be answered from the cache: the handshake and the first page of a
/// list.
pub fn cacheable(msg: &Value) -> bool {
    let method = msg["method"].as_str().unwrap_or_default();
    let first_page = msg["params"]["cursor"].is_null();
    method == "initialize" || (LISTS.contains(&method) && first_page)
}

/// The cache file of one key.
#[derive(Debug, Clone)]
pub struct Cache {
    path: PathBuf,
}

/// What one cache key is made of (see the module docs), digested in this order.
pub struct KeyParts {
    /// What runs Serena, named: `command` (the dashboard's) or `argv` (the client's own).
    pub command: (&'static str, Vec<u8>),
    /// The program whose Serena version is part of the key.
    pub program: Option<PathBuf>,
    /// What the client asks of it beyond the command (`--share`: project, context, modes).
    pub asks: Vec<(&'static str, Vec<u8>)>,
    /// The project directory whose `.serena/project.yml` is part of the key.
    pub project: Option<PathBuf>,
}

impl KeyParts {
    /// The key of a `--share` client: the dashboard's `serena_command` (the program first) and
    /// the project, context and modes the client asks for.
    pub fn shared(
        command: &[String],
        project: &Path,
        context: Option<&str>,
        modes: &[String],
    ) -> Self {
        KeyParts {
            command: ("command", command.join("\0").into_bytes()),
            program: command.first().map(PathBuf::from),
            asks: vec![
                ("project", project.as_os_str().as_encoded_bytes().to_vec()),
                ("context", context.unwrap_or("").as_bytes().to_vec()),
                ("modes", modes.join("\0").into_bytes()),
            ],
            project: Some(project.to_path_buf()),
        }
    }

    /// The key of a private `launch`: CMD's argv as given, the program it resolved to, and the
    /// project directory CMD names (also a part, as a relative `--project` names another
    /// directory from another working directory).
    pub fn private(argv: &[std::ffi::OsString], program: &Path, project: Option<&Path>) -> Self {
        let argv: Vec<&[u8]> = argv.iter().map(|a| a.as_encoded_bytes()).collect();
        let asks = project
            .map(|p| ("project", p.as_os_str().as_encoded_bytes().to_vec()))
            .into_iter()
            .collect();
        KeyParts {
            command: ("argv", argv.join(&0u8)),
            program: Some(program.to_path_buf()),
            asks,
            project: project.map(Path::to_path_buf),
        }
    }
}

impl Cache {
    /// The cache file of a `--share` client on `target`, as the dashboard would serve it.
    pub fn of(settings: &Settings, target: &Target) -> Cache {
        let command = settings.serena_command().unwrap_or_default();
        let (context, modes) = (target.context.as_deref(), &target.modes);
        Cache::keyed(
            settings,
            &KeyParts::shared(&command, &target.project, context, modes),
        )
    }

    /// The cache file of one key (see the module docs); reads a few small files.
    pub fn keyed(settings: &Settings, key: &KeyParts) -> Cache {
        let mut digest = Sha256::new();
        let mut part = |name: &str, bytes: &[u8]| {
            digest.update(name.as_bytes());
            digest.update((bytes.len() as u64).to_le_bytes());
            digest.update(bytes);
        };
        part(key.command.0, &key.command.1);
        part("version", serena_version(key.program.as_deref()).as_bytes());
        for (name, bytes) in &key.asks {
            part(name, bytes);
        }
        let config = crate::core::settings::serena_config_path(&settings.serena_home);
        part(
            "serena_config.yml",
            &std::fs::read(config).unwrap_or_default(),
        );
        if let Some(project) = &key.project {
            let project_yml = project.join(".serena").join("project.yml");
            part(
                "project.yml",
                &std::fs::read(project_yml).unwrap_or_default(),
            );
        }
        let name: String = digest
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Cache {
            path: settings
                .tray_dir()
                .join("handshakes")
                .join(format!("{name}.json")),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The entry, if there is one that parses.
    pub fn load(&self) -> Option<Entry> {
        let bytes = files::read(&self.path).ok()?;
        serde_json::from_slice(&bytes)
            .inspect_err(|e| tracing::warn!("{}: {e}; not used", self.path.display()))
            .ok()
    }

    /// Replaces the entry.
    pub fn store(&self, entry: &Entry) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            files::private_dir(dir)?;
        }
        let bytes = serde_json::to_vec_pretty(entry).map_err(std::io::Error::other)?;
        files::write_atomic(&self.path, &bytes)
    }
}

/// What names the installed Serena's version without running it: the `serena*.dist-info`
/// folders of the environment its program lives in, else the program file's size and
/// modification time.
fn serena_version(program: Option<&Path>) -> String {
    let Some(program) = program else {
        return String::new();
    };
    let real = program.canonicalize().unwrap_or_else(|_| program.into());
    let env = real.parent().and_then(Path::parent);
    let mut found: Vec<String> = env
        .map(site_packages)
        .unwrap_or_default()
        .into_iter()
        .flat_map(|dir| std::fs::read_dir(dir).into_iter().flatten().flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("serena") && n.ends_with(".dist-info"))
        .collect();
    found.sort();
    if !found.is_empty() {
        return found.join(",");
    }
    let meta = std::fs::metadata(&real).ok();
    let modified = meta
        .as_ref()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
    format!("{:?} {:?}", meta.map(|m| m.len()), modified)
}

/// The `site-packages` folders of a Python environment (`lib/python3.x/site-packages` on Unix,
/// `Lib/site-packages` on Windows).
fn site_packages(env: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![env.join("Lib").join("site-packages")];
    let lib = std::fs::read_dir(env.join("lib")).into_iter().flatten();
    dirs.extend(lib.flatten().map(|e| e.path().join("site-packages")));
    dirs.retain(|d| d.is_dir());
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(tools: Value) -> Entry {
        Entry {
            asked: "2025-06-18".into(),
            initialize: json!({"result": {"protocolVersion": "2025-06-18"}}),
            lists: LISTS
                .iter()
                .map(|m| (m.to_string(), json!({"result": {}})))
                .chain([("tools/list".to_string(), tools)])
                .collect(),
        }
    }

    #[test]
    fn an_entry_replies_to_the_handshake_ping_and_first_pages_only() {
        let e = entry(json!({"result": {"tools": []}}));
        let ask = |method: &str, params: Value| {
            let msg = json!({"jsonrpc": "2.0", "id": 3, "method": method, "params": params});
            e.reply(&msg)
                .map(|a| serde_json::from_str::<Value>(&a).expect("json"))
        };
        let init = ask("initialize", json!({"protocolVersion": "2025-06-18"}));
        assert_eq!(init.expect("answered")["id"], 3);
        assert!(ask("initialize", json!({"protocolVersion": "2024-11-05"})).is_none());
        assert_eq!(ask("ping", json!({})).expect("pong")["result"], json!({}));
        assert!(ask("tools/list", json!({})).is_some());
        assert!(ask("tools/list", json!({"cursor": "2"})).is_none());
        assert!(ask("tools/call", json!({"name": "find_symbol"})).is_none());
        let ping_notification = json!({"jsonrpc": "2.0", "method": "ping"});
        assert!(e.reply(&ping_notification).is_none());
        let ids: Vec<Value> = check_requests().map(|(_, r)| r["id"].clone()).collect();
        assert_eq!(ids.len(), LISTS.len());
        assert_eq!(ids[0], "serena-tray-check-1");
    }

    #[test]
    fn answers_carry_the_request_id_and_changes_name_their_notification() {
        let a = entry(json!({"result": {"tools": [{"name": "find_symbol"}]}}));
        let answer: Value =
            serde_json::from_str(&a.answer("tools/list", &json!(7)).expect("cached"))
                .expect("json");
        assert_eq!(answer["id"], 7);
        assert_eq!(answer["jsonrpc"], "2.0");
        assert_eq!(answer["result"]["tools"][0]["name"], "find_symbol");
        assert!(a.answer("tools/call", &json!(1)).is_none());

        let b = entry(json!({"result": {"tools": []}}));
        assert_eq!(a.changed_lists(&b), ["tools"]);
        assert!(a.changed_lists(&a.clone()).is_empty());
        let mut c = a.clone();
        c.lists
            .insert("resources/list".into(), json!({"error": {}}));
        c.lists
            .insert("resources/templates/list".into(), json!({"error": {}}));
        assert_eq!(a.changed_lists(&c), ["resources"], "one notification");
    }

    #[test]
    fn only_the_handshake_and_first_pages_are_cacheable() {
        assert!(cacheable(&json!({"method": "initialize"})));
        assert!(cacheable(&json!({"method": "tools/list", "params": {}})));
        assert!(!cacheable(
            &json!({"method": "tools/list", "params": {"cursor": "2"}})
        ));
        assert!(!cacheable(&json!({"method": "tools/call"})));
        assert!(
            !cacheable(&json!({"method": "ping"})),
            "answered, not cached"
        );
    }

    #[test]
    fn the_key_follows_the_project_yml_and_the_entry_survives_a_round_trip() {
        let home = tempfile::tempdir().expect("home");
        let project = tempfile::tempdir().expect("project");
        let flags = crate::core::settings::Flags {
            serena_home: Some(home.path().into()),
            ..Default::default()
        };
        let (settings, _) = Settings::resolve(&flags).expect("settings");
        let p = project.path();
        let key =
            |modes: &[String]| Cache::keyed(&settings, &KeyParts::shared(&[], p, None, modes));
        let before = key(&[]);
        assert_eq!(before.path(), key(&[]).path());
        assert_ne!(before.path(), key(&["planning".into()]).path());
        let argv = |a: &str| -> Vec<std::ffi::OsString> { a.split(' ').map(Into::into).collect() };
        let private = |a: &str, project: Option<&Path>| {
            let key = KeyParts::private(&argv(a), Path::new("/bin/serena"), project);
            Cache::keyed(&settings, &key)
        };
        let mine = private("serena start-mcp-server --project .", Some(p));
        assert_ne!(mine.path(), before.path(), "private and shared keys differ");
        assert_ne!(
            mine.path(),
            private("serena start-mcp-server --project .", Some(home.path())).path(),
            "the same argv in another directory is another key"
        );
        assert_ne!(
            private("serena start-mcp-server", None).path(),
            private("serena start-mcp-server --context ide", None).path()
        );
        std::fs::create_dir(project.path().join(".serena")).expect("mkdir");
        std::fs::write(project.path().join(".serena/project.yml"), "x: 1\n").expect("write");
        let after = key(&[]);
        assert_ne!(
            before.path(),
            after.path(),
            "a changed project.yml is a new key"
        );
        assert_ne!(
            mine.path(),
            private("serena start-mcp-server --project .", Some(p)).path(),
            "a private key follows the project.yml too"
        );

        assert!(after.load().is_none());
        let e = entry(json!({"result": {"tools": []}}));
        after.store(&e).expect("store");
        assert_eq!(after.load(), Some(e));
        std::fs::write(after.path(), "{not json").expect("corrupt");
        assert!(after.load().is_none(), "a corrupt file is no entry");
    }
}
