//! Where the running program is: `$SERENA_HOME/tray/daemon.json` (`{"pid", "port",
//! "version", "started_at"}`, mode 0600, written atomically once the API listens, removed at a
//! clean shutdown), so the CLI verbs and `launch` find it on whatever port it runs, and the
//! optional `--port-file PATH` (the port alone, for scripts that start it with `--port 0`).
//! A record is only a hint: whoever reads it still checks that Serena Tray answers on that port
//! and that the recorded PID owns it (`app::verified_pid`) before trusting it with the token.
//!
//! Deliberately not here: starting or finding by port alone (`app`), the CLI's client.

use crate::core::files;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// `daemon.json`'s name in the tray directory.
pub const FILE_NAME: &str = "daemon.json";

/// What `daemon.json` says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub pid: u32,
    pub port: u16,
    pub version: String,
    /// Epoch seconds.
    pub started_at: f64,
}

pub fn path(serena_home: &Path) -> PathBuf {
    serena_home.join("tray").join(FILE_NAME)
}

/// Records this process as the running program on `port`.
pub fn write(serena_home: &Path, port: u16) -> std::io::Result<()> {
    let record = Record {
        pid: std::process::id(),
        port,
        version: env!("CARGO_PKG_VERSION").into(),
        started_at: crate::core::model::now(),
    };
    let mut text = serde_json::to_vec_pretty(&record).map_err(std::io::Error::other)?;
    text.push(b'\n');
    files::write_atomic(&path(serena_home), &text)
}

/// The record, if there is a readable one.
pub fn read(serena_home: &Path) -> Option<Record> {
    let bytes = files::read(&path(serena_home)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Removes `file` if it still names this process (another start may have replaced it).
pub fn remove_if_ours(serena_home: &Path) {
    if read(serena_home).is_some_and(|r| r.pid == std::process::id()) {
        let _ = std::fs::remove_file(path(serena_home));
    }
}

/// Writes the port alone to `file` (`--port-file`), atomically and mode 0600; a missing
/// folder is created.
pub fn write_port_file(file: &Path, port: u16) -> std::io::Result<()> {
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    files::write_atomic(file, format!("{port}\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_written_read_back_and_removed_only_by_its_own_process() {
        let home = tempfile::tempdir().expect("tempdir");
        files::private_dir(&home.path().join("tray")).expect("tray dir");
        assert_eq!(read(home.path()), None);
        write(home.path(), 25999).expect("write");
        let r = read(home.path()).expect("a record");
        assert_eq!((r.pid, r.port), (std::process::id(), 25999));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path(home.path()))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Another process's record stays.
        let other = Record {
            pid: r.pid + 1,
            ..r.clone()
        };
        std::fs::write(path(home.path()), serde_json::to_vec(&other).expect("json"))
            .expect("write");
        remove_if_ours(home.path());
        assert_eq!(read(home.path()), Some(other));
        write(home.path(), 25999).expect("write");
        remove_if_ours(home.path());
        assert_eq!(read(home.path()), None);
        // Not JSON: no record.
        std::fs::write(path(home.path()), "{").expect("write");
        assert_eq!(read(home.path()), None);
    }
}
