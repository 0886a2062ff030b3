//! `COPY … FROM STDIN` and `COPY … TO STDOUT`: options, and decoding PostgreSQL's text and
//! CSV formats into Arrow batches.
//!
//! A [`CopyIn`] takes the client's bytes as they arrive, in pieces of any size, and parses
//! each complete line straight into column builders. Nothing is written until the client
//! ends the copy: then every row goes to the table in one write (one table version, or one
//! RocksDB batch for `runbase.metrics`), so a failed copy stores none of its rows.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, ListBuilder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder, new_null_array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::catalog::TableProvider;
use datafusion::sql::sqlparser::ast::{CopyLegacyCsvOption, CopyLegacyOption, CopyOption};

use crate::error::{Error, Result};

mod binary;

pub use binary::SIGNATURE as BINARY_SIGNATURE;

/// Rows per batch while decoding.
const BATCH_ROWS: usize = 8192;

/// The data format of a `COPY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyFormat {
    /// PostgreSQL's text format: tab-separated, `\N` for NULL, backslash escapes.
    Text {
        /// Field separator.
        delimiter: u8,
        /// How NULL is spelled.
        null: String,
    },
    /// CSV.
    Csv {
        /// Field separator.
        delimiter: u8,
        /// Quote character.
        quote: u8,
        /// Escape character inside quotes.
        escape: u8,
        /// How NULL is spelled (unquoted).
        null: String,
        /// Whether the first line is a header.
        header: bool,
    },
    /// PostgreSQL's binary format (asyncpg's `copy_records_to_table`).
    Binary,
}

impl CopyFormat {
    /// The format a `COPY` statement's options ask for.
    pub fn from_options(options: &[CopyOption], legacy: &[CopyLegacyOption]) -> Result<Self> {
        let mut csv = false;
        let mut binary = false;
        let mut delimiter = None;
        let mut null = None;
        let mut header = false;
        let mut quote = b'"';
        let mut escape = None;
        let byte = |c: char, what: &str| -> Result<u8> {
            u8::try_from(c).ok().filter(u8::is_ascii).ok_or_else(|| {
                Error::InvalidArgument(format!("COPY {what} must be a single one-byte character"))
            })
        };
        for o in options {
            match o {
                CopyOption::Format(f) => match f.value.to_ascii_lowercase().as_str() {
                    "text" => csv = false,
                    "csv" => csv = true,
                    "binary" => binary = true,
                    other => {
                        return Err(Error::InvalidArgument(format!(
                            "COPY format \"{other}\" not recognized"
                        )));
                    }
                },
                CopyOption::Delimiter(c) => delimiter = Some(byte(*c, "delimiter")?),
                CopyOption::Null(s) => null = Some(s.clone()),
                CopyOption::Header(h) => header = *h,
                CopyOption::Quote(c) => quote = byte(*c, "quote")?,
                CopyOption::Escape(c) => escape = Some(byte(*c, "escape")?),
                CopyOption::Encoding(e)
                    if e.eq_ignore_ascii_case("utf8") || e.eq_ignore_ascii_case("utf-8") => {}
                other => return Err(Error::NotSupported(format!("COPY option {other}"))),
            }
        }
        for o in legacy {
            match o {
                CopyLegacyOption::Binary => binary = true,
                CopyLegacyOption::Delimiter(c) => delimiter = Some(byte(*c, "delimiter")?),
                CopyLegacyOption::Null(s) => null = Some(s.clone()),
                CopyLegacyOption::Header => header = true,
                CopyLegacyOption::Csv(opts) => {
                    csv = true;
                    for c in opts {
                        match c {
                            CopyLegacyCsvOption::Header => header = true,
                            CopyLegacyCsvOption::Quote(q) => quote = byte(*q, "quote")?,
                            CopyLegacyCsvOption::Escape(e) => escape = Some(byte(*e, "escape")?),
                            other => {
                                return Err(Error::NotSupported(format!("COPY option {other}")));
                            }
                        }
                    }
                }
                other => return Err(Error::NotSupported(format!("COPY option {other}"))),
            }
        }
        if binary {
            let text_option = [
                (csv, "CSV"),
                (delimiter.is_some(), "DELIMITER"),
                (null.is_some(), "NULL"),
                (header, "HEADER"),
            ]
            .into_iter()
            .find_map(|(given, name)| given.then_some(name));
            return match text_option {
                Some(name) => Err(Error::Syntax(format!(
                    "cannot specify {name} in BINARY mode"
                ))),
                None => Ok(CopyFormat::Binary),
            };
        }
        if csv {
            Ok(CopyFormat::Csv {
                delimiter: delimiter.unwrap_or(b','),
                quote,
                escape: escape.unwrap_or(quote),
                null: null.unwrap_or_default(),
                header,
            })
        } else {
            if header {
                return Err(Error::NotSupported(
                    "COPY HEADER in text format (use csv)".into(),
                ));
            }
            Ok(CopyFormat::Text {
                delimiter: delimiter.unwrap_or(b'\t'),
                null: null.unwrap_or_else(|| "\\N".to_string()),
            })
        }
    }
}

/// One column being decoded.
enum Column {
    Bool(BooleanBuilder),
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Utf8(StringBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
    Binary(BinaryBuilder),
    /// `{a,b,c}` arrays, parsed to text elements and cast at the end.
    List(ListBuilder<StringBuilder>),
    /// Anything else: kept as text and cast at the end.
    Text(StringBuilder),
}

fn sql_type_name(t: &DataType) -> String {
    match t {
        DataType::Boolean => "boolean".into(),
        DataType::Int16 => "smallint".into(),
        DataType::Int32 => "integer".into(),
        DataType::Int64 => "bigint".into(),
        DataType::Float32 => "real".into(),
        DataType::Float64 => "double precision".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text".into(),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(_, Some(_)) => "timestamp with time zone".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Binary | DataType::LargeBinary => "bytea".into(),
        other => other.to_string(),
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "t" | "true" | "y" | "yes" | "on" | "1" => Some(true),
        "f" | "false" | "n" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// Parses a PostgreSQL float: also `NaN`, `Infinity`, `-Infinity`.
pub fn parse_float(s: &str) -> Option<f64> {
    let s = s.trim();
    match s.to_ascii_lowercase().as_str() {
        "nan" => Some(f64::NAN),
        "infinity" | "+infinity" | "inf" | "+inf" => Some(f64::INFINITY),
        "-infinity" | "-inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

/// Parses a timestamp as PostgreSQL writes them (`2024-01-02 03:04:05.6+00`) or RFC 3339,
/// to microseconds since the epoch; values without a zone are UTC.
pub fn parse_timestamp_us(s: &str) -> Option<i64> {
    let s = s.trim();
    let mut owned = s.replace('T', " ");
    // PostgreSQL abbreviates whole-hour zones: `+00`, `-05`.
    let bytes = owned.as_bytes();
    if bytes.len() > 3 {
        let sign = bytes[bytes.len() - 3];
        if (sign == b'+' || sign == b'-') && bytes[bytes.len() - 2..].iter().all(u8::is_ascii_digit)
        {
            owned.push_str(":00");
        }
    }
    if let Some(stripped) = owned.strip_suffix('Z') {
        owned = format!("{stripped}+00:00");
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%:z",
        "%Y-%m-%d %H:%M%:z",
    ] {
        if let Ok(t) = chrono::DateTime::parse_from_str(&owned, fmt) {
            return Some(t.timestamp_micros());
        }
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(&owned, fmt) {
            return Some(t.and_utc().timestamp_micros());
        }
    }
    chrono::NaiveDate::parse_from_str(&owned, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_micros())
}

fn parse_bytea(s: &str) -> Option<Vec<u8>> {
    let Some(hex) = s.strip_prefix("\\x") else {
        return Some(s.as_bytes().to_vec());
    };
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Splits a one-dimensional array literal `{a,b,"c d",NULL}` into its elements.
fn parse_array(s: &str) -> Option<Vec<Option<String>>> {
    let inner = s.trim().strip_prefix('{')?.strip_suffix('}')?;
    if inner.trim().is_empty() {
        return Some(vec![]);
    }
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut was_quoted = false;
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                was_quoted = true;
            }
            '\\' if quoted => cur.push(chars.next()?),
            ',' if !quoted => {
                let v = cur.trim().to_string();
                out.push((was_quoted || !v.eq_ignore_ascii_case("null")).then_some(v));
                cur.clear();
                was_quoted = false;
            }
            '{' | '}' if !quoted => return None,
            c => cur.push(c),
        }
    }
    let v = cur.trim().to_string();
    out.push((was_quoted || !v.eq_ignore_ascii_case("null")).then_some(v));
    Some(out)
}

impl Column {
    fn new(t: &DataType) -> Self {
        match t {
            DataType::Boolean => Column::Bool(BooleanBuilder::new()),
            DataType::Int16 => Column::Int16(Int16Builder::new()),
            DataType::Int32 => Column::Int32(Int32Builder::new()),
            DataType::Int64 => Column::Int64(Int64Builder::new()),
            DataType::Float32 => Column::Float32(Float32Builder::new()),
            DataType::Float64 => Column::Float64(Float64Builder::new()),
            DataType::Utf8 => Column::Utf8(StringBuilder::new()),
            DataType::Date32 => Column::Date(Date32Builder::new()),
            DataType::Timestamp(TimeUnit::Microsecond, tz) => Column::Timestamp(
                TimestampMicrosecondBuilder::new()
                    .with_data_type(DataType::Timestamp(TimeUnit::Microsecond, tz.clone())),
            ),
            DataType::Binary => Column::Binary(BinaryBuilder::new()),
            DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(_, _) => {
                Column::List(ListBuilder::new(StringBuilder::new()))
            }
            _ => Column::Text(StringBuilder::new()),
        }
    }

    /// Appends one value; `Err(())` if it does not parse.
    fn push(&mut self, v: Option<&str>) -> std::result::Result<(), ()> {
        macro_rules! put {
            ($b:expr, $parse:expr) => {
                match v {
                    None => $b.append_null(),
                    Some(s) => $b.append_value($parse(s).ok_or(())?),
                }
            };
        }
        match self {
            Column::Bool(b) => put!(b, parse_bool),
            Column::Int16(b) => put!(b, |s: &str| s.trim().parse::<i16>().ok()),
            Column::Int32(b) => put!(b, |s: &str| s.trim().parse::<i32>().ok()),
            Column::Int64(b) => put!(b, |s: &str| s.trim().parse::<i64>().ok()),
            Column::Float32(b) => put!(b, |s: &str| parse_float(s).map(|f| f as f32)),
            Column::Float64(b) => put!(b, parse_float),
            Column::Utf8(b) | Column::Text(b) => b.append_option(v),
            Column::Date(b) => put!(b, |s: &str| {
                chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
                    .ok()
                    .map(|d| {
                        let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
                        i32::try_from((d - epoch).num_days()).unwrap_or(i32::MAX)
                    })
            }),
            Column::Timestamp(b) => put!(b, parse_timestamp_us),
            Column::Binary(b) => put!(b, parse_bytea),
            Column::List(b) => match v {
                None => b.append_null(),
                Some(s) => {
                    for e in parse_array(s).ok_or(())? {
                        b.values().append_option(e);
                    }
                    b.append(true);
                }
            },
        }
        Ok(())
    }

    fn finish(&mut self, t: &DataType) -> Result<ArrayRef> {
        let a: ArrayRef = match self {
            Column::Bool(b) => Arc::new(b.finish()),
            Column::Int16(b) => Arc::new(b.finish()),
            Column::Int32(b) => Arc::new(b.finish()),
            Column::Int64(b) => Arc::new(b.finish()),
            Column::Float32(b) => Arc::new(b.finish()),
            Column::Float64(b) => Arc::new(b.finish()),
            Column::Utf8(b) => Arc::new(b.finish()),
            Column::Date(b) => Arc::new(b.finish()),
            Column::Timestamp(b) => Arc::new(b.finish()),
            Column::Binary(b) => Arc::new(b.finish()),
            Column::List(b) => Arc::new(b.finish()),
            Column::Text(b) => Arc::new(b.finish()),
        };
        if a.data_type() == t {
            return Ok(a);
        }
        cast(&a, t).map_err(|e| {
            Error::InvalidText(format!("invalid input for type {}: {e}", sql_type_name(t)))
        })
    }

    fn len(&self) -> usize {
        match self {
            Column::Bool(b) => b.len(),
            Column::Int16(b) => b.len(),
            Column::Int32(b) => b.len(),
            Column::Int64(b) => b.len(),
            Column::Float32(b) => b.len(),
            Column::Float64(b) => b.len(),
            Column::Utf8(b) | Column::Text(b) => b.len(),
            Column::Date(b) => b.len(),
            Column::Timestamp(b) => b.len(),
            Column::Binary(b) => b.len(),
            Column::List(b) => b.len(),
        }
    }
}

/// Undoes text-format backslash escapes.
fn unescape_text(raw: &[u8]) -> std::result::Result<String, ()> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b != b'\\' || i + 1 == raw.len() {
            out.push(b);
            i += 1;
            continue;
        }
        let e = raw[i + 1];
        i += 2;
        match e {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                let mut n = 1;
                while n < 3 && i < raw.len() && (b'0'..=b'7').contains(&raw[i]) {
                    v = v * 8 + u32::from(raw[i] - b'0');
                    i += 1;
                    n += 1;
                }
                out.push(u8::try_from(v & 0xff).unwrap_or(0));
            }
            b'x' if i < raw.len() && raw[i].is_ascii_hexdigit() => {
                let mut v = 0u8;
                let mut n = 0;
                while n < 2 && i < raw.len() && raw[i].is_ascii_hexdigit() {
                    v = v * 16
                        + u8::try_from((raw[i] as char).to_digit(16).unwrap_or(0)).unwrap_or(0);
                    i += 1;
                    n += 1;
                }
                out.push(v);
            }
            other => out.push(other),
        }
    }
    String::from_utf8(out).map_err(|_| ())
}

/// An in-progress `COPY … FROM STDIN`.
pub struct CopyIn {
    pub(crate) table_name: String,
    pub(crate) provider: Arc<dyn TableProvider>,
    /// The table's full schema.
    pub(crate) schema: SchemaRef,
    /// Indices (into `schema`) of the columns the data has, in order.
    columns: Vec<usize>,
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
        Ok(Self {
            table_name,
            provider,
            schema,
            columns,
            format,
            builders,
            batches: vec![],
            pending: vec![],
            line: 0,
            rows: 0,
            header_read: false,
            ended: false,
            error: None,
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
            .map(|f| new_null_array(f.data_type(), rows))
            .collect();
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
