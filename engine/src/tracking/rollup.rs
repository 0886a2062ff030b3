//! Summaries of metric histories by block of [`BLOCK`] steps, kept as points are written,
//! so a chart of a long series reads a few thousand summaries instead of every point.
//!
//! Each block of one metric of one run (`run · key · 0x00 · block`, block = step ÷ 64,
//! rounded down) holds the count and the first, last, lowest and highest point of the
//! points logged in it. A write batch merges one summary per block it touches (RocksDB's
//! associative merge operator folds them), so logging costs one more merge per block per
//! batch. M4 over summaries is M4 over the points: a chart bucket made of whole blocks
//! has as first, last, lowest and highest point the first, last, lowest and highest of its
//! blocks' (see [`super::series`]).
//!
//! Databases written before summaries existed get them built once, when opened.

use std::collections::HashMap;

use rocksdb::WriteBatch;
use uuid::Uuid;

use crate::error::Result;

use super::series::SeriesPoint;
use super::*;

/// Steps per block, as a shift: 64.
pub const BLOCK_SHIFT: u32 = 6;
/// Steps per block.
pub const BLOCK: i64 = 1 << BLOCK_SHIFT;

/// Marks a database whose summaries are complete (shorter than any summary key).
const BACKFILLED: &[u8] = b"~backfilled";

/// The block of `step`.
pub fn block_of(step: i64) -> i64 {
    step >> BLOCK_SHIFT
}

/// `run · key · 0x00 · block`: the key of one block's summary.
pub fn rollup_key(run: &Uuid, key: &str, block: i64) -> Vec<u8> {
    let mut k = keys::metric_prefix(run, key);
    k.extend_from_slice(&keys::enc_i64(block));
    k
}

/// The count and the first, last, lowest and highest point of some points.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// How many points.
    pub count: u64,
    /// The first by (step, time).
    pub first: SeriesPoint,
    /// The last by (step, time).
    pub last: SeriesPoint,
    /// The lowest value (the earliest of equal ones).
    pub min: SeriesPoint,
    /// The highest value (the earliest of equal ones).
    pub max: SeriesPoint,
}

const ENCODED_LEN: usize = 8 + 4 * 24;

fn at(p: &SeriesPoint) -> (i64, i64) {
    (p.step, p.ts_us)
}

impl Summary {
    /// The summary of one point.
    pub fn of(p: SeriesPoint) -> Self {
        Self {
            count: 1,
            first: p,
            last: p,
            min: p,
            max: p,
        }
    }

    /// Folds `other` (points logged after these, or not) into this summary.
    pub fn absorb(&mut self, other: &Summary) {
        self.count += other.count;
        if at(&other.first) < at(&self.first) {
            self.first = other.first;
        }
        if at(&other.last) >= at(&self.last) {
            self.last = other.last;
        }
        let lower = other.min.value.total_cmp(&self.min.value);
        if lower.is_lt() || (lower.is_eq() && at(&other.min) < at(&self.min)) {
            self.min = other.min;
        }
        let higher = other.max.value.total_cmp(&self.max.value);
        if higher.is_gt() || (higher.is_eq() && at(&other.max) < at(&self.max)) {
            self.max = other.max;
        }
    }

    /// The stored form.
    pub fn encode(&self) -> [u8; ENCODED_LEN] {
        let mut out = [0u8; ENCODED_LEN];
        out[..8].copy_from_slice(&self.count.to_le_bytes());
        for (i, p) in [self.first, self.last, self.min, self.max]
            .iter()
            .enumerate()
        {
            let o = 8 + i * 24;
            out[o..o + 8].copy_from_slice(&p.step.to_le_bytes());
            out[o + 8..o + 16].copy_from_slice(&p.ts_us.to_le_bytes());
            out[o + 16..o + 24].copy_from_slice(&p.value.to_bits().to_le_bytes());
        }
        out
    }

    /// Decodes [`Summary::encode`]; `None` if malformed.
    pub fn decode(v: &[u8]) -> Option<Self> {
        if v.len() != ENCODED_LEN {
            return None;
        }
        let word = |o: usize| -> Option<[u8; 8]> { v.get(o..o + 8)?.try_into().ok() };
        let point = |i: usize| -> Option<SeriesPoint> {
            let o = 8 + i * 24;
            Some(SeriesPoint {
                step: i64::from_le_bytes(word(o)?),
                ts_us: i64::from_le_bytes(word(o + 8)?),
                value: f64::from_bits(u64::from_le_bytes(word(o + 16)?)),
            })
        };
        Some(Self {
            count: u64::from_le_bytes(word(0)?),
            first: point(0)?,
            last: point(1)?,
            min: point(2)?,
            max: point(3)?,
        })
    }
}

/// RocksDB's merge operator for summaries: folds every operand into the existing value.
pub fn merge_rollups(
    _key: &[u8],
    existing: Option<&[u8]>,
    operands: &rocksdb::MergeOperands,
) -> Option<Vec<u8>> {
    let mut acc = existing.and_then(Summary::decode);
    for op in operands {
        let Some(s) = Summary::decode(op) else {
            continue;
        };
        match &mut acc {
            Some(a) => a.absorb(&s),
            None => acc = Some(s),
        }
    }
    acc.map(|s| s.encode().to_vec())
}

/// Summaries of the blocks a write batch touches, folded per block.
#[derive(Debug, Default)]
pub(crate) struct Pending<K> {
    blocks: HashMap<(Uuid, K, i64), Summary>,
}

impl<K: std::hash::Hash + Eq + AsRef<str>> Pending<K> {
    /// Adds one point about to be written.
    pub(crate) fn add(&mut self, run: Uuid, key: K, p: SeriesPoint) {
        let s = Summary::of(p);
        self.blocks
            .entry((run, key, block_of(p.step)))
            .and_modify(|existing| existing.absorb(&s))
            .or_insert(s);
    }

    /// Merges the summaries into `batch`.
    pub(crate) fn stage(self, tracking: &Tracking, batch: &mut WriteBatch) -> Result<()> {
        let cf = tracking.cf(CF_ROLLUPS)?;
        for ((run, key, block), s) in self.blocks {
            batch.merge_cf(cf, rollup_key(&run, key.as_ref(), block), s.encode());
        }
        Ok(())
    }
}

impl Tracking {
    /// The summaries of metric `key` of `run` for blocks `from..=to` (every block when
    /// `None`), in block order.
    pub(crate) fn rollups(
        &self,
        run: &Uuid,
        key: &str,
        from: Option<i64>,
        to: Option<i64>,
    ) -> Result<Vec<(i64, Summary)>> {
        let prefix = keys::metric_prefix(run, key);
        let start = match from {
            Some(b) => rollup_key(run, key, b),
            None => prefix.clone(),
        };
        let mut it = self.db().raw_iterator_cf(self.cf(CF_ROLLUPS)?);
        it.seek(&start);
        let mut out = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(&prefix) || k.len() != prefix.len() + 8 {
                break;
            }
            let block = keys::dec_i64(&k[prefix.len()..])
                .ok_or_else(|| crate::error::Error::corrupt("metric summary key", "not 8 bytes"))?;
            if to.is_some_and(|t| block > t) {
                break;
            }
            let s = Summary::decode(v)
                .ok_or_else(|| crate::error::Error::corrupt("metric summary", "bad length"))?;
            out.push((block, s));
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// Builds the summaries of every point already stored, once: for databases written
    /// before summaries existed. Later opens find the mark and return at once.
    pub(crate) fn backfill_rollups(&self) -> Result<()> {
        let cf = self.cf(CF_ROLLUPS)?;
        if self.db().get_cf(cf, BACKFILLED)?.is_some() {
            return Ok(());
        }
        let mut pending: Pending<String> = Pending::default();
        let mut staged = 0usize;
        let mut written = 0u64;
        let mut it = self.db().raw_iterator_cf(self.cf(CF_METRICS)?);
        it.seek_to_first();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if let (Some(m), Ok(bits)) = (keys::decode_metric_key(k), <[u8; 8]>::try_from(v)) {
                let p = SeriesPoint {
                    step: m.step,
                    ts_us: m.ts_us,
                    value: f64::from_bits(u64::from_le_bytes(bits)),
                };
                pending.add(m.run, m.key.to_string(), p);
                staged += 1;
                written += 1;
            }
            if staged >= 100_000 {
                let mut batch = WriteBatch::default();
                std::mem::take(&mut pending).stage(self, &mut batch)?;
                self.commit(batch)?;
                staged = 0;
            }
            it.next();
        }
        it.status()?;
        let mut batch = WriteBatch::default();
        pending.stage(self, &mut batch)?;
        batch.put_cf(cf, BACKFILLED, []);
        self.commit(batch)?;
        if written > 0 {
            tracing::info!(
                points = written,
                "built metric summaries for existing points"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracking::series::{SeriesAxis, SeriesQuery, downsample};

    fn step_query(from: Option<i64>, to: Option<i64>, buckets: usize) -> SeriesQuery {
        SeriesQuery {
            axis: SeriesAxis::Step,
            from,
            to,
            buckets,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn long_series_come_from_summaries_with_spikes_ranges_and_backfill() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = crate::Database::open_dir(dir.path()).await.expect("open");
        let t = db.tracking().clone();
        tokio::task::spawn_blocking(move || {
            let run = t.start_run("e", NewRun::default()).expect("run").run_id;
            // 200,000 points of a ramp with two spikes, logged in batches of 1,000.
            let value = |i: i64| match i {
                31_337 => 1e6,
                150_001 => -1e6,
                _ => i as f64 / 1e5,
            };
            for chunk in 0..200 {
                let points: Vec<MetricPoint> = (chunk * 1000..(chunk + 1) * 1000)
                    .map(|i| MetricPoint {
                        run,
                        key: "loss".into(),
                        step: Some(i),
                        ts_us: Some(1_000_000 + i),
                        value: value(i),
                    })
                    .collect();
                t.log_metrics(&points).expect("log");
            }
            let check = |t: &Tracking| {
                let s = t
                    .metric_series(&run, "loss", &step_query(None, None, 100))
                    .expect("series");
                assert_eq!(s.total, 200_000);
                assert!(s.downsampled && s.points.len() <= 400, "{}", s.points.len());
                assert!(s.points.iter().any(|p| p.step == 31_337 && p.value == 1e6));
                assert!(
                    s.points
                        .iter()
                        .any(|p| p.step == 150_001 && p.value == -1e6)
                );
                assert_eq!(s.points.first().map(|p| p.step), Some(0));
                assert_eq!(s.points.last().map(|p| p.step), Some(199_999));
                assert!(s.points.windows(2).all(|w| w[0].step < w[1].step));
                // A range that cuts blocks: the count is exact, the spike inside kept.
                let z = t
                    .metric_series(&run, "loss", &step_query(Some(12_345), Some(67_890), 50))
                    .expect("zoom");
                assert_eq!(z.total, 67_890 - 12_345 + 1);
                assert_eq!(z.points.first().map(|p| p.step), Some(12_345));
                assert_eq!(z.points.last().map(|p| p.step), Some(67_890));
                assert!(z.points.iter().any(|p| p.value == 1e6));
                // The same buckets' extremes as M4 over every point.
                let raw = t
                    .metric_points(&run, "loss", &step_query(Some(12_345), Some(67_890), 50))
                    .expect("points");
                let m4 = downsample(raw, SeriesAxis::Step, 50);
                let top = |s: &super::super::series::Series| {
                    s.points.iter().map(|p| p.value).fold(f64::MIN, f64::max)
                };
                assert_eq!(top(&z), top(&m4));
                // Few points in range: all of them.
                let few = t
                    .metric_series(&run, "loss", &step_query(Some(100), Some(149), 50))
                    .expect("few");
                assert_eq!(few.points.len(), 50);
                assert!(!few.downsampled);
            };
            check(&t);
            // A database from before summaries: they are rebuilt once.
            let cf = t.cf(CF_ROLLUPS).expect("cf");
            let ends = (vec![0u8], vec![0xffu8; 64]);
            t.db()
                .delete_range_cf(cf, &ends.0, &ends.1)
                .expect("drop summaries");
            assert!(
                t.rollups(&run, "loss", None, None)
                    .expect("read")
                    .is_empty()
            );
            t.backfill_rollups().expect("backfill");
            check(&t);
        })
        .await
        .expect("test");
    }

    fn p(step: i64, value: f64) -> SeriesPoint {
        SeriesPoint {
            step,
            ts_us: 100 + step,
            value,
        }
    }

    #[test]
    fn summaries_fold_in_any_order_and_round_trip() {
        let points = [p(5, 1.0), p(1, 3.0), p(9, -2.0), p(3, 3.0), p(7, -2.0)];
        let mut forward = Summary::of(points[0]);
        for q in &points[1..] {
            forward.absorb(&Summary::of(*q));
        }
        let mut backward = Summary::of(points[4]);
        for q in points[..4].iter().rev() {
            backward.absorb(&Summary::of(*q));
        }
        for s in [forward, backward] {
            assert_eq!(s.count, 5);
            assert_eq!(s.first.step, 1);
            assert_eq!(s.last.step, 9);
            assert_eq!(
                (s.min.step, s.min.value),
                (7, -2.0),
                "earliest of equal lows"
            );
            assert_eq!(
                (s.max.step, s.max.value),
                (1, 3.0),
                "earliest of equal highs"
            );
            assert_eq!(Summary::decode(&s.encode()), Some(s));
        }
        assert_eq!(Summary::decode(&[0u8; 7]), None);
        assert_eq!(block_of(63), 0);
        assert_eq!(block_of(64), 1);
        assert_eq!(block_of(-1), -1);
    }
}
