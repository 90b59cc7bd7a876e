//! Waiting for a process to exit, without polling: a pidfd on Linux, kqueue's `EVFILT_PROC`
//! with `NOTE_EXIT` on macOS, a registered wait on a process handle on Windows. Each pins the
//! process first (the fd or the handle keeps its PID from naming another process while it is
//! held), then checks that the pinned process has the instance's start time, so the wait is
//! never on a process that reused the PID. Where none of this is possible the answer is
//! "cannot tell" and the caller's timer covers it.
//!
//! On Windows a process can also be pinned ahead of the wait ([`Pinned`]): `launch` pins its
//! MCP client as it starts, so that the client's exit is seen whatever its PID names later.
//!
//! Deliberately not here: what the waiting is for (the refresh loop's wake-ups, `launch`).

use super::model::ProcessId;

#[cfg(windows)]
pub use windows::{ParentGone, Pinned};

/// Whether the pinned process is the one `id` names (checked after pinning it).
async fn same(id: ProcessId) -> bool {
    tokio::task::spawn_blocking(move || super::procs::identity(id.pid) == Some(id))
        .await
        .unwrap_or(false)
}

/// Waits for the process to exit; false where the platform cannot tell or the PID no longer
/// names that process.
#[cfg(target_os = "linux")]
pub async fn exited(id: ProcessId) -> bool {
    use rustix::process::{pidfd_open, Pid, PidfdFlags};
    use tokio::io::unix::AsyncFd;
    let Some(pid) = i32::try_from(id.pid).ok().and_then(Pid::from_raw) else {
        return false;
    };
    let Ok(fd) = pidfd_open(pid, PidfdFlags::NONBLOCK) else {
        return false;
    };
    if !same(id).await {
        return false;
    }
    // SAFETY: `fd` is a valid pidfd that the AsyncFd owns from here on; nothing else closes or
    // replaces it while it is registered.
    #[allow(unsafe_code)]
    let registered = unsafe { AsyncFd::register(fd) };
    match registered {
        // A pidfd becomes readable when the process exits.
        Ok(afd) => afd.readable().await.is_ok(),
        Err(_) => false,
    }
}

/// Waits for the process to exit (macOS: a kqueue watching it for `NOTE_EXIT`).
#[cfg(target_os = "macos")]
pub async fn exited(id: ProcessId) -> bool {
    use rustix::event::kqueue::{kevent, kqueue, Event, EventFilter, EventFlags, ProcessEvents};
    use rustix::process::Pid;
    use tokio::io::unix::AsyncFd;
    let Some(pid) = i32::try_from(id.pid).ok().and_then(Pid::from_raw) else {
        return false;
    };
    let Ok(kq) = kqueue() else { return false };
    let watch = Event::new(
        EventFilter::Proc {
            pid,
            flags: ProcessEvents::EXIT,
        },
        EventFlags::ADD | EventFlags::ONESHOT,
        std::ptr::null_mut(),
    );
    // SAFETY: the change list names no file descriptor (a process filter), and no event is
    // received here (the event list is empty), so no pointer in it is ever read.
    #[allow(unsafe_code)]
    let added = unsafe {
        kevent(
            &kq,
            &[watch],
            &mut Vec::<Event>::new(),
            Some(std::time::Duration::ZERO),
        )
    };
    // Watched from here on: an exit after this point is reported, and a PID that no longer
    // exists fails at once.
    if added.is_err() || !same(id).await {
        return false;
    }
    // SAFETY: `kq` is a valid kqueue descriptor owned by the AsyncFd from here on.
    #[allow(unsafe_code)]
    let registered = unsafe { AsyncFd::register(kq) };
    match registered {
        // A kqueue is readable once an event (the exit) is pending.
        Ok(afd) => afd.readable().await.is_ok(),
        Err(_) => false,
    }
}

/// Waits for the process to exit (Windows: a registered wait on a handle to it).
#[cfg(windows)]
pub async fn exited(id: ProcessId) -> bool {
    let Some(pinned) = windows::Pinned::open(id.pid) else {
        return false;
    };
    if !same(id).await {
        return false;
    }
    pinned.exited().await
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
pub async fn exited(_id: ProcessId) -> bool {
    false
}

#[cfg(windows)]
mod windows {
    //! A process handle, and a thread-pool wait on it that completes a oneshot channel.
    #![allow(unsafe_code)]

    use std::ffi::c_void;
    use std::sync::Mutex;
    use tokio::sync::oneshot;
    use windows_sys::Win32::Foundation::{CloseHandle, FILETIME, HANDLE, INVALID_HANDLE_VALUE};
    use windows_sys::Win32::System::Threading::{
        GetCurrentProcess, GetProcessTimes, OpenProcess, RegisterWaitForSingleObject,
        TerminateProcess, UnregisterWaitEx, INFINITE, PROCESS_QUERY_LIMITED_INFORMATION,
        PROCESS_SYNCHRONIZE, PROCESS_TERMINATE, WT_EXECUTEONLYONCE,
    };

    /// An open handle to a process: while it is open, the PID cannot name another process.
    pub struct Pinned {
        handle: HANDLE,
        pid: u32,
    }

    // SAFETY: a process handle may be used and closed from any thread.
    unsafe impl Send for Pinned {}

    /// This process's parent is gone: its PID names no process now, or one created after this
    /// one (the PID was reused).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct ParentGone;

    impl Pinned {
        /// Pins `pid` to wait for its exit.
        pub fn open(pid: u32) -> Option<Pinned> {
            Pinned::open_with(pid, PROCESS_SYNCHRONIZE | PROCESS_QUERY_LIMITED_INFORMATION)
        }

        /// Pins `pid` to end it ([`Pinned::terminate`]); `None` when it is gone or this user
        /// may not end it.
        pub fn open_to_end(pid: u32) -> Option<Pinned> {
            Pinned::open_with(pid, PROCESS_TERMINATE | PROCESS_QUERY_LIMITED_INFORMATION)
        }

        fn open_with(pid: u32, rights: u32) -> Option<Pinned> {
            // SAFETY: plain call; a null handle is the failure and is not kept.
            let handle = unsafe { OpenProcess(rights, 0, pid) };
            (!handle.is_null()).then_some(Pinned { handle, pid })
        }

        /// Ends the pinned process at once (exit code 1); whether it was ended. Needs a pin
        /// from [`Pinned::open_to_end`].
        pub fn terminate(&self) -> bool {
            // SAFETY: the handle is open; without PROCESS_TERMINATE the call fails.
            unsafe { TerminateProcess(self.handle, 1) != 0 }
        }

        /// Pins this process's parent (Windows keeps the PID of the process that created
        /// another, whether or not it still runs): `Ok(None)` when the process table does not
        /// say; `Err(ParentGone)` when that PID names no process or a younger one than this.
        pub fn parent_of_this_process() -> Result<Option<Pinned>, ParentGone> {
            let Some(pid) = super::super::procs::parent_pid(std::process::id()) else {
                return Ok(None);
            };
            let parent = Pinned::open(pid).ok_or(ParentGone)?;
            // Held from here on, so its creation time is the one of the process we keep.
            // SAFETY: the pseudo-handle of this process is always valid.
            let me = created(unsafe { GetCurrentProcess() });
            match (parent.created(), me) {
                (Some(parent_at), Some(me_at)) if parent_at <= me_at => Ok(Some(parent)),
                (Some(_), Some(_)) => Err(ParentGone),
                // Cannot tell: trusted, as the PID was opened just now.
                _ => Ok(Some(parent)),
            }
        }

        pub fn pid(&self) -> u32 {
            self.pid
        }

        /// When the process was created (100 ns units since 1601).
        fn created(&self) -> Option<u64> {
            created(self.handle)
        }

        /// Resolves once the process has exited.
        pub async fn exited(self) -> bool {
            let (tx, rx) = oneshot::channel::<()>();
            let Some(_wait) = self.register(tx) else {
                return false;
            };
            rx.await.is_ok()
        }

        /// Registers a thread-pool wait on the handle that sends on `tx` when it is signalled.
        fn register(self, tx: oneshot::Sender<()>) -> Option<Wait> {
            let context: *mut Mutex<Option<oneshot::Sender<()>>> =
                Box::into_raw(Box::new(Mutex::new(Some(tx))));
            let mut wait: HANDLE = std::ptr::null_mut();
            // SAFETY: `self.0` is a valid process handle, `context` lives until the wait is
            // unregistered (in `Wait::drop`), and `signalled` only reads it.
            let ok = unsafe {
                RegisterWaitForSingleObject(
                    &mut wait,
                    self.handle,
                    Some(signalled),
                    context as *const c_void,
                    INFINITE,
                    WT_EXECUTEONLYONCE,
                )
            };
            if ok == 0 {
                // SAFETY: never registered: nobody else holds `context`.
                drop(unsafe { Box::from_raw(context) });
                return None;
            }
            Some(Wait {
                wait,
                context,
                _pinned: self,
            })
        }
    }

    impl Drop for Pinned {
        fn drop(&mut self) {
            // SAFETY: the handle is open and owned here.
            unsafe { CloseHandle(self.handle) };
        }
    }

    /// The creation time of the process `handle` names (100 ns units since 1601).
    fn created(handle: HANDLE) -> Option<u64> {
        let mut times = [FILETIME::default(); 4];
        // SAFETY: a valid process handle (with query rights) and four out-parameters.
        let [creation, exit, kernel, user] = &mut times;
        let ok = unsafe { GetProcessTimes(handle, creation, exit, kernel, user) };
        (ok != 0)
            .then(|| u64::from(creation.dwHighDateTime) << 32 | u64::from(creation.dwLowDateTime))
    }

    /// A registered wait; unregistering it waits for a running callback to finish, after
    /// which the context can be freed.
    struct Wait {
        wait: HANDLE,
        context: *mut Mutex<Option<oneshot::Sender<()>>>,
        _pinned: Pinned,
    }

    // SAFETY: the wait handle may be unregistered from any thread, and the context (a Mutex
    // around a Sender, both Send) is only touched under that Mutex or after unregistering.
    unsafe impl Send for Wait {}

    impl Drop for Wait {
        fn drop(&mut self) {
            // SAFETY: `wait` was registered; INVALID_HANDLE_VALUE makes the call return only
            // once no callback runs any more, so `context` is then ours alone.
            unsafe {
                UnregisterWaitEx(self.wait, INVALID_HANDLE_VALUE);
                drop(Box::from_raw(self.context));
            }
        }
    }

    unsafe extern "system" fn signalled(context: *mut c_void, _timed_out: bool) {
        // SAFETY: `context` is the Mutex registered with the wait, alive until it is
        // unregistered.
        let slot = unsafe { &*(context as *const Mutex<Option<oneshot::Sender<()>>>) };
        if let Some(tx) = slot.lock().ok().and_then(|mut s| s.take()) {
            let _ = tx.send(());
        }
    }
}
