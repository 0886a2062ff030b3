//! `COPY … FROM STDIN` and `COPY … TO STDOUT`: options, and decoding PostgreSQL's text and
//! CSV formats into Arrow batches.
//!
//! A [`CopyIn`] takes the client's bytes as they arrive, in pieces of any size, and parses
//! each complete line straight into column builders. Into a user table the full batches
//! stream to the table's writer as they are made ([`CopyIn::ready`], with back-pressure),
//! which writes Parquet files as they fill and commits once, when the client ends the copy:
//! memory stays bounded and a failed or abandoned copy commits nothing. Into
//! `runbase.metrics` the rows are kept and written as one RocksDB batch at the end. Either
//! way a copy is one table version (or one batch), and a failed copy stores none of its rows.
//!
//! Layout: `options` ([`CopyFormat`]), `values` (column builders and value spellings),
//! `binary` (the binary format); this file the [`CopyIn`] that parses text and CSV lines.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, new_null_array};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;

use crate::error::{Error, Result};

mod binary;
mod options;
mod values;

pub use options::CopyFormat;
use values::*;
pub use values::{parse_float, parse_timestamp_us};

pub use binary::SIGNATURE as BINARY_SIGNATURE;

/// Rows per batch while decoding.
const BATCH_ROWS: usize = 8192;

/// An in-progress `COPY … FROM STDIN`.
pub struct CopyIn {
    pub(crate) table_name: String,
    pub(crate) provider: Arc<dyn TableProvider>,
    /// The table's full schema.
    pub(crate) schema: SchemaRef,
    /// Indices (into `schema`) of the columns the data has, in order.
    columns: Vec<usize>,
    /// What each column of `schema` the data does not have is filled with: its default,
    /// or NULL.
    fill: Vec<Option<datafusion::common::ScalarValue>>,
    format: CopyFormat,
    builders: Vec<Column>,
    pub(crate) batches: Vec<RecordBatch>,
    pending: Vec<u8>,
    line: u64,
    rows: u64,
    /// Whether a binary copy's header has been read.
    header_read: bool,
    ended: bool,
    error: Option<Error>,
    /// The streamed write the batches go to (user tables).
    pub(crate) sink: Option<CopySink>,
}

/// What a streamed copy's writer reads.
pub(crate) enum SinkMessage {
    /// The next rows.
    Rows(RecordBatch),
    /// The client ended the copy: commit.
    End,
}

/// The writer of a streamed copy: batches go in through `tx`; `task` commits them once
/// [`SinkMessage::End`] arrives and fails (committing nothing) if `tx` closes without it.
pub(crate) struct CopySink {
    pub(crate) tx: tokio::sync::mpsc::Sender<SinkMessage>,
    pub(crate) task: tokio::task::JoinHandle<Result<u64>>,
}

/// Batches parsed from one piece of data, on their way to a streamed copy's writer.
#[must_use = "the batches are only written once sent"]
pub struct CopyFeed {
    tx: tokio::sync::mpsc::Sender<SinkMessage>,
    batches: Vec<RecordBatch>,
}

impl CopyFeed {
    /// Hands the batches to the writer, waiting while it is behind (back-pressure). If the
    /// writer has failed, the batches are dropped: the copy reports its error at the end.
    pub async fn send(self) {
        for batch in self.batches {
            if self.tx.send(SinkMessage::Rows(batch)).await.is_err() {
                return;
            }
        }
    }
}

impl std::fmt::Debug for CopyIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyIn")
            .field("table", &self.table_name)
            .field("rows", &self.rows)
            .finish()
    }
}

impl CopyIn {
    pub(crate) fn new(
        table_name: String,
        provider: Arc<dyn TableProvider>,
        column_names: &[String],
        format: CopyFormat,
    ) -> Result<Self> {
        let schema = provider.schema();
        let columns = if column_names.is_empty() {
            (0..schema.fields().len()).collect()
        } else {
            column_names
                .iter()
                .map(|c| {
                    schema.index_of(c).map_err(|_| {
                        Error::DataFusion(datafusion::error::DataFusionError::SchemaError(
                            Box::new(datafusion::common::SchemaError::FieldNotFound {
                                field: Box::new(datafusion::common::Column::new_unqualified(c)),
                                valid_fields: vec![],
                            }),
                            Box::new(None),
                        ))
                    })
                })
                .collect::<Result<Vec<_>>>()?
        };
        let builders = columns
            .iter()
            .map(|i| Column::new(schema.field(*i).data_type()))
            .collect();
        let stored = crate::storage::provider::UserTableProvider::writable_table(provider.as_ref());
        let fill = schema
            .fields()
            .iter()
            .map(|f| {
                stored
                    .as_ref()
                    .and_then(|t| t.default_value(f.name()).cloned())
            })
            .collect();
        Ok(Self {
            table_name,
            provider,
            schema,
            columns,
            fill,
            format,
            builders,
            batches: vec![],
            pending: vec![],
            line: 0,
            rows: 0,
            header_read: false,
            ended: false,
            error: None,
            sink: None,
        })
    }

    /// The full batches parsed so far, to send to a streamed copy's writer; `None` when
    /// the copy keeps its rows until the end (`runbase.metrics`) or has none ready.
    pub fn ready(&mut self) -> Option<CopyFeed> {
        let sink = self.sink.as_ref()?;
        if self.batches.is_empty() {
            return None;
        }
        Some(CopyFeed {
            tx: sink.tx.clone(),
            batches: std::mem::take(&mut self.batches),
        })
    }

    /// Number of columns in the data.
    pub fn column_count(&self) -> usize {
        self.columns.len()
    }

    /// Whether the data is CSV (else text or binary).
    pub fn is_csv(&self) -> bool {
        matches!(self.format, CopyFormat::Csv { .. })
    }

    /// Whether the data is in the binary format.
    pub fn is_binary(&self) -> bool {
        self.format == CopyFormat::Binary
    }

    /// Takes the next piece of the client's data. After the first error the rest of the
    /// data is ignored and [`crate::Session::finish_copy_in`] reports it.
    pub fn push(&mut self, data: &[u8]) {
        if self.error.is_some() || self.ended {
            return;
        }
        // A streamed copy whose writer has failed: its error is reported at the end.
        if self.sink.as_ref().is_some_and(|s| s.tx.is_closed()) {
            return;
        }
        self.pending.extend_from_slice(data);
        if let Err(e) = self.parse_complete() {
            self.error = Some(e);
            self.pending.clear();
        }
    }

    /// Parses what is left and returns the batches to write, or the first error.
    pub(crate) fn finish_rows(&mut self) -> Result<Vec<RecordBatch>> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if self.is_binary() {
            if !self.header_read {
                return Err(Error::BadCopyData(format!(
                    "COPY file signature not recognized ({})",
                    self.context()
                )));
            }
            if !self.pending.is_empty() {
                return Err(Error::BadCopyData(format!(
                    "unexpected EOF in COPY data ({})",
                    self.context()
                )));
            }
        } else if !self.ended && !self.pending.is_empty() {
            self.pending.push(b'\n');
            self.parse_complete()?;
            // With the line ended, only a quoted field still open is left over.
            if !self.ended && !self.pending.is_empty() {
                return Err(Error::BadCopyData(format!(
                    "unterminated CSV quoted field ({})",
                    self.context()
                )));
            }
        }
        self.flush()?;
        Ok(std::mem::take(&mut self.batches))
    }

    fn context(&self) -> String {
        format!("COPY {}, line {}", self.table_name, self.line)
    }

    fn parse_complete(&mut self) -> Result<()> {
        let data = std::mem::take(&mut self.pending);
        let consumed = match self.format.clone() {
            CopyFormat::Text { delimiter, null } => self.parse_text(&data, delimiter, &null)?,
            CopyFormat::Csv {
                delimiter,
                quote,
                escape,
                null,
                header,
            } => self.parse_csv(&data, delimiter, quote, escape, &null, header)?,
            CopyFormat::Binary => self.parse_binary(&data)?,
        };
        self.pending = data[consumed..].to_vec();
        Ok(())
    }

    fn parse_text(&mut self, data: &[u8], delimiter: u8, null: &str) -> Result<usize> {
        use std::borrow::Cow;
        let mut pos = 0;
        let mut fields: Vec<Option<Cow<'_, str>>> = Vec::with_capacity(self.columns.len());
        while let Some(nl) = data[pos..].iter().position(|b| *b == b'\n') {
            let mut line = &data[pos..pos + nl];
            pos += nl + 1;
            self.line += 1;
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            if line == b"\\." {
                self.ended = true;
                return Ok(data.len());
            }
            fields.clear();
            // Split on unescaped delimiters; only fields with a backslash are copied.
            let mut start = 0;
            let mut i = 0;
            let mut escaped = false;
            let mut has_escape = false;
            while i <= line.len() {
                if i == line.len() || (line[i] == delimiter && !escaped) {
                    let raw = &line[start..i];
                    let bad_utf8 =
                        || Error::InvalidText(format!("invalid UTF-8 ({})", self.context()));
                    if raw == null.as_bytes() {
                        fields.push(None);
                    } else if has_escape {
                        fields.push(Some(Cow::Owned(
                            unescape_text(raw).map_err(|()| bad_utf8())?,
                        )));
                    } else {
                        fields.push(Some(Cow::Borrowed(
                            std::str::from_utf8(raw).map_err(|_| bad_utf8())?,
                        )));
                    }
                    start = i + 1;
                    escaped = false;
                    has_escape = false;
                } else {
                    escaped = !escaped && line[i] == b'\\';
                    has_escape |= escaped;
                }
                i += 1;
            }
            self.push_row(&fields)?;
        }
        Ok(pos)
    }

    #[allow(clippy::too_many_arguments)]
    fn parse_csv(
        &mut self,
        data: &[u8],
        delimiter: u8,
        quote: u8,
        escape: u8,
        null: &str,
        header: bool,
    ) -> Result<usize> {
        let mut pos = 0;
        let mut fields: Vec<Option<String>> = Vec::with_capacity(self.columns.len());
        'records: loop {
            fields.clear();
            let mut field = Vec::new();
            let mut quoted_field = false;
            let mut in_quotes = false;
            let mut i = pos;
            let mut lines = 1;
            loop {
                let Some(&b) = data.get(i) else {
                    break 'records; // incomplete record: wait for more data
                };
                if in_quotes {
                    if b == escape && escape != quote && data.get(i + 1) == Some(&quote) {
                        field.push(quote);
                        i += 2;
                        continue;
                    }
                    if b == quote {
                        if quote == escape && data.get(i + 1) == Some(&quote) {
                            field.push(quote);
                            i += 2;
                            continue;
                        }
                        if data.get(i + 1).is_none() {
                            break 'records; // cannot tell yet whether this quote is doubled
                        }
                        in_quotes = false;
                        i += 1;
                        continue;
                    }
                    if b == b'\n' {
                        lines += 1;
                    }
                    field.push(b);
                    i += 1;
                    continue;
                }
                if b == quote {
                    in_quotes = true;
                    quoted_field = true;
                    i += 1;
                } else if b == delimiter || b == b'\n' {
                    if b == b'\n' && field.last() == Some(&b'\r') {
                        field.pop();
                    }
                    let value = if !quoted_field && field == null.as_bytes() {
                        None
                    } else {
                        Some(String::from_utf8(std::mem::take(&mut field)).map_err(|_| {
                            Error::InvalidText(format!("invalid UTF-8 ({})", self.context()))
                        })?)
                    };
                    fields.push(value);
                    field.clear();
                    quoted_field = false;
                    i += 1;
                    if b == b'\n' {
                        break;
                    }
                } else {
                    field.push(b);
                    i += 1;
                }
            }
            pos = i;
            self.line += lines;
            if fields.len() == 1 && fields[0].as_deref() == Some("\\.") {
                self.ended = true;
                return Ok(data.len());
            }
            if header && self.line == lines {
                continue;
            }
            self.push_row(&fields)?;
        }
        Ok(pos)
    }

    /// Parses the binary header and every complete tuple; returns the bytes consumed.
    fn parse_binary(&mut self, data: &[u8]) -> Result<usize> {
        let bad =
            |this: &Self, what: String| Error::BadCopyData(format!("{what} ({})", this.context()));
        let mut pos = 0;
        if !self.header_read {
            match binary::header(data).map_err(|e| bad(self, e))? {
                binary::Header::Incomplete => return Ok(0),
                binary::Header::Complete(n) => pos = n,
            }
            self.header_read = true;
        }
        loop {
            match binary::tuple(&data[pos..]).map_err(|e| bad(self, e))? {
                binary::Tuple::Incomplete => return Ok(pos),
                binary::Tuple::End => {
                    self.ended = true;
                    return Ok(data.len());
                }
                binary::Tuple::Row(fields, n) => {
                    self.line += 1;
                    self.push_binary_row(&fields)?;
                    pos += n;
                }
            }
        }
    }

    fn push_binary_row(&mut self, fields: &[Option<&[u8]>]) -> Result<()> {
        if fields.len() != self.columns.len() {
            return Err(Error::BadCopyData(format!(
                "row field count is {}, expected {} ({})",
                fields.len(),
                self.columns.len(),
                self.context()
            )));
        }
        for (n, (f, b)) in fields.iter().zip(self.builders.iter_mut()).enumerate() {
            let field = self.schema.field(self.columns[n]);
            if b.push_binary(field.data_type(), *f).is_err() {
                return Err(Error::InvalidBinary(format!(
                    "incorrect binary data format for type {} (COPY {}, row {}, column {})",
                    sql_type_name(field.data_type()),
                    self.table_name,
                    self.line,
                    field.name()
                )));
            }
        }
        self.end_row()
    }

    fn push_row<S: AsRef<str>>(&mut self, fields: &[Option<S>]) -> Result<()> {
        if fields.len() > self.columns.len() {
            return Err(Error::BadCopyData(format!(
                "extra data after last expected column ({})",
                self.context()
            )));
        }
        if fields.len() < self.columns.len() {
            let missing = self.schema.field(self.columns[fields.len()]).name();
            return Err(Error::BadCopyData(format!(
                "missing data for column \"{missing}\" ({})",
                self.context()
            )));
        }
        for (n, (f, b)) in fields.iter().zip(self.builders.iter_mut()).enumerate() {
            if b.push(f.as_ref().map(AsRef::as_ref)).is_err() {
                let field = self.schema.field(self.columns[n]);
                return Err(Error::InvalidText(format!(
                    "invalid input syntax for type {}: \"{}\" ({}, column {})",
                    sql_type_name(field.data_type()),
                    f.as_ref().map(AsRef::as_ref).unwrap_or_default(),
                    format_args!("COPY {}, line {}", self.table_name, self.line),
                    field.name()
                )));
            }
        }
        self.end_row()
    }

    /// Counts a row just appended and flushes a full batch.
    fn end_row(&mut self) -> Result<()> {
        self.rows += 1;
        if self.builders.first().is_some_and(|b| b.len() >= BATCH_ROWS) {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let rows = self.builders.first().map_or(0, Column::len);
        if rows == 0 {
            return Ok(());
        }
        let mut arrays: Vec<ArrayRef> = self
            .schema
            .fields()
            .iter()
            .zip(&self.fill)
            .map(|(f, fill)| match fill {
                Some(value) => value.to_array_of_size(rows).map_err(Error::DataFusion),
                None => Ok(new_null_array(f.data_type(), rows)),
            })
            .collect::<Result<_>>()?;
        for (b, i) in self.builders.iter_mut().zip(&self.columns) {
            arrays[*i] = b.finish(self.schema.field(*i).data_type())?;
        }
        for (a, f) in arrays.iter().zip(self.schema.fields()) {
            if !f.is_nullable() && a.null_count() > 0 {
                return Err(Error::NullValue(format!(
                    "null value in column \"{}\" of relation \"{}\" violates not-null constraint",
                    f.name(),
                    self.table_name
                )));
            }
        }
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)
            .map_err(|e| Error::DataFusion(e.into()))?;
        self.batches.push(batch);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::DataType;
    use datafusion::arrow::datatypes::{Field, Float64Type, Int64Type, Schema};
    use datafusion::datasource::MemTable;

    fn copy_in(format: CopyFormat) -> CopyIn {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("x", DataType::Float64, true),
        ]));
        let table = Arc::new(MemTable::try_new(schema, vec![vec![]]).expect("table"));
        CopyIn::new("t".into(), table, &[], format).expect("copy")
    }

    fn text() -> CopyFormat {
        CopyFormat::Text {
            delimiter: b'\t',
            null: "\\N".into(),
        }
    }

    #[test]
    fn text_lines_split_across_pieces_with_escapes_and_nulls() {
        let mut c = copy_in(text());
        c.push(b"1\ta\\tb\t1.5\n2\t\\N\tNa");
        c.push(b"N\n3\tc\t-Infinity");
        let batches = c.finish_rows().expect("rows");
        let b = &batches[0];
        assert_eq!(b.num_rows(), 3);
        assert_eq!(b.column(0).as_primitive::<Int64Type>().values(), &[1, 2, 3]);
        let names = b.column(1).as_string::<i32>();
        assert_eq!(names.value(0), "a\tb");
        assert!(names.is_null(1));
        let x = b.column(2).as_primitive::<Float64Type>();
        assert!(x.value(1).is_nan());
        assert_eq!(x.value(2), f64::NEG_INFINITY);
    }

    #[test]
    fn bad_values_name_line_and_column() {
        let mut c = copy_in(text());
        c.push(b"1\ta\t1\n2\tb\tnope\n3\tc\t1\n");
        let err = c.finish_rows().expect_err("bad value").to_string();
        assert!(err.contains("double precision: \"nope\""), "{err}");
        assert!(err.contains("line 2, column x"), "{err}");
        let mut c = copy_in(text());
        c.push(b"1\ta\n");
        assert!(matches!(c.finish_rows(), Err(Error::BadCopyData(_))));
        let mut c = copy_in(text());
        c.push(b"\\N\ta\t1\n");
        assert!(matches!(c.finish_rows(), Err(Error::NullValue(_))));
    }

    #[test]
    fn csv_with_header_quotes_and_embedded_newlines() {
        let mut c = copy_in(CopyFormat::Csv {
            delimiter: b',',
            quote: b'"',
            escape: b'"',
            null: String::new(),
            header: true,
        });
        c.push(b"id,name,x\n1,\"a,\"\"b\"\"\nc\",2\n2,,\n3,\"\",");
        c.push(b"3.5\n");
        let batches = c.finish_rows().expect("rows");
        let names = batches[0].column(1).as_string::<i32>();
        assert_eq!(names.value(0), "a,\"b\"\nc");
        assert!(names.is_null(1));
        assert_eq!(names.value(2), "");
        assert_eq!(batches[0].num_rows(), 3);
    }

    #[test]
    fn timestamps_in_postgres_and_rfc3339_spellings() {
        let a = parse_timestamp_us("2024-01-02 03:04:05+00").expect("pg");
        let b = parse_timestamp_us("2024-01-02T03:04:05Z").expect("rfc3339");
        let c = parse_timestamp_us("2024-01-02 04:04:05.000+01:00").expect("offset");
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert!(parse_timestamp_us("yesterday").is_none());
    }

    #[test]
    fn arrays_and_bytea() {
        assert_eq!(
            parse_array("{1,2.5,NULL}"),
            Some(vec![Some("1".into()), Some("2.5".into()), None])
        );
        assert_eq!(parse_bytea("\\x00ff"), Some(vec![0, 255]));
        assert_eq!(parse_bytea("\\x0"), None);
    }

    /// A binary copy stream of rows `(id, name, x)` for the test table.
    fn binary_rows(rows: &[(i64, Option<&str>, f64)]) -> Vec<u8> {
        let mut data = BINARY_SIGNATURE.to_vec();
        data.extend_from_slice(&[0; 8]);
        for (id, name, x) in rows {
            data.extend_from_slice(&3i16.to_be_bytes());
            data.extend_from_slice(&8i32.to_be_bytes());
            data.extend_from_slice(&id.to_be_bytes());
            match name {
                Some(n) => {
                    data.extend_from_slice(&i32::try_from(n.len()).expect("short").to_be_bytes());
                    data.extend_from_slice(n.as_bytes());
                }
                None => data.extend_from_slice(&(-1i32).to_be_bytes()),
            }
            data.extend_from_slice(&8i32.to_be_bytes());
            data.extend_from_slice(&x.to_be_bytes());
        }
        data.extend_from_slice(&(-1i16).to_be_bytes());
        data
    }

    #[test]
    fn binary_rows_split_at_every_byte() {
        let data = binary_rows(&[(1, Some("one"), 0.5), (2, None, -1.0)]);
        let mut c = copy_in(CopyFormat::Binary);
        for byte in &data {
            c.push(std::slice::from_ref(byte));
        }
        let batches = c.finish_rows().expect("rows");
        let batch = &batches[0];
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.column(0).as_primitive::<Int64Type>().value(1), 2);
        assert_eq!(batch.column(1).as_string::<i32>().value(0), "one");
        assert!(batch.column(1).is_null(1));
        assert_eq!(batch.column(2).as_primitive::<Float64Type>().value(1), -1.0);
    }

    #[test]
    fn bad_binary_data_is_refused() {
        let data = binary_rows(&[(1, Some("one"), 0.5)]);
        // Cut short: no trailer, half a row.
        let mut c = copy_in(CopyFormat::Binary);
        c.push(&data[..data.len() - 6]);
        assert!(matches!(c.finish_rows(), Err(Error::BadCopyData(_))));
        // No header at all.
        let mut c = copy_in(CopyFormat::Binary);
        c.push(b"1\tone\t0.5\n");
        assert!(matches!(c.finish_rows(), Err(Error::BadCopyData(_))));
        // A float given 4 bytes.
        let mut bad = data.clone();
        let at = bad.len() - 2 - 12;
        bad.splice(at..at + 4, 4i32.to_be_bytes());
        bad.truncate(bad.len() - 6);
        bad.extend_from_slice(&(-1i16).to_be_bytes());
        let mut c = copy_in(CopyFormat::Binary);
        c.push(&bad);
        match c.finish_rows() {
            Err(Error::InvalidBinary(m)) => assert!(m.contains("column x"), "{m}"),
            other => panic!("expected InvalidBinary, got {other:?}"),
        }
    }

    #[test]
    fn binary_format_options() {
        let format = |o: &str| {
            let sql = format!("COPY t FROM STDIN {o}");
            let statement = datafusion::sql::sqlparser::parser::Parser::parse_sql(
                &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
                &sql,
            )
            .expect("parse")
            .remove(0);
            let datafusion::sql::sqlparser::ast::Statement::Copy {
                options,
                legacy_options,
                ..
            } = statement
            else {
                panic!("not a COPY")
            };
            CopyFormat::from_options(&options, &legacy_options)
        };
        assert_eq!(format("(FORMAT binary)").ok(), Some(CopyFormat::Binary));
        assert_eq!(format("BINARY").ok(), Some(CopyFormat::Binary));
        assert!(matches!(
            format("(FORMAT binary, DELIMITER ',')"),
            Err(Error::Syntax(_))
        ));
    }
}
