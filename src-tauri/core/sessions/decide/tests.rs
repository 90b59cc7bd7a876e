//! The instance manager's decisions over sessions built here: no processes, no files (but the
//! temporary directories a project path must name).

use super::*;
use crate::core::model::AsleepReason;

const T0: Epoch = 1_000_000.0;

fn session(id: &str, pid: u32) -> Session {
    Session {
        session_id: id.into(),
        host: "127.0.0.1".into(),
        port: 40000,
        url: "http://127.0.0.1:40000/mcp".into(),
        pid,
        start_time: 500,
        dashboard_url: None,
        dashboard_port: Some(24282),
        project_path: "/p".into(),
        context: None,
        modes: vec![],
        transport: Transport::StreamableHttp,
        created_at: T0,
        log_path: "/l".into(),
        ended_at: None,
        end_reason: None,
        lease_seconds: None,
        expires_at: None,
        idle_shutdown_minutes: None,
        shared: true,
        attached: vec![],
        linger_until: None,
        on_demand: false,
        sleep_minutes: None,
        last_used: None,
        asleep_since: None,
        asleep_reason: None,
        given_back_bytes: None,
    }
}

fn attachment(pid: u32) -> Attachment {
    Attachment {
        pid,
        start_time: 7,
        client_pid: None,
        client_name: None,
        since: T0,
        busy: false,
    }
}

fn request(project: &str) -> SessionRequest {
    SessionRequest {
        project_path: project.into(),
        ..SessionRequest::default()
    }
}

#[test]
fn project_paths_are_checked() {
    assert!(matches!(
        project_dir("relative/dir"),
        Err(SessionError::RelativePath(_))
    ));
    assert!(matches!(
        project_dir(""),
        Err(SessionError::RelativePath(_))
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-dir");
    assert!(matches!(
        project_dir(missing.to_str().unwrap_or_default()),
        Err(SessionError::MissingPath(_))
    ));
    let file = dir.path().join("f");
    std::fs::write(&file, "").expect("write");
    assert!(matches!(
        project_dir(file.to_str().unwrap_or_default()),
        Err(SessionError::NotADirectory(_))
    ));
    let ok = project_dir(dir.path().to_str().unwrap_or_default()).expect("ok");
    assert_eq!(Path::new(&ok), dir.path().canonicalize().expect("canon"));
}

#[test]
fn names_cannot_smuggle_options() {
    assert!(check_name("ide", "context").is_ok());
    assert!(check_name("--help", "context").is_err());
    assert!(check_name("", "mode").is_err());
    assert!(check_name("a\nb", "mode").is_err());
}

#[test]
fn a_request_says_what_it_wants_or_why_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let project = dir.path().to_str().unwrap_or_default();
    let plain = Wanted::of(&request(project)).expect("a plain request");
    assert_eq!(plain.transport, Transport::StreamableHttp);
    assert_eq!((plain.shared, plain.lease, plain.idle), (false, None, None));
    let full = Wanted::of(&SessionRequest {
        transport: Some("sse".into()),
        shared: Some(true),
        lease_seconds: Some(30.0),
        idle_shutdown_minutes: Some(0.5),
        modes: Some(vec!["b".into(), "a".into()]),
        ..request(project)
    })
    .expect("a full request");
    assert_eq!(full.transport, Transport::Sse);
    assert_eq!((full.shared, full.lease), (true, Some(30.0)));
    assert_eq!(full.idle, Some(Duration::from_secs(30)));
    assert_eq!(full.modes, ["b", "a"], "the modes go to Serena as asked");
    for bad in ["stdio", "http", ""] {
        let req = SessionRequest {
            transport: Some(bad.into()),
            ..request(project)
        };
        assert!(matches!(Wanted::of(&req), Err(SessionError::BadTransport(t)) if t == bad));
    }
    for lease in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let req = SessionRequest {
            lease_seconds: Some(lease),
            ..request(project)
        };
        assert!(
            matches!(Wanted::of(&req), Err(SessionError::BadLease(_))),
            "{lease}"
        );
    }
    let req = SessionRequest {
        idle_shutdown_minutes: Some(-1.0),
        ..request(project)
    };
    assert!(matches!(Wanted::of(&req), Err(SessionError::BadIdle(_))));
    let req = SessionRequest {
        context: Some("--x".into()),
        ..request(project)
    };
    assert!(matches!(Wanted::of(&req), Err(SessionError::BadName(..))));
}

#[test]
fn a_shared_session_serves_the_same_project_context_modes_and_transport() {
    let mut s = session("a", 10);
    s.modes = vec!["x".into(), "y".into()];
    let key = SharedKey::new(
        "/p",
        &None,
        &["y".into(), "x".into()],
        Transport::StreamableHttp,
    );
    let runs = |_| true;
    assert_eq!(
        shared_match([&s], &key, runs).map(|s| s.session_id.as_str()),
        Some("a"),
        "modes in another order are the same modes"
    );
    let other_context = SharedKey::new("/p", &Some("ide".into()), &s.modes, s.transport);
    assert!(shared_match([&s], &other_context, runs).is_none());
    let other_transport = SharedKey::new("/p", &None, &s.modes, Transport::Sse);
    assert!(shared_match([&s], &other_transport, runs).is_none());
    let other_project = SharedKey::new("/q", &None, &s.modes, s.transport);
    assert!(shared_match([&s], &other_project, runs).is_none());
    assert!(
        shared_match([&s], &key, |_| false).is_none(),
        "its Serena is gone"
    );
    let private = Session {
        shared: false,
        ..s.clone()
    };
    assert!(shared_match([&private], &key, runs).is_none());
    let ended = s.clone().ended(EndReason::Released, T0);
    assert!(shared_match([&ended], &key, runs).is_none());
}

#[test]
fn after_a_restart_only_running_sessions_stay_active() {
    let gone = session("gone", 10);
    let running = session("running", 11);
    let history = session("old", 12).ended(EndReason::Released, T0 - 5.0);
    let adopted = adopted(vec![gone, running, history], |id| id.pid == 11, T0);
    assert_eq!(adopted["gone"].end_reason, Some(EndReason::Exited));
    assert_eq!(adopted["gone"].ended_at, Some(T0));
    assert!(adopted["running"].is_active());
    assert_eq!(adopted["old"].end_reason, Some(EndReason::Released));
    assert_eq!(
        adopted["old"].ended_at,
        Some(T0 - 5.0),
        "history is not rewritten"
    );
}

#[test]
fn the_last_client_out_starts_the_linger_and_a_new_one_stops_it() {
    let mut s = session("a", 10);
    s.linger_until = Some(T0 + 60.0);
    attach(&mut s, attachment(20));
    attach(&mut s, attachment(21));
    attach(&mut s, attachment(20));
    assert_eq!(
        s.attached.iter().map(|a| a.pid).collect::<Vec<_>>(),
        [21, 20]
    );
    assert_eq!(s.linger_until, None);
    assert!(
        !detach(&mut s, 99, T0, 30.0),
        "not attached: nothing changes"
    );
    assert!(detach(&mut s, 21, T0, 30.0));
    assert_eq!(s.linger_until, None, "a client is left");
    assert!(detach(&mut s, 20, T0, 30.0));
    assert_eq!(s.linger_until, Some(T0 + 30.0));
    let mut ended = session("b", 11).ended(EndReason::Released, T0);
    attach(&mut ended, attachment(20));
    assert!(
        !detach(&mut ended, 20, T0, 30.0),
        "an ended session does not linger"
    );
    assert_eq!(ended.linger_until, None);
}

#[test]
fn after_a_restart_a_shared_session_without_clients_lingers_anew() {
    let mut sessions: BTreeMap<String, Session> = BTreeMap::new();
    let mut with_client = session("with", 10);
    with_client.attached.push(attachment(20));
    let lingering = Session {
        linger_until: Some(T0 - 1.0),
        ..session("lingering", 11)
    };
    let private = Session {
        shared: false,
        ..session("private", 12)
    };
    for s in [session("alone", 13), with_client, lingering, private] {
        sessions.insert(s.session_id.clone(), s);
    }
    linger_anew(&mut sessions, T0, 30.0);
    assert_eq!(sessions["alone"].linger_until, Some(T0 + 30.0));
    assert_eq!(sessions["with"].linger_until, None);
    assert_eq!(
        sessions["lingering"].linger_until,
        Some(T0 - 1.0),
        "kept, not restarted"
    );
    assert_eq!(sessions["private"].linger_until, None);
}

#[test]
fn leases_and_lingers_fall_due_and_the_next_one_is_known() {
    let lease_due = Session {
        expires_at: Some(T0),
        ..session("lease", 10)
    };
    let lease_later = Session {
        expires_at: Some(T0 + 50.0),
        ..session("later", 11)
    };
    let linger_due = Session {
        linger_until: Some(T0 - 1.0),
        ..session("linger", 12)
    };
    let mut linger_with_client = Session {
        linger_until: Some(T0 - 1.0),
        ..session("client", 13)
    };
    linger_with_client.attached.push(attachment(20));
    let linger_later = Session {
        linger_until: Some(T0 + 20.0),
        ..session("soon", 14)
    };
    let ended = Session {
        expires_at: Some(T0 - 100.0),
        ..session("ended", 15)
    }
    .ended(EndReason::Released, T0);
    let all = [
        &lease_due,
        &lease_later,
        &linger_due,
        &linger_with_client,
        &linger_later,
        &ended,
    ];
    let due = due(all, T0);
    assert_eq!(
        due.ends,
        [
            ("lease".to_string(), EndReason::LeaseExpired),
            ("linger".to_string(), EndReason::Unattached)
        ]
    );
    assert_eq!(due.next, Some(T0 + 20.0));
    assert_eq!(super::due([&ended], T0), Due::default());
}

#[test]
fn the_history_keeps_every_active_session_and_the_last_ended() {
    let mut all: Vec<Session> = (0..HISTORY_KEPT as u32 + 5)
        .map(|i| session(&format!("e{i}"), i).ended(EndReason::Exited, T0 + f64::from(i)))
        .collect();
    all.push(session("active", 9999));
    let kept = kept(all.iter());
    assert_eq!(kept.len(), HISTORY_KEPT + 1);
    assert!(kept.iter().any(|s| s.session_id == "active"));
    assert!(kept
        .iter()
        .all(|s| !["e0", "e1", "e2", "e3", "e4"].contains(&s.session_id.as_str())));
}

#[test]
fn only_an_active_session_is_acted_on_and_old_history_is_forgotten() {
    let mut sessions: BTreeMap<String, Session> = BTreeMap::new();
    sessions.insert("live".into(), session("live", 1));
    for i in 0..HISTORY_KEPT as u32 + 2 {
        let s = session(&format!("e{i}"), i + 10).ended(EndReason::Exited, T0 + f64::from(i));
        sessions.insert(s.session_id.clone(), s);
    }
    assert!(active(&mut sessions, "live").is_ok());
    assert!(matches!(
        active(&mut sessions, "e0"),
        Err(SessionError::Ended(_))
    ));
    assert!(matches!(
        active(&mut sessions, "nope"),
        Err(SessionError::UnknownSession(_))
    ));
    forget_old_history(&mut sessions);
    assert_eq!(sessions.len(), HISTORY_KEPT + 1);
    assert!(!sessions.contains_key("e0") && !sessions.contains_key("e1"));
    assert!(sessions.contains_key("live") && sessions.contains_key("e2"));
}

/// A shared session with one client, put to sleep after `minutes` without a call.
fn sleepy(id: &str, minutes: f64) -> Session {
    let mut s = Session {
        sleep_minutes: Some(minutes),
        last_used: Some(T0),
        ..session(id, 30)
    };
    s.attached.push(attachment(40));
    s
}

#[test]
fn a_shared_session_sleeps_after_its_minutes_without_a_call_unless_a_call_is_in_flight() {
    let s = sleepy("s", 15.0);
    assert_eq!(sleep_at(&s), Some(T0 + 900.0));
    assert_eq!(due([&s], T0 + 899.0).sleeps, Vec::<String>::new());
    assert_eq!(due([&s], T0 + 899.0).next, Some(T0 + 900.0));
    assert_eq!(due([&s], T0 + 900.0).sleeps, ["s"]);

    let mut busy = s.clone();
    assert!(touch(&mut busy, 40, true, T0 + 100.0));
    assert_eq!(sleep_at(&busy), None, "a call in flight keeps it awake");
    assert!(touch(&mut busy, 40, false, T0 + 200.0));
    assert_eq!(
        sleep_at(&busy),
        Some(T0 + 1100.0),
        "counted from the call's end"
    );
    assert!(!touch(&mut busy, 41, false, T0), "a client not attached");

    let never = Session {
        sleep_minutes: None,
        ..s.clone()
    };
    let no_clients = Session {
        attached: vec![],
        ..s.clone()
    };
    let private = Session {
        shared: false,
        ..s.clone()
    };
    for (what, s) in [
        ("never", never),
        ("no clients", no_clients),
        ("private", private),
    ] {
        assert_eq!(sleep_at(&s), None, "{what}");
    }
    let asleep = s.clone().asleep(AsleepReason::Unused, T0 + 900.0, Some(7));
    assert_eq!(sleep_at(&asleep), None, "asleep already");
}

#[test]
fn an_asleep_session_has_no_process_is_adopted_as_it_is_and_wakes_with_its_clients() {
    let s = sleepy("s", 1.0).asleep(AsleepReason::Unused, T0, Some(123));
    assert!(s.is_asleep() && !s.is_awake());
    assert_eq!((s.pid, s.port, s.url.as_str()), (0, 0, ""));
    let key = SharedKey::of_session(&s);
    assert!(shared_match([&s], &key, |_| true).is_none(), "not live");
    assert_eq!(
        asleep_match([&s], &key).map(|m| m.session_id.as_str()),
        Some("s")
    );
    let adopted = adopted(vec![s.clone()], |_| false, T0 + 5.0);
    assert!(adopted["s"].is_asleep(), "nothing runs, and nothing should");

    let woken = s.woken(session("new", 77), T0 + 10.0);
    assert!(woken.is_awake());
    assert_eq!((woken.session_id.as_str(), woken.pid), ("s", 77));
    assert_eq!(woken.attached.len(), 1, "its clients stay");
    assert_eq!(woken.last_used, Some(T0 + 10.0));
    assert_eq!(woken.given_back_bytes, None);
}

#[test]
fn a_session_ending_is_not_put_to_sleep_and_sleep_needs_a_shared_on_demand_request() {
    let mut s = sleepy("s", 1.0);
    s.expires_at = Some(T0);
    let due = due([&s], T0 + 60.0);
    assert_eq!(due.ends, [("s".to_string(), EndReason::LeaseExpired)]);
    assert!(due.sleeps.is_empty());

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_str().unwrap_or_default();
    let on_demand_private = SessionRequest {
        on_demand: Some(true),
        ..request(path)
    };
    assert!(matches!(
        Wanted::of(&on_demand_private),
        Err(SessionError::OnDemandUnshared)
    ));
    for (minutes, want) in [(0.0, Ok(None)), (0.5, Ok(Some(0.5))), (-1.0, Err(()))] {
        let req = SessionRequest {
            sleep_minutes: Some(minutes),
            shared: Some(true),
            ..request(path)
        };
        let got = Wanted::of(&req).map(|w| w.sleep_minutes).map_err(|_| ());
        assert_eq!(got, want, "{minutes}");
    }
}

#[test]
fn after_a_restart_a_shared_session_sleeps_counting_from_then_with_no_call_in_flight() {
    let mut s = sleepy("s", 1.0);
    s.last_used = Some(T0 - 3600.0);
    s.attached[0].busy = true;
    let adopted = adopted(vec![s], |_| true, T0);
    let s = &adopted["s"];
    assert_eq!(s.last_used, Some(T0));
    assert!(!s.attached[0].busy);
    assert_eq!(sleep_at(s), Some(T0 + 60.0), "not at once, and not never");
}

mod clock;
