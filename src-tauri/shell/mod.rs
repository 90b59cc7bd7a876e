//! The Tauri tray app: the only place that imports tauri, thin adapters over the core. It runs
//! the [`App`] (HTTP API, tray protocol, refresh loop) in-process on tauri's async runtime and
//! manages its handle; around it: one instance per session (`single_instance`), the tray icon
//! and its menu (`tray`, `menu`), the dashboard window (`window`), zombie notifications
//! (`notifications`) and launch at login (`autostart`). Each menu click is a line into the app
//! handle ([`act`]).
//!
//! [`run`] is the real app; [`run_app`] is its wiring, generic over the runtime so that a test
//! can drive it with `tauri::test::mock_builder()` (no display, no tray, no session bus).

mod autostart;
mod menu;
mod notifications;
mod single_instance;
mod tray;
mod window;

use crate::core::app::{App, AppError, Show, Started};
use crate::core::model::ProcessId;
use crate::core::settings::Settings;
use menu::Action;
use std::sync::Mutex;
use tauri::{AppHandle, Context, Manager, RunEvent, Runtime};

#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    #[error("the tray app could not start: {0}")]
    Tauri(#[from] tauri::Error),
    #[error(transparent)]
    App(#[from] AppError),
    #[error("the dashboard window: {0}")]
    Window(String),
    #[error("the dashboard window: {0}")]
    Io(#[from] std::io::Error),
}

pub use window::VERB as WINDOW_VERB;

/// The app's context (`tauri.conf.json`), for the tray app and the window process.
fn context() -> Context<tauri::Wry> {
    tauri::generate_context!()
}

use crate::cli::{AppHost, AppOutcome};

/// The GUI verbs of the app binary (`serena-tray-app`).
pub struct Host;

impl AppHost for Host {
    fn run_app(&self, settings: Settings, minimized: bool) -> Result<AppOutcome, String> {
        run(settings, minimized).map_err(|e| e.to_string())
    }

    fn run_window(&self) -> Result<(), String> {
        window::run_window_process().map_err(|e| e.to_string())
    }
}

/// What of the desktop the wiring uses: all of it in the real app, none of it in a test on
/// the mock runtime (no GTK for a tray, no session bus to notify on, no window process).
#[derive(Debug, Clone, Copy)]
pub struct Desktop {
    pub tray: bool,
    pub notifications: bool,
    pub window: bool,
    /// Open the window at start (the app started without `--minimized`); it opens anyway with
    /// `web_dashboard_global_open_on_launch`.
    pub window_at_start: bool,
}

/// The app, wired and running in the background, before its event loop runs.
pub struct Running<R: Runtime> {
    pub tauri: tauri::App<R>,
    pub app: App,
}

/// Keeps the watcher of the launch-at-login entries alive as long as the app.
struct AutostartWatch(#[allow(dead_code)] Mutex<Option<notify::RecommendedWatcher>>);

/// Whether this process turned GTK's OpenGL off for itself (see [`run`]); the window process
/// it starts gets the user's setting back.
pub(crate) static GL_OFF_HERE: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Runs the tray app until it is asked to quit.
pub fn run(settings: Settings, minimized: bool) -> Result<AppOutcome, ShellError> {
    // The tray process draws nothing itself (the tray host draws its icon and menu, and the
    // window is a process of its own), so GTK's OpenGL set-up at start is not needed here: on
    // X11 it loads Mesa, and with software rendering LLVM, about 30 MiB that would stay for the
    // app's whole life. Set before GTK starts and before this process starts any thread.
    #[cfg(target_os = "linux")]
    if std::env::var_os("GDK_GL").is_none() {
        std::env::set_var("GDK_GL", "disable");
        GL_OFF_HERE.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    let builder = tauri::Builder::default()
        // First: a second start hands over to the first and exits here, before it runs anything.
        .plugin(single_instance::plugin())
        .plugin(autostart::plugin());
    let desktop = Desktop {
        tray: true,
        notifications: true,
        window: true,
        window_at_start: !minimized,
    };
    let Some(Running { tauri, app }) = run_app(builder, context(), settings, desktop)? else {
        return Ok(AppOutcome::AlreadyRunning);
    };
    println!("{}", crate::cli::dashboard_line(&app));
    // SIGTERM (a logout, `kill`) and Ctrl+C end it as Quit does: every task stops cleanly.
    let handle = tauri.handle().clone();
    app.spawn(async move {
        crate::cli::wait_for_signal().await;
        handle.exit(0);
    });
    tauri.run(move |_handle, event| match event {
        // A tray app lives on with no window open.
        RunEvent::ExitRequested {
            api, code: None, ..
        } => api.prevent_exit(),
        RunEvent::Exit => tauri::async_runtime::block_on(app.shutdown()),
        _ => {}
    });
    Ok(AppOutcome::Quit)
}

/// Builds the app around `builder` and starts the core in it: the menu's actions, the window
/// requests, the tray (if `desktop.tray`) and its updates, notifications (if
/// `desktop.notifications` and the `notifications` setting), and the window at start (if
/// `desktop.window_at_start` or `web_dashboard_global_open_on_launch`). `None` when Serena Tray already serves the port.
pub fn run_app<R: Runtime>(
    builder: tauri::Builder<R>,
    context: Context<R>,
    settings: Settings,
    desktop: Desktop,
) -> Result<Option<Running<R>>, ShellError> {
    #[cfg_attr(not(target_os = "macos"), allow(unused_mut))]
    let mut tauri = builder
        .manage(tray::Nudge::default())
        .on_menu_event(|handle, event| act(handle, Action::parse(event.id().as_ref())))
        .build(context)?;
    // A menu-bar app: no Dock icon.
    #[cfg(target_os = "macos")]
    tauri.set_activation_policy(tauri::ActivationPolicy::Accessory);
    let app = match tauri::async_runtime::block_on(App::start(settings))? {
        Started::AlreadyRunning { .. } => return Ok(None),
        Started::Running(app) => app,
    };
    tauri.manage(app.clone());
    let handle = tauri.handle();
    if desktop.window {
        window::follow_requests(&app);
    }
    let model = tauri::async_runtime::block_on(tray::model(handle, &app));
    let built = menu::build(handle, &model)?;
    let icon = if desktop.tray {
        let nudge = handle.state::<tray::Nudge>().0.clone();
        let watcher = autostart::watch(move || nudge.notify_one());
        tauri.manage(AutostartWatch(Mutex::new(watcher)));
        tray::create(handle, &model, &built)
    } else {
        None
    };
    tray::follow(handle, &app, icon, (model, built));
    if desktop.notifications && app.settings().tray.notifications {
        notifications::follow(&app);
    }
    if desktop.window_at_start || app.settings().dashboard.open_on_launch {
        app.show(Show::Dashboard);
    }
    Ok(Some(Running { tauri, app }))
}

/// What a menu click does: one line into the app handle each.
fn act<R: Runtime>(handle: &AppHandle<R>, action: Option<Action>) {
    let (Some(action), Some(app)) = (action, handle.try_state::<App>()) else {
        return;
    };
    let app = app.inner().clone();
    match action {
        Action::OpenDashboard => show(&app, Show::Dashboard),
        Action::ShowInstance(id) => show(&app, Show::Instance(id.pid)),
        Action::NewSession => show(&app, Show::NewSession),
        Action::OpenInstanceDashboard(id) => open_instance_dashboard(&app, id),
        Action::KillZombies => kill_zombies(&app),
        Action::Kill(id) => kill(&app, id),
        Action::ToggleAutostart => toggle_autostart(handle),
        Action::Quit => handle.exit(0),
    }
}

fn show(app: &App, what: Show) {
    if !app.show(what) {
        tracing::warn!("no dashboard window to show");
    }
}

fn kill_zombies(app: &App) {
    let a = app.clone();
    app.spawn(async move {
        let sweep = a.core().kill_zombies().await;
        tracing::info!(
            "killed {} zombie(s), pruned {} record(s)",
            sweep.killed.len(),
            sweep.pruned.len()
        );
        for f in sweep.failed {
            tracing::warn!("could not kill zombie {}: {}", f.pid, f.error);
        }
    });
}

fn kill(app: &App, id: ProcessId) {
    let a = app.clone();
    app.spawn(async move {
        if let Err(e) = a.core().kill_process(id).await {
            tracing::warn!("could not kill {}: {e}", id.pid);
        }
    });
}

/// Opens the instance's own Serena dashboard in the browser.
fn open_instance_dashboard(app: &App, id: ProcessId) {
    let port = app
        .core()
        .instance(id.pid)
        .filter(|i| i.process_id() == id)
        .and_then(|i| i.port);
    let Some(port) = port else { return };
    let url = format!("http://127.0.0.1:{port}/dashboard/index.html");
    if let Err(e) = tauri_plugin_opener::open_url(&url, None::<&str>) {
        tracing::warn!("cannot open {url}: {e}");
    }
}

/// Flips launch at login from what the system says now (not from the check mark, which may be
/// stale), then shows the real state.
fn toggle_autostart<R: Runtime>(handle: &AppHandle<R>) {
    let on = autostart::state(handle).unwrap_or(false);
    if let Err(e) = autostart::set(handle, !on) {
        tracing::warn!("cannot change launch at login: {e}");
    }
    handle.state::<tray::Nudge>().0.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::procs::Scope;

    #[test]
    fn the_wiring_runs_on_the_mock_runtime_and_manages_the_running_app() {
        let home = tempfile::tempdir().expect("tempdir");
        let mut settings = Settings::defaults(home.path().join(".serena"));
        settings.scope = Scope::Marked(format!("shell-unit-test-{}", std::process::id()));
        settings.dashboard.port = 0;
        settings.tray.tray_protocol_port = 0;
        let Running { tauri, app } = run_app(
            tauri::test::mock_builder(),
            tauri::test::mock_context(tauri::test::noop_assets()),
            settings,
            Desktop {
                tray: false,
                notifications: false,
                window: false,
                window_at_start: false,
            },
        )
        .expect("the wiring")
        .expect("a free port");
        let managed = tauri.state::<App>();
        assert_eq!(managed.port(), app.port());
        assert_ne!(app.port(), 0, "the API listens");
        // Without a window process, nobody takes a window request.
        assert!(!app.show(Show::Dashboard));
        // A click on an id of no item, or before anything, does nothing (and does not panic).
        act(tauri.handle(), Action::parse("summary"));
        tauri::async_runtime::block_on(app.shutdown());
    }
}
