//! Mapping engine errors to PostgreSQL errors. This is the one place SQLSTATE codes are
//! chosen; everything the server sends goes through [`to_pg_error`].

use datafusion::arrow::error::ArrowError;
use datafusion::common::SchemaError;
use datafusion::error::DataFusionError;
use pgwire::error::{ErrorInfo, PgWireError};
use runbase_engine::Error;

/// A PostgreSQL error: SQLSTATE and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    /// The five-character SQLSTATE.
    pub code: &'static str,
    /// The message shown to the user.
    pub message: String,
}

impl PgError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<PgError> for PgWireError {
    fn from(e: PgError) -> Self {
        PgWireError::UserError(Box::new(e.into()))
    }
}

impl From<PgError> for ErrorInfo {
    fn from(e: PgError) -> Self {
        ErrorInfo::new("ERROR".to_string(), e.code.to_string(), e.message)
    }
}

/// The SQLSTATE and message for an engine error.
pub fn to_pg_error(err: &Error) -> PgError {
    match err {
        Error::TableNotFound(_) => PgError::new("42P01", err.to_string()),
        Error::TableExists(_) => PgError::new("42P07", err.to_string()),
        Error::SchemaNotFound(_) => PgError::new("3F000", err.to_string()),
        Error::ReadOnly(_) => PgError::new("42501", err.to_string()),
        Error::NotSupported(_) => PgError::new("0A000", err.to_string()),
        Error::InvalidArgument(_) => PgError::new("22023", err.to_string()),
        Error::InvalidText(_) => PgError::new("22P02", err.to_string()),
        Error::ValueTooLong(_) => PgError::new("22001", err.to_string()),
        Error::BadCopyData(_) => PgError::new("22P04", err.to_string()),
        Error::InvalidBinary(_) => PgError::new("22P03", err.to_string()),
        Error::NullValue(_) => PgError::new("22004", err.to_string()),
        Error::UniqueViolation(_) => PgError::new("23505", err.to_string()),
        Error::DuplicateObject(_) => PgError::new("42710", err.to_string()),
        Error::Syntax(_) => PgError::new("42601", err.to_string()),
        Error::PermissionDenied(_) => PgError::new("42501", err.to_string()),
        Error::ObjectNotFound(_) => PgError::new("42704", err.to_string()),
        Error::InvalidState(_) => PgError::new("55000", err.to_string()),
        Error::ColumnNotFound(_) => PgError::new("42703", err.to_string()),
        Error::DatatypeMismatch(_) => PgError::new("42804", err.to_string()),
        Error::Canceled(_) => PgError::new("57014", err.to_string()),
        Error::Internal(_) => PgError::new("XX000", err.to_string()),
        Error::Corrupt { .. } => PgError::new("XX001", err.to_string()),
        Error::RocksDb(_) | Error::ObjectStore(_) | Error::Io(_) => {
            PgError::new("58030", err.to_string())
        }
        Error::Delta(e) => PgError::new(delta_code(e), err.to_string()),
        Error::DataFusion(e) => datafusion_error(e),
    }
}

fn delta_code(e: &deltalake::DeltaTableError) -> &'static str {
    use deltalake::DeltaTableError as D;
    match e {
        D::ObjectStore { .. } | D::Io { .. } => "58030",
        D::InvalidVersion(_) => "22023",
        D::Arrow { source } => arrow_code(source),
        D::SchemaMismatch { .. } => "42804",
        _ => "XX000",
    }
}

fn datafusion_error(e: &DataFusionError) -> PgError {
    match e {
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            datafusion_error(inner)
        }
        DataFusionError::Shared(inner) => datafusion_error(inner),
        DataFusionError::External(inner) => {
            if let Some(engine) = inner.downcast_ref::<Error>() {
                to_pg_error(engine)
            } else if let Some(df) = inner.downcast_ref::<DataFusionError>() {
                datafusion_error(df)
            } else if let Some(arrow) = inner.downcast_ref::<ArrowError>() {
                PgError::new(arrow_code(arrow), arrow.to_string())
            } else if let Some(delta) = inner.downcast_ref::<deltalake::DeltaTableError>() {
                PgError::new(delta_code(delta), delta.to_string())
            } else {
                PgError::new("XX000", inner.to_string())
            }
        }
        DataFusionError::SQL(parse, _) => PgError::new("42601", parse.to_string()),
        DataFusionError::SchemaError(schema, _) => match schema.as_ref() {
            SchemaError::FieldNotFound { field, .. } => {
                PgError::new("42703", format!("column \"{}\" does not exist", field.name))
            }
            SchemaError::AmbiguousReference { .. } => PgError::new("42702", e.message()),
            SchemaError::DuplicateQualifiedField { .. }
            | SchemaError::DuplicateUnqualifiedField { .. } => PgError::new("42701", e.message()),
        },
        DataFusionError::Plan(msg) => plan_error(msg),
        DataFusionError::NotImplemented(msg) => PgError::new("0A000", msg.clone()),
        DataFusionError::ArrowError(arrow, _) => PgError::new(arrow_code(arrow), e.message()),
        DataFusionError::Configuration(msg) => PgError::new("22023", msg.clone()),
        DataFusionError::ResourcesExhausted(msg) => PgError::new("53200", msg.clone()),
        DataFusionError::Execution(msg) => PgError::new(execution_code(msg), msg.clone()),
        DataFusionError::ParquetError(_)
        | DataFusionError::ObjectStore(_)
        | DataFusionError::IoError(_) => PgError::new("58030", e.message()),
        _ => PgError::new("XX000", e.message()),
    }
}

fn plan_error(msg: &str) -> PgError {
    let lower = msg.to_lowercase();
    if let Some(name) = missing_table(msg) {
        PgError::new("42P01", format!("relation \"{name}\" does not exist"))
    } else if lower.starts_with("invalid function")
        || lower.contains("no function matches")
        || lower.contains("unknown function")
    {
        PgError::new("42883", msg)
    } else if lower.contains("unsupported sql type") {
        PgError::new("42704", msg)
    } else if lower.contains("cannot be cast") || lower.contains("cannot cast") {
        PgError::new("42846", msg)
    } else {
        PgError::new("42000", msg)
    }
}

/// The table name in DataFusion's "table 'db.schema.name' not found".
fn missing_table(msg: &str) -> Option<&str> {
    let rest = msg.strip_prefix("table '")?;
    let (qualified, tail) = rest.split_once('\'')?;
    if !tail.trim_start().starts_with("not found") {
        return None;
    }
    Some(qualified.rsplit('.').next().unwrap_or(qualified))
}

fn arrow_code(e: &ArrowError) -> &'static str {
    match e {
        ArrowError::CastError(_) | ArrowError::ParseError(_) => "22P02",
        ArrowError::DivideByZero => "22012",
        ArrowError::ArithmeticOverflow(_) => "22003",
        ArrowError::InvalidArgumentError(m) if m.contains("non-nullable") => "23502",
        ArrowError::InvalidArgumentError(_) => "22023",
        ArrowError::ExternalError(_) | ArrowError::IoError(..) => "58030",
        _ => "XX000",
    }
}

fn execution_code(msg: &str) -> &'static str {
    let lower = msg.to_lowercase();
    if lower.contains("non-nullable") || lower.contains("null value") {
        "23502"
    } else if lower.contains("cast error")
        || lower.contains("cannot cast")
        || lower.contains("invalid input syntax")
    {
        "22P02"
    } else if lower.contains("divide by zero") || lower.contains("division by zero") {
        "22012"
    } else if lower.contains("overflow") {
        "22003"
    } else if lower.contains("cancelled") {
        "57014"
    } else {
        "XX000"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_errors_are_classified() {
        assert_eq!(
            plan_error("table 'runbase.public.nope' not found").code,
            "42P01"
        );
        assert_eq!(
            plan_error("table 'runbase.public.nope' not found").message,
            "relation \"nope\" does not exist"
        );
        assert_eq!(
            plan_error("Invalid function 'foo'.\nDid you mean 'floor'?").code,
            "42883"
        );
        assert_eq!(plan_error("something else").code, "42000");
    }

    #[test]
    fn engine_errors_map_to_their_codes() {
        assert_eq!(to_pg_error(&Error::TableExists("t".into())).code, "42P07");
        assert_eq!(to_pg_error(&Error::TableNotFound("t".into())).code, "42P01");
        let wrapped = Error::DataFusion(DataFusionError::External(Box::new(Error::NotSupported(
            "x".into(),
        ))));
        assert_eq!(to_pg_error(&wrapped).code, "0A000");
        let cast = Error::DataFusion(DataFusionError::ArrowError(
            Box::new(ArrowError::CastError(
                "Cannot cast string 'abc' to value of Int32 type".into(),
            )),
            None,
        ));
        assert_eq!(to_pg_error(&cast).code, "22P02");
    }
}
