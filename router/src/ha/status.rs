//! `GET /v1/status` of a replicated router says this router's `role` and the
//! `leader`'s name: the leader's term adds them to its own answer (a layer on its
//! API), a follower to the answer it forwarded. A single router says `single`.

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, Method};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;

/// `body` (a status JSON object) with `role` and `leader` set; anything else as it is.
pub fn with_role(body: &[u8], role: &str, leader: Option<&str>) -> Bytes {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(mut m)) => {
            m.insert("role".into(), role.into());
            m.insert(
                "leader".into(),
                leader.map(serde_json::Value::from).unwrap_or_default(),
            );
            serde_json::to_vec(&m).map(Bytes::from).unwrap_or_default()
        }
        _ => Bytes::copy_from_slice(body),
    }
}

/// The leader's API: its status says it leads, under `name`.
pub fn as_leader(app: Router, name: String) -> Router {
    app.layer(middleware::from_fn(move |req: Request, next: Next| {
        let name = name.clone();
        async move {
            let status = req.method() == Method::GET && req.uri().path() == "/v1/status";
            let resp = next.run(req).await;
            if !status || !resp.status().is_success() {
                return resp;
            }
            let (mut parts, body) = resp.into_parts();
            let bytes = axum::body::to_bytes(body, 1 << 20)
                .await
                .unwrap_or_default();
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(with_role(&bytes, "leader", Some(&name))))
        }
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_role_and_leader_are_set_and_other_bodies_pass_unchanged() {
        let b = with_role(
            br#"{"version":"1","role":"single","leader":null}"#,
            "follower",
            Some("r1"),
        );
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["role"], "follower");
        assert_eq!(v["leader"], "r1");
        assert_eq!(v["version"], "1");
        assert_eq!(&with_role(b"[1]", "leader", None)[..], b"[1]");
    }
}
