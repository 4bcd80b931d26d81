//! HTTP routes of energy mode: `GET /v1/energy` (status) and `POST /v1/energy`
//! (`{"on": true|false}`: turn it on or off; stored, and a planner round follows at
//! once).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};

use super::EnergyHandle;
use crate::api::types::{EnergyRequest, EnergyStatus};
use crate::api::{ApiError, Body};
use crate::cluster::ClusterHandle;

#[derive(Debug, Clone)]
pub struct EnergyApi {
    pub cluster: ClusterHandle,
    pub energy: EnergyHandle,
}

/// The energy routes, with their own state (merge into the API's router).
pub fn routes(cluster: ClusterHandle, energy: EnergyHandle) -> Router {
    Router::new()
        .route("/v1/energy", get(status).post(set))
        .with_state(EnergyApi { cluster, energy })
}

async fn status(State(s): State<EnergyApi>) -> Result<Json<EnergyStatus>, ApiError> {
    // Mode and host states from the model now, not from the last sample.
    let obs = s
        .cluster
        .run(super::commands::Observe)
        .await
        .ok_or_else(shutting_down)?;
    Ok(Json(s.energy.status_from(&obs)))
}

async fn set(
    State(s): State<EnergyApi>,
    Body(req): Body<EnergyRequest>,
) -> Result<Json<EnergyStatus>, ApiError> {
    let on = req.on;
    s.cluster
        .run(super::commands::ChooseEnergyMode { on })
        .await
        .ok_or_else(shutting_down)?
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("energy mode not changed: {}", wisp_common::error::chain(&e)),
            )
        })?;
    s.energy.kick();
    let mut st = s.energy.status();
    st.enabled = on;
    Ok(Json(st))
}

fn shutting_down() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the router is shutting down",
    )
}
