//! A streaming scanner for chunked message bodies (RFC 9112 §7.1).
//!
//! The relay passes chunked bodies through unchanged, extensions and
//! trailers included; this scanner only walks the bytes as they go by to find
//! where the message ends (so the next pipelined message is never forwarded
//! with it) and to refuse malformed framing. It keeps a few bytes of state and
//! never buffers: `scan` may be fed any split of the stream.
//!
//! For an HTTP/1.0 client, which cannot decode chunked, [`ChunkScanner::dechunk`]
//! walks the same way and keeps only the chunk data, in place.
//!
//! Strict on purpose: line ends must be CRLF, sizes are hex digits only (at
//! most 15 significant ones, after any number of leading zeros), extensions
//! are `;name[=value]` with token or quoted values and optional whitespace,
//! and trailer lines are field lines held to the rules httparse applies to
//! a head: a token name right before the colon, no obs-fold (a line
//! starting with SP or HTAB), and a value of HTAB, visible ASCII, SP or
//! obs-text only (no bare CR, LF, NUL or other control byte). Anything else is an error: a request gets 400, a response
//! 502 if none of it went out yet, else the connection is closed.

/// Where the scanner stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Expecting the first hex digit of a chunk size.
    SizeStart,
    /// Reading hex digits (`size_digits` counts the significant ones).
    Size,
    /// Whitespace after the size or after an extension value.
    SizeWs,
    /// After `;`: optional whitespace, then an extension name.
    ExtPreName,
    ExtName,
    /// Whitespace after an extension name.
    ExtPostName,
    /// After `=`: optional whitespace, then a token or a quoted string.
    ExtPreValue,
    ExtValue,
    ExtQuoted,
    ExtQuotedEscape,
    /// Saw CR at the end of the size line.
    SizeLf,
    /// Inside chunk data; this many bytes left.
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final CRLF).
    TrailerStart,
    /// Inside a trailer field name.
    TrailerName,
    /// Inside a trailer field value (after the colon).
    Trailer,
    TrailerLf,
    /// Saw CR of the final empty line.
    FinalLf,
    /// The message ended.
    Done,
}

/// Malformed chunked framing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkError(pub &'static str);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkScanner {
    state: State,
    size: u64,
    size_digits: u8,
}

impl Default for ChunkScanner {
    fn default() -> Self {
        ChunkScanner {
            state: State::SizeStart,
            size: 0,
            size_digits: 0,
        }
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// A byte httparse allows in a field value.
fn is_field_vchar(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

fn is_qdtext(b: u8) -> bool {
    b == b'\t' || (b >= b' ' && b != 0x7f)
}

impl ChunkScanner {
    /// True once the final CRLF after the last chunk (and trailers) was seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Walk `bytes`; returns how many belong to this message (all of them
    /// unless the message ends inside `bytes`).
    pub fn scan(&mut self, bytes: &[u8]) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < bytes.len() {
            match self.state {
                State::Done => return Ok(i),
                State::Data(left) => {
                    let take = left.min((bytes.len() - i) as u64);
                    i += take as usize;
                    self.state = if take == left {
                        State::DataCr
                    } else {
                        State::Data(left - take)
                    };
                }
                _ => {
                    self.step(bytes[i])?;
                    i += 1;
                }
            }
        }
        Ok(i)
    }

    /// Walk `bytes` as [`scan`](Self::scan) does, and decode them in place:
    /// the chunk data is moved to the front of `bytes` and the framing
    /// (size lines, extensions, CRLFs, trailers) dropped. Returns how many
    /// bytes belong to this message and how many data bytes now start
    /// `bytes`. Only for a recipient that cannot decode chunked (HTTP/1.0).
    pub fn dechunk(&mut self, bytes: &mut [u8]) -> Result<(usize, usize), ChunkError> {
        let (mut i, mut out) = (0, 0);
        while i < bytes.len() {
            match self.state {
                State::Done => break,
                State::Data(left) => {
                    let take = left.min((bytes.len() - i) as u64) as usize;
                    bytes.copy_within(i..i + take, out);
                    out += take;
                    i += take;
                    self.state = if take as u64 == left {
                        State::DataCr
                    } else {
                        State::Data(left - take as u64)
                    };
                }
                _ => {
                    self.step(bytes[i])?;
                    i += 1;
                }
            }
        }
        Ok((i, out))
    }

    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        use State::*;
        let bad = |why| Err(ChunkError(why));
        self.state = match self.state {
            SizeStart | Size if b.is_ascii_hexdigit() => {
                let digit = (b as char).to_digit(16).unwrap_or(0) as u64;
                // Leading zeros are valid (1*HEXDIG) and add nothing: only
                // significant digits count toward the overflow bound.
                if self.size_digits > 0 || digit != 0 {
                    self.size_digits += 1;
                }
                if self.size_digits > 15 {
                    return bad("chunk size too large");
                }
                self.size = (self.size << 4) | digit;
                Size
            }
            SizeStart => return bad("chunk size is not hex"),
            Size | SizeWs | ExtName | ExtPostName | ExtValue if b == b'\r' => SizeLf,
            Size | SizeWs | ExtValue if is_ws(b) => SizeWs,
            Size | SizeWs | ExtName | ExtPostName | ExtValue if b == b';' => ExtPreName,
            ExtPreName if is_ws(b) => ExtPreName,
            ExtPreName | ExtName if is_tchar(b) => ExtName,
            ExtName | ExtPostName if is_ws(b) => ExtPostName,
            ExtName | ExtPostName if b == b'=' => ExtPreValue,
            ExtPreValue if is_ws(b) => ExtPreValue,
            ExtPreValue | ExtValue if is_tchar(b) => ExtValue,
            ExtPreValue if b == b'"' => ExtQuoted,
            Size | SizeWs | ExtPreName | ExtName | ExtPostName | ExtPreValue | ExtValue => {
                return bad("invalid chunk size line")
            }
            ExtQuoted if b == b'"' => SizeWs,
            ExtQuoted if b == b'\\' => ExtQuotedEscape,
            ExtQuoted | ExtQuotedEscape if is_qdtext(b) => ExtQuoted,
            ExtQuoted | ExtQuotedEscape => return bad("invalid byte in a quoted chunk extension"),
            SizeLf if b == b'\n' => {
                let size = std::mem::take(&mut self.size);
                self.size_digits = 0;
                if size == 0 {
                    TrailerStart
                } else {
                    Data(size)
                }
            }
            SizeLf => return bad("bare CR in a chunk size line"),
            Data(_) => unreachable!("data is skipped in bulk"),
            DataCr if b == b'\r' => DataLf,
            DataCr => return bad("chunk data longer than its size"),
            DataLf if b == b'\n' => SizeStart,
            DataLf => return bad("bare CR after chunk data"),
            TrailerStart if b == b'\r' => FinalLf,
            // A continuation line (obs-fold) is refused, as in a head.
            TrailerStart if is_ws(b) => return bad("obs-fold in a trailer"),
            TrailerStart | TrailerName if is_tchar(b) => TrailerName,
            TrailerName if b == b':' => Trailer,
            TrailerStart | TrailerName => return bad("invalid trailer field name"),
            Trailer if b == b'\r' => TrailerLf,
            Trailer if is_field_vchar(b) => Trailer,
            Trailer => return bad("invalid byte in a trailer"),
            TrailerLf if b == b'\n' => TrailerStart,
            FinalLf if b == b'\n' => Done,
            TrailerLf | FinalLf => return bad("bare CR in a trailer"),
            Done => Done,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(input: &[u8]) -> Result<(usize, bool), ChunkError> {
        let mut s = ChunkScanner::default();
        let n = s.scan(input)?;
        Ok((n, s.is_done()))
    }

    #[test]
    fn finds_the_end_of_a_message_with_extensions_and_trailers() {
        let msg = b"5;name=value;q=\"a \\\"b\"\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n";
        let mut with_next = msg.to_vec();
        with_next.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(scan_all(&with_next), Ok((msg.len(), true)));
    }

    #[test]
    fn any_split_of_the_stream_gives_the_same_answer() {
        let msg = b"a\r\n0123456789\r\n3 ; ext\r\nabc\r\n0\r\n\r\n";
        for cut in 0..msg.len() {
            let mut s = ChunkScanner::default();
            let a = s.scan(&msg[..cut]).unwrap();
            let b = s.scan(&msg[cut..]).unwrap();
            assert_eq!(a + b, msg.len(), "cut at {cut}");
            assert!(s.is_done());
        }
    }

    #[test]
    fn rejects_malformed_framing() {
        for bad in [
            &b"x\r\n"[..],
            b"5\nhello\r\n",
            b"5\r\nhelloX\r\n",
            b"5 5\r\n",
            b"5;=v\r\n",
            b"1234567890abcdef0\r\n",
            b"0\r\nBad\rTrailer\r\n\r\n",
            b"0\r\nX: a\rb\r\n\r\n",
            b"0\r\nX: a\0b\r\n\r\n",
            b"0\r\nX: a\nb\r\n\r\n",
            b"0\r\nX: a\x7fb\r\n\r\n",
            b"0\r\nX: a\r\n b\r\n\r\n",
            b"0\r\nX: a\r\n\tb\r\n\r\n",
            b"0\r\n b\r\n\r\n",
            b"0\r\nX : a\r\n\r\n",
            b"0\r\nno colon\r\n\r\n",
            b"0\r\n: a\r\n\r\n",
            b"0\r\n\rx",
            b"5;a=\"\x01\"\r\n",
        ] {
            assert!(scan_all(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn leading_zeros_in_a_chunk_size_do_not_count_toward_its_bound() {
        let msg =
            b"0000000000000000001a\r\nabcdefghijklmnopqrstuvwxyz\r\n00000000000000000000\r\n\r\n";
        assert_eq!(scan_all(msg), Ok((msg.len(), true)));
        let mut max = b"00000fffffffffffffff\r\n".to_vec();
        let mut s = ChunkScanner::default();
        assert_eq!(s.scan(&max), Ok(max.len()), "15 significant digits fit");
        assert_eq!(s.state, State::Data(0xfff_ffff_ffff_ffff));
        max.insert(5, b'1');
        assert!(scan_all(&max).is_err(), "16 significant digits overflow");
    }

    #[test]
    fn good_trailers_pass() {
        let msg = b"0\r\nX-A: a \t b\r\nY:\r\nZ:\xc3\xa9\r\n\r\n";
        assert_eq!(scan_all(msg), Ok((msg.len(), true)));
    }

    #[test]
    fn dechunk_keeps_the_data_at_any_split() {
        let msg = b"4;ext=v\r\nwxyz\r\n000001\r\n!\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let end = msg.len() - 4;
        for cut in 0..msg.len() {
            let mut s = ChunkScanner::default();
            let mut data = Vec::new();
            let mut walked = 0;
            for part in [&msg[..cut], &msg[cut..]] {
                let mut bytes = part.to_vec();
                let (used, kept) = s.dechunk(&mut bytes).unwrap();
                data.extend_from_slice(&bytes[..kept]);
                walked += used;
                if s.is_done() {
                    break;
                }
            }
            assert!(s.is_done(), "cut at {cut}");
            assert_eq!(walked, end, "cut at {cut}");
            assert_eq!(data, b"wxyz!", "cut at {cut}");
        }
        assert!(ChunkScanner::default()
            .dechunk(&mut b"5\nhello".to_vec())
            .is_err());
    }

    #[test]
    fn an_unfinished_message_is_not_done() {
        assert_eq!(scan_all(b"5\r\nhel"), Ok((6, false)));
        assert_eq!(scan_all(b"0\r\n"), Ok((3, false)));
    }

    use crate::test_rng::{mutate, next as rng};

    /// A valid chunked body, then a few random byte changes (or none).
    fn fuzzed_body(state: &mut u64) -> Vec<u8> {
        let mut v = Vec::new();
        for _ in 0..rng(state) % 4 {
            let n = (rng(state) % 20) as usize;
            let ext = ["", ";a=b", " ;q=\"x\\\"y\"", ";n"][(rng(state) % 4) as usize];
            v.extend_from_slice(format!("{n:x}{ext}\r\n").as_bytes());
            v.extend((0..n).map(|i| b'a' + (i % 26) as u8));
            v.extend_from_slice(b"\r\n");
        }
        v.extend_from_slice(b"0\r\n");
        if rng(state).is_multiple_of(2) {
            v.extend_from_slice(b"X-T: v\r\n");
        }
        v.extend_from_slice(b"\r\nNEXT");
        const BYTES: &[u8] = b"\r\n\0 ;=\"\\\t:0fF9xg\x80";
        let times = rng(state) % 3;
        mutate(state, &mut v, BYTES, times);
        v
    }

    /// What a scanner makes of `parts` fed in turn: the bytes it took, whether
    /// the message ended, or the error.
    fn scan_parts(parts: &[&[u8]]) -> Result<(usize, bool), ChunkError> {
        let mut s = ChunkScanner::default();
        let mut used = 0;
        for p in parts {
            used += s.scan(p)?;
            if s.is_done() {
                break;
            }
        }
        Ok((used, s.is_done()))
    }

    #[test]
    fn fuzzed_bodies_scan_and_decode_the_same_at_any_split() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for case in 0..3000 {
            let body = fuzzed_body(&mut state);
            let whole = scan_parts(&[&body]);
            // Decoding the whole body in place walks the same bytes.
            let mut copy = body.clone();
            let mut d = ChunkScanner::default();
            let decoded = d
                .dechunk(&mut copy)
                .map(|(used, kept)| (used, d.is_done(), copy[..kept].to_vec()));
            assert_eq!(
                whole,
                decoded.clone().map(|(u, done, _)| (u, done)),
                "case {case}: {:?}",
                String::from_utf8_lossy(&body)
            );
            for _ in 0..8 {
                let a = (rng(&mut state) as usize) % (body.len() + 1);
                let b = a + (rng(&mut state) as usize) % (body.len() - a + 1);
                let split = scan_parts(&[&body[..a], &body[a..b], &body[b..]]);
                assert_eq!(
                    whole.is_ok(),
                    split.is_ok(),
                    "case {case} cut at {a}, {b}: {:?}",
                    String::from_utf8_lossy(&body)
                );
                if let (Ok(w), Ok(s)) = (whole, split) {
                    assert_eq!(
                        w,
                        s,
                        "case {case} cut at {a}, {b}: {:?}",
                        String::from_utf8_lossy(&body)
                    );
                }
                // Decoding in pieces keeps the same data.
                if let Ok((_, _, data)) = &decoded {
                    let mut s = ChunkScanner::default();
                    let mut out = Vec::new();
                    for p in [&body[..a], &body[a..b], &body[b..]] {
                        let mut bytes = p.to_vec();
                        let (_, kept) = s.dechunk(&mut bytes).unwrap();
                        out.extend_from_slice(&bytes[..kept]);
                        if s.is_done() {
                            break;
                        }
                    }
                    assert_eq!(&out, data, "case {case} cut at {a}, {b}");
                }
            }
        }
    }
}
