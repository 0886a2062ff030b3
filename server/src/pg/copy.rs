//! COPY over the wire. `COPY … TO STDOUT`: rows in PostgreSQL's text, CSV or binary
//! format, values encoded as PostgreSQL's text or binary output (through arrow-pg, the
//! same encoder result sets use), sent as a stream of `CopyData`. `COPY … FROM STDIN`:
//! the [`CopyHandler`] feeding the client's data to the engine's [`CopyIn`].
//!
//! [`CopyIn`]: runbase_engine::pg::copy::CopyIn

use std::fmt::Debug;
use std::sync::Arc;

use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use futures::{Sink, SinkExt, StreamExt, stream};
use pgwire::api::ClientInfo;
use pgwire::api::copy::CopyHandler;
use pgwire::api::portal::Format;
use pgwire::api::results::Tag;
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail};
use pgwire::messages::data::DataRow;
use runbase_engine::error::ErrorCode;
use runbase_engine::pg::copy::CopyFormat;

use super::connection::{Connection, pg_err};
use super::error::PgError;

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
    let infinite = super::text::infinite_float_columns(&batch);
    let mut out = Vec::with_capacity(batch.num_rows());
    for row in encode_recordbatch(fields, batch) {
        out.push(encode_row(&row?, format, &infinite));
    }
    Ok(out)
}

/// The header of a binary copy: signature, flags (none), header extension (none).
pub fn binary_header() -> Vec<u8> {
    let mut header = runbase_engine::pg::copy::BINARY_SIGNATURE.to_vec();
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
                    value = super::text::postgres_float_text(value).unwrap_or(value);
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

/// `COPY … TO STDOUT`, as PostgreSQL sends it: a CSV header line as its own message, then
/// one `CopyData` per row; in the binary format the header rides with the first row (or
/// the trailer, when there are none), which some clients (tokio-postgres) rely on.
pub(super) fn copy_out_stream(
    rows: SendableRecordBatchStream,
    format: CopyFormat,
) -> impl futures::Stream<Item = PgWireResult<CopyData>> + Send + 'static {
    let csv_header = match &format {
        CopyFormat::Csv { header: true, .. } => Some(header_line(
            &rows
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect::<Vec<_>>(),
            &format,
        )),
        _ => None,
    };
    let binary = format == CopyFormat::Binary;
    let mut binary_header = binary.then(binary_header);
    let trailer = binary.then(|| Ok((-1i16).to_be_bytes().to_vec()));
    let lines = rows
        .map(move |batch| -> Vec<PgWireResult<Vec<u8>>> {
            let lines = batch
                .map_err(|e| pg_err(&e.into()))
                .and_then(|b| encode_batch(b, &format));
            match lines {
                Ok(lines) => lines.into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e)],
            }
        })
        .flat_map(stream::iter)
        .chain(stream::iter(trailer))
        .map(move |line| {
            line.map(|mut line| {
                if let Some(mut header) = binary_header.take() {
                    header.append(&mut line);
                    line = header;
                }
                CopyData::new(line.into())
            })
        });
    stream::iter(csv_header.map(|h| Ok(CopyData::new(h.into())))).chain(lines)
}

#[async_trait]
impl CopyHandler for Connection {
    async fn on_copy_data<C>(&self, _client: &mut C, copy_data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // Errors are kept in the copy and reported once, at CopyDone. Into a user table the
        // parsed batches go on to the table's writer; waiting for it holds back this
        // connection's reads, so a fast client is slowed to the writer's pace.
        let feed = match self.copy.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            Some(copy) => {
                copy.push(&copy_data.data);
                copy.ready()
            }
            None => None,
        };
        if let Some(feed) = feed {
            feed.send().await;
        }
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let copy = self.copy.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(copy) = copy else {
            return Err(PgError::new(
                ErrorCode::ProtocolViolation,
                "CopyDone without a COPY in progress",
            )
            .into());
        };
        let tag = self
            .session
            .finish_copy_in(*copy)
            .await
            .map_err(|e| pg_err(&e))?;
        let rows = usize::try_from(tag.rows.unwrap_or(0)).unwrap_or(usize::MAX);
        client
            .send(PgWireBackendMessage::CommandComplete(
                Tag::new("COPY").with_rows(rows).into(),
            ))
            .await?;
        Ok(())
    }

    async fn on_copy_fail<C>(&self, _client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.copy.lock().unwrap_or_else(|p| p.into_inner()).take();
        PgError::new(
            ErrorCode::Canceled,
            format!("COPY from stdin failed: {}", fail.message),
        )
        .into()
    }
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
