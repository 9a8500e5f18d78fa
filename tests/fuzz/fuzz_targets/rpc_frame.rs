//! The inter-node frame codec (`protocol::rpc`) on arbitrary bytes, read as what a peer's
//! connection delivers: frames cut out of the stream by `FrameReader` (under the default
//! length limit and a small one, so the limit is reached; the input arriving in two reads)
//! and each decoded; and the whole input decoded as one frame, with and without a link.
//! Any input must give frames or an error, never a panic. Pair assertion: a frame that
//! decodes re-encodes to a frame no longer than the input that decodes to the same value.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use strand::protocol::pieces::concat;
use strand::protocol::rpc::{self, Body, FrameReader, Link, PREFIX_BYTES};

const LINK: Link = Link { from: 2, to: 1 };

fn check(frame: Bytes, link: Option<Link>) {
    let Ok(decoded) = rpc::decode(frame.clone(), link) else {
        return;
    };
    if let Body::Raft(messages) = &decoded.body {
        let link = link.expect("a RAFT frame decodes only with a link");
        for (_, m) in messages {
            assert_eq!((m.from, m.to), (link.from, link.to));
            // raft-rs' local types: MsgHup, MsgBeat, MsgUnreachable, MsgSnapStatus,
            // MsgCheckQuorum.
            assert!(![0, 1, 10, 11, 12].contains(&(m.get_msg_type() as i32)));
        }
    }
    let wire = concat(&rpc::encode(decoded.seq, decoded.ack, &decoded.body));
    let len = u32::from_be_bytes(wire[..PREFIX_BYTES].try_into().unwrap()) as usize;
    assert_eq!(len, wire.len() - PREFIX_BYTES);
    // Re-encoding writes the shortest varints and implies contiguous entry indexes.
    assert!(
        len <= frame.len(),
        "re-encoded {len} bytes from {}",
        frame.len()
    );
    let again = rpc::decode(wire.slice(PREFIX_BYTES..), link).expect("a re-encoded frame decodes");
    assert_eq!(again, decoded);
}

fuzz_target!(|data: &[u8]| {
    for max in [rpc::FRAME_BYTES_MAX_DEFAULT, 64] {
        let mut reader = FrameReader::new(max);
        let (first, second) = data.split_at(data.len() / 2);
        'stream: for read in [first, second] {
            reader.extend(read);
            loop {
                match reader.next_frame() {
                    Ok(Some(frame)) => check(frame, Some(LINK)),
                    Ok(None) => break,
                    // The connection would be closed here.
                    Err(_) => break 'stream,
                }
            }
        }
    }
    check(Bytes::copy_from_slice(data), Some(LINK));
    check(Bytes::copy_from_slice(data), None);
});
