//! A tiny blocking etcd v3 client over etcd's JSON gateway (HTTP/1.1 POSTs to
//! `/v3/kv/range`, `/v3/kv/txn`, `/v3/lease/grant`, ...), so neither the router nor
//! the genie needs protoc or a gRPC stack: the calls they make are few and small.
//! Behind this crate's `etcd` feature, so that what does not talk to etcd does not
//! build an HTTP client.
//!
//! Facts of etcd 3.4's gateway this relies on (checked against etcd 3.4.23):
//! - keys and values travel base64-encoded; 64-bit numbers come back as JSON strings
//!   (and are accepted as strings), fields equal to zero/false/empty are left out;
//! - an error is a non-2xx status with `{"error","message","code"}` (a gRPC code:
//!   3 invalid argument, e.g. "too many operations in txn request" beyond 128 ops or
//!   "request is too large" beyond 1.5 MiB; 5 not found, e.g. "requested lease not
//!   found"; 14 unavailable);
//! - `/v3/lease/keepalive` answers one renewal per request as `{"result":{...}}`,
//!   without `TTL` when the lease is gone.
//!
//! Several endpoints may be given: a call goes to the one that answered last, and on
//! a connection error, a timeout or "unavailable" moves on to the next, each attempt
//! bounded by a short timeout (a member cut off from its peers hangs rather than
//! fails). Every call the router and the genie make is safe to repeat: a put or a conditional txn
//! that may have been applied before its answer was lost writes the same thing again.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Per-attempt timeout by default: a loopback or LAN round trip takes milliseconds;
/// anything slower is a member that cannot reach its peers.
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(500);

/// The prefix of the genies' liveness keys of cluster `cluster`: each genie keeps
/// `<prefix><host>` alive with a lease of its own (replicated routers).
pub fn genies_prefix(cluster: &str) -> String {
    format!("/wisp/{cluster}/genies/")
}

/// Genie `host`'s liveness key (see [`genies_prefix`]).
pub fn genie_key(cluster: &str, host: &str) -> String {
    format!("{}{host}", genies_prefix(cluster))
}

/// etcd's default `--max-txn-ops`: more operations in one txn are refused.
pub const MAX_TXN_OPS: usize = 128;

/// gRPC status codes etcd uses in its error answers.
const CODE_NOT_FOUND: i32 = 5;
const CODE_UNAVAILABLE: i32 = 14;

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("no etcd endpoint given")]
    NoEndpoints,
    #[error("bad etcd endpoint {endpoint:?}: {reason}")]
    BadEndpoint { endpoint: String, reason: String },
    #[error("no etcd endpoint answered {op} of {key} ({})", tried.join("; "))]
    Unreachable {
        op: &'static str,
        key: String,
        /// "endpoint: reason" for each endpoint tried.
        tried: Vec<String>,
    },
    #[error("etcd at {endpoint} refused {op} of {key}: {message} (code {code}, HTTP {status})")]
    Server {
        endpoint: String,
        op: &'static str,
        key: String,
        status: u16,
        code: i32,
        message: String,
    },
    #[error("unexpected answer from etcd at {endpoint} to {op} of {key}: {reason}")]
    Decode {
        endpoint: String,
        op: &'static str,
        key: String,
        reason: String,
    },
}

impl EtcdError {
    /// etcd says the lease does not exist (expired or revoked).
    pub fn is_lease_not_found(&self) -> bool {
        matches!(self, EtcdError::Server { code, message, .. }
            if *code == CODE_NOT_FOUND && message.contains("lease not found"))
    }
}

/// A key-value pair as etcd returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    /// 0 when the key has no lease.
    pub lease: i64,
}

/// A range read: `key` alone, or `[key, range_end)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Range {
    pub key: String,
    pub range_end: Option<String>,
    /// 0: no limit.
    pub limit: i64,
    /// Newest key first (sorted by key, descending).
    pub descending: bool,
    pub keys_only: bool,
}

impl Range {
    pub fn key(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            ..Default::default()
        }
    }

    /// Keys in `[start, end)`.
    pub fn between(start: impl Into<String>, end: impl Into<String>) -> Self {
        Self {
            key: start.into(),
            range_end: Some(end.into()),
            ..Default::default()
        }
    }
}

/// A compare of a txn; all compare for equality.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmp {
    /// The key's create revision (0: the key does not exist).
    CreateRevision(String, i64),
    /// The key's last modification revision (0: the key does not exist).
    ModRevision(String, i64),
    /// The key's lease (0: none).
    Lease(String, i64),
}

/// An operation of a txn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Get(Range),
    Put {
        key: String,
        value: Vec<u8>,
        /// 0: no lease.
        lease: i64,
    },
    /// Deletes `[key, range_end)` (`key` alone when `range_end` is `None`).
    Delete {
        key: String,
        range_end: Option<String>,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compare: Vec<Cmp>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    Range(Vec<Kv>),
    Put,
    Delete { deleted: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResult {
    pub succeeded: bool,
    /// The store's revision after the txn (the revision of its writes if it wrote).
    pub revision: i64,
    pub results: Vec<OpResult>,
}

/// A granted lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    /// As granted: etcd raises a TTL below its minimum (1.5 election timeouts, so 2 s
    /// with `--election-timeout 1000`).
    pub ttl: Duration,
}

/// A blocking client for a few etcd endpoints; cheap to clone (clones share the
/// connection pool and the endpoint that answered last).
#[derive(Clone)]
pub struct EtcdClient {
    endpoints: Arc<[String]>,
    agent: ureq::Agent,
    /// Index of the endpoint that answered last: tried first.
    preferred: Arc<AtomicUsize>,
    per_attempt: Duration,
    /// Every call, all attempts included, ends within this (see [`Self::bounded`]).
    budget: Option<Duration>,
}

impl fmt::Debug for EtcdClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdClient")
            .field("endpoints", &self.endpoints)
            .field("per_attempt", &self.per_attempt)
            .field("budget", &self.budget)
            .finish()
    }
}

impl EtcdClient {
    /// `endpoints` are `host:port` or `http://host:port` (TLS is not supported).
    pub fn new(endpoints: &[String], per_attempt: Duration) -> Result<Self, EtcdError> {
        if endpoints.is_empty() {
            return Err(EtcdError::NoEndpoints);
        }
        let endpoints = endpoints
            .iter()
            .map(|e| normalize_endpoint(e))
            .collect::<Result<Vec<_>, _>>()?;
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(per_attempt))
            .proxy(None)
            .build();
        Ok(Self {
            endpoints: endpoints.into(),
            agent: ureq::Agent::new_with_config(config),
            preferred: Arc::new(AtomicUsize::new(0)),
            per_attempt,
            budget: None,
        })
    }

    /// The endpoints, as base URLs.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// A clone whose every call, all endpoints tried included, ends within `budget`:
    /// for callers that must act by a deadline (a leader whose lease runs out).
    pub fn bounded(&self, budget: Duration) -> Self {
        Self {
            budget: Some(budget),
            ..self.clone()
        }
    }

    /// The value at `key`, if any.
    pub fn get(&self, key: &str) -> Result<Option<Kv>, EtcdError> {
        Ok(self.range(&Range::key(key))?.into_iter().next())
    }

    /// A linearizable read of `range`.
    pub fn range(&self, range: &Range) -> Result<Vec<Kv>, EtcdError> {
        let r: RangeResponseJson =
            self.call("/v3/kv/range", "range", &range.key, &range_json(range))?;
        decode_kvs(r.kvs).map_err(|reason| self.decode_err("range", &range.key, reason))
    }

    /// Puts `value` at `key` (with `lease` unless 0); returns the new revision.
    pub fn put(&self, key: &str, value: &[u8], lease: i64) -> Result<i64, EtcdError> {
        let body = PutJson {
            key: B64.encode(key),
            value: B64.encode(value),
            lease,
        };
        let r: HeaderOnly = self.call("/v3/kv/put", "put", key, &body)?;
        Ok(r.header.revision)
    }

    /// Runs `txn` atomically.
    pub fn txn(&self, txn: &Txn) -> Result<TxnResult, EtcdError> {
        let key = txn_key(txn);
        let r: TxnResponseJson = self.call("/v3/kv/txn", "txn", &key, &txn_json(txn))?;
        decode_txn(r).map_err(|reason| self.decode_err("txn", &key, reason))
    }

    /// Grants a lease of `ttl` (rounded up to whole seconds; etcd may raise it).
    pub fn lease_grant(&self, ttl: Duration) -> Result<Lease, EtcdError> {
        let secs = ttl.as_millis().div_ceil(1000).max(1) as i64;
        let body = GrantJson { ttl: secs, id: 0 };
        let r: GrantResponseJson = self.call("/v3/lease/grant", "lease grant", "-", &body)?;
        if r.id == 0 || r.ttl <= 0 {
            return Err(self.decode_err(
                "lease grant",
                "-",
                format!("no lease in the answer ({r:?})"),
            ));
        }
        Ok(Lease {
            id: r.id,
            ttl: Duration::from_secs(r.ttl as u64),
        })
    }

    /// Renews lease `id`; returns its TTL, or `None` when the lease is gone (expired
    /// or revoked).
    pub fn lease_keepalive(&self, id: i64) -> Result<Option<Duration>, EtcdError> {
        let key = format!("lease {id:x}");
        let r: KeepAliveJson = self.call(
            "/v3/lease/keepalive",
            "lease keepalive",
            &key,
            &IdJson { id },
        )?;
        Ok((r.result.ttl > 0).then(|| Duration::from_secs(r.result.ttl as u64)))
    }

    /// Revokes lease `id` (its keys are deleted at once); `false` if it was gone.
    pub fn lease_revoke(&self, id: i64) -> Result<bool, EtcdError> {
        let key = format!("lease {id:x}");
        match self.call::<HeaderOnly>("/v3/lease/revoke", "lease revoke", &key, &IdJson { id }) {
            Ok(_) => Ok(true),
            Err(e) if e.is_lease_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Drops the history before `revision` (etcd keeps every revision until compacted).
    pub fn compact(&self, revision: i64) -> Result<(), EtcdError> {
        let body = CompactJson { revision };
        self.call::<HeaderOnly>("/v3/kv/compaction", "compaction", "-", &body)?;
        Ok(())
    }

    fn decode_err(&self, op: &'static str, key: &str, reason: String) -> EtcdError {
        EtcdError::Decode {
            endpoint: self.endpoints[self.preferred.load(Ordering::Relaxed) % self.endpoints.len()]
                .clone(),
            op,
            key: key.to_owned(),
            reason,
        }
    }

    /// POSTs `body` to `path` on the preferred endpoint, moving on to the next on a
    /// connection error, timeout or "unavailable" answer.
    fn call<T: DeserializeOwned>(
        &self,
        path: &str,
        op: &'static str,
        key: &str,
        body: &impl Serialize,
    ) -> Result<T, EtcdError> {
        let body = serde_json::to_vec(body).map_err(|e| EtcdError::Decode {
            endpoint: "-".into(),
            op,
            key: key.to_owned(),
            reason: format!("cannot encode the request: {e}"),
        })?;
        let start = Instant::now();
        let n = self.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed);
        let mut tried = Vec::new();
        for i in 0..n {
            let idx = (first + i) % n;
            let endpoint = &self.endpoints[idx];
            let timeout = match self.budget {
                Some(b) => match b.checked_sub(start.elapsed()) {
                    Some(left) if !left.is_zero() => left.min(self.per_attempt),
                    _ => {
                        tried.push(format!("{endpoint}: not tried, out of time"));
                        break;
                    }
                },
                None => self.per_attempt,
            };
            match self.attempt(endpoint, path, op, key, &body, timeout) {
                Ok(v) => {
                    self.preferred.store(idx, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(Attempt::Next(reason)) => tried.push(format!("{endpoint}: {reason}")),
                Err(Attempt::Fatal(e)) => {
                    // The member answered: it is a good one to ask next time.
                    self.preferred.store(idx, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
        Err(EtcdError::Unreachable {
            op,
            key: key.to_owned(),
            tried,
        })
    }

    fn attempt<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        path: &str,
        op: &'static str,
        key: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<T, Attempt> {
        let url = format!("{endpoint}{path}");
        let mut resp = self
            .agent
            .post(&url)
            .header("content-type", "application/json")
            .config()
            .timeout_global(Some(timeout))
            .build()
            .send(body)
            .map_err(|e| Attempt::Next(e.to_string()))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| Attempt::Next(format!("reading the answer: {e}")))?;
        let decode = |reason: String| {
            Attempt::Fatal(EtcdError::Decode {
                endpoint: endpoint.to_owned(),
                op,
                key: key.to_owned(),
                reason,
            })
        };
        if !(200..300).contains(&status) {
            let err: ErrorJson = serde_json::from_str(&text)
                .map_err(|_| decode(format!("HTTP {status}: {}", snippet(&text))))?;
            if err.code == CODE_UNAVAILABLE || status == 503 {
                return Err(Attempt::Next(format!("unavailable: {}", err.message)));
            }
            return Err(Attempt::Fatal(EtcdError::Server {
                endpoint: endpoint.to_owned(),
                op,
                key: key.to_owned(),
                status,
                code: err.code,
                message: err.message,
            }));
        }
        serde_json::from_str(&text).map_err(|e| decode(format!("{e}: {}", snippet(&text))))
    }
}

enum Attempt {
    /// Try the next endpoint: this one could not be reached or cannot serve.
    Next(String),
    /// The answer stands (a refusal or a malformed answer).
    Fatal(EtcdError),
}

fn snippet(text: &str) -> &str {
    let end = text.char_indices().nth(200).map_or(text.len(), |(i, _)| i);
    &text[..end]
}

fn normalize_endpoint(e: &str) -> Result<String, EtcdError> {
    let bad = |reason: &str| EtcdError::BadEndpoint {
        endpoint: e.to_owned(),
        reason: reason.to_owned(),
    };
    if e.starts_with("https://") {
        return Err(bad(
            "TLS is not supported; use http:// on a trusted network",
        ));
    }
    let rest = e.strip_prefix("http://").unwrap_or(e).trim_end_matches('/');
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| bad("expected host:port"))?;
    if host.is_empty() || rest.contains('/') {
        return Err(bad("expected host:port"));
    }
    port.parse::<u16>()
        .map_err(|_| bad("the port is not a number from 1 to 65535"))?;
    Ok(format!("http://{rest}"))
}

/// What a txn is about, for errors: the key of its first compare or operation.
fn txn_key(txn: &Txn) -> String {
    let from_cmp = txn.compare.first().map(|c| match c {
        Cmp::CreateRevision(k, _) | Cmp::ModRevision(k, _) | Cmp::Lease(k, _) => k.clone(),
    });
    let from_op = || {
        txn.success.first().map(|o| match o {
            Op::Get(r) => r.key.clone(),
            Op::Put { key, .. } | Op::Delete { key, .. } => key.clone(),
        })
    };
    from_cmp.or_else(from_op).unwrap_or_else(|| "-".into())
}

// ---- JSON shapes of the gateway ----

/// A 64-bit number as etcd's gateway writes it: a string (a number also accepted).
fn de_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        S(String),
        I(i64),
    }
    match N::deserialize(d)? {
        N::I(i) => Ok(i),
        N::S(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

fn ser_i64<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&v.to_string())
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

#[derive(Debug, Serialize)]
struct RangeJson {
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    range_end: Option<String>,
    #[serde(serialize_with = "ser_i64", skip_serializing_if = "is_zero")]
    limit: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    sort_order: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sort_target: Option<&'static str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    keys_only: bool,
}

fn range_json(r: &Range) -> RangeJson {
    RangeJson {
        key: B64.encode(&r.key),
        range_end: r.range_end.as_ref().map(|e| B64.encode(e)),
        limit: r.limit,
        sort_order: r.descending.then_some("DESCEND"),
        sort_target: r.descending.then_some("KEY"),
        keys_only: r.keys_only,
    }
}

#[derive(Debug, Serialize)]
struct PutJson {
    key: String,
    value: String,
    #[serde(serialize_with = "ser_i64", skip_serializing_if = "is_zero")]
    lease: i64,
}

#[derive(Debug, Serialize)]
struct DeleteJson {
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    range_end: Option<String>,
}

#[derive(Debug, Serialize)]
struct CompareJson {
    key: String,
    target: &'static str,
    result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    create_revision: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mod_revision: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lease: Option<String>,
}

#[derive(Debug, Serialize)]
enum OpJson {
    #[serde(rename = "request_range")]
    Range(RangeJson),
    #[serde(rename = "request_put")]
    Put(PutJson),
    #[serde(rename = "request_delete_range")]
    Delete(DeleteJson),
}

#[derive(Debug, Serialize)]
struct TxnJson {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    compare: Vec<CompareJson>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    success: Vec<OpJson>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    failure: Vec<OpJson>,
}

fn cmp_json(c: &Cmp) -> CompareJson {
    let (key, target, n) = match c {
        Cmp::CreateRevision(k, n) => (k, "CREATE", n),
        Cmp::ModRevision(k, n) => (k, "MOD", n),
        Cmp::Lease(k, n) => (k, "LEASE", n),
    };
    let n = Some(n.to_string());
    CompareJson {
        key: B64.encode(key),
        target,
        result: "EQUAL",
        create_revision: matches!(c, Cmp::CreateRevision(..))
            .then(|| n.clone())
            .flatten(),
        mod_revision: matches!(c, Cmp::ModRevision(..))
            .then(|| n.clone())
            .flatten(),
        lease: matches!(c, Cmp::Lease(..)).then_some(n).flatten(),
    }
}

fn op_json(o: &Op) -> OpJson {
    match o {
        Op::Get(r) => OpJson::Range(range_json(r)),
        Op::Put { key, value, lease } => OpJson::Put(PutJson {
            key: B64.encode(key),
            value: B64.encode(value),
            lease: *lease,
        }),
        Op::Delete { key, range_end } => OpJson::Delete(DeleteJson {
            key: B64.encode(key),
            range_end: range_end.as_ref().map(|e| B64.encode(e)),
        }),
    }
}

fn txn_json(t: &Txn) -> TxnJson {
    TxnJson {
        compare: t.compare.iter().map(cmp_json).collect(),
        success: t.success.iter().map(op_json).collect(),
        failure: t.failure.iter().map(op_json).collect(),
    }
}

#[derive(Debug, Serialize)]
struct GrantJson {
    #[serde(rename = "TTL", serialize_with = "ser_i64")]
    ttl: i64,
    #[serde(
        rename = "ID",
        serialize_with = "ser_i64",
        skip_serializing_if = "is_zero"
    )]
    id: i64,
}

#[derive(Debug, Serialize)]
struct IdJson {
    #[serde(rename = "ID", serialize_with = "ser_i64")]
    id: i64,
}

#[derive(Debug, Serialize)]
struct CompactJson {
    #[serde(serialize_with = "ser_i64")]
    revision: i64,
}

#[derive(Debug, Default, Deserialize)]
struct HeaderJson {
    #[serde(default, deserialize_with = "de_i64")]
    revision: i64,
}

#[derive(Debug, Deserialize)]
struct HeaderOnly {
    #[serde(default)]
    header: HeaderJson,
}

#[derive(Debug, Deserialize)]
struct ErrorJson {
    #[serde(default)]
    code: i32,
    #[serde(default)]
    message: String,
}

#[derive(Debug, Deserialize)]
struct KvJson {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default, deserialize_with = "de_i64")]
    create_revision: i64,
    #[serde(default, deserialize_with = "de_i64")]
    mod_revision: i64,
    #[serde(default, deserialize_with = "de_i64")]
    version: i64,
    #[serde(default, deserialize_with = "de_i64")]
    lease: i64,
}

#[derive(Debug, Deserialize)]
struct RangeResponseJson {
    #[serde(default)]
    kvs: Vec<KvJson>,
}

#[derive(Debug, Deserialize)]
struct DeleteResponseJson {
    #[serde(default, deserialize_with = "de_i64")]
    deleted: i64,
}

#[derive(Debug, Deserialize)]
enum OpResponseJson {
    #[serde(rename = "response_range")]
    Range(RangeResponseJson),
    #[serde(rename = "response_put")]
    Put(serde::de::IgnoredAny),
    #[serde(rename = "response_delete_range")]
    Delete(DeleteResponseJson),
}

#[derive(Debug, Deserialize)]
struct TxnResponseJson {
    #[serde(default)]
    header: HeaderJson,
    #[serde(default)]
    succeeded: bool,
    #[serde(default)]
    responses: Vec<OpResponseJson>,
}

#[derive(Debug, Deserialize)]
struct GrantResponseJson {
    #[serde(rename = "ID", default, deserialize_with = "de_i64")]
    id: i64,
    #[serde(rename = "TTL", default, deserialize_with = "de_i64")]
    ttl: i64,
}

#[derive(Debug, Default, Deserialize)]
struct KeepAliveResultJson {
    #[serde(rename = "TTL", default, deserialize_with = "de_i64")]
    ttl: i64,
}

#[derive(Debug, Deserialize)]
struct KeepAliveJson {
    #[serde(default)]
    result: KeepAliveResultJson,
}

fn decode_kvs(kvs: Vec<KvJson>) -> Result<Vec<Kv>, String> {
    kvs.into_iter()
        .map(|k| {
            let key = B64
                .decode(&k.key)
                .map_err(|e| format!("a key is not base64: {e}"))?;
            let value = B64.decode(&k.value).map_err(|e| {
                format!(
                    "the value of {} is not base64: {e}",
                    String::from_utf8_lossy(&key)
                )
            })?;
            Ok(Kv {
                key: String::from_utf8_lossy(&key).into_owned(),
                value,
                create_revision: k.create_revision,
                mod_revision: k.mod_revision,
                version: k.version,
                lease: k.lease,
            })
        })
        .collect()
}

fn decode_txn(r: TxnResponseJson) -> Result<TxnResult, String> {
    let results = r
        .responses
        .into_iter()
        .map(|o| {
            Ok(match o {
                OpResponseJson::Range(rr) => OpResult::Range(decode_kvs(rr.kvs)?),
                OpResponseJson::Put(_) => OpResult::Put,
                OpResponseJson::Delete(d) => OpResult::Delete { deleted: d.deleted },
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(TxnResult {
        succeeded: r.succeeded,
        revision: r.header.revision,
        results,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn a_conditional_txn_encodes_as_the_gateway_expects() {
        let txn = Txn {
            compare: vec![
                Cmp::CreateRevision("/l".into(), 0),
                Cmp::Lease("/l".into(), 7),
                Cmp::ModRevision("/s".into(), 12),
            ],
            success: vec![Op::Put {
                key: "/l".into(),
                value: b"me".to_vec(),
                lease: 7,
            }],
            failure: vec![
                Op::Get(Range::key("/l")),
                Op::Delete {
                    key: "/e/0".into(),
                    range_end: Some("/e/5".into()),
                },
            ],
        };
        let got = serde_json::to_value(txn_json(&txn)).unwrap();
        let want = json!({
            "compare": [
                {"key": "L2w=", "target": "CREATE", "result": "EQUAL", "create_revision": "0"},
                {"key": "L2w=", "target": "LEASE", "result": "EQUAL", "lease": "7"},
                {"key": "L3M=", "target": "MOD", "result": "EQUAL", "mod_revision": "12"},
            ],
            "success": [{"request_put": {"key": "L2w=", "value": "bWU=", "lease": "7"}}],
            "failure": [
                {"request_range": {"key": "L2w="}},
                {"request_delete_range": {"key": "L2UvMA==", "range_end": "L2UvNQ=="}},
            ],
        });
        assert_eq!(got, want);
    }

    #[test]
    fn ranges_and_leases_encode_as_the_gateway_expects() {
        let r = Range {
            limit: 2,
            descending: true,
            keys_only: true,
            ..Range::between("/e/", "/e0")
        };
        assert_eq!(
            serde_json::to_value(range_json(&r)).unwrap(),
            json!({"key": "L2Uv", "range_end": "L2Uw", "limit": "2",
                   "sort_order": "DESCEND", "sort_target": "KEY", "keys_only": true})
        );
        assert_eq!(
            serde_json::to_value(GrantJson { ttl: 2, id: 0 }).unwrap(),
            json!({"TTL": "2"})
        );
        assert_eq!(
            serde_json::to_value(IdJson {
                id: 4111120379632433426
            })
            .unwrap(),
            json!({"ID": "4111120379632433426"})
        );
    }

    #[test]
    fn answers_of_etcd_3_4_decode() {
        // Captured from etcd 3.4.23: a failed compare leaves `succeeded` out, numbers
        // are strings, a put's response is nearly empty.
        let failed: TxnResponseJson = serde_json::from_str(
            r#"{"header":{"cluster_id":"1","member_id":"2","revision":"3","raft_term":"2"},
                "responses":[{"response_range":{"header":{"revision":"3"},
                "kvs":[{"key":"L2w=","create_revision":"3","mod_revision":"3","version":"1",
                "value":"bWU=","lease":"4111120379632433426"}],"count":"1"}}]}"#,
        )
        .unwrap();
        let t = decode_txn(failed).unwrap();
        assert!(!t.succeeded);
        assert_eq!(t.revision, 3);
        assert_eq!(
            t.results,
            vec![OpResult::Range(vec![Kv {
                key: "/l".into(),
                value: b"me".to_vec(),
                create_revision: 3,
                mod_revision: 3,
                version: 1,
                lease: 4111120379632433426,
            }])]
        );
        let ok: TxnResponseJson = serde_json::from_str(
            r#"{"header":{"revision":"5"},"succeeded":true,"responses":[
                {"response_put":{"header":{"revision":"5"}}},
                {"response_delete_range":{"header":{"revision":"5"},"deleted":"2"}}]}"#,
        )
        .unwrap();
        let t = decode_txn(ok).unwrap();
        assert!(t.succeeded);
        assert_eq!(
            t.results,
            vec![OpResult::Put, OpResult::Delete { deleted: 2 }]
        );

        // A keepalive of a lease that is gone has no TTL.
        let gone: KeepAliveJson =
            serde_json::from_str(r#"{"result":{"header":{"revision":"2"},"ID":"12345"}}"#).unwrap();
        assert_eq!(gone.result.ttl, 0);
        let alive: KeepAliveJson =
            serde_json::from_str(r#"{"result":{"ID":"7","TTL":"2"}}"#).unwrap();
        assert_eq!(alive.result.ttl, 2);
        // An empty range has no `kvs`.
        let empty: RangeResponseJson =
            serde_json::from_str(r#"{"header":{"revision":"2"}}"#).unwrap();
        assert!(decode_kvs(empty.kvs).unwrap().is_empty());
    }

    #[test]
    fn a_value_that_is_not_base64_is_a_decode_error_naming_the_key() {
        let kvs = vec![KvJson {
            key: "L2w=".into(),
            value: "!!".into(),
            create_revision: 1,
            mod_revision: 1,
            version: 1,
            lease: 0,
        }];
        let e = decode_kvs(kvs).unwrap_err();
        assert!(e.contains("/l"), "{e}");
    }

    #[test]
    fn endpoints_are_checked_and_normalized() {
        let ok = |e: &str| normalize_endpoint(e).unwrap();
        assert_eq!(ok("127.0.0.1:2379"), "http://127.0.0.1:2379");
        assert_eq!(ok("http://etcd1:2379/"), "http://etcd1:2379");
        for bad in ["etcd1", "https://etcd1:2379", "etcd1:x", ":2379", "h:1/v3"] {
            let e = normalize_endpoint(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
        assert!(matches!(
            EtcdClient::new(&[], REQUEST_TIMEOUT),
            Err(EtcdError::NoEndpoints)
        ));
    }

    #[test]
    fn an_unreachable_endpoint_is_named_and_the_call_ends_within_its_budget() {
        // Port 9 on loopback: nothing listens (connection refused at once).
        let c = EtcdClient::new(
            &["127.0.0.1:9".into(), "127.0.0.1:9".into()],
            REQUEST_TIMEOUT,
        )
        .unwrap()
        .bounded(Duration::from_millis(300));
        let t = Instant::now();
        let e = c.get("/wisp/x/state").unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        let s = e.to_string();
        assert!(
            s.contains("127.0.0.1:9") && s.contains("/wisp/x/state"),
            "{s}"
        );
    }
}
