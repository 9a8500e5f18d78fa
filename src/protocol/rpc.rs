//! The inter-node protocol's frames: encoding to pieces, decoding from one `Bytes` frame.
//! The format is specified in docs/protocol.md ("Inter-node protocol"); in short:
//!
//! ```text
//! frame = len u32 BE | kind u8 | seq uvarint | ack uvarint | body     (len counts from kind)
//! ```
//!
//! with bodies HELLO, RAFT (a batch of raft-rs messages, each tagged with its group id),
//! REQUEST, REPLY and LEADERSHIP. Integers are LEB128 varints (zigzag for the one signed
//! field); byte strings are a varint length and the bytes.
//!
//! Encoding does not copy entry data: a frame is a list of [`Piece`]s, encoded headers in
//! small buffers and each entry's `data` (at least [`SPLICE_BYTES_MIN`] long) its own piece,
//! for a vectored write. Decoding takes the frame as one `Bytes` and returns entries,
//! contexts and payloads as slices of it.
//!
//! Peers are trusted (they are nodes of the same cluster), but decoding must still never
//! panic, whatever the bytes: every read is bounds-checked, a count is checked against the
//! bytes left before anything is reserved for it, the length prefix is checked against a
//! limit before a frame is buffered, and every failure is an [`RpcError`] saying what was
//! wrong where. Message types raft-rs only ever makes for itself (MsgHup, MsgBeat,
//! MsgUnreachable, MsgSnapStatus, MsgCheckQuorum) are refused here, so that a peer cannot
//! make a node campaign or change its view of the peer's reachability.
//!
//! Not served yet: the cluster work wires this to an rpc port.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use raft::eraftpb::{ConfState, Entry, EntryType, Message, MessageType, Snapshot};

use super::pieces::{total_len, ChainWriter, Piece};

#[cfg(test)]
use super::pieces::SPLICE_BYTES_MIN;

/// The first bytes of a HELLO body.
pub const MAGIC: [u8; 4] = *b"STRD";
/// The version of this format, sent in HELLO; a peer speaking another one is refused.
pub const PROTOCOL_VERSION: u16 = 1;
/// Default limit of `len` (`--rpc-max-frame-bytes`): twice the largest message a client
/// may produce, with room for headers.
pub const FRAME_BYTES_MAX_DEFAULT: usize = 64 << 20;
/// The length prefix.
pub const PREFIX_BYTES: usize = 4;
/// kind, seq and ack take at least a byte each.
const FRAME_BYTES_MIN: usize = 3;
/// A header piece at most this long absorbs the piece after it, which saves a vector
/// entry for the common frame of headers only (heartbeats, votes, responses).
const MERGE_BYTES_MAX: usize = 4096;

// The fewest bytes a decoded item can take; a count of items is checked against the bytes
// left divided by these.
/// group, type, flags, 9 varints, context length, entry count.
const MESSAGE_BYTES_MIN: usize = 14;
/// type, term, context length, data length.
const ENTRY_BYTES_MIN: usize = 4;
/// group, term, leader, isr count, version.
const GROUP_LEADER_BYTES_MIN: usize = 5;
/// Vectors decoded from a count start no larger than this and grow with what is decoded.
const CAPACITY_FROM_COUNT_MAX: usize = 64;

// Flags of a RAFT message.
const FLAG_REJECT: u8 = 1;
const FLAG_SNAPSHOT: u8 = 2;
const FLAG_ENTRY_INDEXES: u8 = 4;
const MESSAGE_FLAGS: u8 = FLAG_REJECT | FLAG_SNAPSHOT | FLAG_ENTRY_INDEXES;

/// What was wrong with a frame, for the log line of the closed connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcError(String);

impl RpcError {
    fn new(message: impl Into<String>) -> Self {
        RpcError(message.into())
    }

    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RpcError {}

pub type Result<T> = std::result::Result<T, RpcError>;

/// The kind byte of a frame.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Hello = 1,
    Raft = 2,
    Request = 3,
    Reply = 4,
    Leadership = 5,
}

impl Kind {
    fn from_u8(byte: u8) -> Option<Kind> {
        Some(match byte {
            1 => Kind::Hello,
            2 => Kind::Raft,
            3 => Kind::Request,
            4 => Kind::Reply,
            5 => Kind::Leadership,
            _ => return None,
        })
    }
}

/// A decoded frame. `seq` numbers the frames of one direction of a connection; `ack` is
/// the highest `seq` the sender had received from the other direction.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    pub seq: u64,
    pub ack: u64,
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    Hello(Hello),
    /// raft-rs messages, each with its group id.
    Raft(Vec<(u64, Message)>),
    Request(Request),
    Reply(Reply),
    Leadership(Leadership),
}

impl Body {
    pub fn kind(&self) -> Kind {
        match self {
            Body::Hello(_) => Kind::Hello,
            Body::Raft(_) => Kind::Raft,
            Body::Request(_) => Kind::Request,
            Body::Reply(_) => Kind::Reply,
            Body::Leadership(_) => Kind::Leadership,
        }
    }
}

/// The first frame of a connection, from the dialing shard. Magic and version are checked
/// when it is decoded; the rest is for the receiver to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Empty until the cluster id is known.
    pub cluster_id: String,
    pub from_node: u64,
    pub from_shard: u16,
    pub shard_count: u16,
    /// The node the dialer means to reach.
    pub to_node: u64,
    /// The sender's start time (ns): a new value means the peer restarted.
    pub incarnation: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub req_id: u64,
    pub op: u8,
    pub payload: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub req_id: u64,
    pub payload: Bytes,
}

/// Leaders of Raft groups, as one node knows them: all of them (`full`) or changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leadership {
    pub full: bool,
    pub groups: Vec<GroupLeader>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupLeader {
    pub group: u64,
    pub term: u64,
    /// 0 when the group has no known leader (raft-rs ids start at 1).
    pub leader: u64,
    pub isr: Vec<u64>,
    pub version: u64,
}

/// The two ends of a connection, as raft-rs ids: a RAFT frame carries neither, every
/// message on it goes `from` the peer `to` this node.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub from: u64,
    pub to: u64,
}

// ---------------------------------------------------------------------------------------
// Encoding

fn put_uvarint(out: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

fn put_ivarint(out: &mut BytesMut, value: i64) {
    put_uvarint(out, ((value << 1) ^ (value >> 63)) as u64);
}

fn uvarint_len(mut value: u64) -> usize {
    let mut len = 1;
    while value >= 0x80 {
        value >>= 7;
        len += 1;
    }
    len
}

fn put_bytes(out: &mut BytesMut, bytes: &[u8]) {
    put_uvarint(out, bytes.len() as u64);
    out.put_slice(bytes);
}

fn put_ids(out: &mut BytesMut, ids: &[u64]) {
    put_uvarint(out, ids.len() as u64);
    for &id in ids {
        put_uvarint(out, id);
    }
}

/// The frame of `body`, as pieces to write in order.
pub fn encode(seq: u64, ack: u64, body: &Body) -> Vec<Piece> {
    if let Body::Raft(messages) = body {
        let mut batch = RaftBatch::new();
        for (group, message) in messages {
            batch.push(*group, message);
        }
        return batch.into_frame(seq, ack);
    }
    let mut w = ChainWriter::new();
    let out = w.buf();
    out.put_u8(body.kind() as u8);
    put_uvarint(out, seq);
    put_uvarint(out, ack);
    match body {
        Body::Raft(_) => unreachable!("encoded above"),
        Body::Hello(h) => {
            out.put_slice(&MAGIC);
            out.put_u16(PROTOCOL_VERSION);
            put_bytes(out, h.cluster_id.as_bytes());
            put_uvarint(out, h.from_node);
            put_uvarint(out, u64::from(h.from_shard));
            put_uvarint(out, u64::from(h.shard_count));
            put_uvarint(out, h.to_node);
            put_uvarint(out, h.incarnation);
        }
        Body::Request(r) => {
            put_uvarint(out, r.req_id);
            out.put_u8(r.op);
            put_uvarint(out, r.payload.len() as u64);
            w.splice(&[Piece::from(r.payload.clone())]);
        }
        Body::Reply(r) => {
            put_uvarint(out, r.req_id);
            put_uvarint(out, r.payload.len() as u64);
            w.splice(&[Piece::from(r.payload.clone())]);
        }
        Body::Leadership(l) => {
            out.put_u8(u8::from(l.full));
            put_uvarint(out, l.groups.len() as u64);
            for g in &l.groups {
                put_uvarint(out, g.group);
                put_uvarint(out, g.term);
                put_uvarint(out, g.leader);
                put_ids(out, &g.isr);
                put_uvarint(out, g.version);
            }
        }
    }
    with_prefix(w.finish())
}

/// `pieces` behind their length prefix; a small first piece is copied behind the prefix.
fn with_prefix(mut pieces: Vec<Piece>) -> Vec<Piece> {
    let len = total_len(&pieces);
    // Frames are bounded far below this by the message sizes raft-rs is configured with
    // and the outbox limit; a wrapped length would desynchronize the connection.
    let len = u32::try_from(len).expect("an rpc frame is shorter than 4 GiB");
    let mut head = BytesMut::with_capacity(PREFIX_BYTES + MERGE_BYTES_MAX);
    head.put_u32(len);
    match pieces.first() {
        Some(Piece::Bytes(first)) if first.len() <= MERGE_BYTES_MAX => {
            head.put_slice(first);
            pieces[0] = Piece::Bytes(head.freeze());
        }
        _ => pieces.insert(0, Piece::Bytes(head.freeze())),
    }
    pieces
}

/// A RAFT frame built message by message, so that a sender can stop before a size.
///
/// `to` and `from` of a message are not encoded (the connection implies them), nor is
/// `Entry::sync_log` (deprecated in raft-proto, never read by raft-rs 0.7). Every other
/// field of `Message`, `Entry`, `Snapshot`, `SnapshotMetadata` and `ConfState` is.
///
/// Entry indexes: raft-rs sends MsgAppend entries contiguous from `index + 1`
/// (`Raft::prepare_send_entries`/`try_batching` only append continuous runs), so they are
/// left out when every entry of a message has index `index + 1 + i`. Other messages carry
/// entries whose index raft-rs has not assigned (0: forwarded MsgPropose, MsgReadIndex and
/// its response); those messages carry each entry's index (flag `FLAG_ENTRY_INDEXES`), so
/// any message decodes to exactly what was encoded.
#[derive(Default)]
pub struct RaftBatch {
    body: ChainWriter,
    count: u64,
    /// Bytes of the body so far, without the message count.
    len: usize,
}

impl RaftBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// At most the bytes the frame will take, prefix included.
    pub fn frame_bytes(&self) -> usize {
        PREFIX_BYTES + 1 + 10 + 10 + uvarint_len(self.count) + self.len
    }

    /// Appends `message` of `group`. Local message types are encoded too, and refused by
    /// the decoder: raft-rs never puts them in a `Ready`.
    pub fn push(&mut self, group: u64, m: &Message) {
        let implied = m
            .entries
            .iter()
            .enumerate()
            .all(|(i, e)| m.index.checked_add(1 + i as u64) == Some(e.index));
        let mut flags = 0;
        if m.reject {
            flags |= FLAG_REJECT;
        }
        if m.has_snapshot() {
            flags |= FLAG_SNAPSHOT;
        }
        if !implied {
            flags |= FLAG_ENTRY_INDEXES;
        }
        let out = self.body.buf();
        let start = out.len();
        put_uvarint(out, group);
        out.put_u8(m.get_msg_type() as u8);
        out.put_u8(flags);
        put_uvarint(out, m.term);
        put_uvarint(out, m.log_term);
        put_uvarint(out, m.index);
        put_uvarint(out, m.commit);
        put_uvarint(out, m.commit_term);
        put_uvarint(out, m.reject_hint);
        put_uvarint(out, m.request_snapshot);
        put_uvarint(out, m.deprecated_priority);
        put_ivarint(out, m.priority);
        put_bytes(out, &m.context);
        put_uvarint(out, m.entries.len() as u64);
        self.len += out.len() - start;
        for e in m.entries.iter() {
            let out = self.body.buf();
            let start = out.len();
            out.put_u8(e.get_entry_type() as u8);
            put_uvarint(out, e.term);
            if !implied {
                put_uvarint(out, e.index);
            }
            put_bytes(out, &e.context);
            put_uvarint(out, e.data.len() as u64);
            self.len += out.len() - start + e.data.len();
            self.body.splice(&[Piece::from(e.data.clone())]);
        }
        if m.has_snapshot() {
            let s = m.get_snapshot();
            let meta = s.get_metadata();
            let cs = meta.get_conf_state();
            let out = self.body.buf();
            let start = out.len();
            put_uvarint(out, meta.index);
            put_uvarint(out, meta.term);
            put_ids(out, &cs.voters);
            put_ids(out, &cs.learners);
            put_ids(out, &cs.voters_outgoing);
            put_ids(out, &cs.learners_next);
            out.put_u8(u8::from(cs.auto_leave));
            put_uvarint(out, s.data.len() as u64);
            self.len += out.len() - start + s.data.len();
            self.body.splice(&[Piece::from(s.data.clone())]);
        }
        self.count += 1;
    }

    /// The frame, as pieces to write in order.
    pub fn into_frame(self, seq: u64, ack: u64) -> Vec<Piece> {
        let mut head = BytesMut::with_capacity(32);
        head.put_u8(Kind::Raft as u8);
        put_uvarint(&mut head, seq);
        put_uvarint(&mut head, ack);
        put_uvarint(&mut head, self.count);
        let mut body = self.body.finish();
        match body.first() {
            Some(Piece::Bytes(first)) if first.len() <= MERGE_BYTES_MAX => {
                head.put_slice(first);
                body[0] = Piece::Bytes(head.freeze());
            }
            _ => body.insert(0, Piece::Bytes(head.freeze())),
        }
        with_prefix(body)
    }
}

// ---------------------------------------------------------------------------------------
// Decoding

/// The frame length a prefix announces, checked against `frame_bytes_max`.
pub fn frame_len(prefix: [u8; PREFIX_BYTES], frame_bytes_max: usize) -> Result<usize> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > frame_bytes_max {
        return Err(RpcError::new(format!(
            "frame of {len} bytes exceeds the limit of {frame_bytes_max}"
        )));
    }
    if len < FRAME_BYTES_MIN {
        return Err(RpcError::new(format!("frame of {len} bytes is too short")));
    }
    Ok(len)
}

/// Cuts frames out of a byte stream that arrives in pieces.
pub struct FrameReader {
    buf: BytesMut,
    frame_bytes_max: usize,
}

impl FrameReader {
    pub fn new(frame_bytes_max: usize) -> Self {
        FrameReader {
            buf: BytesMut::new(),
            frame_bytes_max,
        }
    }

    /// Where to read into: append, then call [`FrameReader::next_frame`].
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame (without its prefix, as [`decode`] takes it), `None` until
    /// one has fully arrived. After an error the stream cannot be resynchronized.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>> {
        let Some(prefix) = self.buf.get(..PREFIX_BYTES) else {
            return Ok(None);
        };
        let prefix = <[u8; PREFIX_BYTES]>::try_from(prefix).expect("4 bytes");
        let len = frame_len(prefix, self.frame_bytes_max)?;
        let want = PREFIX_BYTES + len;
        if self.buf.len() < want {
            // The whole frame lands in one buffer, so that decoded entries can share it.
            self.buf.reserve(want - self.buf.len());
            return Ok(None);
        }
        let mut frame = self.buf.split_to(want);
        frame.advance(PREFIX_BYTES);
        Ok(Some(frame.freeze()))
    }
}

/// Reads a frame from the front, every read checked against its end.
struct Reader {
    buf: Bytes,
    at: usize,
}

impl Reader {
    fn remaining(&self) -> usize {
        self.buf.len() - self.at
    }

    fn truncated(&self, what: &str) -> RpcError {
        RpcError::new(format!(
            "frame truncated in {what} (byte {} of {})",
            self.at,
            self.buf.len()
        ))
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        let byte = *self.buf.get(self.at).ok_or_else(|| self.truncated(what))?;
        self.at += 1;
        Ok(byte)
    }

    fn bool(&mut self, what: &str) -> Result<bool> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(RpcError::new(format!("{what} is {other}, not 0 or 1"))),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let end = self.at + N;
        let bytes = self
            .buf
            .get(self.at..end)
            .ok_or_else(|| self.truncated(what))?;
        self.at = end;
        Ok(bytes.try_into().expect("N bytes"))
    }

    fn uvarint(&mut self, what: &str) -> Result<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let byte = self.u8(what)?;
            if i == 9 && byte > 1 {
                return Err(RpcError::new(format!("{what} overflows 64 bits")));
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(RpcError::new(format!("{what} overflows 64 bits")))
    }

    fn ivarint(&mut self, what: &str) -> Result<i64> {
        let raw = self.uvarint(what)?;
        Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
    }

    fn u16_varint(&mut self, what: &str) -> Result<u16> {
        let value = self.uvarint(what)?;
        u16::try_from(value).map_err(|_| RpcError::new(format!("{what} {value} exceeds 65535")))
    }

    /// `len` bytes, shared with the frame.
    fn slice(&mut self, len: u64, what: &str) -> Result<Bytes> {
        if len > self.remaining() as u64 {
            return Err(RpcError::new(format!(
                "{what} of {len} bytes runs past the frame end ({} bytes left)",
                self.remaining()
            )));
        }
        let end = self.at + len as usize;
        let bytes = self.buf.slice(self.at..end);
        self.at = end;
        Ok(bytes)
    }

    /// A length-prefixed byte string, shared with the frame.
    fn bytes(&mut self, what: &str) -> Result<Bytes> {
        let len = self.uvarint(what)?;
        self.slice(len, what)
    }

    /// A count of items that take at least `bytes_min` bytes each.
    fn count(&mut self, what: &str, bytes_min: usize) -> Result<usize> {
        let count = self.uvarint(what)?;
        if count > (self.remaining() / bytes_min) as u64 {
            return Err(RpcError::new(format!(
                "{what} {count} cannot fit in the {} bytes left",
                self.remaining()
            )));
        }
        Ok(count as usize)
    }

    fn ids(&mut self, what: &str) -> Result<Vec<u64>> {
        let count = self.count(what, 1)?;
        let mut ids = Vec::with_capacity(count.min(CAPACITY_FROM_COUNT_MAX));
        for _ in 0..count {
            ids.push(self.uvarint(what)?);
        }
        Ok(ids)
    }

    fn end(&self, what: &str) -> Result<()> {
        match self.remaining() {
            0 => Ok(()),
            left => Err(RpcError::new(format!("{left} bytes after the {what}"))),
        }
    }
}

/// Decodes one frame (the bytes after its length prefix, as [`FrameReader`] cuts them).
/// `link` is needed for RAFT frames, whose messages get `from` and `to` from it; a RAFT
/// frame without one (before HELLO) is an error.
pub fn decode(frame: Bytes, link: Option<Link>) -> Result<Frame> {
    let mut r = Reader { buf: frame, at: 0 };
    let kind = r.u8("kind")?;
    let kind =
        Kind::from_u8(kind).ok_or_else(|| RpcError::new(format!("unknown frame kind {kind}")))?;
    let seq = r.uvarint("seq")?;
    let ack = r.uvarint("ack")?;
    let body = match kind {
        Kind::Hello => Body::Hello(hello(&mut r)?),
        Kind::Raft => {
            let link = link.ok_or_else(|| RpcError::new("RAFT frame before HELLO"))?;
            let count = r.count("message count", MESSAGE_BYTES_MIN)?;
            let mut messages = Vec::with_capacity(count.min(CAPACITY_FROM_COUNT_MAX));
            for _ in 0..count {
                messages.push(message(&mut r, link)?);
            }
            Body::Raft(messages)
        }
        Kind::Request => {
            let req_id = r.uvarint("request id")?;
            let op = r.u8("request op")?;
            let payload = r.bytes("request payload")?;
            Body::Request(Request {
                req_id,
                op,
                payload,
            })
        }
        Kind::Reply => {
            let req_id = r.uvarint("reply id")?;
            let payload = r.bytes("reply payload")?;
            Body::Reply(Reply { req_id, payload })
        }
        Kind::Leadership => {
            let full = r.bool("leadership full flag")?;
            let count = r.count("leadership group count", GROUP_LEADER_BYTES_MIN)?;
            let mut groups = Vec::with_capacity(count.min(CAPACITY_FROM_COUNT_MAX));
            for _ in 0..count {
                groups.push(GroupLeader {
                    group: r.uvarint("leadership group")?,
                    term: r.uvarint("leadership term")?,
                    leader: r.uvarint("leadership leader")?,
                    isr: r.ids("leadership isr")?,
                    version: r.uvarint("leadership version")?,
                });
            }
            Body::Leadership(Leadership { full, groups })
        }
    };
    r.end(match kind {
        Kind::Hello => "HELLO body",
        Kind::Raft => "RAFT body",
        Kind::Request => "REQUEST body",
        Kind::Reply => "REPLY body",
        Kind::Leadership => "LEADERSHIP body",
    })?;
    Ok(Frame { seq, ack, body })
}

fn hello(r: &mut Reader) -> Result<Hello> {
    let magic = r.array::<4>("HELLO magic")?;
    if magic != MAGIC {
        return Err(RpcError::new(format!(
            "HELLO magic {magic:02x?} is not \"STRD\""
        )));
    }
    let version = u16::from_be_bytes(r.array::<2>("protocol version")?);
    if version != PROTOCOL_VERSION {
        return Err(RpcError::new(format!(
            "protocol version {version}, this node speaks {PROTOCOL_VERSION}"
        )));
    }
    let cluster_id = r.bytes("cluster id")?;
    let cluster_id = String::from_utf8(cluster_id.to_vec())
        .map_err(|_| RpcError::new("cluster id is not UTF-8"))?;
    Ok(Hello {
        cluster_id,
        from_node: r.uvarint("from node")?,
        from_shard: r.u16_varint("from shard")?,
        shard_count: r.u16_varint("shard count")?,
        to_node: r.uvarint("to node")?,
        incarnation: r.uvarint("incarnation")?,
    })
}

/// The message types a peer may send: all but those raft-rs makes for itself.
fn peer_message_type(byte: u8) -> Result<MessageType> {
    use MessageType::*;
    Ok(match byte {
        2 => MsgPropose,
        3 => MsgAppend,
        4 => MsgAppendResponse,
        5 => MsgRequestVote,
        6 => MsgRequestVoteResponse,
        7 => MsgSnapshot,
        8 => MsgHeartbeat,
        9 => MsgHeartbeatResponse,
        13 => MsgTransferLeader,
        14 => MsgTimeoutNow,
        15 => MsgReadIndex,
        16 => MsgReadIndexResp,
        17 => MsgRequestPreVote,
        18 => MsgRequestPreVoteResponse,
        0 | 1 | 10 | 11 | 12 => {
            return Err(RpcError::new(format!(
                "message type {byte} is local to a node, never sent by a peer"
            )))
        }
        _ => return Err(RpcError::new(format!("unknown message type {byte}"))),
    })
}

fn entry_type(byte: u8) -> Result<EntryType> {
    Ok(match byte {
        0 => EntryType::EntryNormal,
        1 => EntryType::EntryConfChange,
        2 => EntryType::EntryConfChangeV2,
        _ => return Err(RpcError::new(format!("unknown entry type {byte}"))),
    })
}

fn message(r: &mut Reader, link: Link) -> Result<(u64, Message)> {
    let group = r.uvarint("group")?;
    let mut m = Message::default();
    m.set_msg_type(peer_message_type(r.u8("message type")?)?);
    let flags = r.u8("message flags")?;
    if flags & !MESSAGE_FLAGS != 0 {
        return Err(RpcError::new(format!("unknown message flags {flags:#x}")));
    }
    m.from = link.from;
    m.to = link.to;
    m.reject = flags & FLAG_REJECT != 0;
    m.term = r.uvarint("term")?;
    m.log_term = r.uvarint("log term")?;
    m.index = r.uvarint("index")?;
    m.commit = r.uvarint("commit")?;
    m.commit_term = r.uvarint("commit term")?;
    m.reject_hint = r.uvarint("reject hint")?;
    m.request_snapshot = r.uvarint("request snapshot")?;
    m.deprecated_priority = r.uvarint("deprecated priority")?;
    m.priority = r.ivarint("priority")?;
    m.context = r.bytes("message context")?;
    let count = r.count("entry count", ENTRY_BYTES_MIN)?;
    let mut entries = Vec::with_capacity(count.min(CAPACITY_FROM_COUNT_MAX));
    for i in 0..count {
        let mut e = Entry::default();
        e.set_entry_type(entry_type(r.u8("entry type")?)?);
        e.term = r.uvarint("entry term")?;
        e.index = if flags & FLAG_ENTRY_INDEXES != 0 {
            r.uvarint("entry index")?
        } else {
            m.index
                .checked_add(1 + i as u64)
                .ok_or_else(|| RpcError::new("entry index overflows 64 bits"))?
        };
        e.context = r.bytes("entry context")?;
        e.data = r.bytes("entry data")?;
        entries.push(e);
    }
    m.set_entries(entries.into());
    if flags & FLAG_SNAPSHOT != 0 {
        let mut s = Snapshot::default();
        let meta = s.mut_metadata();
        meta.index = r.uvarint("snapshot index")?;
        meta.term = r.uvarint("snapshot term")?;
        let cs: &mut ConfState = meta.mut_conf_state();
        cs.voters = r.ids("snapshot voters")?;
        cs.learners = r.ids("snapshot learners")?;
        cs.voters_outgoing = r.ids("snapshot outgoing voters")?;
        cs.learners_next = r.ids("snapshot next learners")?;
        cs.auto_leave = r.bool("snapshot auto leave")?;
        s.data = r.bytes("snapshot data")?;
        m.set_snapshot(s);
    }
    Ok((group, m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::pieces::concat;

    const LINK: Link = Link { from: 2, to: 1 };

    /// splitmix64: a small seeded generator, so failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        /// Numbers of every varint length, the edges included.
        fn number(&mut self) -> u64 {
            match self.below(6) {
                0 => 0,
                1 => self.below(128),
                2 => self.below(1 << 21),
                3 => u64::MAX - self.below(3),
                _ => self.next() >> self.below(64),
            }
        }

        fn bytes(&mut self, len_max: u64) -> Bytes {
            let len = self.below(len_max + 1) as usize;
            (0..len)
                .map(|_| self.next() as u8)
                .collect::<Vec<u8>>()
                .into()
        }

        fn ids(&mut self) -> Vec<u64> {
            (0..self.below(5)).map(|_| self.number()).collect()
        }
    }

    const PEER_TYPES: [MessageType; 14] = [
        MessageType::MsgPropose,
        MessageType::MsgAppend,
        MessageType::MsgAppendResponse,
        MessageType::MsgRequestVote,
        MessageType::MsgRequestVoteResponse,
        MessageType::MsgSnapshot,
        MessageType::MsgHeartbeat,
        MessageType::MsgHeartbeatResponse,
        MessageType::MsgTransferLeader,
        MessageType::MsgTimeoutNow,
        MessageType::MsgReadIndex,
        MessageType::MsgReadIndexResp,
        MessageType::MsgRequestPreVote,
        MessageType::MsgRequestPreVoteResponse,
    ];

    const LOCAL_TYPES: [MessageType; 5] = [
        MessageType::MsgHup,
        MessageType::MsgBeat,
        MessageType::MsgUnreachable,
        MessageType::MsgSnapStatus,
        MessageType::MsgCheckQuorum,
    ];

    /// A message with every encoded field set at random, as the decoder will return it.
    fn random_message(rng: &mut Rng, msg_type: MessageType) -> Message {
        let mut m = Message::default();
        m.set_msg_type(msg_type);
        m.from = LINK.from;
        m.to = LINK.to;
        m.term = rng.number();
        m.log_term = rng.number();
        m.index = rng.number();
        m.commit = rng.number();
        m.commit_term = rng.number();
        m.reject_hint = rng.number();
        m.request_snapshot = rng.number();
        m.deprecated_priority = rng.number();
        m.priority = rng.number() as i64;
        m.reject = rng.below(2) == 1;
        m.context = rng.bytes(12);
        // Contiguous from index + 1 (MsgAppend), unassigned (forwarded proposals), or any.
        let indexes = rng.below(3);
        let count = rng.below(5);
        let entries: Vec<Entry> = (0..count)
            .map(|i| {
                let mut e = Entry::default();
                e.set_entry_type(match rng.below(3) {
                    0 => EntryType::EntryNormal,
                    1 => EntryType::EntryConfChange,
                    _ => EntryType::EntryConfChangeV2,
                });
                e.term = rng.number();
                e.index = match indexes {
                    0 => m.index.wrapping_add(1 + i),
                    1 => 0,
                    _ => rng.number(),
                };
                e.context = rng.bytes(4);
                // Some entries past SPLICE_BYTES_MIN, so that they travel as their own piece.
                let len_max = if rng.below(2) == 0 { 40 } else { 700 };
                e.data = rng.bytes(len_max);
                e
            })
            .collect();
        m.set_entries(entries.into());
        if msg_type == MessageType::MsgSnapshot || rng.below(4) == 0 {
            let mut s = Snapshot::default();
            let meta = s.mut_metadata();
            meta.index = rng.number();
            meta.term = rng.number();
            let cs = meta.mut_conf_state();
            cs.voters = rng.ids();
            cs.learners = rng.ids();
            cs.voters_outgoing = rng.ids();
            cs.learners_next = rng.ids();
            cs.auto_leave = rng.below(2) == 1;
            s.data = rng.bytes(300);
            m.set_snapshot(s);
        }
        m
    }

    fn random_body(rng: &mut Rng) -> Body {
        match rng.below(5) {
            0 => Body::Hello(Hello {
                cluster_id: ["", "strand-7f3a", "ü-cluster"][rng.below(3) as usize].into(),
                from_node: rng.number(),
                from_shard: rng.next() as u16,
                shard_count: rng.next() as u16,
                to_node: rng.number(),
                incarnation: rng.number(),
            }),
            1 => Body::Raft(
                (0..rng.below(6))
                    .map(|_| {
                        let t = PEER_TYPES[rng.below(PEER_TYPES.len() as u64) as usize];
                        (rng.number(), random_message(rng, t))
                    })
                    .collect(),
            ),
            2 => Body::Request(Request {
                req_id: rng.number(),
                op: rng.next() as u8,
                payload: rng.bytes(600),
            }),
            3 => Body::Reply(Reply {
                req_id: rng.number(),
                payload: rng.bytes(600),
            }),
            _ => Body::Leadership(Leadership {
                full: rng.below(2) == 1,
                groups: (0..rng.below(5))
                    .map(|_| GroupLeader {
                        group: rng.number(),
                        term: rng.number(),
                        leader: rng.number(),
                        isr: rng.ids(),
                        version: rng.number(),
                    })
                    .collect(),
            }),
        }
    }

    /// The encoded frame in one buffer, with its length prefix.
    fn wire(seq: u64, ack: u64, body: &Body) -> Bytes {
        concat(&encode(seq, ack, body))
    }

    /// Decodes one whole frame, prefix included.
    fn decode_wire(wire: &Bytes) -> Result<Frame> {
        let mut reader = FrameReader::new(FRAME_BYTES_MAX_DEFAULT);
        reader.extend(wire);
        let frame = reader.next_frame()?.expect("a whole frame");
        assert!(reader.buffer().is_empty());
        decode(frame, Some(LINK))
    }

    fn sample_bodies() -> Vec<Body> {
        let mut rng = Rng(1);
        let mut append = random_message(&mut rng, MessageType::MsgAppend);
        let entries: Vec<Entry> = (0..3u64)
            .map(|i| Entry {
                term: 4,
                index: append.index.wrapping_add(1 + i),
                data: Bytes::from(vec![i as u8; 300 * i as usize]),
                ..Default::default()
            })
            .collect();
        append.set_entries(entries.into());
        let mut heartbeat = Message::default();
        heartbeat.set_msg_type(MessageType::MsgHeartbeat);
        heartbeat.from = LINK.from;
        heartbeat.to = LINK.to;
        heartbeat.term = 3;
        heartbeat.commit = 17;
        vec![
            Body::Hello(Hello {
                cluster_id: "c1".into(),
                from_node: 2,
                from_shard: 3,
                shard_count: 4,
                to_node: 1,
                incarnation: 1_700_000_000_000_000_000,
            }),
            Body::Raft(vec![]),
            Body::Raft(vec![(7, heartbeat), (0, append)]),
            Body::Request(Request {
                req_id: 9,
                op: 1,
                payload: Bytes::from_static(b"{\"CreateTopic\":{}}"),
            }),
            Body::Reply(Reply {
                req_id: 9,
                payload: Bytes::from(vec![5u8; 1000]),
            }),
            Body::Leadership(Leadership {
                full: true,
                groups: vec![
                    GroupLeader {
                        group: 0,
                        term: 2,
                        leader: 1,
                        isr: vec![1, 2, 3],
                        version: 11,
                    },
                    GroupLeader {
                        group: 5,
                        term: 1,
                        leader: 0,
                        isr: vec![],
                        version: 12,
                    },
                ],
            }),
        ]
    }

    #[test]
    fn every_kind_round_trips() {
        for (i, body) in sample_bodies().into_iter().enumerate() {
            let (seq, ack) = (i as u64 + 1, u64::MAX - i as u64);
            let wire = wire(seq, ack, &body);
            assert_eq!(wire[PREFIX_BYTES], body.kind() as u8);
            let len = u32::from_be_bytes(wire[..4].try_into().unwrap()) as usize;
            assert_eq!(len, wire.len() - PREFIX_BYTES);
            let frame = decode_wire(&wire).unwrap();
            assert_eq!(frame, Frame { seq, ack, body });
        }
    }

    #[test]
    fn random_frames_of_every_message_type_round_trip() {
        let mut rng = Rng(0x5eed);
        for round in 0..200 {
            // Every peer type in one frame, then a random frame of any kind.
            let mut messages = Vec::new();
            for &t in &PEER_TYPES {
                messages.push((rng.number(), random_message(&mut rng, t)));
            }
            for body in [Body::Raft(messages), random_body(&mut rng)] {
                let (seq, ack) = (rng.number(), rng.number());
                let pieces = encode(seq, ack, &body);
                let frame = decode_wire(&concat(&pieces))
                    .unwrap_or_else(|e| panic!("round {round}: {e}: {body:?}"));
                assert_eq!(frame, Frame { seq, ack, body }, "round {round}");
            }
        }
    }

    #[test]
    fn a_heartbeat_is_a_few_bytes() {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgHeartbeat);
        m.term = 5;
        m.commit = 1000;
        let mut batch = RaftBatch::new();
        batch.push(300, &m);
        let before = batch.frame_bytes();
        let frame = concat(&batch.into_frame(1, 0));
        assert!(frame.len() <= before);
        // prefix 4, kind/seq/ack 3, count 1; then group 2, type 1, flags 1, 9 numbers of a
        // byte each but commit's 2, context length 1, entry count 1.
        assert_eq!(frame.len(), 8 + (2 + 1 + 1 + 10 + 1 + 1));
    }

    #[test]
    fn local_message_types_are_refused() {
        let mut rng = Rng(3);
        for &t in &LOCAL_TYPES {
            let body = Body::Raft(vec![(1, random_message(&mut rng, t))]);
            let err = decode_wire(&wire(1, 0, &body)).unwrap_err();
            assert!(err.message().contains("local"), "{t:?}: {err}");
        }
        // And a type raft-proto does not have.
        let mut raw = BytesMut::new();
        raw.put_u8(Kind::Raft as u8);
        raw.put_slice(&[0, 0, 1, 0, 19]);
        raw.put_bytes(0, MESSAGE_BYTES_MIN);
        let err = decode(raw.freeze(), Some(LINK)).unwrap_err();
        assert!(err.message().contains("unknown message type 19"), "{err}");
    }

    #[test]
    fn raft_frames_need_a_link() {
        let body = Body::Raft(vec![]);
        let mut reader = FrameReader::new(FRAME_BYTES_MAX_DEFAULT);
        reader.extend(&wire(0, 0, &body));
        let frame = reader.next_frame().unwrap().unwrap();
        assert!(decode(frame.clone(), None).is_err());
        assert!(decode(frame, Some(LINK)).is_ok());
    }

    #[test]
    fn truncation_at_every_byte_is_an_error() {
        let mut rng = Rng(11);
        let mut bodies = sample_bodies();
        bodies.extend((0..30).map(|_| random_body(&mut rng)));
        for body in bodies {
            let wire = wire(300, 5, &body);
            let frame = wire.slice(PREFIX_BYTES..);
            for cut in 0..frame.len() {
                assert!(
                    decode(frame.slice(..cut), Some(LINK)).is_err(),
                    "{:?} cut at {cut} of {}",
                    body.kind(),
                    frame.len()
                );
            }
            // A frame that has not fully arrived is not cut out of the stream yet.
            for cut in 0..wire.len() {
                let mut reader = FrameReader::new(FRAME_BYTES_MAX_DEFAULT);
                reader.extend(&wire[..cut]);
                assert_eq!(reader.next_frame(), Ok(None));
            }
            // Trailing bytes are refused too.
            let mut longer = BytesMut::from(&frame[..]);
            longer.put_u8(0);
            assert!(decode(longer.freeze(), Some(LINK)).is_err());
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(99);
        let valid: Vec<Bytes> = sample_bodies()
            .iter()
            .map(|b| wire(1, 2, b).slice(PREFIX_BYTES..))
            .collect();
        for _ in 0..20_000 {
            // Mutations of valid frames reach deeper than noise.
            let mut bytes = valid[rng.below(valid.len() as u64) as usize].to_vec();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(bytes.len() as u64) as usize;
                bytes[at] = rng.next() as u8;
            }
            let _ = decode(Bytes::from(bytes), Some(LINK));
            let _ = decode(rng.bytes(64), Some(LINK));
        }
    }

    #[test]
    fn frame_lengths_are_limited() {
        let mut reader = FrameReader::new(100);
        reader.extend(&101u32.to_be_bytes());
        let err = reader.next_frame().unwrap_err();
        assert!(err.message().contains("exceeds the limit of 100"), "{err}");
        assert_eq!(frame_len(100u32.to_be_bytes(), 100), Ok(100));
        assert!(frame_len(u32::MAX.to_be_bytes(), FRAME_BYTES_MAX_DEFAULT).is_err());
        assert!(frame_len(2u32.to_be_bytes(), 100).is_err());
        // A frame at the limit passes: kind, seq, ack, id, length, 95 bytes.
        let body = Body::Reply(Reply {
            req_id: 1,
            payload: Bytes::from(vec![0u8; 95]),
        });
        let wire = wire(0, 0, &body);
        assert_eq!(wire.len(), PREFIX_BYTES + 100);
        let mut reader = FrameReader::new(100);
        reader.extend(&wire);
        assert!(reader.next_frame().unwrap().is_some());
        let mut reader = FrameReader::new(99);
        reader.extend(&wire);
        assert!(reader.next_frame().is_err());
    }

    #[test]
    fn counts_larger_than_the_frame_are_refused_before_allocating() {
        let mut raw = BytesMut::new();
        raw.put_u8(Kind::Raft as u8);
        raw.put_slice(&[0, 0]);
        put_uvarint(&mut raw, u64::MAX);
        let err = decode(raw.freeze(), Some(LINK)).unwrap_err();
        assert!(err.message().contains("cannot fit"), "{err}");
        let mut raw = BytesMut::new();
        raw.put_u8(Kind::Leadership as u8);
        raw.put_slice(&[0, 0, 1]);
        put_uvarint(&mut raw, 1 << 40);
        assert!(decode(raw.freeze(), Some(LINK)).is_err());
        // An 11-byte varint, and a 10-byte one past 64 bits.
        let mut raw = BytesMut::new();
        raw.put_u8(Kind::Reply as u8);
        raw.put_slice(&[0x80; 10]);
        raw.put_u8(0);
        assert!(decode(raw.freeze(), Some(LINK)).is_err());
        let mut raw = BytesMut::new();
        raw.put_u8(Kind::Reply as u8);
        raw.put_slice(&[0xff; 9]);
        raw.put_u8(2);
        let err = decode(raw.freeze(), Some(LINK)).unwrap_err();
        assert!(err.message().contains("overflows"), "{err}");
    }

    #[test]
    fn entry_data_is_neither_copied_to_encode_nor_to_decode() {
        let data: Vec<Bytes> = (0..3)
            .map(|i| Bytes::from(vec![i as u8; SPLICE_BYTES_MIN + i * 1000]))
            .collect();
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.index = 41;
        let entries: Vec<Entry> = data
            .iter()
            .enumerate()
            .map(|(i, d)| Entry {
                index: 42 + i as u64,
                term: 2,
                data: d.clone(),
                ..Default::default()
            })
            .collect();
        m.set_entries(entries.into());
        let pieces = encode(1, 0, &Body::Raft(vec![(3, m)]));
        for d in &data {
            assert!(
                pieces
                    .iter()
                    .any(|p| p.as_ptr() == d.as_ptr() && p.len() == d.len()),
                "entry data is its own piece"
            );
        }
        // Contiguous indexes are implied: no FLAG_ENTRY_INDEXES.
        let frame = concat(&pieces).slice(PREFIX_BYTES..);
        let Body::Raft(decoded) = decode(frame.clone(), Some(LINK)).unwrap().body else {
            panic!("a RAFT frame");
        };
        let range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
        for (e, d) in decoded[0].1.entries.iter().zip(&data) {
            assert_eq!(e.data, *d);
            assert!(
                range.contains(&(e.data.as_ptr() as usize)),
                "a slice of the frame"
            );
            assert!(range.contains(&(e.data.as_ptr() as usize + e.data.len() - 1)));
        }
    }

    #[test]
    fn implied_entry_indexes_save_bytes_and_explicit_ones_survive() {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgPropose);
        let e = Entry {
            data: Bytes::from_static(b"x"),
            ..Default::default()
        };
        m.set_entries(vec![e.clone(), e].into());
        let explicit = wire(0, 0, &Body::Raft(vec![(1, m.clone())]));
        let Body::Raft(decoded) = decode_wire(&explicit).unwrap().body else {
            panic!("a RAFT frame");
        };
        assert!(decoded[0].1.entries.iter().all(|e| e.index == 0));
        m.entries[0].index = 1;
        m.entries[1].index = 2;
        let implied = wire(0, 0, &Body::Raft(vec![(1, m)]));
        assert_eq!(implied.len() + 2, explicit.len());
        // The same for an index whose successors overflow: explicit, not wrapped.
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.index = u64::MAX;
        // One entry at index 0 (u64::MAX + 1 wrapped).
        m.set_entries(vec![Entry::default()].into());
        let body = Body::Raft(vec![(1, m.clone())]);
        let Body::Raft(decoded) = decode_wire(&wire(0, 0, &body)).unwrap().body else {
            panic!("a RAFT frame");
        };
        m.from = LINK.from;
        m.to = LINK.to;
        assert_eq!(decoded[0].1, m);
    }

    #[test]
    fn a_stream_split_across_reads_yields_its_frames() {
        let mut rng = Rng(5);
        let bodies: Vec<Body> = (0..40).map(|_| random_body(&mut rng)).collect();
        let mut stream = Vec::new();
        for (i, body) in bodies.iter().enumerate() {
            stream.extend_from_slice(&wire(i as u64, 0, body));
        }
        for round in 0..20 {
            let mut reader = FrameReader::new(FRAME_BYTES_MAX_DEFAULT);
            let mut got = Vec::new();
            let mut at = 0;
            while at < stream.len() {
                // Reads of 1 byte to a few frames.
                let step = 1 + rng.below(if round % 2 == 0 { 7 } else { 5000 }) as usize;
                let end = (at + step).min(stream.len());
                reader.buffer().extend_from_slice(&stream[at..end]);
                at = end;
                while let Some(frame) = reader.next_frame().unwrap() {
                    got.push(decode(frame, Some(LINK)).unwrap());
                }
            }
            assert!(reader.buffer().is_empty());
            let expected: Vec<Frame> = bodies
                .iter()
                .enumerate()
                .map(|(i, body)| Frame {
                    seq: i as u64,
                    ack: 0,
                    body: body.clone(),
                })
                .collect();
            assert_eq!(got, expected, "round {round}");
        }
    }

    #[test]
    fn hello_is_checked() {
        let hello = sample_bodies().remove(0);
        let frame = wire(0, 0, &hello).slice(PREFIX_BYTES..);
        let magic_at = 3;
        let mut bad = frame.to_vec();
        bad[magic_at] = b'X';
        let err = decode(Bytes::from(bad), None).unwrap_err();
        assert!(err.message().contains("magic"), "{err}");
        let mut bad = frame.to_vec();
        bad[magic_at + 5] = 2;
        let err = decode(Bytes::from(bad), None).unwrap_err();
        assert!(err.message().contains("protocol version 2"), "{err}");
        // A shard number past u16.
        let mut raw = BytesMut::new();
        raw.put_slice(&frame[..magic_at + 6]);
        put_bytes(&mut raw, b"");
        put_uvarint(&mut raw, 1);
        put_uvarint(&mut raw, 1 << 16);
        raw.put_slice(&[1, 1, 1]);
        let err = decode(raw.freeze(), None).unwrap_err();
        assert!(err.message().contains("exceeds 65535"), "{err}");
        // Invalid UTF-8 in the cluster id.
        let mut raw = BytesMut::new();
        raw.put_slice(&frame[..magic_at + 6]);
        put_bytes(&mut raw, &[0xff, 0xfe]);
        raw.put_slice(&[1, 1, 1, 1, 1]);
        let err = decode(raw.freeze(), None).unwrap_err();
        assert!(err.message().contains("UTF-8"), "{err}");
    }

    /// The seed corpus of the `rpc_frame` fuzz target: a stream of frames, as a connection
    /// carries them. `STRAND_WRITE_FUZZ_SEEDS=1` rewrites tests/fuzz/corpus/rpc_frame; without
    /// it, the committed seeds must still decode (a format change needs new seeds).
    #[test]
    fn fuzz_seed_corpus() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/corpus/rpc_frame");
        let mut rng = Rng(2024);
        let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
        for (i, body) in sample_bodies().iter().enumerate() {
            let name = format!("{i}-{:?}", body.kind()).to_lowercase();
            seeds.push((name, wire(i as u64, 0, body).to_vec()));
        }
        let mut stream = Vec::new();
        for i in 0..6 {
            let t = PEER_TYPES[rng.below(PEER_TYPES.len() as u64) as usize];
            let mut m = random_message(&mut rng, t);
            for e in m.entries.iter_mut() {
                e.data.truncate(64);
            }
            stream.extend_from_slice(&wire(i, i, &Body::Raft(vec![(i, m)])));
        }
        seeds.push(("stream-raft".into(), stream));
        if std::env::var_os("STRAND_WRITE_FUZZ_SEEDS").is_some() {
            std::fs::create_dir_all(&dir).unwrap();
            for (name, bytes) in &seeds {
                std::fs::write(dir.join(name), bytes).unwrap();
            }
        }
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).expect("tests/fuzz/corpus/rpc_frame") {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            let mut reader = FrameReader::new(FRAME_BYTES_MAX_DEFAULT);
            reader.extend(&bytes);
            while let Some(frame) = reader.next_frame().unwrap() {
                decode(frame, Some(LINK)).unwrap();
            }
            assert!(reader.buffer().is_empty());
            checked += 1;
        }
        assert!(checked >= seeds.len());
    }
}
