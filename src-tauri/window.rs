//! The `serena-tray-window` binary: the dashboard window, a process the tray app starts when the
//! window is to be shown and that ends when it is closed (see `shell::window`). The only binary
//! that loads WebKit. On Windows a GUI-subsystem program: no console window opens with it.
#![cfg_attr(windows, windows_subsystem = "windows")]

fn main() -> std::process::ExitCode {
    match serena_tray::shell::window::run_window_process() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("serena-tray-window: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
