//! The API's errors: an HTTP status and a stable code, as JSON
//! (`{"error": {"code": "unknown_account", "message": "..."}}`). Clients
//! decide on the code; the message is for people. `docs/admin.md` and the
//! OpenAPI document list every code.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    /// The store, the registry or the routers failed: the request may be
    /// retried.
    pub fn unavailable(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "admin request failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            error.to_string(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        ApiError::unavailable(error)
    }
}

impl From<xmppd_storage::StoreError> for ApiError {
    fn from(error: xmppd_storage::StoreError) -> Self {
        ApiError::unavailable(error)
    }
}

impl From<xmppd_registry::RegistryError> for ApiError {
    fn from(error: xmppd_registry::RegistryError) -> Self {
        match error {
            xmppd_registry::RegistryError::BadCursor => {
                ApiError::bad_request("bad_cursor", "not a cursor this list handed out")
            }
            error => ApiError::unavailable(error),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        ApiError::new(rejection.status(), "bad_request", rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::bad_request("bad_request", rejection.body_text())
    }
}
