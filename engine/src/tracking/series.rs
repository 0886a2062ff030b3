//! Reading one metric's history for a chart: the points in a range, downsampled on the
//! server to about the chart's width with M4 (Jugel et al., PVLDB 7(10), 2014): the range
//! is cut into `buckets` equal spans of x, and each span keeps its first, last, lowest and
//! highest point. A line drawn through those is the line drawn through every point, pixel
//! for pixel, so spikes survive (sampling that drops them is what users of other trackers
//! complain about). A zoomed chart asks again with a narrower range and gets full detail.

use serde::Serialize;
use uuid::Uuid;

use crate::error::{Error, Result};

use super::*;

/// What a chart's x axis shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SeriesAxis {
    /// The step each point was logged at.
    Step,
    /// Wall time, microseconds since the epoch.
    Time,
}

impl SeriesAxis {
    /// Parses `step` or `time`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "step" => Ok(Self::Step),
            "time" => Ok(Self::Time),
            _ => Err(Error::InvalidArgument(format!(
                "invalid x axis \"{s}\": expected step or time"
            ))),
        }
    }
}

/// Most buckets one request may ask for.
pub const MAX_BUCKETS: usize = 20_000;

/// Which points of a series to read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeriesQuery {
    /// The x axis the range and the buckets are on.
    pub axis: SeriesAxis,
    /// Lowest x to include.
    pub from: Option<i64>,
    /// Highest x to include.
    pub to: Option<i64>,
    /// How many buckets (about the chart's width in pixels); each keeps at most four points.
    pub buckets: usize,
}

/// One point of a series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SeriesPoint {
    /// The step.
    pub step: i64,
    /// Wall time, microseconds since the epoch.
    pub ts_us: i64,
    /// The value.
    pub value: f64,
}

/// The answer: the points kept, in x order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    /// Points in the range before downsampling.
    pub total: usize,
    /// Whether points were left out (`total > points.len()`).
    pub downsampled: bool,
    /// The points kept.
    pub points: Vec<SeriesPoint>,
}

impl Tracking {
    /// The points of metric `key` of `run` in `query`'s range, downsampled with M4 when
    /// there are more than four per bucket.
    pub fn metric_series(&self, run: &Uuid, key: &str, query: &SeriesQuery) -> Result<Series> {
        if query.buckets == 0 || query.buckets > MAX_BUCKETS {
            return Err(Error::InvalidArgument(format!(
                "points must be between 1 and {MAX_BUCKETS}, not {}",
                query.buckets
            )));
        }
        if query.axis == SeriesAxis::Step
            && let Some(series) = self.series_from_rollups(run, key, query)?
        {
            return Ok(series);
        }
        let points = self.metric_points(run, key, query)?;
        Ok(downsample(points, query.axis, query.buckets))
    }

    /// M4 on the step axis from the block summaries ([`super::rollup`]), reading a few
    /// thousand summaries instead of every point; `None` when the points are few enough
    /// to read (at most four per bucket) or the buckets narrower than two blocks, where
    /// reading the points is as quick and exact.
    ///
    /// Buckets are made of whole blocks: a block goes to the bucket its first point falls
    /// in, so a bucket's edges move by less than a block, and every bucket keeps the
    /// first, last, lowest and highest of its points, as M4 does.
    fn series_from_rollups(
        &self,
        run: &Uuid,
        key: &str,
        query: &SeriesQuery,
    ) -> Result<Option<Series>> {
        use super::rollup::{BLOCK, Summary, block_of};
        let mut blocks =
            self.rollups(run, key, query.from.map(block_of), query.to.map(block_of))?;
        // Blocks the range cuts through are summarized again from their points in range.
        let edge = |b: i64| {
            let (start, end) = (b * BLOCK, b * BLOCK + BLOCK - 1);
            let lo = query.from.map_or(start, |f| f.max(start));
            let hi = query.to.map_or(end, |t| t.min(end));
            (lo != start || hi != end).then_some((lo, hi))
        };
        let mut exact = Vec::with_capacity(blocks.len());
        let last = blocks.len().saturating_sub(1);
        for (i, (b, summary)) in blocks.drain(..).enumerate() {
            let cut = if i == 0 || i == last { edge(b) } else { None };
            let Some((lo, hi)) = cut else {
                exact.push(summary);
                continue;
            };
            let points = self.metric_points(
                run,
                key,
                &SeriesQuery {
                    axis: SeriesAxis::Step,
                    from: Some(lo),
                    to: Some(hi),
                    buckets: 1,
                },
            )?;
            let mut it = points.into_iter();
            if let Some(first) = it.next() {
                let mut s = Summary::of(first);
                for p in it {
                    s.absorb(&Summary::of(p));
                }
                exact.push(s);
            }
        }
        let total: u64 = exact.iter().map(|s| s.count).sum();
        let total = usize::try_from(total).unwrap_or(usize::MAX);
        let (Some(first), Some(last)) = (exact.first(), exact.last()) else {
            return Ok(None);
        };
        if total <= query.buckets.saturating_mul(4) {
            return Ok(None);
        }
        let x0 = i128::from(first.first.step);
        let span = i128::from(last.last.step) - x0 + 1;
        let n = i128::try_from(query.buckets).unwrap_or(i128::MAX);
        if span < n * i128::from(2 * BLOCK) {
            return Ok(None);
        }
        let mut kept = Vec::with_capacity(query.buckets * 4);
        let mut emit = |s: &Summary| {
            let mut picks = [s.first, s.min, s.max, s.last];
            picks.sort_by_key(|p| (p.step, p.ts_us));
            let mut previous: Option<SeriesPoint> = None;
            for p in picks {
                if previous.is_none_or(|q| {
                    (q.step, q.ts_us, q.value.to_bits()) != (p.step, p.ts_us, p.value.to_bits())
                }) {
                    kept.push(p);
                    previous = Some(p);
                }
            }
        };
        let mut bucket: Option<(i128, Summary)> = None;
        for s in &exact {
            let b = (i128::from(s.first.step) - x0) * n / span;
            match &mut bucket {
                Some((current, acc)) if *current == b => acc.absorb(s),
                _ => {
                    if let Some((_, acc)) = bucket.take() {
                        emit(&acc);
                    }
                    bucket = Some((b, *s));
                }
            }
        }
        if let Some((_, acc)) = bucket {
            emit(&acc);
        }
        Ok(Some(Series {
            total,
            downsampled: kept.len() < total,
            points: kept,
        }))
    }

    /// Every point of metric `key` of `run` in `query`'s range, in step order.
    pub fn metric_points(
        &self,
        run: &Uuid,
        key: &str,
        query: &SeriesQuery,
    ) -> Result<Vec<SeriesPoint>> {
        let prefix = keys::metric_prefix(run, key);
        let mut start = prefix.clone();
        if let (SeriesAxis::Step, Some(from)) = (query.axis, query.from) {
            start.extend_from_slice(&keys::enc_i64(from));
        }
        let cf = self.cf(CF_METRICS)?;
        let mut iter = self.db().raw_iterator_cf(cf);
        iter.seek(&start);
        let mut out = Vec::new();
        while iter.valid() {
            let (Some(k), Some(v)) = (iter.key(), iter.value()) else {
                break;
            };
            if !k.starts_with(&prefix) {
                break;
            }
            let decoded = keys::decode_metric_key(k)
                .ok_or_else(|| Error::Internal(format!("malformed metric key in run {run}")))?;
            let bits: [u8; 8] = v
                .try_into()
                .map_err(|_| Error::Internal(format!("malformed metric value in run {run}")))?;
            let x = match query.axis {
                SeriesAxis::Step => decoded.step,
                SeriesAxis::Time => decoded.ts_us,
            };
            if query.axis == SeriesAxis::Step && query.to.is_some_and(|to| x > to) {
                break;
            }
            if query.from.is_none_or(|from| x >= from) && query.to.is_none_or(|to| x <= to) {
                out.push(SeriesPoint {
                    step: decoded.step,
                    ts_us: decoded.ts_us,
                    value: f64::from_bits(u64::from_le_bytes(bits)),
                });
            }
            iter.next();
        }
        iter.status()?;
        Ok(out)
    }

    /// Up to `limit` points of metric `key` of `run` in step order, after the point
    /// `after` names (a token from an earlier page); with the token of the next page when
    /// there are more.
    pub fn metric_history_page(
        &self,
        run: &Uuid,
        key: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<SeriesPoint>, Option<Vec<u8>>)> {
        let prefix = keys::metric_prefix(run, key);
        let mut start = prefix.clone();
        if let Some(after) = after {
            if after.len() != 24 {
                return Err(Error::InvalidArgument("invalid page token".into()));
            }
            start.extend_from_slice(after);
        }
        let cf = self.cf(CF_METRICS)?;
        let mut iter = self.db().raw_iterator_cf(cf);
        iter.seek(&start);
        if after.is_some() && iter.key() == Some(start.as_slice()) {
            iter.next();
        }
        let mut out = Vec::with_capacity(limit.min(1 << 16));
        let mut last: Option<Vec<u8>> = None;
        while iter.valid() {
            let (Some(k), Some(v)) = (iter.key(), iter.value()) else {
                break;
            };
            if !k.starts_with(&prefix) {
                break;
            }
            if out.len() == limit {
                iter.status()?;
                return Ok((out, last));
            }
            let decoded = keys::decode_metric_key(k)
                .ok_or_else(|| Error::Internal(format!("malformed metric key in run {run}")))?;
            let bits: [u8; 8] = v
                .try_into()
                .map_err(|_| Error::Internal(format!("malformed metric value in run {run}")))?;
            out.push(SeriesPoint {
                step: decoded.step,
                ts_us: decoded.ts_us,
                value: f64::from_bits(u64::from_le_bytes(bits)),
            });
            last = Some(k[k.len() - 24..].to_vec());
            iter.next();
        }
        iter.status()?;
        Ok((out, None))
    }

    /// The latest point of every metric of `run`, by key.
    pub fn latest_metrics(&self, run: &Uuid) -> Result<Vec<(String, SeriesPoint)>> {
        let mut out = Vec::new();
        for item in self
            .db()
            .prefix_iterator_cf(self.cf(CF_LATEST)?, run.as_bytes())
        {
            let (k, v) = item?;
            if !k.starts_with(run.as_bytes()) {
                break;
            }
            if let (Some((_, key)), Some(latest)) =
                (keys::decode_run_key(&k), keys::decode_latest(&v))
            {
                let (step, ts_us, value) = latest;
                out.push((key.to_string(), SeriesPoint { step, ts_us, value }));
            }
        }
        Ok(out)
    }
}

/// M4 over `points` (in step order): sorted by `axis`, cut into `buckets` equal spans of x,
/// each keeping its first, lowest, highest and last point, in x order.
pub fn downsample(mut points: Vec<SeriesPoint>, axis: SeriesAxis, buckets: usize) -> Series {
    let total = points.len();
    let x = |p: &SeriesPoint| match axis {
        SeriesAxis::Step => p.step,
        SeriesAxis::Time => p.ts_us,
    };
    if axis == SeriesAxis::Time {
        points.sort_by_key(|p| p.ts_us);
    }
    if total <= buckets.saturating_mul(4) {
        return Series {
            total,
            downsampled: false,
            points,
        };
    }
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return Series {
            total,
            downsampled: false,
            points,
        };
    };
    let x0 = i128::from(x(first));
    let span = i128::from(x(last)) - x0 + 1;
    let n = i128::try_from(buckets).unwrap_or(i128::MAX);
    let bucket_of = |p: &SeriesPoint| (i128::from(x(p)) - x0) * n / span;
    let mut kept = Vec::with_capacity(buckets * 4);
    let mut i = 0;
    while i < points.len() {
        let b = bucket_of(&points[i]);
        let (start, mut lo, mut hi) = (i, i, i);
        let mut j = i + 1;
        while j < points.len() && bucket_of(&points[j]) == b {
            if points[j].value.total_cmp(&points[lo].value).is_lt() {
                lo = j;
            }
            if points[j].value.total_cmp(&points[hi].value).is_gt() {
                hi = j;
            }
            j += 1;
        }
        let mut picks = [start, lo, hi, j - 1];
        picks.sort_unstable();
        let mut previous = None;
        for p in picks {
            if previous != Some(p) {
                kept.push(points[p]);
                previous = Some(p);
            }
        }
        i = j;
    }
    Series {
        total,
        downsampled: kept.len() < total,
        points: kept,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(values: &[f64]) -> Vec<SeriesPoint> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| SeriesPoint {
                step: i as i64,
                ts_us: 1_000 * i as i64,
                value: *v,
            })
            .collect()
    }

    #[test]
    fn small_series_come_back_whole() {
        let s = downsample(series(&[1.0, 2.0, 3.0]), SeriesAxis::Step, 1);
        assert_eq!(s.total, 3);
        assert!(!s.downsampled);
        assert_eq!(s.points.len(), 3);
    }

    #[test]
    fn m4_keeps_first_last_min_and_max_of_each_bucket_and_the_spikes() {
        // 100,000 points of a gentle ramp with one spike up and one down.
        let mut values: Vec<f64> = (0..100_000).map(|i| f64::from(i) / 1e5).collect();
        values[31_337] = 1e6;
        values[77_777] = -1e6;
        let s = downsample(series(&values), SeriesAxis::Step, 100);
        assert_eq!(s.total, 100_000);
        assert!(s.downsampled);
        assert!(s.points.len() <= 400, "{}", s.points.len());
        assert!(s.points.iter().any(|p| p.step == 31_337 && p.value == 1e6));
        assert!(s.points.iter().any(|p| p.step == 77_777 && p.value == -1e6));
        assert_eq!(s.points.first().map(|p| p.step), Some(0));
        assert_eq!(s.points.last().map(|p| p.step), Some(99_999));
        assert!(
            s.points.windows(2).all(|w| w[0].step < w[1].step),
            "x order"
        );
    }

    #[test]
    fn time_axis_orders_by_wall_time() {
        let mut points = series(&[5.0, 6.0, 7.0]);
        points[0].ts_us = 9_000;
        let s = downsample(points, SeriesAxis::Time, 10);
        let ts: Vec<i64> = s.points.iter().map(|p| p.ts_us).collect();
        assert_eq!(ts, vec![1_000, 2_000, 9_000]);
    }
}
