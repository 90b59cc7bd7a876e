//! The timeline file `$SERENA_HOME/tray/events.jsonl`: appends whole lines and rotates it before
//! it would grow past a limit (10 MB by default): the current file becomes `events.jsonl.1`
//! (replacing the previous one, so at most twice the limit is kept) and a fresh file is started.
//! A line is never split across two files. Files are created 0600 and never opened through a
//! symbolic link (see `files`).
//!
//! Deliberately not here: what a line says (`background` formats events), reading the timeline
//! back, and running off the async runtime (`append` blocks; callers use `spawn_blocking`).
//! Appends from one process are serialised; two processes rotating one file at the same moment
//! are not coordinated (one Serena Tray runs per user).

use super::files;
use std::ffi::OsString;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The size past which `events.jsonl` is rotated.
pub const DEFAULT_LIMIT: u64 = 10 * 1024 * 1024;

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
        let len = file.metadata()?.len();
        if len > 0 && len.saturating_add(record.len() as u64) > self.limit {
            drop(file);
            std::fs::rename(&self.path, &self.previous)?;
            file = files::open_append(&self.path)?;
        }
        file.write_all(record.as_bytes())
    }
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
