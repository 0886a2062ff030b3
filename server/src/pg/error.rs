//! Mapping engine errors to PostgreSQL errors. This is the one place SQLSTATE codes are
//! chosen: [`sqlstate`] maps the engine's protocol-neutral [`ErrorCode`]; everything the
//! server sends goes through it.

use pgwire::error::{ErrorInfo, PgWireError};
use runbase_engine::Error;
use runbase_engine::error::ErrorCode;

/// The SQLSTATE of a NOTICE (`successful_completion`).
pub const SQLSTATE_NOTICE: &str = "00000";
/// The SQLSTATE of a WARNING (`warning`).
pub const SQLSTATE_WARNING: &str = "01000";

/// A PostgreSQL error: SQLSTATE and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    /// The five-character SQLSTATE.
    pub code: &'static str,
    /// The message shown to the user.
    pub message: String,
}

impl PgError {
    /// The error for `code` with `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code: sqlstate(code),
            message: message.into(),
        }
    }

    /// The FATAL `ErrorResponse` fields of this error, for start-up failures.
    pub fn fatal(self) -> ErrorInfo {
        ErrorInfo::new("FATAL".to_string(), self.code.to_string(), self.message)
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
    PgError::new(err.code(), err.client_message())
}

/// The SQLSTATE of an error code.
pub fn sqlstate(code: ErrorCode) -> &'static str {
    use ErrorCode as C;
    match code {
        C::TableNotFound => "42P01",
        C::SchemaNotFound => "3F000",
        C::ColumnNotFound => "42703",
        C::FunctionNotFound => "42883",
        C::ObjectNotFound => "42704",
        C::TableAlreadyExists => "42P07",
        C::WrongObjectType => "42809",
        C::ObjectAlreadyExists => "42710",
        C::UniqueViolation => "23505",
        C::DuplicateColumn => "42701",
        C::Syntax => "42601",
        C::InvalidStatement => "42000",
        C::AmbiguousColumn => "42702",
        C::InvalidArgument => "22023",
        C::InvalidText => "22P02",
        C::InvalidBinary => "22P03",
        C::ValueTooLong => "22001",
        C::TooComplex => "54001",
        C::BadCopyData => "22P04",
        C::NullValue => "22004",
        C::NotNullViolation => "23502",
        C::DivisionByZero => "22012",
        C::NumericOverflow => "22003",
        C::DatatypeMismatch => "42804",
        C::CardinalityViolation => "21000",
        C::InvalidRegex => "2201B",
        C::PermissionDenied => "42501",
        C::AuthenticationFailed => "28P01",
        C::AuthorizationRejected => "28000",
        C::Unsupported => "0A000",
        C::InvalidState => "55000",
        C::ProtocolViolation => "08P01",
        C::Canceled | C::Timeout => "57014",
        C::Conflict => "40001",
        C::ResourceExhausted => "53200",
        C::TooManyConnections => "53300",
        C::DiskFull => "53100",
        C::Io => "58030",
        C::Corrupt => "XX001",
        C::Internal => "XX000",
        // `ErrorCode` is non-exhaustive: a code added to the engine before it is mapped
        // here is reported as an internal error, never silently as success.
        _ => "XX000",
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::error::ArrowError;
    use datafusion::error::DataFusionError;

    use super::*;

    #[test]
    fn engine_errors_map_to_their_codes() {
        assert_eq!(to_pg_error(&Error::TableExists("t".into())).code, "42P07");
        let missing = to_pg_error(&Error::TableNotFound("t".into()));
        assert_eq!(missing.code, "42P01");
        assert_eq!(missing.message, "relation \"t\" does not exist");
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
        assert_eq!(to_pg_error(&Error::Canceled("stop".into())).code, "57014");
        assert_eq!(to_pg_error(&Error::Timeout("late".into())).code, "57014");
    }

    #[test]
    fn context_layers_are_not_in_the_message() {
        let inner = DataFusionError::External(Box::new(Error::ObjectNotFound(
            "run \"x\" does not exist".into(),
        )));
        let e = Error::DataFusion(DataFusionError::Context("planning".into(), Box::new(inner)));
        let pg = to_pg_error(&e);
        assert_eq!(pg.code, "42704");
        assert_eq!(pg.message, "run \"x\" does not exist");
    }
}
