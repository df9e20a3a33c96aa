//! `etcd://HOST:PORT[,HOST:PORT...]/PREFIX` and `etcd+ssl://...`: etcd v3 over gRPC.
//!
//! - A key is `PREFIX + key` in etcd. Values are the codec's bytes, so `etcdctl get`
//!   shows Strings as they are.
//! - A key's sequence is its `mod_revision`: etcd's store-wide revision of the key's
//!   last write, never 0, never reused.
//! - `atomic_create`, `atomic_put` and `atomic_delete` are single transactions that
//!   compare `mod_revision` (0 for an absent key), so racing writers are
//!   linearizable. `list`, `atomic_list` and `deletetree` are one prefix range
//!   request on `PREFIX + dir + "/"`. Reads are etcd's default linearizable reads.
//! - One client per endpoints and auth settings in a process, shared by every store
//!   object on them: made by the first call, reused by every later one (one HTTP/2
//!   connection per endpoint), dropped after a connection or credential failure and
//!   after `fork`, and made again by the next call.
//! - Every call, connecting included, ends within the store's timeout.

use std::error::Error as _;
use std::fmt::Display;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, Identity,
    KvClient, TlsOptions, Txn, TxnOp,
};
use tonic::Code;

use crate::error::{Error, Result};
use crate::key::Key;
use crate::net::{block_on_timeout, describe, ClientCache, PemFile};
use crate::store::{Auth, Listing, Store, Versioned};
use crate::url::{Endpoint, StoreUrl};
use crate::value::Value;

pub struct EtcdStore {
    url: String,
    /// Prepended to every key: "" for the root, "/PREFIX" otherwise.
    prefix: String,
    tls: bool,
    client_key: ClientKey,
    timeout: Duration,
}

/// What a client is made from: stores with the same share one.
#[derive(Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    endpoints: Vec<String>,
    auth: Auth,
}

static CLIENTS: ClientCache<ClientKey, Conn> = ClientCache::new();

/// The largest response the client accepts: what etcd itself may send (grpc-go's
/// default limit), not tonic's 4 MiB, which a list of a few large values exceeds.
const MAX_RESPONSE_BYTES: usize = i32::MAX as usize;

/// A connected client, and its KV client with the response limit raised. A call
/// takes a copy of its own (the KV client's requests take `&mut`): the whole client,
/// a dozen service clients, is shared rather than copied.
#[derive(Clone)]
struct Conn {
    client: Arc<Client>,
    kv: KvClient,
}

/// A failed call, before it is worded for the caller.
enum Failure {
    /// Could not reach etcd: the client is made again by the next call.
    Connection(String),
    /// etcd refused the credentials: the client is made again by the next call.
    Auth(String),
    /// etcd answered with an error.
    Refused(String),
    /// The auth settings are unusable (a file that cannot be read, ...).
    Settings(String),
}

impl EtcdStore {
    /// A store for the URL's endpoints and prefix. Nothing is connected until the
    /// first call.
    pub fn open(url: &StoreUrl, auth: &Auth, timeout: Duration) -> Result<EtcdStore> {
        let StoreUrl::Etcd {
            tls,
            endpoints,
            prefix,
        } = url
        else {
            unreachable!("EtcdStore::open is given etcd URLs only")
        };
        auth.only(
            "etcd",
            &["ca_file", "cert_file", "key_file", "username", "password"],
        )?;
        let settings_error = |reason: &str| Err(Error::InvalidArgument(reason.to_owned()));
        match (auth.get("username"), auth.get("password")) {
            (Some(_), None) => return settings_error("etcd auth has a username but no password"),
            (None, Some(_)) => return settings_error("etcd auth has a password but no username"),
            _ => {}
        }
        if auth.get("cert_file").is_some() != auth.get("key_file").is_some() {
            return settings_error("etcd auth needs both cert_file and key_file, or neither");
        }
        let has_tls_files = ["ca_file", "cert_file", "key_file"]
            .iter()
            .any(|k| auth.get(k).is_some());
        if has_tls_files && !tls {
            return settings_error(
                "ca_file, cert_file and key_file are for TLS: use an etcd+ssl:// URL",
            );
        }
        let scheme = if *tls { "https" } else { "http" };
        Ok(EtcdStore {
            url: url.to_string(),
            prefix: if prefix.is_root() {
                String::new()
            } else {
                prefix.as_str().to_owned()
            },
            tls: *tls,
            client_key: ClientKey {
                endpoints: endpoints
                    .iter()
                    .map(|e: &Endpoint| format!("{scheme}://{e}"))
                    .collect(),
                auth: auth.clone(),
            },
            timeout,
        })
    }

    fn etcd_key(&self, key: &Key) -> String {
        format!("{}{}", self.prefix, key.as_str())
    }

    /// The range every key below `dir` falls in: `PREFIX + dir + "/"`.
    fn etcd_dir(&self, dir: &Key) -> String {
        format!("{}{}", self.prefix, dir.dir_prefix())
    }

    fn connect_options(&self) -> std::result::Result<ConnectOptions, Failure> {
        // No timeouts of the client's own: `call` bounds every wait, connecting
        // included, so a slow etcd always reads as a timeout.
        let auth = &self.client_key.auth;
        let mut options = ConnectOptions::new()
            .with_keep_alive(Duration::from_secs(30), Duration::from_secs(10))
            .with_auto_token_refresh(true);
        if let (Some(user), Some(password)) = (auth.get("username"), auth.get("password")) {
            options = options.with_user(user, password);
        }
        if self.tls {
            let mut tls = TlsOptions::new();
            if let Some(ca) = auth.get("ca_file") {
                tls = tls.ca_certificate(Certificate::from_pem(read_certs("ca_file", ca)?));
            }
            if let (Some(cert), Some(key)) = (auth.get("cert_file"), auth.get("key_file")) {
                tls = tls.identity(Identity::from_pem(
                    read_certs("cert_file", cert)?,
                    read_key("key_file", key)?,
                ));
            }
            options = options.with_tls(tls);
        }
        Ok(options)
    }

    /// This process's client for the store's endpoints and auth, and its generation,
    /// connecting it if needed.
    async fn client(&self) -> std::result::Result<(Conn, u64), Failure> {
        if let Some(found) = CLIENTS.get(&self.client_key) {
            return Ok(found);
        }
        let client = Client::connect(&self.client_key.endpoints, Some(self.connect_options()?))
            .await
            .map_err(classify)?;
        let kv = client
            .kv_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES);
        let client = Arc::new(client);
        Ok(CLIENTS.insert(&self.client_key, Conn { client, kv }))
    }

    /// Runs one request on this process's client, within the timeout.
    fn call<T, F, Fut>(&self, op: &'static str, key: &str, request: F) -> Result<T>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        // The generation of the client the request went to, to drop that one only.
        let used = Mutex::new(None);
        let outcome = block_on_timeout(self.timeout, async {
            let (client, generation) = self.client().await?;
            *used.lock().unwrap_or_else(|p| p.into_inner()) = Some(generation);
            request(client).await.map_err(classify)
        })
        .map_err(|e| self.failed(op, key, format_args!("cannot start the I/O runtime: {e}")))?;
        let used = used.into_inner().unwrap_or_else(|p| p.into_inner());
        match outcome {
            Some(Ok(value)) => Ok(value),
            Some(Err(failure)) => Err(self.fail(op, key, failure, used)),
            None => {
                CLIENTS.forget(&self.client_key, used);
                Err(Error::Timeout {
                    op,
                    key: key.to_owned(),
                    store: self.url.clone(),
                    after: self.timeout,
                    sent: true,
                })
            }
        }
    }

    fn failed(&self, op: &'static str, key: &str, reason: impl Display) -> Error {
        Error::Store {
            op,
            key: key.to_owned(),
            store: self.url.clone(),
            reason: reason.to_string(),
        }
    }

    fn fail(&self, op: &'static str, key: &str, failure: Failure, used: Option<u64>) -> Error {
        match failure {
            Failure::Connection(reason) => {
                CLIENTS.forget(&self.client_key, used);
                Error::Connection {
                    op,
                    key: key.to_owned(),
                    store: self.url.clone(),
                    reason: format!(
                        "{reason}; check that etcd is up at {} and, for etcd+ssl, the TLS settings",
                        self.client_key.endpoints.join(", ")
                    ),
                }
            }
            Failure::Auth(reason) => {
                CLIENTS.forget(&self.client_key, used);
                Error::Auth {
                    op,
                    key: key.to_owned(),
                    store: self.url.clone(),
                    reason: format!("{reason}; check the username and password in auth"),
                }
            }
            Failure::Refused(reason) => {
                self.failed(op, key, format_args!("etcd refused it: {reason}"))
            }
            Failure::Settings(reason) => {
                Error::InvalidArgument(format!("{op} {key} on {}: {reason}", self.url))
            }
        }
    }

    fn relative<'k>(&self, dir_prefix: &str, etcd_key: &'k [u8]) -> Option<&'k str> {
        etcd_key
            .strip_prefix(dir_prefix.as_bytes())
            .and_then(|rel| std::str::from_utf8(rel).ok())
    }
}

/// A PEM file of certificates, checked, for etcd-client (which takes PEM).
fn read_certs(name: &'static str, path: &str) -> std::result::Result<Vec<u8>, Failure> {
    let file = PemFile::read(name, path).map_err(Failure::Settings)?;
    file.certs().map_err(Failure::Settings)?;
    Ok(file.bytes)
}

/// A PEM private key file, checked, for etcd-client.
fn read_key(name: &'static str, path: &str) -> std::result::Result<Vec<u8>, Failure> {
    let file = PemFile::read(name, path).map_err(Failure::Settings)?;
    file.key().map_err(Failure::Settings)?;
    Ok(file.bytes)
}

/// Sorts an etcd client error into the failures the store words differently.
fn classify(e: etcd_client::Error) -> Failure {
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            let message = status.message().trim_start_matches("etcdserver: ");
            let text = describe(Some(message), status.source());
            match status.code() {
                Code::Unauthenticated => Failure::Auth(text),
                _ if message.contains("authentication failed") => Failure::Auth(text),
                _ if message.contains("user name is empty") => Failure::Auth(format!(
                    "{text}: this etcd has authentication enabled and needs a username and password"
                )),
                _ if message.contains("request is too large")
                    || (status.code() == Code::ResourceExhausted
                        && message.contains("larger than max")) =>
                {
                    Failure::Refused(format!(
                        "{text} ({:?}): the value is larger than this etcd takes in one request \
                         (its --max-request-bytes, 1.5 MiB by default); store a smaller value, or \
                         raise that limit on every etcd member",
                        status.code()
                    ))
                }
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                    Failure::Connection(text)
                }
                Code::Unknown if status.source().is_some() => Failure::Connection(text),
                code => Failure::Refused(format!("{text} ({code:?})")),
            }
        }
        etcd_client::Error::TransportError(e) => Failure::Connection(describe(None, Some(&e))),
        etcd_client::Error::IoError(e) => Failure::Connection(e.to_string()),
        other => Failure::Refused(other.to_string()),
    }
}

fn sequence(mod_revision: i64) -> u64 {
    u64::try_from(mod_revision).unwrap_or(0)
}

fn revision(previous: u64) -> i64 {
    i64::try_from(previous).unwrap_or(i64::MAX)
}

impl Store for EtcdStore {
    fn provider(&self) -> &'static str {
        "etcd"
    }

    fn url(&self) -> &str {
        &self.url
    }

    fn get(&self, key: &Key) -> Result<Option<Vec<u8>>> {
        let k = self.etcd_key(key);
        self.call("get", key.as_str(), |mut c| async move {
            let resp = c.kv.get(k, None).await?;
            Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
        })
    }

    fn put(&self, key: &Key, value: &[u8]) -> Result<()> {
        let k = self.etcd_key(key);
        self.call("put", key.as_str(), |mut c| async move {
            c.kv.put(k, value, None).await.map(|_| ())
        })
    }

    fn delete(&self, key: &Key) -> Result<()> {
        let k = self.etcd_key(key);
        self.call("delete", key.as_str(), |mut c| async move {
            c.kv.delete(k, None).await.map(|_| ())
        })
    }

    fn exists(&self, key: &Key) -> Result<bool> {
        let k = self.etcd_key(key);
        self.call("exists", key.as_str(), |mut c| async move {
            let resp =
                c.kv.get(k, Some(GetOptions::new().with_count_only()))
                    .await?;
            Ok(resp.count() > 0)
        })
    }

    fn list(&self, dir: &Key) -> Result<Listing<Vec<u8>>> {
        let range = self.etcd_dir(dir);
        self.call("list", dir.as_str(), |mut c| async move {
            let resp =
                c.kv.get(range.clone(), Some(GetOptions::new().with_prefix()))
                    .await?;
            Ok(resp
                .kvs()
                .iter()
                .filter_map(|kv| {
                    Some((
                        self.relative(&range, kv.key())?.to_owned(),
                        kv.value().to_vec(),
                    ))
                })
                .collect())
        })
    }

    fn deletetree(&self, dir: &Key) -> Result<()> {
        let range = self.etcd_dir(dir);
        self.call("deletetree", dir.as_str(), |mut c| async move {
            c.kv.delete(range, Some(DeleteOptions::new().with_prefix()))
                .await
                .map(|_| ())
        })
    }

    fn atomic_create(&self, key: &Key, value: &[u8]) -> Result<bool> {
        self.atomic_put_as("atomic_create", key, value, 0)
    }

    fn atomic_get(&self, key: &Key) -> Result<Option<Versioned>> {
        let k = self.etcd_key(key);
        self.call("atomic_get", key.as_str(), |mut c| async move {
            let resp = c.kv.get(k, None).await?;
            Ok(resp.kvs().first().map(|kv| Versioned {
                value: kv.value().to_vec(),
                sequence: sequence(kv.mod_revision()),
            }))
        })
    }

    fn atomic_put(&self, key: &Key, value: &[u8], previous: u64) -> Result<bool> {
        self.atomic_put_as("atomic_put", key, value, previous)
    }

    fn atomic_delete(&self, key: &Key, previous: u64) -> Result<bool> {
        let k = self.etcd_key(key);
        self.call("atomic_delete", key.as_str(), |mut c| async move {
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    k.clone(),
                    CompareOp::Equal,
                    revision(previous),
                )])
                .and_then([TxnOp::delete(k, None)]);
            Ok(c.kv.txn(txn).await?.succeeded())
        })
    }

    fn atomic_list(&self, dir: &Key) -> Result<Listing<Versioned>> {
        let range = self.etcd_dir(dir);
        self.call("atomic_list", dir.as_str(), |mut c| async move {
            let resp =
                c.kv.get(range.clone(), Some(GetOptions::new().with_prefix()))
                    .await?;
            Ok(resp
                .kvs()
                .iter()
                .filter_map(|kv| {
                    Some((
                        self.relative(&range, kv.key())?.to_owned(),
                        Versioned {
                            value: kv.value().to_vec(),
                            sequence: sequence(kv.mod_revision()),
                        },
                    ))
                })
                .collect())
        })
    }

    fn info(&self) -> Result<Value> {
        let status = self.call("info", "", |c| async move {
            c.client.maintenance_client().status().await
        })?;
        let hex = |id: u64| Value::from(format!("{id:x}"));
        let mut facts = vec![
            ("provider", Value::from("etcd")),
            ("url", Value::from(self.url.as_str())),
            (
                "endpoints",
                Value::Array(
                    self.client_key
                        .endpoints
                        .iter()
                        .map(|e| Value::from(e.as_str()))
                        .collect(),
                ),
            ),
            ("version", Value::from(status.version())),
            ("leader", hex(status.leader())),
        ];
        if let Some(header) = status.header() {
            facts.push(("cluster_id", hex(header.cluster_id())));
            facts.push(("member_id", hex(header.member_id())));
            facts.push(("revision", Value::Int(header.revision())));
        }
        Ok(Value::hash(facts))
    }
}

impl EtcdStore {
    /// A put in one transaction that succeeds only if the key's mod_revision is
    /// still `previous` (0: the key is absent).
    fn atomic_put_as(
        &self,
        op: &'static str,
        key: &Key,
        value: &[u8],
        previous: u64,
    ) -> Result<bool> {
        let k = self.etcd_key(key);
        self.call(op, key.as_str(), |mut c| async move {
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    k.clone(),
                    CompareOp::Equal,
                    revision(previous),
                )])
                .and_then([TxnOp::put(k, value, None)]);
            Ok(c.kv.txn(txn).await?.succeeded())
        })
    }
}
