//! A blocking HTTP client for the router's local API (the CLI needs nothing more).

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

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
    api: String,
    agent: ureq::Agent,
}

impl Client {
    pub fn new(api: &str, timeout: Option<Duration>) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout.unwrap_or(DEFAULT_TIMEOUT)))
            .proxy(None)
            .build();
        Self {
            api: api.to_owned(),
            agent: ureq::Agent::new_with_config(config),
        }
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = format!("http://{}{path}", self.api);
        let resp = self.agent.get(&url).call();
        self.finish(resp)
    }

    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let url = format!("http://{}{path}", self.api);
        let resp = self.agent.post(&url).send_json(body);
        self.finish(resp)
    }

    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = format!("http://{}{path}", self.api);
        let resp = self.agent.delete(&url).call();
        self.finish(resp)
    }

    fn finish<T: DeserializeOwned>(
        &self,
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, ClientError> {
        let mut resp = resp.map_err(|e| ClientError::Unreachable {
            api: self.api.clone(),
            reason: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| ClientError::Decode {
                api: self.api.clone(),
                reason: e.to_string(),
            })?;
        if !(200..300).contains(&status) {
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_else(|| format!("HTTP {status}: {text}"));
            return Err(ClientError::Api { status, message });
        }
        serde_json::from_str(&text).map_err(|e| ClientError::Decode {
            api: self.api.clone(),
            reason: e.to_string(),
        })
    }
}
