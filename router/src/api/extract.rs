//! Parsing at the edge: path segments into typed ids, and JSON bodies through
//! [`Body`], so a handler only ever sees typed values and a bad request is answered
//! with our JSON error shape naming what was wrong.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, OptionalFromRequest, Request};
use axum::http::StatusCode;
use axum::Json;
use serde::de::DeserializeOwned;
use wisp_common::{HostId, VmId};

use super::ApiError;

/// A host name from a path segment.
pub fn host_id(name: &str) -> Result<HostId, ApiError> {
    HostId::new(name).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))
}

/// A VM name from a path segment.
pub fn vm_id(name: &str) -> Result<VmId, ApiError> {
    VmId::new(name).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))
}

/// A JSON request body. Axum's `Json` answers a body that does not fit the type with
/// 422 in plain text, which the CLI can only show as `HTTP 422: ...`; this answers 400
/// with `{"error": "..."}` naming the field and the reason (for example a host id with
/// a space). Other rejections keep their status (415 without a JSON content type, 413
/// for a body too large) but get the same JSON shape.
///
/// `Option<Body<T>>` accepts a request without a body (no content type) as `None`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Body<T>(pub T);

fn rejected(r: JsonRejection) -> ApiError {
    let status = match &r {
        JsonRejection::JsonDataError(_) | JsonRejection::JsonSyntaxError(_) => {
            StatusCode::BAD_REQUEST
        }
        other => other.status(),
    };
    ApiError::new(status, r.body_text())
}

impl<T, S> FromRequest<S> for Body<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(v) = <Json<T> as FromRequest<S>>::from_request(req, state)
            .await
            .map_err(rejected)?;
        Ok(Body(v))
    }
}

impl<T, S> OptionalFromRequest<S> for Body<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, Self::Rejection> {
        let v = <Json<T> as OptionalFromRequest<S>>::from_request(req, state)
            .await
            .map_err(rejected)?;
        Ok(v.map(|Json(v)| Body(v)))
    }
}

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;
    use axum::http::{header, Request as HttpRequest};
    use axum::response::IntoResponse;

    use super::*;
    use crate::api::types::{MigrateRequest, StopRequest};

    fn json_request(body: &str) -> Request {
        HttpRequest::builder()
            .method("POST")
            .uri("/")
            .header(header::CONTENT_TYPE, "application/json")
            .body(axum::body::Body::from(body.to_owned()))
            .expect("a valid request")
    }

    /// Status and `error` text of a rejection, as the client sees them.
    async fn answer(e: ApiError) -> (StatusCode, String) {
        let resp = e.into_response();
        let status = resp.status();
        let bytes = to_bytes(resp.into_body(), 1 << 16).await.expect("a body");
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("a JSON body");
        let msg = v["error"].as_str().expect("an error string").to_owned();
        (status, msg)
    }

    #[tokio::test]
    async fn a_valid_body_is_parsed() {
        let Body(r) = <Body<MigrateRequest> as FromRequest<()>>::from_request(
            json_request(r#"{"to":"h2"}"#),
            &(),
        )
        .await
        .expect("parses");
        assert_eq!(r.to.as_str(), "h2");
    }

    #[tokio::test]
    async fn an_invalid_host_id_is_400_naming_it() {
        let e = <Body<MigrateRequest> as FromRequest<()>>::from_request(
            json_request(r#"{"to":"bad host"}"#),
            &(),
        )
        .await
        .expect_err("rejected");
        let (status, msg) = answer(e).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(msg.contains("bad host") && msg.contains("' '"), "{msg}");
    }

    #[tokio::test]
    async fn malformed_json_and_missing_fields_are_400() {
        for (body, names) in [(r#"{"to":"#, "EOF"), (r#"{}"#, "missing field `to`")] {
            let e =
                <Body<MigrateRequest> as FromRequest<()>>::from_request(json_request(body), &())
                    .await
                    .expect_err("rejected");
            let (status, msg) = answer(e).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert!(msg.contains(names), "{body}: {msg}");
        }
    }

    #[tokio::test]
    async fn an_optional_body_may_be_absent_but_not_wrong() {
        let none = HttpRequest::builder()
            .method("POST")
            .uri("/")
            .body(axum::body::Body::empty())
            .expect("a valid request");
        let got = <Body<StopRequest> as OptionalFromRequest<()>>::from_request(none, &())
            .await
            .expect("no body is fine");
        assert!(got.is_none());
        let e = <Body<StopRequest> as OptionalFromRequest<()>>::from_request(
            json_request(r#"{"force":"yes"}"#),
            &(),
        )
        .await
        .expect_err("rejected");
        let (status, msg) = answer(e).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(msg.contains("force"), "{msg}");
    }
}
