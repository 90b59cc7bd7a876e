//! A step of the wall clock (a resume from suspend, an NTP correction) while a lease, a linger or
//! a sleep runs: each pass looks at both clocks as `Sessions` does, with the clocks passed in, and
//! what remains follows the monotonic clock. Every test steps an hour forward (nothing ends or
//! sleeps early) and an hour back (nothing waits an hour more).

use super::*;
use crate::core::clock::{Reading, StepWatch};
use std::time::Instant;

const HOUR: Epoch = 3600.0;

/// The two clocks of a test: the monotonic one from its start, the wall one from [`T0`].
struct Clocks(Instant);

impl Clocks {
    fn new() -> Clocks {
        Clocks(Instant::now())
    }

    /// `mono` seconds after the start, the wall clock stepped by `step` since.
    fn at(&self, mono: f64, step: Epoch) -> Reading {
        Reading {
            wall: T0 + mono + step,
            mono: self.0 + Duration::from_secs_f64(mono),
        }
    }
}

/// The sessions as `Sessions` holds them, with the watch of their last look (at the start).
fn held(c: &Clocks, sessions: impl IntoIterator<Item = Session>) -> (Held, StepWatch) {
    let map = sessions
        .into_iter()
        .map(|s| (s.session_id.clone(), s))
        .collect();
    (map, StepWatch::from_reading(c.at(0.0, 0.0)))
}

type Held = BTreeMap<String, Session>;

/// One pass of the keeper of leases (`Sessions::keep_leases`): a look at the clocks (the
/// sessions' stamps follow a step), then what is due at the look's now.
fn pass(sessions: &mut Held, watch: &mut StepWatch, r: Reading) -> Due {
    look(sessions, watch, r);
    due(sessions.values(), r.wall)
}

#[test]
fn a_lease_runs_out_after_its_seconds_on_the_monotonic_clock_across_a_step() {
    for step in [HOUR, -HOUR] {
        let c = Clocks::new();
        let leased = Session {
            shared: false,
            lease_seconds: Some(30.0),
            expires_at: Some(T0 + 30.0),
            ..session("lease", 10)
        };
        let (mut sessions, mut watch) = held(&c, [leased]);
        let d = pass(&mut sessions, &mut watch, c.at(10.0, step));
        assert_eq!(d.ends, [], "stepped by {step} s: 20 s of the lease remain");
        assert_eq!(d.next, Some(T0 + 30.0 + step), "stepped by {step} s");
        assert_eq!(sessions["lease"].expires_at, Some(T0 + 30.0 + step));
        let d = pass(&mut sessions, &mut watch, c.at(29.5, step));
        assert_eq!(d.ends, [], "stepped by {step} s");
        let d = pass(&mut sessions, &mut watch, c.at(30.0, step));
        assert_eq!(
            d.ends,
            [("lease".to_string(), EndReason::LeaseExpired)],
            "stepped by {step} s: the lease ran out"
        );
    }
}

#[test]
fn a_linger_ends_after_its_seconds_on_the_monotonic_clock_across_a_step() {
    for step in [HOUR, -HOUR] {
        let c = Clocks::new();
        let mut shared = session("shared", 10);
        attach(&mut shared, attachment(20));
        let (mut sessions, mut watch) = held(&c, [shared]);
        // The last client leaves 5 s in: it lingers 20 s.
        let r = c.at(5.0, 0.0);
        look(&mut sessions, &mut watch, r);
        let s = sessions.get_mut("shared").expect("held");
        assert!(detach(s, 20, r.wall, 20.0));
        assert_eq!(pass(&mut sessions, &mut watch, c.at(10.0, step)).ends, []);
        assert_eq!(sessions["shared"].linger_until, Some(T0 + 25.0 + step));
        assert_eq!(pass(&mut sessions, &mut watch, c.at(24.5, step)).ends, []);
        assert_eq!(
            pass(&mut sessions, &mut watch, c.at(25.0, step)).ends,
            [("shared".to_string(), EndReason::Unattached)],
            "stepped by {step} s: the linger is over"
        );
    }
}

#[test]
fn a_sleep_comes_after_its_minutes_on_the_monotonic_clock_across_a_step() {
    for step in [HOUR, -HOUR] {
        let c = Clocks::new();
        // Its client's last call ended at the start; it sleeps after a minute without one.
        let (mut sessions, mut watch) = held(&c, [sleepy("s", 1.0)]);
        let d = pass(&mut sessions, &mut watch, c.at(30.0, step));
        assert_eq!(d.sleeps, Vec::<String>::new(), "stepped by {step} s");
        assert_eq!(d.next, Some(T0 + 60.0 + step), "stepped by {step} s");
        let d = pass(&mut sessions, &mut watch, c.at(59.5, step));
        assert_eq!(d.sleeps, Vec::<String>::new(), "stepped by {step} s");
        let d = pass(&mut sessions, &mut watch, c.at(60.0, step));
        assert_eq!(
            d.sleeps,
            ["s"],
            "stepped by {step} s: a minute without a call"
        );
    }
}

#[test]
fn a_step_moves_every_stamp_of_every_session_but_its_process_start() {
    let c = Clocks::new();
    let mut s = sleepy("s", 1.0);
    s.expires_at = Some(T0 + 30.0);
    s.linger_until = Some(T0 + 20.0);
    let ended = session("e", 11).ended(EndReason::Released, T0);
    let (mut sessions, mut watch) = held(&c, [s, ended]);
    assert_eq!(
        look(&mut sessions, &mut watch, c.at(1.0, 0.5)),
        0.0,
        "jitter"
    );
    assert_eq!(
        look(&mut sessions, &mut watch, c.at(2.0, 0.5 - HOUR)),
        -HOUR
    );
    let (s, e) = (&sessions["s"], &sessions["e"]);
    assert_eq!(s.created_at, T0 - HOUR);
    assert_eq!(
        (s.expires_at, s.linger_until, s.last_used),
        (
            Some(T0 + 30.0 - HOUR),
            Some(T0 + 20.0 - HOUR),
            Some(T0 - HOUR)
        )
    );
    assert_eq!(s.attached[0].since, T0 - HOUR);
    assert_eq!((s.start_time, e.start_time), (500, 500));
    assert_eq!(e.ended_at, Some(T0 - HOUR));
}
