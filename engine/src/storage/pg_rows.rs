//! What `pg_type`, `pg_proc` and `pg_operator` list of the catalog library's static rows:
//! only what runbase has.
//!
//! The library ships PostgreSQL's own rows: 600 types, 3,300 functions, 800 operators. Most
//! are not runbase's (`box`, `tsvector`, `pg_blocking_pids`, `|>>`), so a client that
//! reads the catalog to learn what it may use (sqlsmith; ORMs and BI tools probing for
//! features) would learn wrong. Kept, read once at open:
//! - types: those a `CAST` plans to, the arrays of those, and the pseudo types runbase's
//!   own functions are documented with (`record`, `anyelement`, `void`) and that clients
//!   look up by name (`anyarray`, `internal`, `trigger`: pgcli leaves out functions whose
//!   result is `'trigger'::regtype`, which is NULL, and so every function, without it);
//! - functions: those DataFusion has by that name, over kept types;
//! - operators: those DataFusion runs, over kept types;
//! - all of it in `pg_catalog` only: PostgreSQL's `information_schema` types and
//!   functions (namespace 13283) have no `pg_namespace` row here.

use std::collections::HashSet;

use datafusion::arrow::array::{Array, BooleanArray, Int32Array, RecordBatch, StringArray};
use datafusion::error::Result as DfResult;
use datafusion::execution::SessionState;

/// `pg_catalog`'s namespace oid.
const PG_CATALOG: i32 = 11;

/// Pseudo types runbase documents its functions with (`record`, `void`, `anyelement`),
/// and those every PostgreSQL has that clients look up by name (`anyarray`, `internal`,
/// `trigger`).
const PSEUDO_TYPES: [i32; 6] = [2249, 2277, 2278, 2279, 2281, 2283];

/// Binary operators DataFusion runs as PostgreSQL does (comparison, arithmetic,
/// concatenation, pattern matching, bitwise, array containment).
const OPERATORS: [&str; 23] = [
    "=", "<>", "<", ">", "<=", ">=", "+", "-", "*", "/", "%", "||", "~", "~*", "!~", "!~*", "~~",
    "!~~", "~~*", "!~~*", "&", "|", "@>",
];

fn int32<'a>(batch: &'a RecordBatch, name: &str) -> Option<&'a Int32Array> {
    batch.column_by_name(name)?.as_any().downcast_ref()
}

fn text<'a>(batch: &'a RecordBatch, name: &str) -> Option<&'a StringArray> {
    batch.column_by_name(name)?.as_any().downcast_ref()
}

fn value(a: &Int32Array, i: usize) -> Option<i32> {
    (!a.is_null(i)).then(|| a.value(i))
}

/// The rows of `batches` for which `keep` holds.
fn filter_rows(
    batches: Vec<RecordBatch>,
    keep: impl Fn(&RecordBatch, usize) -> bool,
) -> DfResult<Vec<RecordBatch>> {
    batches
        .into_iter()
        .map(|batch| {
            let mask: BooleanArray = (0..batch.num_rows())
                .map(|i| Some(keep(&batch, i)))
                .collect();
            Ok(datafusion::arrow::compute::filter_record_batch(
                &batch, &mask,
            )?)
        })
        .collect()
}

/// The rows of `batches` whose namespace `column` is `pg_catalog`.
fn in_pg_catalog(batches: Vec<RecordBatch>, column: &str) -> DfResult<Vec<RecordBatch>> {
    filter_rows(batches, |batch, i| {
        int32(batch, column).and_then(|a| value(a, i)) == Some(PG_CATALOG)
    })
}

/// Whether `state` plans a cast to the type named `name`, spelled as `quote_ident` spells
/// it (how clients write a name they read from `pg_type`).
async fn castable(state: &SessionState, name: &str) -> bool {
    let simple = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    let spelled = if simple {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    };
    state
        .create_logical_plan(&format!("SELECT CAST(NULL AS {spelled})"))
        .await
        .is_ok()
}

/// `pg_type`'s rows runbase has, and their oids.
pub(super) async fn types(
    state: &SessionState,
    batches: Vec<RecordBatch>,
) -> DfResult<(Vec<RecordBatch>, HashSet<i32>)> {
    let batches = in_pg_catalog(batches, "typnamespace")?;
    let mut kept: HashSet<i32> = PSEUDO_TYPES.into_iter().collect();
    let mut arrays = Vec::new();
    for batch in &batches {
        let (Some(oids), Some(names), Some(elems)) = (
            int32(batch, "oid"),
            text(batch, "typname"),
            int32(batch, "typelem"),
        ) else {
            continue;
        };
        for i in 0..batch.num_rows() {
            let (Some(oid), false) = (value(oids, i), names.is_null(i)) else {
                continue;
            };
            let name = names.value(i);
            match value(elems, i) {
                Some(elem) if elem != 0 && name.starts_with('_') => arrays.push((oid, elem)),
                _ => {
                    if castable(state, name).await {
                        kept.insert(oid);
                    }
                }
            }
        }
    }
    for (oid, elem) in arrays {
        if kept.contains(&elem) {
            kept.insert(oid);
        }
    }
    let rows = filter_rows(batches, |batch, i| {
        int32(batch, "oid")
            .and_then(|a| value(a, i))
            .is_some_and(|oid| kept.contains(&oid))
    })?;
    Ok((rows, kept))
}

/// `pg_proc`'s rows of functions DataFusion has under that name, over `types`.
pub(super) fn functions(
    state: &SessionState,
    batches: Vec<RecordBatch>,
    types: &HashSet<i32>,
) -> DfResult<Vec<RecordBatch>> {
    let names: HashSet<String> = state
        .scalar_functions()
        .keys()
        .chain(state.aggregate_functions().keys())
        .chain(state.window_functions().keys())
        .map(|n| n.to_ascii_lowercase())
        .collect();
    let batches = in_pg_catalog(batches, "pronamespace")?;
    filter_rows(batches, |batch, i| {
        let (Some(name), Some(result), Some(args)) = (
            text(batch, "proname"),
            int32(batch, "prorettype"),
            text(batch, "proargtypes"),
        ) else {
            return false;
        };
        !name.is_null(i)
            && names.contains(&name.value(i).to_ascii_lowercase())
            && value(result, i).is_some_and(|r| types.contains(&r))
            && (args.is_null(i)
                || args
                    .value(i)
                    .split_whitespace()
                    .all(|a| a.parse().is_ok_and(|oid: i32| types.contains(&oid))))
    })
}

/// `pg_operator`'s rows of [`OPERATORS`] over `types` (0: a prefix operator's missing side).
pub(super) fn operators(
    batches: Vec<RecordBatch>,
    types: &HashSet<i32>,
) -> DfResult<Vec<RecordBatch>> {
    let typed = |a: Option<&Int32Array>, i: usize, none_ok: bool| {
        a.and_then(|a| value(a, i))
            .is_some_and(|t| types.contains(&t) || (none_ok && t == 0))
    };
    filter_rows(batches, |batch, i| {
        text(batch, "oprname")
            .filter(|n| !n.is_null(i))
            .is_some_and(|n| OPERATORS.contains(&n.value(i)))
            && typed(int32(batch, "oprleft"), i, true)
            && typed(int32(batch, "oprright"), i, true)
            && typed(int32(batch, "oprresult"), i, false)
    })
}
