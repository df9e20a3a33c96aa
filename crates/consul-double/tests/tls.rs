//! TLS: server certificate, ALPN, client certificates.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::{client_tls, client_with, temp_dir, Ca, Identity, Resp};
use consul_double::{Config, Server, TlsConfig};
use rustls::RootCertStore;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Setup {
    ca: Ca,
    dir: PathBuf,
    server: Server,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TLS double; with `client_ca`, requiring client certificates from `ca`.
fn tls_double(label: &str, client_ca: bool) -> Setup {
    let ca = Ca::new("consul-double test CA");
    let dir = temp_dir(label);
    let (cert_file, key_file) = ca.server().write(&dir, "server");
    let client_ca_file = client_ca.then(|| {
        let path = dir.join("client-ca.pem");
        std::fs::write(&path, ca.pem()).unwrap();
        path
    });
    let server = consul_double::start(
        Config {
            tls: Some(TlsConfig {
                cert_file,
                key_file,
                client_ca_file,
            }),
            ..Config::default()
        },
        common::localhost(),
    )
    .unwrap();
    Setup { ca, dir, server }
}

async fn put_get(
    client: &reqwest::Client,
    host: &str,
    port: u16,
) -> Result<(Resp, Resp), reqwest::Error> {
    let url = format!("https://{host}:{port}/v1/kv/t");
    let put = Resp::read(client.put(&url).body("tls").send().await?).await;
    let get = Resp::read(client.get(format!("{url}?raw")).send().await?).await;
    Ok((put, get))
}

#[tokio::test]
async fn https_with_the_right_ca_works() {
    let setup = tls_double("tls-ok", false);
    let client = client_with(client_tls(setup.ca.roots(), None));
    for host in ["localhost", "127.0.0.1"] {
        let (put, get) = put_get(&client, host, setup.server.port()).await.unwrap();
        assert_eq!((put.status, put.text()), (200, "true"));
        assert_eq!((get.status, get.body.as_slice()), (200, &b"tls"[..]));
        assert_eq!(get.header("x-consul-knownleader"), "true");
    }
}

#[tokio::test]
async fn alpn_is_http_1_1_only() {
    let setup = tls_double("tls-alpn", false);
    let addr = setup.server.addr();
    let connect = |protocols: Vec<Vec<u8>>| {
        let mut config = client_tls(setup.ca.roots(), None);
        config.alpn_protocols = protocols;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            connector
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
        }
    };
    let stream = connect(vec![b"h2".to_vec(), b"http/1.1".to_vec()])
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    // A client that offers only h2 is refused.
    assert!(connect(vec![b"h2".to_vec()]).await.is_err());
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_fails() {
    let setup = tls_double("tls-untrusted", false);
    let other = Ca::new("some other CA");
    let client = client_with(client_tls(other.roots(), None));
    assert!(put_get(&client, "localhost", setup.server.port())
        .await
        .is_err());
    let client = client_with(client_tls(RootCertStore::empty(), None));
    assert!(put_get(&client, "localhost", setup.server.port())
        .await
        .is_err());
}

#[tokio::test]
async fn plain_http_on_the_tls_port_fails() {
    let setup = tls_double("tls-plain", false);
    let client = common::client();
    let url = format!("http://{}/v1/kv/t", setup.server.addr());
    assert!(client.get(url).send().await.is_err());
}

#[tokio::test]
async fn client_certificate_signed_by_the_ca_works() {
    let setup = tls_double("mtls-ok", true);
    let identity: Identity = setup.ca.client("libkv-test");
    let client = client_with(client_tls(setup.ca.roots(), Some(identity.for_client())));
    let (put, get) = put_get(&client, "localhost", setup.server.port())
        .await
        .unwrap();
    assert_eq!((put.status, put.text()), (200, "true"));
    assert_eq!(get.body, b"tls");
}

#[tokio::test]
async fn no_client_certificate_is_refused() {
    let setup = tls_double("mtls-none", true);
    let client = client_with(client_tls(setup.ca.roots(), None));
    let error = put_get(&client, "localhost", setup.server.port())
        .await
        .unwrap_err();
    assert!(!error.is_status(), "refused in TLS, not by HTTP: {error}");

    // At the TLS level: the server never answers an HTTP request.
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_tls(setup.ca.roots(), None)));
    let tcp = tokio::net::TcpStream::connect(setup.server.addr())
        .await
        .unwrap();
    // With TLS 1.3 the client's side of the handshake may complete before
    // the server has checked the (missing) certificate; then the server's
    // alert arrives on the first read.
    if let Ok(mut stream) = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
    {
        let _ = stream
            .write_all(b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let mut buffer = Vec::new();
        let read = stream.read_to_end(&mut buffer).await;
        assert!(read.is_err() || buffer.is_empty(), "got {buffer:?}");
    }
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    let setup = tls_double("mtls-other", true);
    let other = Ca::new("some other CA");
    let identity = other.client("intruder");
    let client = client_with(client_tls(setup.ca.roots(), Some(identity.for_client())));
    assert!(put_get(&client, "localhost", setup.server.port())
        .await
        .is_err());
}

#[test]
fn bad_tls_files_are_invalid_input() {
    let dir = temp_dir("tls-bad");
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let ca = Ca::new("ca");
    let (cert_file, key_file) = ca.server().write(&dir, "server");
    let cases = [
        (garbage.clone(), key_file.clone(), None),
        (cert_file.clone(), garbage.clone(), None),
        (cert_file.clone(), key_file.clone(), Some(garbage.clone())),
        (dir.join("absent.pem"), key_file.clone(), None),
    ];
    for (cert_file, key_file, client_ca_file) in cases {
        let config = Config {
            tls: Some(TlsConfig {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
                client_ca_file: client_ca_file.clone(),
            }),
            ..Config::default()
        };
        let error = consul_double::start(config, common::localhost()).unwrap_err();
        assert_eq!(
            error.kind(),
            std::io::ErrorKind::InvalidInput,
            "{cert_file:?} {key_file:?} {client_ca_file:?}: {error}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
