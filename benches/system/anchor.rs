//! Side by side with the program this one replaces: Serena's own tray manager (the installed
//! serena-agent's `SerenaDashboardTrayManager`, a Python + pystray process), run in the same
//! window as the release daemon, the same instances registered to both through the tray
//! protocol (`POST /register`, as each Serena does).
//!
//! The manager is started with the command Serena spawns it with (`python -c "from
//! serena.dashboard import SerenaDashboardTrayManager; ..."`, its output to a pipe rather than
//! /dev/null, in a session of its own) on an X display of this run's own, with two changes made
//! in that `-c` text and nowhere else: its port (fixed at 24224 in Serena) moved to a free one,
//! so that the machine's own 24224 is never touched, and its INFO log sent to stderr, the only
//! place it says when it dropped an instance (it has no list endpoint, and its menu, with
//! pystray's X11 backend on a display without a tray, is nowhere to be read).
//!
//! - `pss_ratio_vs_serena_tray_manager`: the daemon's PSS / the manager's, 20 instances each;
//! - `cpu_ratio_vs_serena_tray_manager`: their CPU over the same idle window (CPU time from
//!   each thread's `schedstat`, in nanoseconds: the manager uses a few 10 ms clock ticks a
//!   minute, below what `/proc/PID/stat` can tell apart);
//! - `unregister_latency_ratio_vs_serena_tray_manager`: an instance SIGKILLed (and reaped at
//!   once: the manager counts an unreaped process as running) to its `instance_removed` on the
//!   daemon's `/api/events`, and to the manager's "Removed unreachable instance" log line,
//!   medians, the same kills for both.

use crate::common::desktop::Desktop;
use crate::common::*;
use crate::{cpu_between, progress, thread_cpu_ns, Config, Metric};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The instances registered to both.
const N: usize = 20;

/// Serena's tray manager, running on this run's display and port.
struct Manager {
    child: Child,
    port: u16,
    /// Each "Removed unreachable instance on port P" line, with the instant it was read.
    removed: mpsc::Receiver<(Instant, u16)>,
}

impl Manager {
    fn start(home: &Home, desktop: &Desktop) -> Manager {
        let port = free_port();
        // Serena's command (serena/dashboard.py, `SerenaDashboardTrayManager.ensure_running`),
        // its port and log level set first.
        let code = format!(
            "import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stderr); \
             from serena.dashboard import SerenaDashboardTrayManager; \
             SerenaDashboardTrayManager.PORT = {port}; SerenaDashboardTrayManager().run()"
        );
        let mut cmd = Command::new(venv().join("bin/python"));
        home.env(&mut cmd);
        desktop.env(&mut cmd);
        let mut child = cmd
            .args(["-c", &code])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("Serena's tray manager (the test venv's python)");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, removed) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let port = line
                    .split_once("Removed unreachable instance on port ")
                    .and_then(|(_, p)| p.trim().parse::<u16>().ok());
                if let Some(p) = port {
                    if tx.send((Instant::now(), p)).is_err() {
                        return;
                    }
                }
            }
        });
        let m = Manager {
            child,
            port,
            removed,
        };
        wait_for(
            "Serena's tray manager to answer /health",
            Duration::from_secs(30),
            || (m.api().raw("GET", "/health", None, &[]).0 == 200).then_some(()),
        );
        m
    }

    fn api(&self) -> Daemon {
        Daemon::attach(self.port, self.child.id())
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        // Its own session: the group is its alone.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
    }
}

/// Registers `pid` (dashboard `port`) with a tray-protocol server, as Serena does; the HTTP
/// status. (`started_at` is only shown and sorted by the manager, and not read by the daemon.)
fn register(server: &Daemon, pid: u32, port: u16) -> u16 {
    let body = json!({
        "port": port, "pid": pid, "dashboard_url": format!("http://127.0.0.1:{port}/dashboard/index.html"),
        "project": Value::Null, "started_at": "2026-12-01T12:00:00", "open_viewer": false,
    });
    server
        .raw("POST", "/register", Some(body.to_string()), &[])
        .0
}

pub(crate) fn anchor_phase(cfg: &Config, out: &mut Vec<Metric>) {
    let window = cfg.window();
    let kills = cfg.runs(10, 5);
    progress(&format!(
        "Serena's tray manager side by side: {N} instances registered to both, {} s idle, {kills} kills",
        window.as_secs()
    ));
    let desktop = Desktop::start();
    let home = Home::new();
    let mut reaper = Reaper::default();
    let fakes: Vec<u32> = (0..N)
        .map(|_| reaper.adopt(spawn_fake(&home, &[], &[])))
        .collect();
    let d = home.daemon();
    // Their dashboard ports, as the daemon found them.
    let ports: HashMap<u32, u16> = wait_for(
        "the daemon to see the instances",
        Duration::from_secs(120),
        || {
            let (_, list) = d.call("GET", "/api/instances", None);
            let ports: HashMap<u32, u16> = list
                .as_array()?
                .iter()
                .filter(|i| i["last_heartbeat"].is_number())
                .filter_map(|i| Some((i["pid"].as_u64()? as u32, i["port"].as_u64()? as u16)))
                .filter(|(pid, _)| fakes.contains(pid))
                .collect();
            (ports.len() >= N).then_some(ports)
        },
    );
    let manager = Manager::start(&home, &desktop);
    // The manager exits if it holds nothing at its first check (about 5 s after its start).
    let (ours, theirs) = (Daemon::attach(d.tray_port, d.pid), manager.api());
    for (pid, port) in &ports {
        assert_eq!(
            register(&theirs, *pid, *port),
            200,
            "the manager takes {pid}"
        );
        assert_eq!(register(&ours, *pid, *port), 200, "the daemon takes {pid}");
    }
    std::thread::sleep(crate::SETTLE);

    // Idle, the two in the same window.
    let (d0, m0) = (thread_cpu_ns(d.pid), thread_cpu_ns(manager.child.id()));
    let start = Instant::now();
    std::thread::sleep(window);
    let wall = start.elapsed().as_secs_f64();
    let (d_cpu, d_ended) = cpu_between(&d0, &thread_cpu_ns(d.pid));
    let (m_cpu, m_ended) = cpu_between(&m0, &thread_cpu_ns(manager.child.id()));
    let (d_pss, d_rss, d_uss) = memory_mib(d.pid);
    let (m_pss, m_rss, m_uss) = memory_mib(manager.child.id());
    out.push(
        Metric::new("pss_ratio_vs_serena_tray_manager", d_pss / m_pss, "", N)
            .goal(0.3)
            .note(format!(
                "PSS {d_pss:.1} vs {m_pss:.1} MiB (RSS {d_rss:.1} vs {m_rss:.1}, USS {d_uss:.1} vs {m_uss:.1})"
            )),
    );
    let pct = |s: f64| 100.0 * s / wall;
    out.push(
        Metric::new(
            "cpu_ratio_vs_serena_tray_manager",
            d_cpu / m_cpu.max(1e-9),
            "",
            N,
        )
        .goal(1.0)
        .note(format!(
            "{:.3} % vs {:.3} % of a core over {wall:.0} s{}",
            pct(d_cpu),
            pct(m_cpu),
            if d_ended + m_ended > 0 {
                format!(" ({d_ended} + {m_ended} threads ended meanwhile, their part uncounted)")
            } else {
                String::new()
            }
        )),
    );

    // Kills: each instance's disappearance from each one's list.
    let rx = events(&d);
    let (mut ours_ms, mut theirs_ms) = (Vec::new(), Vec::new());
    for pid in fakes.iter().take(kills) {
        let port = ports[pid];
        // What the manager said before this kill is not about it.
        while manager.removed.try_recv().is_ok() {}
        let t = Instant::now();
        kill_one(*pid);
        let _ = reaper.child(*pid).map(Child::wait);
        let seen = wait_event(&rx, Duration::from_secs(10), |v| {
            v["type"] == "instance_removed" && v["pid"].as_u64() == Some(u64::from(*pid))
        });
        let dropped = loop {
            match manager.removed.recv_timeout(Duration::from_secs(15)) {
                Ok((at, p)) if p == port => break Some(at),
                Ok(_) => {}
                Err(_) => break None,
            }
        };
        if let (Some(a), Some(b)) = (seen, dropped) {
            ours_ms.push(a.duration_since(t).as_secs_f64() * 1000.0);
            theirs_ms.push(b.duration_since(t).as_secs_f64() * 1000.0);
        }
    }
    let (o, t) = (median(ours_ms.clone()), median(theirs_ms.clone()));
    out.push(
        Metric::new(
            "unregister_latency_ratio_vs_serena_tray_manager",
            o / t,
            "",
            ours_ms.len(),
        )
        .goal(0.02)
        .note(format!("medians {o:.1} ms vs {t:.0} ms")),
    );
}
