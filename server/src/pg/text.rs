//! Fix-ups of values' text spelling where the encoder differs from PostgreSQL.
//!
//! pgwire spells infinite floats `inf` / `-inf` and whole floats `2.0`; PostgreSQL (and
//! every driver parsing its output) spells them `Infinity` / `-Infinity` and `2`. Rows are
//! only rewritten when a batch holds such a float, so the common path costs one scan of
//! the float columns.

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Float32Type, Float64Type};
use pgwire::messages::data::DataRow;

fn needs_respelling(v: f64) -> bool {
    v.is_infinite() || (v.fract() == 0.0 && v.abs() < 1e15)
}

/// Indices of the float columns of `batch` that hold an infinite or whole value.
pub fn infinite_float_columns(batch: &RecordBatch) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, col) in batch.columns().iter().enumerate() {
        let has_inf = match col.data_type() {
            DataType::Float64 => col
                .as_primitive::<Float64Type>()
                .iter()
                .flatten()
                .any(needs_respelling),
            DataType::Float32 => col
                .as_primitive::<Float32Type>()
                .iter()
                .flatten()
                .any(|v| needs_respelling(f64::from(v))),
            _ => false,
        };
        if has_inf {
            out.push(i);
        }
    }
    out
}

/// PostgreSQL's spelling of a float's text, if it differs from `value`.
pub fn postgres_float_text(value: &[u8]) -> Option<&[u8]> {
    match value {
        b"inf" => Some(b"Infinity"),
        b"-inf" => Some(b"-Infinity"),
        b"-0.0" => Some(b"-0"),
        v => v.strip_suffix(b".0"),
    }
}

/// Rewrites the text of `columns` of `row` to PostgreSQL's spelling of infinity.
pub fn respell_infinity(row: DataRow, columns: &[usize]) -> DataRow {
    let mut out = bytes::BytesMut::with_capacity(row.data.len() + 16);
    let mut data = &row.data[..];
    for i in 0..usize::try_from(row.field_count).unwrap_or(0) {
        if data.len() < 4 {
            return row;
        }
        let len = i32::from_be_bytes([data[0], data[1], data[2], data[3]]);
        data = &data[4..];
        let Ok(n) = usize::try_from(len) else {
            out.extend_from_slice(&len.to_be_bytes());
            continue;
        };
        if n > data.len() {
            return row;
        }
        let value = &data[..n];
        data = &data[n..];
        let value = if columns.contains(&i) {
            postgres_float_text(value).unwrap_or(value)
        } else {
            value
        };
        out.extend_from_slice(&i32::try_from(value.len()).unwrap_or(i32::MAX).to_be_bytes());
        out.extend_from_slice(value);
    }
    DataRow::new(out, row.field_count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_are_spelled_as_postgres_does() {
        assert_eq!(postgres_float_text(b"inf"), Some(&b"Infinity"[..]));
        assert_eq!(postgres_float_text(b"-inf"), Some(&b"-Infinity"[..]));
        assert_eq!(postgres_float_text(b"2.0"), Some(&b"2"[..]));
        assert_eq!(postgres_float_text(b"2.5"), None);
        assert_eq!(postgres_float_text(b"NaN"), None);
    }
}

#[cfg(test)]
mod batch_tests {
    use std::sync::Arc;

    use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
    use datafusion::arrow::array::{Float64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use pgwire::api::portal::Format;

    use super::*;

    #[test]
    fn rows_with_whole_and_infinite_floats_are_rewritten() {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Float64, true)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Float64Array::from(vec![
                Some(2.0),
                Some(0.5),
                Some(f64::INFINITY),
                None,
            ]))],
        )
        .expect("batch");
        let cols = infinite_float_columns(&batch);
        assert_eq!(cols, vec![0]);
        let fields = Arc::new(
            arrow_schema_to_pg_fields(&schema, &Format::UnifiedText, None).expect("fields"),
        );
        let rows: Vec<DataRow> = encode_recordbatch(fields, batch)
            .map(|r| respell_infinity(r.expect("row"), &cols))
            .collect();
        let texts: Vec<Vec<u8>> = rows.iter().map(|r| r.data[4..].to_vec()).collect();
        assert_eq!(texts[0], b"2");
        assert_eq!(texts[1], b"0.5");
        assert_eq!(texts[2], b"Infinity");
    }
}
