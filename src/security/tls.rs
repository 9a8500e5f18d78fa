//! TLS of the SSL and SASL_SSL listeners: one rustls server configuration built at start
//! from `--tls-cert-file`, `--tls-key-file` and (for mTLS) `--tls-ca-file`, shared by every
//! shard and rebuilt from the files on SIGHUP ([`ServerTls::reload`]); and the principal a
//! client certificate names.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Config;

/// The server configuration the TLS listeners use; `None` when no listener is TLS.
pub fn server_config(config: &Config) -> Result<Option<Arc<rustls::ServerConfig>>, String> {
    let tls_listener = config.listeners_in_force().iter().any(|l| l.protocol.tls());
    if !tls_listener {
        return Ok(None);
    }
    let (Some(cert_file), Some(key_file)) = (&config.tls_cert_file, &config.tls_key_file) else {
        return Err("an SSL or SASL_SSL listener needs --tls-cert-file and --tls-key-file".into());
    };
    let certs = read_certs(cert_file, "--tls-cert-file")?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
        format!(
            "--tls-key-file {}: no PEM private key read: {e}",
            key_file.display()
        )
    })?;
    // ring: builds with cc alone. Its provider lacks the post-quantum key exchange
    // (X25519MLKEM768) that rustls now prefers, hence the deprecation; clients negotiate
    // X25519 or a NIST curve instead.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?;
    let builder = match &config.tls_ca_file {
        Some(ca_file) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(ca_file, "--tls-ca-file")? {
                roots
                    .add(cert)
                    .map_err(|e| format!("--tls-ca-file {}: {e}", ca_file.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| format!("--tls-ca-file {}: {e}", ca_file.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let server = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("--tls-cert-file/--tls-key-file: {e}"))?;
    Ok(Some(Arc::new(server)))
}

/// The TLS configuration in force. Each handshake takes the configuration current when it
/// starts (a read of the lock, not held during the handshake); sessions already open keep
/// the one they began with. [`ServerTls::reload`] replaces it only if the new files make a
/// whole configuration, so a bad file keeps the old one.
pub struct ServerTls {
    current: RwLock<Arc<rustls::ServerConfig>>,
}

impl ServerTls {
    pub fn new(config: Arc<rustls::ServerConfig>) -> Arc<ServerTls> {
        Arc::new(ServerTls {
            current: RwLock::new(config),
        })
    }

    /// The acceptor of the next handshake.
    pub fn acceptor(&self) -> futures_rustls::TlsAcceptor {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        futures_rustls::TlsAcceptor::from(current.clone())
    }

    /// Re-reads `--tls-cert-file`, `--tls-key-file` and `--tls-ca-file`; `Err` (and the
    /// configuration in force kept) if they do not make a valid one.
    pub fn reload(&self, config: &Config) -> Result<(), String> {
        let fresh = server_config(config)?.ok_or("no TLS listener")?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }
}

fn read_certs(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{flag} {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(certs)
}

/// The principal of a client certificate as Kafka names it: `User:` and the subject's
/// distinguished name in RFC 2253 form (most specific first: `CN=client,O=Example,C=US`).
pub fn principal_of(cert: &CertificateDer<'_>) -> Option<String> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(cert.as_ref()).ok()?;
    let registry = x509_parser::objects::oid_registry();
    let rdns: Vec<String> = cert
        .subject()
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|attr| {
                    let key = x509_parser::objects::oid2abbrev(attr.attr_type(), registry)
                        .map(str::to_string)
                        .unwrap_or_else(|_| attr.attr_type().to_id_string());
                    let value = attr
                        .as_str()
                        .map(escape_rfc2253)
                        .unwrap_or_else(|_| format!("#{}", hex(attr.as_slice())));
                    format!("{key}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    let dn: Vec<String> = rdns.into_iter().rev().collect();
    Some(format!("User:{}", dn.join(",")))
}

fn escape_rfc2253(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i + 1 == value.chars().count() && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
