//! Request framing and response encoding.
//!
//! A Kafka request is `[size i32][header][body]`. The connection loop reads the size (and
//! enforces the frame limit), then hands the frame here: we read the API key and version,
//! decode the header at the header version that API/version uses, and leave the body as a
//! `Bytes` slice of the frame, so record batches inside it are never copied. Responses are
//! encoded straight into one buffer with their size prefix.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::util::one_line;

/// Smallest request frame: api key, api version, correlation id.
pub const REQUEST_FRAME_BYTES_MIN: usize = 8;

/// A request whose header has been decoded; the body is still raw.
pub struct RequestFrame {
    pub api_key: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
    pub body: Bytes,
}

#[derive(Debug)]
pub enum FrameError {
    /// Shorter than any request can be.
    Truncated(usize),
    /// An API key Kafka does not define; Kafka closes the connection.
    UnknownApiKey { api_key: i16, correlation_id: i32 },
    /// The header could not be decoded.
    Malformed(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Truncated(len) => write!(f, "request frame of {len} bytes is truncated"),
            FrameError::UnknownApiKey {
                api_key,
                correlation_id,
            } => write!(
                f,
                "unknown api key {api_key} (correlation id {correlation_id})"
            ),
            FrameError::Malformed(why) => write!(f, "malformed request header: {why}"),
        }
    }
}

/// Splits a frame (without its size prefix) into header and body.
pub fn parse_request(mut frame: Bytes) -> Result<RequestFrame, FrameError> {
    if frame.len() < REQUEST_FRAME_BYTES_MIN {
        return Err(FrameError::Truncated(frame.len()));
    }
    let api_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api = ApiKey::try_from(api_key).map_err(|_| FrameError::UnknownApiKey {
        api_key,
        correlation_id,
    })?;
    let header = RequestHeader::decode(&mut frame, api.request_header_version(version))
        .map_err(|e| FrameError::Malformed(one_line(&e.to_string()).into_owned()))?;
    Ok(RequestFrame {
        api_key: api,
        version,
        header,
        body: frame,
    })
}

/// Decodes a request body at `version`. The error is one line: kafka-protocol's "not
/// enough bytes" message ends in a newline, which would split the log line it lands in.
pub fn decode_body<T: Decodable>(body: &mut Bytes, version: i16) -> Result<T, String> {
    T::decode(body, version).map_err(|e| one_line(&e.to_string()).into_owned())
}

/// Decodes a consumer-protocol message embedded in a group message (a member's
/// subscription in JoinGroup, its assignment in SyncGroup and DescribeGroups): an i16
/// version, then the body. Newer versions only add fields, so a version past the newest
/// this crate knows (3) is decoded as that one. `None` if it does not decode.
pub fn decode_consumer_protocol<T: Decodable>(bytes: &Bytes) -> Option<T> {
    if bytes.len() < 2 {
        return None;
    }
    let version = i16::from_be_bytes([bytes[0], bytes[1]]);
    if version < 0 {
        return None;
    }
    T::decode(&mut bytes.slice(2..), version.min(3)).ok()
}

/// Encodes `[size][response header][body]` for `api` at `version`.
pub fn encode_response<R: Encodable>(
    correlation_id: i32,
    api: ApiKey,
    version: i16,
    body: &R,
) -> Result<Bytes, String> {
    let header_version = api.response_header_version(version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let size = header
        .compute_size(header_version)
        .and_then(|h| Ok(h + body.compute_size(version)?))
        .map_err(|e| e.to_string())?;
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(size as i32);
    header
        .encode(&mut buf, header_version)
        .map_err(|e| e.to_string())?;
    body.encode(&mut buf, version).map_err(|e| e.to_string())?;
    debug_assert_eq!(buf.len(), 4 + size, "compute_size disagrees with encode");
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
    use kafka_protocol::protocol::StrBytes;

    fn request_bytes(api: ApiKey, version: i16, cid: i32) -> Bytes {
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(cid)
            .with_client_id(Some(StrBytes::from_static_str("test")));
        let mut buf = BytesMut::new();
        header
            .encode(&mut buf, api.request_header_version(version))
            .unwrap();
        ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("t"))
            .with_client_software_version(StrBytes::from_static_str("1"))
            .encode(&mut buf, version)
            .unwrap();
        buf.freeze()
    }

    #[test]
    fn parses_header_and_leaves_body() {
        let frame = parse_request(request_bytes(ApiKey::ApiVersions, 3, 42)).unwrap();
        assert_eq!(frame.api_key, ApiKey::ApiVersions);
        assert_eq!(frame.version, 3);
        assert_eq!(frame.header.correlation_id, 42);
        let mut body = frame.body;
        let req: ApiVersionsRequest = decode_body(&mut body, 3).unwrap();
        assert_eq!(&*req.client_software_name, "t");
    }

    #[test]
    fn rejects_short_and_unknown() {
        assert!(matches!(
            parse_request(Bytes::from_static(&[0, 18, 0])),
            Err(FrameError::Truncated(3))
        ));
        let unknown = Bytes::from_static(&[0x7f, 0x00, 0, 0, 0, 0, 0, 9, 0xff, 0xff]);
        assert!(matches!(
            parse_request(unknown),
            Err(FrameError::UnknownApiKey {
                api_key: 0x7f00,
                correlation_id: 9
            })
        ));
    }

    #[test]
    fn truncated_body_is_an_error_not_a_panic() {
        let full = request_bytes(ApiKey::ApiVersions, 3, 1);
        for cut in REQUEST_FRAME_BYTES_MIN..full.len() {
            if let Ok(frame) = parse_request(full.slice(..cut)) {
                let mut body = frame.body;
                let _ = decode_body::<ApiVersionsRequest>(&mut body, 3);
            }
        }
    }

    /// Inputs the fuzzer (tests/fuzz, target `request`) crashed on, decoded as the broker
    /// does: each must end in an error, not an abort.
    #[test]
    fn fuzz_regressions() {
        use kafka_protocol::messages::FetchRequest;
        // A Fetch v12 whose topic array claims ~2^31 entries: kafka-protocol reserved the
        // whole array up front (~400 GB) and the failed allocation aborted the process.
        let input = include_bytes!("../../tests/fuzz/regressions/request/fetch-topic-count-2g");
        let frame = parse_request(Bytes::from_static(input)).unwrap();
        assert_eq!((frame.api_key, frame.version), (ApiKey::Fetch, 12));
        let mut body = frame.body;
        assert!(decode_body::<FetchRequest>(&mut body, 12).is_err());
    }

    #[test]
    fn response_has_size_prefix() {
        let resp = ApiVersionsResponse::default();
        let bytes = encode_response(7, ApiKey::ApiVersions, 3, &resp).unwrap();
        let size = i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        assert_eq!(size + 4, bytes.len());
        assert_eq!(&bytes[4..8], &7i32.to_be_bytes());
    }
}
