//! The `serena-tray` binary: the CLI, `launch` and the daemon, without the GUI libraries (the
//! tray app is `serena-tray-app`, see `app.rs`); everything is in the library.

fn main() -> std::process::ExitCode {
    serena_tray::cli::main()
}
