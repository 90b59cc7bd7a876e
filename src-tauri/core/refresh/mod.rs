//! The refresh: the one place that looks at the outside world. It scans processes and their
//! sockets and reads the registry (`scan`, blocking, off the async threads), decides which
//! instances exist and which dashboards to ask (`plan`), probes every dashboard concurrently
//! (short timeouts), folds the answers in and classifies (`apply`), publishes [`Event`]s for what
//! changed and writes what it learnt back to the registry. `plan` and `apply` are pure
//! functions over the model (`tracked`) and a scan, so every decision is unit-tested (`tests`)
//! with scans built in the test; the model's handle (`Core::refresh`, in `engine`) runs them in
//! order, with the I/O between.
//!
//! Deliberately not here: the timer that calls `refresh` (the app's refresh loop, `background`),
//! the states' rules themselves (`classify`), and killing.

mod apply;
mod plan;
mod scan;
#[cfg(test)]
mod tests;
mod tracked;

pub(crate) use apply::{apply, Decisions};
pub(crate) use plan::plan;
pub(crate) use scan::{Scan, Scanner};
pub(crate) use tracked::{Model, Tracked};

use super::probe::Prober;
use futures::future::join_all;
use plan::{ProbeJob, ProbeResult};

/// Asks every planned dashboard at once; each answer keyed by its instance.
pub(crate) async fn probe_all(
    prober: &Prober,
    jobs: Vec<ProbeJob>,
) -> Vec<(super::model::ProcessId, ProbeResult)> {
    join_all(jobs.into_iter().map(|job| async move {
        let key = job.key;
        (key, probe(prober, job).await)
    }))
    .await
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
