//! Counting: every reply (and every request that got none) lands here, per load thread, in
//! HdrHistograms that are merged at the end. Nothing is dropped: a request either got a
//! reply matched to it, or is counted lost; an error is counted in the phase it belongs to.

use std::time::Instant;

use hdrhistogram::Histogram;

use crate::workload::{FailKind, OpKind, Outcome, Phase, Reply, Request, Verdict, Workload};

/// Latencies are recorded in nanoseconds, 3 significant digits, up to an hour.
pub const LATENCY_NS_MAX: u64 = 3_600 * 1_000_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;
/// Distinct error messages kept as samples (with counts); the counts are exact regardless.
const ERROR_SAMPLES_MAX: usize = 10;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, SIGNIFICANT_DIGITS).expect("valid bounds")
}

/// The measured requests of one op.
#[derive(Debug, Clone)]
pub struct OpStats {
    /// Requests that got a reply.
    pub ops: u64,
    /// Error replies, verify failures, and requests that got no reply.
    pub errors: u64,
    /// GETs of a key that does not exist.
    pub misses: u64,
    /// Latency of the replies that were not errors.
    pub latency_ns: Histogram<u64>,
}

impl OpStats {
    fn new() -> OpStats {
        OpStats {
            ops: 0,
            errors: 0,
            misses: 0,
            latency_ns: new_histogram(),
        }
    }

    pub fn merge(&mut self, other: &OpStats) {
        self.ops += other.ops;
        self.errors += other.errors;
        self.misses += other.misses;
        self.latency_ns
            .add(&other.latency_ns)
            .expect("histograms of the same bounds");
    }
}

/// Requests of an unmeasured phase (prefill, warmup): counted, not timed.
#[derive(Debug, Clone, Copy, Default)]
pub struct PhaseCount {
    pub ops: u64,
    pub errors: u64,
}

/// One progress interval of one thread.
#[derive(Debug, Clone)]
pub struct Interval {
    pub ops: u64,
    pub errors: u64,
    pub latency_ns: Histogram<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct VerifyCount {
    /// GETs whose value was the one expected.
    pub passed: u64,
    /// GETs of a key this run had not written yet.
    pub unknown: u64,
    pub failed: u64,
    /// Of the failures: older than allowed, newer than allowed, wrong bytes.
    pub stale: u64,
    pub ahead: u64,
    pub corrupt: u64,
}

#[derive(Debug, Clone)]
pub struct ThreadStats {
    /// Indexed by `OpKind::index`.
    pub measured: [OpStats; 2],
    pub prefill: PhaseCount,
    pub warmup: PhaseCount,
    /// Requests handed to a connection.
    pub sent: u64,
    /// Replies matched to a request in flight.
    pub matched: u64,
    /// Replies that matched no request in flight (an unknown id): each is an error.
    pub unmatched: u64,
    /// Requests in flight when their connection was lost or timed out.
    pub lost: u64,
    /// Connections given up on (closed, unreadable replies, timeout).
    pub connections_failed: u64,
    pub verify: VerifyCount,
    /// Errors outside any request (an unmatched reply, a failed connection).
    pub other_errors: u64,
    pub error_samples: Vec<(String, u64)>,
    /// When the last measured reply came.
    pub measured_last: Option<Instant>,
    interval: Interval,
}

impl Default for ThreadStats {
    fn default() -> Self {
        ThreadStats::new()
    }
}

impl ThreadStats {
    pub fn new() -> ThreadStats {
        ThreadStats {
            measured: [OpStats::new(), OpStats::new()],
            prefill: PhaseCount::default(),
            warmup: PhaseCount::default(),
            sent: 0,
            matched: 0,
            unmatched: 0,
            lost: 0,
            connections_failed: 0,
            verify: VerifyCount::default(),
            other_errors: 0,
            error_samples: Vec::new(),
            measured_last: None,
            interval: Interval {
                ops: 0,
                errors: 0,
                latency_ns: new_histogram(),
            },
        }
    }

    /// Takes `request`'s reply (`None`: it never came) at `now`.
    pub fn record(
        &mut self,
        workload: &mut Workload,
        request: &Request,
        reply: Option<&Reply>,
        now: Instant,
    ) {
        let (outcome, verdict) = workload.complete(request, reply);
        match reply {
            Some(_) => self.matched += 1,
            None => self.lost += 1,
        }
        let mut error = match outcome {
            Outcome::Error(message) => Some(message),
            Outcome::Ok | Outcome::Miss => None,
        };
        match verdict {
            Verdict::NotChecked => {}
            Verdict::Pass => self.verify.passed += 1,
            Verdict::Unknown => self.verify.unknown += 1,
            Verdict::Fail(kind, message) => {
                self.verify.failed += 1;
                match kind {
                    FailKind::Stale => self.verify.stale += 1,
                    FailKind::Ahead => self.verify.ahead += 1,
                    FailKind::Corrupt => self.verify.corrupt += 1,
                }
                error.get_or_insert(format!("verify: {message}"));
            }
        }
        let failed = error.is_some();
        if let Some(message) = error {
            self.sample(message);
        }
        let latency_ns = (now.saturating_duration_since(request.start).as_nanos() as u64).max(1);
        let replied = u64::from(reply.is_some());
        let errors = u64::from(failed);
        match request.phase {
            Phase::Prefill => {
                self.prefill.ops += replied;
                self.prefill.errors += errors;
            }
            Phase::Warmup => {
                self.warmup.ops += replied;
                self.warmup.errors += errors;
                self.count_interval(replied, errors, failed, latency_ns);
            }
            Phase::Measure => {
                let op = &mut self.measured[request.op.index()];
                op.ops += replied;
                op.errors += errors;
                if outcome_is_miss(request.op, reply) {
                    op.misses += 1;
                }
                if !failed {
                    op.latency_ns.saturating_record(latency_ns);
                }
                if reply.is_some() {
                    self.measured_last = Some(self.measured_last.map_or(now, |last| last.max(now)));
                }
                self.count_interval(replied, errors, failed, latency_ns);
            }
        }
    }

    fn count_interval(&mut self, replied: u64, errors: u64, failed: bool, latency_ns: u64) {
        self.interval.ops += replied;
        self.interval.errors += errors;
        if !failed {
            self.interval.latency_ns.saturating_record(latency_ns);
        }
    }

    /// A reply for no request in flight.
    pub fn unmatched_reply(&mut self, what: String) {
        self.unmatched += 1;
        self.other_errors += 1;
        self.sample(what);
    }

    pub fn connection_failed(&mut self, why: String) {
        self.connections_failed += 1;
        self.other_errors += 1;
        self.sample(why);
    }

    pub fn take_interval(&mut self) -> Interval {
        let fresh = Interval {
            ops: 0,
            errors: 0,
            latency_ns: new_histogram(),
        };
        std::mem::replace(&mut self.interval, fresh)
    }

    fn sample(&mut self, message: String) {
        if let Some(entry) = self.error_samples.iter_mut().find(|(m, _)| *m == message) {
            entry.1 += 1;
        } else if self.error_samples.len() < ERROR_SAMPLES_MAX {
            self.error_samples.push((message, 1));
        }
    }

    pub fn merge(&mut self, other: &ThreadStats) {
        for op in OpKind::ALL {
            self.measured[op.index()].merge(&other.measured[op.index()]);
        }
        self.prefill.ops += other.prefill.ops;
        self.prefill.errors += other.prefill.errors;
        self.warmup.ops += other.warmup.ops;
        self.warmup.errors += other.warmup.errors;
        self.sent += other.sent;
        self.matched += other.matched;
        self.unmatched += other.unmatched;
        self.lost += other.lost;
        self.connections_failed += other.connections_failed;
        self.verify.passed += other.verify.passed;
        self.verify.unknown += other.verify.unknown;
        self.verify.failed += other.verify.failed;
        self.verify.stale += other.verify.stale;
        self.verify.ahead += other.verify.ahead;
        self.verify.corrupt += other.verify.corrupt;
        self.other_errors += other.other_errors;
        for (message, count) in &other.error_samples {
            if let Some(entry) = self.error_samples.iter_mut().find(|(m, _)| m == message) {
                entry.1 += count;
            } else if self.error_samples.len() < ERROR_SAMPLES_MAX {
                self.error_samples.push((message.clone(), *count));
            }
        }
        self.measured_last = match (self.measured_last, other.measured_last) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }

    /// Every error of the run, all phases.
    pub fn errors_total(&self) -> u64 {
        self.measured.iter().map(|op| op.errors).sum::<u64>()
            + self.prefill.errors
            + self.warmup.errors
            + self.other_errors
    }
}

fn outcome_is_miss(op: OpKind, reply: Option<&Reply>) -> bool {
    op == OpKind::Get && matches!(reply, Some(Reply::NotFound))
}

/// The percentiles the summary reports, in microseconds.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub p9999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    pub fn of(histogram: &Histogram<u64>) -> Percentiles {
        let us = |ns: u64| ns as f64 / 1_000.0;
        let at = |q: f64| us(histogram.value_at_quantile(q));
        Percentiles {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            p9999: at(0.9999),
            max: us(histogram.max()),
            mean: histogram.mean() / 1_000.0,
        }
    }
}

/// The HdrHistogram percentile distribution text (`.hgrm`, as `outputPercentileDistribution`
/// writes it), values in milliseconds.
pub fn hgrm(histogram: &Histogram<u64>) -> String {
    const NS_PER_MS: f64 = 1_000_000.0;
    let mut out = String::new();
    out.push_str(&format!(
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    ));
    let mut total = 0u64;
    for step in histogram.iter_quantiles(5) {
        total += step.count_since_last_iteration();
        let value = histogram.highest_equivalent(step.value_iterated_to()) as f64 / NS_PER_MS;
        let quantile = step.quantile_iterated_to();
        if quantile < 1.0 {
            out.push_str(&format!(
                "{value:12.3} {quantile:2.12} {total:10} {:14.2}\n",
                1.0 / (1.0 - quantile)
            ));
        } else {
            out.push_str(&format!("{value:12.3} {quantile:2.12} {total:10}\n"));
        }
    }
    out.push_str(&format!(
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]\n",
        histogram.mean() / NS_PER_MS,
        histogram.stdev() / NS_PER_MS
    ));
    out.push_str(&format!(
        "#[Max     = {:12.3}, Total count    = {:12}]\n",
        histogram.max() as f64 / NS_PER_MS,
        histogram.len()
    ));
    out.push_str(&format!(
        "#[Buckets = {:12}, SubBuckets     = {:12}]\n",
        histogram.buckets(),
        histogram.distinct_values()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hgrm_ends_at_the_max_with_every_count() {
        let mut histogram = new_histogram();
        for ms in 1..=100u64 {
            histogram.record(ms * 1_000_000).unwrap();
        }
        let text = hgrm(&histogram);
        let rows: Vec<&str> = text
            .lines()
            .filter(|line| !line.is_empty() && !line.starts_with('#') && !line.contains("Value"))
            .collect();
        let last: Vec<&str> = rows.last().unwrap().split_whitespace().collect();
        assert_eq!(last[1].parse::<f64>().unwrap(), 1.0);
        assert_eq!(last[2], "100");
        assert!((last[0].parse::<f64>().unwrap() - 100.0).abs() < 0.2);
        assert!(text.contains("Total count    =          100"));
    }

    #[test]
    fn percentiles_are_in_microseconds() {
        let mut histogram = new_histogram();
        histogram.record(2_000_000).unwrap();
        let p = Percentiles::of(&histogram);
        assert!((p.p50 - 2_000.0).abs() < 2.0);
        assert!((p.max - 2_000.0).abs() < 2.0);
    }
}
