//! The shared registry file `$SERENA_HOME/instances.json`: a JSON array of entries in exactly the
//! seed's schema (`pid`, `port`, `started_at`, `last_heartbeat`, `context`, `modes`,
//! `project_name`, `state`), readable and writable by other tools.
//!
//! Cross-process safety: every read-modify-write holds an exclusive advisory lock on the sidecar
//! `instances.json.lock` and replaces the file by writing a temporary file and renaming it, so a
//! reader never sees half a file and concurrent writers lose nothing (both files mode 600, see
//! `files`). A file that does not parse is moved aside to `instances.json.corrupt-<millis>`
//! (never deleted) and a fresh one started.
//! Entries written by others are tolerated: missing fields take defaults, unknown keys are kept as
//! they were, and an entry that cannot be read at all is kept verbatim. This module never adds a
//! key of its own. Also here: how an instance maps onto an entry (what a refresh writes).
//! Deliberately not here: deciding what the entries mean (`refresh`).

use super::files;
use super::model::{same_process, Epoch, Instance, ProcessId, State};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fs;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a JSON array of instances: {message}")]
    Corrupt { path: PathBuf, message: String },
}

pub type Result<T> = std::result::Result<T, RegistryError>;

impl super::writes::WriteError for RegistryError {
    fn io(&self) -> Option<(&Path, &std::io::Error)> {
        match self {
            RegistryError::Io { path, source } => Some((path, source)),
            RegistryError::Corrupt { .. } => None,
        }
    }
}

/// One entry, in the seed's schema. `extra` holds keys other writers added; they are written back
/// untouched and never added by this program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistryEntry {
    pub pid: u32,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub started_at: Epoch,
    #[serde(default)]
    pub last_heartbeat: Epoch,
    #[serde(default)]
    pub context: Option<String>,
    #[serde(default)]
    pub modes: Vec<String>,
    #[serde(default)]
    pub project_name: Option<String>,
    #[serde(default = "unknown_state")]
    pub state: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn unknown_state() -> String {
    "unknown".to_string()
}

impl RegistryEntry {
    /// A new entry with the given identity and everything else unknown.
    pub fn new(pid: u32, started_at: Epoch) -> RegistryEntry {
        RegistryEntry {
            pid,
            port: None,
            started_at,
            last_heartbeat: 0.0,
            context: None,
            modes: Vec::new(),
            project_name: None,
            state: unknown_state(),
            extra: Map::new(),
        }
    }

    /// `started_at` as an option (0 means "not recorded").
    pub fn started_at(&self) -> Option<Epoch> {
        (self.started_at > 0.0).then_some(self.started_at)
    }

    /// Whether this entry is the record of the instance `key`: the entry recorded at exactly
    /// `exact_started_at` when given (an instance known only from the registry), else any
    /// entry that can describe that process (see [`same_process`]). `started_at` is the
    /// writer's wall clock (Serena's `time.time()`), which a step back of the clock since this
    /// program's start times were settled puts before theirs (see `procs::boot::wall_shift`).
    pub fn is_record_of(&self, key: ProcessId, exact_started_at: Option<Epoch>) -> bool {
        let start = key
            .start_time
            .saturating_sub(super::procs::boot::wall_shift());
        self.pid == key.pid
            && match exact_started_at {
                Some(t) => self.started_at == t,
                None => same_process(self.started_at(), start),
            }
    }
}

/// The file's contents: entries this program can read, and those it cannot (kept verbatim).
#[derive(Debug, Default)]
struct Contents {
    entries: Vec<RegistryEntry>,
    unreadable: Vec<Value>,
}

fn parse(path: &Path, text: &str) -> Result<Contents> {
    if text.trim().is_empty() {
        return Ok(Contents::default());
    }
    let corrupt = |message: String| RegistryError::Corrupt {
        path: path.to_path_buf(),
        message,
    };
    let value: Value = serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
    let Value::Array(items) = value else {
        return Err(corrupt("the top level is not an array".into()));
    };
    let mut out = Contents::default();
    for item in items {
        match serde_json::from_value::<RegistryEntry>(item.clone()) {
            Ok(e) => out.entries.push(e),
            Err(err) => {
                tracing::warn!(
                    "{}: keeping an entry it cannot read ({err})",
                    path.display()
                );
                out.unreadable.push(item);
            }
        }
    }
    Ok(out)
}

/// What tells one version of the file from another without reading it: its size and times
/// and (Unix) its inode. Writers here replace the file by renaming (a new inode); an edit in
/// place changes its times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    #[cfg(unix)]
    inode: (u64, i64, i64),
}

/// Handle on one registry file.
#[derive(Debug, Clone)]
pub struct Registry {
    path: PathBuf,
}

impl Registry {
    /// The registry of a Serena home directory.
    pub fn new(serena_home: &Path) -> Registry {
        Registry {
            path: serena_home.join("instances.json"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, path: &Path) -> impl Fn(std::io::Error) -> RegistryError {
        let path = path.to_path_buf();
        move |source| RegistryError::Io {
            path: path.clone(),
            source,
        }
    }

    /// The file's [`Stamp`] now (`None` if it cannot be looked at, e.g. there is none).
    pub fn stamp(&self) -> Option<Stamp> {
        let m = fs::metadata(&self.path).ok()?;
        Some(Stamp {
            len: m.len(),
            modified: m.modified().ok(),
            #[cfg(unix)]
            inode: {
                use std::os::unix::fs::MetadataExt;
                (m.ino(), m.ctime(), m.ctime_nsec())
            },
        })
    }

    /// The file's contents; bytes that are not UTF-8 make it corrupt, like bad JSON.
    fn read_contents(&self) -> Result<Contents> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(self.io(&self.path)(e)),
        };
        let text = String::from_utf8(bytes).map_err(|e| RegistryError::Corrupt {
            path: self.path.clone(),
            message: format!("not UTF-8 text ({e})"),
        })?;
        parse(&self.path, &text)
    }

    /// The readable entries, without locking (writers replace the file atomically). A corrupt
    /// file is an error here; [`Registry::update`] is what moves it aside.
    pub fn load(&self) -> Result<Vec<RegistryEntry>> {
        Ok(self.read_contents()?.entries)
    }

    /// Read-modify-write under the lock. `f` may change the readable entries in place; the file
    /// is rewritten only if they changed. Returns `f`'s result and, if a corrupt file was moved
    /// aside, where it went.
    pub fn update<T>(
        &self,
        f: impl FnOnce(&mut Vec<RegistryEntry>) -> T,
    ) -> Result<(T, Option<PathBuf>)> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(self.io(dir))?;
        let lock_path = self.path.with_file_name("instances.json.lock");
        let lock = files::open_append(&lock_path).map_err(self.io(&lock_path))?;
        lock.lock().map_err(self.io(&lock_path))?;
        // The lock is released when `lock` is dropped, on every path out of here.

        let (mut contents, moved) = match self.read_contents() {
            Ok(c) => (c, None),
            Err(err @ RegistryError::Io { .. }) => return Err(err),
            Err(err) => {
                let aside = files::move_aside(&self.path).map_err(self.io(&self.path))?;
                tracing::warn!("{err}; moved it to {} and started afresh", aside.display());
                (Contents::default(), Some(aside))
            }
        };
        let before = contents.entries.clone();
        let result = f(&mut contents.entries);
        if contents.entries != before || moved.is_some() || !self.path.exists() {
            self.write(&contents)?;
        }
        drop(lock);
        Ok((result, moved))
    }

    fn write(&self, contents: &Contents) -> Result<()> {
        let mut items: Vec<Value> = Vec::with_capacity(contents.entries.len());
        for e in &contents.entries {
            items.push(serde_json::to_value(e).unwrap_or(Value::Null));
        }
        items.extend(contents.unreadable.iter().cloned());
        let mut text = serde_json::to_string_pretty(&items).unwrap_or_else(|_| "[]".into());
        text.push('\n');
        // No fsync: the rename is what makes the update atomic for readers, and a record of
        // running processes has nothing worth keeping across a power loss.
        files::write_atomic(&self.path, text.as_bytes()).map_err(self.io(&self.path))
    }
}

/// How stale `last_heartbeat` in the registry may get before it is rewritten: a steady refresh
/// loop rewrites the file for heartbeats alone at most this often (four times a minute), not
/// every second. When one entry's heartbeat is due, every entry's is written with it, so that
/// N instances seen at different moments still cost one write per interval, not N.
pub(crate) const HEARTBEAT_WRITE_INTERVAL: Epoch = 15.0;

/// One instance's entry to write: created, or updated in place.
#[derive(Debug)]
pub(crate) struct Upsert {
    pub(crate) key: ProcessId,
    /// An entry for it was in the registry when this refresh read it: if it is missing now,
    /// someone removed it meanwhile (a kill, an unregistering Serena), so it is not re-added.
    pub(crate) known: bool,
    /// Set for entries known only from the registry: match that exact entry, and write only
    /// its state (what it says otherwise is someone else's record).
    pub(crate) exact_started_at: Option<Epoch>,
    pub(crate) inst: Instance,
}

/// What one refresh writes to the registry, applied by [`write_entries`] under the file's lock.
#[derive(Debug, Default)]
pub(crate) struct RegistryWrites {
    pub(crate) upsert: Vec<Upsert>,
    /// Instances seen alive before and gone now: their entries go.
    pub(crate) remove: Vec<ProcessId>,
}

/// The `state` an instance is recorded with: the seed's words (`starting` is not one of them).
pub(crate) fn registry_state(inst: &Instance) -> &'static str {
    match inst.state {
        State::Starting => "unknown",
        s => s.as_str(),
    }
}

/// Applies what a refresh learnt to the registry's entries (inside its lock).
pub(crate) fn write_entries(entries: &mut Vec<RegistryEntry>, writes: &RegistryWrites) {
    let heartbeats_due = writes.upsert.iter().any(|u| {
        u.exact_started_at.is_none()
            && u.inst.last_heartbeat.is_some_and(|hb| {
                entries
                    .iter()
                    .find(|e| e.is_record_of(u.key, None))
                    .is_none_or(|e| hb - e.last_heartbeat >= HEARTBEAT_WRITE_INTERVAL)
            })
    });
    for key in &writes.remove {
        entries.retain(|e| !e.is_record_of(*key, None));
    }
    for u in &writes.upsert {
        let inst = &u.inst;
        let found = entries
            .iter_mut()
            .find(|e| e.is_record_of(u.key, u.exact_started_at));
        let e = match found {
            Some(e) => e,
            // Removed since this refresh read the file: do not bring it back.
            None if u.exact_started_at.is_some() || u.known => continue,
            None => {
                entries.push(RegistryEntry::new(inst.pid, inst.started_at));
                let Some(e) = entries.last_mut() else {
                    continue;
                };
                e
            }
        };
        if u.exact_started_at.is_none() {
            e.port = inst.port;
            e.context = inst.context.clone();
            e.modes = inst.modes.clone();
            e.project_name = inst.project_name.clone();
            if let Some(hb) = inst.last_heartbeat.filter(|_| heartbeats_due) {
                e.last_heartbeat = hb;
            }
        }
        e.state = registry_state(inst).to_string();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerates_missing_and_unknown_fields_and_keeps_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reg = Registry::new(dir.path());
        fs::write(
            reg.path(),
            r#"[{"pid": 5, "color": "blue"}, {"pid": "x"}, {"pid": 6, "port": 24282, "started_at": 1.5,
               "last_heartbeat": 2.0, "context": "ide", "modes": ["a"], "project_name": "p", "state": "zombie"}]"#,
        )
        .expect("write");
        let entries = reg.load().expect("load");
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].state, "unknown");
        assert_eq!(entries[0].extra.get("color"), Some(&Value::from("blue")));
        assert_eq!(entries[1].project_name.as_deref(), Some("p"));

        reg.update(|es| es[1].state = "live_with_project".into())
            .expect("update");
        let raw: Value =
            serde_json::from_str(&fs::read_to_string(reg.path()).expect("read")).expect("json");
        let items = raw.as_array().expect("array");
        assert_eq!(items.len(), 3, "the unreadable entry is kept");
        assert_eq!(items[0]["color"], "blue", "unknown keys are kept");
        assert_eq!(items[2]["pid"], "x");
        assert_eq!(items[1]["state"], "live_with_project");
        let keys: Vec<&String> = items[1].as_object().expect("object").keys().collect();
        assert_eq!(
            keys.len(),
            8,
            "exactly the seed's keys for our entries: {keys:?}"
        );
    }

    #[test]
    fn corrupt_file_is_moved_aside_and_recovered_from() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reg = Registry::new(dir.path());
        fs::write(reg.path(), "{not json").expect("write");
        assert!(matches!(reg.load(), Err(RegistryError::Corrupt { .. })));
        let ((), moved) = reg
            .update(|es| es.push(RegistryEntry::new(7, 1.0)))
            .expect("update");
        let moved = moved.expect("moved aside");
        assert_eq!(fs::read_to_string(&moved).expect("aside"), "{not json");
        assert_eq!(reg.load().expect("load").len(), 1);
    }

    #[test]
    fn a_file_that_is_not_utf8_is_corrupt_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reg = Registry::new(dir.path());
        fs::write(reg.path(), b"[{\"pid\": 1}\xff\xfe]").expect("write");
        assert!(matches!(reg.load(), Err(RegistryError::Corrupt { .. })));
        let ((), moved) = reg.update(|_| ()).expect("update recovers");
        assert!(moved.is_some());
        assert!(reg.load().expect("load").is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn the_file_and_its_lock_are_0600_and_no_temporary_file_is_left() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let reg = Registry::new(dir.path());
        reg.update(|es| es.push(RegistryEntry::new(1, 1.0)))
            .expect("update");
        for name in ["instances.json", "instances.json.lock"] {
            let mode = fs::metadata(dir.path().join(name))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        let names: Vec<String> = fs::read_dir(dir.path())
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn unchanged_update_does_not_rewrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reg = Registry::new(dir.path());
        reg.update(|es| es.push(RegistryEntry::new(1, 1.0)))
            .expect("update");
        let before = fs::metadata(reg.path())
            .and_then(|m| m.modified())
            .expect("mtime");
        std::thread::sleep(std::time::Duration::from_millis(20));
        reg.update(|_| ()).expect("update");
        let after = fs::metadata(reg.path())
            .and_then(|m| m.modified())
            .expect("mtime");
        assert_eq!(before, after);
    }
}
