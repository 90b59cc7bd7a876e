//! The `serena-tray` binary: everything is in the library.

fn main() -> std::process::ExitCode {
    serena_tray::cli::main()
}
