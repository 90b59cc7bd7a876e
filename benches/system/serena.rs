//! The phases with real Serena 2.1.0 (the test venv's serena-agent).
//! (Being written: see the phase function.)

use crate::{Config, Metric};

/// `request_session_overhead_ratio`, `launch_initialize_overhead_ms`, `share_memory_ratio_5`,
/// `share_warm_attach_ms`.
pub(crate) fn serena_phase(_cfg: &Config, _out: &mut Vec<Metric>) {
    unimplemented!("serena phase")
}
