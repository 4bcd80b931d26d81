//! The dashboard's files, embedded at build time: two pages, one stylesheet, two
//! scripts. Served with their content type and `no-cache`, so a router upgrade is
//! seen at the next load (they are small; revalidation costs nothing).

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// (name under `/ui/assets/`, content type, bytes).
const FILES: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    ),
    (
        "login.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/login.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("assets/style.css"),
    ),
];

const DASHBOARD: &str = include_str!("assets/index.html");
const LOGIN: &str = include_str!("assets/login.html");

fn page(body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub async fn dashboard() -> Response {
    page(DASHBOARD)
}

pub async fn login() -> Response {
    page(LOGIN)
}

pub async fn file(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, ty, body)) => (
            [
                (header::CONTENT_TYPE, *ty),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *body,
        )
            .into_response(),
        None => {
            crate::api::ApiError::new(StatusCode::NOT_FOUND, format!("no dashboard file {name:?}"))
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file a page names is embedded, so a renamed file fails here, not in a
    /// browser.
    #[test]
    fn pages_name_only_embedded_files() {
        for page in [DASHBOARD, LOGIN] {
            for part in page.split("/ui/assets/").skip(1) {
                let name: String = part.chars().take_while(|c| *c != '"').collect();
                assert!(
                    FILES.iter().any(|(n, _, _)| *n == name),
                    "a page names /ui/assets/{name}, which is not embedded"
                );
            }
        }
    }
}
