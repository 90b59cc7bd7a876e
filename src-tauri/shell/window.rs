//! The dashboard window: the very page the daemon serves, loaded from 127.0.0.1 through the
//! login URL (the token goes into an HttpOnly cookie and leaves the address, and the window
//! has no address bar anyway). It exists only while it is shown: closing it destroys the
//! window and its webview (the idle app stays small; WebKit's processes go with it) and the app
//! lives on in the tray; showing it again creates it anew. Asked to show an instance or the
//! New session form while it is open, it moves its page there (a fragment change, no reload).
//!
//! Deliberately not here: who asks (the tray menu, a second start, `POST /api/window`,
//! notifications: all through [`show`]).

use crate::core::app::{App, Show};
use tauri::{AppHandle, Manager, Runtime, WebviewUrl, WebviewWindowBuilder};

/// The label of the one dashboard window.
pub const LABEL: &str = "dashboard";

/// Shows the dashboard window at `what`, creating it if it is not there. Safe from any thread:
/// the work runs on the main thread.
pub fn show<R: Runtime>(handle: &AppHandle<R>, app: &App, what: Show) {
    let h = handle.clone();
    let base = app.url();
    let login = app.login_url();
    let run = handle.run_on_main_thread(move || {
        if let Err(e) = show_now(&h, &base, &login, what) {
            tracing::warn!("cannot show the dashboard window: {e}");
        }
    });
    if let Err(e) = run {
        tracing::warn!("cannot show the dashboard window: {e}");
    }
}

fn show_now<R: Runtime>(
    handle: &AppHandle<R>,
    base: &str,
    login: &str,
    what: Show,
) -> Result<(), Box<dyn std::error::Error>> {
    let fragment = what.path();
    let fragment = fragment.trim_start_matches('/');
    if let Some(window) = handle.get_webview_window(LABEL) {
        if what != Show::Dashboard {
            // Signed in already (the cookie): only the fragment moves.
            window.navigate(format!("{}{fragment}", base.trim_end_matches('/')).parse()?)?;
        }
        window.unminimize()?;
        window.show()?;
        window.set_focus()?;
        return Ok(());
    }
    // The login URL sets the cookie and redirects to `/`; the fragment survives the redirect.
    let url = format!("{login}{fragment}").parse()?;
    WebviewWindowBuilder::new(handle, LABEL, WebviewUrl::External(url))
        .title("Serena Tray")
        .inner_size(1200.0, 820.0)
        .min_inner_size(800.0, 480.0)
        .focused(true)
        .build()?;
    Ok(())
}

/// Shows the window whenever the app is asked to (`App::show`), for as long as the app runs.
pub fn follow_requests<R: Runtime>(handle: &AppHandle<R>, app: &App) {
    let mut rx = app.window_requests();
    let (h, a) = (handle.clone(), app.clone());
    app.spawn(async move {
        loop {
            match rx.recv().await {
                Ok(what) => show(&h, &a, what),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}
