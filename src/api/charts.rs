//! The numbers behind the UI's charts, computed from the newest calls the
//! store samples (`ChartSample`): per-model statistics, latency and TTFT
//! histograms, and calls, errors and tokens over time.
//!
//! This is the UI's own read model: only `/ui/api/stats` answers it. The
//! per-model statistics are the same [`CallStats`] (and percentiles) that
//! `tracegate stats` prints, counted over the sample; the histograms use
//! fixed 1-2-5 bin edges so that charts of different runs compare, and the
//! timeline picks a bucket width a reader takes in at a glance.

use crate::store::summary::{CallStats, ChartPoint, ChartSample, Tally};
use serde::Serialize;
use std::collections::BTreeMap;

/// The numbers behind the charts, per model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// Calls counted.
    pub calls: usize,
    /// More calls matched than the sample holds; only the newest count.
    pub sampled: bool,
    /// Every model, most calls first (the key of every per-model map).
    pub models: Vec<String>,
    /// Counts and percentiles per model, in `models` order.
    pub per_model: Vec<CallStats>,
    /// The latency distribution.
    pub latency_ms: Histogram,
    /// The time-to-first-token distribution of streamed calls.
    pub ttft_ms: Histogram,
    /// Calls, errors and tokens over time.
    pub over_time: Timeline,
}

/// A histogram over 1-2-5 steps, trimmed to the bins that hold values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Histogram {
    /// Bin edges in milliseconds: bin `i` is `[edges[i], edges[i+1])`; the
    /// last bin also holds everything above its upper edge. Empty when no
    /// call had a value.
    pub edges: Vec<f64>,
    /// Per model, the count in each bin.
    pub counts: BTreeMap<String, Vec<u64>>,
}

/// Per-model series over equal time buckets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timeline {
    /// Start of the first bucket, epoch seconds.
    pub start: f64,
    /// Width of each bucket, seconds.
    pub bucket_seconds: f64,
    /// Per model, the series.
    pub series: BTreeMap<String, Series>,
}

/// Counts per time bucket.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Series {
    /// Calls that started in the bucket.
    pub calls: Vec<u64>,
    /// Of those, the ones that did not end `ok`.
    pub errors: Vec<u64>,
    /// Their input tokens.
    pub input_tokens: Vec<u64>,
    /// Their output tokens.
    pub output_tokens: Vec<u64>,
}

/// The chart data of a sample, with about `buckets` time buckets.
pub fn summarise(sample: &ChartSample, buckets: usize) -> Stats {
    let mut by_model: BTreeMap<&str, Vec<&ChartPoint>> = BTreeMap::new();
    for p in &sample.points {
        by_model.entry(&p.model).or_default().push(p);
    }
    let mut models: Vec<&str> = by_model.keys().copied().collect();
    models.sort_by_key(|m| std::cmp::Reverse(by_model[m].len()));
    // Every model has a call, so every tally has statistics.
    let per_model = models
        .iter()
        .filter_map(|m| {
            let mut tally = Tally::default();
            for p in &by_model[m] {
                tally.add(p.counted);
            }
            tally.stats(Some(m.to_string()), None)
        })
        .collect();
    Stats {
        calls: sample.points.len(),
        sampled: sample.sampled,
        models: models.iter().map(|m| m.to_string()).collect(),
        per_model,
        latency_ms: histogram(&by_model, |p| Some(p.counted.latency_ms)),
        ttft_ms: histogram(&by_model, |p| p.counted.ttft_ms),
        over_time: timeline(&by_model, buckets.max(1)),
    }
}

/// Bin edges in milliseconds: 0, then 1-2-5 steps from 0.1 ms to 20 minutes.
const EDGES_MS: [f64; 21] = [
    0.0, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1e3, 2e3, 5e3, 1e4,
    2e4, 5e4, 1e5, 2e5,
];

/// A per-model histogram of `value` over [`EDGES_MS`], trimmed to the bins
/// from the first to the last that hold a value.
fn histogram(
    by_model: &BTreeMap<&str, Vec<&ChartPoint>>,
    value: impl Fn(&ChartPoint) -> Option<f64>,
) -> Histogram {
    let bins = EDGES_MS.len() - 1;
    let bin_of = |v: f64| {
        EDGES_MS[1..]
            .iter()
            .position(|&e| v < e)
            .unwrap_or(bins - 1)
    };
    let mut counts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (model, calls) in by_model {
        let mut row = vec![0u64; bins];
        let mut any = false;
        for v in calls.iter().filter_map(|p| value(p)) {
            row[bin_of(v)] += 1;
            any = true;
        }
        if any {
            counts.insert(model.to_string(), row);
        }
    }
    let used = |i: &usize| counts.values().any(|row| row[*i] > 0);
    let (Some(first), Some(last)) = ((0..bins).find(used), (0..bins).rev().find(used)) else {
        return Histogram {
            edges: Vec::new(),
            counts,
        };
    };
    for row in counts.values_mut() {
        *row = row[first..=last].to_vec();
    }
    Histogram {
        edges: EDGES_MS[first..=last + 1].to_vec(),
        counts,
    }
}

/// Bucket widths a reader can take in at a glance, in seconds.
const NICE_SECONDS: [f64; 26] = [
    0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    900.0, 1800.0, 3600.0, 7200.0, 10800.0, 21600.0, 43200.0, 86400.0, 172800.0, 604800.0,
];

/// Per-model series over at most about `buckets` buckets of a nice width.
fn timeline(by_model: &BTreeMap<&str, Vec<&ChartPoint>>, buckets: usize) -> Timeline {
    let times = || by_model.values().flatten().filter_map(|p| p.started);
    let (Some(min), Some(max)) = (
        times().min_by(f64::total_cmp),
        times().max_by(f64::total_cmp),
    ) else {
        return Timeline {
            start: 0.0,
            bucket_seconds: 1.0,
            series: BTreeMap::new(),
        };
    };
    let wanted = (max - min) / buckets as f64;
    let width = NICE_SECONDS
        .iter()
        .copied()
        .find(|&w| w >= wanted)
        .unwrap_or_else(|| wanted.ceil());
    let start = (min / width).floor() * width;
    let n = (((max - start) / width).floor() as usize + 1).min(buckets + 1);
    let series = by_model
        .iter()
        .map(|(model, calls)| (model.to_string(), series(calls, start, width, n)))
        .collect();
    Timeline {
        start,
        bucket_seconds: width,
        series,
    }
}

/// One model's `n` buckets of `width` seconds from `start`.
fn series(calls: &[&ChartPoint], start: f64, width: f64, n: usize) -> Series {
    let mut s = Series {
        calls: vec![0; n],
        errors: vec![0; n],
        input_tokens: vec![0; n],
        output_tokens: vec![0; n],
    };
    for p in calls {
        let Some(t) = p.started else { continue };
        let i = (((t - start) / width).floor().max(0.0) as usize).min(n - 1);
        s.calls[i] += 1;
        s.errors[i] += u64::from(p.counted.error);
        s.input_tokens[i] += p.counted.input_tokens;
        s.output_tokens[i] += p.counted.output_tokens;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::summary::Counted;

    fn point(model: &str, started: f64, latency_ms: f64, ttft_ms: Option<f64>) -> ChartPoint {
        ChartPoint {
            model: model.into(),
            started: Some(started),
            counted: Counted {
                latency_ms,
                ttft_ms,
                error: false,
                input_tokens: 10,
                output_tokens: 5,
                cost_usd: None,
            },
        }
    }

    fn sample(points: Vec<ChartPoint>) -> ChartSample {
        ChartSample {
            points,
            sampled: false,
        }
    }

    #[test]
    fn per_model_statistics_use_the_nearest_rank() {
        let points = (1..=100)
            .map(|i| point("a", 0.0, f64::from(i), None))
            .collect();
        let stats = summarise(&sample(points), 10);
        let latency = stats.per_model[0].latency_ms;
        assert_eq!((latency.p50, latency.p95, latency.p99), (50.0, 95.0, 99.0));
        assert_eq!(stats.per_model[0].ttft_ms, None);
    }

    #[test]
    fn histogram_is_trimmed_to_the_bins_that_hold_values() {
        let points = vec![point("a", 0.0, 3.0, None), point("b", 0.0, 30.0, Some(1.5))];
        let stats = summarise(&sample(points), 10);
        assert_eq!(stats.latency_ms.edges, vec![2.0, 5.0, 10.0, 20.0, 50.0]);
        assert_eq!(stats.latency_ms.counts["a"], vec![1, 0, 0, 0]);
        assert_eq!(stats.latency_ms.counts["b"], vec![0, 0, 0, 1]);
        // Only b streamed: a has no TTFT row at all.
        assert_eq!(stats.ttft_ms.edges, vec![1.0, 2.0]);
        assert!(!stats.ttft_ms.counts.contains_key("a"));
    }

    #[test]
    fn values_beyond_the_last_edge_fall_in_the_last_bin() {
        let stats = summarise(&sample(vec![point("a", 0.0, 9e6, None)]), 10);
        assert_eq!(stats.latency_ms.edges, vec![1e5, 2e5]);
        assert_eq!(stats.latency_ms.counts["a"], vec![1]);
    }

    #[test]
    fn timeline_buckets_have_a_nice_width_and_cover_every_call() {
        let points = vec![
            point("a", 1000.0, 1.0, None),
            point("a", 1059.0, 1.0, None),
            point("b", 1030.5, 1.0, None),
        ];
        let t = summarise(&sample(points), 6).over_time;
        assert_eq!(t.bucket_seconds, 10.0);
        assert_eq!(t.start, 1000.0);
        assert_eq!(t.series["a"].calls, vec![1, 0, 0, 0, 0, 1]);
        assert_eq!(t.series["b"].calls, vec![0, 0, 0, 1, 0, 0]);
        assert_eq!(t.series["a"].input_tokens, vec![10, 0, 0, 0, 0, 10]);
    }

    #[test]
    fn models_are_listed_most_calls_first() {
        let points = vec![
            point("a", 0.0, 1.0, None),
            point("b", 0.0, 1.0, None),
            point("b", 0.0, 1.0, None),
        ];
        let stats = summarise(&sample(points), 10);
        assert_eq!(stats.models, vec!["b", "a"]);
        assert_eq!(stats.per_model[0].calls, 2);
        assert_eq!(stats.per_model[0].input_tokens, 20);
    }
}
