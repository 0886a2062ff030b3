//! The engine's error type and its protocol-neutral [`ErrorCode`].

mod code;

use datafusion::error::DataFusionError;

pub(crate) use code::datafusion_code;
pub use code::{CodedError, ErrorClass, ErrorCode};

/// Errors raised by the runbase engine.
///
/// Variants that carry a user-facing condition (unknown table, existing table, bad argument)
/// are distinct, and [`Error::code`] gives each its protocol-neutral [`ErrorCode`], which
/// the front ends map to SQLSTATE or an HTTP status; the wrapped library errors keep their
/// source for logging.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A table named in a statement does not exist.
    #[error("relation \"{0}\" does not exist")]
    TableNotFound(String),

    /// `CREATE TABLE` of a name that is already taken.
    #[error("relation \"{0}\" already exists")]
    TableExists(String),

    /// A schema named in a statement does not exist or cannot hold user tables.
    #[error("schema \"{0}\" does not exist")]
    SchemaNotFound(String),

    /// An attempt to change something that is read-only, such as the `runbase` schema.
    #[error("{0}")]
    ReadOnly(String),

    /// A well-formed statement asks for something runbase does not do (yet).
    #[error("{0} is not supported")]
    NotSupported(String),

    /// An argument has the right type but an unusable value (a missing table version, …).
    #[error("{0}")]
    InvalidArgument(String),

    /// A value that does not parse as its type (SQLSTATE 22P02).
    #[error("{0}")]
    InvalidText(String),

    /// A value longer than allowed (22001).
    #[error("{0}")]
    ValueTooLong(String),

    /// A statement whose expressions nest deeper than runbase plans (54001).
    #[error("{0}")]
    TooComplex(String),

    /// `COPY` data with the wrong shape: missing or extra columns (22P04).
    #[error("{0}")]
    BadCopyData(String),

    /// A value in binary form is not one of its type (22P03).
    #[error("{0}")]
    InvalidBinary(String),

    /// A NULL where a value is required (22004).
    #[error("{0}")]
    NullValue(String),

    /// A write that conflicts with a stored unique value (23505).
    #[error("{0}")]
    UniqueViolation(String),

    /// A statement runbase parses itself (`CREATE USER`, …) that is malformed (42601).
    #[error("syntax error: {0}")]
    Syntax(String),

    /// An object (a user, …) that already exists (42710).
    #[error("{0}")]
    DuplicateObject(String),

    /// The session's user may not do this (42501).
    #[error("{0}")]
    PermissionDenied(String),

    /// A named object (run, experiment, artifact) that does not exist (42704).
    #[error("{0}")]
    ObjectNotFound(String),

    /// An object in the wrong state for the operation, such as an ended run (55000).
    #[error("{0}")]
    InvalidState(String),

    /// A column named in an argument (a TRAIN target, …) that the input does not have (42703).
    #[error("{0}")]
    ColumnNotFound(String),

    /// A column or value of the wrong type for its use, such as a text column where a
    /// model takes a number (42804).
    #[error("{0}")]
    DatatypeMismatch(String),

    /// The statement was cancelled by the client, or its connection closed (57014).
    #[error("{0}")]
    Canceled(String),

    /// The statement ran past a time limit such as `statement_timeout` (57014).
    #[error("{0}")]
    Timeout(String),

    /// A function that does not exist or does not take the arguments given (42883).
    #[error("{0}")]
    UndefinedFunction(String),

    /// A column name a table already has (42701).
    #[error("{0}")]
    DuplicateColumn(String),

    /// An object of another kind than the statement takes, such as `DROP VIEW` of a
    /// table (42809).
    #[error("{0}")]
    WrongObjectType(String),

    /// A NULL written into a `NOT NULL` column (23502).
    #[error("{0}")]
    NotNullViolation(String),

    /// The data directory is open in another process.
    #[error("{0}")]
    InUse(String),

    /// A service runbase depends on (the object store) does not answer.
    #[error("{0}")]
    Unavailable(String),

    /// A concurrent change won the race; the statement may be retried (40001).
    #[error("{0}")]
    Conflict(String),

    /// A failure inside a library runbase calls (libtorch, …) that is not the input's fault.
    #[error("{0}")]
    Internal(String),

    /// Data on disk that cannot be read back: a corrupt catalog entry or commit file.
    #[error("corrupt {what}: {detail}")]
    Corrupt {
        /// What was being read.
        what: String,
        /// Why it could not be decoded.
        detail: String,
    },

    /// The catalog store failed.
    #[error("catalog store: {0}")]
    RocksDb(#[from] rocksdb::Error),

    /// The object store failed.
    #[error("object store: {0}")]
    ObjectStore(#[from] datafusion::object_store::Error),

    /// The Delta Lake layer failed.
    #[error("delta: {0}")]
    Delta(#[from] deltalake::DeltaTableError),

    /// Planning or execution failed inside DataFusion.
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),

    /// Local I/O (creating the data directory, …) failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Result type of the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for DataFusionError {
    fn from(err: Error) -> Self {
        match err {
            Error::DataFusion(e) => e,
            other => DataFusionError::External(Box::new(other)),
        }
    }
}

impl Error {
    /// The protocol-neutral code of this error: what front ends map to SQLSTATE or an
    /// HTTP status. Wrapped library errors are classified by their type and variant.
    pub fn code(&self) -> ErrorCode {
        let code = self.variant_code();
        if code == ErrorCode::Io && self.is_disk_full() {
            ErrorCode::DiskFull
        } else {
            code
        }
    }

    /// Whether a storage failure is the disk running out of space: an I/O error of kind
    /// `StorageFull` anywhere in the chain of causes, or RocksDB's status for it (which
    /// it only gives as text).
    fn is_disk_full(&self) -> bool {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cause {
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && io.kind() == std::io::ErrorKind::StorageFull
            {
                return true;
            }
            if let Some(rocks) = e.downcast_ref::<rocksdb::Error>()
                && rocks.to_string().contains("No space left on device")
            {
                return true;
            }
            cause = e.source();
        }
        false
    }

    /// The code of this error's variant (and what it wraps).
    fn variant_code(&self) -> ErrorCode {
        use ErrorCode as C;
        match self {
            Error::TableNotFound(_) => C::TableNotFound,
            Error::TableExists(_) => C::TableAlreadyExists,
            Error::SchemaNotFound(_) => C::SchemaNotFound,
            Error::ReadOnly(_) | Error::PermissionDenied(_) => C::PermissionDenied,
            Error::NotSupported(_) => C::Unsupported,
            Error::InvalidArgument(_) => C::InvalidArgument,
            Error::InvalidText(_) => C::InvalidText,
            Error::ValueTooLong(_) => C::ValueTooLong,
            Error::TooComplex(_) => C::TooComplex,
            Error::BadCopyData(_) => C::BadCopyData,
            Error::InvalidBinary(_) => C::InvalidBinary,
            Error::NullValue(_) => C::NullValue,
            Error::UniqueViolation(_) => C::UniqueViolation,
            Error::Syntax(_) => C::Syntax,
            Error::DuplicateObject(_) => C::ObjectAlreadyExists,
            Error::ObjectNotFound(_) => C::ObjectNotFound,
            Error::InvalidState(_) => C::InvalidState,
            Error::ColumnNotFound(_) => C::ColumnNotFound,
            Error::DatatypeMismatch(_) => C::DatatypeMismatch,
            Error::Canceled(_) => C::Canceled,
            Error::Timeout(_) => C::Timeout,
            Error::UndefinedFunction(_) => C::FunctionNotFound,
            Error::NotNullViolation(_) => C::NotNullViolation,
            Error::WrongObjectType(_) => C::WrongObjectType,
            Error::DuplicateColumn(_) => C::DuplicateColumn,
            Error::Conflict(_) => C::Conflict,
            Error::InUse(_) => C::InvalidState,
            Error::Internal(_) => C::Internal,
            Error::Corrupt { .. } => C::Corrupt,
            Error::Unavailable(_) | Error::RocksDb(_) | Error::Io(_) => C::Io,
            Error::ObjectStore(e) => code::object_store_code(e),
            Error::Delta(e) => code::delta_code(e),
            Error::DataFusion(e) => code::datafusion_code(e),
        }
    }

    /// The message for a client: the innermost meaningful message, without the layers
    /// of context DataFusion wraps around an error it passes on.
    pub fn client_message(&self) -> String {
        match self {
            Error::DataFusion(e) => code::client_message(e),
            // deltalake wraps a failed upload in errors of its own ("failed to parse
            // parquet"): say what failed.
            Error::Delta(e) => delta_message(e),
            other => other.to_string(),
        }
    }

    /// Wraps a `serde_json` failure while decoding `what`.
    pub(crate) fn corrupt(what: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        Error::Corrupt {
            what: what.into(),
            detail: detail.to_string(),
        }
    }
}

/// deltalake wraps a failed upload in errors of its own ("failed to parse parquet"): say
/// what failed instead.
pub(crate) fn delta_message(e: &deltalake::DeltaTableError) -> String {
    if let deltalake::DeltaTableError::InvalidData { message } = e {
        // The only checks runbase's tables carry are NOT NULL (see `code::delta_code`).
        return format!("null value in a NOT NULL column; {message}");
    }
    match code::store_error_in(e) {
        Some(store) => format!("object store: {store}"),
        None => format!("delta: {e}"),
    }
}
