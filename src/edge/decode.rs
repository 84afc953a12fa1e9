//! Compressed request bodies: `Content-Encoding` `gzip` (and `x-gzip`), `deflate` (zlib, or
//! the raw deflate some clients send), `br` and `zstd`, decoded as a stream into at most
//! `limit` bytes, so a body that inflates past the route's `max_body_bytes` (a decompression
//! bomb) stops there, in bounded memory and time.

use std::io::Read;

use axum::body::Bytes;

/// The encodings decoded, as `415` answers name them.
pub const ENCODINGS: [&str; 4] = ["gzip", "deflate", "br", "zstd"];

/// Codings one body may stack (`Content-Encoding: gzip, br`), at most.
const MAX_CODINGS: usize = 3;

/// zstd windows past 8 MiB are refused: a frame would make the decoder allocate its window
/// whatever the body's size (the format allows 3.75 TiB).
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// Why a body could not be decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// A coding not in [`ENCODINGS`].
    Unsupported(String),
    /// The decoded body is larger than the limit.
    TooLarge,
    /// The stream is corrupt or truncated; the text says how.
    Corrupt(String),
    /// The memory all bodies in flight may hold is taken: the decoded bytes did not fit.
    Overloaded,
}

/// Takes room for `n` more decoded bytes from the bodies' shared budget; `false` when there
/// is none.
pub type Reserve<'a> = dyn FnMut(usize) -> bool + 'a;

/// How much is decoded between two reservations.
const CHUNK: usize = 64 << 10;

/// A coding named by `Content-Encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    Deflate,
    Brotli,
    Zstd,
}

/// The codings a `Content-Encoding` value lists, in the order they were applied (`identity`
/// skipped); none for no header.
pub fn codings(value: Option<&http::HeaderValue>) -> Result<Vec<Coding>, DecodeError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let text = value
        .to_str()
        .map_err(|_| DecodeError::Unsupported("(not text)".into()))?;
    let mut out = Vec::new();
    for name in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let coding = match name.to_ascii_lowercase().as_str() {
            "identity" => continue,
            "gzip" | "x-gzip" => Coding::Gzip,
            "deflate" => Coding::Deflate,
            "br" => Coding::Brotli,
            "zstd" => Coding::Zstd,
            _ => {
                let shown: String = name.chars().take(64).collect();
                return Err(DecodeError::Unsupported(shown));
            }
        };
        out.push(coding);
    }
    if out.len() > MAX_CODINGS {
        return Err(DecodeError::Unsupported(format!(
            "{} codings stacked (at most {MAX_CODINGS})",
            out.len()
        )));
    }
    Ok(out)
}

/// Decodes `body` (coded with `codings`, in that order) into at most `limit` bytes, taking
/// room for what it decodes from `reserve` as it goes (so many bodies inflating at once
/// cannot hold more memory than the bodies' budget).
pub fn decode(
    body: Bytes,
    codings: &[Coding],
    limit: usize,
    reserve: &mut Reserve<'_>,
) -> Result<Bytes, DecodeError> {
    let mut body = body;
    for coding in codings.iter().rev() {
        body = decode_one(&body, *coding, limit, reserve)?;
    }
    Ok(body)
}

fn decode_one(
    input: &[u8],
    coding: Coding,
    limit: usize,
    reserve: &mut Reserve<'_>,
) -> Result<Bytes, DecodeError> {
    let corrupt = |what: &str, e: std::io::Error| DecodeError::Corrupt(format!("{what}: {e}"));
    match coding {
        Coding::Gzip => read_bounded(
            &mut flate2::read::MultiGzDecoder::new(input),
            limit,
            reserve,
        )
        .map_err(|e| e.or_corrupt(|e| corrupt("gzip", e))),
        Coding::Deflate => {
            // RFC 9110's deflate is zlib; raw deflate is what some clients send for it. A
            // zlib stream starts with a header whose 16-bit value is a multiple of 31.
            let zlib = input.len() >= 2
                && input[0] & 0x0f == 8
                && (u16::from(input[0]) << 8 | u16::from(input[1])) % 31 == 0;
            if zlib {
                read_bounded(&mut flate2::read::ZlibDecoder::new(input), limit, reserve)
            } else {
                read_bounded(
                    &mut flate2::read::DeflateDecoder::new(input),
                    limit,
                    reserve,
                )
            }
            .map_err(|e| e.or_corrupt(|e| corrupt("deflate", e)))
        }
        Coding::Brotli => read_bounded(&mut brotli::Decompressor::new(input, 8192), limit, reserve)
            .map_err(|e| e.or_corrupt(|e| corrupt("br", e))),
        Coding::Zstd => {
            let mut decoder =
                zstd::stream::read::Decoder::with_buffer(input).map_err(|e| corrupt("zstd", e))?;
            decoder
                .window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(|e| corrupt("zstd", e))?;
            read_bounded(&mut decoder, limit, reserve)
                .map_err(|e| e.or_corrupt(|e| corrupt("zstd", e)))
        }
    }
}

enum ReadError {
    TooLarge,
    Overloaded,
    Io(std::io::Error),
}

impl ReadError {
    fn or_corrupt(self, f: impl FnOnce(std::io::Error) -> DecodeError) -> DecodeError {
        match self {
            ReadError::TooLarge => DecodeError::TooLarge,
            ReadError::Overloaded => DecodeError::Overloaded,
            ReadError::Io(e) => f(e),
        }
    }
}

/// Reads all of `r`, failing as soon as it yields more than `limit` bytes, and reserving
/// room for each chunk before keeping it.
fn read_bounded(
    r: &mut dyn Read,
    limit: usize,
    reserve: &mut Reserve<'_>,
) -> Result<Bytes, ReadError> {
    let mut out: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let n = match r.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ReadError::Io(e)),
        };
        if out.len() + n > limit {
            return Err(ReadError::TooLarge);
        }
        if !reserve(n) {
            return Err(ReadError::Overloaded);
        }
        out.extend_from_slice(&chunk[..n]);
    }
    Ok(Bytes::from(out))
}

/// An `application/x-ndjson` body (one JSON document per line; blank lines and `\r\n` line
/// ends allowed) as the JSON array of its lines, which is what templates and models see:
/// our extension, since API Gateway passes such bodies through as text.
pub fn ndjson_to_array(raw: &[u8]) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(raw).map_err(|_| "the NDJSON body is not UTF-8".to_string())?;
    let mut out = Vec::with_capacity(raw.len() + 2);
    out.push(b'[');
    let mut first = true;
    for (n, line) in text.split('\n').enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(line) {
            return Err(format!(
                "line {} of the NDJSON body is not JSON: {e}",
                n + 1
            ));
        }
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(line.as_bytes());
    }
    out.push(b']');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const TEXT: &[u8] = br#"{"events": [{"type": "click"}, {"type": "view"}]}"#;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn value(s: &'static str) -> http::HeaderValue {
        http::HeaderValue::from_static(s)
    }

    #[test]
    fn every_encoding_round_trips() {
        let zlib = {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(TEXT).unwrap();
            e.finish().unwrap()
        };
        let raw = {
            let mut e =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(TEXT).unwrap();
            e.finish().unwrap()
        };
        let zstd = zstd::stream::encode_all(TEXT, 3).unwrap();
        let mut br = Vec::new();
        brotli::BrotliCompress(&mut &TEXT[..], &mut br, &Default::default()).unwrap();
        for (coding, data) in [
            (Coding::Brotli, br),
            (Coding::Gzip, gzip(TEXT)),
            (Coding::Deflate, zlib),
            (Coding::Deflate, raw),
            (Coding::Zstd, zstd),
        ] {
            let out = decode(Bytes::from(data), &[coding], 1024, &mut |_| true).unwrap();
            assert_eq!(&out[..], TEXT, "{coding:?}");
        }
        // Stacked: gzip first, then gzip again.
        let twice = gzip(&gzip(TEXT));
        let codings = codings(Some(&value("gzip, gzip"))).unwrap();
        assert_eq!(
            &decode(Bytes::from(twice), &codings, 1024, &mut |_| true).unwrap()[..],
            TEXT
        );
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 64 << 20];
        let bomb = gzip(&zeros);
        assert!(bomb.len() < 128 << 10, "{} bytes", bomb.len());
        let started = std::time::Instant::now();
        assert_eq!(
            decode(Bytes::from(bomb), &[Coding::Gzip], 1 << 20, &mut |_| true),
            Err(DecodeError::TooLarge)
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn decoded_bytes_are_reserved_and_a_full_budget_refuses() {
        let data = gzip(&vec![b'x'; 300 << 10]);
        let mut taken = 0;
        let out = decode(
            Bytes::from(data.clone()),
            &[Coding::Gzip],
            1 << 20,
            &mut |n| {
                taken += n;
                true
            },
        )
        .unwrap();
        assert_eq!(taken, out.len());
        let mut room = 100 << 10;
        let refused = decode(Bytes::from(data), &[Coding::Gzip], 1 << 20, &mut |n| {
            let ok = n <= room;
            room = room.saturating_sub(n);
            ok
        });
        assert_eq!(refused, Err(DecodeError::Overloaded));
    }

    #[test]
    fn truncated_and_corrupt_streams_are_refused() {
        let g = gzip(TEXT);
        let truncated = Bytes::copy_from_slice(&g[..g.len() - 6]);
        assert!(matches!(
            decode(truncated, &[Coding::Gzip], 1024, &mut |_| true),
            Err(DecodeError::Corrupt(_))
        ));
        for coding in [Coding::Gzip, Coding::Deflate, Coding::Brotli, Coding::Zstd] {
            let garbage = Bytes::from_static(b"this is not compressed at all, not at all");
            assert!(
                matches!(
                    decode(garbage, &[coding], 1024, &mut |_| true),
                    Err(DecodeError::Corrupt(_))
                ),
                "{coding:?}"
            );
        }
    }

    #[test]
    fn ndjson_lines_become_one_array() {
        let body = b"{\"a\": 1}\r\n\n  [2, 3]\n\"four\"\n";
        assert_eq!(
            ndjson_to_array(body).unwrap(),
            br#"[{"a": 1},[2, 3],"four"]"#.to_vec()
        );
        assert_eq!(ndjson_to_array(b"").unwrap(), b"[]".to_vec());
        let err = ndjson_to_array(b"{\"a\": 1}\n{\"b\": \n").unwrap_err();
        assert!(
            err.starts_with("line 2 of the NDJSON body is not JSON"),
            "{err}"
        );
        // Two documents on one line are not one line's document.
        assert!(ndjson_to_array(b"{} {}").is_err());
        assert!(ndjson_to_array(&[0xff, b'\n']).is_err());
    }

    #[test]
    fn names_are_read_as_the_header_gives_them() {
        assert_eq!(codings(None).unwrap(), vec![]);
        assert_eq!(codings(Some(&value("GZIP"))).unwrap(), vec![Coding::Gzip]);
        assert_eq!(
            codings(Some(&value("identity, x-gzip"))).unwrap(),
            vec![Coding::Gzip]
        );
        assert_eq!(
            codings(Some(&value("compress"))),
            Err(DecodeError::Unsupported("compress".into()))
        );
        assert!(codings(Some(&value("gzip, gzip, gzip, gzip"))).is_err());
    }
}
