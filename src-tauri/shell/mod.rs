//! The tray app: thin adapters over the core. It runs the [`App`] (HTTP API, tray protocol,
//! refresh loop) on a tokio runtime beside the desktop's event loop (tao's, the one Tauri is
//! built on) on the main thread; around it: the tray icon and its menu (`tray`, `menu`, with
//! tray-icon and muda), the dashboard window (`window`: a process of its own, the only one with
//! Tauri and WebKit), zombie notifications (`notifications`) and launch at login
//! (`autostart`). Each menu click is a line into the app handle ([`act`]).
//!
//! One tray app per desktop: the port check of `background::start` (a second start finds Serena
//! Tray answering on its port, asks it through the API to show its window unless `--minimized`, and
//! exits 0 before anything of its own runs).
//!
//! [`run`] is the real app; [`wire`] is what runs off the event loop, which a test drives
//! without a display.

mod autostart;
mod menu;
mod notifications;
mod tray;
pub mod window;

use crate::core::app::{App, AppError, Show};
use crate::core::background::{self, Started};
use crate::core::model::ProcessId;
use crate::core::settings::Settings;
use auto_launch::AutoLaunch;
use menu::{Action, MenuModel};
use std::sync::{Arc, OnceLock};
use tao::event::Event;
use tao::event_loop::{ControlFlow, EventLoopBuilder, EventLoopProxy};
use tao::platform::run_return::EventLoopExtRunReturn;
use tokio::sync::Notify;

#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    #[error("the tray app could not start: no desktop to show a tray on ({why})")]
    NoDesktop { why: String },
    #[error("the tray app could not start its async runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    App(#[from] AppError),
}

/// The app's identifier (`tauri.conf.json`): the folder of its files under the user's cache.
pub const IDENTIFIER: &str = "dev.serenatray.SerenaTray";

use crate::cli::{AppHost, AppHostError, AppOutcome};

/// The GUI verbs of the app binary (`serena-tray-app`).
pub struct Host;

impl AppHost for Host {
    fn run_app(&self, settings: Settings, minimized: bool) -> Result<AppOutcome, AppHostError> {
        Ok(run(settings, minimized)?)
    }
}

/// What of the desktop the wiring uses: all of it in the real app, none of it in a test
/// (no display, no session bus to notify on, no window process).
#[derive(Debug, Clone, Copy)]
pub struct Desktop {
    pub notifications: bool,
    pub window: bool,
    /// Open the window at start (the app started without `--minimized`); it opens anyway with
    /// `web_dashboard_global_open_on_launch`.
    pub window_at_start: bool,
}

/// What a menu click acts on.
#[derive(Clone)]
pub struct Shell {
    pub app: App,
    /// Launch at login (`None` where it is not available).
    autostart: Option<AutoLaunch>,
    /// Asks the tray for an update outside the core's events (launch at login changed).
    nudge: Arc<Notify>,
}

/// What the event loop is told from elsewhere.
enum ToLoop {
    /// The tray is to show this.
    Tray(MenuModel),
    /// A menu item of this id was clicked.
    Click(String),
    /// The tray icon was clicked with the left button.
    IconClick,
    Quit,
}

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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ShellError::Runtime)?;
    // The app's tasks are spawned from this thread too (outside `block_on`).
    let _in_runtime = rt.enter();
    let desktop = Desktop {
        notifications: true,
        window: true,
        window_at_start: !minimized,
    };
    // The core first: a second start hands over before it touches the desktop. The tray's
    // models reach the event loop once there is one (its first model is made then).
    let to_loop: Arc<OnceLock<EventLoopProxy<ToLoop>>> = Arc::default();
    let to_tray = to_loop.clone();
    let Some(shell) = rt.block_on(wire(settings, desktop, move |m| {
        to_tray
            .get()
            .is_none_or(|p| p.send_event(ToLoop::Tray(m)).is_ok())
    }))?
    else {
        return Ok(AppOutcome::AlreadyRunning);
    };
    let mut event_loop = match event_loop() {
        Ok(event_loop) => event_loop,
        Err(e) => {
            rt.block_on(shell.app.shutdown());
            return Err(e);
        }
    };
    let proxy = event_loop.create_proxy();
    let _ = to_loop.set(proxy.clone());
    println!("{}", crate::cli::dashboard_line(&shell.app));
    let nudge = shell.nudge.clone();
    let _autostart_watch = autostart::watch(move || nudge.notify_one());
    forward_to_loop(&shell, proxy);
    // The tray's first model now that the loop can take it (one made before was dropped).
    shell.nudge.notify_one();
    run_loop(&mut event_loop, shell.clone());
    rt.block_on(shell.app.shutdown());
    Ok(AppOutcome::Quit)
}

/// The tray's event loop; tao panics where the desktop cannot be reached: a clear error
/// instead. On macOS, a menu-bar app: no Dock icon.
fn event_loop() -> Result<tao::event_loop::EventLoop<ToLoop>, ShellError> {
    let built = std::panic::catch_unwind(|| EventLoopBuilder::<ToLoop>::with_user_event().build());
    #[cfg_attr(not(target_os = "macos"), allow(unused_mut))]
    let mut event_loop = built.map_err(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        ShellError::NoDesktop { why }
    })?;
    #[cfg(target_os = "macos")]
    {
        use tao::platform::macos::EventLoopExtMacOS;
        event_loop.set_activation_policy(tao::platform::macos::ActivationPolicy::Accessory);
    }
    Ok(event_loop)
}

/// What the event loop is told from elsewhere: menu clicks, a left click on the icon, and a
/// SIGTERM (a logout, `kill`) or Ctrl+C, which end it as Quit does (every task stops cleanly).
fn forward_to_loop(shell: &Shell, proxy: EventLoopProxy<ToLoop>) {
    let p = proxy.clone();
    muda::MenuEvent::set_event_handler(Some(move |e: muda::MenuEvent| {
        let _ = p.send_event(ToLoop::Click(e.id.0));
    }));
    let p = proxy.clone();
    tray_icon::TrayIconEvent::set_event_handler(Some(move |e| {
        if let tray_icon::TrayIconEvent::Click {
            button: tray_icon::MouseButton::Left,
            button_state: tray_icon::MouseButtonState::Up,
            ..
        } = e
        {
            let _ = p.send_event(ToLoop::IconClick);
        }
    }));
    shell.app.spawn(async move {
        crate::cli::wait_for_signal().await;
        let _ = proxy.send_event(ToLoop::Quit);
    });
}

/// Runs the event loop until Quit: shows the tray's models (the icon is made inside the
/// running loop, as macOS needs its application running) and acts on clicks.
fn run_loop(event_loop: &mut tao::event_loop::EventLoop<ToLoop>, sh: Shell) {
    let mut shown: Option<tray::Shown> = None;
    let mut no_menu = false;
    event_loop.run_return(move |event, _, flow| {
        *flow = ControlFlow::Wait;
        match event {
            Event::UserEvent(ToLoop::Tray(next)) => match shown.as_mut() {
                Some(s) => {
                    if let Err(e) = s.update(next) {
                        tracing::warn!("cannot update the tray: {e}");
                    }
                }
                None if !no_menu => match tray::Shown::create(next, true) {
                    Ok(s) => shown = Some(s),
                    Err(e) => {
                        no_menu = true;
                        tracing::warn!("no tray menu: {e}");
                    }
                },
                None => {}
            },
            Event::UserEvent(ToLoop::Click(id)) => {
                let quit = act(&sh, Action::parse(&id));
                *flow = if quit {
                    ControlFlow::Exit
                } else {
                    ControlFlow::Wait
                };
            }
            Event::UserEvent(ToLoop::IconClick) => show(&sh.app, Show::Dashboard),
            Event::UserEvent(ToLoop::Quit) => *flow = ControlFlow::Exit,
            _ => {}
        }
    });
}

/// Starts the core and what follows it off the event loop: the window requests (if
/// `desktop.window`), the tray's models (to `tray`), notifications (if `desktop.notifications`
/// and the `notifications` setting), and the window at start (if `desktop.window_at_start` or
/// `web_dashboard_global_open_on_launch`). `None` when Serena Tray already serves the port.
pub async fn wire(
    settings: Settings,
    desktop: Desktop,
    tray: impl Fn(MenuModel) -> bool + Send + Sync + 'static,
) -> Result<Option<Shell>, ShellError> {
    let app = match background::start(settings).await? {
        Started::AlreadyRunning { .. } => return Ok(None),
        Started::Running(app) => app,
    };
    let shell = Shell {
        app: app.clone(),
        autostart: autostart::entry(),
        nudge: Arc::default(),
    };
    if desktop.window {
        window::follow_requests(&app);
    }
    let entry = shell.autostart.clone();
    tray::follow(
        &app,
        move || autostart::state(entry.as_ref()),
        shell.nudge.clone(),
        tray,
    );
    if desktop.notifications && app.settings().tray.notifications {
        notifications::follow(&app);
    }
    if desktop.window_at_start || app.settings().dashboard.open_on_launch {
        app.show(Show::Dashboard);
    }
    Ok(Some(shell))
}

/// What a menu click does: one line into the app handle each. True for Quit.
fn act(shell: &Shell, action: Option<Action>) -> bool {
    let Some(action) = action else { return false };
    let app = &shell.app;
    match action {
        Action::OpenDashboard => show(app, Show::Dashboard),
        Action::ShowInstance(id) => show(app, Show::Instance(id.pid)),
        Action::NewSession => show(app, Show::NewSession),
        Action::OpenInstanceDashboard(id) => open_instance_dashboard(app, id),
        Action::KillZombies => kill_zombies(app),
        Action::Kill(id) => kill(app, id),
        Action::ToggleAutostart => toggle_autostart(shell),
        Action::Quit => return true,
    }
    false
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
    if let Err(e) = open::that_detached(&url) {
        tracing::warn!("cannot open {url}: {e}");
    }
}

/// Flips launch at login from what the system says now (not from the check mark, which may be
/// stale), then shows the real state.
fn toggle_autostart(shell: &Shell) {
    let entry = shell.autostart.as_ref();
    let on = autostart::state(entry).unwrap_or(false);
    if let Err(e) = autostart::set(entry, !on) {
        tracing::warn!("cannot change launch at login: {e}");
    }
    shell.nudge.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::procs::Scope;

    #[test]
    fn the_wiring_starts_the_app_and_hands_the_tray_its_models() {
        let home = tempfile::tempdir().expect("tempdir");
        let mut settings = Settings::defaults(home.path().join(".serena"));
        settings.scope = Scope::Marked(format!("shell-unit-test-{}", std::process::id()));
        settings.dashboard.port = 0;
        settings.tray.tray_protocol_port = 0;
        let rt = tokio::runtime::Runtime::new().expect("a runtime");
        let (tx, models) = std::sync::mpsc::channel();
        let desktop = Desktop {
            notifications: false,
            window: false,
            window_at_start: false,
        };
        let shell = rt
            .block_on(wire(settings, desktop, move |m| tx.send(m).is_ok()))
            .expect("the wiring")
            .expect("a free port");
        assert_ne!(shell.app.port(), 0, "the API listens");
        // The first model comes without any event.
        let first = models
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("a first model for the tray");
        assert_eq!(first.summary, "No Serena running");
        // Without a window process, nobody takes a window request.
        assert!(!shell.app.show(Show::Dashboard));
        // A click on an id of no item does nothing; Quit is the one that ends the loop.
        assert!(!act(&shell, Action::parse("summary")));
        assert!(act(&shell, Action::parse(menu::QUIT)));
        rt.block_on(shell.app.shutdown());
    }
}
