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
//! - `pg_collation_is_visible(oid)`: true, as for the other `*_is_visible`.
//! - `oidvector_type_names(oidvector)`: the names of the types an `oidvector` (`proargtypes`,
//!   kept as its text, `25 701`) lists, as `proargtypes::regtype[]::text[]` gives them
//!   (pgcli's function completion); the rewrite in `super::rewrite` calls it.
//! - `json_build_object(key, value, …)`: a JSON object as `json` text (SQLAlchemy 2.1's
//!   column query builds its identity and collation details with it).

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

/// `json_build_object(key, value, …)`: the pairs as one JSON object, in argument order,
/// as PostgreSQL builds it: keys are text and never NULL, values keep their JSON type
/// (numbers, booleans, `null`), everything else is a JSON string of its text.
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonBuildObject {
    signature: datafusion::logical_expr::Signature,
}

impl JsonBuildObject {
    fn new() -> Self {
        Self {
            signature: datafusion::logical_expr::Signature::variadic_any(Volatility::Immutable),
        }
    }
}

impl datafusion::logical_expr::ScalarUDFImpl for JsonBuildObject {
    fn name(&self) -> &str {
        "json_build_object"
    }
    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> datafusion::error::Result<DataType> {
        if !args.len().is_multiple_of(2) {
            return Err(datafusion::error::DataFusionError::Plan(
                "json_build_object: argument list must have an even number of elements".into(),
            ));
        }
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(
        &self,
        args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        use datafusion::common::ScalarValue;
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let mut out = datafusion::arrow::array::StringBuilder::with_capacity(rows, rows * 16);
        for row in 0..rows {
            let mut object = serde_json::Map::new();
            for pair in arrays.chunks(2) {
                let key = ScalarValue::try_from_array(&pair[0], row)?;
                if key.is_null() {
                    return Err(datafusion::error::DataFusionError::Execution(
                        "json_build_object: a key must not be null".into(),
                    ));
                }
                let key = match key {
                    ScalarValue::Utf8(Some(s))
                    | ScalarValue::LargeUtf8(Some(s))
                    | ScalarValue::Utf8View(Some(s)) => s,
                    other => other.to_string(),
                };
                let value = json_value(ScalarValue::try_from_array(&pair[1], row)?);
                object.insert(key, value);
            }
            out.append_value(serde_json::Value::Object(object).to_string());
        }
        let out: ArrayRef = Arc::new(out.finish());
        Ok(ColumnarValue::Array(out))
    }
}

/// One SQL value as the JSON value PostgreSQL's `to_json` gives it.
fn json_value(value: datafusion::common::ScalarValue) -> serde_json::Value {
    use datafusion::common::ScalarValue as S;
    use serde_json::Value as J;
    if value.is_null() {
        return J::Null;
    }
    match value {
        S::Boolean(Some(b)) => J::Bool(b),
        S::Int8(Some(v)) => J::from(v),
        S::Int16(Some(v)) => J::from(v),
        S::Int32(Some(v)) => J::from(v),
        S::Int64(Some(v)) => J::from(v),
        S::UInt8(Some(v)) => J::from(v),
        S::UInt16(Some(v)) => J::from(v),
        S::UInt32(Some(v)) => J::from(v),
        S::UInt64(Some(v)) => J::from(v),
        // NaN and the infinities are not JSON numbers: PostgreSQL writes them as strings.
        S::Float32(Some(v)) => float_json(f64::from(v)),
        S::Float64(Some(v)) => float_json(v),
        S::Utf8(Some(s)) | S::LargeUtf8(Some(s)) | S::Utf8View(Some(s)) => J::String(s),
        other => J::String(other.to_string()),
    }
}

fn float_json(v: f64) -> serde_json::Value {
    match serde_json::Number::from_f64(v) {
        Some(n) => serde_json::Value::Number(n),
        None if v.is_nan() => serde_json::Value::String("NaN".into()),
        None if v > 0.0 => serde_json::Value::String("Infinity".into()),
        None => serde_json::Value::String("-Infinity".into()),
    }
}

/// `oidvector_type_names(text)`: each oid of an `oidvector`'s text, named as `format_type`
/// names it (the catalog library's function, so both spell types alike).
#[derive(Debug, PartialEq, Eq, Hash)]
struct OidvectorTypeNames {
    signature: datafusion::logical_expr::Signature,
    format_type: ScalarUDF,
}

impl datafusion::logical_expr::ScalarUDFImpl for OidvectorTypeNames {
    fn name(&self) -> &str {
        "oidvector_type_names"
    }
    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::List(Arc::new(
            datafusion::arrow::datatypes::Field::new_list_field(DataType::Utf8, true),
        )))
    }
    fn invoke_with_args(
        &self,
        args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        use datafusion::arrow::array::{ListArray, OffsetBufferBuilder};
        use datafusion::arrow::datatypes::Field;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let vectors: &StringArray = as_string_array(&arrays[0])?;
        let mut oids: Vec<i32> = Vec::new();
        let mut offsets = OffsetBufferBuilder::<i32>::new(vectors.len());
        for vector in vectors.iter() {
            let before = oids.len();
            // `25 701` as an oidvector prints; the catalog library keeps `proallargtypes`
            // as `[25, 701]`.
            let elements = vector
                .unwrap_or_default()
                .split(|c: char| c.is_ascii_whitespace() || "[]{},".contains(c))
                .filter(|e| !e.is_empty());
            for oid in elements {
                oids.push(oid.parse().map_err(|_| {
                    datafusion::error::DataFusionError::Execution(format!(
                        "invalid oidvector element {oid:?}"
                    ))
                })?);
            }
            offsets.push_length(oids.len() - before);
        }
        let count = oids.len();
        let oid_array: ArrayRef = Arc::new(Int32Array::from(oids));
        let typmods: ArrayRef = Arc::new(Int32Array::new_null(count));
        let names = self
            .format_type
            .invoke_with_args(datafusion::logical_expr::ScalarFunctionArgs {
                args: vec![
                    ColumnarValue::Array(oid_array),
                    ColumnarValue::Array(typmods),
                ],
                arg_fields: vec![
                    Arc::new(Field::new("oid", DataType::Int32, true)),
                    Arc::new(Field::new("typmod", DataType::Int32, true)),
                ],
                number_rows: count,
                return_field: Arc::new(Field::new("name", DataType::Utf8, true)),
                config_options: args.config_options.clone(),
            })?
            .into_array(count)?;
        let list = ListArray::try_new(
            Arc::new(Field::new_list_field(DataType::Utf8, true)),
            offsets.finish(),
            names,
            vectors.nulls().cloned(),
        )?;
        let out: ArrayRef = Arc::new(list);
        Ok(ColumnarValue::Array(out))
    }
}

/// Registers the functions in `ctx`; `docs` answers `pg_get_function_*` for runbase's
/// own functions.
pub(crate) fn register(ctx: &SessionContext, docs: crate::functions::SharedFunctionDocs) {
    ctx.register_udf(to_regtype());
    ctx.register_udf(pg_get_expr());
    ctx.register_udf(pg_get_serial_sequence());
    ctx.register_udf(super::format::format_function());
    ctx.register_udf(ScalarUDF::new_from_impl(JsonBuildObject::new()));
    ctx.register_udf(ScalarUDF::new_from_impl(OidvectorTypeNames {
        signature: datafusion::logical_expr::Signature::exact(
            vec![DataType::Utf8],
            Volatility::Immutable,
        ),
        format_type: datafusion_pg_catalog::pg_catalog::format_type::create_format_type_udf(),
    }));
    for name in [
        "pg_function_is_visible",
        "pg_type_is_visible",
        "pg_collation_is_visible",
    ] {
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
