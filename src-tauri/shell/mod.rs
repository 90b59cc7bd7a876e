//! The Tauri tray shell: the only place that imports tauri. Thin adapters over the core.
//!
//! It hosts the daemon (HTTP API, tray protocol, refresh loop) in-process. The dashboard window,
//! the tray menu, notifications and autostart come next; until then the app keeps running in
//! the background and serves the dashboard in the browser (`serena-tray open`).

use crate::core::config::Config;
use crate::core::daemon::{self, Options, Started};
use crate::core::settings::Settings;

#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    #[error("the tray app could not start: {0}")]
    Tauri(#[from] tauri::Error),
    #[error(transparent)]
    Daemon(#[from] daemon::DaemonError),
}

/// Runs the tray app until it is asked to quit.
pub fn run(config: Config, settings: Settings, options: Options) -> Result<(), ShellError> {
    let started =
        tauri::async_runtime::block_on(async { daemon::start(config, &settings, &options).await })?;
    let running = match started {
        Started::AlreadyRunning { url } => {
            println!("serena-tray is already running: {url}");
            return Ok(());
        }
        Started::Running(r) => r,
    };
    println!("Dashboard: {}", running.login_url());
    let app = tauri::Builder::default()
        .manage(running)
        .build(tauri::generate_context!())?;
    app.run(|_app, event| {
        // A tray app lives on with no window open.
        if let tauri::RunEvent::ExitRequested {
            api, code: None, ..
        } = event
        {
            api.prevent_exit();
        }
    });
    Ok(())
}
