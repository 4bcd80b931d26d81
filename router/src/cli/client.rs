//! A blocking client for the router's API (the CLI needs nothing more): JSON in and
//! out over the transport of [`super::transport`].

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use super::transport::Api;

/// Requests that take long on purpose (a migration, a wake) raise their own timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the router API at {api}: is `router serve` running? ({reason})")]
    Unreachable { api: String, reason: String },
    #[error("{message}")]
    Api { status: u16, message: String },
    #[error("unexpected answer from the router API at {api}: {reason}")]
    Decode { api: String, reason: String },
}

#[derive(Debug)]
pub struct Client {
    api: Api,
    timeout: Duration,
}

impl Client {
    /// A client of `api`: an [`Api`] (with its token), or a target string without one.
    pub fn new(api: impl Into<Api>, timeout: Option<Duration>) -> Self {
        Self {
            api: api.into(),
            timeout: timeout.unwrap_or(DEFAULT_TIMEOUT),
        }
    }

    /// Presents `token` as a bearer token (tests; the CLI reads it from a file).
    pub fn with_token(mut self, token: &[u8]) -> Self {
        self.api.token = Some(wisp_common::secret::Secret::from_bytes(token.to_vec()));
        self
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call("GET", path, None)
    }

    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Decode {
            api: self.api.target.to_string(),
            reason: e.to_string(),
        })?;
        self.call("POST", path, Some(&body))
    }

    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call("DELETE", path, None)
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<T, ClientError> {
        let api = || self.api.target.to_string();
        let (status, bytes) = self
            .api
            .request(method, path, body, self.timeout)
            .map_err(|e| ClientError::Unreachable {
                api: api(),
                reason: e.to_string(),
            })?;
        let text = String::from_utf8_lossy(&bytes);
        if !(200..300).contains(&status) {
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_else(|| format!("HTTP {status}: {text}"));
            return Err(ClientError::Api { status, message });
        }
        serde_json::from_str(&text).map_err(|e| ClientError::Decode {
            api: api(),
            reason: e.to_string(),
        })
    }
}
