//! Filters a tracking scan applies itself: which run ids, keys, experiments and step
//! ranges it reads, as RocksDB range scans.
use std::collections::BTreeSet;
use std::fmt;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};

use super::*;

/// What the filters of a scan pin down. `None` means unconstrained.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Pushdown {
    pub(super) run_ids: Option<BTreeSet<String>>,
    pub(super) keys: Option<BTreeSet<String>>,
    pub(super) experiments: Option<BTreeSet<String>>,
    pub(super) names: Option<BTreeSet<String>>,
    pub(super) step_lo: Option<i64>,
    pub(super) step_hi: Option<i64>,
}

pub(super) fn intersect(slot: &mut Option<BTreeSet<String>>, values: BTreeSet<String>) {
    *slot = Some(match slot.take() {
        Some(old) => old.intersection(&values).cloned().collect(),
        None => values,
    });
}

pub(super) fn column_name(e: &Expr) -> Option<&str> {
    match e {
        Expr::Column(c) => Some(c.name.as_str()),
        _ => None,
    }
}

pub(super) fn literal_text(e: &Expr) -> Option<String> {
    match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)),
            _,
        ) => Some(s.clone()),
        _ => None,
    }
}

pub(super) fn literal_int(e: &Expr) -> Option<i64> {
    match e {
        Expr::Literal(v, _) => match v {
            ScalarValue::Int64(Some(x)) => Some(*x),
            ScalarValue::Int32(Some(x)) => Some(i64::from(*x)),
            ScalarValue::Int16(Some(x)) => Some(i64::from(*x)),
            ScalarValue::Int8(Some(x)) => Some(i64::from(*x)),
            ScalarValue::UInt32(Some(x)) => Some(i64::from(*x)),
            _ => None,
        },
        Expr::Cast(c) => literal_int(&c.expr),
        _ => None,
    }
}

/// The column and the values a disjunction of equalities on one text column allows:
/// `c = 'a' OR c = 'b' OR c IN ('d')`.
pub(super) fn equality_values(table: TableKind, e: &Expr) -> Option<(&str, BTreeSet<String>)> {
    match e {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => {
            let (col, lit) = match (column_name(left), column_name(right)) {
                (Some(c), None) => (c, right.as_ref()),
                (None, Some(c)) => (c, left.as_ref()),
                _ => return None,
            };
            (table.pushable(col) && col != "step").then_some(())?;
            Some((col, BTreeSet::from([literal_text(lit)?])))
        }
        Expr::InList(list) if !list.negated => {
            let col = column_name(&list.expr)?;
            (table.pushable(col) && col != "step").then_some(())?;
            let values: Option<BTreeSet<String>> = list.list.iter().map(literal_text).collect();
            Some((col, values?))
        }
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Or,
            right,
        }) => {
            let (a, mut va) = equality_values(table, left)?;
            let (b, vb) = equality_values(table, right)?;
            (a == b).then_some(())?;
            va.extend(vb);
            Some((a, va))
        }
        _ => None,
    }
}

impl Pushdown {
    /// Narrows by `filter` if it is one this table pushes; returns whether it was.
    pub(super) fn add(&mut self, table: TableKind, filter: &Expr) -> bool {
        if let Some((col, values)) = equality_values(table, filter) {
            self.add_values(col, values);
            return true;
        }
        match filter {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (col, lit, op) = match (column_name(left), column_name(right)) {
                    (Some(c), None) => (c, right.as_ref(), *op),
                    (None, Some(c)) => match op.swap() {
                        Some(swapped) => (c, left.as_ref(), swapped),
                        None => return false,
                    },
                    _ => return false,
                };
                if !table.pushable(col) {
                    return false;
                }
                if col == "step" {
                    let Some(v) = literal_int(lit) else {
                        return false;
                    };
                    let (lo, hi) = match op {
                        Operator::Eq => (Some(v), Some(v)),
                        Operator::Gt => (v.checked_add(1), None),
                        Operator::GtEq => (Some(v), None),
                        Operator::Lt => (None, v.checked_sub(1)),
                        Operator::LtEq => (None, Some(v)),
                        _ => return false,
                    };
                    if let Some(lo) = lo {
                        self.step_lo = Some(self.step_lo.map_or(lo, |o| o.max(lo)));
                    }
                    if let Some(hi) = hi {
                        self.step_hi = Some(self.step_hi.map_or(hi, |o| o.min(hi)));
                    }
                    return true;
                }
                if op != Operator::Eq {
                    return false;
                }
                let Some(v) = literal_text(lit) else {
                    return false;
                };
                self.add_values(col, BTreeSet::from([v]));
                true
            }
            Expr::InList(list) if !list.negated => {
                let Some(col) = column_name(&list.expr) else {
                    return false;
                };
                if !table.pushable(col) || col == "step" {
                    return false;
                }
                let values: Option<BTreeSet<String>> = list.list.iter().map(literal_text).collect();
                let Some(values) = values else {
                    return false;
                };
                self.add_values(col, values);
                true
            }
            Expr::Between(b) if !b.negated && column_name(&b.expr) == Some("step") => {
                if !table.pushable("step") {
                    return false;
                }
                let (Some(lo), Some(hi)) = (literal_int(&b.low), literal_int(&b.high)) else {
                    return false;
                };
                self.step_lo = Some(self.step_lo.map_or(lo, |o| o.max(lo)));
                self.step_hi = Some(self.step_hi.map_or(hi, |o| o.min(hi)));
                true
            }
            _ => false,
        }
    }

    pub(super) fn add_values(&mut self, col: &str, values: BTreeSet<String>) {
        let slot = match col {
            "run_id" => &mut self.run_ids,
            "key" => &mut self.keys,
            "experiment" => &mut self.experiments,
            _ => &mut self.names,
        };
        intersect(slot, values);
    }

    pub(super) fn step_ok(&self, step: i64) -> bool {
        self.step_lo.is_none_or(|lo| step >= lo) && self.step_hi.is_none_or(|hi| step <= hi)
    }

    pub(super) fn key_ok(&self, key: &str) -> bool {
        self.keys.as_ref().is_none_or(|k| k.contains(key))
    }
}

impl fmt::Display for Pushdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        let list = |name: &str, s: &Option<BTreeSet<String>>| {
            s.as_ref().map(|v| {
                format!(
                    "{name}=[{}]",
                    v.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            })
        };
        parts.extend(list("experiment", &self.experiments));
        parts.extend(list("name", &self.names));
        parts.extend(list("run_id", &self.run_ids));
        parts.extend(list("key", &self.keys));
        if self.step_lo.is_some() || self.step_hi.is_some() {
            let b = |v: Option<i64>| v.map_or("∞".to_string(), |v| v.to_string());
            parts.push(format!("step=[{}, {}]", b(self.step_lo), b(self.step_hi)));
        }
        if parts.is_empty() {
            f.write_str("full scan")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}
