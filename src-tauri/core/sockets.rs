//! Which TCP ports a process listens on, from the sockets it owns. This is the only trustworthy
//! way to learn a Serena dashboard's port: Serena picks "the first free port from 24282" by
//! test-binding, instances started together can pick the same one, and the loser's log still
//! claims it. Also, on Linux, the client end of a loopback connection to this process: whose it
//! is (uid) and which socket (inode), so a caller can be checked against a PID. Linux reads
//! `/proc` (one parser for the kernel's TCP tables) for just the PIDs asked about; other
//! platforms use the `listeners` crate. Deliberately not here: telling the dashboard from the
//! MCP port (`probe`), and deciding what a caller may do (`tray_protocol`).

use std::collections::{BTreeSet, HashMap};

/// Listening TCP ports per PID.
pub type PortMap = HashMap<u32, BTreeSet<u16>>;

/// A source of "which ports does this PID listen on". Behind a trait so that the platform code
/// stays small and the rest of the core does not care how it is done.
pub trait ListenerSource: Send + Sync {
    /// Listening TCP ports of each PID in `pids` (PIDs with none may be missing from the map).
    fn listening_ports(&self, pids: &[u32]) -> PortMap;

    /// Whether `pid` owns a socket listening on `port`. Blocking.
    fn owns_port(&self, pid: u32, port: u16) -> bool {
        self.listening_ports(&[pid])
            .get(&pid)
            .is_some_and(|ports| ports.contains(&port))
    }
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

/// Whether the process `pid` owns a socket listening on TCP `port`: the check before believing
/// anything that names a PID and a port (a registration, a health answer, a kill). A user can
/// only see their own processes' sockets, so another user's process never passes. Blocking.
pub fn pid_owns_port(pid: u32, port: u16) -> bool {
    platform().owns_port(pid, port)
}

/// The client end of a TCP connection, as the kernel's table shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerSocket {
    /// The user that owns the client's socket.
    pub uid: u32,
    /// The socket's inode: a process owns it if one of its file descriptors points at it.
    pub inode: u64,
}

#[cfg(target_os = "linux")]
pub use linux::{has_socket, peer_socket, socket_inodes, tcp_rows, TcpRow, TCP_ESTABLISHED};

#[cfg(target_os = "linux")]
mod linux {
    use super::{ListenerSource, PeerSocket, PortMap};
    use std::collections::HashMap;
    use std::fs;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

    /// Reads `/proc/net/tcp{,6}` for listening sockets (by inode) and `/proc/PID/fd` for the
    /// sockets each PID owns.
    pub struct ProcNet;

    const TCP_LISTEN: u8 = 0x0A;
    /// A connection's state in the kernel's TCP tables: established.
    pub const TCP_ESTABLISHED: u8 = 0x01;
    const TABLES: [&str; 2] = ["/proc/net/tcp", "/proc/net/tcp6"];

    /// One row of a `/proc/net/tcp*` table.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct TcpRow {
        pub local: SocketAddr,
        pub remote: SocketAddr,
        pub state: u8,
        pub uid: u32,
        pub inode: u64,
    }

    /// The rows of one `/proc/net/tcp*` table (the header and malformed lines skipped).
    pub(super) fn parse_tcp_table(text: &str) -> impl Iterator<Item = TcpRow> + '_ {
        text.lines().skip(1).filter_map(parse_row)
    }

    fn parse_row(line: &str) -> Option<TcpRow> {
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
        let mut cols = line.split_whitespace();
        let local = parse_addr(cols.nth(1)?)?;
        let remote = parse_addr(cols.next()?)?;
        let state = u8::from_str_radix(cols.next()?, 16).ok()?;
        let uid = cols.nth(3)?.parse().ok()?;
        let inode = cols.nth(1)?.parse().ok()?;
        Some(TcpRow {
            local,
            remote,
            state,
            uid,
            inode,
        })
    }

    /// `0100007F:5EDA` (IPv4) or 32 hex digits and a port (IPv6): each 32-bit word is printed
    /// as the number the kernel holds in memory, so its bytes are the word's native ones.
    fn parse_addr(text: &str) -> Option<SocketAddr> {
        let (ip, port) = text.split_once(':')?;
        let port = u16::from_str_radix(port, 16).ok()?;
        let word = |i: usize| -> Option<[u8; 4]> {
            let hex = ip.get(i * 8..i * 8 + 8)?;
            Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
        };
        let ip = match ip.len() {
            8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
            32 => {
                let mut bytes = [0u8; 16];
                for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
                    chunk.copy_from_slice(&word(i)?);
                }
                IpAddr::V6(Ipv6Addr::from(bytes))
            }
            _ => return None,
        };
        Some(SocketAddr::new(canonical(ip), port))
    }

    /// An IPv4 address seen through an IPv6 socket is the IPv4 address.
    fn canonical(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        }
    }

    /// Whether a listener bound to `ip` answers connections to 127.0.0.1.
    fn reached_from_loopback(ip: IpAddr) -> bool {
        match canonical(ip) {
            IpAddr::V4(v4) => v4.is_loopback() || v4.is_unspecified(),
            // `::` takes IPv4 connections too, unless the socket is IPv6-only (rare).
            IpAddr::V6(v6) => v6.is_unspecified(),
        }
    }

    /// Every row of the kernel's IPv4 and IPv6 TCP tables now (a table that cannot be read:
    /// none). Blocking.
    pub fn tcp_rows() -> Vec<TcpRow> {
        rows(|_| true)
    }

    fn rows(mut keep: impl FnMut(&TcpRow) -> bool) -> Vec<TcpRow> {
        let mut out = Vec::new();
        for table in TABLES {
            if let Ok(text) = fs::read_to_string(table) {
                out.extend(parse_tcp_table(&text).filter(|r| keep(r)));
            }
        }
        out
    }

    /// The inodes of the sockets `pid` has open (none if it cannot be read: gone, or another
    /// user's). Blocking.
    pub fn socket_inodes(pid: u32) -> Vec<u64> {
        let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|entry| {
                let target = fs::read_link(entry.path()).ok()?;
                target
                    .to_str()?
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse::<u64>()
                    .ok()
            })
            .collect()
    }

    /// Whether `pid` has the socket with this inode open. Blocking.
    pub fn has_socket(pid: u32, inode: u64) -> bool {
        socket_inodes(pid).contains(&inode)
    }

    /// The client end of the connection from `remote` to our `local` address, if the kernel's
    /// table shows it (it does for loopback peers in this network namespace). Blocking.
    pub fn peer_socket(remote: SocketAddr, local: SocketAddr) -> Option<PeerSocket> {
        let remote = SocketAddr::new(canonical(remote.ip()), remote.port());
        let local = SocketAddr::new(canonical(local.ip()), local.port());
        // The IPv4 table first: an IPv4 client is there unless it used an IPv6 socket.
        TABLES.iter().find_map(|table| {
            let text = fs::read_to_string(table).ok()?;
            let row = parse_tcp_table(&text)
                .find(|r| r.local == remote && r.remote == local && r.inode != 0)?;
            Some(PeerSocket {
                uid: row.uid,
                inode: row.inode,
            })
        })
    }

    impl ListenerSource for ProcNet {
        fn listening_ports(&self, pids: &[u32]) -> PortMap {
            // The sockets each PID owns first (cheap): no socket, no need for the tables.
            let owned: Vec<(u32, u64)> = pids
                .iter()
                .flat_map(|&pid| socket_inodes(pid).into_iter().map(move |i| (pid, i)))
                .collect();
            let mut out = PortMap::new();
            if owned.is_empty() {
                return out;
            }
            // Only sockets that 127.0.0.1 reaches: everything here connects there, and a socket
            // on another address (say [::1]) with the same port number is not the one answering.
            let by_inode: HashMap<u64, u16> = rows(|r| {
                r.state == TCP_LISTEN && r.inode != 0 && reached_from_loopback(r.local.ip())
            })
            .into_iter()
            .map(|r| (r.inode, r.local.port()))
            .collect();
            for (pid, inode) in owned {
                if let Some(port) = by_inode.get(&inode) {
                    out.entry(pid).or_default().insert(*port);
                }
            }
            out
        }

        /// The IPv4 table first, the IPv6 one only if the listener is not there: reading a
        /// table costs milliseconds (the kernel walks all its sockets), and this check runs
        /// before every `launch --share` answers its client.
        fn owns_port(&self, pid: u32, port: u16) -> bool {
            let owned = socket_inodes(pid);
            if owned.is_empty() {
                return false;
            }
            TABLES.iter().any(|table| {
                let Ok(text) = fs::read_to_string(table) else {
                    return false;
                };
                let found = parse_tcp_table(&text).any(|r| {
                    r.state == TCP_LISTEN
                        && r.local.port() == port
                        && reached_from_loopback(r.local.ip())
                        && owned.contains(&r.inode)
                });
                found
            })
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
   0: 0100007F:5EDA 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0\n\
   1: 0100007F:A1B2 0100007F:5EDA 01 00000000:00000000 00:00000000 00000000     0        0 4243 1 0\n\
   2: garbage\n";
        let rows: Vec<_> = linux::parse_tcp_table(text).collect();
        assert_eq!(rows.len(), 2);
        let lo = std::net::Ipv4Addr::LOCALHOST;
        assert_eq!(rows[0].local, (lo, 0x5EDA).into());
        assert_eq!(
            (rows[0].state, rows[0].uid, rows[0].inode),
            (0x0A, 1000, 4242)
        );
        assert_eq!(rows[1].local, (lo, 0xA1B2).into());
        assert_eq!(rows[1].remote, (lo, 0x5EDA).into());
        assert_eq!((rows[1].state, rows[1].uid, rows[1].inode), (0x01, 0, 4243));
    }

    #[test]
    fn an_ipv4_mapped_address_in_the_ipv6_table_is_the_ipv4_address() {
        let text = "header\n\
   0: 0000000000000000FFFF00000100007F:5EDA 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 77 1 0\n\
   1: 00000000000000000000000001000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 78 1 0\n";
        let rows: Vec<_> = linux::parse_tcp_table(text).collect();
        assert_eq!(
            rows[0].local,
            (std::net::Ipv4Addr::LOCALHOST, 0x5EDA).into()
        );
        assert_eq!(rows[1].local, (std::net::Ipv6Addr::LOCALHOST, 22).into());
    }

    #[test]
    fn finds_our_own_listening_socket() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let me = std::process::id();
        let map = platform().listening_ports(&[me, u32::MAX]);
        assert!(map.get(&me).is_some_and(|ports| ports.contains(&port)));
        assert!(!map.contains_key(&u32::MAX));
        assert!(pid_owns_port(me, port));
    }

    #[test]
    fn finds_the_client_end_of_a_connection_and_its_owner() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let local = l.local_addr().expect("addr");
        let client = std::net::TcpStream::connect(local).expect("connect");
        let (_server_end, remote) = l.accept().expect("accept");
        assert_eq!(remote, client.local_addr().expect("addr"));
        let peer = peer_socket(remote, local).expect("the client end is in the table");
        assert_eq!(peer.uid, rustix::process::geteuid().as_raw());
        assert!(has_socket(std::process::id(), peer.inode));
        assert!(!has_socket(u32::MAX, peer.inode));
        // The server end is a different socket, not mistaken for the client's.
        assert!(peer_socket(local, remote).is_some_and(|s| s.inode != peer.inode));
    }
}
