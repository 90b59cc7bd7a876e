//! The Tauri tray shell: the only place that imports tauri. Thin adapters over the core.
//!
//! This first cut starts the app without a window (the dashboard window, the tray menu,
//! notifications and autostart come with the HTTP API); it keeps running in the background and
//! refreshes the core so that the registry stays current.

use crate::core::Core;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    #[error("the tray app could not start: {0}")]
    Tauri(#[from] tauri::Error),
}

/// Runs the tray app until it is asked to quit.
pub fn run(core: Core) -> Result<(), ShellError> {
    let app = tauri::Builder::default()
        .setup(move |_app| {
            let core = core.clone();
            tauri::async_runtime::spawn(async move {
                loop {
                    if let Err(e) = core.refresh().await {
                        tracing::warn!("refresh failed: {e}");
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            });
            Ok(())
        })
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
