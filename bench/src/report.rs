//! The comparison table: one row per measurement, runbase and the peer side by side, with
//! the ratio oriented so that above 1 means runbase is better. Every row names its peer, so
//! scripts/bench.sh can fold the tables of all comparisons into one.

/// One measurement.
#[derive(Debug, Clone)]
pub struct Row {
    name: String,
    peer: Option<String>,
    runbase: f64,
    peer_value: f64,
    higher_is_better: bool,
}

impl Row {
    /// A throughput (higher is better).
    pub fn higher_better(name: &str, runbase: f64, peer: f64) -> Self {
        Self {
            name: name.into(),
            peer: None,
            runbase,
            peer_value: peer,
            higher_is_better: true,
        }
    }

    /// A latency (lower is better).
    pub fn lower_better(name: &str, runbase: f64, peer: f64) -> Self {
        Self {
            name: name.into(),
            peer: None,
            runbase,
            peer_value: peer,
            higher_is_better: false,
        }
    }

    /// The peer this row measures against, when it is not the table's.
    pub fn against(mut self, peer: &str) -> Self {
        self.peer = Some(peer.into());
        self
    }

    /// How many times better runbase is (below 1: worse).
    pub fn advantage(&self) -> f64 {
        if self.higher_is_better {
            self.runbase / self.peer_value
        } else {
            self.peer_value / self.runbase
        }
    }
}

/// The header row of every table (scripts/bench.sh keys on it).
pub const HEADER: &str = "| peer | measurement | runbase | peer | runbase advantage |";

/// A titled table of rows.
#[derive(Debug, Clone)]
pub struct Table {
    title: String,
    peer: String,
    rows: Vec<Row>,
}

fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{:.0}", v)
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

impl Table {
    /// An empty table against `peer` (a short name, e.g. "PostgreSQL 15.18").
    pub fn new(peer: &str, title: &str) -> Self {
        Self {
            title: title.into(),
            peer: peer.into(),
            rows: vec![],
        }
    }

    /// Adds a row.
    pub fn push(&mut self, row: Row) {
        self.rows.push(row);
    }

    /// The table in Markdown.
    pub fn markdown(&self) -> String {
        let mut s = format!("### {}\n\n{HEADER}\n|---|---|---:|---:|---:|\n", self.title);
        for r in &self.rows {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {:.2}× |\n",
                r.peer.as_deref().unwrap_or(&self.peer),
                r.name,
                fmt(r.runbase),
                fmt(r.peer_value),
                r.advantage()
            ));
        }
        s
    }
}

/// The median of `values` (0 for none).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_advantages() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(Row::higher_better("x", 200.0, 100.0).advantage(), 2.0);
        assert_eq!(Row::lower_better("x", 5.0, 10.0).advantage(), 2.0);
        let mut t = Table::new("PostgreSQL", "t");
        t.push(Row::lower_better("q (ms)", 5.0, 10.0));
        t.push(Row::higher_better("r (rows/s)", 50.0, 200.0).against("floor"));
        let md = t.markdown();
        assert!(
            md.contains("| PostgreSQL | q (ms) | 5.00 | 10.0 | 2.00× |"),
            "{md}"
        );
        assert!(
            md.contains("| floor | r (rows/s) | 50.0 | 200 | 0.25× |"),
            "{md}"
        );
    }
}
