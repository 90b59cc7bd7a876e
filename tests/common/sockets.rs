//! TCP sockets of processes, for the tests and the benchmark: whether a process listens (the
//! library's own map, `serena_tray::core::sockets`), and the connections of the kernel's TCP
//! tables (`/proc/net/tcp{,6}`) with the socket inodes a process holds. The library parses those
//! tables too, but keeps its parser private (`sockets::parse_tcp_table`); this is the tests'
//! one reading of them until it is public.

use std::collections::{BTreeSet, HashSet};

/// A connection's state in the kernel's TCP tables: established.
pub const ESTABLISHED: u8 = 0x01;

/// One row of `/proc/net/tcp` or `/proc/net/tcp6`: the ports of both ends, the state and the
/// socket's inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpRow {
    pub local_port: u16,
    pub remote_port: u16,
    pub state: u8,
    pub inode: u64,
}

/// Every row of the kernel's IPv4 and IPv6 TCP tables now (a table that cannot be read: none).
pub fn tcp_rows() -> Vec<TcpRow> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| text.lines().skip(1).filter_map(tcp_row).collect::<Vec<_>>())
        .collect()
}

/// `sl local remote st tx:rx tr:when retrnsmt uid timeout inode ...`, addresses as
/// `HEXIP:HEXPORT`, the state in hex.
fn tcp_row(line: &str) -> Option<TcpRow> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let port = |addr: &str| u16::from_str_radix(addr.rsplit_once(':')?.1, 16).ok();
    Some(TcpRow {
        local_port: port(f.get(1)?)?,
        remote_port: port(f.get(2)?)?,
        state: u8::from_str_radix(f.get(3)?, 16).ok()?,
        inode: f.get(9)?.parse().ok()?,
    })
}

/// The inodes of the sockets `pid` has open now (none if it cannot be read: gone, or another
/// user's).
pub fn socket_inodes(pid: u32) -> HashSet<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let link = std::fs::read_link(e.path()).ok()?;
            link.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// The TCP ports `pid` listens on now (that 127.0.0.1 reaches), as the library finds them.
pub fn listening_ports(pid: u32) -> BTreeSet<u16> {
    serena_tray::core::sockets::platform()
        .listening_ports(&[pid])
        .remove(&pid)
        .unwrap_or_default()
}
