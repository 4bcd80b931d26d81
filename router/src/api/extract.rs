//! Parsing at the edge: path segments into typed ids, so a handler only ever sees
//! typed values and a bad id is answered with our JSON error shape naming what was
//! wrong.

use axum::http::StatusCode;
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
