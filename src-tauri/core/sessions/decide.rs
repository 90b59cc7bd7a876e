//! The instance manager's decisions, as functions over plain data: what a request asks for (and
//! whether it may), which shared session serves it, which recorded sessions are adopted again,
//! what an attachment or a detachment does to a session, which leases and lingers are due and
//! when the next one is, how a step of the wall clock moves them, which history is kept. The
//! clock is passed in; the one look outside is that a request's project must be an existing
//! directory.
//!
//! Deliberately not here: starting and reaping processes, the store, the wait loop (the rest of
//! `sessions`).

use super::{SessionError, SessionRequest};
use crate::core::clock::{shift, shift_opt, Reading, StepWatch};
use crate::core::model::{minutes, Attachment, EndReason, Epoch, ProcessId, Session, Transport};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// How many ended sessions are kept in the store (the history).
pub(crate) const HISTORY_KEPT: usize = 100;

/// A request, checked: what it asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Wanted {
    /// The project directory, absolute and canonical.
    pub project: String,
    pub context: Option<String>,
    pub modes: Vec<String>,
    pub transport: Transport,
    pub shared: bool,
    /// The lease's length in seconds, if it has one.
    pub lease: Option<f64>,
    /// Its own idle shutdown, as asked (minutes) and as a duration.
    pub idle_minutes: Option<f64>,
    pub idle: Option<Duration>,
    /// Asked by a bridge that starts Serena on first use: a shared session asleep (or a new
    /// one, not started) serves it as well as a live one.
    pub on_demand: bool,
    /// Put to sleep after this many minutes without a call (none: never).
    pub sleep_minutes: Option<f64>,
}

impl Wanted {
    /// Checks a request: an absolute, existing project directory, a transport Serena serves
    /// over HTTP, names that cannot pass for options, a lease and an idle time that are numbers
    /// in range.
    pub(crate) fn of(req: &SessionRequest) -> Result<Wanted, SessionError> {
        let project = project_dir(&req.project_path)?;
        let transport = match req.transport.as_deref() {
            None => Transport::StreamableHttp,
            Some(raw) => Transport::parse(raw)
                .filter(|t| t.endpoint_path().is_some())
                .ok_or_else(|| SessionError::BadTransport(raw.to_string()))?,
        };
        if let Some(c) = &req.context {
            check_name(c, "context")?;
        }
        let modes = req.modes.clone().unwrap_or_default();
        for m in &modes {
            check_name(m, "mode")?;
        }
        let lease = req.lease_seconds.map(lease_of).transpose()?;
        let idle = req
            .idle_shutdown_minutes
            .map(|m| minutes(m).ok_or(SessionError::BadIdle(m)))
            .transpose()?;
        let shared = req.shared == Some(true);
        let on_demand = req.on_demand == Some(true);
        if on_demand && !shared {
            return Err(SessionError::OnDemandUnshared);
        }
        let sleep_minutes = req
            .sleep_minutes
            .map(|m| match minutes(m) {
                Some(d) if d.is_zero() => Ok(None),
                Some(_) => Ok(Some(m)),
                None => Err(SessionError::BadSleep(m)),
            })
            .transpose()?
            .flatten();
        Ok(Wanted {
            project,
            context: req.context.clone(),
            modes,
            transport,
            shared,
            lease,
            idle_minutes: req.idle_shutdown_minutes,
            idle,
            on_demand,
            sleep_minutes,
        })
    }

    /// What a shared session serving this request has in common with it.
    pub(crate) fn shared_key(&self) -> SharedKey {
        SharedKey::new(&self.project, &self.context, &self.modes, self.transport)
    }
}

/// What makes two requests one shared session: the project, the context, the modes (in any
/// order) and the transport.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SharedKey {
    project: String,
    context: Option<String>,
    /// Sorted.
    modes: Vec<String>,
    transport: Transport,
}

impl SharedKey {
    fn new(
        project: &str,
        context: &Option<String>,
        modes: &[String],
        transport: Transport,
    ) -> SharedKey {
        let mut modes = modes.to_vec();
        modes.sort();
        SharedKey {
            project: project.to_string(),
            context: context.clone(),
            modes,
            transport,
        }
    }

    pub(crate) fn of_session(s: &Session) -> SharedKey {
        SharedKey::new(&s.project_path, &s.context, &s.modes, s.transport)
    }
}

/// The active shared session that serves `key`, among those whose Serena still `runs`.
pub(crate) fn shared_match<'a>(
    sessions: impl IntoIterator<Item = &'a Session>,
    key: &SharedKey,
    runs: impl Fn(ProcessId) -> bool,
) -> Option<&'a Session> {
    sessions.into_iter().find(|s| {
        s.is_awake() && s.shared && SharedKey::of_session(s) == *key && runs(s.process_id())
    })
}

/// The shared session of `key` that is asleep (no Serena), if any.
pub(crate) fn asleep_match<'a>(
    sessions: impl IntoIterator<Item = &'a Session>,
    key: &SharedKey,
) -> Option<&'a Session> {
    sessions
        .into_iter()
        .find(|s| s.is_asleep() && s.shared && SharedKey::of_session(s) == *key)
}

/// The recorded sessions, adopted again after a restart: an active one whose Serena no longer
/// `runs` has ended (at `now`). A shared one's sleep counts anew from `now`, none of its clients
/// in a call (a call's end may have been reported while this program was down; the bridges say
/// so again at their next call).
pub(crate) fn adopted(
    recorded: Vec<Session>,
    runs: impl Fn(ProcessId) -> bool,
    now: Epoch,
) -> BTreeMap<String, Session> {
    recorded
        .into_iter()
        .map(|s| match s.is_awake() && !runs(s.process_id()) {
            true => s.ended(EndReason::Exited, now),
            false => s,
        })
        .map(|mut s| {
            if s.is_awake() && s.shared {
                s.last_used = Some(now);
                s.attached.iter_mut().for_each(|a| a.busy = false);
            }
            (s.session_id.clone(), s)
        })
        .collect()
}

/// After a restart, a shared session with no client left lingers anew from `now`.
pub(crate) fn linger_anew(sessions: &mut BTreeMap<String, Session>, now: Epoch, linger: f64) {
    for s in sessions.values_mut().filter(|s| s.is_active() && s.shared) {
        if s.attached.is_empty() && s.linger_until.is_none() {
            s.linger_until = Some(now + linger);
        }
    }
}

/// Attaches a client to a shared session (one attachment per launcher PID): its linger stops.
pub(crate) fn attach(session: &mut Session, attachment: Attachment) {
    session.attached.retain(|a| a.pid != attachment.pid);
    session.attached.push(attachment);
    session.linger_until = None;
}

/// A call of the client `pid` began (`busy`) or ended, at `now`: the session's last use.
/// False when that client is not attached.
pub(crate) fn touch(session: &mut Session, pid: u32, busy: bool, now: Epoch) -> bool {
    let Some(a) = session.attached.iter_mut().find(|a| a.pid == pid) else {
        return false;
    };
    a.busy = busy;
    session.last_used = Some(now);
    true
}

/// Detaches the launcher `pid`; the last one out starts the linger. False when nothing changed
/// (not attached, or the session has ended).
pub(crate) fn detach(session: &mut Session, pid: u32, now: Epoch, linger: f64) -> bool {
    let before = session.attached.len();
    session.attached.retain(|a| a.pid != pid);
    if session.attached.len() == before || !session.is_active() {
        return false;
    }
    if session.attached.is_empty() {
        session.linger_until = Some(now + linger);
    }
    true
}

/// What is due at a moment: the sessions to end (lease run out, linger over), the sessions to
/// put to sleep (no call for `sleep_minutes`) and when the next of either comes.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Due {
    pub ends: Vec<(String, EndReason)>,
    pub sleeps: Vec<String>,
    pub next: Option<Epoch>,
}

/// What comes due for one session, and when.
enum Coming {
    End(EndReason),
    Sleep,
}

/// The leases, lingers and sleeps of the active sessions, at `now`. A linger counts only while
/// no client is attached; a sleep only while clients are attached, none of them in a call.
pub(crate) fn due<'a>(sessions: impl IntoIterator<Item = &'a Session>, now: Epoch) -> Due {
    let coming = sessions
        .into_iter()
        .filter(|s| s.is_active())
        .flat_map(|s| {
            let id = &s.session_id;
            let lease = s
                .expires_at
                .map(|at| (id, Coming::End(EndReason::LeaseExpired), at));
            let linger = s
                .linger_until
                .filter(|_| s.attached.is_empty())
                .map(|at| (id, Coming::End(EndReason::Unattached), at));
            let sleep = sleep_at(s).map(|at| (id, Coming::Sleep, at));
            lease.into_iter().chain(linger).chain(sleep)
        });
    let mut due = Due::default();
    for (id, what, at) in coming {
        if at > now {
            due.next = Some(due.next.map_or(at, |n: Epoch| n.min(at)));
            continue;
        }
        match what {
            Coming::End(why) => due.ends.push((id.clone(), why)),
            Coming::Sleep => due.sleeps.push(id.clone()),
        }
    }
    // A session that ends is not put to sleep first.
    due.sleeps
        .retain(|id| !due.ends.iter().any(|(e, _)| e == id));
    due
}

/// A look at the clocks, as read in `r`, before a decision over `sessions` or a new stamp in
/// them: after a step of the wall clock since `clock`'s last look, every session's stamps move
/// by the step (see `clock`), so that what remains of each lease, linger and sleep is what the
/// monotonic clock says. A session's process start time is the system's and stays. Returns the
/// step (0: none); now is `r.wall`.
pub(crate) fn look(
    sessions: &mut BTreeMap<String, Session>,
    clock: &mut StepWatch,
    r: Reading,
) -> Epoch {
    let step = clock.look(r);
    if step == 0.0 {
        return 0.0;
    }
    for s in sessions.values_mut() {
        shift(&mut s.created_at, step);
        for stamp in [
            &mut s.ended_at,
            &mut s.expires_at,
            &mut s.linger_until,
            &mut s.last_used,
            &mut s.asleep_since,
        ] {
            shift_opt(stamp, step);
        }
        s.attached
            .iter_mut()
            .for_each(|a| shift(&mut a.since, step));
    }
    step
}

/// When an awake shared session with clients, none in a call, falls asleep: `sleep_minutes`
/// after its last call (or its start).
pub(crate) fn sleep_at(s: &Session) -> Option<Epoch> {
    let minutes = s.sleep_minutes.filter(|m| *m > 0.0)?;
    let idle = s.is_awake() && s.shared && !s.attached.is_empty();
    let busy = s.attached.iter().any(|a| a.busy);
    (idle && !busy).then(|| s.last_used.unwrap_or(s.created_at) + minutes * 60.0)
}

/// What is recorded: every active session, and the [`HISTORY_KEPT`] that ended last.
pub(crate) fn kept<'a>(sessions: impl Iterator<Item = &'a Session>) -> Vec<&'a Session> {
    let (mut list, mut ended): (Vec<&Session>, Vec<&Session>) =
        sessions.partition(|s| s.is_active());
    ended.sort_by(|a, b| {
        b.ended_at
            .unwrap_or(0.0)
            .total_cmp(&a.ended_at.unwrap_or(0.0))
    });
    list.extend(ended.into_iter().take(HISTORY_KEPT));
    list
}

/// The active session `id`: unknown, or ended, is an error.
pub(crate) fn active<'a>(
    sessions: &'a mut BTreeMap<String, Session>,
    id: &str,
) -> Result<&'a mut Session, SessionError> {
    match sessions.get_mut(id) {
        None => Err(SessionError::UnknownSession(id.to_string())),
        Some(s) if !s.is_active() => Err(SessionError::Ended(id.to_string())),
        Some(s) => Ok(s),
    }
}

/// Forgets the ended sessions past the history's bound (see [`kept`]).
pub(crate) fn forget_old_history(sessions: &mut BTreeMap<String, Session>) {
    let keep: std::collections::HashSet<String> = kept(sessions.values())
        .into_iter()
        .map(|s| s.session_id.clone())
        .collect();
    sessions.retain(|id, _| keep.contains(id));
}

/// A lease's length: a number of seconds > 0.
pub(crate) fn lease_of(seconds: f64) -> Result<f64, SessionError> {
    (seconds.is_finite() && seconds > 0.0)
        .then_some(seconds)
        .ok_or(SessionError::BadLease(seconds))
}

/// Absolute, existing directory, canonicalised.
fn project_dir(raw: &str) -> Result<String, SessionError> {
    let path = Path::new(raw);
    if raw.is_empty() || !path.is_absolute() {
        return Err(SessionError::RelativePath(raw.to_string()));
    }
    let canon = path
        .canonicalize()
        .map_err(|_| SessionError::MissingPath(raw.to_string()))?;
    if !canon.is_dir() {
        return Err(SessionError::NotADirectory(raw.to_string()));
    }
    canon
        .to_str()
        .map(String::from)
        .ok_or_else(|| SessionError::MissingPath(raw.to_string()))
}

/// Context and mode names go on Serena's command line as values: no option look-alikes.
fn check_name(v: &str, what: &'static str) -> Result<(), SessionError> {
    let ok = !v.is_empty()
        && !v.starts_with('-')
        && v.len() <= 4096
        && !v.chars().any(|c| c.is_control());
    if ok {
        Ok(())
    } else {
        Err(SessionError::BadName(v.to_string(), what))
    }
}

#[cfg(test)]
mod tests;
