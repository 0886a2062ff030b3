//! runbase's own SQL functions as the catalog shows them: rows of `pg_proc` in `public`
//! (so psql's `\df` lists them, and tools that browse functions find them), and the text
//! of `pg_get_function_result` / `pg_get_function_arguments` for them.
//!
//! The engine documents its functions (`start_run`, `log_metric`, `table_at`, …) and
//! crates on top document theirs ([`crate::Database::document_function`]: `train`,
//! `predict`, …); each gets an oid from [`FIRST_OID`] on, by name.

use std::sync::{Arc, RwLock};

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Int16Array, Int32Array, RecordBatch, StringArray, new_null_array,
};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::error::Result as DfResult;

/// The first oid of runbase's functions (above PostgreSQL's built-in ones).
pub const FIRST_OID: i32 = 900_000;

/// One function as `\df` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionDoc {
    /// Its name.
    pub name: String,
    /// Arguments: (name, PostgreSQL type name); trailing ones may be optional.
    pub args: Vec<(String, String)>,
    /// How many arguments are required.
    pub required: usize,
    /// The result type (`bigint`, `text`, …), or `TABLE(col type, …)` for a table function.
    pub result: String,
}

impl FunctionDoc {
    /// A function taking `args` (the first `required` required) and returning `result`.
    pub fn new(name: &str, args: &[(&str, &str)], required: usize, result: &str) -> Self {
        Self {
            name: name.to_string(),
            args: args
                .iter()
                .map(|(n, t)| (n.to_string(), t.to_string()))
                .collect(),
            required,
            result: result.to_string(),
        }
    }

    /// `pg_get_function_arguments`: `run_id text, key text, step bigint DEFAULT NULL`.
    pub fn arguments(&self) -> String {
        self.args
            .iter()
            .enumerate()
            .map(|(i, (n, t))| {
                if i < self.required {
                    format!("{n} {t}")
                } else {
                    format!("{n} {t} DEFAULT NULL")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `pg_get_function_identity_arguments`: the arguments without defaults.
    pub fn identity_arguments(&self) -> String {
        self.args
            .iter()
            .map(|(n, t)| format!("{n} {t}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn returns_set(&self) -> bool {
        self.result.starts_with("TABLE")
    }

    /// `pg_proc.prorettype`: the result's type oid (`record` for a table function).
    fn result_oid(&self) -> i32 {
        if self.returns_set() {
            RECORD_OID
        } else {
            type_oid(&self.result)
        }
    }

    /// `pg_proc.proargtypes`: the arguments' type oids, space-separated as `oidvector`
    /// prints.
    fn argument_oids(&self) -> String {
        self.args
            .iter()
            .map(|(_, t)| type_oid(t).to_string())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// `record`'s oid.
const RECORD_OID: i32 = 2249;

/// The oid of the PostgreSQL type `name` as functions are documented (`anyelement`, 2283,
/// for a type without one).
fn type_oid(name: &str) -> i32 {
    match name {
        "boolean" => 16,
        "bytea" => 17,
        "bigint" => 20,
        "smallint" => 21,
        "integer" => 23,
        "text" => 25,
        "json" => 114,
        "real" => 700,
        "double precision" => 701,
        "text[]" => 1009,
        "bigint[]" => 1016,
        "double precision[]" => 1022,
        "date" => 1082,
        "timestamp without time zone" => 1114,
        "timestamp with time zone" => 1184,
        "void" => 2278,
        "jsonb" => 3802,
        _ => 2283,
    }
}

/// The PostgreSQL name of an Arrow type, for documenting functions.
pub fn pg_type_name(t: &DataType) -> &'static str {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text",
        DataType::Int64 => "bigint",
        DataType::Int32 => "integer",
        DataType::Float64 => "double precision",
        DataType::Float32 => "real",
        DataType::Boolean => "boolean",
        DataType::Binary | DataType::LargeBinary => "bytea",
        DataType::Timestamp(_, Some(_)) => "timestamp with time zone",
        DataType::Timestamp(_, None) => "timestamp without time zone",
        _ => "anyelement",
    }
}

/// The documented functions.
#[derive(Debug, Default)]
pub struct FunctionDocs {
    list: RwLock<Vec<FunctionDoc>>,
}

impl FunctionDocs {
    /// Adds (or replaces, by name and arguments) a function.
    pub fn add(&self, doc: FunctionDoc) {
        let mut list = self.list.write().unwrap_or_else(|p| p.into_inner());
        list.retain(|d| !(d.name == doc.name && d.args == doc.args));
        list.push(doc);
        list.sort_by(|a, b| a.name.cmp(&b.name).then(a.args.len().cmp(&b.args.len())));
    }

    /// Every function with its oid, by name.
    pub fn all(&self) -> Vec<(i32, FunctionDoc)> {
        let list = self.list.read().unwrap_or_else(|p| p.into_inner());
        list.iter()
            .enumerate()
            .map(|(i, d)| (FIRST_OID + i32::try_from(i).unwrap_or(0), d.clone()))
            .collect()
    }

    /// The function with oid `oid`.
    pub fn by_oid(&self, oid: i64) -> Option<FunctionDoc> {
        let index = usize::try_from(oid.checked_sub(i64::from(FIRST_OID))?).ok()?;
        let list = self.list.read().unwrap_or_else(|p| p.into_inner());
        list.get(index).cloned()
    }

    /// Rows of `pg_proc` (in `schema`, the library's) for the functions, in namespace
    /// `namespace`: oid, name, kind, argument count and return type set; other columns
    /// NULL where they may be, else their type's default.
    pub fn pg_proc_rows(&self, schema: &SchemaRef, namespace: i32) -> DfResult<RecordBatch> {
        let docs = self.all();
        let n = docs.len();
        let columns = schema
            .fields()
            .iter()
            .map(|field| -> DfResult<ArrayRef> {
                let known: Option<ArrayRef> = match (field.name().as_str(), field.data_type()) {
                    ("oid", DataType::Int32) => Some(Arc::new(Int32Array::from_iter_values(
                        docs.iter().map(|(o, _)| *o),
                    ))),
                    ("proname", DataType::Utf8) => Some(Arc::new(StringArray::from_iter_values(
                        docs.iter().map(|(_, d)| d.name.as_str()),
                    ))),
                    ("pronamespace", DataType::Int32) => Some(Arc::new(
                        Int32Array::from_iter_values(docs.iter().map(|_| namespace)),
                    )),
                    ("prokind", DataType::Utf8) => Some(Arc::new(StringArray::from_iter_values(
                        docs.iter().map(|_| "f"),
                    ))),
                    ("proretset", DataType::Boolean) => Some(Arc::new(BooleanArray::from(
                        docs.iter()
                            .map(|(_, d)| d.returns_set())
                            .collect::<Vec<_>>(),
                    ))),
                    ("pronargs", DataType::Int16) => Some(Arc::new(Int16Array::from_iter_values(
                        docs.iter()
                            .map(|(_, d)| i16::try_from(d.args.len()).unwrap_or(i16::MAX)),
                    ))),
                    ("prorettype", DataType::Int32) => Some(Arc::new(
                        Int32Array::from_iter_values(docs.iter().map(|(_, d)| d.result_oid())),
                    )),
                    ("proargtypes", DataType::Utf8) => Some(Arc::new(
                        StringArray::from_iter_values(docs.iter().map(|(_, d)| d.argument_oids())),
                    )),
                    ("pronargdefaults", DataType::Int16) => Some(Arc::new(
                        Int16Array::from_iter_values(docs.iter().map(|(_, d)| {
                            i16::try_from(d.args.len().saturating_sub(d.required))
                                .unwrap_or(i16::MAX)
                        })),
                    )),
                    ("provolatile", DataType::Utf8) => Some(Arc::new(
                        StringArray::from_iter_values(docs.iter().map(|_| "v")),
                    )),
                    _ => None,
                };
                match known {
                    Some(a) => Ok(a),
                    None if field.is_nullable() => Ok(new_null_array(field.data_type(), n)),
                    None => ScalarValue::new_default(field.data_type())?.to_array_of_size(n),
                }
            })
            .collect::<DfResult<Vec<_>>>()?;
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }
}

/// A shared list.
pub type SharedFunctionDocs = Arc<FunctionDocs>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_read_as_postgres_prints_them() {
        let d = FunctionDoc::new(
            "log_metric",
            &[
                ("run_id", "text"),
                ("key", "text"),
                ("value", "double precision"),
                ("step", "bigint"),
            ],
            3,
            "bigint",
        );
        assert_eq!(
            d.arguments(),
            "run_id text, key text, value double precision, step bigint DEFAULT NULL"
        );
        assert_eq!(
            d.identity_arguments(),
            "run_id text, key text, value double precision, step bigint"
        );
        let docs = FunctionDocs::default();
        docs.add(d.clone());
        docs.add(FunctionDoc::new(
            "end_run",
            &[("run_id", "text")],
            1,
            "text",
        ));
        let all = docs.all();
        assert_eq!(all[0].1.name, "end_run");
        assert_eq!(docs.by_oid(i64::from(FIRST_OID) + 1), Some(d));
        assert_eq!(docs.by_oid(5), None);
        assert_eq!(all[1].1.result_oid(), 20);
        assert_eq!(all[1].1.argument_oids(), "25 25 701 20");
    }
}
