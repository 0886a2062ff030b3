//! Entry points for fuzzing the engine's parsers of untrusted bytes.
//!
//! Each function takes arbitrary bytes, runs one parser the network or a client reaches, and
//! returns whether the input was accepted. Refusing is fine; panicking is the bug. The
//! coverage-guided targets in `fuzz/` call these, and `tests/tests/fuzz_corpus.rs` replays
//! the kept corpus and every crash found through them, so a fixed crash stays fixed.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::datasource::MemTable;
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;

use crate::pg::copy::{CopyFormat, CopyIn};

/// Which `COPY … FROM STDIN` format [`copy`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyKind {
    /// PostgreSQL's text format.
    Text,
    /// CSV; the first input byte picks the options (delimiter, quote, escape, header).
    Csv,
    /// PostgreSQL's binary format.
    Binary,
}

/// The columns fuzzed COPY data is decoded into: one of every type the decoder builds.
fn copy_schema() -> Arc<Schema> {
    let text_list = DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)));
    let int_list = DataType::List(Arc::new(Field::new("item", DataType::Int64, true)));
    Arc::new(Schema::new(vec![
        Field::new("b", DataType::Boolean, true),
        Field::new("i16", DataType::Int16, true),
        Field::new("i32", DataType::Int32, true),
        Field::new("i64", DataType::Int64, false),
        Field::new("f32", DataType::Float32, true),
        Field::new("f64", DataType::Float64, true),
        Field::new("t", DataType::Utf8, true),
        Field::new("d", DataType::Date32, true),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("bytes", DataType::Binary, true),
        Field::new("texts", text_list, true),
        Field::new("ints", int_list, true),
        Field::new("dec", DataType::Decimal128(10, 2), true),
    ]))
}

/// Decodes `data` as a `COPY … FROM STDIN` stream of `kind` into a table of every column
/// type, fed in pieces whose size the data's first byte picks (as a client's CopyData
/// messages split it). Whether all of it decoded.
pub fn copy(kind: CopyKind, data: &[u8]) -> bool {
    let Some((&first, rest)) = data.split_first() else {
        return false;
    };
    let format = match kind {
        CopyKind::Text => CopyFormat::Text {
            delimiter: b'\t',
            null: "\\N".into(),
        },
        CopyKind::Binary => CopyFormat::Binary,
        CopyKind::Csv => CopyFormat::Csv {
            delimiter: [b',', b'\t', b'|', b';'][usize::from(first & 3)],
            quote: if first & 4 == 0 { b'"' } else { b'\'' },
            escape: if first & 8 == 0 { b'"' } else { b'\\' },
            null: if first & 16 == 0 {
                String::new()
            } else {
                "NULL".into()
            },
            header: first & 32 != 0,
        },
    };
    let schema = copy_schema();
    let Ok(table) = MemTable::try_new(schema, vec![vec![]]) else {
        return false;
    };
    let Ok(mut copy) = CopyIn::new("fuzz".into(), Arc::new(table), &[], format) else {
        return false;
    };
    let piece = 1 + usize::from(first >> 6) * 97;
    for chunk in rest.chunks(piece) {
        copy.push(chunk);
    }
    copy.finish_rows().is_ok()
}

/// Parses `data` as SQL text the way a session does before planning (runbase's own
/// statements, the SQL parser, the nesting limits). Whether it parsed.
pub fn sql(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    crate::sql::parse_statements(&PostgresCompatibilityParser::new(), text).is_ok()
}

/// Parses `data` as one of the short texts SQL functions and HTTP routes take from users,
/// the first byte picking which: a model reference (`name@3`, `name@alias`), an alert rule
/// (name and JSON), a run id, a run status, a series axis, a role, a duration setting.
/// Whether it was accepted.
pub fn text_argument(data: &[u8]) -> bool {
    let Some((&which, rest)) = data.split_first() else {
        return false;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return false;
    };
    match which % 7 {
        0 => crate::tracking::models::ModelReference::parse(text).is_ok(),
        1 => {
            let (name, json) = text.split_once('\n').unwrap_or(("rule", text));
            crate::tracking::alerts::Rule::parse(name, json).is_ok()
        }
        2 => crate::tracking::parse_run_id(text).is_ok(),
        3 => crate::tracking::RunStatus::parse(text).is_ok(),
        4 => crate::tracking::series::SeriesAxis::parse(text).is_ok(),
        5 => crate::users::Role::parse(text).is_ok(),
        _ => crate::sql::parse_duration(text).is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The entry points accept what they should, so a fuzz run starts from real inputs.
    #[test]
    fn entry_points_accept_well_formed_input() {
        let row = "t\t1\t2\t3\t1.5\t2.5\thello\t2024-01-02\t2024-01-02 03:04:05+00\t\\\\x0102\t{a,b}\t{1,2}\t1.25\n";
        let mut text = vec![0u8];
        text.extend_from_slice(row.as_bytes());
        assert!(copy(CopyKind::Text, &text));
        let csv = b"\x00true,1,2,3,1.5,2.5,\"a,b\",2024-01-02,2024-01-02 03:04:05+00,\\x01,\"{a,b}\",\"{1,2}\",1.25\n";
        assert!(copy(CopyKind::Csv, csv));
        assert!(!copy(CopyKind::Text, b"\x00not a row\n"));
        assert!(!copy(CopyKind::Binary, b"\x00PGCOPY"));
        assert!(sql(b"SELECT 1; CREATE USER a PASSWORD 'x'"));
        assert!(!sql(b"SELECT FROM WHERE ("));
        assert!(text_argument(b"\x00model@3"));
        assert!(text_argument(b"\x02 8f0e4c5e-58d8-4a5b-9b3c-2a1f0e6d7c8b"));
        assert!(!text_argument(b"\x02not-a-uuid"));
        assert!(text_argument(b"\x066s"));
    }
}
