//! HTTP routes for power: chassis status (all hosts in parallel or one), chassis
//! control, wake and suspend. BMC calls run here, in the handler's task, never on the
//! cluster task; results are recorded with `ClusterHandle::with`.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use wisp_bmc::PowerAction;
use wisp_common::HostId;

use super::actions::{power_action, ActionReport};
use super::status::{status, PowerStatusRow};
use super::suspend::{suspend, SuspendMode, SuspendOutcome};
use super::wake::{wake, WakeOutcome};
use super::PowerError;
use crate::api::{detached, ApiError, ApiState};
use crate::vms::chain;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct WakeRequest {
    /// Overrides `wake_deadline_ms` for this wake.
    #[serde(default)]
    pub deadline_ms: Option<u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SuspendRequest {
    /// IPMI soft-off instead of suspend-to-RAM.
    #[serde(default)]
    pub off: bool,
    /// Suspend even with VMs running there.
    #[serde(default)]
    pub force: bool,
}

impl From<PowerError> for ApiError {
    fn from(e: PowerError) -> Self {
        ApiError::new(
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            chain(&e),
        )
    }
}

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/power", get(status_all))
        .route("/v1/power/{host}", get(status_one))
        .route("/v1/power/{host}/{action}", post(action))
        .route("/v1/hosts/{host}/wake", post(wake_host))
        .route("/v1/hosts/{host}/suspend", post(suspend_host))
}

fn host_id(name: &str) -> Result<HostId, ApiError> {
    HostId::new(name).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))
}

/// Timing settings from the config.
async fn timing(s: &ApiState) -> Result<(Duration, Duration), ApiError> {
    s.cluster
        .with(|m| {
            (
                Duration::from_millis(m.config.wake_deadline_ms),
                Duration::from_millis(m.config.power_verify_ms),
            )
        })
        .await
        .ok_or_else(|| PowerError::Shutdown.into())
}

async fn status_all(State(s): State<ApiState>) -> Result<Json<Vec<PowerStatusRow>>, ApiError> {
    Ok(Json(status(&s.cluster, &s.power, None).await?))
}

async fn status_one(
    State(s): State<ApiState>,
    Path(host): Path<String>,
) -> Result<Json<Vec<PowerStatusRow>>, ApiError> {
    let h = host_id(&host)?;
    Ok(Json(status(&s.cluster, &s.power, Some(vec![h])).await?))
}

async fn action(
    State(s): State<ApiState>,
    Path((host, action)): Path<(String, String)>,
) -> Result<Json<ActionReport>, ApiError> {
    let a = match action.as_str() {
        "on" => PowerAction::On,
        "off" => PowerAction::Off,
        "soft" => PowerAction::Soft,
        "cycle" => PowerAction::Cycle,
        "reset" => PowerAction::Reset,
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("unknown power action {other:?}: use on, off, soft, cycle or reset"),
            ))
        }
    };
    let h = host_id(&host)?;
    let (_, verify) = timing(&s).await?;
    detached(async move { power_action(&s.cluster, &s.power, &h, a, verify).await }).await
}

async fn wake_host(
    State(s): State<ApiState>,
    Path(host): Path<String>,
    body: Option<Json<WakeRequest>>,
) -> Result<Json<WakeOutcome>, ApiError> {
    let h = host_id(&host)?;
    let (deadline, _) = timing(&s).await?;
    let deadline = body
        .and_then(|b| b.deadline_ms)
        .map(Duration::from_millis)
        .unwrap_or(deadline);
    detached(async move { wake(&s.cluster, &s.power, &h, deadline).await }).await
}

async fn suspend_host(
    State(s): State<ApiState>,
    Path(host): Path<String>,
    body: Option<Json<SuspendRequest>>,
) -> Result<Json<SuspendOutcome>, ApiError> {
    let h = host_id(&host)?;
    let req = body.map(|b| b.0).unwrap_or_default();
    let mode = if req.off {
        SuspendMode::SoftOff
    } else {
        SuspendMode::Ram
    };
    let (_, verify) = timing(&s).await?;
    detached(async move { suspend(&s.cluster, &s.power, &h, mode, req.force, verify).await }).await
}
