//! Fix-ups of values' text spelling where the encoder differs from PostgreSQL.
//!
//! pgwire spells infinite floats `inf` / `-inf`; PostgreSQL (and every driver parsing its
//! output) spells them `Infinity` / `-Infinity`. Rows are only rewritten when a batch
//! actually holds an infinite float, so the common path costs one scan of float columns.

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Float32Type, Float64Type};
use pgwire::messages::data::DataRow;

/// Indices of the float columns of `batch` that hold an infinite value.
pub fn infinite_float_columns(batch: &RecordBatch) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, col) in batch.columns().iter().enumerate() {
        let has_inf = match col.data_type() {
            DataType::Float64 => col
                .as_primitive::<Float64Type>()
                .iter()
                .flatten()
                .any(f64::is_infinite),
            DataType::Float32 => col
                .as_primitive::<Float32Type>()
                .iter()
                .flatten()
                .any(f32::is_infinite),
            _ => false,
        };
        if has_inf {
            out.push(i);
        }
    }
    out
}

/// PostgreSQL's spelling of a float's text, if it differs from `value`.
pub fn postgres_float_text(value: &[u8]) -> Option<&'static [u8]> {
    match value {
        b"inf" => Some(b"Infinity"),
        b"-inf" => Some(b"-Infinity"),
        _ => None,
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
