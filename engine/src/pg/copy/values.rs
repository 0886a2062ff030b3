//! Column builders and the text spellings of values in `COPY` data.
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, ListBuilder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit};

use crate::error::{Error, Result};

/// One column being decoded.
pub(super) enum Column {
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

pub(super) fn sql_type_name(t: &DataType) -> String {
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

pub(super) fn parse_bool(s: &str) -> Option<bool> {
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

pub(super) fn parse_bytea(s: &str) -> Option<Vec<u8>> {
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
pub(super) fn parse_array(s: &str) -> Option<Vec<Option<String>>> {
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
    pub(super) fn new(t: &DataType) -> Self {
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
    pub(super) fn push(&mut self, v: Option<&str>) -> std::result::Result<(), ()> {
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

    pub(super) fn finish(&mut self, t: &DataType) -> Result<ArrayRef> {
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

    pub(super) fn len(&self) -> usize {
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
pub(super) fn unescape_text(raw: &[u8]) -> std::result::Result<String, ()> {
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
