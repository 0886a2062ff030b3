//! Key layouts of the tracking column families.
//!
//! Every key starts with what the common reads select on, so each read is a range scan:
//!
//! | column family        | key                                                  | value |
//! |----------------------|------------------------------------------------------|-------|
//! | `experiments`        | name                                                 | JSON [`super::Experiment`] |
//! | `runs`               | run (16-byte UUID)                                   | JSON [`super::Run`] |
//! | `runs_by_experiment` | experiment id (8, big-endian) · run                  | empty |
//! | `params`, `tags`     | run · key                                            | value bytes |
//! | `metrics`            | run · key · `0x00` · step · ts · sequence            | value (f64, 8 bytes) |
//! | `latest_metrics`     | run · key                                            | step · ts · value (merge operator keeps the newest) |
//! | `metric_rollups`     | run · key · `0x00` · block (step ÷ 64)               | count, first, last, lowest, highest point (see [`super::rollup`]) |
//! | `run_inputs`         | run · table name · `0x00` · version                  | empty |
//! | `artifacts`          | run · path                                           | JSON [`super::Artifact`] |
//! | `mlflow`             | `<kind>/<id…>` (text)                                | JSON document (MLflow-only records) |
//!
//! Signed integers (step, ts) are stored with the sign bit flipped, big-endian, so byte order
//! is numeric order. Keys and names never contain `0x00` (PostgreSQL text cannot either), so
//! `run · key · 0x00` is the exact prefix of one metric's history.

use uuid::Uuid;

/// Length of an encoded run id.
pub const RUN_LEN: usize = 16;

/// Order-preserving encoding of a signed integer.
pub fn enc_i64(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

/// Inverse of [`enc_i64`]; `None` if `bytes` is not 8 long.
pub fn dec_i64(bytes: &[u8]) -> Option<i64> {
    let arr: [u8; 8] = bytes.try_into().ok()?;
    Some((u64::from_be_bytes(arr) ^ (1 << 63)) as i64)
}

/// `run · key`: the key of a param, tag or latest metric.
pub fn run_key(run: &Uuid, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(RUN_LEN + key.len());
    k.extend_from_slice(run.as_bytes());
    k.extend_from_slice(key.as_bytes());
    k
}

/// `run · key · 0x00`: the prefix of one metric's history.
pub fn metric_prefix(run: &Uuid, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(RUN_LEN + key.len() + 1 + 24);
    k.extend_from_slice(run.as_bytes());
    k.extend_from_slice(key.as_bytes());
    k.push(0);
    k
}

/// The key of one metric point.
pub fn metric_key(run: &Uuid, key: &str, step: i64, ts_us: i64, seq: u64) -> Vec<u8> {
    let mut k = metric_prefix(run, key);
    k.extend_from_slice(&enc_i64(step));
    k.extend_from_slice(&enc_i64(ts_us));
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// A decoded metric key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricKey<'a> {
    /// The run.
    pub run: Uuid,
    /// The metric's name.
    pub key: &'a str,
    /// The step.
    pub step: i64,
    /// Microseconds since the epoch.
    pub ts_us: i64,
}

/// Decodes a metric key; `None` if it is malformed.
pub fn decode_metric_key(k: &[u8]) -> Option<MetricKey<'_>> {
    if k.len() < RUN_LEN + 1 + 24 {
        return None;
    }
    let run = decode_run(&k[..RUN_LEN])?;
    let tail = k.len() - 24;
    if k[tail - 1] != 0 {
        return None;
    }
    let key = std::str::from_utf8(&k[RUN_LEN..tail - 1]).ok()?;
    Some(MetricKey {
        run,
        key,
        step: dec_i64(&k[tail..tail + 8])?,
        ts_us: dec_i64(&k[tail + 8..tail + 16])?,
    })
}

/// Decodes the run at the start of a key.
pub fn decode_run(k: &[u8]) -> Option<Uuid> {
    let bytes: [u8; RUN_LEN] = k.get(..RUN_LEN)?.try_into().ok()?;
    Some(Uuid::from_bytes(bytes))
}

/// Splits `run · key` into its parts.
pub fn decode_run_key(k: &[u8]) -> Option<(Uuid, &str)> {
    let run = decode_run(k)?;
    let key = std::str::from_utf8(&k[RUN_LEN..]).ok()?;
    Some((run, key))
}

/// Encoded latest-metric value: step · ts · value.
pub fn latest_value(step: i64, ts_us: i64, value: f64) -> [u8; 24] {
    let mut v = [0u8; 24];
    v[..8].copy_from_slice(&step.to_le_bytes());
    v[8..16].copy_from_slice(&ts_us.to_le_bytes());
    v[16..].copy_from_slice(&value.to_bits().to_le_bytes());
    v
}

/// Decodes a latest-metric value into (step, ts, value).
pub fn decode_latest(v: &[u8]) -> Option<(i64, i64, f64)> {
    if v.len() != 24 {
        return None;
    }
    let step = i64::from_le_bytes(v[..8].try_into().ok()?);
    let ts = i64::from_le_bytes(v[8..16].try_into().ok()?);
    let value = f64::from_bits(u64::from_le_bytes(v[16..].try_into().ok()?));
    Some((step, ts, value))
}

/// The merge operator of `latest_metrics`: keeps the operand with the highest (step, ts);
/// on a tie the later write wins.
pub fn merge_latest(
    _key: &[u8],
    existing: Option<&[u8]>,
    operands: &rocksdb::MergeOperands,
) -> Option<Vec<u8>> {
    let mut best: Option<(i64, i64, &[u8])> =
        existing.and_then(|v| decode_latest(v).map(|(s, t, _)| (s, t, v)));
    for op in operands {
        let Some((s, t, _)) = decode_latest(op) else {
            continue;
        };
        if best.is_none_or(|(bs, bt, _)| (s, t) >= (bs, bt)) {
            best = Some((s, t, op));
        }
    }
    best.map(|(_, _, v)| v.to_vec())
}

/// `experiment id · run`: the experiment index key.
pub fn experiment_run_key(experiment_id: i64, run: &Uuid) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + RUN_LEN);
    k.extend_from_slice(&enc_i64(experiment_id));
    k.extend_from_slice(run.as_bytes());
    k
}

/// `run · table · 0x00 · version`: one lineage entry.
pub fn input_key(run: &Uuid, table: &str, version: i64) -> Vec<u8> {
    let mut k = run_key(run, table);
    k.push(0);
    k.extend_from_slice(&enc_i64(version));
    k
}

/// Decodes a lineage key into (run, table, version).
pub fn decode_input_key(k: &[u8]) -> Option<(Uuid, &str, i64)> {
    let run = decode_run(k)?;
    if k.len() < RUN_LEN + 9 || k[k.len() - 9] != 0 {
        return None;
    }
    let table = std::str::from_utf8(&k[RUN_LEN..k.len() - 9]).ok()?;
    Some((run, table, dec_i64(&k[k.len() - 8..])?))
}

/// The smallest key greater than every key starting with `prefix`; `None` if there is none.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_encoding_sorts_numerically() {
        let values = [i64::MIN, -5, -1, 0, 1, 7, 1 << 40, i64::MAX];
        for w in values.windows(2) {
            assert!(enc_i64(w[0]) < enc_i64(w[1]), "{} < {}", w[0], w[1]);
        }
        for v in values {
            assert_eq!(dec_i64(&enc_i64(v)), Some(v));
        }
    }

    #[test]
    fn metric_keys_round_trip_and_sort_by_step_then_time() {
        let run = Uuid::new_v4();
        let a = metric_key(&run, "loss", -1, 5, 0);
        let b = metric_key(&run, "loss", 2, 1, 0);
        let c = metric_key(&run, "loss", 2, 3, 0);
        assert!(a < b && b < c);
        let d = decode_metric_key(&c).expect("decodes");
        assert_eq!((d.run, d.key, d.step, d.ts_us), (run, "loss", 2, 3));
        // One key's prefix does not cover a longer key that starts the same way.
        let other = metric_key(&run, "loss2", 0, 0, 0);
        assert!(!other.starts_with(&metric_prefix(&run, "loss")));
        assert!(decode_metric_key(b"short").is_none());
    }

    #[test]
    fn prefix_end_bounds_the_prefix() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 255]), Some(vec![2]));
        assert_eq!(prefix_end(&[255, 255]), None);
    }

    #[test]
    fn input_keys_round_trip() {
        let run = Uuid::new_v4();
        let k = input_key(&run, "iris", 3);
        assert_eq!(decode_input_key(&k), Some((run, "iris", 3)));
    }

    #[test]
    fn latest_values_round_trip_nan() {
        let v = latest_value(3, 4, f64::NAN);
        let (s, t, x) = decode_latest(&v).expect("decodes");
        assert_eq!((s, t), (3, 4));
        assert!(x.is_nan());
    }
}
