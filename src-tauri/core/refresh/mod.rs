//! The refresh: the one place that looks at the outside world. It scans processes and their
//! sockets and reads the registry (`scan`, blocking, off the async threads), decides which
//! instances exist and which dashboards to ask (`plan`), probes every dashboard concurrently
//! (short timeouts), folds the answers in and classifies (`apply`), publishes [`Event`]s for what
//! changed and writes what it learnt back to the registry. `plan` and `apply` are pure
//! functions over the model (`tracked`) and a scan, so every decision is unit-tested (`tests`)
//! with scans built in the test; this file only runs them in order, with the I/O between.
//!
//! Deliberately not here: the timer that calls `refresh` (the app's refresh loop, `background`), the states'
//! rules themselves (`classify`), and killing.

mod apply;
mod plan;
mod scan;
#[cfg(test)]
mod tests;
mod tracked;

pub(crate) use scan::Scanner;
pub(crate) use tracked::{Model, Tracked};

use super::engine::{lock, Core, CoreError, Result};
use super::events::Event;
use super::model::{now, Instance};
use super::probe::Prober;
use super::registry::write_entries;
use apply::{apply, Decisions};
use futures::future::join_all;
use plan::{plan, ProbeJob, ProbeResult};
use std::sync::atomic::Ordering;

impl Core {
    /// One look at the world: see the module docs. Concurrent calls are serialised.
    pub async fn refresh(&self) -> Result<Vec<Instance>> {
        self.refresh_round().await?;
        Ok(self.instances())
    }

    /// [`Core::refresh`] without the copy of the instances (the refresh loop's, which only
    /// publishes what changed). Whether the loop is to keep its one-second pace: the round had
    /// news (an event other than a cost that moved), an instance is still starting, or an idle
    /// shutdown applies to one (its activity is followed closely).
    pub(crate) async fn refresh_round(&self) -> Result<bool> {
        let _one_at_a_time = self.inner.refreshing.lock().await;
        let inner = self.inner.clone();
        let scan = tokio::task::spawn_blocking(move || {
            let registered = || {
                let model = lock(&inner.model);
                model.registrations.values().map(|r| r.pid).collect()
            };
            let (registry, scope) = (&inner.registry, &inner.settings.scope);
            // Exits unwatched (a core without the background loop): every look is afresh.
            let afresh = !inner.exits_watched.load(Ordering::SeqCst)
                || inner.exit_seen.swap(false, Ordering::SeqCst);
            inner
                .scanner
                .scan(registry, &*inner.listeners, scope, afresh, registered)
        })
        .await?;
        let now = now();
        let jobs = {
            let mut model = lock(&self.inner.model);
            model.idle_default = self.inner.settings.dashboard.idle_shutdown;
            plan(&mut model, &scan, now)
        };
        let prober = &self.inner.prober;
        let results = join_all(jobs.into_iter().map(|job| async move {
            let key = job.key;
            (key, probe(prober, job).await)
        }))
        .await;
        let grace = self.inner.settings.tray.zombie_grace;
        let idle = self.inner.settings.dashboard.idle_shutdown;
        let Decisions {
            mut events,
            writes,
            rescan,
            pending,
        } = apply(
            &mut lock(&self.inner.model),
            &scan,
            results,
            now,
            grace,
            idle,
        );
        self.inner.scanner.map_ports_afresh(rescan);

        // Nothing to write against what this refresh read: the file is left alone (no lock, no
        // second read). Otherwise the write is made under the lock, against the file as it is.
        let mut preview = scan.registry.clone();
        write_entries(&mut preview, &writes);
        let written = if scan.registry_read && preview == scan.registry {
            Ok(((), None))
        } else {
            let inner = self.inner.clone();
            tokio::task::spawn_blocking(move || {
                inner
                    .registry
                    .update(|entries| write_entries(entries, &writes))
            })
            .await
            .map_err(CoreError::from)
            .and_then(|w| Ok(w?))
        };
        if let Ok((_, Some(moved))) = &written {
            events.push(Event::RegistryRecovered {
                moved_to: moved.display().to_string(),
            });
        }
        let busy = pending
            || events
                .iter()
                .any(|e| !matches!(e, Event::CostChanged { .. }));
        // The model has changed: what changed goes out even if the registry could not be
        // written (the next refresh tries the write again).
        for e in events {
            self.publish(e);
        }
        if let Err(e) = written {
            tracing::warn!("cannot update the registry: {e}");
        }
        Ok(busy)
    }
}

/// Finds the dashboard among the ports the process listens on and asks it for its status.
async fn probe(prober: &Prober, job: ProbeJob) -> ProbeResult {
    let port = match job.known.filter(|p| job.ports.contains(p)) {
        Some(p) => p,
        None => {
            let answers = join_all(
                job.ports
                    .iter()
                    .map(|&p| async move { prober.heartbeat(p).await.ok().map(|()| p) }),
            )
            .await;
            match answers.into_iter().flatten().next() {
                Some(p) => p,
                // One port that does not answer: its dashboard, silent (hung or starting).
                None if job.ports.len() == 1 => {
                    return ProbeResult {
                        port: job.ports.first().copied(),
                        ..ProbeResult::default()
                    };
                }
                None => return ProbeResult::default(),
            }
        }
    };
    let status = prober.log_status(port).await.ok();
    let overview = match &status {
        Some(s) if !job.overview_for.is_current(&s.active_project) => {
            prober.config_overview(port).await.ok()
        }
        _ => None,
    };
    ProbeResult {
        port: Some(port),
        status,
        overview,
    }
}
