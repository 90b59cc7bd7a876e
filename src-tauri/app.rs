//! The `serena-tray-app` binary: the tray app and its dashboard window, the only binary that
//! loads the GUI libraries. `serena-tray` hands over to it (same process, same arguments) when
//! a display is there; everything else is the same command line. On Windows a GUI-subsystem
//! program: no console window opens with it (the CLI, `serena-tray.exe`, is the console one).
#![cfg_attr(windows, windows_subsystem = "windows")]

fn main() -> std::process::ExitCode {
    serena_tray::cli::main_with(Some(&serena_tray::shell::Host))
}
