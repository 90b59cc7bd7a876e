//! The Windows build, run: under Wine here (`bash .ci/windows`), and as it is on Windows.
//!
//! Real `serena-tray.exe`, the fake Serena (tests/bin/fake_serena.rs, `serena.exe`) with its
//! stand-in MCP client and its language-server children, and real files: listing and
//! classification, a client killed turning its Serena red after the grace, `kill` and `kill
//! --zombies` ending whole trees and nothing else, a reused PID never signalled, `launch` killed
//! outright taking its tree (the Job Object), `launch` ending its Serena when its client is
//! killed (the client's handle, measured and printed), the token and the registry replaced
//! while another process holds them (Windows' sharing rules), and the daemon stopped by Ctrl+C
//! leaving its files consistent.
//!
//! Hermetic as the Linux tests are: every process a test starts carries the test's scope marker
//! in its environment (`SERENA_TRAY_SCOPE`), every core and CLI run of the test sees only those,
//! and the test's [`Home`] ends whatever of them is left.
//!
//! What Wine does not do as Windows does is detected at run time and skipped with the reason
//! printed, never silently: Wine reports every socket's owner as PID 0 (its wineserver holds
//! them), so there is no port-to-PID map ([`port_map`]): no instance has a dashboard port, and
//! the reaper ends a tree with `TerminateProcess` without asking Serena first.
#![cfg(windows)]

#[path = "common/fake.rs"]
mod fake;
#[path = "common/wait.rs"]
mod wait;

use serde_json::{json, Value};
use serena_tray::core::files;
use serena_tray::core::model::{ProcessId, State, ZombieReason};
use serena_tray::core::procs::{self, Scope, Snapshot, Sys, SCOPE_VAR};
use serena_tray::core::registry::{Registry, RegistryEntry};
use serena_tray::core::{token, Core, Settings};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::windows::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::time::{Duration, Instant};
use wait::{block_on, wait_for, wait_for_every};

/// How long a fake or a CLI run may take to show up (Wine starts processes slowly when busy).
const STARTUP: Duration = Duration::from_secs(30);

fn tray_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_serena-tray"))
}

/// The helper of tests/bin/windows_helper.rs, built next to the fake.
fn helper_exe() -> PathBuf {
    fake::exe().with_file_name("windows-helper.exe")
}

/// The PID the system names as the owner of the IPv4 socket listening on `port` (read from
/// the TCP table, `GetExtendedTcpTable`).
fn socket_owner(port: u16) -> Option<u32> {
    use windows_sys::Win32::Foundation::ERROR_INSUFFICIENT_BUFFER;
    use windows_sys::Win32::NetworkManagement::IpHelper::{
        GetExtendedTcpTable, MIB_TCPROW_OWNER_PID, TCP_TABLE_OWNER_PID_LISTENER,
    };
    const AF_INET: u32 = 2;
    let mut buf: Vec<u32> = Vec::new();
    // The table grows while other tests open sockets: asked again, with room to spare, until
    // it fits.
    loop {
        let mut size = (buf.len() * 4) as u32;
        // SAFETY: the buffer holds `size` bytes, aligned for the table's u32 fields.
        #[allow(unsafe_code)]
        let status = unsafe {
            GetExtendedTcpTable(
                buf.as_mut_ptr().cast(),
                &mut size,
                0,
                AF_INET,
                TCP_TABLE_OWNER_PID_LISTENER,
                0,
            )
        };
        match status {
            0 => break,
            ERROR_INSUFFICIENT_BUFFER => buf.resize((size as usize).div_ceil(4) + 64, 0),
            other => panic!("GetExtendedTcpTable failed: error {other}"),
        }
    }
    let count = buf[0] as usize;
    // SAFETY: a successful call wrote the entry count and that many rows after it.
    #[allow(unsafe_code)]
    let rows = unsafe {
        std::slice::from_raw_parts(buf.as_ptr().add(1).cast::<MIB_TCPROW_OWNER_PID>(), count)
    };
    rows.iter()
        .find(|r| u16::from_be((r.dwLocalPort & 0xffff) as u16) == port)
        .map(|r| r.dwOwningPid)
}

/// Whether the system tells which process owns a socket: Windows does, Wine reports PID 0 as
/// the owner of every socket (its wineserver holds them), which `Err` says, for the skip
/// message. Where it does, the product's own map (`sockets`) must find this test's socket too.
fn port_map() -> Result<(), String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    match socket_owner(port) {
        Some(0) => Err(format!(
            "the owner of this test's own listening socket (port {port}) reads as PID 0 (Wine \
             reports PID 0 for every socket), so there is no port-to-PID map"
        )),
        Some(pid) => {
            assert_eq!(pid, std::process::id(), "the owner of port {port}");
            assert!(
                serena_tray::core::sockets::pid_owns_port(pid, port),
                "the TCP table names this test as the owner of port {port}; the product's map \
                 must too"
            );
            Ok(())
        }
        None => panic!("this test's listening socket (port {port}) is not in the TCP table"),
    }
}

fn skipped(what: &str, why: &str) {
    println!("SKIPPED {what}: {why}");
}

/// Whether the process `id` (PID and start time) still runs.
fn alive(id: ProcessId) -> bool {
    procs::identity(id.pid) == Some(id)
}

fn identity(pid: u32) -> ProcessId {
    procs::identity(pid).expect("the process runs")
}

/// The processes started by `parent` whose command line has `arg`, once there are `n`.
fn children_with(parent: u32, arg: &str, n: usize) -> Vec<ProcessId> {
    wait_for(
        &format!("{n} process(es) `{arg}` under {parent}"),
        STARTUP,
        || {
            let snap = Snapshot::capture(&mut Sys::new());
            let found: Vec<ProcessId> = snap
                .iter()
                .filter(|p| p.ppid == Some(parent) && p.cmdline.iter().any(|a| a == arg))
                .map(|p| p.id())
                .collect();
            (found.len() == n).then_some(found)
        },
    )
}

/// The fake Serena a client (or `launch`) started.
fn serena_under(parent: u32) -> ProcessId {
    children_with(parent, fake::SERVER, 1)[0]
}

/// The language-server children of a fake Serena.
fn language_servers(serena: u32, n: usize) -> Vec<ProcessId> {
    children_with(serena, "fake-language-server", n)
}

/// Waits until every process of `ids` is gone (looking every 10 ms): how long it took.
fn wait_gone(what: &str, ids: &[ProcessId]) -> Duration {
    let start = Instant::now();
    wait_for_every(Duration::from_millis(10), what, STARTUP, || {
        ids.iter().all(|id| !alive(*id)).then_some(())
    });
    start.elapsed()
}

/// One test's world: a temporary home (its `.serena`), the scope marker every process it starts
/// carries, and those processes, ended with whatever else carries the marker when it drops.
struct Home {
    dir: tempfile::TempDir,
    children: Vec<Child>,
}

impl Home {
    fn new() -> Home {
        Home {
            dir: tempfile::Builder::new()
                .prefix("serena-tray-test-")
                .tempdir()
                .expect("tempdir"),
            children: Vec::new(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn scope(&self) -> String {
        self.path().display().to_string()
    }

    fn serena_home(&self) -> PathBuf {
        self.path().join(".serena")
    }

    /// A directory for a project.
    fn project(&self, name: &str) -> String {
        let dir = self.path().join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        dir.display().to_string()
    }

    /// The hermetic environment of a child: this test's scope and home, no proxy for loopback.
    fn env(&self, cmd: &mut Command) {
        cmd.env(SCOPE_VAR, self.scope())
            .env("SERENA_HOME", self.serena_home())
            .env("USERPROFILE", self.path())
            .env("SERENA_USAGE_REPORTING", "false")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("HTTP_PROXY", "http://127.0.0.1:9")
            .env("HTTPS_PROXY", "http://127.0.0.1:9");
    }

    /// Starts `cmd` in this test's world; the child is ended when the test ends.
    fn spawn(&mut self, mut cmd: Command) -> u32 {
        self.env(&mut cmd);
        let child = cmd.spawn().expect("spawn");
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// A fake Serena MCP server with `args` and extra environment.
    fn fake(&mut self, args: &[&str], env: &[(&str, &str)]) -> ProcessId {
        let mut cmd = fake::server(args);
        cmd.envs(env.iter().copied());
        let pid = self.spawn(cmd);
        identity(pid)
    }

    /// A stand-in MCP client that starts a fake Serena with `args`: (client, Serena).
    fn fake_client(&mut self, args: &[&str], env: &[(&str, &str)]) -> (u32, ProcessId) {
        let mut cmd = fake::client_of_server(args);
        cmd.envs(env.iter().copied());
        let client = self.spawn(cmd);
        (client, serena_under(client))
    }

    /// Ends the child `pid` that this test started (`TerminateProcess`).
    fn kill(&mut self, pid: u32) {
        let child = self
            .children
            .iter_mut()
            .find(|c| c.id() == pid)
            .expect("a child of this test");
        child.kill().expect("TerminateProcess");
        child.wait().expect("wait");
    }

    /// `serena-tray --serena-home HOME ARGS`.
    fn tray(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(tray_exe());
        self.env(&mut cmd);
        cmd.arg("--serena-home")
            .arg(self.serena_home())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run serena-tray")
    }

    fn tray_ok(&self, args: &[&str]) -> String {
        let out = self.tray(args);
        assert!(
            out.status.success(),
            "serena-tray {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `serena-tray list --json`.
    fn list(&self) -> Vec<Value> {
        serde_json::from_str(&self.tray_ok(&["list", "--json"])).expect("list --json is JSON")
    }

    /// A core of this test's scope, in this process.
    fn core(&self, grace: Duration) -> Core {
        let mut s = Settings::defaults(self.serena_home());
        s.scope = Scope::Marked(self.scope());
        s.tray.zombie_grace = grace;
        s.tray.probe_timeout = Duration::from_millis(700);
        s.dashboard.port = 0;
        s.tray.tray_protocol_port = 0;
        Core::new(s)
    }

    /// `windows-helper hold PATH SHARE`, once it holds the file; it lets go when the returned
    /// stdin is dropped.
    fn hold(&mut self, path: &Path, share: &str) -> ChildStdin {
        let mut cmd = Command::new(helper_exe());
        cmd.arg("hold")
            .arg(path)
            .arg(share)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        self.env(&mut cmd);
        let mut child = cmd.spawn().expect("windows-helper");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read");
        assert_eq!(line.trim(), "held", "the helper holds {}", path.display());
        let stdin = child.stdin.take().expect("stdin");
        self.children.push(child);
        stdin
    }
}

impl Drop for Home {
    /// Pass or fail: every process this test started, and every process still carrying its
    /// scope marker (what those started), is ended. Nothing else carries it.
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
        }
        let mut sys = Sys::new();
        let snap = Snapshot::capture(&mut sys);
        let pids: Vec<u32> = snap.iter().map(|p| p.pid).collect();
        let ours = Scope::Marked(self.scope())
            .admitted(&mut sys, &pids)
            .unwrap_or_default();
        for pid in ours {
            if let Some(p) = sys.process(sysinfo::Pid::from_u32(pid)) {
                p.kill();
            }
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
    }
}

/// The `list --json` row of the live instance `pid`.
fn row(list: &[Value], pid: u32) -> Option<&Value> {
    list.iter()
        .find(|r| r["pid"] == pid && r["state_reason"] != "dead")
}

#[test]
fn instances_are_listed_green_with_a_project_and_yellow_without() {
    let mut home = Home::new();
    let project = home.project("webapp");
    let (green_child, green_port) = fake::spawn_reading_port({
        let mut cmd = fake::server(&["--project", &project, "--context", "ide"]);
        home.env(&mut cmd);
        cmd
    });
    let green = identity(green_child.id());
    home.children.push(green_child);
    let yellow = home.fake(&[], &[]);

    let list = wait_for("both fakes listed", STARTUP, || {
        let list = home.list();
        (row(&list, green.pid).is_some() && row(&list, yellow.pid).is_some()).then_some(list)
    });
    let g = row(&list, green.pid).expect("green");
    assert_eq!(g["state"], "live_with_project", "{g}");
    assert_eq!(g["project_name"], "webapp", "{g}");
    assert_eq!(g["context"], "ide", "{g}");
    assert_eq!(g["transport"], "stdio", "{g}");
    assert_eq!(g["verified_serena"], true, "{g}");
    assert_eq!(
        g["client_pid"],
        std::process::id(),
        "this test started it: {g}"
    );
    let y = row(&list, yellow.pid).expect("yellow");
    assert_eq!(y["state"], "live_no_project", "{y}");
    assert_eq!(y["project_name"], Value::Null, "{y}");
    assert_eq!(list.len(), 2, "only this test's processes: {list:?}");

    // The table a user reads says the same.
    let table = home.tray_ok(&["list"]);
    assert!(
        table.contains(&format!("{} ", green.pid)) && table.contains("webapp"),
        "{table}"
    );
    assert!(table.contains("NO PROJECT"), "{table}");

    match port_map() {
        Ok(()) => {
            assert_eq!(g["port"].as_u64(), green_port.map(u64::from), "{g}");
            assert!(y["port"].is_u64(), "{y}");
        }
        Err(why) => {
            skipped("each instance's dashboard port", &why);
            assert_eq!(g["port"], Value::Null, "no map, no port: {g}");
        }
    }
}

#[test]
fn a_client_killed_turns_its_serena_red_after_the_grace() {
    let mut home = Home::new();
    let project = home.project("orphaned");
    let (client, serena) = home.fake_client(&["--project", &project], &[]);
    let grace = Duration::from_secs(2);
    let core = home.core(grace);
    let state = |core: &Core| {
        block_on(core.refresh())
            .expect("refresh")
            .into_iter()
            .find(|i| i.pid == serena.pid && i.state_reason != Some(ZombieReason::Dead))
            .map(|i| (i.state, i.state_reason, i.client_pid))
    };
    let (live, _, client_pid) = wait_for("the fake seen live", STARTUP, || state(&core));
    assert_eq!(live, State::LiveWithProject);
    assert_eq!(client_pid, Some(client));

    home.kill(client);
    let killed = Instant::now();
    let (mut seen_live_after, mut turned) = (false, None);
    while killed.elapsed() < grace * 10 {
        match state(&core) {
            Some((State::Zombie, reason, _)) => {
                turned = Some((killed.elapsed(), reason));
                break;
            }
            Some((State::LiveWithProject, ..)) => seen_live_after = true,
            other => panic!("unexpected {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (after, reason) = turned.expect("red within ten graces");
    println!("orphaned Serena red {after:?} after its client was killed (grace {grace:?})");
    assert_eq!(reason, Some(ZombieReason::Orphaned));
    assert!(after >= grace, "not before the grace: {after:?}");
    assert!(seen_live_after, "still live while the grace ran");
    assert!(alive(serena), "seen, not killed");
}

#[test]
fn kill_ends_the_whole_tree_and_nothing_else() {
    let mut home = Home::new();
    let target = home.fake(&[], &[("FAKE_SERENA_CHILDREN", "2")]);
    let target_children = language_servers(target.pid, 2);
    let bystander = home.fake(&[], &[("FAKE_SERENA_CHILDREN", "1")]);
    let bystander_child = language_servers(bystander.pid, 1)[0];

    let out = home.tray_ok(&["kill", &target.pid.to_string()]);
    println!("serena-tray kill: {}", out.trim());
    assert!(
        out.contains(&format!("{}: ", target.pid)) && out.contains("3 process(es)"),
        "{out}"
    );
    let mut tree = target_children.clone();
    tree.push(target);
    wait_gone("the killed tree", &tree);
    for id in [bystander, bystander_child] {
        assert!(alive(id), "{} was not asked for and still runs", id.pid);
    }
    match port_map() {
        Ok(()) => assert!(
            out.contains("shut_down"),
            "asked through its dashboard: {out}"
        ),
        Err(why) => skipped(
            "asking Serena to shut down through its dashboard before ending it",
            &why,
        ),
    }
}

#[test]
fn kill_all_zombies_ends_every_orphans_tree_and_nothing_else() {
    let mut home = Home::new();
    let children = [("FAKE_SERENA_CHILDREN", "1")];
    let (client_a, orphan_a) = home.fake_client(&[], &children);
    let (client_b, orphan_b) = home.fake_client(&[], &children);
    let (_client_c, live) = home.fake_client(&[], &children);
    let orphan_children = [
        language_servers(orphan_a.pid, 1)[0],
        language_servers(orphan_b.pid, 1)[0],
    ];
    let live_child = language_servers(live.pid, 1)[0];
    home.kill(client_a);
    home.kill(client_b);

    let out = home.tray_ok(&["kill", "--zombies"]);
    println!("serena-tray kill --zombies: {}", out.trim());
    assert!(out.contains("killed 2 zombie(s)"), "{out}");
    let mut gone = orphan_children.to_vec();
    gone.extend([orphan_a, orphan_b]);
    wait_gone("the orphans' trees", &gone);
    assert!(
        alive(live) && alive(live_child),
        "the live instance's tree is untouched"
    );
    let list = home.list();
    let r = row(&list, live.pid).expect("the live one");
    assert_eq!(r["state"], "live_no_project", "{r}");
}

#[test]
fn a_reused_pid_is_never_signalled() {
    let mut home = Home::new();
    // A live Serena and a live process that is not Serena, holding PIDs the registry recorded
    // for instances that started an hour before them.
    let serena = home.fake(&[], &[]);
    let nobody = {
        let cmd = fake::client(fake::exe(), &["fake-language-server"]);
        identity(home.spawn(cmd))
    };
    let long_ago = serena_tray::core::model::now() - 3600.0;
    std::fs::create_dir_all(home.serena_home()).expect("mkdir");
    let seeded = json!([
        {"pid": serena.pid, "port": 24299, "started_at": long_ago, "last_heartbeat": long_ago,
         "context": "ide", "modes": [], "project_name": "oldproj", "state": "live_with_project"},
        {"pid": nobody.pid, "port": 24298, "started_at": long_ago, "last_heartbeat": long_ago,
         "context": null, "modes": [], "project_name": "older", "state": "live_no_project"},
    ]);
    std::fs::write(
        home.serena_home().join("instances.json"),
        seeded.to_string(),
    )
    .expect("seed");

    let out = home.tray_ok(&["kill", "--zombies"]);
    println!("serena-tray kill --zombies: {}", out.trim());
    assert!(out.contains("pruned 2"), "both records are dead: {out}");
    let refused = home.tray(&["kill", &nobody.pid.to_string()]);
    assert!(!refused.status.success(), "not a Serena: never killed");
    println!(
        "serena-tray kill {}: {}",
        nobody.pid,
        String::from_utf8_lossy(&refused.stderr).trim()
    );
    assert!(alive(serena) && alive(nobody), "nothing was signalled");
    let registry = Registry::new(&home.serena_home()).load().expect("registry");
    assert!(
        !registry
            .iter()
            .any(|e| e.project_name.as_deref() == Some("oldproj")
                || e.project_name.as_deref() == Some("older")),
        "the dead records are pruned: {registry:?}"
    );
}

/// `serena-tray launch --web-dashboard-global=false -- serena.exe start-mcp-server ARGS`.
fn launch_command(home: &Home, args: &[&str]) -> Vec<String> {
    let mut argv = vec![
        "--serena-home".to_string(),
        home.serena_home().display().to_string(),
        "launch".into(),
        "--web-dashboard-global=false".into(),
        "--".into(),
        fake::exe().display().to_string(),
        fake::SERVER.into(),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    argv
}

#[test]
fn launch_killed_outright_takes_its_serena_and_grandchild() {
    let mut home = Home::new();
    let mut cmd = Command::new(tray_exe());
    cmd.args(launch_command(&home, &[]))
        .env("FAKE_SERENA_CHILDREN", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let launch = home.spawn(cmd);
    let serena = serena_under(launch);
    let grandchild = language_servers(serena.pid, 1)[0];

    home.kill(launch);
    let took = wait_gone("launch's Serena and its child", &[serena, grandchild]);
    println!("launch killed outright: its Serena and grandchild gone in {took:?} (Job Object)");
}

#[test]
fn launch_ends_its_serena_when_its_client_is_killed() {
    let mut home = Home::new();
    let project = home.project("watched");
    let mut cmd = fake::client(tray_exe(), &launch_command(&home, &["--project", &project]));
    cmd.env("FAKE_SERENA_CHILDREN", "1");
    let client = home.spawn(cmd);
    let launch = children_with(client, "launch", 1)[0];
    // `launch` pins its client before it starts Serena: once Serena runs, the watch is on.
    let serena = serena_under(launch.pid);
    let grandchild = language_servers(serena.pid, 1)[0];

    home.kill(client);
    let took = wait_gone(
        "launch's Serena once its client was killed",
        &[serena, grandchild],
    );
    println!("launch ended its Serena and grandchild {took:?} after its client was killed");
    assert!(
        took < Duration::from_secs(5),
        "seen through the client's handle, not a later timeout: {took:?}"
    );
    wait_gone("launch itself", &[launch]);
}

/// The token is replaced (an empty one: a first start interrupted) while another program holds
/// it open: at once when it allows that (as Rust programs do), once it lets go when it does not
/// (as C programs and Python do).
#[test]
fn the_token_is_replaced_while_another_process_holds_it() {
    let mut home = Home::new();
    let tray = home.serena_home().join("tray");
    files::private_dir(&tray).expect("tray/");
    let path = token::token_path(&home.serena_home());
    for share in ["all", "no-delete"] {
        files::write_atomic(&path, b"").expect("an empty token");
        let held = home.hold(&path, share);
        let took = replace_while_held(held, share, || {
            token::load_or_create(&home.serena_home()).expect("replaced")
        });
        let made = token::read(&home.serena_home()).expect("a token");
        assert_eq!(made.len(), 64);
        println!("token replaced while held ({share}): {took:?}");
    }
}

/// The registry is rewritten while another process holds it open, by its sharing rules.
#[test]
fn the_registry_is_rewritten_while_another_process_holds_it() {
    let mut home = Home::new();
    let registry = Registry::new(&home.serena_home());
    std::fs::create_dir_all(home.serena_home()).expect("mkdir");
    registry
        .update(|e| e.push(RegistryEntry::new(1, 1.0)))
        .expect("first write");
    for (n, share) in ["all", "no-delete"].into_iter().enumerate() {
        let held = home.hold(registry.path(), share);
        let pid = 100 + n as u32;
        let took = replace_while_held(held, share, || {
            registry
                .update(|e| e.push(RegistryEntry::new(pid, 2.0)))
                .expect("rewritten")
        });
        let entries = registry.load().expect("load");
        assert!(entries.iter().any(|e| e.pid == pid), "{entries:?}");
        println!("registry rewritten while held ({share}): {took:?}");
    }
    assert_eq!(registry.load().expect("load").len(), 3, "nothing lost");
}

/// Runs `replace` while `held` holds the file: with share mode `all` it must not wait; with
/// `no-delete` it must wait until the holder lets go (after 500 ms). How long it took.
fn replace_while_held<T>(held: ChildStdin, share: &str, replace: impl FnOnce() -> T) -> Duration {
    let hold = Duration::from_millis(500);
    let letting_go = std::thread::spawn(move || {
        std::thread::sleep(hold);
        drop(held);
    });
    let start = Instant::now();
    replace();
    let took = start.elapsed();
    letting_go.join().expect("let go");
    match share {
        "all" => assert!(took < hold, "not waited for: {took:?}"),
        _ => assert!(took >= hold, "waited for the holder to let go: {took:?}"),
    }
    took
}

/// A minimal HTTP/1.1 GET on loopback: (status, body).
fn http_get(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Connection: close\r\n\r\n"
    )
    .expect("write");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("read");
    let status = reply
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Starts `serena-tray daemon` on any free port, in a console of its own (for Ctrl+C to be
/// pressed in), its output to `daemon.log`: (PID, port, port file).
fn start_daemon(home: &mut Home) -> (u32, u16, PathBuf) {
    let port_file = home.path().join("port");
    let log = std::fs::File::create(home.path().join("daemon.log")).expect("log");
    let mut cmd = Command::new(tray_exe());
    cmd.arg("--serena-home")
        .arg(home.serena_home())
        .args(["--port", "0", "--tray-protocol-port", "0", "--port-file"])
        .arg(&port_file)
        .arg("daemon")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .creation_flags(windows_sys::Win32::System::Threading::CREATE_NEW_CONSOLE);
    let daemon = home.spawn(cmd);
    let port: u16 = wait_for("the daemon's port file", STARTUP, || {
        std::fs::read_to_string(&port_file)
            .ok()?
            .trim()
            .parse()
            .ok()
    });
    (daemon, port, port_file)
}

/// A second daemon on the first one's port tells its twin (by the PID that owns the port) and
/// hands over. Needs the port-to-PID map.
#[test]
fn a_second_daemon_finds_the_first() {
    if let Err(why) = port_map() {
        return skipped("a second daemon telling the first one by its port", &why);
    }
    let mut home = Home::new();
    let (_daemon, port, _) = start_daemon(&mut home);
    let second = home.tray(&[
        "--port",
        &port.to_string(),
        "--tray-protocol-port",
        "0",
        "daemon",
    ]);
    let out = String::from_utf8_lossy(&second.stdout);
    assert!(second.status.success(), "{out}");
    assert!(out.contains("already running"), "{out}");
}

#[test]
fn the_daemon_stopped_by_ctrl_c_leaves_its_files_consistent() {
    let mut home = Home::new();
    let project = home.project("kept");
    let serena = home.fake(&["--project", &project], &[]);
    let (daemon, port, port_file) = start_daemon(&mut home);
    let (status, health) = http_get(port, "/api/health", None);
    assert_eq!(status, 200, "{health}");
    assert!(health.contains(&format!("\"pid\":{daemon}")), "{health}");
    let token = token::read(&home.serena_home()).expect("the daemon's token");
    let (status, _) = http_get(port, "/api/instances", None);
    assert_eq!(status, 401, "the API needs the token");
    wait_for("the daemon to list the fake", STARTUP, || {
        let (status, body) = http_get(port, "/api/instances", Some(&token));
        (status == 200 && body.contains(&format!("\"pid\":{}", serena.pid))).then_some(())
    });
    let registry = Registry::new(&home.serena_home());
    wait_for("the fake in the registry", STARTUP, || {
        let entries = registry.load().ok()?;
        entries.iter().any(|e| e.pid == serena.pid).then_some(())
    });
    let tray = home.serena_home().join("tray");
    assert!(tray.join("daemon.json").exists());

    let out = Command::new(helper_exe())
        .args(["ctrl-c", &daemon.to_string()])
        .output()
        .expect("windows-helper ctrl-c");
    assert!(
        out.status.success(),
        "Ctrl+C pressed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stopped = wait_for("the daemon to stop", STARTUP, || {
        let child = home.children.iter_mut().find(|c| c.id() == daemon)?;
        child.try_wait().expect("try_wait")
    });
    let log = std::fs::read_to_string(home.path().join("daemon.log")).unwrap_or_default();
    assert!(stopped.success(), "stopped cleanly ({stopped:?}): {log}");
    assert!(log.contains("stopping"), "{log}");

    // Its files: its own records gone, the rest whole.
    assert!(!port_file.exists(), "the port file is removed");
    assert!(!tray.join("daemon.json").exists(), "daemon.json is removed");
    let entries = registry.load().expect("instances.json parses");
    assert!(entries.iter().any(|e| e.pid == serena.pid), "{entries:?}");
    assert_eq!(token::read(&home.serena_home()), Some(token));
    let timeline = std::fs::read_to_string(tray.join("events.jsonl")).expect("the timeline");
    let events: Vec<Value> = timeline
        .lines()
        .map(|line| serde_json::from_str(line).expect("every timeline line is JSON"))
        .collect();
    assert!(
        events.iter().any(|e| e["pid"] == serena.pid),
        "the fake's arrival is recorded: {timeline}"
    );
    let leftovers: Vec<String> = std::fs::read_dir(&tray)
        .expect("tray/")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "no temporary file left: {leftovers:?}"
    );
    assert!(alive(serena), "stopping the daemon stops no instance");
}
