//! What a run measured: one recorder per connection, merged at the end into the report.
//!
//! Each connection records into its own HDR histogram, so recording a latency is a few
//! instructions on memory no other thread touches; merging happens once, after the run.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use wasmkv::api::ConnectError;

use super::link::Protocol;

/// Latency range of the histograms, in µs: 1 µs to 60 s at 3 significant digits.
const LOWEST_US: u64 = 1;
const HIGHEST_US: u64 = 60_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

/// What one connection measured.
pub(super) struct Recorder {
    histogram: Histogram<u64>,
    requests: u64,
    errors: u64,
    pub(super) first_error: Option<(Instant, ConnectError)>,
    last_done: Option<Instant>,
}

impl Recorder {
    pub(super) fn new() -> Recorder {
        Recorder {
            histogram: new_histogram(),
            requests: 0,
            errors: 0,
            first_error: None,
            last_done: None,
        }
    }

    pub(super) fn success(&mut self, latency: Duration, done: Instant) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        // Out-of-range values are clamped, not dropped: a 2-minute stall still counts as the
        // worst latency there is.
        self.histogram.saturating_record(us.max(LOWEST_US));
        self.requests += 1;
        self.last_done = Some(done);
    }

    pub(super) fn error(&mut self, error: ConnectError, done: Instant) {
        self.errors += 1;
        self.last_done = Some(done);
        self.first_error.get_or_insert((done, error));
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
        .expect("the latency bounds are valid")
}

/// Every connection's figures together.
pub(super) struct Totals {
    histogram: Histogram<u64>,
    pub(super) requests: u64,
    pub(super) errors: u64,
    /// The earliest error of the run.
    pub(super) first_error: Option<ConnectError>,
    elapsed: Duration,
}

impl Totals {
    /// Merge the recorders. The measured time runs from `measure_from` to the last answer
    /// (or to `now` when nothing was answered).
    pub(super) fn merge(recorders: Vec<Recorder>, measure_from: Instant, now: Instant) -> Totals {
        let mut histogram = new_histogram();
        let (mut requests, mut errors) = (0, 0);
        let mut first_error: Option<(Instant, ConnectError)> = None;
        let mut end = None;
        for recorder in recorders {
            histogram
                .add(&recorder.histogram)
                .expect("histograms with the same bounds add up");
            requests += recorder.requests;
            errors += recorder.errors;
            if let Some((at, error)) = recorder.first_error
                && first_error.as_ref().is_none_or(|(first, _)| at < *first)
            {
                first_error = Some((at, error));
            }
            end = end.max(recorder.last_done);
        }
        Totals {
            histogram,
            requests,
            errors,
            first_error: first_error.map(|(_, e)| e),
            elapsed: end.unwrap_or(now).saturating_duration_since(measure_from),
        }
    }

    /// More than 1% of the attempts failed: the figures describe failures, not the node's
    /// work.
    pub(super) fn too_many_errors(&self) -> bool {
        self.errors.saturating_mul(100) > self.requests.saturating_add(self.errors)
    }
}

/// The figures of a run, in the JSON's field order.
#[derive(Debug, Serialize)]
pub(super) struct Report {
    pub(super) workload: &'static str,
    pub(super) connections: u32,
    /// `HTTP/1.1`, `HTTP/2` or `RESP`.
    pub(super) protocol: &'static str,
    pub(super) batch: u32,
    /// `--rate`: the paced rate asked for (null: closed loop).
    pub(super) rate: Option<u64>,
    pub(super) requests: u64,
    pub(super) ops: u64,
    pub(super) errors: u64,
    pub(super) elapsed_s: f64,
    pub(super) rps: f64,
    pub(super) ops_per_s: f64,
    pub(super) p50_us: u64,
    pub(super) p99_us: u64,
    pub(super) p999_us: u64,
    pub(super) max_us: u64,
}

impl Report {
    pub(super) fn new(
        workload: &'static str,
        connections: u32,
        protocol: Protocol,
        batch: u32,
        rate: Option<u64>,
        totals: &Totals,
    ) -> Report {
        let elapsed_s = totals.elapsed.as_secs_f64();
        let ops = totals.requests * u64::from(batch);
        let per_s = |n: u64| {
            if elapsed_s > 0.0 {
                n as f64 / elapsed_s
            } else {
                0.0
            }
        };
        let h = &totals.histogram;
        let at = |q: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            }
        };
        Report {
            workload,
            connections,
            protocol: protocol.name(),
            batch,
            rate,
            requests: totals.requests,
            ops,
            errors: totals.errors,
            elapsed_s,
            rps: per_s(totals.requests),
            ops_per_s: per_s(ops),
            p50_us: at(0.5),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: if h.is_empty() { 0 } else { h.max() },
        }
    }

    /// The same figures for a person: one named line each.
    pub(super) fn table(&self) -> String {
        let protocol = self.protocol;
        let pacing = self.rate.map_or(String::new(), |rate| {
            format!(", paced at {} requests/s", thousands(rate))
        });
        let rows = [
            (
                "workload",
                format!(
                    "{} ({protocol}, {} connections, batch {}{pacing})",
                    self.workload, self.connections, self.batch
                ),
            ),
            ("requests", thousands(self.requests)),
            ("ops", thousands(self.ops)),
            ("errors", thousands(self.errors)),
            ("elapsed", format!("{:.2} s", self.elapsed_s)),
            ("requests/s", thousands(self.rps.round() as u64)),
            ("ops/s", thousands(self.ops_per_s.round() as u64)),
            (
                "latency",
                format!(
                    "p50 {} µs   p99 {} µs   p99.9 {} µs   max {} µs",
                    thousands(self.p50_us),
                    thousands(self.p99_us),
                    thousands(self.p999_us),
                    thousands(self.max_us)
                ),
            ),
        ];
        rows.iter()
            .map(|(name, value)| format!("{name:<12} {value}\n"))
            .collect()
    }
}

/// `1234567` as `1,234,567`.
pub(super) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder(latencies_us: impl IntoIterator<Item = u64>, at: Instant) -> Recorder {
        let mut recorder = Recorder::new();
        for us in latencies_us {
            recorder.success(Duration::from_micros(us), at);
        }
        recorder
    }

    #[test]
    fn merged_histograms_give_the_percentiles_of_all_requests() {
        let start = Instant::now();
        // 1..=1000 µs spread over two connections: percentiles of the union, not of either.
        let a = recorder(
            (1..=1000).filter(|us| us % 2 == 0),
            start + Duration::from_secs(2),
        );
        let b = recorder(
            (1..=1000).filter(|us| us % 2 == 1),
            start + Duration::from_secs(4),
        );
        let totals = Totals::merge(vec![a, b], start, start);
        assert_eq!(totals.requests, 1000);
        assert_eq!(totals.elapsed, Duration::from_secs(4));
        let report = Report::new("get", 2, Protocol::Http1, 1, None, &totals);
        assert_eq!(report.p50_us, 500);
        assert_eq!(report.p99_us, 990);
        assert_eq!(report.p999_us, 999);
        assert_eq!(report.max_us, 1000);
        assert!(report.p50_us <= report.p99_us && report.p99_us <= report.p999_us);
        assert_eq!(report.rps, 250.0);
        assert_eq!(report.ops_per_s, 250.0);
    }

    #[test]
    fn ops_count_every_key_of_a_batch() {
        let start = Instant::now();
        let totals = Totals::merge(
            vec![recorder([100; 10], start + Duration::from_millis(500))],
            start,
            start,
        );
        let report = Report::new("multiget", 1, Protocol::Http2, 16, None, &totals);
        assert_eq!((report.requests, report.ops), (10, 160));
        assert_eq!((report.rps, report.ops_per_s), (20.0, 320.0));
        let json = serde_json::to_string(&report).unwrap();
        assert!(
            json.starts_with(r#"{"workload":"multiget","connections":1,"protocol":"HTTP/2","batch":16,"rate":null,"requests":10,"ops":160,"errors":0,"elapsed_s":0.5,"rps":20.0,"ops_per_s":320.0,"p50_us":100,"#),
            "{json}"
        );
        assert!(json.ends_with(r#""p999_us":100,"max_us":100}"#), "{json}");
    }

    #[test]
    fn latencies_are_clamped_to_the_histogram_range() {
        let start = Instant::now();
        let mut r = Recorder::new();
        r.success(Duration::ZERO, start);
        r.success(Duration::from_secs(3600), start);
        let report = Report::new(
            "get",
            1,
            Protocol::Http1,
            1,
            None,
            &Totals::merge(vec![r], start, start),
        );
        assert_eq!(report.p50_us, 1);
        // Within the histogram's 3 significant digits of its highest value.
        assert!(report.max_us >= HIGHEST_US && report.max_us < HIGHEST_US + HIGHEST_US / 1000);
    }

    #[test]
    fn errors_are_counted_apart_and_the_earliest_is_kept() {
        let start = Instant::now();
        let mut a = Recorder::new();
        a.error(
            ConnectError::unavailable("later"),
            start + Duration::from_secs(2),
        );
        let mut b = recorder([10; 99], start + Duration::from_secs(1));
        b.error(
            ConnectError::unavailable("earlier"),
            start + Duration::from_secs(1),
        );
        b.error(
            ConnectError::unavailable("second of b"),
            start + Duration::from_secs(3),
        );
        let totals = Totals::merge(vec![a, b], start, start);
        assert_eq!((totals.requests, totals.errors), (99, 3));
        assert_eq!(totals.first_error.as_ref().unwrap().message, "earlier");
        assert!(totals.too_many_errors());
        assert_eq!(
            Report::new("set", 2, Protocol::Http1, 1, None, &totals).errors,
            3
        );
    }

    #[test]
    fn more_than_one_percent_of_errors_fails_the_run() {
        let totals = |requests, errors| Totals {
            histogram: new_histogram(),
            requests,
            errors,
            first_error: None,
            elapsed: Duration::ZERO,
        };
        assert!(!totals(99, 1).too_many_errors()); // exactly 1%
        assert!(totals(98, 2).too_many_errors());
        assert!(!totals(0, 0).too_many_errors());
        assert!(totals(0, 1).too_many_errors());
        assert!(!totals(10_000, 0).too_many_errors());
    }

    #[test]
    fn an_empty_run_reports_zeros() {
        let start = Instant::now();
        let totals = Totals::merge(vec![Recorder::new()], start, start);
        let report = Report::new("get", 1, Protocol::Http1, 1, None, &totals);
        assert_eq!(
            (report.requests, report.rps, report.p50_us, report.max_us),
            (0, 0.0, 0, 0)
        );
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn the_table_has_every_figure() {
        let start = Instant::now();
        let totals = Totals::merge(
            vec![recorder([1500; 4], start + Duration::from_secs(1))],
            start,
            start,
        );
        let table = Report::new("rest-get", 50, Protocol::Http1, 1, None, &totals).table();
        for needle in [
            "rest-get (HTTP/1.1, 50 connections, batch 1)\n",
            "requests     4\n",
            "requests/s   4\n",
            "p50 1,500 µs",
            "max 1,500 µs",
        ] {
            assert!(table.contains(needle), "{needle:?} in\n{table}");
        }
        let paced = Report::new("set", 50, Protocol::Http1, 1, Some(20_000), &totals);
        assert!(
            paced
                .table()
                .contains("set (HTTP/1.1, 50 connections, batch 1, paced at 20,000 requests/s)\n")
        );
        assert!(
            serde_json::to_string(&paced)
                .unwrap()
                .contains(r#""batch":1,"rate":20000,"requests":4,"#)
        );
    }
}
