//! Mapping between the Arrow schemas DataFusion plans and the Delta schemas tables store.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::kernel::StructType;
use deltalake::kernel::engine::arrow_conversion::{TryIntoArrow, TryIntoKernel};

use crate::error::{Error, Result};

/// Converts a schema as DataFusion planned it into one Delta can store, and back into the
/// Arrow schema that scans of the stored table produce.
///
/// Delta stores microsecond timestamps (UTC or zone-less), plain strings and binaries, and
/// no `NULL`-typed or unsigned columns; types are mapped onto those, or rejected with a
/// message naming the column.
pub fn storable_schema(schema: &Schema) -> Result<(StructType, SchemaRef)> {
    let fields = schema
        .fields()
        .iter()
        .map(|f| {
            Ok(Field::new(
                f.name(),
                storable_type(f.name(), f.data_type())?,
                f.is_nullable(),
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    // Delta tells column names apart without case.
    let mut seen = std::collections::HashSet::new();
    for f in &fields {
        if !seen.insert(f.name().to_lowercase()) {
            return Err(Error::DuplicateColumn(format!(
                "column \"{}\" specified more than once",
                f.name()
            )));
        }
    }
    let normalized = Schema::new(fields);
    let delta: StructType = (&normalized)
        .try_into_kernel()
        .map_err(|e| Error::NotSupported(format!("column type ({e})")))?;
    let arrow = delta_to_arrow(&delta)?;
    Ok((delta, arrow))
}

/// The Arrow schema that scans of a Delta table with schema `delta` produce.
pub fn delta_to_arrow(delta: &StructType) -> Result<SchemaRef> {
    let arrow: Schema = delta
        .try_into_arrow()
        .map_err(|e| Error::corrupt("table schema", e))?;
    Ok(Arc::new(arrow))
}

fn storable_type(column: &str, dt: &DataType) -> Result<DataType> {
    use DataType::*;
    Ok(match dt {
        Boolean | Int8 | Int16 | Int32 | Int64 | Float32 | Float64 | Utf8 | Binary | Date32 => {
            dt.clone()
        }
        Decimal128(p, s) if *p <= 38 => dt.clone(),
        Float16 => Float32,
        Utf8View | LargeUtf8 => Utf8,
        BinaryView | LargeBinary | FixedSizeBinary(_) => Binary,
        Timestamp(_, tz) => Timestamp(TimeUnit::Microsecond, tz.as_ref().map(|_| Arc::from("UTC"))),
        List(inner) | LargeList(inner) | ListView(inner) | FixedSizeList(inner, _) => {
            List(Arc::new(Field::new(
                "element",
                storable_type(column, inner.data_type())?,
                true,
            )))
        }
        Null => {
            return Err(Error::InvalidArgument(format!(
                "column \"{column}\" has no type (it is NULL); cast it, e.g. NULL::text"
            )));
        }
        other => {
            return Err(Error::NotSupported(format!(
                "column \"{column}\" of type {other} in a stored table"
            )));
        }
    })
}

/// `schema` with every column nullable: what a write path declares to DataFusion, so that
/// its own NOT NULL check (an error known only by its text) passes and runbase's raises a
/// coded one ([`conform_batch`] for tables, the metrics sink for `runbase.metrics`); also
/// the schema of a `CREATE TABLE … AS`, whose columns are nullable as in PostgreSQL.
pub fn nullable(schema: &Schema) -> Schema {
    Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    )
}

/// Casts `batch` onto `schema` column by column (names and order already match).
pub fn conform_batch(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.num_columns() != schema.fields().len() {
        return Err(Error::InvalidArgument(format!(
            "expected {} columns, got {}",
            schema.fields().len(),
            batch.num_columns()
        )));
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(col, field)| {
            if !field.is_nullable() && col.logical_null_count() > 0 {
                return Err(Error::NotNullViolation(format!(
                    "null value in column \"{}\" violates not-null constraint",
                    field.name()
                )));
            }
            if col.data_type() == field.data_type() {
                Ok(col.clone())
            } else {
                cast(col, field.data_type()).map_err(|e| Error::DataFusion(e.into()))
            }
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| Error::DataFusion(e.into()))
}
