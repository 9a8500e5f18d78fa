//! Responses as a list of pieces written to the socket in order, so that record bytes go
//! from where they lie — the recent-batch cache, a request frame, a disk read buffer — to
//! the socket without being copied into one response buffer first.

use std::ops::Deref;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};

/// Record data smaller than this is copied into the encoded headers around it instead of
/// being its own piece: a vector entry (and, past the kernel's limit, a system call) costs
/// more than copying a few hundred bytes.
pub const SPLICE_BYTES_MIN: usize = 256;

/// A run of bytes of a response: encoded by us, or shared with whatever holds the records.
#[derive(Clone)]
pub enum Piece {
    Bytes(Bytes),
    /// Bytes owned by something that is not a `Bytes` (a direct-I/O read buffer), shared.
    Shared(Rc<dyn AsRef<[u8]>>),
}

impl Piece {
    pub fn shared(owner: Rc<dyn AsRef<[u8]>>) -> Self {
        Piece::Shared(owner)
    }
}

impl From<Bytes> for Piece {
    fn from(bytes: Bytes) -> Self {
        Piece::Bytes(bytes)
    }
}

impl Deref for Piece {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Piece::Bytes(bytes) => bytes,
            Piece::Shared(owner) => (**owner).as_ref(),
        }
    }
}

impl std::fmt::Debug for Piece {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Piece({} bytes)", self.len())
    }
}

/// Total length of `pieces`.
pub fn total_len(pieces: &[Piece]) -> usize {
    pieces.iter().map(|p| p.len()).sum()
}

/// `pieces` copied into one buffer (tests, and the rare caller that needs contiguous bytes).
pub fn concat(pieces: &[Piece]) -> Bytes {
    if let [Piece::Bytes(only)] = pieces {
        return only.clone();
    }
    let mut out = BytesMut::with_capacity(total_len(pieces));
    for piece in pieces {
        out.extend_from_slice(piece);
    }
    out.freeze()
}

/// Builds a response: encoded bytes go to a buffer, record pieces are spliced in between.
#[derive(Default)]
pub struct ChainWriter {
    pieces: Vec<Piece>,
    buf: BytesMut,
}

impl ChainWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Where encoded bytes go.
    pub fn buf(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Appends record pieces after what is encoded so far: large ones by reference, small
    /// ones (under [`SPLICE_BYTES_MIN`]) copied into the encoded bytes.
    pub fn splice(&mut self, pieces: &[Piece]) {
        for piece in pieces {
            if piece.len() < SPLICE_BYTES_MIN {
                self.buf.extend_from_slice(piece);
            } else {
                self.flush();
                self.pieces.push(piece.clone());
            }
        }
    }

    fn flush(&mut self) {
        if !self.buf.is_empty() {
            self.pieces.push(Piece::Bytes(self.buf.split().freeze()));
        }
    }

    /// The pieces, without a size prefix (a part of a frame that is still to be framed).
    pub fn finish(mut self) -> Vec<Piece> {
        self.flush();
        self.pieces
    }

    /// The pieces, behind a 4-byte size prefix (what a Kafka frame starts with).
    pub fn finish_frame(mut self) -> Vec<Piece> {
        self.flush();
        let size = total_len(&self.pieces);
        let mut pieces = self.pieces;
        // The prefix joins the first encoded piece (headers only: a small copy).
        let mut first = BytesMut::with_capacity(4 + pieces.first().map_or(0, |p| p.len()));
        first.extend_from_slice(&(size as i32).to_be_bytes());
        match pieces.first() {
            Some(Piece::Bytes(head)) if head.len() < 64 * 1024 => {
                first.extend_from_slice(head);
                pieces[0] = Piece::Bytes(first.freeze());
            }
            _ => pieces.insert(0, Piece::Bytes(first.freeze())),
        }
        pieces
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_pieces_are_copied_large_ones_shared() {
        let large = Bytes::from(vec![7u8; SPLICE_BYTES_MIN]);
        let mut w = ChainWriter::new();
        w.buf().extend_from_slice(b"head");
        w.splice(&[
            Piece::from(Bytes::from_static(b"tiny")),
            Piece::from(large.clone()),
        ]);
        w.buf().extend_from_slice(b"tail");
        let pieces = w.finish_frame();
        assert_eq!(pieces.len(), 3);
        // The large piece is the same memory, not a copy.
        assert_eq!(pieces[1].as_ptr(), large.as_ptr());
        let all = concat(&pieces);
        let size = 4 + 4 + large.len() + 4;
        assert_eq!(&all[..4], &(size as i32).to_be_bytes());
        assert_eq!(&all[4..12], b"headtiny");
        assert_eq!(&all[all.len() - 4..], b"tail");
    }

    #[test]
    fn a_frame_may_start_with_a_shared_piece() {
        let large = Bytes::from(vec![1u8; 1000]);
        let mut w = ChainWriter::new();
        w.splice(&[Piece::shared(Rc::new(large.to_vec()))]);
        let pieces = w.finish_frame();
        assert_eq!(pieces.len(), 2);
        assert_eq!(&pieces[0][..], &1000i32.to_be_bytes());
    }
}
