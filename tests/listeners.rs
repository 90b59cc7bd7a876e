//! Both HTTP listeners under abuse, against a real `serena-tray daemon`: thousands of idle
//! connections do not lock `/api/health` out, a client that never finishes its headers is cut off
//! after the header-read timeout, and the server-sent event stream (a response that never ends)
//! outlives that timeout.

mod common;

use common::*;
use serena_tray::core::http::serve::{
    connection_bound, raise_fd_limit, HEADER_READ_TIMEOUT, MAX_CONNECTIONS,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const IDLE: usize = 2000;

/// How many accepted connections to `port` the process `pid` holds: its socket descriptors
/// that the kernel's table shows as established on that local port (a connection still in the
/// accept queue is in the table but not among its descriptors).
fn held_connections(pid: u32, port: u16) -> usize {
    let held: std::collections::HashSet<u64> = sockets::socket_inodes(pid).into_iter().collect();
    sockets::tcp_rows()
        .iter()
        .filter(|r| r.local.port() == port && r.state == sockets::ESTABLISHED)
        .filter(|r| held.contains(&r.inode))
        .count()
}

/// One GET with a fresh connection: (status, how long it took).
fn timed_get(port: u16, path: &str) -> (u16, Duration) {
    let url = format!("http://127.0.0.1:{port}{path}");
    block_on(async move {
        let client = http::client_with_timeout(Duration::from_secs(60));
        let start = Instant::now();
        let status = client
            .get(&url)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        (status, start.elapsed())
    })
}

#[test]
fn two_thousand_idle_connections_leave_health_answering() {
    const { assert!(IDLE < MAX_CONNECTIONS, "the bound leaves room for them") };
    // This process holds the client ends; the daemon raises its own limit the same way.
    let limit = raise_fd_limit();
    if connection_bound() <= IDLE {
        // A developer's machine may have a low hard limit; CI must exercise it.
        skip_unless_ci(&format!(
            "open-file limit {limit:?} is too low for {IDLE} connections"
        ));
        return;
    }
    let home = Home::new();
    let d = home.daemon();
    let rss_before = rss_kib(d.pid);
    // One after the other, as fast as they connect: all open well within the header-read
    // timeout, which would start closing the first ones.
    let start = Instant::now();
    let idle: Vec<TcpStream> = (0..IDLE)
        .map(|i| {
            TcpStream::connect(("127.0.0.1", d.port))
                .unwrap_or_else(|e| panic!("idle connection {i}: {e}"))
        })
        .collect();
    let opened = start.elapsed();
    assert_eq!(idle.len(), IDLE);
    // The daemon has accepted them all: they occupy connection slots, not just the kernel's
    // accept queue.
    wait_for(
        "the daemon to accept every idle connection",
        HEADER_READ_TIMEOUT,
        || (held_connections(d.pid, d.port) >= IDLE).then_some(()),
    );
    let (status, latency) = timed_get(d.port, "/api/health");
    let (tray_status, tray_latency) = timed_get(d.tray_port, "/health");
    let held = held_connections(d.pid, d.port);
    eprintln!(
        "{IDLE} idle connections opened in {opened:?}, {held} held by the daemon after the \
         answers; daemon RSS {rss_before} KiB before them, {} KiB with them; /api/health \
         answered {status} in {latency:?}, the tray receiver's /health {tray_status} in \
         {tray_latency:?}",
        rss_kib(d.pid)
    );
    assert_eq!(status, 200);
    assert_eq!(tray_status, 200);
    assert!(
        latency < Duration::from_secs(15),
        "/api/health took {latency:?}"
    );
    assert!(
        held >= IDLE,
        "the idle connections were still held while it answered"
    );
    drop(idle);
}

#[test]
fn a_client_that_never_finishes_its_headers_is_cut_off_after_the_timeout() {
    let home = Home::new();
    let d = home.daemon();
    let connect = || {
        let s = TcpStream::connect(("127.0.0.1", d.port)).expect("connect");
        s.set_read_timeout(Some(HEADER_READ_TIMEOUT * 3))
            .expect("read timeout");
        s
    };
    // One dribbles part of a request and stops; one sends nothing at all.
    let mut slow = connect();
    write!(
        slow,
        "GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nX-Slow: ",
        d.port
    )
    .expect("write");
    let mut silent = connect();
    let start = Instant::now();
    let ended = |s: &mut TcpStream| {
        let mut buf = [0u8; 256];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    };
    ended(&mut slow).expect("the slow client is disconnected (not left waiting)");
    let slow_after = start.elapsed();
    ended(&mut silent).expect("the silent client is disconnected");
    let silent_after = start.elapsed();
    eprintln!(
        "header-read timeout {HEADER_READ_TIMEOUT:?}: slow-header client cut off after \
         {slow_after:?}, silent client after {silent_after:?}"
    );
    // Not refused at once: cut off by the timeout, and well within a generous bound of it.
    assert!(slow_after >= Duration::from_secs(1), "{slow_after:?}");
    assert!(slow_after < HEADER_READ_TIMEOUT + Duration::from_secs(15));
    assert!(silent_after < HEADER_READ_TIMEOUT + Duration::from_secs(15));
    // The server itself is fine.
    assert_eq!(timed_get(d.port, "/api/health").0, 200);
}

/// Reads the stream until what it has sent so far contains `needle`.
fn read_until(stream: &mut TcpStream, seen: &mut String, needle: &str) {
    let mut buf = [0u8; 4096];
    while !seen.contains(needle) {
        let n = stream.read(&mut buf).expect("read the stream");
        assert!(n > 0, "the stream ended; so far: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

#[test]
fn the_event_stream_outlives_the_header_timeout() {
    let home = Home::new();
    let d = home.daemon();
    let mut stream = TcpStream::connect(("127.0.0.1", d.port)).expect("connect");
    write!(
        stream,
        "GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {}\r\n\
         Accept: text/event-stream\r\n\r\n",
        d.port, d.token
    )
    .expect("write");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("read timeout");
    let mut seen = String::new();
    read_until(&mut stream, &mut seen, "event: snapshot");
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    // Longer than the header-read timeout, with the response still streaming.
    std::thread::sleep(HEADER_READ_TIMEOUT + Duration::from_secs(2));
    let mut reaper = Reaper::default();
    let pid = reaper.adopt(spawn_fake(&home, &[], &[]));
    read_until(&mut stream, &mut seen, &format!("\"pid\":{pid}"));
}
