//! Helpers shared by the integration tests: a reqwest client over rustls
//! with the ring provider, a raw HTTP/1.1 client for exact request bytes,
//! and certificates made with rcgen.

#![allow(dead_code)] // each test file uses a part of this

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use consul_double::{Config, Server};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A rustls client configuration with the ring provider, ALPN http/1.1.
pub fn client_tls(
    roots: RootCertStore,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> ClientConfig {
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
    let mut config = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// A reqwest client that does not follow redirects, with the given TLS.
pub fn client_with(tls: ClientConfig) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

pub fn client() -> reqwest::Client {
    client_with(client_tls(RootCertStore::empty(), None))
}

/// A response, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub async fn read(response: reqwest::Response) -> Resp {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.unwrap().to_vec();
        Resp {
            status,
            headers,
            body,
        }
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
            .to_str()
            .unwrap()
    }

    pub fn index(&self) -> u64 {
        self.header("x-consul-index").parse().unwrap()
    }
}

/// A running double and a client for it.
pub struct Double {
    pub server: Server,
    pub client: reqwest::Client,
    pub base: String,
}

impl Double {
    pub fn start(config: Config) -> Double {
        let server = consul_double::start(config, localhost()).unwrap();
        let base = format!("http://{}", server.addr());
        Double {
            server,
            client: client(),
            base,
        }
    }

    pub fn plain() -> Double {
        Double::start(Config::default())
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        Resp::read(request.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(reqwest::Method::GET, path, None, &[]).await
    }

    pub async fn put(&self, path: &str, body: &[u8]) -> Resp {
        self.send(reqwest::Method::PUT, path, Some(body.to_vec()), &[])
            .await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.send(reqwest::Method::DELETE, path, None, &[]).await
    }

    /// `PUT /v1/txn` (with the query `query`, e.g. `""` or `"?dc=dc1"`)
    /// with these operations as the body.
    pub async fn txn_with(
        &self,
        query: &str,
        ops: &serde_json::Value,
        headers: &[(&str, &str)],
    ) -> Resp {
        let body = serde_json::to_vec(ops).unwrap();
        self.send(
            reqwest::Method::PUT,
            &format!("/v1/txn{query}"),
            Some(body),
            headers,
        )
        .await
    }

    /// `PUT /v1/txn` with these operations.
    pub async fn txn(&self, ops: &serde_json::Value) -> Resp {
        self.txn_with("", ops, &[]).await
    }

    /// A key's ModifyIndex (the key must be there).
    pub async fn modify_index(&self, key: &str) -> u64 {
        let resp = self.get(&format!("/v1/kv/{key}")).await;
        assert_eq!(resp.status, 200, "GET {key}");
        resp.json()[0]["ModifyIndex"].as_u64().unwrap()
    }

    /// The store-wide index, as a read of an absent key gives it.
    pub async fn store_index(&self) -> u64 {
        let resp = self.get("/v1/kv/consul-double-no-such-key").await;
        assert_eq!(resp.status, 404);
        resp.index()
    }

    /// PUT that must succeed with `true`.
    pub async fn set(&self, key: &str, value: &[u8]) {
        let resp = self.put(&format!("/v1/kv/{key}"), value).await;
        assert_eq!((resp.status, resp.text()), (200, "true"), "PUT {key}");
    }

    /// `PUT /v1/session/create` with this JSON body, which must succeed:
    /// the new session's ID.
    pub async fn create_session(&self, body: &serde_json::Value) -> String {
        let resp = self
            .put("/v1/session/create", &serde_json::to_vec(body).unwrap())
            .await;
        assert_eq!(resp.status, 200, "create {body}: {}", resp.text());
        resp.json()["ID"].as_str().unwrap().to_owned()
    }

    /// `PUT /v1/kv/<key>?acquire=<session>`, which must answer 200: whether
    /// it locked.
    pub async fn acquire(&self, key: &str, session: &str, value: &[u8]) -> bool {
        self.lock_op(key, "acquire", session, value).await
    }

    /// `PUT /v1/kv/<key>?release=<session>`, which must answer 200: whether
    /// it released.
    pub async fn release(&self, key: &str, session: &str, value: &[u8]) -> bool {
        self.lock_op(key, "release", session, value).await
    }

    async fn lock_op(&self, key: &str, op: &str, session: &str, value: &[u8]) -> bool {
        let resp = self
            .put(&format!("/v1/kv/{key}?{op}={session}"), value)
            .await;
        assert_eq!(resp.status, 200, "{op} {key}: {}", resp.text());
        match resp.text() {
            "true" => true,
            "false" => false,
            other => panic!("{op} {key}: {other:?}"),
        }
    }

    /// A key's entry as JSON (the key must be there).
    pub async fn entry(&self, key: &str) -> serde_json::Value {
        let resp = self.get(&format!("/v1/kv/{key}")).await;
        assert_eq!(resp.status, 200, "GET {key}");
        resp.json()[0].clone()
    }
}

/// A configuration for session tests: TTLs expire right at the TTL
/// (multiplier 1) and may be as short as 100ms.
pub fn quick_sessions() -> Config {
    Config {
        session_ttl_multiplier: 1.0,
        min_session_ttl: Duration::from_millis(100),
        ..Config::default()
    }
}

/// A raw HTTP/1.1 connection: exact request bytes, responses framed by
/// Content-Length (which the double always sends).
pub struct RawConn {
    reader: BufReader<TcpStream>,
}

#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl RawConn {
    pub fn open(addr: SocketAddr) -> RawConn {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        RawConn {
            reader: BufReader::new(stream),
        }
    }

    pub fn send(&mut self, request: &[u8]) -> RawResponse {
        self.reader.get_mut().write_all(request).unwrap();
        self.read_response()
    }

    pub fn read_response(&mut self) -> RawResponse {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let status = line
            .split(' ')
            .nth(1)
            .unwrap_or_else(|| panic!("bad status line {line:?}"))
            .parse()
            .unwrap();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        let mut response = RawResponse {
            status,
            headers,
            body: Vec::new(),
        };
        let length: usize = response
            .header("content-length")
            .expect("content-length")
            .parse()
            .unwrap();
        response.body = vec![0; length];
        self.reader.read_exact(&mut response.body).unwrap();
        response
    }
}

/// One request on a fresh connection.
pub fn raw(addr: SocketAddr, request: &str) -> RawResponse {
    RawConn::open(addr).send(request.as_bytes())
}

/// A fresh, empty directory under the system's temporary directory.
pub fn temp_dir(label: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "consul-double-{label}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A certificate authority made for the tests.
pub struct Ca {
    pub issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key.
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
    pub chain: Vec<CertificateDer<'static>>,
    pub key_der: Vec<u8>,
}

impl Identity {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    pub fn for_client(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (self.chain.clone(), self.key())
    }

    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}-key.pem"));
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        roots
    }

    fn leaf(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Identity {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, &names[0]);
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Identity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            chain: vec![cert.der().clone()],
            key_der: key.serialize_der(),
        }
    }

    /// A server certificate for localhost and 127.0.0.1.
    pub fn server(&self) -> Identity {
        self.leaf(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    pub fn client(&self, name: &str) -> Identity {
        self.leaf(&[name], ExtendedKeyUsagePurpose::ClientAuth)
    }
}
