//! From engine output to pgwire responses: result-set column descriptions, rows encoded
//! (with PostgreSQL's spelling of floats), and command-completion tags.

use std::sync::Arc;

use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch, into_pg_type};
use datafusion::arrow::datatypes::DataType;
use futures::{StreamExt, stream};
use pgwire::api::Type;
use pgwire::api::portal::Format;
use pgwire::api::results::{FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use pgwire::error::PgWireResult;
use pgwire::messages::data::DataRow;
use runbase_engine::error::ErrorCode;
use runbase_engine::pg::oid_array::is_oid_array;
use runbase_engine::{CommandTag, QueryOutput};

use super::connection::pg_err;
use super::error::PgError;

/// The wire description of a result's columns: arrow-pg's, with two corrections. A list of
/// oids is `oid[]` (see [`runbase_engine::pg::oid_array`]). And an oid mark is only believed
/// on an int4: DataFusion's cast keeps its source's field metadata, so `typelem::text`
/// arrives as text still marked `oid`, which arrow-pg would describe as `oid` while the
/// rows carry text.
pub(super) fn pg_fields(
    schema: &datafusion::arrow::datatypes::Schema,
    format: &Format,
) -> PgWireResult<Vec<FieldInfo>> {
    let mut fields = arrow_schema_to_pg_fields(schema, format, None).map_err(unsupported_type)?;
    for (i, field) in schema.fields().iter().enumerate() {
        let data_type = field.data_type();
        let corrected = if is_oid_array(data_type) {
            Type::OID_ARRAY
        } else if data_type != &DataType::Int32
            && field
                .metadata()
                .contains_key(arrow_pg::datatypes::PG_OID_ALIAS_KEY)
        {
            into_pg_type(data_type).map_err(unsupported_type)?
        } else {
            continue;
        };
        fields[i] = FieldInfo::new(
            field.name().clone(),
            None,
            None,
            corrected,
            format.format_for(i),
        );
    }
    Ok(fields)
}

/// arrow-pg's refusal of a column type it has no PostgreSQL type for (an array of arrays):
/// XX000 there, but a limit of what runbase sends, not a bug, so 0A000 as PostgreSQL says of
/// what it does not support.
fn unsupported_type(e: pgwire::error::PgWireError) -> pgwire::error::PgWireError {
    match e {
        pgwire::error::PgWireError::UserError(info)
            if info.code == "XX000" && info.message.starts_with("Unsupported") =>
        {
            super::error::PgError::new(
                ErrorCode::Unsupported,
                format!(
                    "{} (a result column of this type cannot be sent to PostgreSQL clients)",
                    info.message
                ),
            )
            .into()
        }
        other => other,
    }
}

/// Turns one statement's output into a pgwire response.
pub(super) fn to_response(output: QueryOutput, format: &Format) -> PgWireResult<Response> {
    match output {
        QueryOutput::Command(tag) => Ok(command_response(&tag)),
        QueryOutput::Rows(stream) => {
            let fields = Arc::new(pg_fields(stream.schema().as_ref(), format)?);
            let row_fields = fields.clone();
            let rows = stream
                .map(
                    move |batch| -> Box<dyn Iterator<Item = PgWireResult<DataRow>> + Send + Sync> {
                        match batch {
                            Ok(batch) => {
                                let infinite: Vec<usize> =
                                    super::text::infinite_float_columns(&batch)
                                        .into_iter()
                                        .filter(|i| row_fields[*i].format() == FieldFormat::Text)
                                        .collect();
                                let rows = encode_recordbatch(row_fields.clone(), batch);
                                if infinite.is_empty() {
                                    rows
                                } else {
                                    Box::new(rows.map(move |r| {
                                        r.map(|row| super::text::respell_infinity(row, &infinite))
                                    }))
                                }
                            }
                            Err(e) => Box::new(std::iter::once(Err(pg_err(&e.into())))),
                        }
                    },
                )
                .flat_map(stream::iter);
            Ok(Response::Query(QueryResponse::new(fields, rows)))
        }
        QueryOutput::CopyIn(_) | QueryOutput::CopyOut(..) => Err(PgError::new(
            ErrorCode::Internal,
            "COPY output reached the result-set encoder",
        )
        .into()),
    }
}

fn command_response(tag: &CommandTag) -> Response {
    match tag.command {
        "BEGIN" => Response::TransactionStart(Tag::new("BEGIN")),
        "COMMIT" | "ROLLBACK" => Response::TransactionEnd(Tag::new(tag.command)),
        "SAVEPOINT" | "RELEASE" | "DEALLOCATE" => Response::Execution(Tag::new(tag.command)),
        "" => Response::EmptyQuery,
        command => {
            let mut t = Tag::new(command);
            if command == "INSERT" {
                t = t.with_oid(0);
            }
            if let Some(rows) = tag.rows {
                t = t.with_rows(usize::try_from(rows).unwrap_or(usize::MAX));
            }
            Response::Execution(t)
        }
    }
}
