//! Deciding an instance's state from what was observed. A pure function of observations and
//! timestamps, so that every rule in DESIGN "Instance model and states" is unit-tested here
//! without processes. The grace delays transitions seen live; a condition already true when an
//! instance is first seen is passed in with a timestamp at the epoch, so it counts at once.

use super::model::{Epoch, State, ZombieReason};
use std::time::Duration;

/// What the refresh observed about one instance, with the times its conditions began.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// The process with the instance's identity exists.
    pub alive: bool,
    /// Since when its client has been gone (stdio instances only), if it is.
    pub orphaned_since: Option<Epoch>,
    /// Since when its dashboard has been silent (it has one and the last probe failed), if it is.
    pub silent_since: Option<Epoch>,
    /// An active project is known.
    pub has_project: bool,
}

/// The epoch: a condition that held before this program first looked.
pub const BEFORE_FIRST_LOOK: Epoch = 0.0;

/// The state and reason for an observation at time `now`.
pub fn classify(obs: &Observation, now: Epoch, grace: Duration) -> (State, Option<ZombieReason>) {
    let grace = grace.as_secs_f64();
    let past_grace = |since: Option<Epoch>| since.is_some_and(|t| now - t >= grace);
    if !obs.alive {
        (State::Zombie, Some(ZombieReason::Dead))
    } else if past_grace(obs.orphaned_since) {
        (State::Zombie, Some(ZombieReason::Orphaned))
    } else if past_grace(obs.silent_since) {
        (State::Zombie, Some(ZombieReason::Unresponsive))
    } else if obs.has_project {
        (State::LiveWithProject, None)
    } else {
        (State::LiveNoProject, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: Duration = Duration::from_secs(10);

    fn live() -> Observation {
        Observation {
            alive: true,
            orphaned_since: None,
            silent_since: None,
            has_project: true,
        }
    }

    #[test]
    fn live_colours() {
        assert_eq!(classify(&live(), 100.0, G), (State::LiveWithProject, None));
        let no_project = Observation {
            has_project: false,
            ..live()
        };
        assert_eq!(
            classify(&no_project, 100.0, G),
            (State::LiveNoProject, None)
        );
    }

    #[test]
    fn dead_wins_at_once() {
        let o = Observation {
            alive: false,
            ..live()
        };
        assert_eq!(
            classify(&o, 100.0, G),
            (State::Zombie, Some(ZombieReason::Dead))
        );
    }

    #[test]
    fn orphan_waits_for_the_grace_unless_already_orphaned() {
        let o = Observation {
            orphaned_since: Some(95.0),
            ..live()
        };
        assert_eq!(classify(&o, 100.0, G).0, State::LiveWithProject);
        assert_eq!(
            classify(&o, 105.0, G),
            (State::Zombie, Some(ZombieReason::Orphaned))
        );
        let first_sight = Observation {
            orphaned_since: Some(BEFORE_FIRST_LOOK),
            ..live()
        };
        assert_eq!(
            classify(&first_sight, 100.0, G).1,
            Some(ZombieReason::Orphaned)
        );
    }

    #[test]
    fn silence_past_the_grace_is_unresponsive() {
        let o = Observation {
            silent_since: Some(91.0),
            has_project: false,
            ..live()
        };
        assert_eq!(classify(&o, 100.0, G).0, State::LiveNoProject);
        assert_eq!(
            classify(&o, 101.0, G),
            (State::Zombie, Some(ZombieReason::Unresponsive))
        );
    }
}
