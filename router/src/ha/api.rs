//! HTTP routes for maintenance mode and the SLA report.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::maintenance::{self, MaintenanceReport};
use super::sla::SlaReport;
use crate::api::{detached, ApiError, ApiState};
use wisp_common::HostId;

#[derive(Debug, Serialize, Deserialize)]
pub struct MaintenanceRequest {
    pub on: bool,
}

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/sla", get(sla))
        .route("/v1/hosts/{name}/maintenance", post(set_maintenance))
}

async fn sla(State(s): State<ApiState>) -> Result<Json<SlaReport>, ApiError> {
    s.cluster
        .with(|m| m.sla_report())
        .await
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))
}

async fn set_maintenance(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Json(req): Json<MaintenanceRequest>,
) -> Result<Json<MaintenanceReport>, ApiError> {
    let host =
        HostId::new(&name).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    detached(async move { maintenance::set(&s.cluster, host, req.on).await }).await
}
