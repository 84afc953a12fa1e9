//! The spool's on-disk format: pure functions from records to bytes and back.
//!
//! A route's spool is a directory:
//!
//! ```text
//! 00000000000000000001.seg   segments, oldest first (20-digit increasing id)
//! 00000000000000000002.seg
//! cursor                     where replay resumes
//! lock                       held by the process that owns the spool
//! route                      the route's name, for people and `spool status`
//! ```
//!
//! A segment is an 8-byte header, `IGSPOOL1`, then frames, back to back:
//!
//! ```text
//! +----------------+----------------+------------------+
//! | length: u32 LE | crc: u32 LE    | payload (length) |
//! +----------------+----------------+------------------+
//! ```
//!
//! `crc` is the CRC-32 (ISO-HDLC, as zlib) of the payload. A frame's length is 1 to
//! [`MAX_PAYLOAD`]. The payload is one record:
//!
//! ```text
//! Kinesis:  0x01 | pk_len: u16 LE | partition key | ehk_len: u16 LE | explicit hash key | data
//! Firehose: 0x02 | data
//! ```
//!
//! (`ehk_len` 0 means no explicit hash key; the data runs to the payload's end.)
//!
//! The cursor file is `segment: u64 LE | offset: u64 LE | crc: u32 LE` (the CRC of the first
//! 16 bytes): the first frame not yet delivered. It is replaced by rename, so it is either
//! the old or the new one; a missing or damaged cursor means "from the oldest segment",
//! which can deliver a record twice but never skips one.
//!
//! A crash can leave a torn frame at the end of the newest segment: its length runs past the
//! end of the file, or its CRC does not match. Recovery keeps every complete frame before it
//! and cuts the rest (see [`scan`]). Reading stops at the first frame that does not check
//! out: searching on for a later frame could take bytes of a client's record for a frame, so
//! a damaged frame in the middle of an older segment (a bad disk block, not a crash) loses
//! the rest of that segment, and recovery says how many bytes. In the newest segment,
//! recovery tells damage from a torn tail: intact frames that chain exactly to the end of
//! the file after the bad one are kept (see `log::Log::open`).

/// The first bytes of every segment file.
pub const MAGIC: &[u8; 8] = b"IGSPOOL1";
/// Bytes before a segment's first frame.
pub const HEADER: u64 = MAGIC.len() as u64;
/// Bytes of a frame before its payload.
pub const FRAME_OVERHEAD: u64 = 8;
/// The largest payload a frame may carry (a record is at most 1 MiB plus its keys).
pub const MAX_PAYLOAD: u32 = 8 << 20;

/// The first byte of a payload: which kind of record it is (see [`Record`]).
pub const KINESIS: u8 = 1;
pub const FIREHOSE: u8 = 2;

/// Appends one frame holding `payload` to `out`.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    debug_assert!(!payload.is_empty() && payload.len() <= MAX_PAYLOAD as usize);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Bytes a frame with this payload takes on disk.
pub fn frame_len(payload_len: usize) -> u64 {
    FRAME_OVERHEAD + payload_len as u64
}

/// The payload of a complete, intact frame at the start of `buf`, if there is one.
pub fn frame_at(buf: &[u8]) -> Option<&[u8]> {
    let len = u32::from_le_bytes(buf.get(0..4)?.try_into().ok()?);
    let crc = u32::from_le_bytes(buf.get(4..8)?.try_into().ok()?);
    if len == 0 || len > MAX_PAYLOAD {
        return None;
    }
    let payload = buf.get(8..8 + len as usize)?;
    (crc32fast::hash(payload) == crc).then_some(payload)
}

/// What a scan of a segment's frames found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scanned {
    /// Offset (in the scanned buffer) and length of every intact frame's payload, in order.
    pub frames: Vec<(usize, usize)>,
    /// Where the intact frames end.
    pub valid_end: usize,
    /// Bytes after them: a torn tail, or the rest of a damaged segment.
    pub rest: usize,
}

/// Finds the intact frames at the start of `buf`, up to the first one that is not.
pub fn scan(buf: &[u8]) -> Scanned {
    let mut out = Scanned::default();
    let mut pos = 0;
    while let Some(payload) = frame_at(&buf[pos..]) {
        out.frames
            .push((pos + FRAME_OVERHEAD as usize, payload.len()));
        pos += FRAME_OVERHEAD as usize + payload.len();
    }
    out.valid_end = pos;
    out.rest = buf.len() - pos;
    out
}

/// A record that can be spooled: written as a frame payload and read back. The integration
/// whose records they are implements it (Kinesis entries in `integrations::kinesis`), in
/// the layout above, with the kind byte first.
pub trait Record: Clone + Send + Sync + 'static {
    fn encode(&self, out: &mut Vec<u8>);
    /// `None` for a payload of another kind or a damaged one.
    fn decode(payload: &[u8]) -> Option<Self>;
    /// The payload, as a new buffer.
    fn to_payload(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// Bytes as they are (a Firehose record: its data).
impl Record for Vec<u8> {
    fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(1 + self.len());
        out.push(FIREHOSE);
        out.extend_from_slice(self);
    }

    fn decode(payload: &[u8]) -> Option<Vec<u8>> {
        match payload.split_first()? {
            (&FIREHOSE, data) => Some(data.to_vec()),
            _ => None,
        }
    }
}

/// Appends a `u16 LE` length and the text (at most `u16::MAX` bytes: the caller bounds it).
pub fn put_str(s: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A `u16 LE` length, that many bytes of UTF-8, and the rest.
pub fn take_str(b: &[u8]) -> Option<(&str, &[u8])> {
    let len = u16::from_le_bytes(b.get(0..2)?.try_into().ok()?) as usize;
    let s = std::str::from_utf8(b.get(2..2 + len)?).ok()?;
    Some((s, &b[2 + len..]))
}

/// A place in the spool: a segment and a byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

/// The cursor file's bytes.
pub fn encode_cursor(p: Position) -> [u8; 20] {
    let mut out = [0u8; 20];
    out[0..8].copy_from_slice(&p.segment.to_le_bytes());
    out[8..16].copy_from_slice(&p.offset.to_le_bytes());
    let crc = crc32fast::hash(&out[0..16]);
    out[16..20].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The cursor in a cursor file's bytes, if they are intact.
pub fn decode_cursor(b: &[u8]) -> Option<Position> {
    if b.len() != 20 {
        return None;
    }
    let crc = u32::from_le_bytes(b[16..20].try_into().ok()?);
    if crc32fast::hash(&b[0..16]) != crc {
        return None;
    }
    Some(Position {
        segment: u64::from_le_bytes(b[0..8].try_into().ok()?),
        offset: u64::from_le_bytes(b[8..16].try_into().ok()?),
    })
}

/// A segment's file name.
pub fn segment_name(id: u64) -> String {
    format!("{id:020}.seg")
}

/// The id in a segment's file name.
pub fn segment_id(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn frames(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            encode_frame(p, &mut out);
        }
        out
    }

    #[test]
    fn records_round_trip() {
        let f = b"line\n".to_vec();
        assert_eq!(Vec::<u8>::decode(&f.to_payload()), Some(f.clone()));
        assert_eq!(Vec::<u8>::decode(&[KINESIS, 1, 0, b'k', 0, 0]), None);
        assert_eq!(Vec::<u8>::decode(&[]), None);
    }

    #[test]
    fn a_torn_tail_is_cut_after_the_last_complete_frame() {
        let whole = frames(&[b"one", b"two", b"three"]);
        for cut in 0..=whole.len() {
            let s = scan(&whole[..cut]);
            let complete = [11, 22, 35].iter().filter(|&&end| end <= cut).count();
            assert_eq!(s.frames.len(), complete, "cut at {cut}");
            assert_eq!(s.valid_end + s.rest, cut);
        }
        // Zeros (a file extended but not written) are not frames.
        let mut zeros = frames(&[b"one"]);
        zeros.extend([0u8; 64]);
        let s = scan(&zeros);
        assert_eq!((s.frames.len(), s.valid_end), (1, 11));
    }

    #[test]
    fn reading_stops_at_a_damaged_frame_even_if_a_frame_hides_in_a_record() {
        // A client's record may itself hold the bytes of a valid frame; searching past
        // damage could take it for a record of its own.
        let inner = frames(&[b"forged"]);
        let mut buf = frames(&[b"first", &inner, b"third"]);
        buf[13 + 8 + 2] ^= 0xff; // a byte of the second frame
        let s = scan(&buf);
        let found: Vec<&[u8]> = s.frames.iter().map(|&(o, l)| &buf[o..o + l]).collect();
        assert_eq!(found, vec![&b"first"[..]]);
        assert_eq!((s.valid_end, s.rest), (13, buf.len() - 13));
    }

    #[test]
    fn cursors_and_names_round_trip() {
        let p = Position {
            segment: 7,
            offset: 12345,
        };
        let mut b = encode_cursor(p);
        assert_eq!(decode_cursor(&b), Some(p));
        b[3] ^= 1;
        assert_eq!(decode_cursor(&b), None);
        assert_eq!(decode_cursor(&b[..19]), None);
        assert_eq!(segment_id(&segment_name(42)), Some(42));
        assert_eq!(segment_id("42.seg"), None);
        assert_eq!(segment_id("0000000000000000004x.seg"), None);
    }

    proptest! {
        /// Any prefix of a run of frames yields exactly the frames it holds whole.
        #[test]
        fn prefixes_keep_every_whole_frame(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..64), 0..20),
            cut in any::<prop::sample::Index>(),
        ) {
            let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
            let buf = frames(&refs);
            let cut = if buf.is_empty() { 0 } else { cut.index(buf.len() + 1) };
            let s = scan(&buf[..cut]);
            let mut end = 0;
            let whole = payloads.iter().take_while(|p| { end += 8 + p.len(); end <= cut }).count();
            prop_assert_eq!(s.frames.len(), whole);
            for (i, &(o, l)) in s.frames.iter().enumerate() {
                prop_assert_eq!(&buf[o..o + l], payloads[i].as_slice());
            }
        }
    }
}
