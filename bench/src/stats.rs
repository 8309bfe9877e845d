//! The arithmetic of the figures, kept apart from any I/O so it is tested
//! on its own: percentiles of latency samples, rates, ratios to a baseline,
//! and the schedule of a paced (fixed-rate) load.

use std::time::Duration;

/// Latency samples summarised the way every scenario reports them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencySummary {
    /// How many samples.
    pub count: usize,
    /// Median, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, in milliseconds.
    pub p99_ms: f64,
    /// Largest sample, in milliseconds.
    pub max_ms: f64,
}

/// The `q`-th quantile (0..=1) of `sorted` by the nearest-rank method: the
/// smallest sample that at least `q` of the samples do not exceed. Nearest
/// rank rather than interpolation, so a p99 is always a latency that was
/// actually observed. None for no samples.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let q = q.clamp(0.0, 1.0);
    // ceil(q * n) is the 1-based nearest rank; rank 0 only when q is 0.
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Summarise latencies (any order). None for no samples: a scenario that
/// measured nothing must say so rather than report zeros.
pub fn summarise(samples: &[Duration]) -> Option<LatencySummary> {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    Some(LatencySummary {
        count: ms.len(),
        p50_ms: quantile(&ms, 0.50)?,
        p99_ms: quantile(&ms, 0.99)?,
        max_ms: *ms.last()?,
    })
}

/// Items per second for `items` done in `elapsed`; None when nothing was
/// timed (a zero span would be an infinite rate).
pub fn rate(items: u64, elapsed: Duration) -> Option<f64> {
    let secs = elapsed.as_secs_f64();
    (secs > 0.0).then(|| items as f64 / secs)
}

/// `value` as a fraction of `baseline`; None when the baseline is not a
/// positive number.
pub fn ratio(value: f64, baseline: f64) -> Option<f64> {
    (baseline > 0.0 && baseline.is_finite()).then(|| value / baseline)
}

/// The lower of two baselines with its name: a pipeline through a broker
/// and a database cannot beat the slower of the two.
pub fn lower<'a>(a: (&'a str, f64), b: (&'a str, f64)) -> (&'a str, f64) {
    if b.1 < a.1 { b } else { a }
}

/// A fixed-rate schedule: operation `i` is due `i / rate` after the start.
/// Operations are sent when due rather than when the previous one returns
/// (an open loop), so a slow answer does not lower the offered rate and
/// hide its own latency (coordinated omission); latency is measured from
/// the due time, not from when the request finally went out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pacer {
    interval: Duration,
}

impl Pacer {
    /// A schedule of `per_second` operations a second (at least one a
    /// minute, so a tiny rate still ends).
    pub fn new(per_second: f64) -> Self {
        let per_second = per_second.max(1.0 / 60.0);
        Self {
            interval: Duration::from_secs_f64(1.0 / per_second),
        }
    }

    /// When operation `i` is due, from the start.
    pub fn due(&self, i: u64) -> Duration {
        self.interval.mul_f64(i as f64)
    }

    /// How many operations fit in `span`.
    pub fn count_in(&self, span: Duration) -> u64 {
        (span.as_secs_f64() / self.interval.as_secs_f64()).floor() as u64
    }
}

/// Bytes to KiB.
pub fn kib(bytes: u64) -> f64 {
    bytes as f64 / 1024.0
}

/// Bytes to MiB.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles_are_observed_samples() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&sorted, 0.5), Some(50.0));
        assert_eq!(quantile(&sorted, 0.99), Some(99.0));
        assert_eq!(quantile(&sorted, 1.0), Some(100.0));
        assert_eq!(quantile(&sorted, 0.0), Some(1.0));
        assert_eq!(quantile(&[7.0], 0.99), Some(7.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn a_p99_of_few_samples_is_their_largest() {
        let sorted = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(quantile(&sorted, 0.99), Some(5.0));
        assert_eq!(quantile(&sorted, 0.5), Some(3.0));
    }

    #[test]
    fn summaries_sort_their_samples_and_refuse_an_empty_set() {
        let samples = [30, 10, 20].map(Duration::from_millis);
        let s = summarise(&samples).unwrap();
        assert_eq!(s.count, 3);
        assert!((s.p50_ms - 20.0).abs() < 1e-9);
        assert!((s.p99_ms - 30.0).abs() < 1e-9);
        assert!((s.max_ms - 30.0).abs() < 1e-9);
        assert_eq!(summarise(&[]), None);
    }

    #[test]
    fn rates_and_ratios_refuse_degenerate_denominators() {
        assert_eq!(rate(500, Duration::from_millis(250)), Some(2000.0));
        assert_eq!(rate(5, Duration::ZERO), None);
        assert_eq!(ratio(50.0, 200.0), Some(0.25));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(1.0, f64::INFINITY), None);
    }

    #[test]
    fn the_lower_baseline_keeps_its_name() {
        assert_eq!(lower(("broker", 9.0), ("database", 4.0)), ("database", 4.0));
        assert_eq!(lower(("broker", 3.0), ("database", 4.0)), ("broker", 3.0));
    }

    #[test]
    fn a_pacer_spaces_operations_evenly_from_the_start() {
        let p = Pacer::new(200.0);
        assert_eq!(p.due(0), Duration::ZERO);
        assert_eq!(p.due(1), Duration::from_millis(5));
        assert_eq!(p.due(200), Duration::from_secs(1));
        assert_eq!(p.count_in(Duration::from_secs(2)), 400);
    }

    #[test]
    fn a_pacer_never_divides_by_zero() {
        let p = Pacer::new(0.0);
        assert_eq!(p.due(1), Duration::from_secs(60));
    }

    #[test]
    fn byte_units_are_binary() {
        assert!((kib(2048) - 2.0).abs() < 1e-12);
        assert!((mib(3 * 1024 * 1024) - 3.0).abs() < 1e-12);
    }
}
