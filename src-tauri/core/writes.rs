//! The files this program could not write (a full disk, a `SERENA_HOME` turned read-only): for
//! each of its files, whether the last attempt failed, since when and why. Every writer replaces
//! its file atomically (or, for the timeline, takes a failed append back), so a failed write
//! leaves the old file whole; the change it carried is kept in memory and written by the next
//! attempt. Here only what is told about it: the first failure of a file is one line in the log
//! and a `write_failed` event (the page shows it until the `write_recovered` of the first
//! write that succeeds again); failures in between are quiet, so a full disk does not flood the
//! log once a second. [`Writes::failing`] is what a page opened meanwhile shows.
//!
//! Deliberately not here: writing (`files`, and each file's owner) and when to try again (each
//! owner: the refresh loop for the registry, the sessions' store, the timeline's next line).

use super::events::Event;
use super::model::{lock, now, Epoch};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

/// One of the files this program writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Written {
    /// `$SERENA_HOME/instances.json` (and its lock file).
    Registry,
    /// `$SERENA_HOME/tray/sessions.json`.
    Sessions,
    /// `$SERENA_HOME/tray/token`.
    Token,
    /// `$SERENA_HOME/tray/events.jsonl`.
    Timeline,
}

impl Written {
    pub fn as_str(self) -> &'static str {
        match self {
            Written::Registry => "registry",
            Written::Sessions => "sessions",
            Written::Token => "token",
            Written::Timeline => "timeline",
        }
    }
}

/// An error of writing one of the files: the path and the system's error it names (the file,
/// its lock file, its directory), if it names one; told as a whole otherwise.
pub trait WriteError: std::fmt::Display {
    fn io(&self) -> Option<(&Path, &std::io::Error)>;
}

/// A file whose writes fail, since its first failed write.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WriteFailure {
    pub file: Written,
    pub path: String,
    /// The last failure's message (`No space left on device (os error 28)`).
    pub error: String,
    pub since: Epoch,
}

/// Which files fail to be written now. Shared (behind the core's handle).
#[derive(Debug, Default)]
pub struct Writes {
    failing: Mutex<BTreeMap<Written, WriteFailure>>,
}

impl Writes {
    /// Records how writing `file` at `path` went; the event to publish when that changes its
    /// state (failing from fine, or fine from failing), logged here as one line.
    pub fn outcome(
        &self,
        file: Written,
        path: &Path,
        result: Result<(), &dyn std::fmt::Display>,
    ) -> Option<Event> {
        let mut failing = lock(&self.failing);
        let path = path.display().to_string();
        match result {
            Ok(()) => {
                failing.remove(&file)?;
                tracing::info!("wrote {path} again");
                Some(Event::WriteRecovered {
                    file: file.as_str().into(),
                    path,
                })
            }
            Err(e) => {
                let error = e.to_string();
                if let Some(known) = failing.get_mut(&file) {
                    known.error = error;
                    return None;
                }
                tracing::warn!(
                    "cannot write {path}: {error} (the old file is kept; the change is written \
                     as soon as a write succeeds)"
                );
                failing.insert(
                    file,
                    WriteFailure {
                        file,
                        path: path.clone(),
                        error: error.clone(),
                        since: now(),
                    },
                );
                Some(Event::WriteFailed {
                    file: file.as_str().into(),
                    path,
                    error,
                })
            }
        }
    }

    /// The files failing now, in [`Written`] order.
    pub fn failing(&self) -> Vec<WriteFailure> {
        lock(&self.failing).values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_and_the_recovery_are_told_once_each() {
        let writes = Writes::default();
        let path = Path::new("/h/tray/sessions.json");
        // As Linux says it (error 28 is another error on Windows).
        let full = std::io::Error::other("No space left on device (os error 28)");
        assert_eq!(writes.outcome(Written::Sessions, path, Ok(())), None);
        let told = writes.outcome(Written::Sessions, path, Err(&full));
        let Some(Event::WriteFailed { file, error, .. }) = told else {
            panic!("{told:?}");
        };
        assert_eq!(file, "sessions");
        assert!(error.contains("No space left on device"), "{error}");
        // Again, and another file: only the new file is news.
        assert_eq!(writes.outcome(Written::Sessions, path, Err(&full)), None);
        let registry = Path::new("/h/instances.json");
        assert!(writes
            .outcome(Written::Registry, registry, Err(&full))
            .is_some());
        let failing: Vec<&str> = writes.failing().iter().map(|f| f.file.as_str()).collect();
        assert_eq!(failing, ["registry", "sessions"]);
        let told = writes.outcome(Written::Sessions, path, Ok(()));
        assert!(
            matches!(told, Some(Event::WriteRecovered { ref file, .. }) if file == "sessions"),
            "{told:?}"
        );
        assert_eq!(writes.outcome(Written::Sessions, path, Ok(())), None);
        assert_eq!(writes.failing().len(), 1);
    }
}
