//! `consul://HOST:PORT/PREFIX`, `consul+ssl://` (verifying the server) and
//! `consul+ssl+noverify://`: Consul's KV HTTP API.
//!
//! - The key `/a/b` under the prefix `/puppet` is the Consul key `puppet/a/b`
//!   (Consul keys have no leading `/`), each segment URL-encoded. Values travel as
//!   raw bytes: `?raw` on reads of one value, the base64 `Value` of JSON answers.
//! - A key's sequence is its `ModifyIndex`. `atomic_create` is `PUT ?cas=0` and
//!   `atomic_put` `PUT ?cas=<sequence>`. `atomic_delete` is one transaction
//!   (`/v1/txn`: `check-index`, then `delete`), since Consul answers `true` to
//!   `DELETE ?cas=` when the key is already gone. Consul checks and writes in one
//!   step, so of racing writers with the same `previous` exactly one wins.
//!   `list` and `atomic_list` are one `GET ?recurse`, `deletetree` one
//!   `DELETE ?recurse`, on `PREFIX/dir/`. Reads ask for `?consistent`.
//! - The `token` auth setting is sent as `X-Consul-Token`; URLs never hold it.
//! - One HTTP client (with its connection pool) per URL and auth settings in a
//!   process, made on the first call, dropped after a connection failure and after
//!   `fork`. Every call ends within the store's timeout.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use reqwest::{Client, Method, StatusCode};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::key::Key;
use crate::options::Auth;
use crate::remote::{batches, describe, ClientCache, Failure, PemFile, Remote};
use crate::store::{Listing, Store, Versioned};
use crate::url::{ConsulTls, StoreUrl};
use crate::value::Value;

pub struct ConsulStore {
    /// Its URL and server, as errors name them.
    remote: Remote,
    /// `http(s)://HOST:PORT`
    base: String,
    /// The Consul key prefix: "" or "puppet/".
    prefix: String,
    client_key: ClientKey,
    timeout: Duration,
}

/// What an HTTP client is made from: stores with the same share one.
#[derive(Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    base: String,
    tls: ConsulTls,
    auth: Auth,
}

static CLIENTS: ClientCache<ClientKey, Client> = ClientCache::new();

/// What to do when Consul refuses the token.
const TOKEN_ADVICE: &str = "check the token in auth and its ACL policy";

/// One entry of Consul's JSON answers.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KvPair {
    key: String,
    value: Option<String>,
    modify_index: u64,
}

/// The errors of a transaction Consul did not apply.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct TxnErrors {
    #[serde(default)]
    errors: Vec<TxnError>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TxnError {
    what: String,
}

impl ConsulStore {
    /// A store for the URL's server and prefix. Nothing is connected until the first
    /// call.
    pub fn open(url: &StoreUrl, auth: &Auth, timeout: Duration) -> Result<ConsulStore> {
        let StoreUrl::Consul {
            tls,
            endpoint,
            prefix,
        } = url
        else {
            unreachable!("ConsulStore::open is given Consul URLs only")
        };
        auth.only("consul", &["token", "ca_file", "cert_file", "key_file"])?;
        if auth.get("cert_file").is_some() != auth.get("key_file").is_some() {
            return Err(Error::InvalidArgument(
                "consul auth needs both cert_file and key_file, or neither".into(),
            ));
        }
        let has_tls_files = ["ca_file", "cert_file", "key_file"]
            .iter()
            .any(|k| auth.get(k).is_some());
        if has_tls_files && *tls == ConsulTls::None {
            return Err(Error::InvalidArgument(
                "ca_file, cert_file and key_file are for TLS: use a consul+ssl:// URL".into(),
            ));
        }
        let scheme = if *tls == ConsulTls::None {
            "http"
        } else {
            "https"
        };
        let base = format!("{scheme}://{endpoint}");
        Ok(ConsulStore {
            remote: Remote {
                url: url.to_string(),
                service: "Consul",
                at: base.clone(),
                tls_scheme: "consul+ssl",
            },
            prefix: if prefix.is_root() {
                String::new()
            } else {
                format!("{}/", &prefix.as_str()[1..])
            },
            client_key: ClientKey {
                base: base.clone(),
                tls: *tls,
                auth: auth.clone(),
            },
            base,
            timeout,
        })
    }

    /// The Consul key of a key (or, ending in `/`, of a directory).
    fn consul_key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key.trim_start_matches('/'))
    }

    /// The URL of a key (or, ending in `/`, a directory) in `/v1/kv/`.
    fn kv_url(&self, key: &str) -> String {
        let mut url = format!("{}/v1/kv/", self.base);
        for (i, segment) in self.consul_key(key).split('/').enumerate() {
            if i > 0 {
                url.push('/');
            }
            encode_segment(&mut url, segment);
        }
        url
    }

    fn dir_url(&self, dir: &Key) -> String {
        self.kv_url(&dir.dir_prefix())
    }

    /// The Consul key of `dir`'s entries start with this.
    fn consul_dir(&self, dir: &Key) -> String {
        self.consul_key(&dir.dir_prefix())
    }

    fn make_client(&self) -> std::result::Result<Client, Failure> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Failure::Settings(format!("TLS: {e}")))?;
        let auth = &self.client_key.auth;
        let builder = match self.client_key.tls {
            ConsulTls::NoVerify => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyServer(provider))),
            _ => {
                let mut roots = RootCertStore::empty();
                match auth.get("ca_file") {
                    Some(path) => {
                        let certs = PemFile::read("ca_file", path)
                            .and_then(|f| f.certs())
                            .map_err(Failure::Settings)?;
                        for cert in certs {
                            roots.add(cert).map_err(|e| {
                                Failure::Settings(format!(
                                    "ca_file {path} holds a bad certificate: {e}"
                                ))
                            })?;
                        }
                    }
                    None => {
                        let found = rustls_native_certs::load_native_certs();
                        roots.add_parsable_certificates(found.certs);
                    }
                }
                builder.with_root_certificates(roots)
            }
        };
        let tls = match (auth.get("cert_file"), auth.get("key_file")) {
            (Some(cert), Some(key)) => {
                let chain = PemFile::read("cert_file", cert)
                    .and_then(|f| f.certs())
                    .map_err(Failure::Settings)?;
                let key = PemFile::read("key_file", key)
                    .and_then(|f| f.key())
                    .map_err(Failure::Settings)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| Failure::Settings(format!("cert_file and key_file: {e}")))?
            }
            _ => builder.with_no_client_auth(),
        };
        Client::builder()
            .tls_backend_preconfigured(tls)
            // Consul is reached directly: proxy variables meant for the web do not apply.
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| {
                Failure::Settings(format!(
                    "cannot make the HTTP client: {}",
                    describe(None, Some(&e))
                ))
            })
    }

    fn client(&self) -> std::result::Result<(Client, u64), Failure> {
        if let Some(found) = CLIENTS.get(&self.client_key) {
            return Ok(found);
        }
        Ok(CLIENTS.insert(&self.client_key, self.make_client()?))
    }

    /// Sends one request within the timeout: the status and the body of a success,
    /// a 404 (absent) or a 409 (a transaction that did not apply).
    fn request(
        &self,
        op: &'static str,
        key: &str,
        method: Method,
        url: String,
        body: Option<&[u8]>,
    ) -> Result<(StatusCode, Vec<u8>)> {
        // The client the request went to, to drop that one only.
        let used = Cell::new(None);
        let sent = Cell::new(false);
        let request = async {
            let (client, generation) = self.client()?;
            used.set(Some(generation));
            let mut request = client.request(method, url);
            if let Some(token) = self.client_key.auth.get("token") {
                request = request.header("X-Consul-Token", token);
            }
            if let Some(body) = body {
                request = request.body(body.to_vec());
            }
            sent.set(true);
            let answer = async {
                let response = request.send().await?;
                let status = response.status();
                Ok((status, response.bytes().await?))
            };
            let (status, body) = answer.await.map_err(|e| {
                // A connection that failed is made again by the next call.
                CLIENTS.forget(&self.client_key, used.get());
                transport(e)
            })?;
            match status {
                s if s.is_success() || s == StatusCode::NOT_FOUND || s == StatusCode::CONFLICT => {
                    Ok((s, body.to_vec()))
                }
                StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => Err(Failure::Auth {
                    reason: text(&body),
                    advice: TOKEN_ADVICE.into(),
                }),
                StatusCode::PAYLOAD_TOO_LARGE => Err(Failure::Refused(format!(
                    "{} (the value is larger than Consul's kv_max_value_size)",
                    text(&body)
                ))),
                s => Err(Failure::Refused(format!("{s}: {}", text(&body)))),
            }
        };
        self.remote.run(op, key, self.timeout, &sent, request, || {
            CLIENTS.forget(&self.client_key, used.get())
        })
    }

    fn failed(&self, op: &'static str, key: &str, reason: impl std::fmt::Display) -> Error {
        self.remote.failed(op, key, reason)
    }

    fn unexpected(&self, op: &'static str, key: &str, status: StatusCode, body: &[u8]) -> Error {
        self.failed(
            op,
            key,
            format_args!("unexpected answer from Consul: {status}: {}", text(body)),
        )
    }

    /// A body Consul answers `true` or `false` to.
    fn boolean(&self, op: &'static str, key: &str, body: &[u8]) -> Result<bool> {
        match body.trim_ascii() {
            b"true" => Ok(true),
            b"false" => Ok(false),
            other => Err(self.failed(
                op,
                key,
                format_args!("expected true or false from Consul, got {:?}", text(other)),
            )),
        }
    }

    fn pairs(&self, op: &'static str, key: &str, body: &[u8]) -> Result<Vec<KvPair>> {
        serde_json::from_slice(body)
            .map_err(|e| self.failed(op, key, format_args!("cannot read Consul's answer: {e}")))
    }

    fn value(&self, op: &'static str, key: &str, pair: &KvPair) -> Result<Vec<u8>> {
        match &pair.value {
            None => Ok(Vec::new()),
            Some(b64) => BASE64.decode(b64).map_err(|e| {
                self.failed(
                    op,
                    key,
                    format_args!("cannot decode the value Consul sent: {e}"),
                )
            }),
        }
    }

    /// Every key below `dir`: relative key and the pair, sorted.
    fn below(&self, op: &'static str, dir: &Key) -> Result<Vec<(String, Vec<u8>, u64)>> {
        let url = format!("{}?recurse&consistent", self.dir_url(dir));
        let body = match self.request(op, dir.as_str(), Method::GET, url, None)? {
            (StatusCode::OK, body) => body,
            (StatusCode::NOT_FOUND, _) => return Ok(Vec::new()),
            (status, body) => return Err(self.unexpected(op, dir.as_str(), status, &body)),
        };
        let start = self.consul_dir(dir);
        let mut out = Vec::new();
        for pair in self.pairs(op, dir.as_str(), &body)? {
            // Folder entries ("dir/") and names another client wrote that no key
            // can have are not listed.
            if let Some(rel) = pair.key.strip_prefix(&start).filter(|rel| dir.lists(rel)) {
                out.push((
                    rel.to_owned(),
                    self.value(op, dir.as_str(), &pair)?,
                    pair.modify_index,
                ));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The key's value and ModifyIndex, for `op`.
    fn versioned(&self, op: &'static str, key: &Key) -> Result<Option<Versioned>> {
        let url = format!("{}?consistent", self.kv_url(key.as_str()));
        let body = match self.request(op, key.as_str(), Method::GET, url, None)? {
            (StatusCode::OK, body) => body,
            (StatusCode::NOT_FOUND, _) => return Ok(None),
            (status, body) => return Err(self.unexpected(op, key.as_str(), status, &body)),
        };
        let pairs = self.pairs(op, key.as_str(), &body)?;
        let Some(pair) = pairs.first() else {
            return Ok(None);
        };
        Ok(Some(Versioned {
            value: self.value(op, key.as_str(), pair)?,
            sequence: pair.modify_index,
        }))
    }

    fn put_cas(&self, op: &'static str, key: &Key, value: &[u8], cas: u64) -> Result<bool> {
        let url = format!("{}?cas={cas}", self.kv_url(key.as_str()));
        let (_, body) = self.request(op, key.as_str(), Method::PUT, url, Some(value))?;
        self.boolean(op, key.as_str(), &body)
    }
}

/// Appends a key segment, percent-encoding all but unreserved characters.
/// The most operations one Consul transaction takes.
const TXN_OPS: usize = 64;
/// The most value bytes one transaction carries (Consul's default
/// `txn_max_req_len` is 512 KiB, base64 included).
const TXN_BYTES: usize = 256 << 10;

fn encode_segment(out: &mut String, segment: &str) {
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

fn text(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let s = s.trim();
    match s.char_indices().nth(300) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_owned(),
    }
}

/// A request that failed on its way: never sent when no connection was made.
fn transport(e: reqwest::Error) -> Failure {
    // Never the request URL: it is named by the error's caller, and tokens are
    // headers, not query parameters.
    let connecting = e.is_connect();
    let reason = describe(None, Some(&e.without_url()));
    if connecting {
        Failure::Unsent {
            reason,
            answered: false,
        }
    } else {
        Failure::Lost {
            reason,
            answered: false,
        }
    }
}

/// consul+ssl+noverify://: encrypts, but accepts any server certificate.
#[derive(Debug)]
struct AnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl Store for ConsulStore {
    fn provider(&self) -> &'static str {
        "consul"
    }

    fn url(&self) -> &str {
        &self.remote.url
    }

    fn get(&self, key: &Key) -> Result<Option<Vec<u8>>> {
        let url = format!("{}?raw&consistent", self.kv_url(key.as_str()));
        match self.request("get", key.as_str(), Method::GET, url, None)? {
            (StatusCode::OK, body) => Ok(Some(body)),
            (StatusCode::NOT_FOUND, _) => Ok(None),
            (status, body) => Err(self.unexpected("get", key.as_str(), status, &body)),
        }
    }

    fn put(&self, key: &Key, value: &[u8]) -> Result<()> {
        let url = self.kv_url(key.as_str());
        let (_, body) = self.request("put", key.as_str(), Method::PUT, url, Some(value))?;
        match self.boolean("put", key.as_str(), &body)? {
            true => Ok(()),
            false => Err(self.failed("put", key.as_str(), "Consul did not store the value")),
        }
    }

    fn delete(&self, key: &Key) -> Result<()> {
        let url = self.kv_url(key.as_str());
        self.request("delete", key.as_str(), Method::DELETE, url, None)
            .map(|_| ())
    }

    fn exists(&self, key: &Key) -> Result<bool> {
        // ?keys answers the names that start with the key, cut after the next "/"
        // (so not every key below it): the key exists if its own name is among them.
        let url = format!("{}?keys&separator=/&consistent", self.kv_url(key.as_str()));
        match self.request("exists", key.as_str(), Method::GET, url, None)? {
            (StatusCode::OK, body) => {
                let keys: Vec<String> = serde_json::from_slice(&body).map_err(|e| {
                    self.failed(
                        "exists",
                        key.as_str(),
                        format_args!("cannot read Consul's answer: {e}"),
                    )
                })?;
                let wanted = self.consul_key(key.as_str());
                Ok(keys.contains(&wanted))
            }
            (StatusCode::NOT_FOUND, _) => Ok(false),
            (status, body) => Err(self.unexpected("exists", key.as_str(), status, &body)),
        }
    }

    fn list(&self, dir: &Key) -> Result<Listing<Vec<u8>>> {
        Ok(self
            .below("list", dir)?
            .into_iter()
            .map(|(rel, value, _)| (rel, value))
            .collect())
    }

    fn deletetree(&self, dir: &Key) -> Result<()> {
        let url = format!("{}?recurse", self.dir_url(dir));
        self.request("deletetree", dir.as_str(), Method::DELETE, url, None)
            .map(|_| ())
    }

    fn atomic_create(&self, key: &Key, value: &[u8]) -> Result<bool> {
        self.put_cas("atomic_create", key, value, 0)
    }

    fn atomic_get(&self, key: &Key) -> Result<Option<Versioned>> {
        self.versioned("atomic_get", key)
    }

    fn atomic_put(&self, key: &Key, value: &[u8], previous: u64) -> Result<bool> {
        self.put_cas("atomic_put", key, value, previous)
    }

    fn atomic_delete(&self, key: &Key, previous: u64) -> Result<bool> {
        let op = "atomic_delete";
        if previous == 0 {
            // Consul never deletes with ?cas=0: true when the key is absent.
            return Ok(self.versioned(op, key)?.is_none());
        }
        let consul_key = self.consul_key(key.as_str());
        let txn = serde_json::json!([
            {"KV": {"Verb": "check-index", "Key": consul_key, "Index": previous}},
            {"KV": {"Verb": "delete", "Key": consul_key}},
        ]);
        let url = format!("{}/v1/txn", self.base);
        let body = txn.to_string().into_bytes();
        match self.request(op, key.as_str(), Method::PUT, url, Some(&body))? {
            (StatusCode::OK, _) => Ok(true),
            // A failed check is a stale previous; Consul also answers 409 when the
            // token lacks a permission, which is no conflict at all.
            (StatusCode::CONFLICT, body) => {
                let errors: TxnErrors = serde_json::from_slice(&body).unwrap_or_default();
                match errors
                    .errors
                    .iter()
                    .find(|e| e.what.contains("Permission denied"))
                {
                    Some(e) => Err(self.remote.fail(
                        op,
                        key.as_str(),
                        Failure::Auth {
                            reason: e.what.clone(),
                            advice: TOKEN_ADVICE.into(),
                        },
                    )),
                    None => Ok(false),
                }
            }
            (status, body) => Err(self.unexpected(op, key.as_str(), status, &body)),
        }
    }

    /// Transactions of `set`s: Consul takes at most 64 operations in one, and
    /// applies each whole or not at all.
    fn put_many(&self, entries: &[(Key, Vec<u8>)]) -> Result<()> {
        let op = "put";
        let url = format!("{}/v1/txn", self.base);
        for batch in batches(entries, TXN_OPS, TXN_BYTES) {
            let first = batch[0].0.as_str();
            let sets: Vec<serde_json::Value> = batch
                .iter()
                .map(|(key, value)| {
                    serde_json::json!({"KV": {
                        "Verb": "set",
                        "Key": self.consul_key(key.as_str()),
                        "Value": BASE64.encode(value),
                    }})
                })
                .collect();
            let body = serde_json::Value::Array(sets).to_string().into_bytes();
            match self.request(op, first, Method::PUT, url.clone(), Some(&body))? {
                (StatusCode::OK, _) => {}
                (StatusCode::CONFLICT, body) => {
                    let errors: TxnErrors = serde_json::from_slice(&body).unwrap_or_default();
                    let what: Vec<&str> = errors.errors.iter().map(|e| e.what.as_str()).collect();
                    let reason = format!("Consul refused the transaction: {}", what.join("; "));
                    return Err(match what.iter().any(|w| w.contains("Permission denied")) {
                        true => self.remote.fail(
                            op,
                            first,
                            Failure::Auth {
                                reason,
                                advice: TOKEN_ADVICE.into(),
                            },
                        ),
                        false => self.failed(op, first, reason),
                    });
                }
                (status, body) => return Err(self.unexpected(op, first, status, &body)),
            }
        }
        Ok(())
    }

    fn atomic_list(&self, dir: &Key) -> Result<Listing<Versioned>> {
        Ok(self
            .below("atomic_list", dir)?
            .into_iter()
            .map(|(rel, value, sequence)| (rel, Versioned { value, sequence }))
            .collect())
    }

    fn info(&self) -> Result<Value> {
        let op = "info";
        let (_, body) = self.request(
            op,
            "",
            Method::GET,
            format!("{}/v1/agent/self", self.base),
            None,
        )?;
        let agent: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| self.failed(op, "", format_args!("cannot read /v1/agent/self: {e}")))?;
        let (_, leader) = self.request(
            op,
            "",
            Method::GET,
            format!("{}/v1/status/leader", self.base),
            None,
        )?;
        let leader: String = serde_json::from_slice(&leader).unwrap_or_else(|_| text(&leader));
        let config = |field: &str| {
            Value::from(
                agent["Config"][field]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        };
        Ok(Value::hash([
            ("provider", Value::from("consul")),
            ("url", Value::from(self.remote.url.as_str())),
            ("datacenter", config("Datacenter")),
            ("node", config("NodeName")),
            ("version", config("Version")),
            ("leader", Value::from(leader)),
        ]))
    }
}
