//! The running program, with or without a GUI around it: one cloneable [`App`] handle holding
//! the core, the sessions, the settings, the token and the ports, plus a cancellation token and
//! a task tracker. It is the state of both HTTP listeners, what the tray shell manages and what
//! the CLI drives. [`App::open`] binds the API port and opens the state, and starts nothing:
//! `background::start` opens it and starts every task on it; [`App::shutdown`] cancels them all
//! and returns once they are gone. An open on a port where Serena Tray verifiably answers reports
//! `AlreadyRunning` instead of opening twice.
//!
//! A window host (the tray app) subscribes to [`App::window_requests`]: whoever wants the
//! dashboard window shown (the API's `POST /api/window`, a second start, a notification) asks
//! through [`App::show`], which says whether anyone was there to show it (the headless daemon
//! has no window).
//!
//! Deliberately not here: argument parsing and printing (the CLI), windows and menus (the shell),
//! and the background tasks (`background`).

use crate::core::engine::Core;
use crate::core::running::{self, verified_pid};
use crate::core::sessions::Sessions;
use crate::core::settings::Settings;
use crate::core::token::{self, TokenError};
use crate::core::writes::Written;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("port {port} on 127.0.0.1 is taken by another program (not Serena Tray): choose another with --port or web_dashboard_global_port")]
    PortTaken { port: u16 },
    #[error("cannot listen on 127.0.0.1:{port}: {source}")]
    Bind {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Token(#[from] token::TokenError),
    #[error("cannot write the port file {}: {source}", path.display())]
    PortFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The outcome of [`App::open`].
pub enum Opened {
    /// Another Serena Tray already serves this port.
    AlreadyRunning { url: String },
    /// The state is open and the API's listener bound; nothing runs yet.
    Ready(App, TcpListener),
}

/// What a window host is asked to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    /// The dashboard, on whatever tab it has open.
    Dashboard,
    /// The dashboard on this instance's tab.
    Instance(u32),
    /// The dashboard's New session form.
    NewSession,
}

impl Show {
    /// The dashboard path (with its fragment) that shows it.
    pub fn path(self) -> String {
        match self {
            Show::Dashboard => "/".into(),
            Show::Instance(pid) => format!("/#{pid}"),
            Show::NewSession => "/#new-session".into(),
        }
    }
}

/// The handle on the running program. Clone it freely.
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

struct Inner {
    core: Core,
    sessions: Sessions,
    token: String,
    /// The token could not be written at the start (see [`load_token`]).
    token_unsaved: std::sync::atomic::AtomicBool,
    /// The API's port, as bound (the settings may say 0: any free port).
    port: u16,
    cancel: CancellationToken,
    tasks: TaskTracker,
    /// The runtime it started on: its tasks run there, whichever thread spawns them (a tray
    /// menu click runs on the GUI's main thread, outside any runtime).
    runtime: tokio::runtime::Handle,
    /// Requests to show the dashboard window, to whichever window host subscribed.
    show: broadcast::Sender<Show>,
}

/// The API token: the file's, or a new one. When it cannot be written (a full disk or a
/// read-only home at the first start) the new token is kept in memory and the failure told, so
/// that the program runs: the page signs in with it, and the background writes it once it can
/// (`App::save_token`); until then the command line cannot read it.
fn load_token(core: &Core) -> Result<String, AppError> {
    match token::load_or_create(&core.settings().serena_home) {
        Err(TokenError::Write { path, source }) => {
            core.wrote(Written::Token, &path, Err(&source));
            Ok(token::random_hex(32)?)
        }
        other => Ok(other?),
    }
}

impl App {
    /// Opens the program's state on its port (see the module docs).
    pub async fn open(settings: Settings) -> Result<Opened, AppError> {
        let port = settings.dashboard.port;
        let already = || Opened::AlreadyRunning {
            url: format!("http://127.0.0.1:{port}/"),
        };
        if port != 0 && verified_pid(port).await.is_some() {
            return Ok(already());
        }
        let listener = match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                // Lost a race with another starting Serena Tray? Then it answers in a moment.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
                while tokio::time::Instant::now() < deadline {
                    if verified_pid(port).await.is_some() {
                        return Ok(already());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                return Err(AppError::PortTaken { port });
            }
            Err(source) => return Err(AppError::Bind { port, source }),
        };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(port);
        let core = Core::new(settings);
        let token = load_token(&core)?;
        // The tray directory exists now: record this boot's frame if it is not recorded yet.
        crate::core::procs::boot::settle(&core.settings().serena_home);
        let token_unsaved = (core.write_failures().iter()).any(|f| f.file == Written::Token);
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let sessions = Sessions::load(core.clone(), tasks.clone(), cancel.clone());
        let app = App {
            inner: Arc::new(Inner {
                core,
                sessions,
                token_unsaved: token_unsaved.into(),
                token,
                port,
                cancel,
                tasks,
                runtime: tokio::runtime::Handle::current(),
                show: broadcast::channel(16).0,
            }),
        };
        app.record_where_it_runs()?;
        Ok(Opened::Ready(app, listener))
    }

    /// `daemon.json` (a hint for the CLI and `launch`) and `--port-file` (a promise to whoever
    /// passed it: failing to keep it is an error). The listener is bound: connections to the
    /// port are accepted from now on.
    fn record_where_it_runs(&self) -> Result<(), AppError> {
        let home = &self.settings().serena_home;
        if let Err(e) = running::write(home, self.port()) {
            tracing::warn!("cannot write {}: {e}", running::path(home).display());
        }
        if let Some(file) = &self.settings().port_file {
            running::write_port_file(file, self.port()).map_err(|source| AppError::PortFile {
                path: file.clone(),
                source,
            })?;
        }
        Ok(())
    }

    pub fn core(&self) -> &Core {
        &self.inner.core
    }

    pub fn sessions(&self) -> &Sessions {
        &self.inner.sessions
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &Settings {
        self.inner.core.settings()
    }

    pub fn token(&self) -> &str {
        &self.inner.token
    }

    /// Writes the token that could not be written at the start, if so: whether it is written
    /// now (or was). A token file that appeared meanwhile is kept and told; this program keeps
    /// answering to its own token until it restarts.
    pub fn save_token(&self) -> bool {
        use std::sync::atomic::Ordering;
        if !self.inner.token_unsaved.load(Ordering::SeqCst) {
            return true;
        }
        let home = &self.settings().serena_home;
        let saved = token::save(home, self.token());
        (self.core()).wrote_result(Written::Token, &token::token_path(home), &saved);
        let done = !matches!(saved, Err(TokenError::Write { .. }));
        self.inner.token_unsaved.store(!done, Ordering::SeqCst);
        done
    }

    /// The port of the API and dashboard.
    pub fn port(&self) -> u16 {
        self.inner.port
    }

    /// The port of the receiver for Serena's tray protocol.
    pub fn tray_protocol_port(&self) -> u16 {
        self.settings().tray.tray_protocol_port
    }

    /// The dashboard URL without the token.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.inner.port)
    }

    /// The dashboard URL that logs the browser in (sets the token cookie).
    pub fn login_url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/?token={}",
            self.inner.port, self.inner.token
        )
    }

    /// Opens the dashboard in the user's browser, signed in. The login URL (it holds the token)
    /// never goes on a command line, which other users can read: the browser is handed a
    /// private file (`tray/open.html`, 0600) that redirects to it, as Jupyter does.
    pub fn open_in_browser(&self) -> std::io::Result<()> {
        let page = self.settings().tray_dir().join("open.html");
        let login = self.login_url();
        let html = format!(
            "<!doctype html><meta charset=\"utf-8\"><title>Serena Tray</title>\
             <meta http-equiv=\"refresh\" content=\"0;url={login}\">\
             <p><a href=\"{login}\">Open the Serena Tray dashboard</a></p>\n"
        );
        crate::core::files::write_atomic(&page, html.as_bytes())?;
        open::that_detached(&page)
    }

    /// Asks the window host to show `what`; false when none listens (the headless daemon).
    pub fn show(&self, what: Show) -> bool {
        self.inner.show.send(what).is_ok()
    }

    /// The requests of [`App::show`], for the window host.
    pub fn window_requests(&self) -> broadcast::Receiver<Show> {
        self.inner.show.subscribe()
    }

    /// Runs `task` in the background, tracked: it is dropped when the app shuts down. Callable
    /// from any thread.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let cancel = self.inner.cancel.clone();
        self.track(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = task => {}
            }
        });
    }

    /// Runs `task` in the background, tracked but not dropped at shutdown: it must end by itself
    /// soon after [`App::cancelled`] resolves (a server finishing the requests in flight).
    pub(crate) fn track(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.inner.tasks.spawn_on(task, &self.inner.runtime);
    }

    /// Whether shutdown has begun.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// Resolves once shutdown has begun.
    pub async fn cancelled(&self) {
        self.inner.cancel.cancelled().await
    }

    /// Stops every background task and returns once they are all gone; the records of where
    /// it ran go with it.
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        running::remove_if_ours(&self.settings().serena_home);
        if let Some(file) = &self.settings().port_file {
            let _ = std::fs::remove_file(file);
        }
    }
}
