//! What the CLI prints for people: the instance table (with colour words, ANSI colour on a
//! terminal) and the sessions table.

use crate::core::model::Session;
use crate::core::{Instance, State};

pub fn age(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

fn paint(word: &str, state: State, colour: bool) -> String {
    if !colour {
        return word.to_string();
    }
    let code = match state {
        State::LiveWithProject => "32",
        State::LiveNoProject => "33",
        State::Zombie => "31",
        State::Starting => "90",
    };
    format!("\x1b[{code}m{word}\x1b[0m")
}

/// Bytes in a column: `512K`, `180M`, `1.1G`.
pub fn size(bytes: u64) -> String {
    const K: f64 = 1024.0;
    let b = bytes as f64;
    if b < K * K {
        format!("{:.0}K", b / K)
    } else if b < K * K * K {
        format!("{:.0}M", b / (K * K))
    } else {
        format!("{:.1}G", b / (K * K * K))
    }
}

/// The human table of `list`.
pub fn render_table(instances: &[Instance], now: f64, colour: bool) -> String {
    if instances.is_empty() {
        return "No Serena instances found.\n".to_string();
    }
    let header = [
        "PID",
        "STATE",
        "REASON",
        "PROJECT",
        "PORT",
        "TRANSPORT",
        "CLIENT",
        "MEM",
        "CPU",
        "AGE",
    ];
    let dash = || "-".to_string();
    let rows: Vec<(State, [String; 10])> = instances
        .iter()
        .map(|i| {
            let client = match (&i.client_name, i.client_pid) {
                (Some(n), Some(p)) => format!("{n} ({p})"),
                _ => dash(),
            };
            let state = format!("{} {}", i.state.colour(), i.state);
            (
                i.state,
                [
                    i.pid.to_string(),
                    state,
                    i.state_reason.map(|r| r.to_string()).unwrap_or_else(dash),
                    i.project_name
                        .clone()
                        .unwrap_or_else(|| "NO PROJECT".into()),
                    i.port.map(|p| p.to_string()).unwrap_or_else(dash),
                    i.transport.to_string(),
                    client,
                    i.cost
                        .as_ref()
                        .map(|c| size(c.memory_bytes))
                        .unwrap_or_else(dash),
                    i.cost
                        .as_ref()
                        .map(|c| format!("{:.0}%", c.cpu_percent))
                        .unwrap_or_else(dash),
                    age(now - i.started_at),
                ],
            )
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for (_, r) in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (k, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if k + 1 == cells.len() {
                s.push_str(c);
            } else {
                let visible = strip_ansi_len(c);
                s.push_str(c);
                s.push_str(&" ".repeat(w.saturating_sub(visible) + 2));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for (state, mut r) in rows {
        r[1] = paint(&r[1], state, colour);
        out.push_str(&line(r.to_vec()));
    }
    out
}

fn strip_ansi_len(s: &str) -> usize {
    let mut n = 0;
    let mut in_esc = false;
    for ch in s.chars() {
        match (in_esc, ch) {
            (false, '\x1b') => in_esc = true,
            (true, 'm') => in_esc = false,
            (true, _) => {}
            (false, _) => n += 1,
        }
    }
    n
}

/// The human table of `session list`.
/// The human table of `session list`; LEASE is the time left (`-`: no lease).
pub fn render_sessions(sessions: &[Session], now: f64) -> String {
    if sessions.is_empty() {
        return "No sessions.\n".to_string();
    }
    let mut out = String::from(
        "SESSION                           PID      URL                              LEASE   PROJECT\n",
    );
    for s in sessions {
        let lease = s
            .expires_at
            .map_or_else(|| "-".to_string(), |at| age(at - now));
        // An asleep shared session has no Serena: no PID, no URL.
        let (pid, url) = match s.asleep_since {
            Some(_) => ("asleep".to_string(), "-"),
            None => (s.pid.to_string(), s.url.as_str()),
        };
        out.push_str(&format!(
            "{:<33} {:<8} {:<32} {:<7} {}\n",
            s.session_id, pid, url, lease, s.project_path,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_well() {
        assert_eq!(age(5.2), "5s");
        assert_eq!(age(125.0), "2m");
        assert_eq!(age(3.0 * 3600.0 + 65.0), "3h01m");
        assert_eq!(age(-4.0), "0s");
    }

    #[test]
    fn an_asleep_session_shows_no_pid_and_no_url() {
        let session = |id: &str, asleep: bool| -> Session {
            let mut v = serde_json::json!({
                "session_id": id, "host": "127.0.0.1", "port": 40000,
                "url": "http://127.0.0.1:40000/mcp", "pid": 4242, "start_time": 1,
                "project_path": "/p", "transport": "streamable-http", "created_at": 1.0,
                "log_path": "/l", "modes": [],
            });
            if asleep {
                v["pid"] = 0.into();
                v["url"] = "".into();
                v["asleep_since"] = 2.0.into();
            }
            serde_json::from_value(v).expect("a session")
        };
        let table = render_sessions(&[session("awake", false), session("dozing", true)], 5.0);
        let rows: Vec<Vec<&str>> = table
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows[1][..3],
            ["awake", "4242", "http://127.0.0.1:40000/mcp"]
        );
        assert_eq!(rows[2][..3], ["dozing", "asleep", "-"]);
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(size(512 * 1024), "512K");
        assert_eq!(size(180 * 1024 * 1024), "180M");
        assert_eq!(size(1181116006), "1.1G");
    }
}
