//! The dashboard window: the very page the daemon serves, loaded from 127.0.0.1 through the
//! login URL (the token goes into an HttpOnly cookie and leaves the address, and the window
//! has no address bar anyway).
//!
//! The window lives in a process of its own (`serena-tray window`, a hidden verb), started when
//! it is to be shown and gone when it is closed: WebKit (its web and network processes, and
//! what it loads into the process that hosts it) never stays behind in the tray app, which
//! stays as small after the window was open as before. The tray app writes the login URL to the
//! window process's stdin (never on a command line, which other users can read), then one line
//! per later request; the window moves its page there (a fragment change, no reload) and comes
//! to the front. When the tray app goes, the window's stdin ends and it closes too.
//!
//! Deliberately not here: who asks (the tray menu, a second start, `POST /api/window`,
//! notifications: all through `App::show`).

use crate::core::app::{App, Show};
use std::io::{BufRead, Write};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tauri::{Manager, WebviewUrl, WebviewWindowBuilder};

/// The label of the one dashboard window (in the window process).
const LABEL: &str = "dashboard";

/// The hidden verb that runs the window process.
pub const VERB: &str = "window";

/// The running window process, if any.
struct Open {
    stdin: ChildStdin,
    alive: Arc<AtomicBool>,
}

/// Shows the dashboard window whenever the app is asked to (`App::show`), for as long as the
/// app runs: tells the open window, or starts one.
pub fn follow_requests(app: &App) {
    let mut rx = app.window_requests();
    let a = app.clone();
    let open: Arc<Mutex<Option<Open>>> = Arc::default();
    app.spawn(async move {
        loop {
            let what = match rx.recv().await {
                Ok(what) => what,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            let (a, open) = (a.clone(), open.clone());
            // Writing to a pipe and starting a process: quick, but blocking.
            let shown = tokio::task::spawn_blocking(move || show(&a, &open, what)).await;
            if let Ok(Err(e)) = shown {
                tracing::warn!("cannot show the dashboard window: {e}");
            }
        }
    });
}

fn show(app: &App, open: &Mutex<Option<Open>>, what: Show) -> std::io::Result<()> {
    let mut open = open.lock().unwrap_or_else(|p| p.into_inner());
    let path = what.path();
    if let Some(o) = open.as_mut().filter(|o| o.alive.load(Ordering::Acquire)) {
        // A window that closed a moment ago cannot read it: then a new one starts.
        if writeln!(o.stdin, "{}{}", app.url().trim_end_matches('/'), path).is_ok() {
            return Ok(());
        }
    }
    let mut child = Command::new(std::env::current_exe()?)
        .arg(VERB)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    let mut stdin = child.stdin.take().ok_or(std::io::ErrorKind::BrokenPipe)?;
    // The login URL sets the cookie and redirects to `/`; the fragment survives the redirect.
    writeln!(stdin, "{}{}", app.login_url(), path.trim_start_matches('/'))?;
    let alive = Arc::new(AtomicBool::new(true));
    let watch = alive.clone();
    std::thread::spawn(move || {
        let _ = child.wait();
        watch.store(false, Ordering::Release);
    });
    *open = Some(Open { stdin, alive });
    Ok(())
}

/// The window process (`serena-tray window`): reads the URL to load from stdin, shows it, and
/// follows the later lines (URLs to move to), until the window is closed or stdin ends.
pub fn run_window_process() -> Result<(), super::ShellError> {
    let mut first = String::new();
    if std::io::stdin().read_line(&mut first)? == 0 {
        return Ok(());
    }
    let url: tauri::Url = first
        .trim()
        .parse()
        .map_err(|e| super::ShellError::Window(format!("not a URL: {e}")))?;
    let app = tauri::Builder::default().build(super::context())?;
    WebviewWindowBuilder::new(&app, LABEL, WebviewUrl::External(url))
        .title("Serena Tray")
        .inner_size(1200.0, 820.0)
        .min_inner_size(800.0, 480.0)
        .focused(true)
        .build()?;
    let handle = app.handle().clone();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(url) = line.map(|l| l.trim().parse::<tauri::Url>()) else {
                break;
            };
            let Ok(url) = url else { continue };
            let h = handle.clone();
            let _ = handle.run_on_main_thread(move || {
                if let Some(w) = h.get_webview_window(LABEL) {
                    let _ = w.navigate(url);
                    let _ = w.unminimize();
                    let _ = w.show();
                    let _ = w.set_focus();
                }
            });
        }
        // The tray app is gone: so is the page's server.
        handle.exit(0);
    });
    // Once the window is closed, this process has done its work (the default: it exits).
    app.run(|_, _| {});
    Ok(())
}
