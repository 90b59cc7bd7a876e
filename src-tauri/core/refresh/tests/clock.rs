//! A step of the wall clock (a resume from suspend, an NTP correction) during a grace or an idle
//! time: the refresh looks at both clocks as the model's handle does, with the clocks passed in,
//! and what remains follows the monotonic clock. Every test steps an hour forward (nothing fires
//! early) and an hour back (nothing waits an hour more).

use super::*;
use crate::core::clock::Reading;
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

/// One refresh as `Core::refresh_round` runs it: a look at the clocks (the model's stamps follow
/// a step), then plan and apply at the look's now.
fn refresh_looking(
    model: &mut Model,
    world: &World,
    r: Reading,
    dashboards: &[(u32, ProbeResult)],
    idle: Option<Duration>,
) -> Decisions {
    let (now, _) = model.look(r);
    refresh_idle(model, world, now, dashboards, idle)
}

#[test]
fn an_orphans_grace_follows_the_monotonic_clock_across_a_step() {
    for step in [HOUR, -HOUR] {
        let c = Clocks::new();
        let s = serena(200, 100, "");
        let mut world = World::of([init(), client(100), s.clone()]);
        world.ports = vec![(200, DASH)];
        let dash = [(200, answers(None))];
        let mut model = Model::default();
        refresh_looking(&mut model, &world, c.at(0.0, 0.0), &dash, None);
        // The client exits; Serena is re-parented to init: the grace (10 s) starts.
        let mut orphan = s.clone();
        orphan.ppid = Some(1);
        world.procs = vec![init(), orphan];
        refresh_looking(&mut model, &world, c.at(1.0, 0.0), &dash, None);

        for mono in [3.0, 10.5] {
            let d = refresh_looking(&mut model, &world, c.at(mono, step), &dash, None);
            assert_eq!(
                said(&d),
                Vec::<String>::new(),
                "stepped by {step} s, {} s into the grace",
                mono - 1.0
            );
        }
        let d = refresh_looking(&mut model, &world, c.at(11.0, step), &dash, None);
        assert_eq!(
            said(&d),
            ["200: live_no_project -> zombie(orphaned)"],
            "stepped by {step} s: the grace is over"
        );
        assert_eq!(instance(&model, id(&s)).state_since, T0 + 11.0 + step);
    }
}

#[test]
fn a_silent_dashboards_grace_follows_the_monotonic_clock_across_a_step() {
    for step in [HOUR, -HOUR] {
        let c = Clocks::new();
        let s = serena(200, 100, "");
        let mut world = World::of([init(), client(100), s.clone()]);
        world.ports = vec![(200, DASH)];
        let mut model = Model::default();
        refresh_looking(
            &mut model,
            &world,
            c.at(0.0, 0.0),
            &[(200, answers(None))],
            None,
        );
        // Its page is open: asked again at once, silent. The grace counts from the answer.
        model.tracked.get_mut(&id(&s)).expect("tracked").viewed_at = Some(T0 + 1.0);
        refresh_looking(&mut model, &world, c.at(2.0, 0.0), &[(200, silent())], None);

        for mono in [4.0, 9.5] {
            let d = refresh_looking(&mut model, &world, c.at(mono, step), &[], None);
            assert_eq!(
                said(&d),
                Vec::<String>::new(),
                "stepped by {step} s, silent for {mono} s"
            );
        }
        let d = refresh_looking(&mut model, &world, c.at(10.0, step), &[], None);
        assert_eq!(
            said(&d),
            ["200: live_no_project -> zombie(unresponsive)"],
            "stepped by {step} s: the grace is over"
        );
        assert_eq!(instance(&model, id(&s)).last_heartbeat, Some(T0 + step));
    }
}

#[test]
fn an_idle_shutdown_follows_the_monotonic_clock_across_a_step() {
    for step in [HOUR, -HOUR] {
        let c = Clocks::new();
        let s = serena(200, 100, "");
        let world = World::of([init(), client(100), s.clone()]);
        let mut model = Model::default();
        // One minute idle, announced 12 s before: at 48 s, shut down at 60 s.
        let mut look = |mono: f64, step: Epoch| {
            let r = c.at(mono, step);
            let after = Some(Duration::from_secs(60));
            let d = refresh_looking(&mut model, &world, r, &[(200, working(0))], after);
            let next = model.tracked.get(&id(&s)).and_then(|t| t.idle_next);
            (idle_events(&d), next)
        };
        assert_eq!(look(0.0, 0.0), (vec![], Some(T0 + 48.0)));
        assert_eq!(
            look(30.0, step),
            (vec![], Some(T0 + 48.0 + step)),
            "stepped by {step} s: 30 s idle of 60"
        );
        assert_eq!(look(47.0, step).0, []);
        assert_eq!(
            look(49.0, step).0,
            [("warning", T0 + step, T0 + 60.0 + step)],
            "stepped by {step} s: announced after 48 s idle"
        );
        assert_eq!(
            look(60.0, step).0,
            [("shutdown", T0 + step, T0 + 60.0 + step)],
            "stepped by {step} s: shut down after 60 s idle"
        );
    }
}
