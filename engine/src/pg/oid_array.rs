//! `oid[]` typed as PostgreSQL types it.
//!
//! runbase stores oids as int4; datafusion-pg-catalog marks its oid columns with
//! `pg.oid_alias` field metadata so they reach clients as `oid`, `regtype`, …. An array
//! of oids must likewise reach clients as `oid[]` (1028), not `int4[]` (1007): asyncpg
//! decodes arrays other than `oid[]` and `text[]` only after looking their type up with a
//! query that binds `$1::oid[]` and returns `array_agg(atttypid)`, so an `int4[]` there
//! sends it into the same lookup forever.
//!
//! The mark goes on the array's element field, which is part of the array's type and so
//! survives CASE, subqueries, joins and unions:
//! - `OidArrayTypePlanner`: `x::oid[]` (any oid alias) plans as a list of marked int4;
//! - `OidArrayAgg`: `array_agg` of a marked column returns a list of marked elements.
//!
//! [`is_oid_array`] is how the server recognizes such a list to describe it as `oid[]`.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, BooleanArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::planner::TypePlanner;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, EmitTo, GroupsAccumulator,
    ReversedUDAF, Signature,
};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{ArrayElemTypeDef, DataType as SqlType, ObjectNamePart};
use datafusion_pg_catalog::pg_catalog::oid_field::{OID_ALIAS_KEY, OID_ALIAS_TYPE_NAMES};
use datafusion_pg_catalog::pg_catalog::oid_type_planner::PgOidTypePlanner;

/// Whether `data_type` is a list of oids (its elements carry an oid-alias mark).
pub fn is_oid_array(data_type: &DataType) -> bool {
    match data_type {
        DataType::List(element) | DataType::LargeList(element) => {
            element.data_type() == &DataType::Int32
                && element.metadata().contains_key(OID_ALIAS_KEY)
        }
        _ => false,
    }
}

/// A list type of int4 elements marked as `kind` (`oid`, `regtype`, …).
fn oid_list(kind: &str) -> DataType {
    let element = Field::new_list_field(DataType::Int32, true).with_metadata(
        [(OID_ALIAS_KEY.to_string(), kind.to_string())]
            .into_iter()
            .collect(),
    );
    DataType::List(Arc::new(element))
}

/// The oid alias an SQL type names (`oid`, `regclass`, `pg_catalog.regtype`), if any.
fn oid_alias(sql_type: &SqlType) -> Option<String> {
    match sql_type {
        SqlType::Regclass => Some("regclass".into()),
        SqlType::Custom(name, args) if args.is_empty() => match name.0.last()? {
            ObjectNamePart::Identifier(ident) => {
                let kind = ident.value.to_lowercase();
                OID_ALIAS_TYPE_NAMES
                    .contains(&kind.as_str())
                    .then_some(kind)
            }
            _ => None,
        },
        _ => None,
    }
}

/// datafusion-pg-catalog's type planner, plus arrays of oid aliases as oid lists.
#[derive(Debug, Default)]
pub(crate) struct OidArrayTypePlanner {
    inner: PgOidTypePlanner,
}

impl TypePlanner for OidArrayTypePlanner {
    fn plan_type_field(&self, sql_type: &SqlType) -> Result<Option<FieldRef>> {
        if let SqlType::Array(
            ArrayElemTypeDef::SquareBracket(element, None)
            | ArrayElemTypeDef::AngleBracket(element),
        ) = sql_type
            && let Some(kind) = oid_alias(element)
        {
            return Ok(Some(Arc::new(Field::new("", oid_list(&kind), true))));
        }
        self.inner.plan_type_field(sql_type)
    }
}

/// DataFusion's `array_agg`, whose list keeps the oid-alias mark of its argument.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct OidArrayAgg {
    inner: AggregateUDF,
}

impl OidArrayAgg {
    fn wrap(inner: AggregateUDF) -> Self {
        Self { inner }
    }

    /// The marked list type `array_agg` of `argument` returns, if `argument` is marked.
    fn marked_list(argument: &Field) -> Option<DataType> {
        let kind = argument.metadata().get(OID_ALIAS_KEY)?;
        (argument.data_type() == &DataType::Int32).then(|| oid_list(kind))
    }

    fn marked_result(args: &AccumulatorArgs) -> Option<DataType> {
        let argument = args.expr_fields.first()?;
        Self::marked_list(argument)
    }
}

impl AggregateUDFImpl for OidArrayAgg {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field(&self, arg_fields: &[FieldRef]) -> Result<FieldRef> {
        let field = self.inner.return_field(arg_fields)?;
        match arg_fields.first().and_then(|a| Self::marked_list(a)) {
            Some(list) => Ok(Arc::new(field.as_ref().clone().with_data_type(list))),
            None => Ok(field),
        }
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let marked = Self::marked_result(&args);
        let inner = self.inner.accumulator(args)?;
        Ok(match marked {
            Some(list) => Box::new(Relabel { inner, list }),
            None => inner,
        })
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        self.inner.state_fields(args)
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        self.inner.groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        let marked = Self::marked_result(&args);
        let inner = self.inner.create_groups_accumulator(args)?;
        Ok(match marked {
            Some(list) => Box::new(RelabelGroups { inner, list }),
            None => inner,
        })
    }

    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let marked = Self::marked_result(&args);
        let inner = self.inner.create_sliding_accumulator(args)?;
        Ok(match marked {
            Some(list) => Box::new(Relabel { inner, list }),
            None => inner,
        })
    }

    fn with_beneficial_ordering(
        self: Arc<Self>,
        beneficial_ordering: bool,
    ) -> Result<Option<Arc<dyn AggregateUDFImpl>>> {
        Ok(self
            .inner
            .clone()
            .with_beneficial_ordering(beneficial_ordering)?
            .map(|inner| Arc::new(Self::wrap(inner)) as Arc<dyn AggregateUDFImpl>))
    }

    fn order_sensitivity(&self) -> datafusion::logical_expr::utils::AggregateOrderSensitivity {
        self.inner.order_sensitivity()
    }

    fn reverse_expr(&self) -> ReversedUDAF {
        match self.inner.reverse_udf() {
            ReversedUDAF::Reversed(udaf) => ReversedUDAF::Reversed(Arc::new(
                AggregateUDF::new_from_impl(Self::wrap(udaf.as_ref().clone())),
            )),
            other => other,
        }
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn is_nullable(&self) -> bool {
        self.inner.is_nullable()
    }

    fn default_value(&self, data_type: &DataType) -> Result<ScalarValue> {
        self.inner.default_value(data_type)
    }

    fn supports_null_handling_clause(&self) -> bool {
        self.inner.supports_null_handling_clause()
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

/// An accumulator whose lists come out with the marked element field.
#[derive(Debug)]
struct Relabel {
    inner: Box<dyn Accumulator>,
    list: DataType,
}

impl Accumulator for Relabel {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.inner.update_batch(values)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        // Not `ScalarValue::cast_to`, which rebuilds a list scalar with a plain element.
        match self.inner.evaluate()? {
            ScalarValue::List(list) => {
                let relabeled = cast(list.as_ref(), &self.list)?;
                Ok(ScalarValue::List(Arc::new(
                    relabeled.as_list::<i32>().clone(),
                )))
            }
            other => other.cast_to(&self.list),
        }
    }

    fn size(&self) -> usize {
        self.inner.size()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.inner.state()
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.inner.merge_batch(states)
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.inner.retract_batch(values)
    }

    fn supports_retract_batch(&self) -> bool {
        self.inner.supports_retract_batch()
    }
}

/// A groups accumulator whose lists come out with the marked element field.
struct RelabelGroups {
    inner: Box<dyn GroupsAccumulator>,
    list: DataType,
}

impl GroupsAccumulator for RelabelGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.inner
            .update_batch(values, group_indices, opt_filter, total_num_groups)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let lists = self.inner.evaluate(emit_to)?;
        Ok(cast(&lists, &self.list)?)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        self.inner.state(emit_to)
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.inner
            .merge_batch(values, group_indices, total_num_groups)
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        self.inner.convert_to_state(values, opt_filter)
    }

    fn size(&self) -> usize {
        self.inner.size()
    }
}

/// Installs the type planner and `array_agg` in `ctx` (after datafusion-pg-catalog's
/// set-up, whose type planner this one replaces and extends).
pub(crate) fn register(ctx: &SessionContext) {
    let state = ctx.state_ref();
    let existing = state.read().clone();
    let array_agg = existing
        .aggregate_functions()
        .get("array_agg")
        .map(|f| f.as_ref().clone());
    let new_state = datafusion::execution::SessionStateBuilder::new_from_existing(existing)
        .with_type_planner(Arc::new(OidArrayTypePlanner::default()))
        .build();
    *state.write() = new_state;
    if let Some(array_agg) = array_agg {
        ctx.register_udaf(AggregateUDF::new_from_impl(OidArrayAgg::wrap(array_agg)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{SessionConfig, SessionContext};

    fn context(partitions: usize) -> Result<SessionContext> {
        let ctx = SessionContext::new_with_config(
            SessionConfig::new().with_target_partitions(partitions),
        );
        datafusion_pg_catalog::pg_catalog::setup_pg_catalog(
            &ctx,
            "datafusion",
            datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider,
        )
        .map_err(|e| *e)?;
        register(&ctx);
        Ok(ctx)
    }

    /// The type of the first column of `sql`'s result, after running it.
    async fn result_type(ctx: &SessionContext, sql: &str) -> Result<DataType> {
        let batches = ctx.sql(sql).await?.collect().await?;
        let batch = batches.first().expect("a batch");
        Ok(batch.schema().field(0).data_type().clone())
    }

    #[tokio::test]
    async fn array_agg_of_an_oid_column_is_an_oid_array_in_every_plan_shape() -> Result<()> {
        for partitions in [1, 2] {
            let ctx = context(partitions)?;
            for sql in [
                "SELECT array_agg(atttypid) FROM pg_catalog.pg_attribute",
                "SELECT array_agg(atttypid ORDER BY attnum) FROM pg_catalog.pg_attribute",
                "SELECT array_agg(DISTINCT atttypid) FROM pg_catalog.pg_attribute",
                "SELECT a FROM (SELECT attrelid, array_agg(atttypid) AS a \
                 FROM pg_catalog.pg_attribute GROUP BY attrelid)",
                "SELECT CASE WHEN t.typtype = 'b' THEN (SELECT array_agg(a.atttypid) \
                 FROM pg_catalog.pg_attribute a WHERE a.attrelid = t.typrelid) ELSE NULL END \
                 FROM pg_catalog.pg_type t",
            ] {
                let ty = result_type(&ctx, sql).await?;
                assert!(is_oid_array(&ty), "{sql} ({partitions} partitions): {ty}");
            }
        }
        Ok(())
    }

    #[tokio::test]
    async fn other_arrays_stay_as_they_were() -> Result<()> {
        let ctx = context(2)?;
        for sql in [
            "SELECT array_agg(x) FROM (VALUES (1), (2)) AS t(x)",
            "SELECT ARRAY[1, 2]::int[]",
            "SELECT array_agg(attname) FROM pg_catalog.pg_attribute",
        ] {
            let ty = result_type(&ctx, sql).await?;
            assert!(!is_oid_array(&ty), "{sql}: {ty}");
            assert!(matches!(ty, DataType::List(_)), "{sql}: {ty}");
        }
        Ok(())
    }

    #[tokio::test]
    async fn an_oid_array_cast_is_typed_and_compared() -> Result<()> {
        let ctx = context(2)?;
        for sql in [
            "SELECT $1::oid[]",
            "SELECT $1::pg_catalog.oid[]",
            "SELECT ARRAY[1, 2]::regtype[]",
        ] {
            let planned = ctx.sql(sql).await?;
            let ty = planned.schema().field(0).data_type();
            assert!(is_oid_array(ty), "{sql}: {ty}");
        }
        let values = ctx
            .sql("SELECT count(*) FROM pg_catalog.pg_type WHERE oid = any(ARRAY[16, 25, 99999]::oid[])")
            .await?
            .collect()
            .await?;
        let counts = values[0]
            .column(0)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        assert_eq!(counts.value(0), 2);
        Ok(())
    }
}
