//! HTTP routes for VMs: create, start/stop/restart/delete, migrate, show.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};

use super::{chain, VmError};
use crate::api::types::{
    CreateRequest, MigrateRequest, MigrationReport, OpReport, StopRequest, VmDetail, VmView,
};
use crate::api::views::vm_views;
use crate::api::{detached, vm_id, ApiError, ApiState, Body};

impl From<VmError> for ApiError {
    fn from(e: VmError) -> Self {
        ApiError::new(
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            chain(&e),
        )
    }
}

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/vms", post(create))
        .route("/v1/vms/{name}", get(show).delete(delete))
        .route("/v1/vms/{name}/start", post(start))
        .route("/v1/vms/{name}/stop", post(stop))
        .route("/v1/vms/{name}/restart", post(restart))
        .route("/v1/vms/{name}/migrate", post(migrate))
        .route("/v1/vms/{name}/console", get(console))
        .route("/v1/vms/{name}/console/attach", get(console_attach))
}

async fn create(
    State(s): State<ApiState>,
    Body(req): Body<CreateRequest>,
) -> Result<Json<OpReport>, ApiError> {
    let c = s.cluster;
    detached(async move { super::create(&c, req.spec, req.host, req.nics).await }).await
}

async fn start(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<OpReport>, ApiError> {
    let (c, vm) = (s.cluster, vm_id(&name)?);
    detached(async move { super::start(&c, vm).await }).await
}

async fn stop(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    body: Option<Body<StopRequest>>,
) -> Result<Json<OpReport>, ApiError> {
    let force = body.map(|Body(b)| b.force).unwrap_or(false);
    let (c, vm) = (s.cluster, vm_id(&name)?);
    detached(async move { super::stop(&c, vm, force).await }).await
}

async fn restart(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<OpReport>, ApiError> {
    let (c, vm) = (s.cluster, vm_id(&name)?);
    detached(async move { super::restart(&c, vm).await }).await
}

async fn delete(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<OpReport>, ApiError> {
    let (c, vm) = (s.cluster, vm_id(&name)?);
    detached(async move { super::delete(&c, vm).await }).await
}

async fn migrate(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Body(req): Body<MigrateRequest>,
) -> Result<Json<MigrationReport>, ApiError> {
    let settings = s.cluster.config().migration;
    let (c, vm) = (s.cluster, vm_id(&name)?);
    detached(async move { super::migrate::migrate(&c, vm, req.to, settings).await }).await
}

/// `?bytes=N`: how much of the console's tail (default 64 KiB).
#[derive(Debug, serde::Deserialize)]
struct ConsoleQuery {
    #[serde(default = "default_console_bytes")]
    bytes: u64,
}

fn default_console_bytes() -> u64 {
    64 * 1024
}

async fn console(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<ConsoleQuery>,
) -> Result<Json<super::console::ConsoleLog>, ApiError> {
    let (c, vm) = (s.cluster, vm_id(&name)?);
    detached(async move { super::console::console_log(&c, vm, q.bytes).await }).await
}

/// The `Upgrade` protocol name of an interactive console connection.
pub const CONSOLE_PROTOCOL: &str = "wisp-console";
/// The response header naming the host whose genie serves the console.
pub const CONSOLE_HOST_HEADER: &str = "x-wisp-host";

/// `GET /v1/vms/{name}/console/attach` with `Connection: upgrade` and
/// `Upgrade: wisp-console`: attaches to the VM's console first (so a VM that is not
/// running is a plain JSON error), then answers 101 and relays raw bytes both ways.
async fn console_attach(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    mut req: axum::extract::Request,
) -> Result<axum::response::Response, ApiError> {
    use axum::http::header;
    let vm = vm_id(&name)?;
    let wants = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(CONSOLE_PROTOCOL));
    if !wants {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("an interactive console needs `Connection: upgrade` and `Upgrade: {CONSOLE_PROTOCOL}` (use `router vm console {name}`)"),
        ));
    }
    let attached = super::console_attach::attach(&s.cluster, vm).await?;
    let host = attached.host.to_string();
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(io) => {
                let (vm, host) = (attached.vm.clone(), attached.host.clone());
                let why =
                    super::console_attach::relay(hyper_util::rt::TokioIo::new(io), attached).await;
                tracing::info!(%vm, %host, reason = %why, "console session ended");
            }
            Err(e) => {
                tracing::warn!(error = %e, "console upgrade failed");
                super::console_attach::abandon(attached).await;
            }
        }
    });
    axum::response::Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, CONSOLE_PROTOCOL)
        .header(CONSOLE_HOST_HEADER, host)
        .body(axum::body::Body::empty())
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

async fn show(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<VmDetail>, ApiError> {
    let vm = vm_id(&name)?;
    let snap = s.cluster.snapshot();
    let views: Vec<VmView> = vm_views(&snap)
        .into_iter()
        .filter(|v| v.name == vm)
        .collect();
    let record = snap.records.get(&vm).cloned();
    let detail = (!views.is_empty() || record.is_some()).then(|| VmDetail {
        views,
        record,
        op: snap.ops.get(&vm).cloned(),
        migration: snap.progress.get(&vm).cloned(),
        events: snap.vm_events(&vm, 20),
    });
    detail
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no VM named {name}")))
}
