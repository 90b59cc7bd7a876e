//! The one way a test says it cannot run here (no browser, an open-file limit too low, a port
//! taken): under `CI` that fails it, elsewhere it is skipped, out loud.

/// Says why the test cannot run: under `CI` (set in the environment) it panics with `reason`;
/// elsewhere it prints `SKIPPED: <reason>` and returns, and the caller returns at once:
/// `skip_unless_ci("no chromedriver"); return;`.
pub fn skip_unless_ci(reason: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "cannot run under CI: {reason}"
    );
    eprintln!("SKIPPED: {reason}");
}
