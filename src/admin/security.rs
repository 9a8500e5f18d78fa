//! How the admin commands reach a secured listener: TLS (rustls, trusting the CA file
//! given) and SASL PLAIN or SCRAM-SHA-256/512, set with librdkafka's property names
//! (what kcat's `-X` takes), from `--command-config FILE` (Kafka's tools' flag) and `-X
//! key=value` (which win).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use crate::security::scram::{self, Hash};

/// The client settings this understands; any other key is an error, so a typo does not
/// silently connect in the clear.
const KEYS: &[&str] = &[
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
];

/// A SASL login.
#[derive(Clone)]
pub struct Sasl {
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    pub mechanism: String,
    pub username: String,
    pub password: String,
}

/// How to secure each connection.
#[derive(Clone, Default)]
pub struct ClientSecurity {
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub sasl: Option<Sasl>,
}

impl ClientSecurity {
    /// From a properties file and `-X key=value` overrides.
    pub fn load(file: Option<&std::path::Path>, overrides: &[String]) -> Result<Self, String> {
        let mut settings: Vec<(String, String)> = Vec::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let entries = crate::config_file::parse_properties(&text)
                .map_err(|(line, why)| format!("{}:{line}: {why}", path.display()))?;
            settings.extend(entries.into_iter().map(|e| (e.key, e.value)));
        }
        for o in overrides {
            let (k, v) = o
                .split_once('=')
                .ok_or_else(|| format!("-X {o}: expected key=value"))?;
            settings.push((k.trim().to_string(), v.trim().to_string()));
        }
        let mut get = std::collections::BTreeMap::new();
        for (k, v) in settings {
            if !KEYS.contains(&k.as_str()) {
                return Err(format!(
                    "unknown client setting {k:?} (known: {})",
                    KEYS.join(", ")
                ));
            }
            let k = if k == "sasl.mechanisms" {
                "sasl.mechanism".to_string()
            } else {
                k
            };
            get.insert(k, v);
        }
        let protocol = get
            .get("security.protocol")
            .map(|p| p.to_ascii_uppercase())
            .unwrap_or_else(|| "PLAINTEXT".into());
        let (tls, sasl) = match protocol.as_str() {
            "PLAINTEXT" => (false, false),
            "SSL" => (true, false),
            "SASL_PLAINTEXT" => (false, true),
            "SASL_SSL" => (true, true),
            other => {
                return Err(format!(
                    "security.protocol {other:?}: one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"
                ))
            }
        };
        let mut security = ClientSecurity::default();
        if tls {
            security.tls = Some(tls_config(
                get.get("ssl.ca.location"),
                get.get("ssl.certificate.location")
                    .zip(get.get("ssl.key.location")),
            )?);
        }
        if sasl {
            let mechanism = get
                .get("sasl.mechanism")
                .map(|m| m.to_ascii_uppercase())
                .unwrap_or_else(|| "PLAIN".into());
            if mechanism != "PLAIN" && Hash::from_mechanism(&mechanism).is_none() {
                return Err(format!(
                    "sasl.mechanism {mechanism:?}: one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"
                ));
            }
            let need = |k: &str| {
                get.get(k)
                    .cloned()
                    .ok_or_else(|| format!("{protocol} needs {k}"))
            };
            security.sasl = Some(Sasl {
                mechanism,
                username: need("sasl.username")?,
                password: need("sasl.password")?,
            });
        }
        Ok(security)
    }
}

fn tls_config(
    ca: Option<&String>,
    client: Option<(&String, &String)>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let Some(ca) = ca else {
        return Err(String::from(
            "SSL needs ssl.ca.location (the PEM file of the CA that signed the broker's certificate)",
        ));
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(ca).map_err(|e| format!("ssl.ca.location {ca}: {e}"))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("ssl.ca.location {ca}: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("ssl.ca.location {ca}: {e}"))?;
    }
    // ring, as the broker's listeners use (see `security::tls`).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("ssl.certificate.location {cert}: {e}"))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("ssl.key.location {key}: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("TLS client certificate: {e}"))?
        }
    };
    Ok(Arc::new(config))
}

/// A connection's byte stream: plain TCP or TLS over it.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    /// Wraps `tcp` in TLS when `security` says so (the handshake runs on the first use);
    /// `host` is checked against the broker's certificate.
    pub fn new(tcp: TcpStream, host: &str, security: &ClientSecurity) -> Result<Stream, String> {
        let Some(config) = &security.tls else {
            return Ok(Stream::Plain(tcp));
        };
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| format!("{host}: not a TLS server name: {e}"))?;
        let conn = rustls::ClientConnection::new(config.clone(), name)
            .map_err(|e| format!("{host}: TLS: {e}"))?;
        Ok(Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp))))
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// The client's SASL exchange: the tokens to send in turn, given the server's answers.
pub struct SaslClient {
    sasl: Sasl,
    /// SCRAM: the client-first-message-bare sent, and the server signature expected.
    first_bare: String,
    server_signature: Option<Vec<u8>>,
}

impl SaslClient {
    pub fn new(sasl: &Sasl) -> SaslClient {
        SaslClient {
            sasl: sasl.clone(),
            first_bare: String::new(),
            server_signature: None,
        }
    }

    /// The first token.
    pub fn first(&mut self) -> Vec<u8> {
        if self.sasl.mechanism == "PLAIN" {
            return format!("\0{}\0{}", self.sasl.username, self.sasl.password).into_bytes();
        }
        let nonce: String = scram::random_bytes(18)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let user = self.sasl.username.replace('=', "=3D").replace(',', "=2C");
        self.first_bare = format!("n={user},r={nonce}");
        format!("n,,{}", self.first_bare).into_bytes()
    }

    /// The answer to the server's token, or `None` when the exchange is complete (the
    /// server's final message checked).
    pub fn next(&mut self, server: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let text = std::str::from_utf8(server)
            .map_err(|_| String::from("SASL: the server's message is not UTF-8"))?;
        if self.sasl.mechanism == "PLAIN" {
            return Ok(None);
        }
        let hash = Hash::from_mechanism(&self.sasl.mechanism).expect("checked at load");
        match &self.server_signature {
            None => {
                let (final_message, signature) =
                    scram::client_final(hash, &self.sasl.password, &self.first_bare, text)
                        .map_err(|why| format!("SASL {}: {why}", hash.mechanism()))?;
                self.server_signature = Some(signature);
                Ok(Some(final_message.into_bytes()))
            }
            Some(expected) => {
                if text.as_bytes() != expected.as_slice() {
                    return Err(format!(
                        "SASL {}: the broker's signature does not match (not the broker holding these credentials?)",
                        hash.mechanism()
                    ));
                }
                Ok(None)
            }
        }
    }
}
