//! A small blocking Kafka client for the admin commands: one connection per broker,
//! one request at a time, versions negotiated with ApiVersions. Works against any
//! Kafka-compatible broker.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

const CLIENT_ID: &str = "strand-admin";
/// Largest response frame accepted.
const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// A failed command: one line for the user, and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
}

impl Failure {
    pub fn new(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Kafka's name of an error code (`TOPIC_ALREADY_EXISTS`), from kafka-protocol's table.
pub fn error_name(code: i16) -> String {
    match kafka_protocol::error::ResponseError::try_from_code(code) {
        None => "NONE".into(),
        Some(kafka_protocol::error::ResponseError::Unknown(code)) => format!("UNKNOWN({code})"),
        Some(error) => {
            let camel = format!("{error:?}");
            let mut out = String::with_capacity(camel.len() + 8);
            for (i, c) in camel.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    out.push('_');
                }
                out.push(c.to_ascii_uppercase());
            }
            out
        }
    }
}

/// `NAME (code)`, and the broker's message if it sent one.
pub fn describe_error(code: i16, message: Option<&str>) -> String {
    match message.filter(|m| !m.is_empty()) {
        Some(m) => format!("{} ({code}): {m}", error_name(code)),
        None => format!("{} ({code})", error_name(code)),
    }
}

/// One connection to one broker.
pub struct Conn {
    address: String,
    stream: super::security::Stream,
    correlation_id: i32,
    /// Version ranges the broker supports, by API key.
    versions: BTreeMap<i16, (i16, i16)>,
}

impl Conn {
    /// Connects to `address` (with TLS and a SASL login if `security` says so) and asks
    /// which versions it speaks.
    pub fn connect(
        address: &str,
        timeout: Duration,
        security: &super::security::ClientSecurity,
    ) -> Result<Conn, Failure> {
        let addrs: Vec<_> = address
            .to_socket_addrs()
            .map_err(|e| Failure::new(format!("cannot resolve {address}: {e}")))?
            .collect();
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(stream) => {
                    stream
                        .set_read_timeout(Some(timeout))
                        .and_then(|()| stream.set_write_timeout(Some(timeout)))
                        .and_then(|()| stream.set_nodelay(true))
                        .map_err(|e| Failure::new(format!("{address}: {e}")))?;
                    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    let mut conn = Conn {
                        address: address.to_string(),
                        stream: super::security::Stream::new(stream, host, security)
                            .map_err(Failure::new)?,
                        correlation_id: 0,
                        versions: BTreeMap::new(),
                    };
                    conn.negotiate()?;
                    if let Some(sasl) = &security.sasl {
                        conn.authenticate(sasl)?;
                    }
                    return Ok(conn);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(Failure::new(match last {
            Some(e) => format!("cannot connect to {address}: {e}"),
            None => format!("{address} resolves to no address"),
        }))
    }

    /// SaslHandshake (v1), then the mechanism's tokens in SaslAuthenticate requests.
    fn authenticate(&mut self, sasl: &super::security::Sasl) -> Result<(), Failure> {
        use kafka_protocol::messages::{
            SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
            SaslHandshakeResponse,
        };
        let handshake: SaslHandshakeResponse = self.call(
            ApiKey::SaslHandshake,
            1,
            &SaslHandshakeRequest::default()
                .with_mechanism(StrBytes::from_string(sasl.mechanism.clone())),
        )?;
        if handshake.error_code != 0 {
            let offered: Vec<&str> = handshake.mechanisms.iter().map(|m| m.as_str()).collect();
            return Err(Failure::new(format!(
                "{}: SASL mechanism {} refused: {} (the listener offers {})",
                self.address,
                sasl.mechanism,
                describe_error(handshake.error_code, None),
                offered.join(", ")
            )));
        }
        let version = self.version(ApiKey::SaslAuthenticate, 0, 1)?;
        let mut login = super::security::SaslClient::new(sasl);
        let mut token = login.first();
        loop {
            let response: SaslAuthenticateResponse = self.call(
                ApiKey::SaslAuthenticate,
                version,
                &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token)),
            )?;
            if response.error_code != 0 {
                return Err(Failure::new(format!(
                    "{}: SASL {} login as {:?} failed: {}",
                    self.address,
                    sasl.mechanism,
                    sasl.username,
                    describe_error(
                        response.error_code,
                        response.error_message.as_ref().map(|m| m.as_str())
                    )
                )));
            }
            match login.next(&response.auth_bytes).map_err(Failure::new)? {
                Some(next) => token = next,
                None => return Ok(()),
            }
        }
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    fn negotiate(&mut self) -> Result<(), Failure> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut response: ApiVersionsResponse = self.call(ApiKey::ApiVersions, 3, &request)?;
        if response.error_code == 35 {
            response = self.call(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default())?;
        }
        if response.error_code != 0 {
            return Err(Failure::new(format!(
                "{}: ApiVersions failed: {}",
                self.address,
                describe_error(response.error_code, None)
            )));
        }
        self.versions = response
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(())
    }

    /// The newest version of `api` both sides speak, at most `newest` and at least
    /// `oldest`.
    pub fn version(&self, api: ApiKey, oldest: i16, newest: i16) -> Result<i16, Failure> {
        let (min, max) =
            self.versions.get(&(api as i16)).copied().ok_or_else(|| {
                Failure::new(format!("{} does not support {api:?}", self.address))
            })?;
        let version = max.min(newest);
        if version < min.max(oldest) {
            return Err(Failure::new(format!(
                "{} speaks {api:?} v{min}–v{max}; this client v{oldest}–v{newest}",
                self.address
            )));
        }
        Ok(version)
    }

    /// Sends one request and reads its response.
    pub fn call<Q: Encodable, R: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        request: &Q,
    ) -> Result<R, Failure> {
        self.send(api, version, request)?;
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            Failure::new(format!("{}: {api:?} {what}: {e}", self.address))
        };
        let mut size = [0u8; 4];
        self.stream
            .read_exact(&mut size)
            .map_err(|e| failed("no response", &e))?;
        let size = i32::from_be_bytes(size);
        if size < 4 || size as usize > RESPONSE_BYTES_MAX {
            return Err(failed("response size out of range", &size));
        }
        let mut frame = vec![0u8; size as usize];
        self.stream
            .read_exact(&mut frame)
            .map_err(|e| failed("response cut short", &e))?;
        let mut frame = Bytes::from(frame);
        let header = ResponseHeader::decode(&mut frame, api.response_header_version(version))
            .map_err(|e| failed("bad response header", &e))?;
        if header.correlation_id != self.correlation_id {
            return Err(failed("response out of order", &header.correlation_id));
        }
        R::decode(&mut frame, version).map_err(|e| failed("bad response", &e))
    }

    /// Sends one request without reading a response (what a Produce with acks 0 gets).
    pub fn send<Q: Encodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        request: &Q,
    ) -> Result<(), Failure> {
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            Failure::new(format!("{}: {api:?} {what}: {e}", self.address))
        };
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let header_version = api.request_header_version(version);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0; 4]);
        header
            .encode(&mut buf, header_version)
            .and_then(|()| request.encode(&mut buf, version))
            .map_err(|e| failed("encoding failed", &e))?;
        let size = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        self.stream
            .write_all(&buf)
            .map_err(|e| failed("send failed", &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_are_kafkas() {
        assert_eq!(error_name(36), "TOPIC_ALREADY_EXISTS");
        assert_eq!(error_name(6), "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(error_name(0), "NONE");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(
            describe_error(3, Some("no such topic")),
            "UNKNOWN_TOPIC_OR_PARTITION (3): no such topic"
        );
    }
}
