//! Launch at login, with auto-launch: an XDG autostart entry on Linux
//! (`~/.config/autostart/Serena Tray.desktop`), a LaunchAgent on macOS, the Run key on Windows;
//! each starts the tray app `--minimized` (in the tray, its window closed). The state shown is
//! always read from the system, never remembered: on Linux and macOS the folder of the entry is
//! watched, so an entry removed by hand unchecks the menu at once.
//!
//! Deliberately not here: the menu item (`menu`) and when the menu is rebuilt (`tray`).

use auto_launch::{AutoLaunch, AutoLaunchBuilder};
use std::path::PathBuf;

/// The entry's name (the product's).
const NAME: &str = "Serena Tray";

/// The entry of this tray app (its own path, or the AppImage it runs from), starting it
/// `--minimized`; `None` (logged) where none can be made.
pub fn entry() -> Option<AutoLaunch> {
    let exe = std::env::var_os("APPIMAGE")
        .filter(|_| cfg!(target_os = "linux"))
        .map(PathBuf::from)
        .or_else(|| std::env::current_exe().ok())?;
    let mut builder = AutoLaunchBuilder::new();
    builder
        .set_app_name(NAME)
        .set_app_path(&exe.display().to_string())
        .set_args(&["--minimized"]);
    builder
        .build()
        .map_err(|e| tracing::warn!("launch at login is not available: {e}"))
        .ok()
}

/// Whether the app launches at login; `None` where it cannot be told (no entry, an unreadable
/// one).
pub fn state(entry: Option<&AutoLaunch>) -> Option<bool> {
    match entry?.is_enabled() {
        Ok(on) => Some(on),
        Err(e) => {
            tracing::warn!("cannot tell whether Serena Tray launches at login: {e}");
            None
        }
    }
}

/// Why launch at login could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum AutostartError {
    #[error("launch at login is not available here")]
    Unavailable,
    #[error(transparent)]
    Change(#[from] auto_launch::Error),
}

/// Makes the app launch at login (`on`) or not.
pub fn set(entry: Option<&AutoLaunch>, on: bool) -> Result<(), AutostartError> {
    let entry = entry.ok_or(AutostartError::Unavailable)?;
    Ok(if on { entry.enable() } else { entry.disable() }?)
}

/// The folder whose entries decide launch at login, where it is a folder of files.
pub fn watched_dir() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from)?;
    if cfg!(target_os = "linux") {
        Some(home.join(".config").join("autostart"))
    } else if cfg!(target_os = "macos") {
        Some(home.join("Library").join("LaunchAgents"))
    } else {
        None
    }
}

/// Calls `changed` whenever an entry of [`watched_dir`] changes; the watcher lives as long as
/// the value returned.
pub fn watch(changed: impl Fn() + Send + 'static) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let dir = watched_dir()?;
    // The folder may not exist before the first entry; watching it needs it.
    if let Err(e) = std::fs::create_dir_all(&dir) {
        tracing::warn!("cannot watch {} for launch at login: {e}", dir.display());
        return None;
    }
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            changed();
        }
    })
    .map_err(|e| tracing::warn!("cannot watch {}: {e}", dir.display()))
    .ok()?;
    watcher
        .watch(&dir, notify::RecursiveMode::NonRecursive)
        .map_err(|e| tracing::warn!("cannot watch {}: {e}", dir.display()))
        .ok()?;
    Some(watcher)
}
