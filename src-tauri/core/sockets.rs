//! Which TCP ports a process listens on, from the sockets it owns. This is the only trustworthy
//! way to learn a Serena dashboard's port: Serena picks "the first free port from 24282" by
//! test-binding, instances started together can pick the same one, and the loser's log still
//! claims it. Linux reads `/proc` for just the PIDs asked about; other platforms use the
//! `listeners` crate. Deliberately not here: telling the dashboard from the MCP port (`probe`).

use std::collections::{BTreeSet, HashMap};

/// Listening TCP ports per PID.
pub type PortMap = HashMap<u32, BTreeSet<u16>>;

/// A source of "which ports does this PID listen on". Behind a trait so that the platform code
/// stays small and the rest of the core does not care how it is done.
pub trait ListenerSource: Send + Sync {
    /// Listening TCP ports of each PID in `pids` (PIDs with none may be missing from the map).
    fn listening_ports(&self, pids: &[u32]) -> PortMap;
}

/// The platform's implementation.
pub fn platform() -> Box<dyn ListenerSource> {
    #[cfg(target_os = "linux")]
    {
        Box::new(linux::ProcNet)
    }
    #[cfg(not(target_os = "linux"))]
    {
        Box::new(other::Listeners)
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use super::{ListenerSource, PortMap};
    use std::collections::HashMap;
    use std::fs;

    /// Reads `/proc/net/tcp{,6}` for listening sockets (by inode) and `/proc/PID/fd` for the
    /// sockets each PID owns.
    pub struct ProcNet;

    const TCP_LISTEN: &str = "0A";

    /// inode -> port for every listening TCP socket in one `/proc/net/tcp*` table.
    pub(super) fn parse_tcp_table(text: &str, out: &mut HashMap<u64, u16>) {
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
            let (Some(local), Some(st), Some(inode)) = (cols.get(1), cols.get(3), cols.get(9))
            else {
                continue;
            };
            if *st != TCP_LISTEN {
                continue;
            }
            let port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if let (Some(port), Ok(inode)) = (port, inode.parse::<u64>()) {
                if inode != 0 {
                    out.insert(inode, port);
                }
            }
        }
    }

    impl ListenerSource for ProcNet {
        fn listening_ports(&self, pids: &[u32]) -> PortMap {
            // The sockets each PID owns first (cheap): no socket, no need for the tables.
            let mut owned: Vec<(u32, u64)> = Vec::new();
            for &pid in pids {
                let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
                    continue;
                };
                for entry in dir.flatten() {
                    let Ok(target) = fs::read_link(entry.path()) else {
                        continue;
                    };
                    let target = target.to_string_lossy();
                    let inode = target
                        .strip_prefix("socket:[")
                        .and_then(|t| t.strip_suffix(']'))
                        .and_then(|t| t.parse::<u64>().ok());
                    if let Some(inode) = inode {
                        owned.push((pid, inode));
                    }
                }
            }
            let mut out = PortMap::new();
            if owned.is_empty() {
                return out;
            }
            let mut by_inode = HashMap::new();
            for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
                if let Ok(text) = fs::read_to_string(table) {
                    parse_tcp_table(&text, &mut by_inode);
                }
            }
            for (pid, inode) in owned {
                if let Some(port) = by_inode.get(&inode) {
                    out.entry(pid).or_default().insert(*port);
                }
            }
            out
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod other {
    use super::{ListenerSource, PortMap};

    /// The `listeners` crate (macOS, Windows, BSDs).
    pub struct Listeners;

    impl ListenerSource for Listeners {
        fn listening_ports(&self, pids: &[u32]) -> PortMap {
            let mut out = PortMap::new();
            let Ok(all) = listeners::get_all() else {
                return out;
            };
            for l in all {
                if l.protocol == listeners::Protocol::TCP && pids.contains(&l.process.pid) {
                    out.entry(l.process.pid)
                        .or_default()
                        .insert(l.socket.port());
                }
            }
            out
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn parses_a_proc_net_table() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:5EDA 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0\n\
   1: 0100007F:A1B2 0100007F:5EDA 01 00000000:00000000 00:00000000 00000000     0        0 4243 1 0\n\
   2: garbage\n";
        let mut m = std::collections::HashMap::new();
        linux::parse_tcp_table(text, &mut m);
        assert_eq!(m.len(), 1);
        assert_eq!(m.get(&4242), Some(&0x5EDA));
    }

    #[test]
    fn finds_our_own_listening_socket() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let me = std::process::id();
        let map = platform().listening_ports(&[me, u32::MAX]);
        assert!(map.get(&me).is_some_and(|ports| ports.contains(&port)));
        assert!(!map.contains_key(&u32::MAX));
    }
}
