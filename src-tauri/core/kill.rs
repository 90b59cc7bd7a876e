//! What a kill answers: why one was refused or failed (with the stable codes the API answers
//! with) and what "kill all zombies" did. The killing itself is the [`Core`]'s (`kill`,
//! `kill_process`, `kill_zombies`, `shutdown`), over the reaper.
//!
//! Deliberately not here: the tree-killing (the reaper: snapshot, ask, SIGTERM, SIGKILL,
//! verify), and deciding which instances are zombies (`refresh`).
//!
//! [`Core`]: crate::core::engine::Core

use super::reaper::{KillReport, ReapError};
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
    pub(crate) fn new(pid: u32, e: &KillError) -> SweepFailure {
        SweepFailure {
            pid,
            code: e.kind(),
            error: e.to_string(),
        }
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
