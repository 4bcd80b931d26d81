//! HTTP routes for power: chassis status (all hosts in parallel or one), chassis
//! control, wake, suspend and clearing a quarantine. BMC calls run here, in the handler's task, never on the
//! cluster task; results are recorded with `ClusterHandle::with`.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};

use super::actions::power_action;
use super::quarantine::{clear, QuarantineError};
use super::status::status;
use super::suspend::suspend;
use super::wake::wake;
use super::PowerError;
use crate::api::types::power::UnknownAction;
use crate::api::types::{
    ActionReport, ChassisAction, ClearReport, PowerStatusRow, SuspendMode, SuspendOutcome,
    SuspendRequest, WakeOutcome, WakeRequest,
};
use crate::api::{detached, host_id, ApiError, ApiState, Body};
use crate::vms::chain;

impl From<PowerError> for ApiError {
    fn from(e: PowerError) -> Self {
        ApiError::new(
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            chain(&e),
        )
    }
}

impl From<QuarantineError> for ApiError {
    fn from(e: QuarantineError) -> Self {
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
        .route("/v1/hosts/{host}/clear", post(clear_host))
}

/// Timing settings from the config: the boot wait of a wake and the power verification.
fn timing(s: &ApiState) -> (Duration, Duration) {
    let c = s.cluster.config();
    (
        Duration::from_millis(c.wake_boot_ms),
        Duration::from_millis(c.power_verify_ms),
    )
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
    let a: ChassisAction = action
        .parse()
        .map_err(|e: UnknownAction| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let h = host_id(&host)?;
    let (_, verify) = timing(&s);
    detached(async move { power_action(&s.cluster, &s.power, &h, a.into(), verify).await }).await
}

async fn wake_host(
    State(s): State<ApiState>,
    Path(host): Path<String>,
    body: Option<Body<WakeRequest>>,
) -> Result<Json<WakeOutcome>, ApiError> {
    let h = host_id(&host)?;
    let (deadline, _) = timing(&s);
    let deadline = body
        .and_then(|Body(b)| b.deadline_ms)
        .map(Duration::from_millis)
        .unwrap_or(deadline);
    detached(async move { wake(&s.cluster, &s.power, &h, deadline).await }).await
}

async fn suspend_host(
    State(s): State<ApiState>,
    Path(host): Path<String>,
    body: Option<Body<SuspendRequest>>,
) -> Result<Json<SuspendOutcome>, ApiError> {
    let h = host_id(&host)?;
    let req = body.map(|Body(b)| b).unwrap_or_default();
    let mode = if req.off {
        SuspendMode::SoftOff
    } else {
        SuspendMode::Ram
    };
    let (_, verify) = timing(&s);
    detached(async move { suspend(&s.cluster, &s.power, &h, mode, req.force, verify).await }).await
}

async fn clear_host(
    State(s): State<ApiState>,
    Path(host): Path<String>,
) -> Result<Json<ClearReport>, ApiError> {
    let h = host_id(&host)?;
    Ok(Json(clear(&s.cluster, &h).await?))
}
