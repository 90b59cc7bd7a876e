//! The sessions' store, `$SERENA_HOME/tray/sessions.json` (0600, written atomically): what is
//! read at a start, and written after every change. A file that does not parse is moved aside,
//! never deleted.
//!
//! Deliberately not here: which sessions are kept (`decide::kept`).

use super::SessionError;
use crate::core::files;
use crate::core::model::Session;
use std::path::Path;

/// The recorded sessions; none when the file is missing or unreadable.
pub(super) fn read(store: &Path) -> Vec<Session> {
    let text = match files::read(store) {
        Ok(text) => text,
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("{}: {e}; started without sessions", store.display());
            }
            return Vec::new();
        }
    };
    match serde_json::from_slice::<Vec<Session>>(&text) {
        Ok(v) => v,
        Err(e) => {
            match files::move_aside(store) {
                Ok(aside) => tracing::warn!(
                    "{}: {e}; moved it to {} and started without sessions",
                    store.display(),
                    aside.display()
                ),
                Err(m) => tracing::warn!(
                    "{}: {e}; cannot move it aside ({m}); started without sessions",
                    store.display()
                ),
            }
            Vec::new()
        }
    }
}

/// Writes `sessions` as the store's whole content.
pub(super) fn write(store: &Path, sessions: &[&Session]) -> Result<(), SessionError> {
    let failed = |source| SessionError::Store {
        path: store.to_path_buf(),
        source,
    };
    let text =
        serde_json::to_string_pretty(sessions).map_err(|e| failed(std::io::Error::other(e)))?;
    if let Some(dir) = store.parent() {
        files::private_dir(dir).map_err(failed)?;
    }
    files::write_atomic(store, text.as_bytes()).map_err(failed)
}
