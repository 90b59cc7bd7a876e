//! `serena-tray launch [OPTIONS] -- CMD ARGS...`: what an MCP client's config runs in place of
//! the plain Serena command, so that Serena never outlives its client and the one global
//! dashboard runs.
//!
//! CMD starts at once with this process's stdin, stdout and stderr (inherited, not copied: the
//! MCP stream is CMD's own, byte for byte, and this program never writes to stdout). Then, in
//! the background and never waited for: if `web_dashboard_global` is on and Serena Tray does not
//! verifiably answer on its port, one launch (under a lock in the tray directory, with a look
//! again once it holds it) starts the tray app (or, without a display, the daemon) detached in
//! its own process group, its output to `tray/logs/app.log`; only the launch that started it
//! passes on `web_dashboard_global_open_on_launch`, so the dashboard opens once however many
//! clients start together. The dashboard learns of the instance by itself: it recognises this
//! process as the instance's parent and shows the launcher's own parent as the client.
//!
//! With `--on-demand` given (and no `--share`, or one that cannot share), CMD starts only when
//! a message needs it, with its stdin and stdout piped through this process (`on_demand`); it
//! is spawned and watched as below all the same. `--share` bridges to a shared Serena instead
//! (`share`); both answer the handshake from the cache in `handshake`.
//!
//! While CMD runs, the client (this process's parent) is watched (a pidfd on Linux; on Windows a
//! handle to it opened as `launch` starts, checked to belong to a process created before this
//! one; elsewhere a look at the parent PID every quarter second): when it goes, even while
//! someone else still holds the pipes, CMD's whole tree is reaped (SIGTERM, then SIGKILL;
//! Windows: `TerminateProcess`; each PID checked first) and this process exits. SIGINT, SIGTERM
//! and SIGHUP are passed on to CMD (Windows: the console's Ctrl+C, Ctrl+Break and close reach
//! CMD by themselves; this process waits for it) and its tree is reaped if it is not gone 10 s
//! later. The exit code is CMD's (128 + the signal when a signal ended it).
//!
//! Deliberately not here: idle shutdown (the running dashboard does it; it reads
//! `--idle-shutdown-minutes` from this process's command line) and, without `--on-demand` or
//! `--share`, anything of the MCP stream.

pub mod handshake;
mod on_demand;
pub mod share;

use crate::core::files;
use crate::core::model::ProcessId;
use crate::core::reaper::{self, Timings};
use crate::core::settings::{self, SerenaCommandError, Settings};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

/// How long the dashboard may take to answer once started (the other launches wait as long).
const DASHBOARD_START: Duration = Duration::from_secs(20);
/// How long CMD gets to end after a passed-on signal before its tree is reaped.
const AFTER_SIGNAL: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(
        "nothing to launch: put the command after `--`, e.g. `serena-tray launch -- serena \
         start-mcp-server`"
    )]
    NoCommand,
    #[error(transparent)]
    NotFound(#[from] SerenaCommandError),
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// What `launch` was asked to do.
pub struct Launch {
    /// `web_dashboard_global`: make sure the dashboard runs.
    pub dashboard: bool,
    /// `--share`: bridge to the shared session of the project instead (`share`).
    pub share: bool,
    /// With `share`: answer the handshake from the cache, start Serena on the first call.
    pub on_demand: bool,
    /// `--on-demand` given: a Serena of its own (without `share`, or when it cannot share)
    /// starts on demand too (`on_demand`); never by default.
    pub private_on_demand: bool,
    /// With `share`: the shared session sleeps after this long without a call (zero: never).
    pub sleep: Duration,
    /// CMD and its arguments.
    pub command: Vec<OsString>,
}

/// Runs CMD under watch (see the module docs); returns its exit code.
pub fn run(settings: Settings, launch: Launch) -> Result<ExitCode, LaunchError> {
    // Found (and on Windows pinned) before anything else, CMD included.
    let mut client = McpClient::of_this_process();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(LaunchError::Runtime)?;
    if launch.share {
        // Shared when it can be; else, said once, privately as below.
        let why = match share::plan(&launch.command) {
            Ok(target) => {
                let options = share::Options {
                    on_demand: launch.on_demand,
                    sleep: launch.sleep,
                };
                match rt.block_on(share::run(&settings, target, options, client)) {
                    Ok(code) => {
                        // Its stdin reader is a blocking read that nothing can cancel: do not wait
                        // for it (the client may be gone while another process holds the pipe).
                        rt.shutdown_background();
                        return Ok(code);
                    }
                    Err((why, returned)) => {
                        client = returned;
                        why.to_string()
                    }
                }
            }
            Err(why) => why.to_string(),
        };
        eprintln!("serena-tray: launch --share: {why}; running a Serena of its own");
    }
    let (program, args) = launch.command.split_first().ok_or(LaunchError::NoCommand)?;
    let program = settings::find_program(program)?;
    if launch.private_on_demand {
        match on_demand::plan(&settings, &launch.command, &program) {
            Ok(key) => {
                let code = rt.block_on(on_demand::run(settings, launch.dashboard, key, client));
                // As above: the stdin reader cannot be cancelled.
                rt.shutdown_background();
                return code;
            }
            Err(why) => eprintln!("serena-tray: launch --on-demand: {why}; starting it at once"),
        }
    }
    rt.block_on(async move {
        let (child, _job) = spawn(&program, args, false)?;
        if launch.dashboard {
            // Never waited for: CMD is already running.
            tokio::spawn(ensure_dashboard(settings));
        }
        Ok(supervise(child, client.gone(), Signals::new()).await)
    })
}

/// Starts CMD (`program`, resolved, and `args`) as its child: its stdio inherited, or with
/// `piped` its stdin and stdout piped (its stderr inherited either way); it dies with this
/// process. The job is to be held for as long as this process runs (Windows: it ends CMD's
/// tree with it).
fn spawn(
    program: &std::path::Path,
    args: &[OsString],
    piped: bool,
) -> Result<(tokio::process::Child, Option<platform::Job>), LaunchError> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).kill_on_drop(false);
    if piped {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    }
    die_with_this_process(&mut cmd);
    let child = cmd.spawn().map_err(|source| LaunchError::Spawn {
        program: program.display().to_string(),
        source,
    })?;
    let job = platform::Job::of(&child);
    Ok((child, job))
}

/// Even if this process is killed outright (SIGKILL, a crash), CMD does not outlive it: on
/// Linux CMD gets SIGKILL when this process dies (`PR_SET_PDEATHSIG`; its language server has
/// its own); on Windows a Job Object does the same for CMD's whole tree (`platform::Job`).
fn die_with_this_process(cmd: &mut tokio::process::Command) {
    #[cfg(target_os = "linux")]
    {
        let launcher = rustix::process::getpid();
        // SAFETY: the closure runs in the child between fork and exec and only makes two
        // async-signal-safe system calls (prctl, getppid); it allocates nothing.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(move || {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))?;
                // This process died before the line above: nothing will signal the child.
                if rustix::process::getppid() != Some(launcher) {
                    return Err(std::io::Error::other("serena-tray launch is gone"));
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

/// Waits for CMD, passing signals on; reaps its tree when the client goes (`client_gone`, the
/// client's [`McpClient::gone`]).
async fn supervise(
    mut child: tokio::process::Child,
    client_gone: impl std::future::Future<Output = ()>,
    mut signals: Signals,
) -> ExitCode {
    let Some(pid) = child.id() else {
        return ExitCode::FAILURE;
    };
    let id = tokio::task::spawn_blocking(move || crate::core::procs::identity(pid))
        .await
        .ok()
        .flatten()
        .unwrap_or(ProcessId { pid, start_time: 0 });
    tokio::pin!(client_gone);
    let mut reap_at: Option<tokio::time::Instant> = None;
    loop {
        let deadline = async {
            match reap_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            status = child.wait() => return exit_code(status.ok()),
            () = &mut client_gone => {
                tracing::info!("the MCP client is gone: ending {}", id.pid);
                break;
            }
            sig = signals.next() => {
                signals.pass_on(pid, sig);
                reap_at.get_or_insert(tokio::time::Instant::now() + AFTER_SIGNAL);
            }
            () = deadline => {
                tracing::warn!("{} did not end after the signal: reaping its tree", id.pid);
                break;
            }
        }
    }
    let timings = Timings::default();
    let left = reaper::kill_own_tree(id, &timings).await;
    if !left.is_empty() {
        tracing::warn!("processes of {} still alive: {left:?}", id.pid);
    }
    exit_code(child.wait().await.ok())
}

fn exit_code(status: Option<std::process::ExitStatus>) -> ExitCode {
    let Some(status) = status else {
        return ExitCode::FAILURE;
    };
    if let Some(code) = status.code() {
        return ExitCode::from(code.clamp(0, 255) as u8);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return ExitCode::from((128 + sig).clamp(0, 255) as u8);
        }
    }
    ExitCode::FAILURE
}

/// The MCP client: this process's parent, as found when `launch` starts. On Windows it is
/// pinned then too (a handle opened at once, to a process created before this one), so that
/// its exit is seen whatever its PID names later.
pub struct McpClient {
    #[cfg(not(windows))]
    pid: Option<u32>,
    #[cfg(windows)]
    pinned: Result<Option<crate::core::watch::Pinned>, crate::core::watch::ParentGone>,
}

impl McpClient {
    pub fn of_this_process() -> McpClient {
        #[cfg(unix)]
        {
            McpClient {
                pid: Some(std::os::unix::process::parent_id()),
            }
        }
        #[cfg(windows)]
        {
            McpClient {
                pinned: crate::core::watch::Pinned::parent_of_this_process(),
            }
        }
        #[cfg(not(any(unix, windows)))]
        {
            McpClient { pid: None }
        }
    }

    /// Its PID, if known (on Windows, only while it runs).
    pub fn pid(&self) -> Option<u32> {
        #[cfg(windows)]
        {
            self.pinned.as_ref().ok()?.as_ref().map(|p| p.pid())
        }
        #[cfg(not(windows))]
        {
            self.pid
        }
    }

    /// Resolves when the client exits (at once if it was gone already; never if there is
    /// none to watch).
    pub async fn gone(self) {
        #[cfg(unix)]
        {
            let Some(client) = self.pid.filter(|p| *p > 1) else {
                return std::future::pending().await;
            };
            // Already re-parented: the client went before we looked.
            let gone = || std::os::unix::process::parent_id() != client;
            let watched = tokio::task::spawn_blocking(move || crate::core::procs::identity(client))
                .await
                .ok()
                .flatten();
            if let Some(id) = watched.filter(|_| !gone()) {
                if crate::core::watch::exited(id).await {
                    return;
                }
            }
            while !gone() {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        #[cfg(windows)]
        {
            match self.pinned {
                Ok(Some(pinned)) => {
                    if !pinned.exited().await {
                        tracing::warn!("cannot wait for the MCP client's exit");
                        std::future::pending::<()>().await;
                    }
                }
                Ok(None) => std::future::pending().await,
                Err(crate::core::watch::ParentGone) => {}
            }
        }
        #[cfg(not(any(unix, windows)))]
        std::future::pending::<()>().await
    }
}

/// The signals passed on to CMD. On Windows the console's control events (Ctrl+C, Ctrl+Break,
/// the console closed): the console delivers them to CMD as well, so there is nothing to pass
/// on, but this process waits for CMD to end (and reaps its tree if it has not 10 s later)
/// instead of dying at once and taking CMD down with its Job Object.
struct Signals {
    #[cfg(unix)]
    streams: Vec<(rustix::process::Signal, tokio::signal::unix::Signal)>,
    #[cfg(windows)]
    events: Option<(
        tokio::signal::windows::CtrlC,
        tokio::signal::windows::CtrlBreak,
        tokio::signal::windows::CtrlClose,
    )>,
}

/// A signal received, to pass on.
#[cfg(unix)]
type Received = rustix::process::Signal;
#[cfg(not(unix))]
type Received = ();

impl Signals {
    fn new() -> Signals {
        #[cfg(unix)]
        {
            use rustix::process::Signal;
            use tokio::signal::unix::{signal, SignalKind};
            let kinds = [
                (Signal::INT, SignalKind::interrupt()),
                (Signal::TERM, SignalKind::terminate()),
                (Signal::HUP, SignalKind::hangup()),
            ];
            let streams = kinds
                .into_iter()
                .filter_map(|(sig, kind)| signal(kind).ok().map(|s| (sig, s)))
                .collect();
            Signals { streams }
        }
        #[cfg(windows)]
        {
            use tokio::signal::windows::{ctrl_break, ctrl_c, ctrl_close};
            let events = match (ctrl_c(), ctrl_break(), ctrl_close()) {
                (Ok(c), Ok(b), Ok(close)) => Some((c, b, close)),
                _ => None,
            };
            Signals { events }
        }
        #[cfg(not(any(unix, windows)))]
        {
            Signals {}
        }
    }

    /// The next signal received.
    async fn next(&mut self) -> Received {
        #[cfg(unix)]
        {
            if self.streams.is_empty() {
                return std::future::pending().await;
            }
            let waits = self.streams.iter_mut().map(|(sig, stream)| {
                let sig = *sig;
                Box::pin(async move {
                    stream.recv().await;
                    sig
                })
            });
            futures::future::select_all(waits).await.0
        }
        #[cfg(windows)]
        {
            let Some((c, b, close)) = &mut self.events else {
                return std::future::pending().await;
            };
            tokio::select! {
                _ = c.recv() => {}
                _ = b.recv() => {}
                _ = close.recv() => {}
            }
        }
        #[cfg(not(any(unix, windows)))]
        {
            std::future::pending().await
        }
    }

    /// The exit code of this process when `sig` ends it before CMD runs (128 + the signal).
    fn exit_code(sig: Received) -> ExitCode {
        #[cfg(unix)]
        {
            ExitCode::from((128 + sig.as_raw()).clamp(0, 255) as u8)
        }
        #[cfg(not(unix))]
        {
            let () = sig;
            ExitCode::FAILURE
        }
    }

    fn pass_on(&self, pid: u32, sig: Received) {
        #[cfg(unix)]
        {
            let Some(target) = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            else {
                return;
            };
            if let Err(e) = rustix::process::kill_process(target, sig) {
                tracing::warn!("cannot pass the signal on to {pid}: {e}");
            }
        }
        #[cfg(not(unix))]
        let _ = (pid, sig);
    }
}

/// Makes sure the dashboard runs on its port: if Serena Tray does not answer there, the first
/// launch to take the lock starts it; the others wait for the lock, look again and find it.
async fn ensure_dashboard(settings: Settings) {
    let port = settings.dashboard.port;
    if crate::core::running::verified_pid(port).await.is_some() {
        return;
    }
    let lock_path = settings.tray_dir().join("launch.lock");
    let tray_dir = settings.tray_dir();
    let lock = tokio::task::spawn_blocking(move || {
        files::private_dir(&tray_dir)?;
        let lock = files::open_append(&lock_path)?;
        lock.lock()?;
        Ok::<_, std::io::Error>(lock)
    })
    .await;
    let _lock = match lock {
        Ok(Ok(lock)) => lock,
        Ok(Err(e)) => {
            tracing::warn!("cannot take the launch lock: {e}; not starting the dashboard");
            return;
        }
        Err(_) => return,
    };
    // Held: whoever had it before has started the dashboard, or failed to.
    if crate::core::running::verified_pid(port).await.is_some() {
        return;
    }
    if let Err(e) = start_dashboard(&settings) {
        tracing::warn!("cannot start the dashboard: {e}");
        return;
    }
    let deadline = tokio::time::Instant::now() + DASHBOARD_START;
    while tokio::time::Instant::now() < deadline {
        if crate::core::running::verified_pid(port).await.is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::warn!(
        "the dashboard did not answer on port {port} within {} s (see {})",
        DASHBOARD_START.as_secs(),
        app_log(&settings).display()
    );
}

/// Where a dashboard that `launch` started writes its output.
fn app_log(settings: &Settings) -> PathBuf {
    settings.tray_dir().join("logs").join("app.log")
}

/// Starts `serena-tray --minimized` detached (the tray app, in the tray, where there is a display,
/// else the daemon): its own process group, no stdin, its output to `tray/logs/app.log`; it
/// outlives this MCP session.
fn start_dashboard(settings: &Settings) -> std::io::Result<()> {
    let log_path = app_log(settings);
    if let Some(dir) = log_path.parent() {
        files::private_dir(dir)?;
    }
    let log = files::open_append(&log_path)?;
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("--minimized")
        .arg("--serena-home")
        .arg(&settings.serena_home)
        .args(["--port", &settings.dashboard.port.to_string()])
        .arg(format!(
            "--web-dashboard-global-open-on-launch={}",
            settings.dashboard.open_on_launch
        ));
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    #[cfg(windows)]
    std::os::windows::process::CommandExt::creation_flags(&mut cmd, platform::DETACHED);
    let mut child = cmd.spawn()?;
    tracing::info!("started the dashboard, pid {}", child.id());
    // Reaped when it ends (it normally outlives this process, then init reaps it).
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(())
}

/// What `launch` needs of each platform beyond the standard library.
mod platform {
    /// Windows: no console of its own, detached from this one (a dashboard `launch` starts).
    #[cfg(windows)]
    pub const DETACHED: u32 = windows_sys::Win32::System::Threading::CREATE_NO_WINDOW
        | windows_sys::Win32::System::Threading::DETACHED_PROCESS;

    /// A Job Object holding CMD (and so everything it starts): when this process ends, however
    /// it ends, the job's last handle closes and the whole tree is terminated. Elsewhere
    /// nothing (Linux: `PR_SET_PDEATHSIG` does it for CMD).
    pub struct Job {
        #[cfg(windows)]
        handle: windows_sys::Win32::Foundation::HANDLE,
    }

    impl Job {
        #[cfg(not(windows))]
        pub fn of(_child: &tokio::process::Child) -> Option<Job> {
            None
        }

        #[cfg(windows)]
        #[allow(unsafe_code)]
        pub fn of(child: &tokio::process::Child) -> Option<Job> {
            use windows_sys::Win32::Foundation::CloseHandle;
            use windows_sys::Win32::System::JobObjects::{
                AssignProcessToJobObject, CreateJobObjectW, JobObjectExtendedLimitInformation,
                SetInformationJobObject, JOBOBJECT_EXTENDED_LIMIT_INFORMATION,
                JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
            };
            let process = child.raw_handle()?;
            // SAFETY: plain calls on a job handle created here and the child's own handle,
            // which lives as long as `child`; the job is closed on failure.
            unsafe {
                let handle = CreateJobObjectW(std::ptr::null(), std::ptr::null());
                if handle.is_null() {
                    return None;
                }
                let mut limits: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = std::mem::zeroed();
                limits.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
                let set = SetInformationJobObject(
                    handle,
                    JobObjectExtendedLimitInformation,
                    &limits as *const _ as *const std::ffi::c_void,
                    std::mem::size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
                );
                if set == 0 || AssignProcessToJobObject(handle, process as _) == 0 {
                    CloseHandle(handle);
                    tracing::warn!("cannot put the command in a Job Object");
                    return None;
                }
                Some(Job { handle })
            }
        }
    }

    #[cfg(windows)]
    impl Drop for Job {
        #[allow(unsafe_code)]
        fn drop(&mut self) {
            // SAFETY: the job handle is owned here.
            unsafe { windows_sys::Win32::Foundation::CloseHandle(self.handle) };
        }
    }
}
