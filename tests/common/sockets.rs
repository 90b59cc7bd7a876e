//! TCP sockets of processes, for the tests and the benchmark, as the library reads them
//! (`serena_tray::core::sockets`): whether a process listens, the connections of the kernel's TCP
//! tables (`/proc/net/tcp{,6}`) and the socket inodes a process holds.

use std::collections::BTreeSet;

#[cfg(target_os = "linux")]
pub use serena_tray::core::sockets::{socket_inodes, tcp_rows, TCP_ESTABLISHED as ESTABLISHED};

/// The TCP ports `pid` listens on now (that 127.0.0.1 reaches), as the library finds them.
pub fn listening_ports(pid: u32) -> BTreeSet<u16> {
    serena_tray::core::sockets::platform()
        .listening_ports(&[pid])
        .remove(&pid)
        .unwrap_or_default()
}
