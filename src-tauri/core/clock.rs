//! Steps of the wall clock. Every time this program keeps (a grace's start, a lease's end, an
//! idle shutdown, a linger, a sleep) is an [`Epoch`]: wall-clock seconds, the unit
//! `sessions.json`, the API and the page show and the one that survives a restart. The wall clock
//! can step, though: an NTP correction, a clock set by hand, a resume from suspend (on Linux the
//! monotonic clock stands still while suspended, the wall clock does not). Compared with a
//! stepped `now`, every deadline would be due at once after a step forward, and an hour late
//! after a step back of an hour.
//!
//! So each owner of deadlines (the model's refresh, the sessions) keeps a [`StepWatch`] and looks
//! at it whenever it compares a deadline with now or takes a new stamp: a look says how far the
//! wall clock moved beyond the monotonic clock since the last look (a step; less than
//! [`STEP_MIN`] is jitter and counts as none), and the owner moves all its own stamps by that
//! much before deciding. Its stamps and its now are then in one frame again, and what remains of
//! each grace, lease, idle time, linger and sleep is what the monotonic clock says: a step forward
//! fires nothing early, a step back delays nothing. Between looks, [`StepWatch::frame_now`] is now
//! in the frame of the last look (its wall time plus the monotonic time since).
//!
//! Deliberately not moved: times that are compared with other processes' wall times, which do
//! not follow this program's steps: process start times (the identity of a process, "young"
//! processes whose command line is read again, a new instance's first minute), the `started_at`
//! of the registry's entries, the age behind a first CPU measurement. A step while this program
//! is not running is not seen: the stamps it reads back are wall times.

use super::model::{now, Epoch};
use std::time::Instant;

/// The least difference between the wall clock and the monotonic clock that is a step; below it
/// is the jitter of reading the two clocks one after the other.
pub const STEP_MIN: Epoch = 1.0;

/// Both clocks, read together.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    pub wall: Epoch,
    pub mono: Instant,
}

impl Reading {
    /// The clocks now.
    pub fn now() -> Reading {
        Reading {
            mono: Instant::now(),
            wall: now(),
        }
    }
}

/// The wall clock's steps as one owner of deadlines sees them: the last look at both clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepWatch {
    /// `None` before the first look (which then sees no step).
    last: Option<Reading>,
}

impl StepWatch {
    /// A watch that has looked at the clocks now.
    pub fn started() -> StepWatch {
        StepWatch::from_reading(Reading::now())
    }

    /// A watch whose last look read `r`.
    pub fn from_reading(r: Reading) -> StepWatch {
        StepWatch { last: Some(r) }
    }

    /// Looks at the clocks as read in `r`: how many seconds the wall clock stepped since the last
    /// look (forward > 0, back < 0; 0 below [`STEP_MIN`] and at the first look). `r` is the
    /// last look from now on.
    pub fn look(&mut self, r: Reading) -> Epoch {
        let step = self.last.map_or(0.0, |last| {
            let mono = r.mono.saturating_duration_since(last.mono).as_secs_f64();
            (r.wall - last.wall) - mono
        });
        self.last = Some(r);
        if step.abs() < STEP_MIN {
            0.0
        } else {
            step
        }
    }

    /// Now in the frame of the last look: its wall time plus the monotonic time since (the wall
    /// clock before any look).
    pub fn frame_now(&self) -> Epoch {
        match self.last {
            Some(last) => last.wall + last.mono.elapsed().as_secs_f64(),
            None => now(),
        }
    }
}

/// Moves a stamp by a step. A stamp at or before the epoch ("before the first look", "never")
/// stays as it is.
pub fn shift(stamp: &mut Epoch, step: Epoch) {
    if *stamp > 0.0 {
        *stamp += step;
    }
}

/// [`shift`] for a stamp that may not be set.
pub fn shift_opt(stamp: &mut Option<Epoch>, step: Epoch) {
    if let Some(s) = stamp {
        shift(s, step);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const T0: Epoch = 1_700_000_000.0;

    fn at(start: Instant, mono: u64, wall: Epoch) -> Reading {
        Reading {
            wall,
            mono: start + Duration::from_secs(mono),
        }
    }

    #[test]
    fn a_step_is_the_wall_clocks_move_beyond_the_monotonic_clocks() {
        let m0 = Instant::now();
        let mut w = StepWatch::default();
        assert_eq!(w.look(at(m0, 0, T0)), 0.0, "the first look sees none");
        assert_eq!(w.look(at(m0, 5, T0 + 5.0)), 0.0, "both moved alike");
        assert_eq!(w.look(at(m0, 6, T0 + 3606.0)), 3600.0, "forward");
        assert_eq!(w.look(at(m0, 7, T0 + 3607.0)), 0.0, "counted once");
        assert_eq!(w.look(at(m0, 8, T0 + 8.0)), -3600.0, "back");
        assert_eq!(
            w.look(at(m0, 9, T0 + 9.4)),
            0.0,
            "less than STEP_MIN is jitter"
        );
        // A suspend: the monotonic clock stood still, the wall clock went on.
        assert_eq!(w.look(at(m0, 9, T0 + 609.4)), 600.0);
    }

    #[test]
    fn stamps_move_but_not_before_the_first_look() {
        let (mut a, mut b, mut c) = (T0, Some(T0 + 1.0), Some(0.0));
        shift(&mut a, -3600.0);
        shift_opt(&mut b, 3600.0);
        shift_opt(&mut c, 3600.0);
        assert_eq!((a, b, c), (T0 - 3600.0, Some(T0 + 3601.0), Some(0.0)));
    }
}
