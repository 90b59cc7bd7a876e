//! One tray app per desktop session, with tauri-plugin-single-instance (a D-Bus name on Linux,
//! a named mutex on Windows, a socket on macOS): a second `serena-tray` hands its arguments to
//! the first, which shows its dashboard window (not for a `--minimized` start: launch at login,
//! `launch`), and exits 0 before anything of its own runs.
//! Where the plugin cannot work (no session bus), the port check of `App::start` is the
//! fallback: a second start finds Serena Tray answering on its port and asks it to show its
//! window through the API (`shell::run`), so there are never two either way.

use crate::core::app::{App, Show};
use tauri::plugin::TauriPlugin;
use tauri::{AppHandle, Manager, Runtime};

pub fn plugin<R: Runtime>() -> TauriPlugin<R> {
    tauri_plugin_single_instance::init(|handle: &AppHandle<R>, argv, _cwd| {
        if argv.iter().any(|a| a == "--minimized") {
            tracing::info!("a second start ({argv:?}), minimized: nothing to do");
            return;
        }
        tracing::info!("a second start ({argv:?}): showing the dashboard");
        if let Some(app) = handle.try_state::<App>() {
            app.show(Show::Dashboard);
        }
    })
}
