//! The refresh's decisions, over scans built here: no processes, no sockets, no files. Each test
//! runs `plan` and `apply` as a refresh does, answering the planned probes itself.

use super::apply::{apply, Decisions};
use super::plan::{plan, ProbeJob, ProbeResult};
use super::scan::{serena_candidates, Scan};
use super::tracked::{Model, OverviewFor};
use crate::core::events::Event;
use crate::core::model::{
    Cost, Epoch, Instance, ProcessId, Registration, Source, State, ZombieReason,
};
use crate::core::probe::{ConfigSummary, LogStatus};
use crate::core::procs::{Proc, Snapshot};
use crate::core::registry::{write_entries, RegistryEntry};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

mod clock;

const GRACE: Duration = Duration::from_secs(10);
/// "Now" at the first refresh of every test.
const T0: Epoch = 1_700_000_000.0;
/// A dashboard port.
const DASH: u16 = 24282;

fn proc(pid: u32, ppid: u32, started: Epoch, name: &str, cmdline: &str) -> Proc {
    Proc {
        pid,
        ppid: Some(ppid),
        start_time: started as u64,
        name: name.into(),
        cmdline: cmdline.split_whitespace().map(String::from).collect(),
        cwd: None,
    }
}

fn init() -> Proc {
    proc(1, 0, T0 - 10_000.0, "init", "/sbin/init")
}

/// An MCP client (an IDE) started a while ago.
fn client(pid: u32) -> Proc {
    proc(pid, 1, T0 - 500.0, "code", "/usr/bin/code")
}

/// A Serena MCP server started five seconds before the first refresh.
fn serena(pid: u32, ppid: u32, args: &str) -> Proc {
    let cmdline = format!("/venv/bin/python3 /venv/bin/serena start-mcp-server {args}");
    proc(pid, ppid, T0 - 5.0, "python3", &cmdline)
}

/// Records a tray-protocol registration of `pid` (its process started at `start_time`).
fn register(model: &mut Model, pid: u32, start_time: u64, port: u16, project: Option<String>) {
    let r = Registration {
        pid,
        start_time,
        port,
        project,
    };
    model.registrations.insert(port, r);
}

/// The machine as a scan sees it: processes, the registry's entries, listening ports.
#[derive(Clone, Default)]
struct World {
    procs: Vec<Proc>,
    registry: Vec<RegistryEntry>,
    ports: Vec<(u32, u16)>,
    /// PIDs inside the scope (`None`: all).
    admitted: Option<HashSet<u32>>,
    /// What each instance PID's tree costs.
    costs: HashMap<u32, Cost>,
}

impl World {
    fn of(procs: impl IntoIterator<Item = Proc>) -> World {
        World {
            procs: procs.into_iter().collect(),
            ..World::default()
        }
    }

    fn scan(&self) -> Scan {
        let snap = Snapshot::from_procs(self.procs.iter().cloned());
        let mut candidates = serena_candidates(&snap);
        if let Some(admitted) = &self.admitted {
            candidates.retain(|(p, _)| admitted.contains(&p.pid));
        }
        let mut ports: crate::core::sockets::PortMap = HashMap::new();
        for (pid, port) in &self.ports {
            ports.entry(*pid).or_default().insert(*port);
        }
        Scan {
            snap: snap.into(),
            registry_read: true,
            candidates,
            registry: self.registry.clone(),
            ports,
            admitted: self.admitted.clone(),
            costs: self.costs.clone(),
        }
    }
}

/// A dashboard that answers, with this active project.
fn answers(project: Option<&str>) -> ProbeResult {
    ProbeResult {
        port: Some(DASH),
        status: Some(LogStatus {
            max_idx: 0,
            active_project: project.map(String::from),
        }),
        overview: None,
    }
}

/// A dashboard port that does not answer.
fn silent() -> ProbeResult {
    ProbeResult {
        port: Some(DASH),
        ..ProbeResult::default()
    }
}

/// What the probe finds where no dashboard answers: the port it knew, or the one port the
/// process listens on, silent; else nothing.
fn unanswered(job: &ProbeJob) -> ProbeResult {
    let port = match (
        job.known.filter(|p| job.ports.contains(p)),
        job.ports.as_slice(),
    ) {
        (Some(p), _) | (None, &[p]) => Some(p),
        _ => None,
    };
    ProbeResult {
        port,
        ..ProbeResult::default()
    }
}

/// One refresh at `now`: plan, answer each planned probe from `dashboards` (by PID; silence
/// for the others), apply.
fn refresh(
    model: &mut Model,
    world: &World,
    now: Epoch,
    dashboards: &[(u32, ProbeResult)],
) -> Decisions {
    refresh_idle(model, world, now, dashboards, None)
}

/// [`refresh`] with `idle_shutdown_minutes` set to `idle`.
fn refresh_idle(
    model: &mut Model,
    world: &World,
    now: Epoch,
    dashboards: &[(u32, ProbeResult)],
    idle: Option<Duration>,
) -> Decisions {
    let scan = world.scan();
    let jobs = plan(model, &scan, now);
    let results = jobs
        .iter()
        .map(|job| {
            let answer = dashboards.iter().find(|(pid, _)| *pid == job.key.pid);
            let result = answer.map_or_else(|| unanswered(job), |(_, r)| r.clone());
            (job.key, result)
        })
        .collect();
    apply(model, &scan, results, now, GRACE, idle)
}

fn instance(model: &Model, key: ProcessId) -> &Instance {
    match model.tracked.get(&key) {
        Some(t) => &t.inst,
        None => panic!("{key} is not tracked: {:?}", model.tracked.keys()),
    }
}

fn id(p: &Proc) -> ProcessId {
    p.id()
}

/// The events, one short line each: what a subscriber would see.
fn said(d: &Decisions) -> Vec<String> {
    let state = |s: State, r: Option<ZombieReason>| match r {
        Some(r) => format!("{s}({r})"),
        None => s.to_string(),
    };
    d.events
        .iter()
        .map(|e| match e {
            Event::InstanceAdded { instance: i } => {
                format!("added {} {}", i.pid, state(i.state, i.state_reason))
            }
            Event::StateChanged {
                pid,
                from,
                to,
                reason,
                ..
            } => format!("{pid}: {from} -> {}", state(*to, *reason)),
            Event::InstanceUpdated { instance: i } => format!("updated {}", i.pid),
            Event::InstanceRemoved { pid, .. } => format!("removed {pid}"),
            Event::CostChanged { pid, cost, .. } => match cost {
                Some(c) => format!("cost {pid} {} MB", c.memory_bytes >> 20),
                None => format!("cost {pid} gone"),
            },
            other => format!("{other:?}"),
        })
        .collect()
}

/// The registry's entries after a refresh's writes (as the file would hold them).
fn written(before: &[RegistryEntry], d: &Decisions) -> Vec<RegistryEntry> {
    let mut entries = before.to_vec();
    write_entries(&mut entries, &d.writes);
    entries
}

#[test]
fn a_serena_seen_for_the_first_time_is_live_without_a_project_and_announced() {
    let (code, s) = (client(100), serena(200, 100, ""));
    let mut world = World::of([init(), code.clone(), s.clone()]);
    world.ports = vec![(200, DASH)];
    let mut model = Model::default();

    let jobs = plan(&mut model, &world.scan(), T0);
    assert_eq!(
        jobs,
        vec![ProbeJob {
            key: id(&s),
            ports: vec![DASH],
            known: None,
            overview_for: OverviewFor::Unfetched,
        }]
    );
    let results = vec![(id(&s), answers(None))];
    let d = apply(&mut model, &world.scan(), results, T0, GRACE, None);

    assert_eq!(said(&d), ["added 200 live_no_project"]);
    let i = instance(&model, id(&s));
    assert_eq!((i.port, i.last_heartbeat), (Some(DASH), Some(T0)));
    assert_eq!(
        (i.client_pid, i.client_name.as_deref()),
        (Some(100), Some("code"))
    );
    assert_eq!((i.source, i.verified_serena), (Source::Discovery, true));
    assert_eq!(
        i.context.as_deref(),
        Some("desktop-app"),
        "Serena's default"
    );
    assert!(!d.rescan, "its dashboard is known");
    let entries = written(&[], &d);
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(
        (e.pid, e.port, e.state.as_str()),
        (200, Some(DASH), "live_no_project")
    );
    assert_eq!(e.started_at, T0 - 5.0);
    assert_eq!(e.last_heartbeat, T0);
}

#[test]
fn without_a_dashboard_the_project_comes_from_the_command_line() {
    // A working directory as the platform writes one.
    let cwd = if cfg!(windows) {
        r"C:\home\u"
    } else {
        "/home/u"
    };
    let mut relative = serena(201, 100, "--project w/other --context ide");
    relative.cwd = Some(cwd.into());
    let world = World::of([
        init(),
        client(100),
        serena(200, 100, "--project /w/demo/ --mode editing"),
        relative,
    ]);
    let mut model = Model::default();
    let d = refresh(&mut model, &world, T0, &[]);

    assert_eq!(
        said(&d),
        ["added 200 live_with_project", "added 201 live_with_project"]
    );
    let demo = instance(&model, ProcessId::of_record(200, T0 - 5.0));
    assert_eq!(demo.project_name.as_deref(), Some("demo"));
    assert_eq!(demo.project_path.as_deref(), Some("/w/demo/"));
    assert_eq!(demo.modes, ["editing"]);
    assert_eq!(demo.port, None);
    let other = instance(&model, ProcessId::of_record(201, T0 - 5.0));
    assert_eq!(other.project_name.as_deref(), Some("other"));
    let joined = Path::new(cwd).join("w").join("other");
    assert_eq!(other.project_path.as_deref(), joined.to_str());
    assert_eq!(other.context.as_deref(), Some("ide"));
    assert!(
        d.rescan,
        "young instances without a dashboard: look at the sockets again"
    );
}

#[test]
fn orphaned_at_first_sight_is_a_zombie_at_once_but_only_over_stdio() {
    let stdio = serena(200, 1, "");
    let http = serena(201, 1, "--transport streamable-http --port 8123");
    let world = World::of([init(), stdio.clone(), http.clone()]);
    let mut model = Model::default();
    let d = refresh(&mut model, &world, T0, &[]);

    assert_eq!(
        said(&d),
        ["added 200 zombie(orphaned)", "added 201 live_no_project"]
    );
    assert_eq!(instance(&model, id(&stdio)).client_pid, None);
    assert_eq!(
        instance(&model, id(&http)).mcp_url.as_deref(),
        Some("http://127.0.0.1:8123/mcp")
    );
    let entries = written(&[], &d);
    assert_eq!(entries[0].state, "zombie");
}

#[test]
fn orphaned_later_turns_zombie_only_after_the_grace() {
    let s = serena(200, 100, "");
    let mut world = World::of([init(), client(100), s.clone()]);
    world.ports = vec![(200, DASH)];
    let dash = [(200, answers(None))];
    let mut model = Model::default();
    refresh(&mut model, &world, T0, &dash);

    // The client exits; Serena is re-parented to init.
    let mut orphan = s.clone();
    orphan.ppid = Some(1);
    world.procs = vec![init(), orphan];
    let d = refresh(&mut model, &world, T0 + 1.0, &dash);
    assert_eq!(
        said(&d),
        Vec::<String>::new(),
        "within the grace: nothing to say"
    );
    assert_eq!(instance(&model, id(&s)).state, State::LiveNoProject);

    let d = refresh(&mut model, &world, T0 + 1.0 + GRACE.as_secs_f64(), &dash);
    assert_eq!(said(&d), ["200: live_no_project -> zombie(orphaned)"]);
    let i = instance(&model, id(&s));
    assert_eq!(i.state_since, T0 + 11.0);
    assert_eq!(
        i.client_name.as_deref(),
        Some("code"),
        "the client as first seen"
    );
}

#[test]
fn a_client_whose_pid_was_reused_is_gone_too() {
    let s = serena(200, 100, "");
    let mut world = World::of([init(), client(100), s.clone()]);
    let mut model = Model::default();
    refresh(&mut model, &world, T0, &[]);

    // PID 100 now names a younger process, and Serena still names 100 as its parent.
    world.procs[1] = proc(100, 1, T0 + 1.0, "bash", "bash");
    refresh(&mut model, &world, T0 + 2.0, &[]);
    let d = refresh(&mut model, &world, T0 + 12.0, &[]);
    assert_eq!(said(&d), ["200: live_no_project -> zombie(orphaned)"]);
}

#[test]
fn without_re_parenting_a_dead_parent_orphans_too() {
    // Windows keeps a dead parent's PID as the parent: no process has that PID any more.
    let at_first_sight = serena(200, 150, "");
    let later = serena(201, 100, "");
    let mut world = World::of([init(), client(100), at_first_sight, later.clone()]);
    let mut model = Model::default();
    let d = refresh(&mut model, &world, T0, &[]);
    assert_eq!(
        said(&d),
        ["added 200 zombie(orphaned)", "added 201 live_no_project"]
    );
    // Its client exits; its parent PID still names the client.
    world.procs.retain(|p| p.pid != 100);
    assert_eq!(
        world
            .procs
            .iter()
            .find(|p| p.pid == 201)
            .and_then(|p| p.ppid),
        Some(100)
    );
    refresh(&mut model, &world, T0 + 1.0, &[]);
    let d = refresh(&mut model, &world, T0 + 11.0, &[]);
    assert_eq!(said(&d), ["201: live_no_project -> zombie(orphaned)"]);
    assert_eq!(
        instance(&model, id(&later)).client_name.as_deref(),
        Some("code")
    );
}

#[test]
fn silence_past_the_grace_is_unresponsive_and_an_answer_brings_it_back() {
    let s = serena(200, 100, "");
    let mut world = World::of([init(), client(100), s.clone()]);
    world.ports = vec![(200, DASH)];
    let mut model = Model::default();
    refresh(&mut model, &world, T0, &[(200, answers(Some("demo")))]);

    // Its page is open, so its dashboard is asked every refresh (a steady one otherwise every
    // STEADY_PROBE_INTERVAL), and a silent one every refresh from then on.
    model.tracked.get_mut(&id(&s)).expect("tracked").viewed_at = Some(T0 + 3.0);
    let d = refresh(&mut model, &world, T0 + 4.0, &[(200, silent())]);
    assert_eq!(said(&d), Vec::<String>::new());
    assert!(
        d.rescan,
        "a silent dashboard may have moved: look at the sockets again"
    );
    let d = refresh(&mut model, &world, T0 + 9.0, &[(200, silent())]);
    assert_eq!(
        said(&d),
        Vec::<String>::new(),
        "the grace counts from the last answer"
    );

    let d = refresh(&mut model, &world, T0 + 10.0, &[(200, silent())]);
    assert_eq!(said(&d), ["200: live_with_project -> zombie(unresponsive)"]);
    assert_eq!(instance(&model, id(&s)).last_heartbeat, Some(T0));
    assert_eq!(written(&[], &d)[0].state, "zombie");

    let d = refresh(
        &mut model,
        &world,
        T0 + 12.0,
        &[(200, answers(Some("demo")))],
    );
    assert_eq!(said(&d), ["200: zombie -> live_with_project"]);
    let i = instance(&model, id(&s));
    assert_eq!((i.state_reason, i.last_heartbeat), (None, Some(T0 + 12.0)));
    assert!(!d.rescan);
}

#[test]
fn the_registrys_last_heartbeat_counts_towards_unresponsive() {
    let s = serena(200, 100, "");
    let mut world = World::of([init(), client(100), s.clone()]);
    world.ports = vec![(200, DASH)];
    let mut entry = RegistryEntry::new(200, T0 - 4.5);
    entry.last_heartbeat = T0 - 30.0;
    world.registry = vec![entry];
    let mut model = Model::default();
    let d = refresh(&mut model, &world, T0, &[(200, silent())]);
    assert_eq!(said(&d), ["added 200 zombie(unresponsive)"]);
}

#[test]
fn a_pid_reused_by_a_younger_serena_is_another_instance_and_the_old_record_turns_dead() {
    // Recorded by an earlier Serena that held PID 300; a younger one holds it now.
    let mut old = RegistryEntry::new(300, T0 - 1000.5);
    old.port = Some(24290);
    old.project_name = Some("old".into());
    old.last_heartbeat = T0 - 900.0;
    old.state = "live_with_project".into();
    let young = serena(300, 100, "");
    let mut world = World::of([init(), client(100), young.clone()]);
    world.registry = vec![old.clone()];
    let mut model = Model::default();

    let scan = world.scan();
    let jobs = plan(&mut model, &scan, T0);
    assert_eq!(
        jobs.iter().map(|j| j.key).collect::<Vec<_>>(),
        [id(&young)],
        "only the live process is asked"
    );
    let d = apply(&mut model, &scan, Vec::new(), T0, GRACE, None);

    assert_eq!(
        said(&d),
        ["added 300 zombie(dead)", "added 300 live_no_project"]
    );
    let dead = instance(&model, ProcessId::of_record(300, T0 - 1000.5));
    assert_eq!(
        (dead.port, dead.project_name.as_deref()),
        (Some(24290), Some("old"))
    );
    assert!(!dead.verified_serena, "a dead record is never signalled");
    assert_eq!(
        instance(&model, id(&young)).last_heartbeat,
        None,
        "not the old one's"
    );

    let entries = written(&world.registry, &d);
    assert_eq!(entries.len(), 2);
    let (kept, added) = (&entries[0], &entries[1]);
    assert_eq!(kept.started_at, old.started_at);
    assert_eq!(kept.state, "zombie", "only its state is ours to write");
    assert_eq!(
        (kept.port, kept.project_name.as_deref(), kept.last_heartbeat),
        (Some(24290), Some("old"), T0 - 900.0)
    );
    assert_eq!((added.pid, added.started_at), (300, T0 - 5.0));
}

#[test]
fn an_instance_seen_to_exit_is_removed_with_its_entry_even_when_its_pid_lives_on() {
    let s = serena(200, 100, "");
    let mut world = World::of([init(), client(100), s.clone()]);
    world.ports = vec![(200, DASH)];
    let mut model = Model::default();
    let d = refresh(&mut model, &world, T0, &[(200, answers(None))]);
    world.registry = written(&[], &d);

    // Serena exited; a younger, unrelated process got PID 200 and listens somewhere.
    world.procs[2] = proc(200, 1, T0 + 1.0, "nginx", "nginx");
    world.ports = vec![(200, 8080)];
    let scan = world.scan();
    assert!(
        plan(&mut model, &scan, T0 + 2.0).is_empty(),
        "nobody is asked"
    );
    let d = apply(&mut model, &scan, Vec::new(), T0 + 2.0, GRACE, None);

    assert_eq!(said(&d), ["removed 200"]);
    assert!(model.tracked.is_empty());
    assert_eq!(d.writes.remove, [id(&s)]);
    assert!(written(&world.registry, &d).is_empty());
}

#[test]
fn a_dead_record_pruned_by_someone_else_disappears() {
    let mut world = World::of([init()]);
    world.registry = vec![RegistryEntry::new(400, T0 - 50.0)];
    let mut model = Model::default();
    let d = refresh(&mut model, &world, T0, &[]);
    assert_eq!(said(&d), ["added 400 zombie(dead)"]);
    let d = refresh(&mut model, &world, T0 + 1.0, &[]);
    assert_eq!(said(&d), Vec::<String>::new());

    world.registry.clear();
    let d = refresh(&mut model, &world, T0 + 2.0, &[]);
    assert_eq!(said(&d), ["removed 400"]);
    assert!(model.tracked.is_empty());
    assert!(d.writes.upsert.is_empty() && d.writes.remove.is_empty());
}

#[test]
fn a_registered_serena_takes_the_registrations_project_until_its_dashboard_answers() {
    let s = serena(200, 100, "--project /w/cmdline");
    let mut world = World::of([init(), client(100), s.clone()]);
    world.ports = vec![(200, DASH)];
    let mut model = Model::default();
    register(
        &mut model,
        200,
        s.start_time,
        DASH,
        Some("registered".into()),
    );
    let d = refresh(&mut model, &world, T0, &[]);
    assert_eq!(said(&d), ["added 200 live_with_project"]);
    let i = instance(&model, id(&s));
    assert_eq!(i.project_name.as_deref(), Some("registered"));
    assert_eq!((i.source, i.verified_serena), (Source::TrayProtocol, true));
    assert_eq!(d.writes.upsert.len(), 1, "a verified Serena is recorded");

    let d = refresh(
        &mut model,
        &world,
        T0 + 1.0,
        &[(200, answers(Some("answered")))],
    );
    assert_eq!(said(&d), ["updated 200"]);
    assert_eq!(
        instance(&model, id(&s)).project_name.as_deref(),
        Some("answered")
    );

    model.registrations.clear();
    refresh(
        &mut model,
        &world,
        T0 + 2.0,
        &[(200, answers(Some("answered")))],
    );
    assert_eq!(instance(&model, id(&s)).source, Source::Discovery);
}

#[test]
fn a_registration_ends_when_its_pid_names_another_process() {
    let s = serena(200, 100, "--project /w/cmdline");
    let mut world = World::of([init(), client(100), s.clone()]);
    world.ports = vec![(200, DASH)];
    let mut model = Model::default();
    // Registered by an older process that held PID 200.
    register(
        &mut model,
        200,
        s.start_time - 30,
        DASH,
        Some("theirs".into()),
    );
    refresh(&mut model, &world, T0, &[]);
    let i = instance(&model, id(&s));
    assert_eq!(i.source, Source::Discovery, "not the registered process");
    assert_ne!(i.project_name.as_deref(), Some("theirs"));
    assert!(
        model.registrations.is_empty(),
        "the registration is dropped"
    );
}

#[test]
fn a_registration_that_is_not_serena_is_shown_but_never_recorded_or_trusted() {
    let other = proc(500, 1, T0 - 60.0, "node", "node server.js");
    let mut world = World::of([init(), other.clone()]);
    world.ports = vec![(500, 24300)];
    let mut model = Model::default();
    register(&mut model, 500, other.start_time, 24300, None);
    let d = refresh(&mut model, &world, T0, &[]);
    assert_eq!(said(&d), ["added 500 live_no_project"]);
    let i = instance(&model, id(&other));
    assert_eq!((i.port, i.verified_serena), (Some(24300), false));
    assert_eq!(
        (i.source, i.context.as_deref()),
        (Source::TrayProtocol, None)
    );
    assert!(d.writes.upsert.is_empty(), "not in the shared file");

    // Its process exits: the registration goes with it.
    world.procs.pop();
    let d = refresh(&mut model, &world, T0 + 1.0, &[]);
    assert_eq!(said(&d), ["removed 500"]);
    assert!(model.registrations.is_empty());
}

#[test]
fn an_entry_removed_while_a_refresh_ran_is_not_written_back() {
    let (a, b) = (serena(200, 100, ""), serena(201, 100, ""));
    let mut world = World::of([init(), client(100), a.clone(), b.clone()]);
    world.registry = vec![RegistryEntry::new(200, T0 - 4.5)];
    let mut model = Model::default();
    let d = refresh(&mut model, &world, T0, &[]);

    let known: Vec<(u32, bool)> = d
        .writes
        .upsert
        .iter()
        .map(|u| (u.key.pid, u.known))
        .collect();
    assert_eq!(known, [(200, true), (201, false)]);
    // A kill removed 200's entry after this refresh read the file: it stays removed, and the
    // instance this refresh saw first is added.
    let entries = written(&[], &d);
    assert_eq!(entries.iter().map(|e| e.pid).collect::<Vec<_>>(), [201]);
}

#[test]
fn only_what_is_shown_changing_is_an_event() {
    let s = serena(200, 100, "");
    let mut world = World::of([init(), client(100), s.clone()]);
    world.ports = vec![(200, DASH)];
    let mut model = Model::default();
    refresh(&mut model, &world, T0, &[(200, answers(Some("a")))]);

    let d = refresh(&mut model, &world, T0 + 10.0, &[(200, answers(Some("a")))]);
    assert_eq!(
        said(&d),
        Vec::<String>::new(),
        "an unchanged refresh says nothing"
    );

    let mut busy = answers(Some("a"));
    if let Some(st) = busy.status.as_mut() {
        st.max_idx = 7;
    }
    let d = refresh(&mut model, &world, T0 + 20.0, &[(200, busy)]);
    assert_eq!(
        said(&d),
        Vec::<String>::new(),
        "activity is a time, not an event"
    );
    assert_eq!(instance(&model, id(&s)).last_activity, Some(T0 + 20.0));

    let mut with_overview = answers(Some("b"));
    with_overview.overview = Some(ConfigSummary {
        project_name: Some("b".into()),
        project_path: Some("/w/b".into()),
        context: Some("agent".into()),
        modes: vec!["planning".into()],
    });
    let d = refresh(&mut model, &world, T0 + 30.0, &[(200, with_overview)]);
    assert_eq!(said(&d), ["updated 200"]);
    let i = instance(&model, id(&s));
    assert_eq!(i.project_path.as_deref(), Some("/w/b"));
    assert_eq!(
        (i.context.as_deref(), i.modes.as_slice()),
        (Some("agent"), &["planning".to_string()][..])
    );
    let jobs = plan(&mut model, &world.scan(), T0 + 40.0);
    assert_eq!(jobs[0].known, Some(DASH));
    assert!(
        jobs[0].overview_for.is_current(&Some("b".into())),
        "fetched for b"
    );
    assert!(!jobs[0].overview_for.is_current(&None));

    let d = refresh(&mut model, &world, T0 + 50.0, &[(200, answers(None))]);
    assert_eq!(said(&d), ["200: live_with_project -> live_no_project"]);
}

#[test]
fn a_launched_session_is_starting_until_its_dashboard_answers_and_its_mcp_port_listens() {
    // The launched process is a wrapper (like uvx); Serena runs under it.
    let wrapper = proc(700, 100, T0 - 6.0, "uvx", "uvx serena");
    let s = serena(701, 700, "--transport streamable-http --port 8123");
    let mut world = World::of([init(), client(100), wrapper.clone(), s.clone()]);
    let mut model = Model::default();
    model.launching.insert(id(&wrapper));
    model.sessions.insert(id(&wrapper), "session-1".into());
    model.sessions.insert(id(&s), "session-1".into());

    let d = refresh(&mut model, &world, T0, &[]);
    assert_eq!(said(&d), ["added 701 starting"]);
    let t = &model.tracked[&id(&s)];
    assert_eq!(t.launch_root, Some(id(&wrapper)));
    assert_eq!(t.inst.source, Source::Session);
    assert_eq!(
        written(&[], &d)[0].state,
        "unknown",
        "the seed has no word for starting"
    );
    assert!(d.rescan);

    world.ports = vec![(701, DASH)];
    let d = refresh(&mut model, &world, T0 + 1.0, &[(701, answers(None))]);
    assert_eq!(
        said(&d),
        ["updated 701"],
        "answers, but its MCP port does not listen yet"
    );
    assert_eq!(instance(&model, id(&s)).state, State::Starting);
    assert!(d.pending, "a start is followed closely");

    world.ports.push((701, 8123));
    let scan = world.scan();
    let jobs = plan(&mut model, &scan, T0 + 2.0);
    assert_eq!(
        jobs[0].ports,
        [DASH],
        "the MCP port is not probed as a dashboard"
    );
    let d = apply(
        &mut model,
        &scan,
        vec![(id(&s), answers(None))],
        T0 + 2.0,
        GRACE,
        None,
    );
    assert_eq!(said(&d), ["701: starting -> live_no_project"]);

    // Launched: the mark goes, the instance stays.
    model.launching.clear();
    let d = refresh(&mut model, &world, T0 + 3.0, &[(701, answers(None))]);
    assert_eq!(said(&d), Vec::<String>::new());
    assert_eq!(model.tracked[&id(&s)].launch_root, None);
}

#[test]
fn nothing_outside_the_scope_is_seen() {
    let (mine, theirs) = (serena(200, 100, ""), serena(300, 100, ""));
    let mut world = World::of([init(), client(100), mine.clone(), theirs.clone()]);
    world.admitted = Some(HashSet::from([200]));
    world.registry = vec![RegistryEntry::new(300, T0 - 4.5)];
    let mut model = Model::default();
    register(&mut model, 300, theirs.start_time, DASH, None);
    let d = refresh(&mut model, &world, T0, &[]);
    assert_eq!(said(&d), ["added 200 live_no_project"]);
    assert_eq!(
        model.tracked.keys().copied().collect::<Vec<_>>(),
        [id(&mine)]
    );
    assert!(
        model.registrations.is_empty(),
        "a registration from outside is dropped"
    );
    assert_eq!(d.writes.upsert.len(), 1);
}

#[test]
fn a_steady_refresh_loop_does_not_rewrite_the_heartbeat_every_second() {
    let s = serena(200, 100, "");
    let mut world = World::of([init(), client(100), s.clone()]);
    world.ports = vec![(200, DASH)];
    let dash = [(200, answers(None))];
    let mut model = Model::default();
    let d = refresh(&mut model, &world, T0, &dash);
    world.registry = written(&[], &d);

    let d = refresh(&mut model, &world, T0 + 1.0, &dash);
    assert_eq!(
        written(&world.registry, &d),
        world.registry,
        "nothing to write"
    );
    // Asked every 10 s (STEADY_PROBE_INTERVAL); a heartbeat 15 s past the written one is
    // written.
    for t in [10.0, 15.0] {
        let d = refresh(&mut model, &world, T0 + t, &dash);
        assert_eq!(written(&world.registry, &d), world.registry, "not due yet");
    }
    let d = refresh(&mut model, &world, T0 + 20.0, &dash);
    world.registry = written(&world.registry, &d);
    assert_eq!(world.registry[0].last_heartbeat, T0 + 20.0);
}

#[test]
fn heartbeats_due_at_different_moments_are_written_together() {
    let (a, b) = (serena(200, 100, ""), serena(300, 101, ""));
    let mut world = World::of([init(), client(100), client(101), a.clone()]);
    world.ports = vec![(200, DASH), (300, DASH + 1)];
    let dash = [(200, answers(None)), (300, answers(None))];
    let mut model = Model::default();
    let d = refresh(&mut model, &world, T0, &dash);
    world.registry = written(&[], &d);
    // The second is first seen 7 s later.
    world.procs.push(b.clone());
    let d = refresh(&mut model, &world, T0 + 7.0, &dash);
    world.registry = written(&world.registry, &d);
    assert_eq!(world.registry.len(), 2);
    let mut writes = 0;
    for t in 8..=30 {
        let d = refresh(&mut model, &world, T0 + f64::from(t), &dash);
        let next = written(&world.registry, &d);
        if next != world.registry {
            writes += 1;
        }
        world.registry = next;
    }
    // The write that added the second carried the first's heartbeat too: the next, for both,
    // is due 15 s later, with what each last answered (asked every 10 s: T0 + 20, T0 + 17).
    assert_eq!(writes, 1, "one write for both, at T0 + 22");
    let beats: Vec<f64> = world.registry.iter().map(|e| e.last_heartbeat).collect();
    assert_eq!(beats, [T0 + 20.0, T0 + 17.0]);
}

fn cost_of(mb: u64) -> Cost {
    Cost {
        memory_bytes: mb << 20,
        cpu_percent: 1.0,
        process_count: 2,
        processes: Vec::new(),
    }
}

#[test]
fn a_cost_is_told_with_the_instance_and_again_only_when_it_moves_by_more_than_a_tenth() {
    let (code, s) = (client(100), serena(200, 100, ""));
    let mut world = World::of([init(), code, s.clone()]);
    world.ports = vec![(200, DASH)];
    world.costs.insert(200, cost_of(100));
    let mut model = Model::default();
    let dash = [(200, answers(Some("p")))];

    let d = refresh(&mut model, &world, T0, &dash);
    assert_eq!(said(&d), ["added 200 live_with_project"]);
    let added = match &d.events[0] {
        Event::InstanceAdded { instance } => instance.cost.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        added,
        Some(cost_of(100)),
        "the new instance carries its cost"
    );

    // Small moves, even adding up past a tenth of what was last told, one refresh at a time...
    world.costs.insert(200, cost_of(105));
    assert!(said(&refresh(&mut model, &world, T0 + 1.0, &dash)).is_empty());
    assert_eq!(
        instance(&model, id(&s)).cost,
        Some(cost_of(105)),
        "the API is current"
    );
    world.costs.insert(200, cost_of(109));
    assert!(said(&refresh(&mut model, &world, T0 + 2.0, &dash)).is_empty());
    // ...are told once the total exceeds a tenth of what the page shows.
    world.costs.insert(200, cost_of(111));
    assert_eq!(
        said(&refresh(&mut model, &world, T0 + 3.0, &dash)),
        ["cost 200 111 MB"]
    );
    assert!(said(&refresh(&mut model, &world, T0 + 4.0, &dash)).is_empty());
}

/// A dashboard that answers with a project and this log index (it moves when Serena works).
fn working(max_idx: i64) -> ProbeResult {
    ProbeResult {
        port: Some(DASH),
        status: Some(LogStatus {
            max_idx,
            active_project: Some("proj".into()),
        }),
        overview: None,
    }
}

/// The idle events among `d`'s: ("warning" | "shutdown", idle_since, idle_shutdown_at).
fn idle_events(d: &Decisions) -> Vec<(&'static str, Epoch, Epoch)> {
    d.events
        .iter()
        .filter_map(|e| {
            let (kind, i) = match e {
                Event::IdleWarning { instance } => ("warning", instance),
                Event::IdleShutdown { instance } => ("shutdown", instance),
                _ => return None,
            };
            Some((kind, i.idle_since?, i.idle_shutdown_at?))
        })
        .collect()
}

#[test]
fn under_launch_the_client_is_the_launchers_parent_and_its_idle_option_applies() {
    let launcher = proc(
        300,
        100,
        T0 - 6.0,
        "serena-tray",
        "/usr/bin/serena-tray launch --idle-shutdown-minutes 1 -- serena start-mcp-server",
    );
    let world = World::of([init(), client(100), launcher, serena(301, 300, "")]);
    let key = ProcessId {
        pid: 301,
        start_time: (T0 - 5.0) as u64,
    };
    let mut model = Model::default();
    let idle = |model: &mut Model, at: Epoch, idx: i64| {
        refresh_idle(model, &world, at, &[(301, working(idx))], None)
    };
    let d = idle(&mut model, T0, 0);
    assert!(idle_events(&d).is_empty());
    let i = instance(&model, key);
    assert_eq!(i.source, Source::Launch);
    assert_eq!(
        (i.client_pid, i.client_name.as_deref()),
        (Some(100), Some("code"))
    );
    assert_eq!(
        i.idle_shutdown_at, None,
        "not shown until its shutdown nears"
    );

    // One minute, announced a fifth of it (12 s) before: at T0 + 48.
    assert!(idle_events(&idle(&mut model, T0 + 47.0, 0)).is_empty());
    let next = |model: &Model| model.tracked.get(&key).expect("tracked").idle_next;
    assert_eq!(
        next(&model),
        Some(T0 + 48.0),
        "the loop looks at the announcement"
    );
    let d = idle(&mut model, T0 + 49.0, 0);
    assert!(d.pending, "the loop keeps its pace while a shutdown is due");
    assert_eq!(next(&model), Some(T0 + 60.0), "then at the shutdown");
    assert_eq!(idle_events(&d), [("warning", T0, T0 + 60.0)]);
    assert_eq!(
        d.events.len(),
        1,
        "the warning carries the instance: {:?}",
        d.events
    );
    assert_eq!(instance(&model, key).idle_shutdown_at, Some(T0 + 60.0));
    assert!(
        idle_events(&idle(&mut model, T0 + 50.0, 0)).is_empty(),
        "once"
    );

    // It does something: the clock starts again, and the page hears it is no longer idle.
    let d = idle(&mut model, T0 + 55.0, 7);
    assert!(idle_events(&d).is_empty());
    assert!(
        d.events.iter().any(|e| matches!(e, Event::InstanceUpdated { instance } if instance.idle_shutdown_at.is_none())),
        "{:?}",
        d.events
    );
    assert!(
        idle_events(&idle(&mut model, T0 + 60.0, 7)).is_empty(),
        "not due any more"
    );
    let d = idle(&mut model, T0 + 104.0, 7);
    assert_eq!(idle_events(&d), [("warning", T0 + 55.0, T0 + 115.0)]);
    let d = idle(&mut model, T0 + 115.0, 7);
    assert_eq!(idle_events(&d), [("shutdown", T0 + 55.0, T0 + 115.0)]);
    assert_eq!(next(&model), None, "nothing more to look at");
    assert!(!d.pending, "nothing under way");
    assert!(
        idle_events(&idle(&mut model, T0 + 116.0, 7)).is_empty(),
        "once"
    );
}

#[test]
fn idle_shutdown_is_off_by_default_the_setting_applies_and_a_session_or_launcher_overrides_it() {
    let pinned = proc(
        300,
        100,
        T0 - 6.0,
        "serena-tray",
        "serena-tray launch --idle-shutdown-minutes 0 -- serena start-mcp-server",
    );
    let world = World::of([
        init(),
        client(100),
        serena(200, 100, ""),
        pinned,
        serena(301, 300, ""),
        serena(400, 100, ""),
    ]);
    let answers: Vec<(u32, ProbeResult)> = [200, 301, 400].map(|p| (p, working(0))).into();
    let session = ProcessId {
        pid: 400,
        start_time: (T0 - 5.0) as u64,
    };
    let due = |idle: Option<Duration>| {
        let mut model = Model::default();
        model.session_idle.insert(session, Duration::from_secs(600));
        refresh_idle(&mut model, &world, T0, &answers, idle);
        let d = refresh_idle(&mut model, &world, T0 + 61.0, &answers, idle);
        let mut pids: Vec<u32> = d
            .events
            .iter()
            .filter_map(|e| match e {
                Event::IdleShutdown { instance } => Some(instance.pid),
                _ => None,
            })
            .collect();
        pids.sort();
        pids
    };
    assert_eq!(
        due(None),
        Vec::<u32>::new(),
        "off: nothing is ever shut down"
    );
    // A minute for all: not the launcher's pinned one (0: never), not the session (10 min).
    assert_eq!(due(Some(Duration::from_secs(60))), [200]);
}

#[test]
fn a_steady_dashboard_is_asked_every_ten_seconds_a_viewed_or_silent_one_every_refresh() {
    let s = serena(200, 100, "");
    let mut world = World::of([init(), client(100), s.clone()]);
    world.ports = vec![(200, DASH)];
    let mut model = Model::default();
    let asked = |model: &mut Model, world: &World, t: f64, answer: ProbeResult| {
        let scan = world.scan();
        let jobs = plan(model, &scan, T0 + t);
        let n = jobs.len();
        let results = jobs.iter().map(|j| (j.key, answer.clone())).collect();
        apply(model, &scan, results, T0 + t, GRACE, None);
        n
    };
    let times: Vec<usize> = (0..=20)
        .map(|t| asked(&mut model, &world, f64::from(t), answers(None)))
        .collect();
    let mut expected = [0; 21];
    for t in [0, 10, 20] {
        expected[t] = 1;
    }
    assert_eq!(times, expected);
    // Silent once asked: asked every refresh until it answers again.
    assert_eq!(asked(&mut model, &world, 30.0, silent()), 1);
    assert_eq!(asked(&mut model, &world, 31.0, silent()), 1);
    assert_eq!(asked(&mut model, &world, 32.0, answers(None)), 1);
    assert_eq!(asked(&mut model, &world, 33.0, answers(None)), 0);
    // Its page open (the page asks for its overview every second): every refresh, and for
    // VIEWED_FOR after the page's last ask.
    model.tracked.get_mut(&id(&s)).expect("tracked").viewed_at = Some(T0 + 33.5);
    let times: Vec<usize> = (34..=38)
        .map(|t| asked(&mut model, &world, f64::from(t), answers(None)))
        .collect();
    assert_eq!(times, [1, 1, 1, 0, 0]);
}

#[test]
fn a_launched_session_that_lost_the_dashboard_race_is_ready_once_its_mcp_port_has_listened_a_while()
{
    let s = serena(701, 100, "--transport streamable-http --port 8123");
    let mut world = World::of([init(), client(100), s.clone()]);
    let mut model = Model::default();
    model.launching.insert(id(&s));
    model.sessions.insert(id(&s), "session-1".into());
    let d = refresh(&mut model, &world, T0, &[]);
    assert_eq!(said(&d), ["added 701 starting"]);
    // Its MCP port listens, and nothing else: no dashboard (another Serena got the port).
    world.ports = vec![(701, 8123)];
    refresh(&mut model, &world, T0 + 1.0, &[]);
    refresh(&mut model, &world, T0 + 3.5, &[]);
    assert_eq!(instance(&model, id(&s)).state, State::Starting);
    let d = refresh(&mut model, &world, T0 + 4.0, &[]);
    assert_eq!(said(&d), ["701: starting -> live_no_project"]);
    assert_eq!(instance(&model, id(&s)).port, None);
}

#[test]
fn a_launched_session_whose_dashboard_is_slow_to_answer_stays_starting_until_it_does() {
    let s = serena(702, 100, "--transport streamable-http --port 8124");
    let mut world = World::of([init(), client(100), s.clone()]);
    let mut model = Model::default();
    model.launching.insert(id(&s));
    model.sessions.insert(id(&s), "session-1".into());
    refresh(&mut model, &world, T0, &[]);
    // Its MCP port listens beside two others, none of which answers yet (a busy machine): no
    // dashboard identified, but not a lost race either.
    world.ports = vec![(702, 8124), (702, DASH), (702, DASH + 1)];
    for t in [1.0, 3.0, 5.0, 9.0] {
        refresh(&mut model, &world, T0 + t, &[]);
        assert_eq!(instance(&model, id(&s)).port, None);
        assert_eq!(instance(&model, id(&s)).state, State::Starting, "at {t} s");
    }
    let d = refresh(&mut model, &world, T0 + 10.0, &[(702, answers(None))]);
    assert_eq!(said(&d), ["702: starting -> live_no_project"]);
    assert_eq!(instance(&model, id(&s)).port, Some(DASH));
}
