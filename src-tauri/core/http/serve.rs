//! Serving a router on a listener, for both HTTP listeners (the API and Serena's tray-protocol
//! receiver): an accept loop that holds at most a bounded number of connections at once, HTTP/1.1
//! with a header-read timeout (a client that connects and sends nothing, or dribbles its headers,
//! is cut off), `ConnectInfo<SocketAddr>` on every request, and a graceful shutdown that lets
//! in-flight requests finish for a bounded time and then drops what is left (a server-sent event
//! stream never finishes by itself). Also raising the process's soft limit on open files, so that
//! the bound is not cut short by it, and lengthening the kernel's accept queue.
//!
//! Deliberately not here: routes, security checks and body limits (the routers' own layers), and
//! HTTP/2 (browsers only speak it over TLS, and nothing else here needs it).

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

/// The most connections one listener holds at once. Further clients wait in the kernel's accept
/// queue until a slot frees. Sized so that 2,000 idle connections (connected, sending nothing)
/// leave room to spare and `/api/health` still gets a slot at once; an idle connection costs about
/// 11 KiB of resident memory here (a task, its socket and hyper's buffers: 2,000 of them measured
/// at +22 MiB) and one file descriptor, so the full bound stays under 50 MiB. Lowered to a quarter
/// of the open-file limit where that is smaller (two listeners at their bound then use half of it;
/// the rest is for Serena's pipes and logs, the registry and `/proc`). See [`connection_bound`].
pub const MAX_CONNECTIONS: usize = 4096;

/// How long a client has to send a request's headers, from the moment its connection is
/// accepted (or its previous response was sent, on a kept-alive connection). Every legitimate
/// client here (the page, the CLI, Serena) is on loopback and sends its headers at once; 10 s is
/// generous for a loaded machine, and it is how long a connection that sends nothing can hold a
/// slot, so even a flood beyond [`MAX_CONNECTIONS`] clears within it. It bounds only the
/// headers: a long response (the server-sent events) is not cut.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a shutdown waits for in-flight connections before dropping them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The kernel's queue of connections waiting to be accepted. Listeners are bound with the
/// standard library's 128; a burst of connects larger than that while the loop is busy (or while
/// every slot is taken) makes the kernel drop SYNs, and each dropped client waits a second or
/// more for its retry. 1024 absorbs bursts; the kernel caps it at `net.core.somaxconn`.
pub const ACCEPT_BACKLOG: i32 = 1024;

/// Pause after an accept error that is not the client's (e.g. out of file descriptors), so the
/// loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, lets in-flight
/// requests finish for up to [`SHUTDOWN_GRACE`] and drops the connections still open. Handlers
/// can extract `ConnectInfo<SocketAddr>` (the client's address).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    deepen_accept_queue(&listener);
    let slots = Arc::new(Semaphore::new(connection_bound()));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = GracefulShutdown::new();
    // Flipped (or dropped) to end every connection at once, after the grace.
    let (drop_all, dropped) = watch::channel(false);
    let connections = tokio_util::task::TaskTracker::new();
    tokio::pin!(shutdown);

    loop {
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                // Never closed; if it were, nothing more could be served.
                Err(_) => break,
            },
        };
        let (stream, remote) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    tracing::warn!("{local}: cannot accept a connection: {e}");
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    }
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(remote));
            router.clone().oneshot(req)
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        let mut dropped = dropped.clone();
        connections.spawn(async move {
            tokio::select! {
                result = conn => {
                    if let Err(e) = result {
                        tracing::debug!("{local}: connection from {remote} ended: {e}");
                    }
                }
                _ = dropped.wait_for(|d| *d) => {}
            }
            drop(permit);
        });
    }

    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("{local}: dropping the connections still open after the grace");
    }
    let _ = drop_all.send(true);
    // Returns only once every connection's task is gone.
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Listening again on a listening socket only changes its queue length (Linux, the BSDs, macOS).
#[cfg(unix)]
fn deepen_accept_queue(listener: &TcpListener) {
    if let Err(e) = rustix::net::listen(listener, ACCEPT_BACKLOG) {
        tracing::debug!("cannot lengthen the accept queue: {e}");
    }
}

#[cfg(not(unix))]
fn deepen_accept_queue(_listener: &TcpListener) {}

/// An accept error that concerns one client only (it hung up before being accepted).
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// [`MAX_CONNECTIONS`], or a quarter of the soft open-file limit if that is smaller (at least
/// 64: below that the machine is unusable anyway).
pub fn connection_bound() -> usize {
    match fd_limit() {
        Some(limit) => {
            let quarter = usize::try_from(limit / 4).unwrap_or(usize::MAX);
            MAX_CONNECTIONS.min(quarter.max(64))
        }
        None => MAX_CONNECTIONS,
    }
}

/// The soft limit on open files (`None`: unlimited or unknown).
#[cfg(unix)]
pub fn fd_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

#[cfg(not(unix))]
pub fn fd_limit() -> Option<u64> {
    None
}

/// Raises the soft limit on open files to the hard limit (many systems start processes at 1024,
/// which the connection bound and Serena's pipes would otherwise share). Returns the soft limit
/// now in effect. Call once at start; a no-op where there is no such limit.
#[cfg(unix)]
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let now = getrlimit(Resource::Nofile);
    let wanted = match (now.current, now.maximum) {
        (Some(cur), Some(max)) if cur < max => Some(max),
        // The hard limit is "unlimited": the kernel still caps open files per process
        // (macOS refuses anything above it), so aim high and settle for what is accepted.
        (Some(cur), None) => Some(cur.max(1 << 20)),
        _ => None,
    };
    if let Some(target) = wanted {
        let mut target = target;
        // Halve until accepted (macOS: kern.maxfilesperproc); never go below where we are.
        while now.current.is_some_and(|cur| target > cur) {
            let new = Rlimit {
                current: Some(target),
                maximum: now.maximum,
            };
            match setrlimit(Resource::Nofile, new) {
                Ok(()) => break,
                Err(_) => target /= 2,
            }
        }
    }
    fd_limit()
}

#[cfg(not(unix))]
pub fn raise_fd_limit() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_fits_the_fd_limit() {
        let bound = connection_bound();
        assert!((64..=MAX_CONNECTIONS).contains(&bound), "{bound}");
        if let Some(limit) = raise_fd_limit() {
            assert!(limit >= 64);
            assert!(connection_bound() as u64 <= limit.max(256));
        }
    }
}
