//! The `serena-tray-app` binary: the tray app and its dashboard window, the only binary that
//! loads the GUI libraries. `serena-tray` hands over to it (same process, same arguments) when
//! a display is there; everything else is the same command line.

fn main() -> std::process::ExitCode {
    serena_tray::cli::main_with(Some(&serena_tray::shell::Host))
}
