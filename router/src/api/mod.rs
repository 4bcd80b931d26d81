//! The local HTTP/JSON API the CLI talks to. The shapes it speaks are in [`types`]
//! (the CLI's contract), the views it serves are projections in [`views`], and strings
//! become typed values at the route ([`Body`], [`host_id`], [`vm_id`]).
//!
//! It is served on a Unix socket for the local CLI ([`unix`]) and on TCP with bearer
//! tokens ([`auth`]) and TLS off loopback ([`tls`]), both through one accept loop
//! ([`server`]) that caps connections and times out slow clients. It carries no
//! secrets: BMC passwords, tokens and the cluster secret never appear in any response.
//! Errors are JSON `{"error": "..."}` with a status code that says whose fault it was.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::sync::watch;

use crate::cluster::ClusterHandle;
use types::{Event, HostView, StatusView, VmView};

pub mod auth;
mod extract;
pub mod server;
pub mod tls;
pub mod types;
pub mod unix;
pub mod views;

pub use server::ApiListener;

pub use extract::{host_id, vm_id, Body};

/// Shared by all handlers: only handles, no state of its own.
#[derive(Clone, Debug)]
pub struct ApiState {
    pub cluster: ClusterHandle,
    pub power: std::sync::Arc<crate::power::PowerPlane>,
}

/// An API error: status plus a message for the user.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
        }
        (
            self.status,
            Json(Body {
                error: self.message,
            }),
        )
            .into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// Runs a long operation (create, migrate, wake, suspend, maintenance, ...) as its own
/// task and waits for its answer. The client only waits: if it gives up (Ctrl-C, its
/// own timeout), hyper drops this handler's future, but the operation runs on to its
/// end and records its result, like dropshot's `DetachFromClient`. An operation left
/// half-done by a vanished client could hold a VM or a host in between states.
pub async fn detached<T, E>(
    op: impl std::future::Future<Output = Result<T, E>> + Send + 'static,
) -> Result<Json<T>, ApiError>
where
    T: Send + 'static,
    E: Into<ApiError> + Send + 'static,
{
    match tokio::spawn(op).await {
        Ok(r) => r.map(Json).map_err(Into::into),
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the operation's task ended without an answer ({e}); see `router events`"),
        )),
    }
}

pub fn app(state: ApiState) -> Router {
    Router::new()
        .route("/v1/hosts", get(hosts))
        .route("/v1/vms", get(vms))
        .route("/v1/status", get(status))
        .route("/v1/events", get(events))
        .merge(crate::vms::api::routes())
        .merge(crate::power::api::routes())
        .merge(crate::ha::api::routes())
        .with_state(state)
}

/// Serves `app` (already [`auth::secure`]d) on `listener` until `shutdown` turns true.
pub async fn serve(listener: ApiListener, app: Router, shutdown: watch::Receiver<bool>) {
    server::serve(listener, app, shutdown).await
}

/// Serves the API of `state` (without the energy routes) on a Unix socket at `path`
/// until `shutdown`: for tests that assemble the router's parts themselves. Must be
/// called inside a tokio runtime.
pub fn serve_local(
    path: &std::path::Path,
    state: ApiState,
    shutdown: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, unix::UnixSocketError> {
    let l = unix::bind(path)?;
    let guard = auth::Guard::new(Vec::new()).record_to(state.cluster.clone());
    let app = auth::secure(app(state), guard);
    Ok(tokio::spawn(serve(ApiListener::Unix(l), app, shutdown)))
}

async fn hosts(State(s): State<ApiState>) -> ApiResult<Vec<HostView>> {
    Ok(Json(views::host_views(&s.cluster.snapshot())))
}

async fn vms(State(s): State<ApiState>) -> ApiResult<Vec<VmView>> {
    Ok(Json(views::vm_views(&s.cluster.snapshot())))
}

async fn status(State(s): State<ApiState>) -> ApiResult<StatusView> {
    Ok(Json(views::status_view(&s.cluster.snapshot())))
}

async fn events(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Vec<Event>> {
    let limit = match q.get("limit") {
        None => 50,
        Some(v) => v.parse::<usize>().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("limit={v:?} is not a whole number"),
            )
        })?,
    };
    Ok(Json(s.cluster.events(limit)))
}
