//! The background tasks of a running [`App`], each tracked by it and stopped with it: the refresh
//! loop (about once a second, at once when woken), an exit watcher per live instance (`watch` wakes
//! the loop the moment the process exits; cancelled when the instance leaves the model), the
//! timeline in `tray/events.jsonl`, auto-kill of zombies when configured, the receiver for Serena's
//! tray protocol (taking its port over when it frees), and the HTTP API.
//!
//! Deliberately not here: the decisions of a refresh (the core), killing (the reaper, through
//! the core), and what the HTTP routes do (`api`).

use crate::core::api;
use crate::core::app::{App, AppError, Opened};
use crate::core::events::{on_events, Event};
use crate::core::model::{now, ProcessId, State, ZombieReason};
use crate::core::settings::Settings;
use crate::core::timeline::{self, Timeline};
use crate::core::tray_protocol;
use crate::core::writes::Written;
use crate::core::Core;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// How often the outside world is looked at when nothing wakes the loop earlier.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// How often once nothing has happened for [`QUIET_ROUNDS`] rounds, no page follows and no idle
/// shutdown applies: exits and clients' exits wake the loop anyway (pidfds), so do
/// registrations, sessions and graces running out; what waits longer is a Serena nobody
/// announced, and memory figures.
pub const QUIET_INTERVAL: Duration = Duration::from_secs(3);
/// How many rounds without news make the loop quiet.
const QUIET_ROUNDS: u32 = 5;
/// How long after a grace ends its refresh runs (past it, whatever the clock's rounding).
const GRACE_SLACK: Duration = Duration::from_millis(5);

/// How often a taken tray-protocol port is tried again.
const TRAY_PORT_RETRY: Duration = Duration::from_secs(5);
/// How often a token that could not be written is tried again.
const WRITE_RETRY: Duration = Duration::from_secs(2);

/// The outcome of [`start`].
pub enum Started {
    /// Another Serena Tray already serves this port.
    AlreadyRunning {
        url: String,
    },
    Running(App),
}

/// Starts the program: opens its state ([`App::open`]) and starts every task on it.
pub async fn start(settings: Settings) -> Result<Started, AppError> {
    crate::core::http::serve::raise_fd_limit();
    match App::open(settings).await? {
        Opened::AlreadyRunning { url } => Ok(Started::AlreadyRunning { url }),
        Opened::Ready(app, listener) => {
            spawn_tasks(&app, listener);
            Ok(Started::Running(app))
        }
    }
}

/// Starts every background task of `app`; `listener` is the API's, already bound.
fn spawn_tasks(app: &App, listener: TcpListener) {
    let core = app.core();
    app.sessions().watch_recorded_attachments();
    app.sessions().reap_unrecorded();
    // Subscribed here, before the first refresh runs, so that no event is missed.
    let timeline = Arc::new(Timeline::new(
        core.settings().tray_dir().join(timeline::FILE_NAME),
    ));
    app.spawn(record_timeline(core.clone(), timeline, core.subscribe()));
    app.spawn(watch_exits(app.clone(), core.subscribe()));
    if app.settings().tray.auto_kill_zombies {
        app.spawn(auto_kill(app.clone(), core.subscribe()));
    }
    app.spawn(idle_shutdown(app.clone(), core.subscribe()));
    app.spawn(app.sessions().clone().follow(core.subscribe()));
    app.spawn(app.sessions().clone().keep_leases());
    app.spawn(app.sessions().clone().keep_store_written());
    app.spawn(keep_token_written(app.clone()));
    app.spawn(refresh_loop(app.clone()));
    app.track(tray_protocol_loop(app.clone()));
    let api_app = app.clone();
    app.track(async move {
        let stop = {
            let app = api_app.clone();
            async move { app.cancelled().await }
        };
        if let Err(e) = api::serve(listener, api_app, stop).await {
            tracing::error!("the HTTP server stopped: {e}");
        }
    });
}

async fn refresh_loop(app: App) {
    let core = app.core();
    let mut quiet: u32 = 0;
    loop {
        match core.refresh_round().await {
            Ok(true) => quiet = 0,
            Ok(false) => quiet = quiet.saturating_add(1),
            Err(e) => {
                quiet = 0;
                tracing::warn!("refresh failed: {e}");
            }
        }
        // Once a second (every few seconds when quiet), at once when woken, and the moment a
        // grace runs out or an idle shutdown is to be announced or made (so an orphan turns
        // red when its grace ends, not up to a second later).
        let every = if quiet >= QUIET_ROUNDS && !core.pages_open() {
            QUIET_INTERVAL
        } else {
            REFRESH_INTERVAL
        };
        let next = core
            .next_deadline()
            .map_or(every, |left| (left + GRACE_SLACK).min(every));
        tokio::select! {
            _ = tokio::time::sleep(next) => {}
            _ = core.woken() => {}
        }
    }
}

/// Writes the token that could not be written at the start (a full disk, a read-only home),
/// once it can be; at once done otherwise.
async fn keep_token_written(app: App) {
    loop {
        let this = app.clone();
        if tokio::task::spawn_blocking(move || this.save_token())
            .await
            .unwrap_or(true)
        {
            return;
        }
        tokio::time::sleep(WRITE_RETRY).await;
    }
}

/// Wakes the refresh loop the moment a known instance's process exits, or its MCP client does
/// (which orphans it: its grace starts then, not at the next timed refresh). Watchers per live
/// instance, cancelled when the instance leaves the model, so a watcher never outlives it; after
/// missed events the watchers are made to match the model again.
async fn watch_exits(app: App, mut rx: broadcast::Receiver<Event>) {
    app.core().exits_are_watched();
    let mut watchers: HashMap<ProcessId, CancellationToken> = HashMap::new();
    let arm = |watchers: &mut HashMap<ProcessId, CancellationToken>, id: ProcessId| {
        let stop = CancellationToken::new();
        if let Some(old) = watchers.insert(id, stop.clone()) {
            old.cancel();
        }
        let client = app.core().client_of(id);
        for watched in std::iter::once(id).chain(client) {
            let core = app.core().clone();
            let stop = stop.clone();
            app.spawn(async move {
                tokio::select! {
                    gone = crate::core::watch::exited(watched) => if gone { core.exit_seen() },
                    _ = stop.cancelled() => {}
                }
            });
        }
    };
    loop {
        match rx.recv().await {
            // Every instance whose process runs (a dead record has none to watch).
            Ok(Event::InstanceAdded { instance })
                if instance.state_reason != Some(ZombieReason::Dead) =>
            {
                arm(&mut watchers, instance.process_id());
            }
            Ok(Event::InstanceRemoved { pid, started_at }) => {
                if let Some(stop) = watchers.remove(&ProcessId::of_record(pid, started_at)) {
                    stop.cancel();
                }
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => {
                let live: HashSet<ProcessId> = app
                    .core()
                    .instances()
                    .iter()
                    .filter(|i| i.state_reason != Some(ZombieReason::Dead))
                    .map(|i| i.process_id())
                    .collect();
                watchers.retain(|id, stop| {
                    let keep = live.contains(id);
                    if !keep {
                        stop.cancel();
                    }
                    keep
                });
                for id in live {
                    if !watchers.contains_key(&id) {
                        arm(&mut watchers, id);
                    }
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Appends every event to the timeline, with a timestamp; not what an instance costs (it moves
/// all the time, and the page shows it live).
async fn record_timeline(core: Core, timeline: Arc<Timeline>, rx: broadcast::Receiver<Event>) {
    on_events(rx, |event| {
        let line = (!matches!(event, Event::CostChanged { .. })).then(|| timeline_line(&event));
        let (core, timeline) = (core.clone(), timeline.clone());
        async move {
            let Some(line) = line else { return };
            let path = timeline.path().to_path_buf();
            let written = tokio::task::spawn_blocking(move || timeline.append(&line)).await;
            // A line that cannot be written (a full disk) is lost: the timeline is a record,
            // not a queue; the page says the writes fail.
            if let Ok(written) = &written {
                let result = written.as_ref().map(|_| ());
                core.wrote(Written::Timeline, &path, result.map_err(|e| e as _));
            }
        }
    })
    .await
}

/// One timeline line: the event's JSON with `at`, and of an instance only what identifies it
/// and what changed (not the whole record each time).
fn timeline_line(event: &Event) -> String {
    let mut v = serde_json::to_value(event).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("at".into(), serde_json::json!(now()));
        if let Some(inst) = o.remove("instance") {
            for k in [
                "pid",
                "state",
                "state_reason",
                "project_name",
                "port",
                "source",
                "idle_since",
                "idle_shutdown_at",
            ] {
                if let Some(x) = inst.get(k) {
                    o.entry(k).or_insert(x.clone());
                }
            }
        }
    }
    v.to_string()
}

/// With `auto_kill_zombies`, kills each instance as it turns into a zombie.
async fn auto_kill(app: App, rx: broadcast::Receiver<Event>) {
    on_events(rx, |event| {
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
            let core = app.core().clone();
            app.spawn(async move {
                if let Err(e) = core.kill_process(instance.process_id()).await {
                    tracing::warn!("auto-kill of zombie {} failed: {e}", instance.pid);
                }
            });
        }
        async {}
    })
    .await
}

/// Shuts down (and reaps) each instance whose idle shutdown came (`idle_shutdown` events):
/// exactly that instance, checked again by the reaper.
async fn idle_shutdown(app: App, rx: broadcast::Receiver<Event>) {
    on_events(rx, |event| {
        if let Event::IdleShutdown { instance } = event {
            let core = app.core().clone();
            app.spawn(async move {
                tracing::info!(
                    "{} has been idle since {:?}: shutting it down",
                    instance.pid,
                    instance.idle_since
                );
                if let Err(e) = core.kill_process(instance.process_id()).await {
                    tracing::warn!("idle shutdown of {} failed: {e}", instance.pid);
                }
            });
        }
        async {}
    })
    .await
}

/// Serves Serena's tray protocol; if the port is taken (Serena's own tray manager runs), says so
/// once, works on from discovery, and takes the port over when it frees. Ends at shutdown, once
/// the requests in flight are answered.
async fn tray_protocol_loop(app: App) {
    let port = app.tray_protocol_port();
    let mut warned = false;
    while !app.is_cancelled() {
        match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(listener) => {
                if warned {
                    tracing::info!("took over the tray-protocol port {port}");
                }
                let shutdown = {
                    let app = app.clone();
                    async move { app.cancelled().await }
                };
                if let Err(e) = tray_protocol::serve(listener, app.core().clone(), shutdown).await {
                    tracing::warn!("tray-protocol receiver stopped: {e}");
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
        tokio::select! {
            _ = tokio::time::sleep(TRAY_PORT_RETRY) => {}
            _ = app.cancelled() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::{test_instance, Instance, ZombieReason};

    #[test]
    fn a_timeline_line_says_what_happened_without_the_whole_record() {
        let event = Event::StateChanged {
            pid: 42,
            from: State::LiveWithProject,
            to: State::Zombie,
            reason: Some(ZombieReason::Orphaned),
            instance: Instance {
                state: State::Zombie,
                state_reason: Some(ZombieReason::Orphaned),
                ..test_instance(42, Some("proj"))
            },
        };
        let v: serde_json::Value =
            serde_json::from_str(&timeline_line(&event)).expect("one JSON line");
        assert_eq!(v["type"], "state_changed");
        assert_eq!(v["to"], "zombie");
        assert_eq!(v["reason"], "orphaned");
        assert_eq!(v["pid"], 42);
        assert_eq!(v["project_name"], "proj");
        assert!(v["at"].as_f64().is_some_and(|t| t > 0.0));
        assert!(v.get("instance").is_none() && v.get("cmdline").is_none());
    }
}
