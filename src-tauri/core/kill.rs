//! Killing, the acting side of the [`Core`] handle: one instance by PID or by exact identity,
//! every zombie at once, or a polite `PUT /shutdown`; then the instance is forgotten by the model
//! and the registry. Refuses anything that is not verifiably Serena, and prunes a dead record
//! without signalling anything.
//!
//! Deliberately not here: the tree-killing itself (the reaper: snapshot, ask, SIGTERM, SIGKILL,
//! verify), and deciding which instances are zombies (`refresh`).

use super::engine::{lock, Core};
use super::events::Event;
use super::model::{Epoch, Instance, ProcessId, State, ZombieReason};
use super::reaper::{self, KillReport, ReapError};
use futures::future::join_all;
use serde::{Deserialize, Serialize};

/// Why a kill was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum KillError {
    #[error("no Serena instance with PID {0}")]
    UnknownPid(u32),
    #[error("PID {0} is registered but is not a Serena process: it is never killed")]
    NotSerena(u32),
    #[error("instance {0} has no dashboard to ask (it may have lost Serena's port race)")]
    NoDashboard(u32),
    #[error(transparent)]
    Reap(#[from] ReapError),
}

impl KillError {
    /// Its kind, as a stable code.
    pub fn kind(&self) -> KillErrorKind {
        match self {
            KillError::UnknownPid(_) => KillErrorKind::UnknownPid,
            KillError::NotSerena(_) | KillError::Reap(ReapError::NotSerena { .. }) => {
                KillErrorKind::NotSerena
            }
            KillError::NoDashboard(_) => KillErrorKind::NoDashboard,
            KillError::Reap(ReapError::Survivors { .. }) => KillErrorKind::KillFailed,
        }
    }
}

/// The kinds of [`KillError`], as the stable codes the API answers a failed kill with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KillErrorKind {
    UnknownPid,
    /// A registered PID that is not Serena, or a process that no longer looks like it.
    NotSerena,
    NoDashboard,
    /// Signalled, but not all of its tree could be confirmed gone.
    #[default]
    KillFailed,
}

impl KillErrorKind {
    /// The code, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            KillErrorKind::UnknownPid => "unknown_pid",
            KillErrorKind::NotSerena => "not_serena",
            KillErrorKind::NoDashboard => "no_dashboard",
            KillErrorKind::KillFailed => "kill_failed",
        }
    }
}

/// What "kill all zombies" did. JSON: `{"killed": [reports], "failed": [failures], "pruned":
/// [pids]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZombieSweep {
    pub killed: Vec<KillReport>,
    pub failed: Vec<SweepFailure>,
    /// Dead registry entries removed.
    pub pruned: Vec<u32>,
}

/// One zombie "kill all zombies" could not kill. JSON: `{"pid", "code", "error"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepFailure {
    pub pid: u32,
    /// What kind of failure (an answer without one, from an older daemon: `kill_failed`).
    #[serde(default)]
    pub code: KillErrorKind,
    /// The error, for people.
    pub error: String,
}

impl SweepFailure {
    fn new(pid: u32, e: &KillError) -> SweepFailure {
        SweepFailure {
            pid,
            code: e.kind(),
            error: e.to_string(),
        }
    }
}

impl Core {
    /// Kills the instance with this PID (the live one if a dead record shares the PID): what a
    /// user asks for by PID. See [`Core::kill_process`].
    pub async fn kill(&self, pid: u32) -> std::result::Result<KillReport, KillError> {
        if self.tracked_id(pid).is_none() {
            // Maybe it started since the last look.
            let _ = self.refresh().await;
        }
        let key = self.tracked_id(pid).ok_or(KillError::UnknownPid(pid))?;
        self.kill_process(key).await
    }

    /// Kills exactly this instance with its whole process tree (see `reaper`); a dead record is
    /// only pruned from the registry, never signalled. Refuses anything that is not verifiably
    /// Serena.
    pub async fn kill_process(&self, key: ProcessId) -> std::result::Result<KillReport, KillError> {
        let found = {
            let model = lock(&self.inner.model);
            model
                .tracked
                .get(&key)
                .map(|t| (t.alive, t.inst.verified_serena, t.inst.port))
        };
        let (alive, verified, port) = found.ok_or(KillError::UnknownPid(key.pid))?;
        if !alive {
            self.forget(key, true).await;
            return Ok(KillReport::already_gone(key.pid));
        }
        if !verified {
            return Err(KillError::NotSerena(key.pid));
        }
        let report = reaper::reap(key, port, &self.inner.prober, &self.inner.timings).await?;
        self.forget(key, false).await;
        let _ = self.inner.events.send(Event::InstanceKilled {
            pid: key.pid,
            outcome: report.outcome,
        });
        Ok(report)
    }

    /// Kills every zombie concurrently and prunes dead registry entries.
    pub async fn kill_zombies(&self) -> ZombieSweep {
        let _ = self.refresh().await;
        let zombies: Vec<Instance> = self
            .instances()
            .into_iter()
            .filter(|i| i.state == State::Zombie)
            .collect();
        let results = join_all(zombies.iter().map(|z| async move {
            let dead = z.state_reason == Some(ZombieReason::Dead);
            (z.pid, dead, self.kill_process(z.process_id()).await)
        }))
        .await;
        let mut sweep = ZombieSweep {
            killed: Vec::new(),
            failed: Vec::new(),
            pruned: Vec::new(),
        };
        for (pid, pruned, r) in results {
            match r {
                Ok(_) if pruned => sweep.pruned.push(pid),
                Ok(report) => sweep.killed.push(report),
                Err(e) => sweep.failed.push(SweepFailure::new(pid, &e)),
            }
        }
        sweep
    }

    /// Asks an instance to stop through its own dashboard (`PUT /shutdown`), nothing more; only
    /// after checking that the process still listens on that port.
    pub async fn shutdown(&self, pid: u32) -> std::result::Result<(), KillError> {
        let key = self.tracked_id(pid).ok_or(KillError::UnknownPid(pid))?;
        let (alive, verified, port) = {
            let model = lock(&self.inner.model);
            let t = model.tracked.get(&key);
            (
                t.is_some_and(|t| t.alive),
                t.is_some_and(|t| t.inst.verified_serena),
                t.and_then(|t| t.inst.port),
            )
        };
        if !alive {
            return Err(KillError::UnknownPid(pid));
        }
        // Like a kill: only what is verifiably Serena is asked to stop.
        if !verified {
            return Err(KillError::NotSerena(pid));
        }
        let port = port.ok_or(KillError::NoDashboard(pid))?;
        let inner = self.inner.clone();
        let owns = tokio::task::spawn_blocking(move || inner.listeners.owns_port(pid, port))
            .await
            .unwrap_or(false);
        if !owns {
            return Err(KillError::NoDashboard(pid));
        }
        let _ = self.inner.prober.shutdown(port).await;
        Ok(())
    }

    /// Drops an instance from the model and the registry (after a kill, or a pruned record).
    async fn forget(&self, key: ProcessId, dead_record: bool) {
        // Not in the middle of a refresh, which could write the entry back.
        let _no_refresh = self.inner.refreshing.lock().await;
        let exact = lock(&self.inner.model).forget(key).filter(|_| dead_record);
        let inner = self.inner.clone();
        let _ = tokio::task::spawn_blocking(move || {
            inner
                .registry
                .update(|entries| entries.retain(|e| !e.is_record_of(key, exact)))
        })
        .await;
        let _ = self.inner.events.send(Event::InstanceRemoved {
            pid: key.pid,
            started_at: key.start_time as Epoch,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::reaper::Outcome;

    #[test]
    fn a_sweep_keeps_its_documented_json_and_reads_back() {
        let mut report = KillReport::already_gone(20);
        report.outcome = Outcome::Terminated;
        report.tree = vec![20, 21];
        report.signalled_term = vec![20, 21];
        let refused = KillError::Reap(ReapError::NotSerena { pid: 30 });
        let sweep = ZombieSweep {
            killed: vec![report],
            failed: vec![SweepFailure::new(30, &refused)],
            pruned: vec![40],
        };
        let json = serde_json::to_value(&sweep).unwrap_or_default();
        assert_eq!(json["killed"][0]["outcome"], "terminated");
        assert_eq!(
            json["failed"][0],
            serde_json::json!({
                "pid": 30,
                "code": "not_serena",
                "error": "process 30 is not a Serena MCP server; it was left alone",
            })
        );
        let back: Result<ZombieSweep, _> = serde_json::from_value(json);
        assert_eq!(back.ok(), Some(sweep));
        let older: Result<SweepFailure, _> =
            serde_json::from_value(serde_json::json!({"pid": 1, "error": "x"}));
        assert_eq!(older.map(|f| f.code).ok(), Some(KillErrorKind::KillFailed));
    }

    #[test]
    fn every_refusal_has_the_code_the_api_answers_with() {
        let survivors = ReapError::Survivors {
            pid: 1,
            pids: vec![2],
        };
        for (e, code) in [
            (KillError::UnknownPid(1), "unknown_pid"),
            (KillError::NotSerena(1), "not_serena"),
            (
                KillError::Reap(ReapError::NotSerena { pid: 1 }),
                "not_serena",
            ),
            (KillError::NoDashboard(1), "no_dashboard"),
            (KillError::Reap(survivors), "kill_failed"),
        ] {
            let got = serde_json::to_value(e.kind()).unwrap_or_default();
            assert_eq!(got, code, "{e}");
        }
    }
}
