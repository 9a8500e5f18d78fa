//! A minimal pipelined Kafka client on glommio: framing, version negotiation, and the
//! handful of requests a load generator needs (ApiVersions, Metadata, CreateTopics,
//! InitProducerId, ListOffsets; Produce and Fetch are encoded by the workers).
//!
//! A connection splits into a [`ConnWriter`] and a [`ConnReader`] sharing one socket, so a
//! producer can keep several requests in flight: Kafka answers a connection's requests in
//! order, so the reader pairs each response with the oldest request outstanding.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use glommio::net::TcpStream;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, CreateTopicsRequest,
    CreateTopicsResponse, InitProducerIdRequest, InitProducerIdResponse, ListOffsetsRequest,
    ListOffsetsResponse, MetadataRequest, MetadataResponse, RequestHeader, ResponseHeader,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

pub type Error = String;

const CLIENT_ID: &str = "strand-bench";
/// Largest response frame accepted.
const RESPONSE_BYTES_MAX: usize = 256 * 1024 * 1024;
const READ_BUFFER_BYTES: usize = 256 * 1024;
/// Kafka error codes the setup handles by name.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const LEADER_NOT_AVAILABLE: i16 = 5;
const TOPIC_ALREADY_EXISTS: i16 = 36;

/// The newest version of each API this client speaks, and the one negotiated per broker.
#[derive(Clone, Copy, Debug)]
pub struct Versions {
    pub produce: i16,
    pub fetch: i16,
    pub metadata: i16,
    pub list_offsets: i16,
    pub init_producer_id: i16,
    pub create_topics: i16,
}

impl Versions {
    /// Newest versions used. Fetch stops at 12 (v13 names topics by id); Produce at 9
    /// (v10+ only adds tagged fields for KIP-951 leader hints).
    const NEWEST: Versions = Versions {
        produce: 9,
        fetch: 12,
        metadata: 9,
        list_offsets: 5,
        init_producer_id: 4,
        create_topics: 5,
    };
    const OLDEST: Versions = Versions {
        produce: 3,
        fetch: 4,
        metadata: 1,
        list_offsets: 1,
        init_producer_id: 0,
        create_topics: 2,
    };

    fn negotiate(response: &ApiVersionsResponse) -> Result<Versions, Error> {
        let ranges: BTreeMap<i16, (i16, i16)> = response
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        let pick = |api: ApiKey, oldest: i16, newest: i16| -> Result<i16, Error> {
            let (min, max) = ranges
                .get(&(api as i16))
                .copied()
                .ok_or_else(|| format!("the broker does not support {api:?}"))?;
            let version = max.min(newest);
            if version < oldest.max(min) {
                return Err(format!(
                    "no common {api:?} version: broker {min}..={max}, client {oldest}..={newest}"
                ));
            }
            Ok(version)
        };
        let (o, n) = (Versions::OLDEST, Versions::NEWEST);
        Ok(Versions {
            produce: pick(ApiKey::Produce, o.produce, n.produce)?,
            fetch: pick(ApiKey::Fetch, o.fetch, n.fetch)?,
            metadata: pick(ApiKey::Metadata, o.metadata, n.metadata)?,
            list_offsets: pick(ApiKey::ListOffsets, o.list_offsets, n.list_offsets)?,
            // Optional: only idempotent producers and topic creation need them.
            init_producer_id: pick(ApiKey::InitProducerId, 0, n.init_producer_id).unwrap_or(-1),
            create_topics: pick(ApiKey::CreateTopics, o.create_topics, n.create_topics)
                .unwrap_or(-1),
        })
    }
}

/// One half of the shared socket; each is borrowed only inside a poll.
struct Half(Rc<RefCell<TcpStream>>);

impl AsyncRead for Half {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
    }
}

impl AsyncWrite for Half {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_close(cx)
    }
}

pub struct ConnWriter {
    writer: Half,
    correlation_id: i32,
    buf: BytesMut,
}

pub struct ConnReader {
    reader: BufReader<Half>,
}

/// A connection used one request at a time (setup) or split for pipelining.
pub struct Conn {
    pub writer: ConnWriter,
    pub reader: ConnReader,
}

impl Conn {
    pub async fn connect(addr: &str) -> Result<Conn, Error> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("{addr}: {e}"))?;
        let stream = Rc::new(RefCell::new(stream));
        Ok(Conn {
            writer: ConnWriter {
                writer: Half(stream.clone()),
                correlation_id: 0,
                buf: BytesMut::with_capacity(64 * 1024),
            },
            reader: ConnReader {
                reader: BufReader::with_capacity(READ_BUFFER_BYTES, Half(stream)),
            },
        })
    }

    /// Sends one request and waits for its response.
    pub async fn call<Q: Encodable, R: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        request: &Q,
    ) -> Result<R, Error> {
        let correlation_id = self.writer.send(api, version, request).await?;
        let mut frame = self.reader.recv().await?;
        decode_response(api, version, correlation_id, &mut frame)
    }

    /// ApiVersions (v3, or v0 if the broker answers v3 with UNSUPPORTED_VERSION).
    pub async fn negotiate(&mut self) -> Result<Versions, Error> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let response: ApiVersionsResponse = self.call(ApiKey::ApiVersions, 3, &request).await?;
        let response = if response.error_code == 35 {
            self.call(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default())
                .await?
        } else {
            response
        };
        if response.error_code != 0 {
            return Err(format!("ApiVersions failed: error {}", response.error_code));
        }
        Versions::negotiate(&response)
    }
}

impl ConnWriter {
    /// Encodes `[size][header][body]` and writes it; returns the correlation id.
    pub async fn send<Q: Encodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        request: &Q,
    ) -> Result<i32, Error> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let header_version = api.request_header_version(version);
        let size = header
            .compute_size(header_version)
            .and_then(|h| Ok(h + request.compute_size(version)?))
            .map_err(|e| format!("cannot size {api:?} v{version}: {e}"))?;
        self.buf.clear();
        self.buf.reserve(4 + size);
        self.buf.extend_from_slice(&(size as i32).to_be_bytes());
        header
            .encode(&mut self.buf, header_version)
            .and_then(|_| request.encode(&mut self.buf, version))
            .map_err(|e| format!("cannot encode {api:?} v{version}: {e}"))?;
        self.writer
            .write_all(&self.buf)
            .await
            .map_err(|e| format!("write failed: {e}"))?;
        Ok(self.correlation_id)
    }
}

impl ConnReader {
    /// Reads one response frame (without its size prefix).
    pub async fn recv(&mut self) -> Result<Bytes, Error> {
        let mut size = [0u8; 4];
        self.reader
            .read_exact(&mut size)
            .await
            .map_err(|e| format!("read failed: {e}"))?;
        let size = i32::from_be_bytes(size);
        if size < 4 || size as usize > RESPONSE_BYTES_MAX {
            return Err(format!("response frame size {size} out of range"));
        }
        let mut frame = BytesMut::zeroed(size as usize);
        self.reader
            .read_exact(&mut frame)
            .await
            .map_err(|e| format!("read failed: {e}"))?;
        Ok(frame.freeze())
    }
}

/// Checks the response header's correlation id and decodes the body.
pub fn decode_response<R: Decodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    frame: &mut Bytes,
) -> Result<R, Error> {
    let header = ResponseHeader::decode(frame, api.response_header_version(version))
        .map_err(|e| format!("bad {api:?} response header: {e}"))?;
    if header.correlation_id != correlation_id {
        return Err(format!(
            "{api:?} response for correlation id {} while waiting for {correlation_id}",
            header.correlation_id
        ));
    }
    R::decode(frame, version).map_err(|e| format!("bad {api:?} v{version} response: {e}"))
}

/// What a workload needs to know about the cluster.
#[derive(Clone, Debug)]
pub struct ClusterMap {
    pub versions: Versions,
    /// Broker id → "host:port".
    pub brokers: BTreeMap<i32, String>,
    /// Leader broker id of each partition, by partition index.
    pub leaders: Vec<i32>,
}

fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

/// Finds the topic's partition leaders, creating the topic (with `partitions`) if it does
/// not exist. Waits (bounded) for every partition to have a leader.
pub async fn discover(
    conn: &mut Conn,
    versions: Versions,
    topic: &str,
    partitions: i32,
) -> Result<ClusterMap, Error> {
    let mut created = false;
    for _attempt in 0..100 {
        let request = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(topic_name(topic)))
            ]))
            .with_allow_auto_topic_creation(false);
        let response: MetadataResponse = conn
            .call(ApiKey::Metadata, versions.metadata, &request)
            .await?;
        let brokers: BTreeMap<i32, String> = response
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port)))
            .collect();
        let meta = response
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
            .ok_or_else(|| format!("Metadata did not mention topic {topic}"))?;
        match meta.error_code {
            0 => {}
            UNKNOWN_TOPIC_OR_PARTITION if !created => {
                create_topic(conn, versions, topic, partitions).await?;
                created = true;
                continue;
            }
            UNKNOWN_TOPIC_OR_PARTITION | LEADER_NOT_AVAILABLE => {
                glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
            code => return Err(format!("Metadata for {topic}: error {code}")),
        }
        let mut leaders = vec![-1; meta.partitions.len()];
        for p in &meta.partitions {
            let index = usize::try_from(p.partition_index)
                .ok()
                .filter(|&i| i < leaders.len())
                .ok_or_else(|| format!("partition index {} out of range", p.partition_index))?;
            if p.error_code == 0 && brokers.contains_key(&p.leader_id.0) {
                leaders[index] = p.leader_id.0;
            }
        }
        if leaders.is_empty() || leaders.contains(&-1) {
            glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        }
        return Ok(ClusterMap {
            versions,
            brokers,
            leaders,
        });
    }
    Err(format!("topic {topic} has no leader for every partition"))
}

async fn create_topic(
    conn: &mut Conn,
    versions: Versions,
    topic: &str,
    partitions: i32,
) -> Result<(), Error> {
    if versions.create_topics < 0 {
        return Err(format!(
            "topic {topic} does not exist and the broker has no CreateTopics"
        ));
    }
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(1)])
        .with_timeout_ms(30_000);
    let response: CreateTopicsResponse = conn
        .call(ApiKey::CreateTopics, versions.create_topics, &request)
        .await?;
    for t in &response.topics {
        if t.error_code != 0 && t.error_code != TOPIC_ALREADY_EXISTS {
            return Err(format!(
                "CreateTopics {topic}: error {} {}",
                t.error_code,
                t.error_message.as_deref().unwrap_or("")
            ));
        }
    }
    Ok(())
}

/// A fresh idempotent producer id and epoch.
pub async fn init_producer_id(conn: &mut Conn, versions: Versions) -> Result<(i64, i16), Error> {
    if versions.init_producer_id < 0 {
        return Err("the broker does not support InitProducerId (idempotence)".into());
    }
    let request = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(kafka_protocol::messages::ProducerId(-1))
        .with_producer_epoch(-1);
    let response: InitProducerIdResponse = conn
        .call(ApiKey::InitProducerId, versions.init_producer_id, &request)
        .await?;
    if response.error_code != 0 {
        return Err(format!("InitProducerId: error {}", response.error_code));
    }
    Ok((response.producer_id.0, response.producer_epoch))
}

/// Earliest (`-2`) or latest (`-1`) offset of each partition, asked of its leader.
pub async fn list_offsets(map: &ClusterMap, topic: &str, which: i64) -> Result<Vec<i64>, Error> {
    let mut offsets = vec![-1i64; map.leaders.len()];
    for (broker, addr) in &map.brokers {
        let mine: Vec<i32> = (0..map.leaders.len() as i32)
            .filter(|&p| map.leaders[p as usize] == *broker)
            .collect();
        if mine.is_empty() {
            continue;
        }
        let mut conn = Conn::connect(addr).await?;
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(
                    mine.iter()
                        .map(|&p| {
                            ListOffsetsPartition::default()
                                .with_partition_index(p)
                                .with_timestamp(which)
                        })
                        .collect(),
                )]);
        let response: ListOffsetsResponse = conn
            .call(ApiKey::ListOffsets, map.versions.list_offsets, &request)
            .await?;
        for t in &response.topics {
            for p in &t.partitions {
                if p.error_code != 0 {
                    return Err(format!(
                        "ListOffsets {topic}-{}: error {}",
                        p.partition_index, p.error_code
                    ));
                }
                if let Some(slot) = offsets.get_mut(p.partition_index as usize) {
                    *slot = p.offset;
                }
            }
        }
    }
    if let Some(p) = offsets.iter().position(|&o| o < 0) {
        return Err(format!("ListOffsets gave no offset for {topic}-{p}"));
    }
    Ok(offsets)
}
