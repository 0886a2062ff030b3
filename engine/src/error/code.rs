//! Protocol-neutral error codes.
//!
//! Every [`Error`](super::Error) has an [`ErrorCode`]: what went wrong, in terms a client
//! can act on, without naming a protocol. Each front end maps codes in one place — the
//! PostgreSQL front end to SQLSTATE, the HTTP front end to a status (through
//! [`ErrorCode::class`]). Codes are chosen from the error's type and fields, never from
//! its message text.

use std::fmt;

use datafusion::arrow::error::ArrowError;
use datafusion::common::SchemaError;
use datafusion::error::DataFusionError;

/// What went wrong, finely enough for a precise SQLSTATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    // ---- not found ----
    /// A table (relation) that does not exist.
    TableNotFound,
    /// A schema that does not exist or cannot hold user tables.
    SchemaNotFound,
    /// A column that does not exist.
    ColumnNotFound,
    /// A function that does not exist, or does not take the arguments given.
    FunctionNotFound,
    /// Another named object (run, experiment, artifact, user, type) that does not exist.
    ObjectNotFound,

    // ---- already exists ----
    /// `CREATE TABLE` of a name that is taken.
    TableAlreadyExists,
    /// Another object (a user, …) that already exists.
    ObjectAlreadyExists,
    /// A write that conflicts with a stored unique value.
    UniqueViolation,
    /// Two columns of one name.
    DuplicateColumn,

    // ---- invalid input ----
    /// A statement that does not parse.
    Syntax,
    /// A statement that parses but cannot be planned for a reason without its own code.
    InvalidStatement,
    /// A column reference that matches more than one column.
    AmbiguousColumn,
    /// An argument with the right type but an unusable value.
    InvalidArgument,
    /// A value that does not parse as its type.
    InvalidText,
    /// A value in binary form that is not one of its type.
    InvalidBinary,
    /// A value longer than allowed.
    ValueTooLong,
    /// A statement nested deeper than runbase plans (54001).
    TooComplex,
    /// `COPY` data of the wrong shape.
    BadCopyData,
    /// A NULL where a value is required (an argument).
    NullValue,
    /// A NULL written into a `NOT NULL` column.
    NotNullViolation,
    /// Division by zero.
    DivisionByZero,
    /// A number out of its type's range.
    NumericOverflow,
    /// A value or column of the wrong type for its use.
    DatatypeMismatch,
    /// A subquery used as a value returned more than one row.
    CardinalityViolation,
    /// A regular expression that does not compile.
    InvalidRegex,
    /// An object of another kind than the statement takes (`DROP VIEW` of a table).
    WrongObjectType,

    // ---- refused ----
    /// The user may not do this (or the object is read-only).
    PermissionDenied,
    /// Authentication failed (wrong password, unknown user).
    AuthenticationFailed,
    /// The client is not allowed to connect this way (no TLS, …).
    AuthorizationRejected,
    /// A well-formed request for something runbase does not do.
    Unsupported,
    /// An object in the wrong state for the operation (an ended run, a closed database).
    InvalidState,
    /// The client broke the protocol.
    ProtocolViolation,

    // ---- stopped ----
    /// Cancelled by the client, or its connection closed.
    Canceled,
    /// Stopped by a time limit (`statement_timeout`).
    Timeout,
    /// A concurrent change won; retrying may succeed.
    Conflict,
    /// Out of memory (a query past its memory limit, …).
    ResourceExhausted,
    /// The server has as many clients as it allows.
    TooManyConnections,
    /// The disk (or the volume of the data directory) is full.
    DiskFull,

    // ---- failures ----
    /// Storage (RocksDB, the object store, the local disk) failed.
    Io,
    /// Stored data that cannot be read back.
    Corrupt,
    /// A bug, or a library failing for reasons that are not the input's.
    Internal,
}

/// The coarse class of an [`ErrorCode`]: what an HTTP status (or a retry policy) needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Something named does not exist (HTTP 404).
    NotFound,
    /// Something to be created exists (HTTP 409).
    AlreadyExists,
    /// The request is malformed or its values unusable (HTTP 400).
    InvalidInput,
    /// The caller is not who they say (HTTP 401).
    Unauthenticated,
    /// The caller may not do this (HTTP 403).
    PermissionDenied,
    /// Not implemented (HTTP 501).
    Unsupported,
    /// The object is in the wrong state (HTTP 409).
    InvalidState,
    /// Cancelled by the caller (HTTP 499, nginx's "client closed request").
    Canceled,
    /// Ran out of time (HTTP 504).
    Timeout,
    /// Lost a race with a concurrent change; retry (HTTP 409).
    Conflict,
    /// Out of a resource; retry later (HTTP 503).
    ResourceExhausted,
    /// Storage failed (HTTP 503).
    Io,
    /// A bug or corruption (HTTP 500).
    Internal,
}

impl ErrorClass {
    /// The class's name in `snake_case` (the `result` label of the statement counters).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::NotFound => "not_found",
            ErrorClass::AlreadyExists => "already_exists",
            ErrorClass::InvalidInput => "invalid_input",
            ErrorClass::Unauthenticated => "unauthenticated",
            ErrorClass::PermissionDenied => "permission_denied",
            ErrorClass::Unsupported => "unsupported",
            ErrorClass::InvalidState => "invalid_state",
            ErrorClass::Canceled => "canceled",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Conflict => "conflict",
            ErrorClass::ResourceExhausted => "resource_exhausted",
            ErrorClass::Io => "io",
            ErrorClass::Internal => "internal",
        }
    }
}

impl ErrorCode {
    /// The code's class.
    pub fn class(self) -> ErrorClass {
        use ErrorClass as C;
        use ErrorCode::*;
        match self {
            TableNotFound | SchemaNotFound | ColumnNotFound | FunctionNotFound | ObjectNotFound => {
                C::NotFound
            }
            TableAlreadyExists | ObjectAlreadyExists | UniqueViolation | DuplicateColumn => {
                C::AlreadyExists
            }
            Syntax | InvalidStatement | AmbiguousColumn | InvalidArgument | InvalidText
            | InvalidBinary | ValueTooLong | TooComplex | BadCopyData | NullValue
            | NotNullViolation | DivisionByZero | NumericOverflow | DatatypeMismatch
            | CardinalityViolation | InvalidRegex | WrongObjectType | ProtocolViolation => {
                C::InvalidInput
            }
            AuthenticationFailed => C::Unauthenticated,
            PermissionDenied | AuthorizationRejected => C::PermissionDenied,
            Unsupported => C::Unsupported,
            InvalidState => C::InvalidState,
            Canceled => C::Canceled,
            Timeout => C::Timeout,
            Conflict => C::Conflict,
            ResourceExhausted | TooManyConnections | DiskFull => C::ResourceExhausted,
            Io => C::Io,
            Corrupt | Internal => C::Internal,
        }
    }

    /// The code's name in `snake_case`, for logs and JSON error bodies.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            TableNotFound => "table_not_found",
            SchemaNotFound => "schema_not_found",
            ColumnNotFound => "column_not_found",
            FunctionNotFound => "function_not_found",
            ObjectNotFound => "object_not_found",
            TableAlreadyExists => "table_already_exists",
            ObjectAlreadyExists => "object_already_exists",
            UniqueViolation => "unique_violation",
            DuplicateColumn => "duplicate_column",
            Syntax => "syntax",
            InvalidStatement => "invalid_statement",
            AmbiguousColumn => "ambiguous_column",
            InvalidArgument => "invalid_argument",
            InvalidText => "invalid_text",
            InvalidBinary => "invalid_binary",
            ValueTooLong => "value_too_long",
            TooComplex => "statement_too_complex",
            BadCopyData => "bad_copy_data",
            NullValue => "null_value",
            NotNullViolation => "not_null_violation",
            DivisionByZero => "division_by_zero",
            NumericOverflow => "numeric_overflow",
            DatatypeMismatch => "datatype_mismatch",
            CardinalityViolation => "cardinality_violation",
            InvalidRegex => "invalid_regular_expression",
            WrongObjectType => "wrong_object_type",
            PermissionDenied => "permission_denied",
            AuthenticationFailed => "authentication_failed",
            AuthorizationRejected => "authorization_rejected",
            Unsupported => "unsupported",
            InvalidState => "invalid_state",
            ProtocolViolation => "protocol_violation",
            Canceled => "canceled",
            Timeout => "timeout",
            Conflict => "conflict",
            ResourceExhausted => "resource_exhausted",
            TooManyConnections => "too_many_connections",
            DiskFull => "disk_full",
            Io => "io",
            Corrupt => "corrupt",
            Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The code of a DataFusion error, from its variant (and, for wrapped errors, the type of
/// what it wraps). Plan errors that DataFusion only describes in text are classified by
/// the session before they get here (see `sql::diagnose`), so a bare `Plan` is just an
/// invalid statement.
pub(crate) fn datafusion_code(e: &DataFusionError) -> ErrorCode {
    match e {
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            datafusion_code(inner)
        }
        DataFusionError::Shared(inner) => datafusion_code(inner),
        DataFusionError::Collection(errors) => {
            errors.first().map_or(ErrorCode::Internal, datafusion_code)
        }
        DataFusionError::External(inner) => external_code(inner.as_ref()),
        DataFusionError::SQL(..) => ErrorCode::Syntax,
        DataFusionError::SchemaError(schema, _) => match schema.as_ref() {
            SchemaError::FieldNotFound { .. } => ErrorCode::ColumnNotFound,
            SchemaError::AmbiguousReference { .. } => ErrorCode::AmbiguousColumn,
            SchemaError::DuplicateQualifiedField { .. }
            | SchemaError::DuplicateUnqualifiedField { .. } => ErrorCode::DuplicateColumn,
        },
        DataFusionError::Plan(_) => ErrorCode::InvalidStatement,
        DataFusionError::NotImplemented(_) => ErrorCode::Unsupported,
        DataFusionError::ArrowError(arrow, _) => arrow_code(arrow),
        DataFusionError::Configuration(_) => ErrorCode::InvalidArgument,
        // DataFusion's own definition: "an error happens during execution due to a
        // malformed input, for example the user passed invalid arguments to a function"
        // (`sqrt(-1)`, `substr(s, 1, -1)`, `date_trunc('fortnight', …)`); its bugs are
        // `Internal`.
        DataFusionError::Execution(msg)
            if msg.starts_with("Scalar subquery returned more than one row") =>
        {
            ErrorCode::CardinalityViolation
        }
        DataFusionError::Execution(msg) if is_regex_error(msg) => ErrorCode::InvalidRegex,
        DataFusionError::Execution(_) => ErrorCode::InvalidArgument,
        // DataFusion re-checks argument types after planning and calls a mismatch found
        // there internal; to the user it is a function with no such signature, as at
        // planning time.
        DataFusionError::Internal(msg) if msg.contains("failed to match any signature") => {
            ErrorCode::FunctionNotFound
        }
        // A window frame DataFusion does not run over this type (RANGE over bytea).
        DataFusionError::Internal(msg)
            if msg.starts_with("Cannot run range queries on datatype") =>
        {
            ErrorCode::Unsupported
        }
        DataFusionError::ResourcesExhausted(_) => ErrorCode::ResourceExhausted,
        DataFusionError::ParquetError(_)
        | DataFusionError::ObjectStore(_)
        | DataFusionError::IoError(_) => ErrorCode::Io,
        _ => ErrorCode::Internal,
    }
}

/// The message for a client of a DataFusion error: what the innermost error says, without
/// DataFusion's "Error during planning:"-style prefixes.
pub(crate) fn client_message(e: &DataFusionError) -> String {
    match e {
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            client_message(inner)
        }
        DataFusionError::Shared(inner) => client_message(inner),
        DataFusionError::External(inner) => {
            if let Some(df) = inner.downcast_ref::<DataFusionError>() {
                client_message(df)
            } else if let Some(ours) = inner.downcast_ref::<super::Error>() {
                ours.client_message()
            } else if let Some(delta) = inner.downcast_ref::<deltalake::DeltaTableError>() {
                super::delta_message(delta)
            } else {
                inner.to_string()
            }
        }
        DataFusionError::SQL(parse, _) => parse.to_string(),
        DataFusionError::SchemaError(schema, _) => match schema.as_ref() {
            SchemaError::FieldNotFound { field, .. } => {
                format!("column \"{}\" does not exist", field.name)
            }
            _ => e.message().into_owned(),
        },
        DataFusionError::Plan(msg)
        | DataFusionError::NotImplemented(msg)
        | DataFusionError::Configuration(msg)
        | DataFusionError::ResourcesExhausted(msg)
        | DataFusionError::Execution(msg) => msg.clone(),
        _ => e.message().into_owned(),
    }
}

/// The code of an error DataFusion carries as `External`.
pub(crate) fn external_code(inner: &(dyn std::error::Error + Send + Sync + 'static)) -> ErrorCode {
    if let Some(engine) = inner.downcast_ref::<super::Error>() {
        engine.code()
    } else if let Some(df) = inner.downcast_ref::<DataFusionError>() {
        datafusion_code(df)
    } else if let Some(arrow) = inner.downcast_ref::<ArrowError>() {
        arrow_code(arrow)
    } else if let Some(delta) = inner.downcast_ref::<deltalake::DeltaTableError>() {
        delta_code(delta)
    } else if let Some(coded) = inner.downcast_ref::<CodedError>() {
        coded.code
    } else if is_regex_error(&inner.to_string()) {
        // The regex crate's own error (a pattern given to `~` that does not compile).
        ErrorCode::InvalidRegex
    } else {
        ErrorCode::Internal
    }
}

/// Whether `message` is a regular expression's compile error, as the regex crate and
/// arrow's regexp kernels word it.
fn is_regex_error(message: &str) -> bool {
    message.starts_with("regex parse error")
        || message.starts_with("Regular expression did not compile")
        || message.starts_with("Compiled regex exceeds size limit")
}

/// The code of an Arrow error.
pub(crate) fn arrow_code(e: &ArrowError) -> ErrorCode {
    match e {
        ArrowError::CastError(_) | ArrowError::ParseError(_) => ErrorCode::InvalidText,
        ArrowError::DivideByZero => ErrorCode::DivisionByZero,
        ArrowError::ArithmeticOverflow(_) => ErrorCode::NumericOverflow,
        ArrowError::ComputeError(msg) if is_regex_error(msg) => ErrorCode::InvalidRegex,
        ArrowError::InvalidArgumentError(_) | ArrowError::ComputeError(_) => {
            ErrorCode::InvalidArgument
        }
        ArrowError::ExternalError(inner) => external_code(inner.as_ref()),
        ArrowError::IoError(..) => ErrorCode::Io,
        _ => ErrorCode::Internal,
    }
}

/// The code of a Delta Lake error.
pub(crate) fn delta_code(e: &deltalake::DeltaTableError) -> ErrorCode {
    use deltalake::DeltaTableError as D;
    match e {
        D::ObjectStore { source } => object_store_code(source),
        // The kernel names the store's error without making it the source.
        D::KernelError(delta_kernel::Error::ObjectStore(source)) => object_store_code(source),
        D::Io { .. } => ErrorCode::Io,
        D::InvalidVersion(_) => ErrorCode::InvalidArgument,
        // MERGE's conditions are written into the commit as SQL text; deltalake cannot
        // spell some (subqueries, EXISTS): a limit of MERGE, not a bug.
        D::Generic(msg) if msg.contains("Unable to convert expression to string") => {
            ErrorCode::Unsupported
        }
        D::Arrow { source } => arrow_code(source),
        D::SchemaMismatch { .. } => ErrorCode::DatatypeMismatch,
        D::VersionAlreadyExists(_) => ErrorCode::Conflict,
        // deltalake's write-time validation of the rows (MERGE's inserts, …): runbase's
        // tables declare no CHECK constraints or invariants, so what fails is NOT NULL.
        D::InvalidData { .. } => ErrorCode::NotNullViolation,
        // A data file that failed to upload surfaces as a Parquet error wrapping the
        // store's.
        D::Parquet { source } => storage_code_in(source).unwrap_or(ErrorCode::Internal),
        D::Transaction { source } => {
            use deltalake::kernel::transaction::TransactionError as T;
            match source {
                T::VersionAlreadyExists(_) | T::CommitConflict(_) | T::MaxCommitAttempts(_) => {
                    ErrorCode::Conflict
                }
                T::ObjectStore { source } => object_store_code(source),
                other => storage_code_in(other).unwrap_or(ErrorCode::Internal),
            }
        }
        other => storage_code_in(other).unwrap_or(ErrorCode::Internal),
    }
}

/// The code of the first storage failure (object store or local I/O) in `e`'s chain of
/// sources, if any: what a library wrapped in errors of its own.
fn storage_code_in(e: &(dyn std::error::Error + 'static)) -> Option<ErrorCode> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(store) = err.downcast_ref::<object_store::Error>() {
            return Some(object_store_code(store));
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            // An object store error carried through `AsyncWrite` (a failed upload).
            match io.get_ref() {
                Some(inner) => {
                    current = Some(inner);
                    continue;
                }
                None => return Some(ErrorCode::Io),
            }
        }
        current = err.source();
    }
    None
}

/// The object store error somewhere in `e`'s chain of sources.
pub(crate) fn store_error_in<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a object_store::Error> {
    let mut current = e.source();
    while let Some(err) = current {
        if let Some(store) = err.downcast_ref::<object_store::Error>() {
            return Some(store);
        }
        current = match err.downcast_ref::<std::io::Error>() {
            Some(io) => match io.get_ref() {
                Some(inner) => Some(inner),
                None => err.source(),
            },
            None => err.source(),
        };
    }
    None
}

/// The code of an object store error (S3's 403 or 404, a lost conditional PUT, …).
pub(crate) fn object_store_code(e: &object_store::Error) -> ErrorCode {
    use object_store::Error as O;
    match e {
        O::NotFound { .. } => ErrorCode::ObjectNotFound,
        O::PermissionDenied { .. } | O::Unauthenticated { .. } => ErrorCode::PermissionDenied,
        O::AlreadyExists { .. } | O::Precondition { .. } => ErrorCode::Conflict,
        O::NotSupported { .. } | O::NotImplemented { .. } => ErrorCode::Unsupported,
        _ => ErrorCode::Io,
    }
}

/// An error a crate on top of the engine (or a front end) raises with a code of its own
/// choosing, for conditions that are not engine errors (a bad start-up packet, …).
#[derive(Debug)]
pub struct CodedError {
    /// Its code.
    pub code: ErrorCode,
    /// The message for the client.
    pub message: String,
}

impl CodedError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for CodedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CodedError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_errors_keep_their_code() {
        let engine =
            DataFusionError::External(Box::new(super::super::Error::TableNotFound("t".into())));
        assert_eq!(datafusion_code(&engine), ErrorCode::TableNotFound);
        let context = DataFusionError::Context("while planning".into(), Box::new(engine));
        assert_eq!(datafusion_code(&context), ErrorCode::TableNotFound);
        let cast = DataFusionError::ArrowError(
            Box::new(ArrowError::CastError("Cannot cast string 'abc'".into())),
            None,
        );
        assert_eq!(datafusion_code(&cast), ErrorCode::InvalidText);
        assert_eq!(
            datafusion_code(&DataFusionError::Plan("anything".into())),
            ErrorCode::InvalidStatement
        );
    }

    #[test]
    fn every_code_has_a_class_and_a_name() {
        for code in [
            ErrorCode::TableNotFound,
            ErrorCode::Canceled,
            ErrorCode::Timeout,
            ErrorCode::Conflict,
            ErrorCode::Internal,
        ] {
            assert!(!code.as_str().is_empty());
            let _ = code.class();
        }
        assert_eq!(ErrorCode::FunctionNotFound.class(), ErrorClass::NotFound);
        assert_eq!(ErrorCode::Canceled.class(), ErrorClass::Canceled);
    }
}

#[cfg(test)]
mod storage_tests {
    use super::*;

    #[test]
    fn a_failed_upload_inside_deltalake_is_an_object_store_error() {
        let store = object_store::Error::Generic {
            store: "S3",
            source: "connection refused".into(),
        };
        let delta = deltalake::DeltaTableError::Parquet {
            source: datafusion::parquet::errors::ParquetError::External(Box::new(store)),
        };
        assert_eq!(delta_code(&delta), ErrorCode::Io);
        let message = crate::error::delta_message(&delta);
        assert!(
            message.starts_with("object store: Generic S3 error"),
            "{message}"
        );
        let wrapped = crate::Error::DataFusion(DataFusionError::External(Box::new(delta)));
        assert_eq!(wrapped.code(), ErrorCode::Io);
        assert!(
            wrapped.client_message().starts_with("object store: "),
            "{}",
            wrapped.client_message()
        );

        // A failed multipart completion: the store's error inside an io::Error.
        let denied = object_store::Error::PermissionDenied {
            path: "t/part-0.parquet".into(),
            source: "403 AccessDenied".into(),
        };
        let delta = deltalake::DeltaTableError::Parquet {
            source: datafusion::parquet::errors::ParquetError::External(Box::new(
                std::io::Error::other(denied),
            )),
        };
        assert_eq!(delta_code(&delta), ErrorCode::PermissionDenied);
        assert!(
            crate::error::delta_message(&delta).starts_with("object store: The operation lacked")
        );
    }
}
