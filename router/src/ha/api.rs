//! HTTP routes for maintenance mode and the SLA report.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};

use super::maintenance;
use crate::api::types::{MaintenanceReport, MaintenanceRequest, SlaReport};
use crate::api::{detached, host_id, ApiError, ApiState, Body};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/sla", get(sla))
        .route("/v1/hosts/{name}/maintenance", post(set_maintenance))
}

async fn sla(State(s): State<ApiState>) -> Result<Json<SlaReport>, ApiError> {
    s.cluster
        .run(super::commands::SlaNow)
        .await
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))
}

async fn set_maintenance(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Body(req): Body<MaintenanceRequest>,
) -> Result<Json<MaintenanceReport>, ApiError> {
    let host = host_id(&name)?;
    detached(async move { maintenance::set(&s.cluster, host, req.on).await }).await
}
