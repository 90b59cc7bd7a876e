//! Waiting for a condition, and running a future to its end: std and tokio only, so that the
//! Windows tests share them (`#[path = "common/wait.rs"] mod wait;`) with the rest.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// Polls `f` every 200 ms until it returns `Some`, or panics after `timeout` naming `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    wait_for_every(Duration::from_millis(200), what, timeout, f)
}

/// [`wait_for`], polling every `pause` (where how soon it is seen is measured).
pub fn wait_for_every<T>(
    pause: Duration,
    what: &str,
    timeout: Duration,
    f: impl FnMut() -> Option<T>,
) -> T {
    poll(pause, timeout, f)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Polls `f` every `pause` until it returns `Some`; `None` once `timeout` has passed (for a
/// caller that goes on, or says more than [`wait_for`] would, when it does not come).
pub fn poll<T>(pause: Duration, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(pause);
    }
}

/// Runs `f` on a runtime of its own.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}
