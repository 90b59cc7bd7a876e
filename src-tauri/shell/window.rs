//! The dashboard window: the very page the daemon serves, loaded from 127.0.0.1 through the
//! login URL (the token goes into an HttpOnly cookie and leaves the address, and the window
//! has no address bar anyway).
//!
//! The window lives in a process of its own (the `serena-tray-window` binary, next to the tray
//! app's), started when it is to be shown and gone when it is closed: WebKit (its web and
//! network processes, and what it loads into the process that hosts it) is never loaded into
//! the tray app, which does not even link it. The tray app writes the login URL to the
//! window process's stdin (never on a command line, which other users can read), then one line
//! per later request; the window moves its page there (a fragment change, no reload), comes to
//! the front and answers `shown` on its stdout. A window closed a moment ago answers `gone`
//! (or nothing, once its process ended): then a new one is started. When the tray app goes, the
//! window's stdin ends and it closes too.
//!
//! Deliberately not here: who asks (the tray menu, a second start, `POST /api/window`,
//! notifications: all through `App::show`).

use crate::core::app::{App, Show};
use std::io::{BufRead, Write};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;
use tauri::{Manager, WebviewUrl, WebviewWindowBuilder};

/// The label of the one dashboard window (in the window process).
const LABEL: &str = "dashboard";

/// The window process's binary, next to the tray app's.
pub const BINARY: &str = "serena-tray-window";

/// How long the window process may take to answer a request.
const ANSWER: Duration = Duration::from_secs(5);
/// How long it may take to show its window at start (WebKit starts its processes).
const FIRST_ANSWER: Duration = Duration::from_secs(30);
/// The window process's answer once its window shows what was asked.
const SHOWN: &str = "shown";

/// Why the window process could not show its window.
#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    #[error("the window could not start: {0}")]
    Tauri(#[from] tauri::Error),
    #[error("not a URL: {0}")]
    Url(String),
    #[error("cannot read what to show: {0}")]
    Io(#[from] std::io::Error),
}

/// The running window process: its stdin, and its answers (one line per request, read by a
/// thread that reaps the process once its stdout ends).
struct Open {
    stdin: ChildStdin,
    answers: mpsc::Receiver<String>,
}

impl Open {
    /// Asks it to show `url`; whether its window did.
    fn ask(&mut self, url: &str, wait: Duration) -> bool {
        writeln!(self.stdin, "{url}").is_ok()
            && self.answers.recv_timeout(wait).is_ok_and(|a| a == SHOWN)
    }
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
    if let Some(o) = open.as_mut() {
        // Its window may have closed a moment ago: it says so (or has gone); then a new one.
        if o.ask(
            &format!("{}{path}", app.url().trim_end_matches('/')),
            ANSWER,
        ) {
            return Ok(());
        }
    }
    let exe = std::env::current_exe()?
        .with_file_name(format!("{BINARY}{}", std::env::consts::EXE_SUFFIX));
    let mut cmd = Command::new(exe);
    if super::GL_OFF_HERE.load(std::sync::atomic::Ordering::SeqCst) {
        cmd.env_remove("GDK_GL");
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    let stdin = child.stdin.take().ok_or(std::io::ErrorKind::BrokenPipe)?;
    let stdout = child.stdout.take().ok_or(std::io::ErrorKind::BrokenPipe)?;
    let (tx, answers) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
        let _ = child.wait();
    });
    let mut started = Open { stdin, answers };
    // The login URL sets the cookie and redirects to `/`; the fragment survives the redirect.
    let login = format!("{}{}", app.login_url(), path.trim_start_matches('/'));
    if !started.ask(&login, FIRST_ANSWER) {
        tracing::warn!("the dashboard window did not come up");
    }
    *open = Some(started);
    Ok(())
}

/// The window process (`serena-tray-window`): reads the URL to load from stdin, shows it, and
/// follows the later lines (URLs to move to), until the window is closed or stdin ends.
pub fn run_window_process() -> Result<(), WindowError> {
    let mut first = String::new();
    if std::io::stdin().read_line(&mut first)? == 0 {
        return Ok(());
    }
    let url = first
        .trim()
        .parse::<tauri::Url>()
        .map_err(|e| WindowError::Url(e.to_string()))?;
    let app = tauri::Builder::default().build(tauri::generate_context!())?;
    WebviewWindowBuilder::new(&app, LABEL, WebviewUrl::External(url))
        .title("Serena Tray")
        .inner_size(1200.0, 820.0)
        .min_inner_size(800.0, 480.0)
        .focused(true)
        .build()?;
    answer(true);
    let handle = app.handle().clone();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let Ok(url) = line.trim().parse::<tauri::Url>() else {
                answer(false);
                continue;
            };
            let (tx, rx) = mpsc::channel();
            let h = handle.clone();
            let posted = handle.run_on_main_thread(move || {
                let window = h.get_webview_window(LABEL);
                if let Some(w) = &window {
                    let _ = w.navigate(url);
                    let _ = w.unminimize();
                    let _ = w.show();
                    let _ = w.set_focus();
                }
                let _ = tx.send(window.is_some());
            });
            // No main loop any more (the window closed): nothing to answer with.
            match posted.ok().and_then(|()| rx.recv().ok()) {
                Some(shown) => answer(shown),
                None => break,
            }
        }
        // The tray app is gone (so is the page's server), or this window is.
        handle.exit(0);
    });
    // Once the window is closed, this process has done its work (the default: it exits).
    app.run(|_, _| {});
    Ok(())
}

/// Tells the tray app whether the window shows what it asked for.
fn answer(shown: bool) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", if shown { SHOWN } else { "gone" });
    let _ = out.flush();
}
