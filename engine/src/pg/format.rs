//! `format(formatstr, VARIADIC args)`, as PostgreSQL has it: `%s` (the argument as text,
//! NULL as nothing), `%I` (an SQL identifier, quoted when needed), `%L` (an SQL literal,
//! NULL as `NULL`) and `%%`, each optionally with a position (`%2$s`). Tools build their
//! catalog queries with it (sqlsmith's first query does). Width and flags are refused.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::cast::as_string_array;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

#[derive(Debug, PartialEq, Eq, Hash)]
struct Format {
    signature: Signature,
}

impl ScalarUDFImpl for Format {
    fn name(&self) -> &str {
        "format"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let texts: Vec<ArrayRef> = arrays
            .iter()
            .map(|a| cast(a, &DataType::Utf8))
            .collect::<std::result::Result<_, _>>()?;
        let texts: Vec<_> = texts
            .iter()
            .map(|a| as_string_array(a))
            .collect::<Result<_>>()?;
        let Some((template, values)) = texts.split_first() else {
            return Err(DataFusionError::Execution(
                "format() takes a format string".into(),
            ));
        };
        let mut out = StringBuilder::new();
        for row in 0..rows {
            if template.is_null(row) {
                out.append_null();
                continue;
            }
            let args: Vec<Option<&str>> = values
                .iter()
                .map(|v| (!v.is_null(row)).then(|| v.value(row)))
                .collect();
            out.append_value(format(template.value(row), &args)?);
        }
        let out: ArrayRef = Arc::new(out.finish());
        Ok(ColumnarValue::Array(out))
    }
}

/// The `format` function.
pub(crate) fn format_function() -> ScalarUDF {
    ScalarUDF::new_from_impl(Format {
        signature: Signature::variadic_any(Volatility::Immutable),
    })
}

fn invalid(message: impl Into<String>) -> DataFusionError {
    DataFusionError::Execution(message.into())
}

/// Formats `template` with `args` (NULL as `None`).
fn format(template: &str, args: &[Option<&str>]) -> Result<String> {
    let mut out = String::with_capacity(template.len());
    let mut chars = template.chars().peekable();
    let mut next_arg = 0usize;
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        // An optional `n$` position, then the type.
        let mut digits = String::new();
        while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            digits.push(*d);
            chars.next();
        }
        let position = if digits.is_empty() {
            None
        } else if chars.peek() == Some(&'$') {
            chars.next();
            let n: usize = digits
                .parse()
                .map_err(|_| invalid("format() argument position is out of range"))?;
            if n == 0 {
                return Err(invalid(
                    "format specifies argument 0, but arguments are numbered from 1",
                ));
            }
            Some(n - 1)
        } else {
            return Err(invalid(
                "format() widths are not supported; use %s, %I, %L or %%, optionally with a position (%1$s)",
            ));
        };
        let Some(kind) = chars.next() else {
            return Err(invalid("unterminated format() type specifier"));
        };
        if kind == '%' && position.is_none() {
            out.push('%');
            continue;
        }
        if !matches!(kind, 's' | 'I' | 'L') {
            return Err(invalid(format!(
                "unrecognized format() type specifier \"{kind}\" (use %s, %I, %L or %%; flags and widths are not supported)"
            )));
        }
        let index = position.unwrap_or(next_arg);
        next_arg = index + 1;
        let value = *args
            .get(index)
            .ok_or_else(|| invalid("too few arguments for format()"))?;
        match (kind, value) {
            ('s', Some(v)) => out.push_str(v),
            ('s', None) => {}
            ('I', Some(v)) => out.push_str(&quote_ident(v)),
            ('I', None) => {
                return Err(invalid(
                    "null values cannot be formatted as an SQL identifier",
                ));
            }
            ('L', Some(v)) => out.push_str(&quote_literal(v)),
            _ => out.push_str("NULL"),
        }
    }
    Ok(out)
}

/// `name` as an identifier: bare when it is lower-case letters, digits and underscores not
/// starting with a digit, else double-quoted.
fn quote_ident(name: &str) -> String {
    let bare = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
    if bare {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// `value` as a string literal; with a backslash, an `E''` literal, as PostgreSQL writes it.
fn quote_literal(value: &str) -> String {
    let quoted = value.replace('\'', "''");
    if value.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_as_postgresql_does() {
        let f = |t: &str, a: &[Option<&str>]| format(t, a).expect("formats");
        assert_eq!(f("Hello %s", &[Some("World")]), "Hello World");
        assert_eq!(f("%s, %s", &[Some("a"), None]), "a, ");
        assert_eq!(
            f(
                "INSERT INTO %I VALUES(%L)",
                &[Some("Foo bar"), Some("O'Reilly")]
            ),
            "INSERT INTO \"Foo bar\" VALUES('O''Reilly')"
        );
        assert_eq!(
            f("%I.%I", &[Some("pg_catalog"), Some("int4")]),
            "pg_catalog.int4"
        );
        assert_eq!(f("%L", &[None]), "NULL");
        assert_eq!(f("%L", &[Some("C:\\x")]), "E'C:\\\\x'");
        assert_eq!(
            f("%2$s %1$s %s", &[Some("a"), Some("b"), Some("c")]),
            "b a b"
        );
        assert_eq!(f("100%%", &[]), "100%");
    }

    #[test]
    fn bad_formats_are_errors() {
        for (t, a) in [
            ("%s %s", vec![Some("one")]),
            ("%", vec![]),
            ("%d", vec![Some("1")]),
            ("%10s", vec![Some("1")]),
            ("%0$s", vec![Some("1")]),
            ("%I", vec![None]),
        ] {
            assert!(format(t, &a).is_err(), "{t}");
        }
    }
}
