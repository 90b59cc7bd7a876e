//! Serenas that a previous run of this program launched and never recorded. A run stopped
//! (killed, out of memory, shut down with the machine) between starting a session's Serena and
//! writing the session to `sessions.json` leaves that Serena running with no record, and the
//! request that asked for it never got its answer. So every Serena a session starts carries
//! [`VAR`] in its environment, `<session id>:<tray directory>` (inherited by everything it
//! starts); at start-up, the processes carrying this program's tray directory and a session
//! that is not awake in the store are found here, and reaped with their trees by the caller.
//!
//! Deliberately not here: reading the process table (`procs::carrying`) and killing (`reaper`).
//! A process found here is verifiably one this program started (the marker names its own tray
//! directory, and its identity is re-checked before every signal); no other check is needed.

use crate::core::model::{ProcessId, Session};
use crate::core::procs::Proc;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// The environment variable that marks a session's Serena: `<session id>:<tray directory>`.
pub(super) const VAR: &str = "SERENA_TRAY_SESSION";

/// The marker's value for session `id` of the program whose tray directory is `tray`.
pub(super) fn marker(id: &str, tray: &Path) -> String {
    format!("{id}:{}", tray.display())
}

/// One Serena (with its tree) that a previous run started for `session_id` and never recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Unrecorded {
    pub session_id: String,
    pub root: ProcessId,
}

/// Of the processes carrying [`VAR`] (`marked`, with its value), the roots of those launched
/// from `tray` for a session that is not awake in `sessions`: a marked process whose parent
/// carries the same marker is part of its parent's tree, reaped with it.
pub(super) fn unrecorded(
    marked: &[(Proc, String)],
    tray: &Path,
    sessions: &BTreeMap<String, Session>,
) -> Vec<Unrecorded> {
    let ours: Vec<(&Proc, &str)> = marked
        .iter()
        .filter_map(|(p, value)| {
            let (id, dir) = value.split_once(':')?;
            (Path::new(dir) == tray).then_some((p, id))
        })
        .collect();
    let same_marker: HashSet<(u32, &str)> = ours.iter().map(|(p, id)| (p.pid, *id)).collect();
    let awake = |id: &str| sessions.get(id).is_some_and(Session::is_awake);
    ours.iter()
        .filter(|(p, id)| !awake(id) && !p.ppid.is_some_and(|pp| same_marker.contains(&(pp, id))))
        .map(|(p, id)| Unrecorded {
            session_id: id.to_string(),
            root: p.id(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(pid: u32, ppid: u32) -> Proc {
        Proc {
            pid,
            ppid: Some(ppid),
            start_time: 100 + u64::from(pid),
            name: "serena".into(),
            cmdline: vec![],
            cwd: None,
        }
    }

    fn awake(id: &str, pid: u32) -> Session {
        let mut s: Session = serde_json::from_value(serde_json::json!({
            "session_id": id, "host": "127.0.0.1", "port": 1, "url": "u", "pid": pid,
            "start_time": 100 + u64::from(pid), "project_path": "/p", "modes": [],
            "transport": "streamable-http", "created_at": 1.0, "log_path": "l",
        }))
        .expect("a session");
        s.ended_at = None;
        s
    }

    #[test]
    fn only_roots_of_this_trays_sessions_that_are_not_awake() {
        let tray = Path::new("/home/u/.serena/tray");
        let mine = |id: &str| marker(id, tray);
        let marked = vec![
            // A wrapper and the Serena under it, for a session never recorded: one root.
            (proc(10, 1), mine("lost")),
            (proc(11, 10), mine("lost")),
            // Its language server, re-parented when the Serena died: a root of its own.
            (proc(12, 1), mine("lost")),
            // A recorded, awake session's Serena and its child: kept.
            (proc(20, 1), mine("kept")),
            (proc(21, 20), mine("kept")),
            // Another Serena Tray's (another SERENA_HOME): never ours.
            (proc(30, 1), marker("lost", Path::new("/tmp/other/tray"))),
            // A marker that does not parse.
            (proc(40, 1), "garbage".into()),
        ];
        let sessions = BTreeMap::from([("kept".to_string(), awake("kept", 20))]);
        let found = unrecorded(&marked, tray, &sessions);
        let roots: Vec<(u32, &str)> = found
            .iter()
            .map(|u| (u.root.pid, u.session_id.as_str()))
            .collect();
        assert_eq!(roots, vec![(10, "lost"), (12, "lost")]);
        assert_eq!(found[0].root.start_time, 110);
    }

    #[test]
    fn a_recorded_session_that_has_ended_or_sleeps_does_not_keep_its_serena() {
        let tray = Path::new("/t");
        let marked = vec![(proc(10, 1), marker("s", tray))];
        let mut s = awake("s", 99);
        s.ended_at = Some(2.0);
        let sessions = BTreeMap::from([("s".to_string(), s)]);
        assert_eq!(unrecorded(&marked, tray, &sessions).len(), 1);
    }
}
