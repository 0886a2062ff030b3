//! Engine errors as HTTP responses. This is the one place HTTP statuses are chosen:
//! [`status`] maps the coarse class of the engine's protocol-neutral
//! [`ErrorCode`]; the body names the fine code.
//!
//! Every error response has a JSON body
//! `{"error_code": "<ErrorCode::as_str>", "message": "<what went wrong>"}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use runbase_engine::error::{ErrorClass, ErrorCode};

/// An error answered to an HTTP client: a code and a message. Handlers return
/// `Result<_, ApiError>`; `?` on a [`runbase_engine::Error`] converts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// What went wrong; chooses the status.
    pub code: ErrorCode,
    /// The message shown to the client.
    pub message: String,
}

impl ApiError {
    /// The error for `code` with `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        status(self.code.class())
    }
}

impl From<runbase_engine::Error> for ApiError {
    fn from(err: runbase_engine::Error) -> Self {
        Self::from(&err)
    }
}

impl From<&runbase_engine::Error> for ApiError {
    fn from(err: &runbase_engine::Error) -> Self {
        Self::new(err.code(), err.client_message())
    }
}

/// A query string axum could not parse into the handler's parameters: 400.
impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::QueryRejection) -> Self {
        Self::new(ErrorCode::InvalidArgument, rejection.body_text())
    }
}

/// A JSON body axum could not parse into the handler's input: 400.
impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> Self {
        Self::new(ErrorCode::InvalidArgument, rejection.body_text())
    }
}

/// nginx's "client closed request": the client cancelled (there is no standard status).
const CLIENT_CLOSED_REQUEST: u16 = 499;

/// The HTTP status of an error class.
pub fn status(class: ErrorClass) -> StatusCode {
    match class {
        ErrorClass::NotFound => StatusCode::NOT_FOUND,
        ErrorClass::AlreadyExists | ErrorClass::InvalidState | ErrorClass::Conflict => {
            StatusCode::CONFLICT
        }
        ErrorClass::InvalidInput => StatusCode::BAD_REQUEST,
        ErrorClass::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorClass::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorClass::Unsupported => StatusCode::NOT_IMPLEMENTED,
        ErrorClass::Canceled => {
            StatusCode::from_u16(CLIENT_CLOSED_REQUEST).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        }
        ErrorClass::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorClass::ResourceExhausted | ErrorClass::Io => StatusCode::SERVICE_UNAVAILABLE,
        ErrorClass::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl ApiError {
    /// The response with `status` in place of the code's (405 for a known path asked with
    /// another method); logged only as a server failure when `status` is one.
    pub fn into_response_with(self, status: StatusCode) -> Response {
        if status.is_server_error() {
            tracing::warn!(code = self.code.as_str(), message = %self.message, "HTTP request failed");
        }
        let body = serde_json::json!({
            "error_code": self.code.as_str(),
            "message": self.message,
        });
        (status, Json(body)).into_response()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        self.into_response_with(status)
    }
}

/// An error answered on MLflow's routes, as MLflow's tracking server words it: the
/// status MLflow uses and `{"error_code": "<MLflow's code>", "message": …}`. Its client
/// reads `error_code` (`set_experiment` needs RESOURCE_DOES_NOT_EXIST with 404) and
/// retries 5xx for minutes, so bad input is never a 5xx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlflowError {
    /// The HTTP status.
    pub status: StatusCode,
    /// MLflow's error code.
    pub code: &'static str,
    /// The message shown to the client.
    pub message: String,
}

impl MlflowError {
    /// 400 INVALID_PARAMETER_VALUE.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "INVALID_PARAMETER_VALUE",
            message: message.into(),
        }
    }

    /// 404 RESOURCE_DOES_NOT_EXIST.
    pub fn missing(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "RESOURCE_DOES_NOT_EXIST",
            message: message.into(),
        }
    }
}

/// MLflow's status and error code for an error class.
pub fn mlflow(class: ErrorClass) -> (StatusCode, &'static str) {
    match class {
        ErrorClass::NotFound => (StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST"),
        ErrorClass::AlreadyExists => (StatusCode::BAD_REQUEST, "RESOURCE_ALREADY_EXISTS"),
        ErrorClass::InvalidInput | ErrorClass::InvalidState => {
            (StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE")
        }
        ErrorClass::Conflict => (StatusCode::CONFLICT, "ABORTED"),
        ErrorClass::Unauthenticated => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
        ErrorClass::PermissionDenied => (StatusCode::FORBIDDEN, "PERMISSION_DENIED"),
        ErrorClass::Unsupported => (StatusCode::NOT_IMPLEMENTED, "NOT_IMPLEMENTED"),
        ErrorClass::Canceled => (
            StatusCode::from_u16(CLIENT_CLOSED_REQUEST).unwrap_or(StatusCode::BAD_REQUEST),
            "CANCELLED",
        ),
        ErrorClass::Timeout => (StatusCode::GATEWAY_TIMEOUT, "DEADLINE_EXCEEDED"),
        ErrorClass::ResourceExhausted | ErrorClass::Io => {
            (StatusCode::SERVICE_UNAVAILABLE, "TEMPORARILY_UNAVAILABLE")
        }
        ErrorClass::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"),
    }
}

impl From<ApiError> for MlflowError {
    fn from(err: ApiError) -> Self {
        let (status, code) = mlflow(err.code.class());
        Self {
            status,
            code,
            message: err.message,
        }
    }
}

impl From<runbase_engine::Error> for MlflowError {
    fn from(err: runbase_engine::Error) -> Self {
        ApiError::from(&err).into()
    }
}

impl IntoResponse for MlflowError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = self.code, message = %self.message, "MLflow request failed");
        }
        let body = serde_json::json!({
            "error_code": self.code,
            "message": self.message,
        });
        (self.status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runbase_engine::Error;

    #[test]
    fn every_class_has_its_status() {
        let expected = [
            (ErrorClass::NotFound, 404),
            (ErrorClass::AlreadyExists, 409),
            (ErrorClass::InvalidInput, 400),
            (ErrorClass::Unauthenticated, 401),
            (ErrorClass::PermissionDenied, 403),
            (ErrorClass::Unsupported, 501),
            (ErrorClass::InvalidState, 409),
            (ErrorClass::Canceled, 499),
            (ErrorClass::Timeout, 504),
            (ErrorClass::Conflict, 409),
            (ErrorClass::ResourceExhausted, 503),
            (ErrorClass::Io, 503),
            (ErrorClass::Internal, 500),
        ];
        for (class, code) in expected {
            assert_eq!(status(class).as_u16(), code, "{class:?}");
        }
    }

    #[test]
    fn engine_errors_map_through_their_code() {
        let cases = [
            (Error::TableNotFound("t".into()), 404, "table_not_found"),
            (Error::TableExists("t".into()), 409, "table_already_exists"),
            (Error::Syntax("near x".into()), 400, "syntax"),
            (
                Error::PermissionDenied("no".into()),
                403,
                "permission_denied",
            ),
            (Error::NotSupported("x".into()), 501, "unsupported"),
            (Error::Canceled("stop".into()), 499, "canceled"),
            (Error::Timeout("late".into()), 504, "timeout"),
            (Error::Conflict("again".into()), 409, "conflict"),
            (Error::Internal("bug".into()), 500, "internal"),
        ];
        for (err, status, code) in cases {
            let api = ApiError::from(&err);
            assert_eq!(api.status().as_u16(), status, "{err:?}");
            assert_eq!(api.code.as_str(), code, "{err:?}");
            assert_eq!(api.message, err.client_message());
        }
    }

    #[test]
    fn mlflow_codes_never_make_bad_input_a_server_error() {
        for (err, status, code) in [
            (
                Error::ObjectNotFound("x".into()),
                404,
                "RESOURCE_DOES_NOT_EXIST",
            ),
            (
                Error::UniqueViolation("x".into()),
                400,
                "RESOURCE_ALREADY_EXISTS",
            ),
            (
                Error::InvalidArgument("x".into()),
                400,
                "INVALID_PARAMETER_VALUE",
            ),
            (
                Error::InvalidState("x".into()),
                400,
                "INVALID_PARAMETER_VALUE",
            ),
            (
                Error::PermissionDenied("x".into()),
                403,
                "PERMISSION_DENIED",
            ),
            (Error::Internal("x".into()), 500, "INTERNAL_ERROR"),
        ] {
            let e = MlflowError::from(err);
            assert_eq!((e.status.as_u16(), e.code), (status, code));
        }
    }

    #[tokio::test]
    async fn the_body_is_json_with_code_and_message() {
        let response = ApiError::from(Error::TableNotFound("t".into())).into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            response
                .headers()
                .get(axum::http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON body");
        assert_eq!(json["error_code"], "table_not_found");
        assert_eq!(json["message"], "relation \"t\" does not exist");
    }
}
