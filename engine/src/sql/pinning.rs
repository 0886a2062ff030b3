//! Plans that read every user table at a fixed version (what TRAIN records and
//! `reproduce()` replays).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::Statement as AstStatement;

use super::*;
use crate::error::{Error, Result};

/// The user table a plan node scans, and the version it reads (`None`: the latest).
pub(super) fn user_table_scan(
    node: &LogicalPlan,
) -> Option<(Arc<crate::storage::StoredTable>, Option<i64>)> {
    let LogicalPlan::TableScan(scan) = node else {
        return None;
    };
    let provider = datafusion::datasource::source_as_provider(&scan.source).ok()?;
    let user = (provider.as_ref() as &dyn std::any::Any)
        .downcast_ref::<crate::storage::provider::UserTableProvider>()?;
    Some((user.stored().clone(), user.version()))
}

impl Session {
    /// Plans `sql`, which must be one query, so that it reads every user table at a fixed
    /// version: the one `pins` names, else the table's latest version now. Running the plan
    /// later, or again, reads the same data.
    pub async fn plan_pinned(&self, sql: &str, pins: &HashMap<String, i64>) -> Result<PinnedQuery> {
        use datafusion::common::tree_node::Transformed;
        use datafusion::datasource::provider_as_source;
        let mut statements = self.parse_ast(sql)?;
        let statement = match (statements.pop(), statements.is_empty()) {
            (Some(s @ AstStatement::Query(_)), true) => s,
            _ => {
                return Err(Error::InvalidArgument(
                    "the query must be exactly one SELECT statement".into(),
                ));
            }
        };
        let Prepared::Plan(plan) = self.prepare_ast(statement).await? else {
            return Err(Error::InvalidArgument(
                "the query must be exactly one SELECT statement".into(),
            ));
        };
        // Resolve the versions first (async), then rewrite the plan (sync).
        let mut versions: HashMap<String, i64> = HashMap::new();
        let mut tables = Vec::new();
        plan.apply_with_subqueries(|node| {
            tables.extend(user_table_scan(node));
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        })?;
        let mut inputs = Vec::new();
        for (table, fixed) in &tables {
            let name = table.entry.name.clone();
            let version = match (fixed, pins.get(&name)) {
                (Some(v), _) | (None, Some(v)) => *v,
                (None, None) => match versions.get(&name) {
                    Some(v) => *v,
                    None => table
                        .latest()
                        .await?
                        .version()
                        .map_or(0, |v| i64::try_from(v).unwrap_or(i64::MAX)),
                },
            };
            if fixed.is_none() {
                versions.insert(name.clone(), version);
            }
            inputs.push((name, version));
        }
        inputs.sort();
        inputs.dedup();
        let plan = plan
            .transform_up_with_subqueries(|node| {
                if let Some((table, None)) = user_table_scan(&node)
                    && let Some(v) = versions.get(&table.entry.name)
                    && let LogicalPlan::TableScan(scan) = &node
                {
                    let mut scan = scan.clone();
                    scan.source = provider_as_source(Arc::new(
                        crate::storage::provider::UserTableProvider::at_version(table, *v),
                    ));
                    return Ok(Transformed::yes(LogicalPlan::TableScan(scan)));
                }
                Ok(Transformed::no(node))
            })?
            .data;
        Ok(PinnedQuery { plan, inputs })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use datafusion::arrow::array::RecordBatch;
    use futures::TryStreamExt;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_query_over_a_view_pins_the_tables_under_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = crate::Database::open_dir(dir.path()).await.expect("open");
        let session = db.session();
        session
            .sql(
                "CREATE TABLE t (x bigint); INSERT INTO t VALUES (1), (2); \
                 CREATE VIEW v AS SELECT x FROM t WHERE x > 0",
            )
            .await
            .expect("setup");
        let pinned = session
            .plan_pinned("SELECT count(*) FROM v", &HashMap::new())
            .await
            .expect("pinned");
        assert_eq!(pinned.inputs, vec![("t".to_string(), 1)]);
        session
            .sql("INSERT INTO t VALUES (3)")
            .await
            .expect("insert");
        let batches: Vec<RecordBatch> = session
            .run_query(pinned.plan)
            .await
            .expect("run")
            .try_collect()
            .await
            .expect("rows");
        let count = datafusion::arrow::array::cast::AsArray::as_primitive::<
            datafusion::arrow::datatypes::Int64Type,
        >(batches[0].column(0))
        .value(0);
        assert_eq!(count, 2, "the version pinned, not the row added since");
    }
}
