//! The web dashboard, served by the router on its API listener: the cluster, its
//! power and its savings at a glance, live, with the operator's actions.
//!
//! No build toolchain: the pages are plain HTML, CSS and JavaScript under `assets/`,
//! embedded in the binary ([`assets`]). The page reads one server-sent event stream
//! (`/ui/stream`, [`stream`]) fed by one task ([`hub`]) that builds a frame from the
//! published snapshot and the energy status only while someone watches; actions call
//! the ordinary `/v1/...` routes, so the dashboard can do nothing the CLI cannot, and
//! a busy VM answers a browser exactly as it answers the CLI.
//!
//! Tokens: the pages themselves carry no data and need none ([`PUBLIC_PATHS`]); the
//! stream and every `/v1` call carry `Authorization: Bearer <token>`, which the
//! page keeps in the tab's session storage after the login page checked it.

mod assets;
mod hub;
mod payload;
mod stream;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use tokio::sync::watch;

use crate::cluster::ClusterHandle;
use crate::energy::EnergyHandle;

/// Paths that serve only the embedded pages and files: no cluster data, so no token
/// is asked for them (the login page must load before there is a token). Everything
/// else the dashboard reads, `/ui/stream` included, is data and needs one.
pub const PUBLIC_PATHS: &[&str] = &["/", "/login", "/ui/assets/"];

/// True for a path of [`PUBLIC_PATHS`] (one ending in `/`, other than `/`, is a
/// prefix). For the API's token check: these are the only paths it lets through.
pub fn is_public(path: &str) -> bool {
    PUBLIC_PATHS.iter().any(|p| {
        if p.len() > 1 && p.ends_with('/') {
            path.starts_with(p)
        } else {
            path == *p
        }
    })
}

/// The dashboard's routes (merge into the API's router) and its hub task, which runs
/// until `shutdown` turns true.
pub fn routes(
    cluster: ClusterHandle,
    energy: EnergyHandle,
    shutdown: watch::Receiver<bool>,
) -> Router {
    let hub = Arc::new(hub::Hub::spawn(cluster, energy, shutdown));
    Router::new()
        .route("/", get(assets::dashboard))
        .route("/login", get(assets::login))
        .route("/ui/assets/{file}", get(assets::file))
        .route("/ui/stream", get(stream::stream))
        .with_state(hub)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pages_are_public() {
        for p in ["/", "/login", "/ui/assets/app.js"] {
            assert!(is_public(p), "{p}");
        }
        for p in ["/ui/stream", "/v1/hosts", "/login/x", "/ui/assetsx"] {
            assert!(!is_public(p), "{p}");
        }
    }
}
