//! The running service, with or without a GUI around it: binds the HTTP API, answers Serena's
//! tray protocol, refreshes the core about once a second (at once when a watched process exits:
//! pidfd on Linux), records the timeline in `tray/events.jsonl`, and optionally kills zombies as
//! they appear. `start` returns a handle to stop it; a second start on a port where Serena Tray
//! already answers reports `AlreadyRunning` instead of starting twice.
//!
//! Deliberately not here: argument parsing and printing (the CLI) and windows or menus (the shell).

use crate::core::api::{self, ApiState};
use crate::core::config::Config;
use crate::core::engine::Core;
use crate::core::events::Event;
use crate::core::model::{now, State};
use crate::core::sessions::Sessions;
use crate::core::settings::Settings;
use crate::core::token;
use crate::core::tray_protocol;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch, Notify};
use tokio::task::JoinHandle;

/// How often the outside world is looked at when nothing wakes the loop earlier.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// How often a taken tray-protocol port is tried again.
const TRAY_PORT_RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
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
}

/// Command-line overrides of the settings files.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub port: Option<u16>,
    pub tray_protocol_port: Option<u16>,
}

/// The outcome of [`start`].
pub enum Started {
    /// Another Serena Tray already serves this port.
    AlreadyRunning {
        url: String,
    },
    Running(Running),
}

/// A running daemon.
pub struct Running {
    pub core: Core,
    pub sessions: Sessions,
    pub port: u16,
    pub token: String,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// The dashboard URL that logs the browser in (sets the token cookie).
    pub fn login_url(&self) -> String {
        format!("http://127.0.0.1:{}/?token={}", self.port, self.token)
    }

    /// Stops every task and waits for them.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Whether Serena Tray answers `/api/health` on this port.
pub async fn is_running(port: u16) -> bool {
    health(port).await.is_some()
}

/// The PID of the Serena Tray serving this port, if one does and that PID really owns the
/// listening socket. Before the CLI sends the token anywhere it checks this: a process of
/// another user squatting the port can claim any PID in its answer, but cannot make that PID's
/// sockets show up here (a user can only read their own processes' sockets).
pub async fn verified_pid(port: u16) -> Option<u32> {
    let pid = health(port).await?["pid"].as_u64()? as u32;
    let owns = tokio::task::spawn_blocking(move || crate::core::sockets::pid_owns_port(pid, port))
        .await
        .unwrap_or(false);
    owns.then_some(pid)
}

async fn health(port: u16) -> Option<serde_json::Value> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .ok()?;
    let resp = client
        .get(format!("http://127.0.0.1:{port}/api/health"))
        .send()
        .await
        .ok()?;
    resp.json::<serde_json::Value>()
        .await
        .ok()
        .filter(|v| v["app"] == "serena-tray")
}

/// The HTTP port: flag, else `web_dashboard_global_port`.
pub fn http_port(settings: &Settings, opts: &Options) -> u16 {
    opts.port.unwrap_or(settings.dashboard.port)
}

/// Starts the daemon (see the module docs).
pub async fn start(
    config: Config,
    settings: &Settings,
    opts: &Options,
) -> Result<Started, DaemonError> {
    crate::core::api::serve::raise_fd_limit();
    let port = http_port(settings, opts);
    if port != 0 && is_running(port).await {
        return Ok(Started::AlreadyRunning {
            url: format!("http://127.0.0.1:{port}/"),
        });
    }
    let listener = match TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            // Lost a race with another starting Serena Tray? Then it answers in a moment.
            tokio::time::sleep(Duration::from_millis(500)).await;
            if is_running(port).await {
                return Ok(Started::AlreadyRunning {
                    url: format!("http://127.0.0.1:{port}/"),
                });
            }
            return Err(DaemonError::PortTaken { port });
        }
        Err(source) => return Err(DaemonError::Bind { port, source }),
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(port);
    let token = token::load_or_create(&config.serena_home)?;
    let core = Core::new(config);
    let sessions = Sessions::load(
        core.clone(),
        settings
            .tray
            .resolve_serena_command_in(&core.config().serena_home),
        settings.tray.session_start_timeout,
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let wake = Arc::new(Notify::new());
    let mut tasks = Vec::new();
    // Subscribed here, before the first refresh runs, so that no event is missed.
    tasks.push(tokio::spawn(timeline(
        core.config().tray_dir().join("events.jsonl"),
        core.subscribe(),
        stopped(stop_rx.clone()),
    )));
    tasks.push(tokio::spawn(watch_exits(
        core.subscribe(),
        wake.clone(),
        stop_rx.clone(),
    )));
    if settings.tray.auto_kill_zombies {
        tasks.push(tokio::spawn(auto_kill(
            core.clone(),
            core.subscribe(),
            stopped(stop_rx.clone()),
        )));
    }
    tasks.push(tokio::spawn(refresh_loop(
        core.clone(),
        wake,
        stopped(stop_rx.clone()),
    )));
    let tray_port = opts
        .tray_protocol_port
        .unwrap_or(settings.tray.tray_protocol_port);
    tasks.push(tokio::spawn(tray_protocol_loop(
        core.clone(),
        tray_port,
        stop_rx.clone(),
    )));
    let state = ApiState {
        core: core.clone(),
        sessions: sessions.clone(),
        token: Arc::new(token.clone()),
        port,
    };
    let shutdown = stopped(stop_rx.clone());
    tasks.push(tokio::spawn(async move {
        if let Err(e) = api::serve(listener, state, shutdown).await {
            tracing::error!("the HTTP server stopped: {e}");
        }
    }));
    Ok(Started::Running(Running {
        core,
        sessions,
        port,
        token,
        stop: stop_tx,
        tasks,
    }))
}

async fn refresh_loop(core: Core, wake: Arc<Notify>, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        if let Err(e) = core.refresh().await {
            tracing::warn!("refresh failed: {e}");
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(REFRESH_INTERVAL) => {}
            _ = wake.notified() => {}
        }
    }
}

/// Runs `handle` for every core event from `rx` until `stop`; a subscriber that lagged skips
/// what it missed (the next refresh brings the list up to date anyway).
async fn on_events<F, Fut>(
    mut rx: broadcast::Receiver<Event>,
    stop: impl std::future::Future<Output = ()>,
    mut handle: F,
) where
    F: FnMut(Event) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    tokio::pin!(stop);
    loop {
        let event = tokio::select! {
            _ = &mut stop => return,
            e = rx.recv() => e,
        };
        match event {
            Ok(e) => handle(e).await,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Wakes the refresh loop the moment a known instance's process exits.
async fn watch_exits(
    rx: broadcast::Receiver<Event>,
    wake: Arc<Notify>,
    stop: watch::Receiver<bool>,
) {
    let mut until_stop = stop.clone();
    let stopped = async move {
        let _ = until_stop.wait_for(|s| *s).await;
    };
    on_events(rx, stopped, |event| {
        if let Event::InstanceAdded { instance } = event {
            if instance.state != State::Zombie {
                let wake = wake.clone();
                let mut stop = stop.clone();
                tokio::spawn(async move {
                    let id = instance.process_id();
                    tokio::select! {
                        gone = exited(id) => if gone { wake.notify_one() },
                        _ = stop.wait_for(|s| *s) => {}
                    }
                });
            }
        }
        async {}
    })
    .await
}

/// Waits for the process to exit; false where the platform cannot tell (the timer covers it)
/// or the PID no longer names that process.
#[cfg(target_os = "linux")]
async fn exited(id: crate::core::model::ProcessId) -> bool {
    use rustix::process::{pidfd_open, Pid, PidfdFlags};
    use tokio::io::unix::AsyncFd;
    let Some(pid) = i32::try_from(id.pid).ok().and_then(Pid::from_raw) else {
        return false;
    };
    let Ok(fd) = pidfd_open(pid, PidfdFlags::NONBLOCK) else {
        return false;
    };
    // Pinned: now make sure the pin holds the instance, not a process that reused its PID.
    let same = tokio::task::spawn_blocking(move || {
        let mut sys = sysinfo::System::new();
        let p = sysinfo::Pid::from_u32(id.pid);
        sys.refresh_processes(sysinfo::ProcessesToUpdate::Some(&[p]), true);
        sys.process(p)
            .is_some_and(|p| p.start_time() == id.start_time)
    })
    .await
    .unwrap_or(false);
    if !same {
        return false;
    }
    // SAFETY: `fd` is a valid pidfd that the AsyncFd owns from here on; nothing else closes or
    // replaces it while it is registered.
    #[allow(unsafe_code)]
    let registered = unsafe { AsyncFd::register(fd) };
    match registered {
        // A pidfd becomes readable when the process exits.
        Ok(afd) => afd.readable().await.is_ok(),
        Err(_) => false,
    }
}

#[cfg(not(target_os = "linux"))]
async fn exited(_id: crate::core::model::ProcessId) -> bool {
    false
}

/// Appends every event to `tray/events.jsonl` (the timeline), with a timestamp.
async fn timeline(
    path: std::path::PathBuf,
    rx: broadcast::Receiver<Event>,
    stop: impl std::future::Future<Output = ()>,
) {
    on_events(rx, stop, |event| {
        let mut v = serde_json::to_value(&event).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("at".into(), serde_json::json!(now()));
            // The timeline records what happened, not the whole instance each time.
            if let Some(inst) = o.remove("instance") {
                for k in ["pid", "state", "state_reason", "project_name", "port"] {
                    if let Some(x) = inst.get(k) {
                        o.entry(k).or_insert(x.clone());
                    }
                }
            }
        }
        let line = format!("{v}\n");
        let path = path.clone();
        async move {
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(dir) = path.parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .and_then(|mut f| f.write_all(line.as_bytes()))
            })
            .await;
        }
    })
    .await
}

/// With `auto_kill_zombies`, kills each instance as it turns into a zombie.
async fn auto_kill(
    core: Core,
    rx: broadcast::Receiver<Event>,
    stop: impl std::future::Future<Output = ()>,
) {
    on_events(rx, stop, |event| {
        // Exactly the instance that turned red: never whatever holds its PID now.
        let zombie = match event {
            Event::StateChanged {
                to: State::Zombie,
                instance,
                ..
            } => Some(instance),
            Event::InstanceAdded { instance } if instance.state == State::Zombie => Some(instance),
            _ => None,
        };
        if let Some(instance) = zombie {
            let core = core.clone();
            tokio::spawn(async move {
                let key = core.key_of(&instance);
                if let Err(e) = core.kill_process(key).await {
                    tracing::warn!("auto-kill of zombie {} failed: {e}", instance.pid);
                }
            });
        }
        async {}
    })
    .await
}

/// Serves Serena's tray protocol; if the port is taken (Serena's own tray manager runs), says so
/// once, works on from discovery, and takes the port over when it frees.
async fn tray_protocol_loop(core: Core, port: u16, stop: watch::Receiver<bool>) {
    let mut warned = false;
    loop {
        if *stop.borrow() {
            return;
        }
        match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(listener) => {
                if warned {
                    tracing::info!("took over the tray-protocol port {port}");
                }
                let mut rx = stop.clone();
                let shutdown = async move {
                    let _ = rx.wait_for(|s| *s).await;
                };
                if let Err(e) = tray_protocol::serve(listener, core.clone(), shutdown).await {
                    tracing::warn!("tray-protocol receiver stopped: {e}");
                }
                if *stop.borrow() {
                    return;
                }
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(
                        "tray-protocol port 127.0.0.1:{port} is taken ({e}); working from \
                         discovery and retrying every {} s",
                        TRAY_PORT_RETRY.as_secs()
                    );
                    warned = true;
                }
            }
        }
        let mut rx = stop.clone();
        tokio::select! {
            _ = rx.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(TRAY_PORT_RETRY) => {}
        }
    }
}
