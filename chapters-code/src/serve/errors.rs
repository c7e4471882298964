//! Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`, with the
//! status code a client library expects for each.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

// ANCHOR: api_error
/// An error response.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// `invalid_request_error`, `not_found_error`, `rate_limit_error`, `server_error`...
    pub kind: &'static str,
    /// The request field at fault, if one is.
    pub param: Option<String>,
    pub code: Option<&'static str>,
}
// ANCHOR_END: api_error

impl ApiError {
    /// 400: a field is missing, of the wrong type or out of range.
    pub fn invalid(param: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some(param.to_string()),
            code: Some("invalid_value"),
        }
    }

    /// 400: the body is not JSON (or not an object).
    pub fn bad_json(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: None,
            code: Some("invalid_json"),
        }
    }

    /// 400: the prompt does not fit in the context.
    pub fn too_long(param: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            code: Some("context_length_exceeded"),
            ..ApiError::invalid(param, message)
        }
    }

    /// 404: no such route, or no such model.
    pub fn not_found(
        message: impl Into<String>,
        param: Option<&str>,
        code: &'static str,
    ) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(String::from),
            code: Some(code),
        }
    }

    /// 413: the body exceeds the limit.
    pub fn too_large(limit: usize) -> ApiError {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("the request body is larger than {limit} bytes"),
            kind: "invalid_request_error",
            param: None,
            code: Some("request_too_large"),
        }
    }

    /// 429: the queue is full.
    pub fn queue_full(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: message.into(),
            kind: "rate_limit_error",
            param: None,
            code: Some("queue_full"),
        }
    }

    /// 503: the server is shutting down.
    pub fn shutting_down() -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the server is shutting down; retry on another instance".into(),
            kind: "server_error",
            param: None,
            code: Some("shutting_down"),
        }
    }

    /// 504: the request ran past its time limit.
    pub fn timeout(seconds: f64) -> ApiError {
        ApiError {
            status: StatusCode::GATEWAY_TIMEOUT,
            message: format!("the request did not finish within {seconds:.0} seconds"),
            kind: "server_error",
            param: None,
            code: Some("timeout"),
        }
    }

    /// 500: the engine failed.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: Some("internal_error"),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        json!({ "error": { "message": self.message, "type": self.kind, "param": self.param, "code": self.code } })
    }

    /// The reason label of the failure metrics.
    pub fn reason(&self) -> &'static str {
        self.code.unwrap_or("error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let too_large = self.status == StatusCode::PAYLOAD_TOO_LARGE;
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if too_large {
            // The rest of the body is never read, so the server closes the connection after
            // this answer: say so, or a client that pools connections sends its next request
            // down one that is closing.
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)?;
        if let Some(param) = &self.param {
            write!(f, " (param `{param}`)")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}
