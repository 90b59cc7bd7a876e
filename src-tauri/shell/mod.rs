//! The Tauri tray shell: the only place that imports tauri. Thin adapters over the core.
//!
//! It runs the [`App`] (HTTP API, tray protocol, refresh loop) in-process and manages its handle.
//! The dashboard window, the tray menu, notifications and autostart come next; until then the
//! app keeps running in the background and serves the dashboard in the browser
//! (`serena-tray open`).

use crate::core::app::{App, AppError, Started};
use crate::core::settings::Settings;

#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    #[error("the tray app could not start: {0}")]
    Tauri(#[from] tauri::Error),
    #[error(transparent)]
    App(#[from] AppError),
}

/// Runs the tray app until it is asked to quit.
pub fn run(settings: Settings) -> Result<(), ShellError> {
    let started = tauri::async_runtime::block_on(App::start(settings))?;
    let app = match started {
        Started::AlreadyRunning { url } => {
            println!("serena-tray is already running: {url}");
            return Ok(());
        }
        Started::Running(app) => app,
    };
    println!("{}", crate::cli::dashboard_line(&app));
    let tauri_app = tauri::Builder::default()
        .manage(app.clone())
        .build(tauri::generate_context!())?;
    tauri_app.run(move |_handle, event| match event {
        // A tray app lives on with no window open.
        tauri::RunEvent::ExitRequested {
            api, code: None, ..
        } => api.prevent_exit(),
        tauri::RunEvent::Exit => tauri::async_runtime::block_on(app.shutdown()),
        _ => {}
    });
    Ok(())
}
