//! PostgreSQL functions that drivers and tools call while discovering a server, beyond
//! those datafusion-pg-catalog provides.
//!
//! - `to_regtype(name)`: the oid of a built-in type name (psycopg's `TypeInfo.fetch`, which
//!   SQLAlchemy runs on connect to look for `hstore`), NULL for any other name.
//! - `pg_function_is_visible(oid)`: true (psql's `\df`), as `pg_table_is_visible` is.

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
            let oids: Int32Array = names
                .iter()
                .map(|n| n.and_then(builtin_type_oid))
                .collect();
            let out: ArrayRef = Arc::new(oids);
            Ok(ColumnarValue::Array(out))
        }),
    )
}

fn pg_function_is_visible() -> ScalarUDF {
    create_udf(
        "pg_function_is_visible",
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

/// Registers the functions in `ctx`.
pub(crate) fn register(ctx: &SessionContext) {
    ctx.register_udf(to_regtype());
    ctx.register_udf(pg_function_is_visible());
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
