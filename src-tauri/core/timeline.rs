//! The timeline file `$SERENA_HOME/tray/events.jsonl`: appends whole lines and rotates it before
//! it would grow past a limit (10 MB by default): the current file becomes `events.jsonl.1`
//! (replacing the previous one, so at most twice the limit is kept) and a fresh file is started.
//! A line is never split across two files. Files are created 0600 and never opened through a
//! symbolic link (see `files`). [`Timeline::about_pid`] reads it back for one instance (the
//! `/api/instances/{pid}/timeline` route), reading at most the limit's worth of each file.
//!
//! Deliberately not here: what a line says (`background` formats events), and running off the
//! async runtime (`append` and `about_pid` block; callers use `spawn_blocking`).
//! Appends from one process are serialised; two processes rotating one file at the same moment
//! are not coordinated (one Serena Tray runs per user).

use super::files;
use serde_json::Value;
use std::collections::{HashSet, VecDeque};
use std::ffi::OsString;
use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The size past which `events.jsonl` is rotated.
pub const DEFAULT_LIMIT: u64 = 10 * 1024 * 1024;

/// The timeline's file name in `$SERENA_HOME/tray/`.
pub const FILE_NAME: &str = "events.jsonl";

/// An appender to one timeline file. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Timeline {
    path: PathBuf,
    previous: PathBuf,
    limit: u64,
    lock: Mutex<()>,
}

impl Timeline {
    /// A timeline at `path` (its directory is created 0700 on the first append), rotated at
    /// [`DEFAULT_LIMIT`].
    pub fn new(path: impl Into<PathBuf>) -> Timeline {
        let path = path.into();
        let mut previous = OsString::from(path.as_os_str());
        previous.push(".1");
        Timeline {
            previous: PathBuf::from(previous),
            path,
            limit: DEFAULT_LIMIT,
            lock: Mutex::new(()),
        }
    }

    /// The same with another limit in bytes (tests use small ones).
    pub fn with_limit(mut self, limit: u64) -> Timeline {
        self.limit = limit;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the previous file goes on rotation: `<path>.1`.
    pub fn previous_path(&self) -> &Path {
        &self.previous
    }

    /// Appends `line` (a newline is added unless it ends with one) in one write. If the file
    /// holds something and the line would take it past the limit, the file is rotated first; a
    /// line longer than the limit gets a fresh file to itself.
    pub fn append(&self, line: &str) -> io::Result<()> {
        let mut record = String::with_capacity(line.len() + 1);
        record.push_str(line);
        if !record.ends_with('\n') {
            record.push('\n');
        }
        let _guard = self
            .lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            files::private_dir(dir)?;
        }
        let mut file = files::open_append(&self.path)?;
        let mut len = file.metadata()?.len();
        if len > 0 && len.saturating_add(record.len() as u64) > self.limit {
            drop(file);
            std::fs::rename(&self.path, &self.previous)?;
            file = files::open_append(&self.path)?;
            len = 0;
        }
        // A write cut short (a full disk) is taken back: never half a line.
        file.write_all(record.as_bytes()).inspect_err(|_| {
            let _ = file.set_len(len);
        })
    }

    /// The entries about `pid`, oldest first, at most the last `max`: from the previous file,
    /// then the current one. An entry is a line's JSON object as written, which names the PID
    /// (`pid`, or a session's `session.pid`) or a session first seen with that PID (a failed
    /// launch names only its `session_id`). Each carries `type` and `at` (epoch seconds); a line
    /// that does not parse or lacks them is skipped. Reads at most the limit's worth of each file
    /// (the end of a larger one, from its first whole line); missing files are empty.
    pub fn about_pid(&self, pid: u32, max: usize) -> io::Result<Vec<Value>> {
        let mut about = About {
            pid,
            needle: pid.to_string(),
            sessions: HashSet::new(),
            kept: VecDeque::new(),
            max,
        };
        for path in [&self.previous, &self.path] {
            match files::open_read(path) {
                Ok(file) => about.read(file, self.limit)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(about.kept.into())
    }
}

/// The state of one [`Timeline::about_pid`] read.
struct About {
    pid: u32,
    needle: String,
    /// The sessions launched with this PID: a later line naming only the session is about it.
    sessions: HashSet<String>,
    kept: VecDeque<Value>,
    max: usize,
}

impl About {
    fn read(&mut self, mut file: std::fs::File, limit: u64) -> io::Result<()> {
        let len = file.metadata()?.len();
        let mut skip_first = false;
        if len > limit {
            // Start `limit` bytes before the end; unless a line ends just before, the first
            // piece read is the end of a line, not a line.
            file.seek(SeekFrom::Start(len - limit - 1))?;
            let mut before = [0u8];
            file.read_exact(&mut before)?;
            skip_first = before[0] != b'\n';
        }
        let mut reader = io::BufReader::new(file.take(limit));
        let mut line = Vec::new();
        let mut first = true;
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                return Ok(());
            }
            // Started mid-line: that part is not a line.
            if std::mem::take(&mut first) && skip_first {
                continue;
            }
            self.line(&line);
        }
    }

    fn line(&mut self, line: &[u8]) {
        // Most lines are about other instances: parse only those that may name this one.
        let cheap = contains(line, self.needle.as_bytes())
            || (!self.sessions.is_empty() && contains(line, b"session_id"));
        if !cheap {
            return;
        }
        let Ok(Value::Object(mut entry)) = serde_json::from_slice::<Value>(line) else {
            return;
        };
        if !entry.get("at").is_some_and(Value::is_f64) {
            // An integer or a `timestamp` is still a time; anything else is not an entry.
            let at = ["at", "timestamp"]
                .iter()
                .find_map(|k| entry.get(*k).and_then(Value::as_f64));
            match at {
                Some(t) => entry.insert("at".into(), Value::from(t)),
                None => return,
            };
        }
        if !entry.get("type").is_some_and(Value::is_string) {
            return;
        }
        let entry = Value::Object(entry);
        if !concerns(&entry, self.pid, &mut self.sessions) {
            return;
        }
        if self.kept.len() == self.max {
            self.kept.pop_front();
        }
        if self.max > 0 {
            self.kept.push_back(entry);
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Whether a timeline entry is about `pid`; remembers the sessions launched with it.
fn concerns(entry: &Value, pid: u32, sessions: &mut HashSet<String>) -> bool {
    let is = |v: Option<&Value>| v.and_then(Value::as_u64) == Some(u64::from(pid));
    let session = entry
        .get("session_id")
        .or_else(|| entry.pointer("/session/session_id"))
        .and_then(Value::as_str);
    if is(entry.get("pid")) || is(entry.pointer("/session/pid")) {
        if let Some(s) = session {
            sessions.insert(s.to_string());
        }
        return true;
    }
    session.is_some_and(|s| sessions.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::sync::Arc;

    fn lines(path: &Path) -> Vec<String> {
        fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    /// A line of exactly `len` bytes with its newline.
    fn line(n: usize, len: usize) -> String {
        let head = format!("{{\"n\":{n},\"pad\":\"");
        let tail = "\"}";
        format!(
            "{head}{}{tail}",
            "x".repeat(len - 1 - head.len() - tail.len())
        )
    }

    #[test]
    fn rotates_at_the_limit_keeping_one_previous_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = Timeline::new(dir.path().join("tray/events.jsonl")).with_limit(100);
        let all: Vec<String> = (0..10).map(|n| line(n, 25)).collect();
        for (i, l) in all.iter().enumerate() {
            t.append(l).expect("append");
            let (prev, cur) = (lines(t.previous_path()), lines(t.path()));
            // Exactly at the limit is still one file: 4 lines of 25 bytes fill 100.
            assert_eq!(cur.len(), i % 4 + 1, "after line {i}");
            assert_eq!(cur.last(), Some(l));
            let kept = [prev.clone(), cur.clone()].concat();
            let first = (i / 4).saturating_sub(1) * 4;
            assert_eq!(
                kept,
                all[first..=i],
                "after line {i}: nothing lost or split"
            );
            for p in [t.path(), t.previous_path()] {
                assert!(fs::metadata(p).map(|m| m.len()).unwrap_or(0) <= 100);
            }
        }
        let names: Vec<String> = fs::read_dir(dir.path().join("tray"))
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "one previous file only: {names:?}");
    }

    #[test]
    fn a_line_longer_than_the_limit_is_kept_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = Timeline::new(dir.path().join("events.jsonl")).with_limit(50);
        t.append(&line(0, 20)).expect("append");
        let long = line(1, 80);
        t.append(&long).expect("append");
        assert_eq!(lines(t.path()), vec![long.clone()]);
        assert_eq!(lines(t.previous_path()), vec![line(0, 20)]);
        t.append("no newline").expect("append");
        assert_eq!(lines(t.path()), vec!["no newline".to_string()]);
        assert_eq!(lines(t.previous_path()), vec![long]);
        assert!(fs::read_to_string(t.path())
            .expect("read")
            .ends_with("no newline\n"));
    }

    #[test]
    fn concurrent_appends_are_whole_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        // 4 threads x 50 lines x 40 bytes = 8000 bytes: exactly one rotation at 6000.
        let t = Arc::new(Timeline::new(dir.path().join("events.jsonl")).with_limit(6000));
        let threads: Vec<_> = (0..4)
            .map(|k| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        t.append(&line(k * 1000 + i, 40)).expect("append");
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().expect("thread");
        }
        let mut seen: Vec<String> = [lines(t.previous_path()), lines(t.path())].concat();
        assert_eq!(lines(t.previous_path()).len(), 150);
        seen.sort();
        let mut want: Vec<String> = (0..4)
            .flat_map(|k| (0..50).map(move |i| line(k * 1000 + i, 40)))
            .collect();
        want.sort();
        assert_eq!(seen, want);
    }

    fn types(entries: &[serde_json::Value]) -> Vec<String> {
        entries
            .iter()
            .map(|e| format!("{}@{}", e["type"].as_str().unwrap_or("?"), e["at"]))
            .collect()
    }

    #[test]
    fn about_pid_reads_both_files_in_order_and_follows_its_sessions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = Timeline::new(dir.path().join("events.jsonl"));
        fs::write(
            t.previous_path(),
            [
                r#"{"type":"instance_added","at":1.0,"pid":42,"state":"live_no_project"}"#,
                r#"{"type":"instance_added","at":2.0,"pid":420,"state":"live_no_project"}"#,
                r#"{"type":"session_launching","at":3.0,"pid":42,"session_id":"s1","project_path":"/p"}"#,
                r#"{"type":"session_launching","at":3.5,"pid":7,"session_id":"s2","project_path":"/p"}"#,
                "",
            ]
            .join("\n"),
        )
        .expect("write");
        fs::write(
            t.path(),
            [
                "{not json 42",
                r#"{"type":"state_changed","at":4,"pid":42,"from":"live_no_project","to":"zombie","reason":"orphaned"}"#,
                r#"{"type":"session_failed","at":5.0,"session_id":"s1","error":"boom"}"#,
                r#"{"type":"session_failed","at":5.5,"session_id":"s2","error":"other"}"#,
                r#"{"type":"session_ready","at":6.0,"session":{"pid":42,"session_id":"s3"}}"#,
                r#"{"at":6.5,"pid":42}"#,
                r#"{"type":"instance_updated","pid":42}"#,
                r#"{"type":"instance_updated","timestamp":7.0,"pid":42}"#,
                r#"[42]"#,
                r#"{"type":"instance_removed","at":8.0,"pid":42,"started_at":1.0}"#,
                r#"{"type":"instance_killed","at":9.0,"pid":42"#,
            ]
            .join("\n"),
        )
        .expect("write");
        let got = t.about_pid(42, 500).expect("read");
        assert_eq!(
            types(&got),
            [
                "instance_added@1.0",
                "session_launching@3.0",
                "state_changed@4.0",
                "session_failed@5.0",
                "session_ready@6.0",
                "instance_updated@7.0",
                "instance_removed@8.0",
            ]
        );
        assert_eq!(got[2]["reason"], "orphaned", "the line as written");
        assert_eq!(types(&t.about_pid(42, 2).expect("read")), types(&got[5..]));
        assert!(t.about_pid(43, 500).expect("read").is_empty());
        assert_eq!(types(&t.about_pid(7, 500).expect("read")).len(), 2);
        let empty = Timeline::new(dir.path().join("none.jsonl"));
        assert!(empty.about_pid(42, 500).expect("no files").is_empty());
    }

    #[test]
    fn about_pid_reads_no_more_than_the_limit_of_each_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let entry = |n: u32| format!(r#"{{"type":"instance_updated","at":{n}.5,"pid":42}}"#);
        // 40 lines of 47 bytes (the last 30) in one file, written past the limit by someone
        // else: only the last `limit` bytes are read, and a line cut there is not one.
        let text: String = (0..40).map(|n| entry(n) + "\n").collect();
        let line = entry(10).len() as u64 + 1;
        for limit in [200, 4 * line] {
            let t = Timeline::new(dir.path().join("events.jsonl")).with_limit(limit);
            fs::write(t.path(), &text).expect("write");
            let got = t.about_pid(42, 500).expect("read");
            assert_eq!(got.len() as u64, limit / line, "{limit}: {:?}", types(&got));
            assert_eq!(got.last().map(|e| e["at"].clone()), Some(39.5.into()));
        }
    }

    #[cfg(unix)]
    #[test]
    fn files_are_0600_and_a_link_is_not_followed() {
        use std::os::unix::fs::{symlink, PermissionsExt};
        let dir = tempfile::tempdir().expect("tempdir");
        let t = Timeline::new(dir.path().join("tray/events.jsonl")).with_limit(30);
        t.append(&line(0, 20)).expect("append");
        t.append(&line(1, 20)).expect("append");
        let mode = |p: &Path| fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(t.path()), 0o600);
        assert_eq!(mode(t.previous_path()), 0o600);
        assert_eq!(mode(&dir.path().join("tray")), 0o700);

        let target = dir.path().join("target");
        fs::write(&target, "theirs").expect("write");
        fs::remove_file(t.path()).expect("rm");
        symlink(&target, t.path()).expect("symlink");
        assert!(t.append("x").is_err());
        assert_eq!(fs::read_to_string(&target).expect("read"), "theirs");
    }
}
