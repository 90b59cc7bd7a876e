//! Desktop notifications (notify-rust) when instances become zombies: one per batch (the zombies
//! one refresh found, gathered for a moment), naming each by its tab label and saying what they
//! hold, never twice for the same instance (by PID and start time). Where the notification
//! server has actions: "Kill" kills exactly those instances (each checked again by the core),
//! and clicking the notification opens the dashboard on the first of them. A record whose
//! process is already gone (`dead`) holds nothing and is not announced. The `notifications`
//! setting turns them off; without a notification service it says so once and carries on.
//!
//! Deliberately not here: what a zombie is (the core) and killing (the core's `kill_process`).

use crate::core::app::App;
use crate::core::events::Event;
use crate::core::model::{Instance, ProcessId, State, ZombieReason};
use std::collections::HashSet;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// How long a batch stays open after its first zombie: the zombies of one refresh (or of a few
/// in a row) make one notification.
const BATCH: Duration = Duration::from_millis(300);

/// The instance an event reports as newly a zombie with a process to kill.
fn new_zombie(event: &Event) -> Option<&Instance> {
    let inst = match event {
        Event::StateChanged {
            to: State::Zombie,
            instance,
            ..
        } => instance,
        Event::InstanceAdded { instance } if instance.state == State::Zombie => instance,
        _ => return None,
    };
    (inst.state_reason != Some(ZombieReason::Dead)).then_some(inst)
}

/// Which zombies have been announced: each once, for as long as it is known.
#[derive(Default)]
pub struct Announced {
    seen: HashSet<ProcessId>,
}

impl Announced {
    /// The zombies of `events` not announced before (each once, in order); marks them.
    pub fn batch(&mut self, events: &[Event]) -> Vec<Instance> {
        let mut out = vec![];
        for event in events {
            if let Event::InstanceRemoved { pid, started_at } = event {
                self.seen.remove(&ProcessId::of_record(*pid, *started_at));
            } else if let Some(inst) = new_zombie(event) {
                if self.seen.insert(inst.process_id()) {
                    out.push(inst.clone());
                }
            }
        }
        out
    }
}

/// The notification's summary and body: `2 Serena instances became zombies, holding 1.6 GB`,
/// `4242 - webapp, 4243 - NO PROJECT`.
pub fn text(batch: &[Instance]) -> (String, String) {
    let memory: u64 = batch
        .iter()
        .filter_map(|i| i.cost.as_ref())
        .map(|c| c.memory_bytes)
        .sum();
    let holding = if memory > 0 {
        format!(", holding {}", super::menu::bytes(memory))
    } else {
        String::new()
    };
    let summary = match batch.len() {
        1 => format!("A Serena instance became a zombie{holding}"),
        n => format!("{n} Serena instances became zombies{holding}"),
    };
    let body = batch
        .iter()
        .map(Instance::label)
        .collect::<Vec<_>>()
        .join(", ");
    (summary, body)
}

/// The notification of an instance whose idle shutdown nears: `Serena 4242 - webapp is idle`,
/// `It has done nothing for 24 minutes and shuts down in 6 minutes unless it is used.`
pub fn idle_text(inst: &Instance, now: f64) -> (String, String) {
    let minutes = |secs: f64| {
        let m = (secs / 60.0).round().max(1.0) as u64;
        if m == 1 {
            "1 minute".to_string()
        } else {
            format!("{m} minutes")
        }
    };
    let idle = minutes(now - inst.idle_since.unwrap_or(now));
    let left = minutes(inst.idle_shutdown_at.unwrap_or(now) - now);
    (
        format!("Serena {} is idle", inst.label()),
        format!("It has done nothing for {idle} and shuts down in {left} unless it is used."),
    )
}

/// The notification of a file that cannot be written (once until it is written again, see
/// `core::writes`): `Serena Tray cannot write its files`, the path and the system's words.
pub fn write_text(path: &str, error: &str) -> (String, String) {
    (
        "Serena Tray cannot write its files".into(),
        format!(
            "{path}: {error}. The old file is kept and nothing else stops; the change is \
             written as soon as a write succeeds."
        ),
    )
}

/// Announces new zombies for as long as the app runs (and idle shutdowns that near, and files
/// that cannot be written).
pub fn follow(app: &App) {
    let mut rx = app.core().subscribe();
    let a = app.clone();
    app.spawn(async move {
        let mut announced = Announced::default();
        // The zombies there before this subscribed (found at start) make the first batch.
        let mut pending: Vec<Event> = a
            .core()
            .instances()
            .into_iter()
            .map(|instance| Event::InstanceAdded { instance })
            .collect();
        let Some(actions) = tokio::task::spawn_blocking(server_has_actions)
            .await
            .ok()
            .flatten()
        else {
            tracing::warn!(
                "no desktop notification service (org.freedesktop.Notifications): zombies are \
                 shown in the tray and the dashboard only"
            );
            return;
        };
        loop {
            let batch = announced.batch(&std::mem::take(&mut pending));
            if !batch.is_empty() {
                // A D-Bus call (and, with actions, a thread that waits for the answer).
                let a = a.clone();
                let _ = tokio::task::spawn_blocking(move || send(&a, batch, actions)).await;
            }
            let first = match rx.recv().await {
                Ok(e) => e,
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            };
            let told = match &first {
                Event::IdleWarning { instance } => {
                    Some(idle_text(instance, crate::core::model::now()))
                }
                Event::WriteFailed { path, error, .. } => Some(write_text(path, error)),
                _ => None,
            };
            if let Some(n) = told {
                let a = a.clone();
                let _ = tokio::task::spawn_blocking(move || show(&a, n, None)).await;
                continue;
            }
            if new_zombie(&first).is_none() {
                // Nothing to announce; a removal is forgotten at once.
                announced.batch(std::slice::from_ref(&first));
                continue;
            }
            pending.push(first);
            let close = tokio::time::sleep(BATCH);
            tokio::pin!(close);
            loop {
                tokio::select! {
                    _ = &mut close => break,
                    e = rx.recv() => match e {
                        Ok(e) => pending.push(e),
                        Err(RecvError::Lagged(_)) => continue,
                        Err(RecvError::Closed) => return,
                    },
                }
            }
        }
    });
}

/// Whether a notification service answers (`None` if none) and offers actions.
fn server_has_actions() -> Option<bool> {
    #[cfg(all(unix, not(target_os = "macos")))]
    {
        notify_rust::get_server_information().ok()?;
        let caps = notify_rust::get_capabilities().ok()?;
        Some(caps.iter().any(|c| c == "actions"))
    }
    #[cfg(not(all(unix, not(target_os = "macos"))))]
    {
        Some(false)
    }
}

/// The action keys of a zombie notification (freedesktop and Windows notifications).
#[cfg(not(target_os = "macos"))]
const KILL: &str = "kill";
#[cfg(not(target_os = "macos"))]
const OPEN: &str = "default";

/// Shows one notification for `batch`, and acts on its actions in a thread of its own (the
/// server answers when it is clicked or closed).
fn send(app: &App, batch: Vec<Instance>, actions: bool) {
    let text = text(&batch);
    show(app, text, actions.then_some(batch));
}

/// Shows a notification with `osascript` (Notification Center; no actions: a click opens
/// nothing). notify-rust's macOS backend needs the macOS SDK to build.
#[cfg(target_os = "macos")]
fn show(_app: &App, (summary, body): (String, String), _zombies: Option<Vec<Instance>>) {
    let quoted = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let script = format!(
        "display notification {} with title \"Serena Tray\" subtitle {}",
        quoted(&body),
        quoted(&summary)
    );
    match std::process::Command::new("osascript")
        .args(["-e", &script])
        .status()
    {
        Ok(s) if s.success() => tracing::info!("notified: {summary}: {body}"),
        Ok(s) => tracing::warn!("cannot show a notification: osascript {s}"),
        Err(e) => tracing::warn!("cannot show a notification: {e}"),
    }
}

/// Shows a notification; with `zombies`, its actions (Kill, open) act on them.
#[cfg(not(target_os = "macos"))]
fn show(app: &App, (summary, body): (String, String), zombies: Option<Vec<Instance>>) {
    let mut n = notify_rust::Notification::new();
    n.appname("Serena Tray")
        .summary(&summary)
        .body(&body)
        .icon("dialog-warning");
    if zombies.is_some() {
        n.action(OPEN, "Open dashboard").action(KILL, "Kill");
    }
    let shown = match n.show() {
        Ok(shown) => shown,
        Err(e) => {
            tracing::warn!("cannot show a notification: {e}");
            return;
        }
    };
    tracing::info!("notified: {summary}: {body}");
    #[cfg(all(unix, not(target_os = "macos")))]
    if let Some(batch) = zombies {
        let app = app.clone();
        std::thread::spawn(move || {
            shown.wait_for_action(|action| match action {
                KILL => {
                    let ids: Vec<ProcessId> = batch.iter().map(Instance::process_id).collect();
                    let a = app.clone();
                    app.spawn(async move {
                        for id in ids {
                            if let Err(e) = a.core().kill_process(id).await {
                                tracing::warn!("kill of zombie {} failed: {e}", id.pid);
                            }
                        }
                    });
                }
                OPEN => {
                    app.show(
                        batch
                            .first()
                            .map_or(crate::core::app::Show::Dashboard, |i| {
                                crate::core::app::Show::Instance(i.pid)
                            }),
                    );
                }
                _ => {}
            })
        });
    }
    #[cfg(windows)]
    let _ = (app, shown, zombies);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::{test_instance, Cost};

    fn zombie(pid: u32, project: Option<&str>, reason: ZombieReason) -> Instance {
        Instance {
            state: State::Zombie,
            state_reason: Some(reason),
            cost: Some(Cost {
                memory_bytes: 800 * 1024 * 1024,
                cpu_percent: 1.0,
                process_count: 2,
                processes: vec![],
            }),
            ..test_instance(pid, project)
        }
    }

    fn turned(i: &Instance) -> Event {
        Event::StateChanged {
            pid: i.pid,
            from: State::LiveWithProject,
            to: State::Zombie,
            reason: i.state_reason,
            instance: i.clone(),
        }
    }

    #[test]
    fn each_zombie_is_announced_once_and_a_dead_record_not_at_all() {
        let a = zombie(4242, Some("webapp"), ZombieReason::Orphaned);
        let b = zombie(4243, None, ZombieReason::Unresponsive);
        let dead = zombie(4244, None, ZombieReason::Dead);
        let mut announced = Announced::default();
        let batch = announced.batch(&[
            turned(&a),
            Event::InstanceAdded {
                instance: b.clone(),
            },
            turned(&dead),
            Event::InstanceUpdated {
                instance: a.clone(),
            },
        ]);
        assert_eq!(batch, [a.clone(), b.clone()]);
        assert_eq!(
            text(&batch),
            (
                "2 Serena instances became zombies, holding 1.6 GB".into(),
                "4242 - webapp, 4243 - NO PROJECT".into()
            )
        );
        // Seen again on later refreshes (it recovers and relapses, say): not again.
        assert!(announced.batch(&[turned(&a), turned(&b)]).is_empty());
        // Its PID reused by another process: that one is news.
        let mut again = a.clone();
        again.started_at = 2000.0;
        assert_eq!(announced.batch(&[turned(&again)]), [again]);
        // Gone and forgotten; its PID and start time could only come back as a new record.
        assert!(
            announced
                .batch(&[
                    Event::InstanceRemoved {
                        pid: b.pid,
                        started_at: b.started_at
                    },
                    turned(&b)
                ])
                .len()
                == 1
        );
    }

    #[test]
    fn an_idle_instance_is_told_how_long_it_has_been_idle_and_how_long_it_has_left() {
        let mut i = test_instance(4242, Some("webapp"));
        i.idle_since = Some(1000.0);
        i.idle_shutdown_at = Some(1000.0 + 1800.0);
        assert_eq!(
            idle_text(&i, 1000.0 + 1440.0),
            (
                "Serena 4242 - webapp is idle".into(),
                "It has done nothing for 24 minutes and shuts down in 6 minutes unless it is used."
                    .into()
            )
        );
        assert!(idle_text(&i, 1000.0 + 1790.0)
            .1
            .contains("in 1 minute unless"));
    }

    #[test]
    fn a_file_that_cannot_be_written_is_named_with_the_systems_words() {
        let (summary, body) = write_text(
            "/home/u/.serena/instances.json",
            "No space left on device (os error 28)",
        );
        assert_eq!(summary, "Serena Tray cannot write its files");
        assert!(
            body.starts_with(
                "/home/u/.serena/instances.json: No space left on device (os error 28). The old"
            ),
            "{body}"
        );
    }

    #[test]
    fn one_zombie_reads_in_the_singular_and_without_a_cost_says_no_size() {
        let mut a = zombie(7, Some("p"), ZombieReason::Orphaned);
        assert_eq!(
            text(std::slice::from_ref(&a)).0,
            "A Serena instance became a zombie, holding 800 MB"
        );
        a.cost = None;
        assert_eq!(text(&[a]).0, "A Serena instance became a zombie");
    }
}
