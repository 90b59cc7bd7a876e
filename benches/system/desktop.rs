//! The phases on a desktop: the dashboard page in headless Chromium, and the tray app on Xvfb.
//! (Being written: see the phase functions.)

use crate::{Config, Metric};

/// `ui_first_paint_ms_50`, `ui_red_tab_p95_ms`.
pub(crate) fn ui_phase(_cfg: &Config, _out: &mut Vec<Metric>) {
    unimplemented!("ui phase")
}

/// `tray_app_pss_mb_window_closed`.
pub(crate) fn tray_app_phase(_cfg: &Config, _out: &mut Vec<Metric>) {
    unimplemented!("tray app phase")
}
