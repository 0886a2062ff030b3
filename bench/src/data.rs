//! Deterministic data for the comparisons: a small seeded generator and metric rows in
//! COPY text format.

/// A seeded xorshift generator; the same seed gives the same numbers everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next number in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The columns of the dataset-load comparison's table (10 columns).
pub const LOAD_COLUMNS: &str = "id bigint NOT NULL, f1 double precision, f2 double precision, \
    f3 double precision, f4 double precision, f5 double precision, f6 double precision, \
    f7 double precision, f8 double precision, label text";

/// Appends row `i` of the dataset-load comparison to `out` as one CSV line: an id, eight
/// features in `[0, 8)` and a label. The same `i` gives the same line everywhere.
pub fn load_csv_line(i: u64, out: &mut Vec<u8>) {
    use std::io::Write;
    let mut rng = Rng::new(i);
    let _ = write!(out, "{i}");
    for k in 1..=8u32 {
        let _ = write!(out, ",{:.6}", rng.next_f64() * f64::from(k));
    }
    let _ = writeln!(out, ",class-{}", i % 10);
}

/// COPY text lines `run_id \t key \t step \t value` for every run × key × step.
#[derive(Debug)]
pub struct MetricRows<'a> {
    runs: &'a [String],
    keys: &'a [&'a str],
    steps: usize,
    rng: Rng,
    run: usize,
    key: usize,
    step: usize,
}

impl<'a> MetricRows<'a> {
    /// Rows for `runs` × `keys` × `steps`, values from `seed`.
    pub fn new(runs: &'a [String], keys: &'a [&'a str], steps: usize, seed: u64) -> Self {
        Self {
            runs,
            keys,
            steps,
            rng: Rng::new(seed),
            run: 0,
            key: 0,
            step: 0,
        }
    }
}

impl Iterator for MetricRows<'_> {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        if self.steps == 0 || self.keys.is_empty() || self.run >= self.runs.len() {
            return None;
        }
        let line = format!(
            "{}\t{}\t{}\t{}\n",
            self.runs[self.run],
            self.keys[self.key],
            self.step,
            self.rng.next_f64()
        );
        self.step += 1;
        if self.step == self.steps {
            self.step = 0;
            self.key += 1;
            if self.key == self.keys.len() {
                self.key = 0;
                self.run += 1;
            }
        }
        Some(line)
    }
}

/// SQL creating `table(id bigint, f0 … f{features-1} double precision, label bigint)` with
/// `rows` rows computed in the database: every feature a deterministic pseudo-random value
/// in [-2, 2) of (id, feature), the label 1 where a fixed mix of the first features is
/// positive. The same SQL gives the same table on every run.
pub fn scoring_table_sql(table: &str, rows: usize, features: usize) -> String {
    let feature = |k: usize| {
        let h = format!(
            "abs(sin(CAST(value AS double) * 12.9898 + {}.0 * 78.233)) * 43758.5453",
            k + 1
        );
        format!("(({h}) - floor({h})) * 4.0 - 2.0 AS f{k}")
    };
    let columns: Vec<String> = (0..features).map(feature).collect();
    let mix: Vec<String> = (0..features.min(8))
        .map(|k| format!("{} f{k}", if k % 2 == 0 { "+" } else { "-" }))
        .collect();
    let names: Vec<String> = (0..features).map(|k| format!("f{k}")).collect();
    format!(
        "CREATE TABLE {table} AS SELECT id, {names}, CASE WHEN 0.0 {mix} > 0.0 THEN 1 ELSE 0 END AS label \
         FROM (SELECT CAST(value AS bigint) AS id, {columns} FROM generate_series(1, {rows}))",
        names = names.join(", "),
        mix = mix.join(" "),
        columns = columns.join(", "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_cover_every_run_key_and_step_deterministically() {
        let runs = vec!["a".to_string(), "b".to_string()];
        let keys = ["x", "y"];
        let rows: Vec<String> = MetricRows::new(&runs, &keys, 3, 1).collect();
        assert_eq!(rows.len(), 12);
        assert!(rows[0].starts_with("a\tx\t0\t"));
        assert!(rows[11].starts_with("b\ty\t2\t"));
        let again: Vec<String> = MetricRows::new(&runs, &keys, 3, 1).collect();
        assert_eq!(rows, again);
    }
}
