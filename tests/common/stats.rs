//! Figures from measured samples (the benchmark's): the median and percentiles, each the
//! sample at that rank, none interpolated.

/// The sample at rank `q` (0 to 1) of `v`: the one at `round((len - 1) * q)` once sorted.
/// Panics on no samples.
pub fn percentile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// The median (the upper one of an even count).
pub fn median(v: Vec<f64>) -> f64 {
    percentile(v, 0.5)
}

/// The 90th percentile.
pub fn p90(v: Vec<f64>) -> f64 {
    percentile(v, 0.9)
}

/// The 95th percentile.
pub fn p95(v: Vec<f64>) -> f64 {
    percentile(v, 0.95)
}
