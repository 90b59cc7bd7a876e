//! The reaper against real processes: the fake Serena with a child tree (shut down through its
//! dashboard, the children TERMed from the snapshot), a fake that ignores SIGTERM (SIGKILL, also
//! within the default escalation's time, as is one whose language server ignores it), PID
//! reuse and non-Serena processes (never signalled), and REAL Serena 2.1.0 orphaned with its
//! jedi language server (stopped through `PUT /shutdown`) or stopped by SIGTERM alone.

mod common;

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serena_tray::core::model::{ProcessId, State, ZombieReason};
use serena_tray::core::probe::Prober;
use serena_tray::core::reaper::{reap, Outcome, ReapError, Timings};
use serena_tray::core::Core;
use std::process::Command;
use std::time::{Duration, Instant};

const FAKE_STARTUP: Duration = Duration::from_secs(20);
const REAL_STARTUP: Duration = Duration::from_secs(90);

fn prober() -> Prober {
    Prober::new(Duration::from_secs(2))
}

/// Quick timings for processes that are known to need every step.
fn quick() -> Timings {
    Timings {
        shutdown_wait: Duration::from_millis(500),
        term_wait: Duration::from_millis(700),
        verify_wait: Duration::from_secs(3),
    }
}

/// Generous timings for real Serena: what is tested is which step ends it, not how fast.
fn patient() -> Timings {
    Timings {
        shutdown_wait: Duration::from_secs(15),
        term_wait: Duration::from_secs(10),
        verify_wait: Duration::from_secs(5),
    }
}

/// The identity of a live process.
fn identity(pid: u32) -> ProcessId {
    snapshot().get(pid).expect("process in the table").id()
}

/// The dashboard port of `pid` once the core has found it answering.
fn dashboard_port(core: &Core, pid: u32, timeout: Duration) -> u16 {
    wait_for("the dashboard to answer", timeout, || {
        block_on(core.refresh())
            .expect("refresh")
            .into_iter()
            .find(|i| i.pid == pid && i.last_heartbeat.is_some())
            .and_then(|i| i.port)
    })
}

/// Waits until none of `pids` is alive (a zombie left for its parent to reap counts as gone);
/// false if one still is after 5 s.
fn all_gone(pids: &[u32]) -> bool {
    poll(Duration::from_millis(50), Duration::from_secs(5), || {
        (!pids.iter().any(|p| alive(*p))).then_some(())
    })
    .is_some()
}

#[test]
fn fake_with_a_child_tree_is_shut_down_and_its_children_terminated() {
    let home = Home::new();
    let mut reaper = Reaper::default();
    let fake = reaper.adopt(spawn_fake(&home, &[], &[("FAKE_SERENA_CHILDREN", "2")]));
    let children = wait_for("two children", FAKE_STARTUP, || {
        Some(descendants(fake)).filter(|d| d.len() == 2)
    });
    for c in &children {
        reaper.watch(*c); // they leave our tree once the fake dies
    }
    let core = home.core(1.0);
    let port = dashboard_port(&core, fake, FAKE_STARTUP);

    let report = block_on(reap(
        identity(fake),
        Some(port),
        &prober(),
        &Timings::default(),
    ))
    .expect("reaped");
    assert_eq!(report.outcome, Outcome::ShutDown, "{report:?}");
    assert_eq!(report.pid, fake);
    assert_eq!(report.tree.first(), Some(&fake), "root first: {report:?}");
    let mut tree = report.tree.clone();
    tree.sort();
    let mut expected = vec![fake, children[0], children[1]];
    expected.sort();
    assert_eq!(tree, expected);
    // The fake exited on its own; its children (re-parented, in their own sessions) were TERMed
    // from the snapshot.
    assert!(!report.signalled_term.contains(&fake), "{report:?}");
    let mut termed = report.signalled_term.clone();
    termed.sort();
    let mut kids = children.clone();
    kids.sort();
    assert_eq!(termed, kids, "{report:?}");
    assert!(report.signalled_kill.is_empty(), "{report:?}");
    assert!(report.survivors.is_empty());
    assert!(all_gone(&expected), "something of the tree survived");
}

#[test]
fn a_fake_that_ignores_sigterm_dies_by_sigkill() {
    let home = Home::new();
    let mut reaper = Reaper::default();
    let fake = reaper.adopt(spawn_fake(
        &home,
        &[],
        &[
            ("FAKE_SERENA_IGNORE_TERM", "1"),
            ("FAKE_SERENA_CHILDREN", "1"),
        ],
    ));
    let children = wait_for("its child", FAKE_STARTUP, || {
        Some(descendants(fake)).filter(|d| d.len() == 1)
    });
    reaper.watch(children[0]);
    // Once the dashboard answers, the fake has set SIGTERM to be ignored.
    let core = home.core(1.0);
    dashboard_port(&core, fake, FAKE_STARTUP);

    let started = Instant::now();
    let report = block_on(reap(identity(fake), None, &prober(), &quick())).expect("reaped");
    assert_eq!(report.outcome, Outcome::Killed, "{report:?}");
    assert!(report.signalled_term.contains(&fake), "{report:?}");
    assert!(report.signalled_term.contains(&children[0]), "{report:?}");
    // The fake ignores SIGTERM, and so does its child (started with SIGTERM blocked).
    assert_eq!(report.signalled_kill, vec![fake, children[0]], "{report:?}");
    assert!(all_gone(&[fake, children[0]]));
    // No dashboard port given: no shutdown wait, straight to TERM.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

/// What the default escalation may take at most: the shutdown wait, SIGTERM's wait, SIGKILL's
/// verification, and a second of slack for a shared machine.
fn escalation_limit() -> Duration {
    let t = Timings::default();
    t.shutdown_wait + t.term_wait + t.verify_wait + Duration::from_secs(1)
}

#[test]
fn a_serena_that_ignores_sigterm_is_killed_within_the_escalation_time() {
    let home = Home::new();
    let mut reaper = Reaper::default();
    // No dashboard to ask (it lost the port race): straight to SIGTERM, which it ignores.
    let env = [
        ("FAKE_SERENA_IGNORE_TERM", "1"),
        ("FAKE_SERENA_NO_DASHBOARD", "1"),
        ("FAKE_SERENA_CHILDREN", "1"),
    ];
    let fake = reaper.adopt(spawn_fake(&home, &[], &env));
    // Its child starts once its own SIGTERM is ignored.
    let child = wait_for("its child", FAKE_STARTUP, || {
        descendants(fake).first().copied()
    });
    reaper.watch(child);

    let started = Instant::now();
    let report = block_on(reap(identity(fake), None, &prober(), &Timings::default()));
    let took = started.elapsed();
    eprintln!("a Serena that ignores SIGTERM: {took:?}, {report:?}");
    let report = report.expect("reaped");
    assert_eq!(report.outcome, Outcome::Killed, "{report:?}");
    assert!(report.signalled_kill.contains(&fake), "{report:?}");
    assert!(all_gone(&[fake, child]));
    assert!(took <= escalation_limit(), "{took:?}");
}

#[test]
fn a_serena_whose_language_server_ignores_sigterm_is_reaped_within_the_escalation_time() {
    let home = Home::new();
    let mut reaper = Reaper::default();
    let env = [
        ("FAKE_SERENA_CHILDREN_IGNORE_TERM", "1"),
        ("FAKE_SERENA_CHILDREN", "1"),
    ];
    let fake = reaper.adopt(spawn_fake(&home, &[], &env));
    let child = wait_for("its child", FAKE_STARTUP, || {
        descendants(fake).first().copied()
    });
    reaper.watch(child);
    let port = dashboard_port(&home.core(1.0), fake, FAKE_STARTUP);

    let started = Instant::now();
    let report = block_on(reap(
        identity(fake),
        Some(port),
        &prober(),
        &Timings::default(),
    ));
    let took = started.elapsed();
    eprintln!("a Serena whose language server ignores SIGTERM: {took:?}, {report:?}");
    let report = report.expect("reaped");
    // The Serena obeyed its dashboard; its language server took SIGTERM and then SIGKILL.
    assert_eq!(report.outcome, Outcome::ShutDown, "{report:?}");
    assert!(report.signalled_term.contains(&child), "{report:?}");
    assert_eq!(report.signalled_kill, vec![child], "{report:?}");
    assert!(all_gone(&[fake, child]));
    assert!(took <= escalation_limit(), "{took:?}");
}

#[test]
fn a_reused_pid_is_already_gone_and_never_signalled() {
    let home = Home::new();
    let mut reaper = Reaper::default();
    let sleeper = reaper.adopt(Command::new("sleep").arg("600").spawn().expect("sleep"));
    let real = identity(sleeper);
    let impostor = ProcessId {
        pid: sleeper,
        start_time: real.start_time - 100,
    };
    let report = block_on(reap(impostor, None, &prober(), &quick())).expect("no error");
    assert_eq!(report.outcome, Outcome::AlreadyGone);
    assert!(report.tree.is_empty() && report.signalled_term.is_empty());
    assert!(report.signalled_kill.is_empty());
    assert!(
        alive(sleeper),
        "the process now holding the PID was signalled"
    );

    // Even a live Serena is left alone, dashboard included, if it is not the process asked for.
    let fake = reaper.adopt(spawn_fake(&home, &[], &[]));
    let core = home.core(1.0);
    let port = dashboard_port(&core, fake, FAKE_STARTUP);
    let earlier = ProcessId {
        pid: fake,
        start_time: identity(fake).start_time - 100,
    };
    let report = block_on(reap(earlier, Some(port), &prober(), &quick())).expect("no error");
    assert_eq!(report.outcome, Outcome::AlreadyGone);
    // That nothing happens is what is asserted, so this waits for no event: a shutdown, had one
    // been sent, ends the fake 0.2 s after its answer; alive 0.5 s on, it was sent none.
    std::thread::sleep(Duration::from_millis(500));
    assert!(alive(fake), "a reused PID's process was stopped");
    assert!(
        block_on(prober().heartbeat(port)).is_ok(),
        "no shutdown was sent"
    );
}

#[test]
fn another_instances_dashboard_port_is_never_asked_to_shut_down() {
    let home = Home::new();
    let mut reaper = Reaper::default();
    let target = reaper.adopt(spawn_fake(&home, &[], &[]));
    let bystander = reaper.adopt(spawn_fake(&home, &[], &[]));
    let core = home.core(1.0);
    dashboard_port(&core, target, FAKE_STARTUP);
    let other_port = dashboard_port(&core, bystander, FAKE_STARTUP);

    // A stale port that another instance holds now: the target is not asked, it is TERMed.
    let report = block_on(reap(
        identity(target),
        Some(other_port),
        &prober(),
        &quick(),
    ))
    .expect("reaped");
    assert_eq!(report.outcome, Outcome::Terminated, "{report:?}");
    assert!(all_gone(&[target]));
    // That nothing happens is what is asserted, so this waits for no event: a shutdown, had one
    // been sent, ends the fake 0.2 s after its answer; alive 0.5 s on, it was sent none.
    std::thread::sleep(Duration::from_millis(500));
    assert!(alive(bystander), "the other instance was stopped");
    assert!(block_on(prober().heartbeat(other_port)).is_ok());
}

#[test]
fn a_process_that_is_not_serena_is_refused() {
    let mut reaper = Reaper::default();
    let sleeper = reaper.adopt(Command::new("sleep").arg("600").spawn().expect("sleep"));
    match block_on(reap(identity(sleeper), None, &prober(), &quick())) {
        Err(ReapError::NotSerena { pid }) => assert_eq!(pid, sleeper),
        other => panic!("expected NotSerena, got {other:?}"),
    }
    // That nothing happens is what is asserted, so this waits for no event: a signal, had one
    // been sent before the refusal, ends `sleep` at once; alive 0.3 s on, it was sent none.
    std::thread::sleep(Duration::from_millis(300));
    assert!(alive(sleeper), "a non-Serena process was signalled");
}

#[test]
fn an_orphaned_real_serena_is_reaped_with_its_language_server() {
    let home = Home::new();
    let mut reaper = Reaper::default();
    // The test holds Serena's stdin open: killing the client closes nothing.
    let (client_pid, serena, _held_stdin) = client_with_serena(&home, &mut reaper, "x");
    let ls = wait_for("the language server", REAL_STARTUP, || {
        language_server(serena)
    });
    reaper.watch(ls);
    let core = home.core(1.0);
    let port = dashboard_port(&core, serena, REAL_STARTUP);

    kill(Pid::from_raw(client_pid as i32), Signal::SIGKILL).expect("kill client");
    if let Some(c) = reaper.child(client_pid) {
        let _ = c.wait();
    }
    let orphan = wait_for("the orphan to turn red", Duration::from_secs(30), || {
        block_on(core.refresh())
            .expect("refresh")
            .into_iter()
            .find(|i| i.pid == serena && i.state == State::Zombie)
    });
    assert_eq!(orphan.state_reason, Some(ZombieReason::Orphaned));
    assert_eq!(orphan.port, Some(port));
    assert!(alive(serena) && alive(ls));

    let started = Instant::now();
    let report = block_on(reap(
        orphan.process_id(),
        orphan.port,
        &prober(),
        &Timings::default(),
    ))
    .expect("reaped");
    eprintln!("real orphan, {:?}: {report:?}", started.elapsed());
    assert_eq!(report.outcome, Outcome::ShutDown, "{report:?}");
    assert!(
        report.tree.contains(&serena) && report.tree.contains(&ls),
        "{report:?}"
    );
    assert!(!report.signalled_term.contains(&serena), "{report:?}");
    assert!(report.signalled_kill.is_empty(), "{report:?}");
    assert!(
        all_gone(&[serena, ls]),
        "Serena or its language server survived"
    );
    assert!(
        block_on(prober().heartbeat(port)).is_err(),
        "the dashboard still answers"
    );
}

#[test]
fn a_real_serena_without_a_dashboard_port_is_terminated_with_its_language_server() {
    let home = Home::new();
    let project = home.jedi_project("x");
    let mut reaper = Reaper::default();
    let (child, _stdin) = spawn_serena(&home, &["--project", project.to_str().expect("utf8")]);
    let serena = reaper.adopt(child);
    let ls = wait_for("the language server", REAL_STARTUP, || {
        language_server(serena)
    });
    reaper.watch(ls);
    let core = home.core(1.0);
    dashboard_port(&core, serena, REAL_STARTUP);

    let started = Instant::now();
    let report = block_on(reap(identity(serena), None, &prober(), &patient())).expect("reaped");
    eprintln!("real, SIGTERM, {:?}: {report:?}", started.elapsed());
    assert_eq!(report.outcome, Outcome::Terminated, "{report:?}");
    assert!(report.signalled_term.contains(&serena), "{report:?}");
    assert!(report.tree.contains(&ls), "{report:?}");
    assert!(report.signalled_kill.is_empty(), "{report:?}");
    assert!(
        all_gone(&[serena, ls]),
        "Serena or its language server survived"
    );
}
