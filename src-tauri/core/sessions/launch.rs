//! Starting one session's Serena: its command line, its log, its own process group, and the wait
//! until the core sees it live (MCP and dashboard answering); on any failure, whatever it started
//! is reaped before the error returns. Serenas start one at a time (see `Sessions::starting`).
//!
//! Deliberately not here: which session a request gets (`decide`), the store, and the request's
//! bookkeeping around a launch (`Sessions::request`).

use super::{SessionError, Sessions};
use crate::core::events::Event;
use crate::core::files;
use crate::core::model::{now, Instance, ProcessId, Session, Transport};
use crate::core::reaper;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::sync::{broadcast, MutexGuard};

/// Serena's exit code when its MCP port was taken (it picked it too late).
const EXIT_PORT_TAKEN: i32 = 3;
/// How often a launch nudges the refresh loop while it waits for its Serena.
const LAUNCH_NUDGE: Duration = Duration::from_millis(40);
/// How many fresh MCP ports a launch tries when the picked one is lost to a race.
const PORT_ATTEMPTS: usize = 3;

/// What one launch starts: the Serena command and its options, the session ID, the log.
pub(super) struct LaunchPlan {
    pub command: Vec<String>,
    pub session_id: String,
    pub project: String,
    pub context: Option<String>,
    pub modes: Vec<String>,
    pub transport: Transport,
    pub log: PathBuf,
    /// Its [`unrecorded::VAR`](super::unrecorded::VAR) value: found again after a restart if
    /// this program stops before the session is recorded.
    pub marker: String,
}

/// Why a launch did not give a live Serena.
#[derive(Debug, thiserror::Error)]
pub enum LaunchFailure {
    #[error("no free port: {0}")]
    NoFreePort(#[source] std::io::Error),
    #[error("the Serena command is empty")]
    EmptyCommand,
    #[error("cannot open {}: {source}", path.display())]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run {program}: {source}")]
    Run {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the process vanished at once")]
    Vanished,
    #[error("it exited with {0}")]
    Exited(ExitStatus),
    #[error("cannot wait for it: {0}")]
    Wait(#[source] std::io::Error),
    #[error("Serena Tray is shutting down")]
    ShuttingDown,
    #[error("the core stopped")]
    CoreStopped,
    #[error("the MCP port was taken {PORT_ATTEMPTS} times in a row")]
    PortTakenAgain,
}

/// A launch that did not succeed: lost its port to a race (tried again), or failed.
pub(super) enum Launch {
    PortTaken,
    Failed(SessionError),
}

impl LaunchPlan {
    /// The failure, with the log's last lines.
    fn failed(&self, why: LaunchFailure) -> SessionError {
        SessionError::LaunchFailed {
            why,
            log: self.log.display().to_string(),
            tail: tail(&self.log),
        }
    }

    /// Serena's command for this plan with its MCP server on `port`: output to the log, no
    /// stdin, its own process group (and no console window on Windows).
    fn command(&self, port: u16) -> Result<Command, SessionError> {
        let (program, prefix) = self
            .command
            .split_first()
            .ok_or_else(|| self.failed(LaunchFailure::EmptyCommand))?;
        let mut cmd = Command::new(program);
        cmd.args(prefix)
            .arg("start-mcp-server")
            .args(["--project", &self.project])
            .args(["--transport", self.transport.as_str()])
            .args(["--host", "127.0.0.1"])
            .args(["--port", &port.to_string()])
            .args(["--open-web-dashboard", "False"]);
        if let Some(c) = &self.context {
            cmd.args(["--context", c]);
        }
        for m in &self.modes {
            cmd.args(["--mode", m]);
        }
        let log_failed = |source| {
            self.failed(LaunchFailure::Log {
                path: self.log.clone(),
                source,
            })
        };
        let out = files::open_append(&self.log).map_err(log_failed)?;
        let err = out.try_clone().map_err(log_failed)?;
        cmd.env(super::unrecorded::VAR, &self.marker)
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(false);
        #[cfg(unix)]
        cmd.process_group(0);
        // No console window flashes up for it.
        #[cfg(windows)]
        cmd.creation_flags(windows_sys::Win32::System::Threading::CREATE_NO_WINDOW);
        Ok(cmd)
    }

    /// The session of a launch whose Serena is `ready` (MCP on `port`).
    fn session(&self, ready: &Instance, port: u16) -> Session {
        let path = self.transport.endpoint_path().unwrap_or("/mcp");
        let id = ready.process_id();
        Session {
            session_id: self.session_id.clone(),
            host: "127.0.0.1".into(),
            port,
            url: format!("http://127.0.0.1:{port}{path}"),
            pid: id.pid,
            start_time: id.start_time,
            dashboard_url: ready
                .port
                .map(|d| format!("http://127.0.0.1:{d}/dashboard/index.html")),
            dashboard_port: ready.port,
            project_path: self.project.clone(),
            context: self.context.clone(),
            modes: self.modes.clone(),
            transport: self.transport,
            created_at: now(),
            log_path: self.log.display().to_string(),
            ended_at: None,
            end_reason: None,
            lease_seconds: None,
            expires_at: None,
            idle_shutdown_minutes: None,
            shared: false,
            attached: Vec::new(),
            linger_until: None,
            on_demand: false,
            sleep_minutes: None,
            last_used: None,
            asleep_since: None,
            asleep_reason: None,
            given_back_bytes: None,
        }
    }
}

/// A launched process being waited for.
struct Started<'a> {
    child: Child,
    /// The launched process itself (a wrapper such as `uvx`, or Serena).
    id: ProcessId,
    /// The Serena seen under it, recorded: a wrapper may exit before the launch ends, and its
    /// tree cannot be found from it any more.
    serena: Option<ProcessId>,
    /// The one-at-a-time lock, held until its dashboard port is known.
    starting: Option<MutexGuard<'a, ()>>,
    events: broadcast::Receiver<Event>,
    port: u16,
}

impl Sessions {
    /// Launches on a fresh port when the picked one is lost to a race.
    pub(super) async fn launch_with_retries(
        &self,
        plan: &LaunchPlan,
    ) -> Result<Session, SessionError> {
        for _ in 0..PORT_ATTEMPTS {
            match self.launch(plan).await {
                Ok(session) => return Ok(session),
                Err(Launch::PortTaken) => continue,
                Err(Launch::Failed(e)) => return Err(e),
            }
        }
        Err(plan.failed(LaunchFailure::PortTakenAgain))
    }

    /// Starts Serena for `plan` and waits until it is live; reaps what it started otherwise.
    async fn launch(&self, plan: &LaunchPlan) -> Result<Session, Launch> {
        // Before the MCP port is picked: a port picked and then waited on may be taken.
        let starting = Some(self.inner.starting.lock().await);
        let port =
            free_port().map_err(|e| Launch::Failed(plan.failed(LaunchFailure::NoFreePort(e))))?;
        let mut cmd = plan.command(port).map_err(Launch::Failed)?;
        // Subscribed before Serena starts, so that no step of its start-up is missed.
        let events = self.inner.core.subscribe();
        let child = cmd.spawn().map_err(|source| {
            let program = plan.command.first().cloned().unwrap_or_default();
            Launch::Failed(plan.failed(LaunchFailure::Run { program, source }))
        })?;
        let pid = child
            .id()
            .ok_or_else(|| Launch::Failed(plan.failed(LaunchFailure::Vanished)))?;
        let id = tokio::task::spawn_blocking(move || crate::core::procs::identity(pid))
            .await
            .ok()
            .flatten()
            .unwrap_or(ProcessId { pid, start_time: 0 });
        let core = &self.inner.core;
        core.mark_session_starting(id, &plan.session_id);
        core.publish(Event::SessionLaunching {
            session_id: plan.session_id.clone(),
            pid,
            project_path: plan.project.clone(),
        });
        let mut started = Started {
            child,
            id,
            serena: None,
            starting,
            events,
            port,
        };
        let ready = match self.wait_until_live(plan, &mut started).await {
            Ok(ready) => ready,
            Err(why) => return Err(self.give_up(why, started).await),
        };
        let Started { mut child, .. } = started;
        // Reap the child when it exits, so it never lingers as a defunct process (at shutdown
        // it is left running: sessions outlive this program and are re-adopted).
        let cancel = self.inner.cancel.clone();
        self.inner.tasks.spawn(async move {
            tokio::select! {
                _ = child.wait() => {}
                _ = cancel.cancelled() => {}
            }
        });
        let serena = ready.process_id();
        if serena != id {
            core.unmark_session(id);
        }
        core.mark_session_ready(serena, &plan.session_id);
        Ok(plan.session(&ready, port))
    }

    /// Waits until the instance the launch started (the child itself, or, behind a wrapper
    /// such as `uvx`, one under it) is live: the core shows it `starting` until its dashboard
    /// answers and its MCP port listens. Every event is a reason to look again; the refresh loop
    /// is nudged meanwhile. The one-at-a-time lock goes as soon as its dashboard port is known.
    async fn wait_until_live(
        &self,
        plan: &LaunchPlan,
        started: &mut Started<'_>,
    ) -> Result<Instance, Launch> {
        let core = &self.inner.core;
        let deadline = tokio::time::Instant::now() + self.inner.ready_timeout;
        loop {
            let launched = core.launched(started.id);
            if let Some(i) = &launched {
                started.serena = Some(i.process_id());
                if i.port.is_some() {
                    // Its dashboard listens: the next Serena cannot pick the same port.
                    started.starting.take();
                }
                if i.state.is_live() {
                    return Ok(i.clone());
                }
            }
            let failed = |why| Launch::Failed(plan.failed(why));
            tokio::select! {
                status = started.child.wait() => return Err(match status {
                    Ok(s) if s.code() == Some(EXIT_PORT_TAKEN) => Launch::PortTaken,
                    Ok(s) => failed(LaunchFailure::Exited(s)),
                    Err(e) => failed(LaunchFailure::Wait(e)),
                }),
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(Launch::Failed(SessionError::Timeout {
                        secs: self.inner.ready_timeout.as_secs(),
                        port: started.port,
                        dashboard: launched
                            .and_then(|i| i.port)
                            .map(|d| d.to_string())
                            .unwrap_or_else(|| "not found".into()),
                        log: plan.log.display().to_string(),
                        tail: tail(&plan.log),
                    }));
                }
                _ = self.inner.cancel.cancelled() => {
                    return Err(failed(LaunchFailure::ShuttingDown));
                }
                event = started.events.recv() => {
                    if let Err(broadcast::error::RecvError::Closed) = event {
                        return Err(failed(LaunchFailure::CoreStopped));
                    }
                }
                _ = tokio::time::sleep(LAUNCH_NUDGE) => core.wake(),
            }
        }
    }

    /// A launch that failed: forgets its mark and reaps what it started (a wrapper's child may
    /// outlive the wrapper). After a timeout, its child is given a few seconds to be waited for.
    async fn give_up(&self, why: Launch, mut started: Started<'_>) -> Launch {
        self.inner.core.unmark_session(started.id);
        let mut survivors = reaper::kill_own_tree(started.id, &Default::default()).await;
        if let Some(serena) = started.serena.filter(|s| *s != started.id) {
            survivors.extend(reaper::kill_own_tree(serena, &Default::default()).await);
        }
        if !survivors.is_empty() {
            tracing::warn!("a failed launch left {survivors:?} running");
        }
        if matches!(why, Launch::Failed(SessionError::Timeout { .. })) {
            let _ = tokio::time::timeout(Duration::from_secs(5), started.child.wait()).await;
        }
        why
    }
}

fn free_port() -> std::io::Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr().map(|a| a.port()))
}

/// The last lines of a log file (for error messages).
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
