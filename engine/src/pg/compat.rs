//! PostgreSQL functions that drivers and tools call while discovering a server, beyond
//! those datafusion-pg-catalog provides.
//!
//! - `to_regtype(name)`: the oid of a built-in type name (psycopg's `TypeInfo.fetch`, which
//!   SQLAlchemy runs on connect to look for `hstore`), NULL for any other name.
//! - `pg_get_expr(expr, relation)`: its first argument (NULL stays NULL).
//! - `pg_function_is_visible(oid)`, `pg_type_is_visible(oid)`: true (psql's `\df`,
//!   SQLAlchemy's type listing), as `pg_table_is_visible` is.
//! - `pg_get_function_result(oid)`, `pg_get_function_arguments(oid)`,
//!   `pg_get_function_identity_arguments(oid)`: for runbase's own functions (psql's
//!   `\df`), NULL for others.
//! - `pg_get_serial_sequence(table, column)`: NULL — runbase has no sequences
//!   (SQLAlchemy 2.1's `inspect().get_columns()` asks for each column).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Int32Array, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::cast::as_string_array;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use datafusion::prelude::SessionContext;

/// The oid of a built-in type by any of its usual names.
fn builtin_type_oid(name: &str) -> Option<i32> {
    let name = name.trim().trim_matches('"').to_ascii_lowercase();
    let name = name.strip_prefix("pg_catalog.").unwrap_or(&name);
    Some(match name {
        "bool" | "boolean" => 16,
        "bytea" => 17,
        "char" => 18,
        "name" => 19,
        "int8" | "bigint" => 20,
        "int2" | "smallint" => 21,
        "int4" | "integer" | "int" => 23,
        "text" => 25,
        "oid" => 26,
        "json" => 114,
        "float4" | "real" => 700,
        "float8" | "double precision" => 701,
        "varchar" | "character varying" => 1043,
        "date" => 1082,
        "time" | "time without time zone" => 1083,
        "timestamp" | "timestamp without time zone" => 1114,
        "timestamptz" | "timestamp with time zone" => 1184,
        "interval" => 1186,
        "numeric" | "decimal" => 1700,
        "uuid" => 2950,
        "jsonb" => 3802,
        "bool[]" | "_bool" | "boolean[]" => 1000,
        "bytea[]" | "_bytea" => 1001,
        "int2[]" | "_int2" | "smallint[]" => 1005,
        "int4[]" | "_int4" | "integer[]" => 1007,
        "text[]" | "_text" => 1009,
        "int8[]" | "_int8" | "bigint[]" => 1016,
        "float4[]" | "_float4" | "real[]" => 1021,
        "float8[]" | "_float8" | "double precision[]" => 1022,
        "oid[]" | "_oid" => 1028,
        "varchar[]" | "_varchar" => 1015,
        "timestamp[]" | "_timestamp" => 1115,
        "date[]" | "_date" => 1182,
        "timestamptz[]" | "_timestamptz" => 1185,
        "numeric[]" | "_numeric" => 1231,
        _ => return None,
    })
}

fn to_regtype() -> ScalarUDF {
    create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Stable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let names: &StringArray = as_string_array(&arrays[0])?;
            let oids: Int32Array = names.iter().map(|n| n.and_then(builtin_type_oid)).collect();
            let out: ArrayRef = Arc::new(oids);
            Ok(ColumnarValue::Array(out))
        }),
    )
}

fn always_visible(name: &str) -> ScalarUDF {
    create_udf(
        name,
        vec![DataType::Int32],
        DataType::Boolean,
        Volatility::Stable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let visible: BooleanArray = (0..arrays[0].len()).map(|_| Some(true)).collect();
            let out: ArrayRef = Arc::new(visible);
            Ok(ColumnarValue::Array(out))
        }),
    )
}

/// `pg_get_serial_sequence(table, column)`: NULL, the answer for a column without a
/// sequence (runbase has none).
fn pg_get_serial_sequence() -> ScalarUDF {
    create_udf(
        "pg_get_serial_sequence",
        vec![DataType::Utf8, DataType::Utf8],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let none: StringArray = (0..arrays[0].len()).map(|_| None::<&str>).collect();
            let out: ArrayRef = Arc::new(none);
            Ok(ColumnarValue::Array(out))
        }),
    )
}

/// `pg_get_expr(expr, relation [, pretty])`: the expression's text as stored (NULL for
/// NULL, as in PostgreSQL; runbase keeps no column defaults, so there is nothing to
/// decompile). Takes any argument types, as drivers pass oids as int4 or int8.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PgGetExpr {
    signature: datafusion::logical_expr::Signature,
}

impl datafusion::logical_expr::ScalarUDFImpl for PgGetExpr {
    fn name(&self) -> &str {
        "pg_get_expr"
    }
    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(
        &self,
        args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let first = args.args.into_iter().next().ok_or_else(|| {
            datafusion::error::DataFusionError::Plan("pg_get_expr takes 2 or 3 arguments".into())
        })?;
        first.cast_to(&DataType::Utf8, None)
    }
}

fn pg_get_expr() -> ScalarUDF {
    ScalarUDF::new_from_impl(PgGetExpr {
        signature: datafusion::logical_expr::Signature::one_of(
            vec![
                datafusion::logical_expr::TypeSignature::Any(2),
                datafusion::logical_expr::TypeSignature::Any(3),
            ],
            Volatility::Stable,
        ),
    })
}

/// Registers the functions in `ctx`; `docs` answers `pg_get_function_*` for runbase's
/// own functions.
pub(crate) fn register(ctx: &SessionContext, docs: crate::functions::SharedFunctionDocs) {
    ctx.register_udf(to_regtype());
    ctx.register_udf(pg_get_expr());
    ctx.register_udf(pg_get_serial_sequence());
    ctx.register_udf(super::format::format_function());
    for name in ["pg_function_is_visible", "pg_type_is_visible"] {
        ctx.register_udf(always_visible(name));
    }
    ctx.register_udf(function_text("pg_get_function_result", docs.clone(), |d| {
        d.result.clone()
    }));
    ctx.register_udf(function_text(
        "pg_get_function_arguments",
        docs.clone(),
        |d| d.arguments(),
    ));
    ctx.register_udf(function_text(
        "pg_get_function_identity_arguments",
        docs,
        |d| d.identity_arguments(),
    ));
}

/// `name(oid)`: `text` of runbase's function with that oid, NULL for any other oid.
fn function_text(
    name: &str,
    docs: crate::functions::SharedFunctionDocs,
    text: fn(&crate::functions::FunctionDoc) -> String,
) -> ScalarUDF {
    create_udf(
        name,
        vec![DataType::Int64],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let oids = arrays[0]
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Int64Array>()
                .ok_or_else(|| {
                    datafusion::error::DataFusionError::Internal("oid is not int8".into())
                })?;
            let out: StringArray = oids
                .iter()
                .map(|oid| oid.and_then(|o| docs.by_oid(o)).map(|d| text(&d)))
                .collect();
            let out: ArrayRef = Arc::new(out);
            Ok(ColumnarValue::Array(out))
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::builtin_type_oid;

    #[test]
    fn names_of_builtin_types() {
        assert_eq!(builtin_type_oid("hstore"), None);
        assert_eq!(builtin_type_oid("Double Precision"), Some(701));
        assert_eq!(builtin_type_oid("pg_catalog.timestamptz"), Some(1184));
        assert_eq!(builtin_type_oid("_float8"), Some(1022));
    }
}
