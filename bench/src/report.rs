//! The comparison table: one row per measurement, runbase and the peer side by side, with
//! the ratio oriented so that above 1 means runbase is better.

/// One measurement.
#[derive(Debug, Clone)]
pub struct Row {
    name: String,
    runbase: f64,
    peer: f64,
    higher_is_better: bool,
}

impl Row {
    /// A throughput (higher is better).
    pub fn higher_better(name: &str, runbase: f64, peer: f64) -> Self {
        Self {
            name: name.into(),
            runbase,
            peer,
            higher_is_better: true,
        }
    }

    /// A latency (lower is better).
    pub fn lower_better(name: &str, runbase: f64, peer: f64) -> Self {
        Self {
            name: name.into(),
            runbase,
            peer,
            higher_is_better: false,
        }
    }

    /// How many times better runbase is (below 1: worse).
    pub fn advantage(&self) -> f64 {
        if self.higher_is_better {
            self.runbase / self.peer
        } else {
            self.peer / self.runbase
        }
    }
}

/// A titled table of rows.
#[derive(Debug, Clone)]
pub struct Table {
    title: String,
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
    /// An empty table.
    pub fn new(title: &str) -> Self {
        Self {
            title: title.into(),
            rows: vec![],
        }
    }

    /// Adds a row.
    pub fn push(&mut self, row: Row) {
        self.rows.push(row);
    }

    /// The table in Markdown.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "### {}\n\n| measurement | runbase | peer | runbase advantage |\n|---|---:|---:|---:|\n",
            self.title
        );
        for r in &self.rows {
            s.push_str(&format!(
                "| {} | {} | {} | {:.2}× |\n",
                r.name,
                fmt(r.runbase),
                fmt(r.peer),
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
        let t = Table {
            title: "t".into(),
            rows: vec![Row::lower_better("q (ms)", 5.0, 10.0)],
        };
        assert!(t.markdown().contains("| q (ms) | 5.00 | 10.0 | 2.00× |"));
    }
}
