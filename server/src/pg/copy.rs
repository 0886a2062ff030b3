//! `COPY … TO STDOUT` encoding: rows in PostgreSQL's text, CSV or binary format, values
//! encoded as PostgreSQL's text or binary output (through arrow-pg, the same encoder
//! result sets use).

use std::sync::Arc;

use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
use datafusion::arrow::array::RecordBatch;
use pgwire::api::portal::Format;
use pgwire::error::PgWireResult;
use pgwire::messages::data::DataRow;
use runbase_engine::copy::CopyFormat;

/// Encodes rows of `batch` as COPY lines, one `Vec<u8>` per row (with its newline; a
/// tuple in the binary format).
pub fn encode_batch(batch: RecordBatch, format: &CopyFormat) -> PgWireResult<Vec<Vec<u8>>> {
    if *format == CopyFormat::Binary {
        // A binary tuple is a DataRow in binary format: its field count, then each field's
        // length and bytes.
        let fields = Arc::new(arrow_schema_to_pg_fields(
            batch.schema().as_ref(),
            &Format::UnifiedBinary,
            None,
        )?);
        return encode_recordbatch(fields, batch)
            .map(|row| {
                row.map(|row| {
                    let mut tuple = Vec::with_capacity(2 + row.data.len());
                    tuple.extend_from_slice(&row.field_count.to_be_bytes());
                    tuple.extend_from_slice(&row.data);
                    tuple
                })
            })
            .collect();
    }
    let fields = Arc::new(arrow_schema_to_pg_fields(
        batch.schema().as_ref(),
        &Format::UnifiedText,
        None,
    )?);
    let infinite = crate::text::infinite_float_columns(&batch);
    let mut out = Vec::with_capacity(batch.num_rows());
    for row in encode_recordbatch(fields, batch) {
        out.push(encode_row(&row?, format, &infinite));
    }
    Ok(out)
}

/// The header of a binary copy: signature, flags (none), header extension (none).
pub fn binary_header() -> Vec<u8> {
    let mut header = runbase_engine::copy::BINARY_SIGNATURE.to_vec();
    header.extend_from_slice(&0u32.to_be_bytes());
    header.extend_from_slice(&0u32.to_be_bytes());
    header
}

/// The header line of a CSV copy.
pub fn header_line(names: &[String], format: &CopyFormat) -> Vec<u8> {
    let mut line = Vec::new();
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            line.push(delimiter(format));
        }
        push_value(&mut line, Some(n.as_bytes()), format);
    }
    line.push(b'\n');
    line
}

fn delimiter(format: &CopyFormat) -> u8 {
    match format {
        CopyFormat::Text { delimiter, .. } | CopyFormat::Csv { delimiter, .. } => *delimiter,
        // Binary tuples are not delimited (`encode_batch` writes them whole).
        CopyFormat::Binary => b'\t',
    }
}

fn push_value(line: &mut Vec<u8>, value: Option<&[u8]>, format: &CopyFormat) {
    match (format, value) {
        (CopyFormat::Binary, _) => {}
        (CopyFormat::Text { null, .. } | CopyFormat::Csv { null, .. }, None) => {
            line.extend_from_slice(null.as_bytes());
        }
        (CopyFormat::Text { delimiter, .. }, Some(v)) => {
            for &b in v {
                match b {
                    b'\\' => line.extend_from_slice(b"\\\\"),
                    b'\n' => line.extend_from_slice(b"\\n"),
                    b'\r' => line.extend_from_slice(b"\\r"),
                    b'\t' if *delimiter == b'\t' => line.extend_from_slice(b"\\t"),
                    b if b == *delimiter => {
                        line.push(b'\\');
                        line.push(b);
                    }
                    b => line.push(b),
                }
            }
        }
        (
            CopyFormat::Csv {
                delimiter,
                quote,
                escape,
                null,
                ..
            },
            Some(v),
        ) => {
            let needs_quotes = v == null.as_bytes()
                || v.iter()
                    .any(|b| *b == *delimiter || *b == *quote || *b == b'\n' || *b == b'\r');
            if !needs_quotes {
                line.extend_from_slice(v);
                return;
            }
            line.push(*quote);
            for &b in v {
                if b == *quote || b == *escape {
                    line.push(*escape);
                }
                line.push(b);
            }
            line.push(*quote);
        }
    }
}

/// One `DataRow` (text format) as one COPY line.
fn encode_row(row: &DataRow, format: &CopyFormat, infinite: &[usize]) -> Vec<u8> {
    let mut line = Vec::with_capacity(row.data.len() + 8);
    let mut data = &row.data[..];
    for i in 0..usize::try_from(row.field_count).unwrap_or(0) {
        if i > 0 {
            line.push(delimiter(format));
        }
        if data.len() < 4 {
            break;
        }
        let (len, rest) = data.split_at(4);
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        match usize::try_from(len) {
            Ok(n) if n <= rest.len() => {
                let mut value = &rest[..n];
                if infinite.contains(&i) {
                    value = crate::text::postgres_float_text(value).unwrap_or(value);
                }
                push_value(&mut line, Some(value), format);
                data = &rest[n..];
            }
            _ => {
                push_value(&mut line, None, format);
                data = rest;
            }
        }
    }
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("x", DataType::Float64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec![Some("a\tb,\"c\""), None])),
                Arc::new(Float64Array::from(vec![
                    Some(f64::NAN),
                    Some(f64::NEG_INFINITY),
                ])),
            ],
        )
        .expect("batch")
    }

    #[test]
    fn text_rows_escape_and_spell_null() {
        let lines = encode_batch(
            batch(),
            &CopyFormat::Text {
                delimiter: b'\t',
                null: "\\N".into(),
            },
        )
        .expect("encode");
        assert_eq!(lines[0], b"1\ta\\tb,\"c\"\tNaN\n");
        assert_eq!(lines[1], b"2\t\\N\t-Infinity\n");
    }

    #[test]
    fn csv_rows_quote_what_needs_it() {
        let lines = encode_batch(
            batch(),
            &CopyFormat::Csv {
                delimiter: b',',
                quote: b'"',
                escape: b'"',
                null: String::new(),
                header: true,
            },
        )
        .expect("encode");
        assert_eq!(lines[0], b"1,\"a\tb,\"\"c\"\"\",NaN\n");
        assert_eq!(lines[1], b"2,,-Infinity\n");
    }
}
