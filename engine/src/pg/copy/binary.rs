//! PostgreSQL's binary `COPY` format (`COPY … FROM STDIN (FORMAT binary)`, what asyncpg's
//! `copy_records_to_table` sends): an 11-byte signature, flags and a header extension,
//! then one tuple per row — a 16-bit field count and, per field, a 32-bit length (-1 for
//! NULL) and the value in the type's binary send format — and a trailer of -1.

use chrono::{DateTime, NaiveDate};
use datafusion::arrow::datatypes::DataType;

use super::Column;

/// The signature every binary COPY stream starts with.
pub const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Days from 1970-01-01 (Arrow's epoch) to 2000-01-01 (PostgreSQL's).
const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
const PG_EPOCH_US: i64 = 946_684_800_000_000;

/// What the start of the data holds.
pub(super) enum Header {
    /// Not all of the header has arrived yet.
    Incomplete,
    /// The header is `n` bytes long.
    Complete(usize),
}

/// Reads the header: signature, flags (bit 16, oids included, is refused), extension.
pub(super) fn header(data: &[u8]) -> Result<Header, String> {
    if data.len() < 19 {
        if !SIGNATURE.starts_with(&data[..data.len().min(SIGNATURE.len())]) {
            return Err("COPY file signature not recognized".into());
        }
        return Ok(Header::Incomplete);
    }
    if &data[..11] != SIGNATURE {
        return Err("COPY file signature not recognized".into());
    }
    let flags = u32::from_be_bytes([data[11], data[12], data[13], data[14]]);
    if flags & (1 << 16) != 0 {
        return Err("COPY binary data with OIDs is not supported".into());
    }
    if flags & 0xffff_0000 & !(1 << 16) != 0 {
        return Err("unrecognized critical flags in COPY file header".into());
    }
    let extension = u32::from_be_bytes([data[15], data[16], data[17], data[18]]) as usize;
    match 19usize.checked_add(extension) {
        Some(n) if data.len() >= n => Ok(Header::Complete(n)),
        Some(_) => Ok(Header::Incomplete),
        None => Err("invalid COPY file header".into()),
    }
}

/// One tuple at the start of the data.
pub(super) enum Tuple<'a> {
    /// Not all of it has arrived yet.
    Incomplete,
    /// The trailer (-1): the data ends here.
    End,
    /// A row's fields and the tuple's length in bytes.
    Row(Vec<Option<&'a [u8]>>, usize),
}

/// Splits the tuple at the start of `data` into its fields.
pub(super) fn tuple(data: &[u8]) -> Result<Tuple<'_>, String> {
    let Some(count) = data.get(..2) else {
        return Ok(Tuple::Incomplete);
    };
    let count = i16::from_be_bytes([count[0], count[1]]);
    if count == -1 {
        return Ok(Tuple::End);
    }
    let count = usize::try_from(count).map_err(|_| format!("invalid field count {count}"))?;
    let mut fields = Vec::with_capacity(count);
    let mut pos = 2;
    for _ in 0..count {
        let Some(len) = data.get(pos..pos + 4) else {
            return Ok(Tuple::Incomplete);
        };
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        pos += 4;
        if len == -1 {
            fields.push(None);
            continue;
        }
        let len = usize::try_from(len).map_err(|_| format!("invalid field length {len}"))?;
        let Some(value) = data.get(pos..pos + len) else {
            return Ok(Tuple::Incomplete);
        };
        fields.push(Some(value));
        pos += len;
    }
    Ok(Tuple::Row(fields, pos))
}

fn array<const N: usize>(v: &[u8]) -> Result<[u8; N], ()> {
    v.try_into().map_err(|_| ())
}

fn be_i16(v: &[u8]) -> Result<i16, ()> {
    array(v).map(i16::from_be_bytes)
}

fn be_i32(v: &[u8]) -> Result<i32, ()> {
    array(v).map(i32::from_be_bytes)
}

fn be_i64(v: &[u8]) -> Result<i64, ()> {
    array(v).map(i64::from_be_bytes)
}

fn date_days(v: &[u8]) -> Result<i32, ()> {
    be_i32(v)?.checked_add(PG_EPOCH_DAYS).ok_or(())
}

fn timestamp_us(v: &[u8]) -> Result<i64, ()> {
    be_i64(v)?.checked_add(PG_EPOCH_US).ok_or(())
}

/// A `numeric` in its binary form (base-10000 digits) as decimal text.
fn numeric_text(v: &[u8]) -> Result<String, ()> {
    let word = |i: usize| -> Result<i16, ()> { be_i16(v.get(2 * i..2 * i + 2).ok_or(())?) };
    let ndigits = usize::try_from(word(0)?).map_err(|_| ())?;
    let weight = i64::from(word(1)?);
    let sign = word(2)? as u16;
    let dscale = usize::try_from(word(3)?).map_err(|_| ())?;
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        0x0000 | 0x4000 => {}
        _ => return Err(()),
    }
    let digits = (0..ndigits)
        .map(|i| word(4 + i))
        .collect::<Result<Vec<i16>, ()>>()?;
    if digits.iter().any(|d| !(0..10_000).contains(d)) {
        return Err(());
    }
    let digit = |k: i64| -> i16 {
        usize::try_from(k)
            .ok()
            .and_then(|k| digits.get(k).copied())
            .unwrap_or(0)
    };
    let mut text = String::new();
    if sign == 0x4000 {
        text.push('-');
    }
    if weight < 0 {
        text.push('0');
    } else {
        for k in 0..=weight {
            if k == 0 {
                text.push_str(&digit(k).to_string());
            } else {
                text.push_str(&format!("{:04}", digit(k)));
            }
        }
    }
    if dscale > 0 {
        let mut fraction = String::with_capacity(dscale + 4);
        let mut k = weight + 1;
        while fraction.len() < dscale {
            fraction.push_str(&format!("{:04}", digit(k)));
            k += 1;
        }
        fraction.truncate(dscale);
        text.push('.');
        text.push_str(&fraction);
    }
    Ok(text)
}

/// A value of type `t` in binary form, as the text PostgreSQL would print for it (for
/// columns and array elements decoded through text).
fn as_text(t: &DataType, v: &[u8]) -> Result<String, ()> {
    Ok(match t {
        DataType::Boolean => match v {
            [0] => "f".into(),
            [1] => "t".into(),
            _ => return Err(()),
        },
        DataType::Int16 => be_i16(v)?.to_string(),
        DataType::Int32 => be_i32(v)?.to_string(),
        DataType::Int64 => be_i64(v)?.to_string(),
        DataType::Float32 => array(v).map(f32::from_be_bytes)?.to_string(),
        DataType::Float64 => array(v).map(f64::from_be_bytes)?.to_string(),
        DataType::Decimal128(..) | DataType::Decimal256(..) => numeric_text(v)?,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            std::str::from_utf8(v).map_err(|_| ())?.to_string()
        }
        DataType::Date32 | DataType::Date64 => {
            let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).ok_or(())?;
            let days = chrono::Days::new(u64::from(date_days(v)?.unsigned_abs()));
            let date = if date_days(v)? < 0 {
                epoch.checked_sub_days(days)
            } else {
                epoch.checked_add_days(days)
            };
            date.ok_or(())?.format("%Y-%m-%d").to_string()
        }
        DataType::Timestamp(..) => DateTime::from_timestamp_micros(timestamp_us(v)?)
            .ok_or(())?
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string(),
        _ => return Err(()),
    })
}

/// A one-dimensional array in binary form: its elements as text.
fn array_elements(element: &DataType, v: &[u8]) -> Result<Vec<Option<String>>, ()> {
    let int = |at: usize| be_i32(v.get(at..at + 4).ok_or(())?);
    let dimensions = int(0)?;
    if dimensions == 0 {
        return Ok(vec![]);
    }
    if dimensions != 1 {
        return Err(());
    }
    let len = usize::try_from(int(12)?).map_err(|_| ())?;
    let mut pos = 20;
    let mut out = Vec::with_capacity(len.min(v.len()));
    for _ in 0..len {
        let n = int(pos)?;
        pos += 4;
        if n == -1 {
            out.push(None);
            continue;
        }
        let n = usize::try_from(n).map_err(|_| ())?;
        let bytes = v.get(pos..pos + n).ok_or(())?;
        out.push(Some(as_text(element, bytes)?));
        pos += n;
    }
    if pos != v.len() {
        return Err(());
    }
    Ok(out)
}

impl Column {
    /// Appends one value in binary form, of the column's type `t`; `Err(())` if it is not
    /// one.
    pub(super) fn push_binary(
        &mut self,
        t: &DataType,
        v: Option<&[u8]>,
    ) -> std::result::Result<(), ()> {
        let Some(v) = v else {
            return self.push(None);
        };
        match self {
            Column::Bool(b) => b.append_value(match v {
                [0] => false,
                [1] => true,
                _ => return Err(()),
            }),
            Column::Int16(b) => b.append_value(be_i16(v)?),
            Column::Int32(b) => b.append_value(be_i32(v)?),
            Column::Int64(b) => b.append_value(be_i64(v)?),
            Column::Float32(b) => b.append_value(array(v).map(f32::from_be_bytes)?),
            Column::Float64(b) => b.append_value(array(v).map(f64::from_be_bytes)?),
            Column::Utf8(b) => b.append_value(std::str::from_utf8(v).map_err(|_| ())?),
            Column::Date(b) => b.append_value(date_days(v)?),
            Column::Timestamp(b) => b.append_value(timestamp_us(v)?),
            Column::Binary(b) => b.append_value(v),
            Column::List(b) => {
                let element = match t {
                    DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
                        f.data_type()
                    }
                    _ => return Err(()),
                };
                for e in array_elements(element, v)? {
                    b.values().append_option(e);
                }
                b.append(true);
            }
            Column::Text(b) => b.append_value(as_text(t, v)?),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(ndigits: i16, weight: i16, sign: u16, dscale: i16, digits: &[i16]) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [ndigits, weight, sign as i16, dscale]
            .into_iter()
            .chain(digits.iter().copied())
        {
            v.extend_from_slice(&w.to_be_bytes());
        }
        v
    }

    #[test]
    fn numerics_in_binary_form_read_as_decimal_text() {
        assert_eq!(
            numeric_text(&numeric(2, 0, 0, 2, &[12, 3400])),
            Ok("12.34".into())
        );
        assert_eq!(
            numeric_text(&numeric(2, 1, 0x4000, 0, &[1, 2345])),
            Ok("-12345".into())
        );
        assert_eq!(
            numeric_text(&numeric(1, -1, 0, 4, &[5])),
            Ok("0.0005".into())
        );
        assert_eq!(
            numeric_text(&numeric(1, -2, 0, 6, &[12])),
            Ok("0.000000".into())
        );
        assert_eq!(numeric_text(&numeric(0, 0, 0, 0, &[])), Ok("0".into()));
        assert_eq!(
            numeric_text(&numeric(0, 0, 0xC000, 0, &[])),
            Ok("NaN".into())
        );
        assert_eq!(numeric_text(&numeric(1, 0, 0, 0, &[10_000])), Err(()));
        assert_eq!(numeric_text(&[0, 1]), Err(()));
    }

    #[test]
    fn headers_and_tuples_split_anywhere() {
        let mut data = SIGNATURE.to_vec();
        data.extend_from_slice(&0u32.to_be_bytes());
        data.extend_from_slice(&0u32.to_be_bytes());
        for cut in 0..19 {
            assert!(
                matches!(header(&data[..cut]), Ok(Header::Incomplete)),
                "{cut}"
            );
        }
        assert!(matches!(header(&data), Ok(Header::Complete(19))));
        assert!(header(b"PGCOPY\nX").is_err());

        let mut row = 2i16.to_be_bytes().to_vec();
        row.extend_from_slice(&8i32.to_be_bytes());
        row.extend_from_slice(&42i64.to_be_bytes());
        row.extend_from_slice(&(-1i32).to_be_bytes());
        for cut in 0..row.len() {
            assert!(matches!(tuple(&row[..cut]), Ok(Tuple::Incomplete)), "{cut}");
        }
        match tuple(&row) {
            Ok(Tuple::Row(fields, n)) => {
                assert_eq!(n, row.len());
                assert_eq!(fields, vec![Some(&42i64.to_be_bytes()[..]), None]);
            }
            _ => panic!("a row"),
        }
        assert!(matches!(tuple(&(-1i16).to_be_bytes()), Ok(Tuple::End)));
        assert!(tuple(&(-2i16).to_be_bytes()).is_err());
    }

    #[test]
    fn arrays_dates_and_timestamps() {
        let mut a = Vec::new();
        for w in [1i32, 1, 701, 3, 1] {
            a.extend_from_slice(&w.to_be_bytes());
        }
        a.extend_from_slice(&8i32.to_be_bytes());
        a.extend_from_slice(&1.5f64.to_be_bytes());
        a.extend_from_slice(&(-1i32).to_be_bytes());
        a.extend_from_slice(&8i32.to_be_bytes());
        a.extend_from_slice(&(-2.25f64).to_be_bytes());
        assert_eq!(
            array_elements(&DataType::Float64, &a),
            Ok(vec![Some("1.5".into()), None, Some("-2.25".into())])
        );
        assert_eq!(
            array_elements(&DataType::Float64, &a[..a.len() - 1]),
            Err(())
        );
        assert_eq!(date_days(&0i32.to_be_bytes()), Ok(PG_EPOCH_DAYS));
        assert_eq!(
            as_text(&DataType::Date32, &(-1i32).to_be_bytes()),
            Ok("1999-12-31".into())
        );
        assert_eq!(
            as_text(
                &DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Nanosecond, None),
                &1_500_000i64.to_be_bytes()
            ),
            Ok("2000-01-01T00:00:01.500000Z".into())
        );
    }
}
