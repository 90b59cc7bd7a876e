//! What the Windows tests (tests/windows.rs) need done from a process of its own:
//!
//! - `windows-helper ctrl-c PID`: presses Ctrl+C in the console of process PID, as a user does
//!   in its window. Windows sends console control events only to the processes of a console, so
//!   this process leaves its own, attaches to PID's, ignores the event itself and sends it
//!   (process PID must have a console of its own: started with `CREATE_NEW_CONSOLE`).
//! - `windows-helper hold PATH SHARE`: opens the file PATH for reading the way another program
//!   would, with the share mode SHARE (`all`: read, write and delete, as Rust opens files;
//!   `no-delete`: read and write, as a C runtime or Python's `open` does), prints `held` once it
//!   has it, and keeps it open until its stdin closes.
//!
//! Windows only; elsewhere it says so and exits 2.

#[cfg(windows)]
fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["ctrl-c", pid] => pid
            .parse()
            .map_err(|e| format!("not a PID: {pid}: {e}"))
            .and_then(windows::ctrl_c),
        ["hold", path, share] => windows::hold(path, share),
        _ => Err("usage: windows-helper ctrl-c PID | hold PATH all|no-delete".into()),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("windows-helper: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(not(windows))]
fn main() -> std::process::ExitCode {
    eprintln!("windows-helper: Windows only");
    std::process::ExitCode::from(2)
}

#[cfg(windows)]
mod windows {
    use std::io::{Read, Write};
    use std::os::windows::fs::OpenOptionsExt;

    pub fn ctrl_c(pid: u32) -> Result<(), String> {
        use windows_sys::Win32::System::Console::{
            AttachConsole, FreeConsole, GenerateConsoleCtrlEvent, SetConsoleCtrlHandler,
            CTRL_C_EVENT,
        };
        let last = || std::io::Error::last_os_error();
        // SAFETY: plain calls on this process's own console state; no pointers are passed.
        #[allow(unsafe_code)]
        unsafe {
            FreeConsole();
            if AttachConsole(pid) == 0 {
                return Err(format!("cannot attach to the console of {pid}: {}", last()));
            }
            // Ignore the event here: it goes to every process of the console, this one too.
            SetConsoleCtrlHandler(None, 1);
            if GenerateConsoleCtrlEvent(CTRL_C_EVENT, 0) == 0 {
                return Err(format!("cannot send Ctrl+C: {}", last()));
            }
        }
        Ok(())
    }

    pub fn hold(path: &str, share: &str) -> Result<(), String> {
        const READ: u32 = 0x1;
        const WRITE: u32 = 0x2;
        const DELETE: u32 = 0x4;
        let mode = match share {
            "all" => READ | WRITE | DELETE,
            "no-delete" => READ | WRITE,
            other => return Err(format!("share mode `all` or `no-delete`, not `{other}`")),
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .share_mode(mode)
            .open(path)
            .map_err(|e| format!("cannot open {path}: {e}"))?;
        println!("held");
        std::io::stdout().flush().map_err(|e| e.to_string())?;
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        drop(file);
        Ok(())
    }
}
