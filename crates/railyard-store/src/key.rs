//! Ordered keys for indexes: [`KeyBuf`] builds a key from segments so that byte order
//! equals the order of the segments' values (strings lexicographically, integers
//! numerically), and [`KeyReader`] takes such a key apart again.
//!
//! Encoding, per segment: a string is its UTF-8 bytes with every `0x00` written as
//! `0x00 0xff`, then the terminator `0x00 0x01`, which sorts below any further byte of a
//! longer string and cannot be mistaken for an escaped `0x00` whatever segment follows; so
//! `KeyBuf::new().str("release")` is a prefix of every key whose first segment is exactly
//! `release`. A `u64` is 8 bytes big-endian; an `i64` is 8 bytes big-endian with the sign bit
//! flipped, so negative numbers sort first. Segments carry no type tag: the reader must know
//! the layout it wrote.

use crate::error::display_key;

/// The 8 big-endian bytes of `n`: byte order equals numeric order.
pub fn u64_key(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// The `u64` of an 8-byte big-endian key, `None` when `bytes` is not 8 bytes long.
pub fn u64_from_key(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// A key being built, segment by segment.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyBuf(Vec<u8>);

impl KeyBuf {
    /// An empty key.
    pub fn new() -> KeyBuf {
        KeyBuf(Vec::new())
    }

    /// Appends a string segment.
    pub fn str(mut self, segment: &str) -> KeyBuf {
        for &byte in segment.as_bytes() {
            self.0.push(byte);
            if byte == 0 {
                self.0.push(0xff);
            }
        }
        self.0.extend_from_slice(&[0, 1]);
        self
    }

    /// Appends a `u64` segment.
    pub fn u64(mut self, segment: u64) -> KeyBuf {
        self.0.extend_from_slice(&u64_key(segment));
        self
    }

    /// Appends an `i64` segment (a Unix timestamp, say).
    pub fn i64(mut self, segment: i64) -> KeyBuf {
        self.0
            .extend_from_slice(&((segment as u64) ^ (1 << 63)).to_be_bytes());
        self
    }

    /// The bytes so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The key.
    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }
}

impl From<KeyBuf> for Vec<u8> {
    fn from(key: KeyBuf) -> Vec<u8> {
        key.0
    }
}

impl AsRef<[u8]> for KeyBuf {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A key that does not have the layout its reader expects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "key {key} has no valid {expected} segment at byte {offset}: read it with the layout it was written with"
)]
pub struct KeyError {
    /// The whole key, escaped for display.
    pub key: String,
    /// What the reader expected (`string`, `u64`, `i64`, `end`).
    pub expected: &'static str,
    /// Where in the key.
    pub offset: usize,
}

/// Takes a [`KeyBuf`]-built key apart, segment by segment.
#[derive(Debug, Clone)]
pub struct KeyReader<'a> {
    key: &'a [u8],
    offset: usize,
}

impl<'a> KeyReader<'a> {
    /// A reader at the start of `key`.
    pub fn new(key: &'a [u8]) -> KeyReader<'a> {
        KeyReader { key, offset: 0 }
    }

    fn error(&self, expected: &'static str) -> KeyError {
        KeyError {
            key: display_key(self.key),
            expected,
            offset: self.offset,
        }
    }

    /// The next segment, as a string.
    pub fn str(&mut self) -> Result<String, KeyError> {
        let mut bytes = Vec::new();
        let mut at = self.offset;
        loop {
            match self.key.get(at) {
                None => return Err(self.error("string")),
                Some(0) => match self.key.get(at + 1) {
                    Some(0xff) => {
                        bytes.push(0);
                        at += 2;
                    }
                    Some(1) => {
                        at += 2;
                        break;
                    }
                    _ => return Err(self.error("string")),
                },
                Some(&byte) => {
                    bytes.push(byte);
                    at += 1;
                }
            }
        }
        let text = String::from_utf8(bytes).map_err(|_| self.error("string"))?;
        self.offset = at;
        Ok(text)
    }

    fn eight(&mut self, expected: &'static str) -> Result<[u8; 8], KeyError> {
        let bytes: [u8; 8] = self
            .key
            .get(self.offset..self.offset + 8)
            .and_then(|slice| slice.try_into().ok())
            .ok_or_else(|| self.error(expected))?;
        self.offset += 8;
        Ok(bytes)
    }

    /// The next segment, as a `u64`.
    pub fn u64(&mut self) -> Result<u64, KeyError> {
        self.eight("u64").map(u64::from_be_bytes)
    }

    /// The next segment, as an `i64`.
    pub fn i64(&mut self) -> Result<i64, KeyError> {
        self.eight("i64")
            .map(|bytes| (u64::from_be_bytes(bytes) ^ (1 << 63)) as i64)
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        &self.key[self.offset..]
    }

    /// Succeeds when the whole key was read.
    pub fn finish(self) -> Result<(), KeyError> {
        if self.offset == self.key.len() {
            Ok(())
        } else {
            Err(self.error("end"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
    enum Seg {
        S(&'static str),
        U(u64),
        I(i64),
    }

    fn build(segments: &[Seg]) -> Vec<u8> {
        segments
            .iter()
            .fold(KeyBuf::new(), |key, seg| match seg {
                Seg::S(s) => key.str(s),
                Seg::U(n) => key.u64(*n),
                Seg::I(n) => key.i64(*n),
            })
            .into_vec()
    }

    fn read(key: &[u8], like: &[Seg]) -> Result<Vec<Seg>, KeyError> {
        let mut reader = KeyReader::new(key);
        let mut out = Vec::new();
        for seg in like {
            out.push(match seg {
                Seg::S(_) => Seg::S(String::leak(reader.str()?)),
                Seg::U(_) => Seg::U(reader.u64()?),
                Seg::I(_) => Seg::I(reader.i64()?),
            });
        }
        reader.finish()?;
        Ok(out)
    }

    /// Keys of one layout, in the order their values sort; the bytes must sort the same.
    fn ordered_layouts() -> Vec<Vec<Vec<Seg>>> {
        use Seg::*;
        vec![
            vec![
                vec![S(""), U(9)],
                vec![S("a"), U(0)],
                vec![S("a"), U(1)],
                vec![S("a"), U(256)],
                vec![S("a"), U(u64::MAX)],
                vec![S("a\0"), U(0)],
                vec![S("a\0b"), U(0)],
                vec![S("ab"), U(0)],
                vec![S("b"), U(0)],
                vec![S("é"), U(0)],
            ],
            vec![
                vec![I(i64::MIN), S("x")],
                vec![I(-1), S("x")],
                vec![I(0), S("x")],
                vec![I(1), S("")],
                vec![I(1), S("x")],
                vec![I(i64::MAX), S("x")],
            ],
        ]
    }

    #[test]
    fn byte_order_equals_value_order_and_keys_read_back() {
        for layout in ordered_layouts() {
            let keys: Vec<Vec<u8>> = layout.iter().map(|segs| build(segs)).collect();
            for (segs, key) in layout.iter().zip(&keys) {
                assert_eq!(&read(key, segs).unwrap(), segs, "key {key:?}");
            }
            for pair in keys.windows(2) {
                assert!(
                    pair[0] < pair[1],
                    "{:?} must sort before {:?}",
                    pair[0],
                    pair[1]
                );
            }
        }
    }

    #[test]
    fn a_string_segment_is_a_prefix_of_exactly_its_own_keys() {
        let prefix = KeyBuf::new().str("release").into_vec();
        let cases = [
            (KeyBuf::new().str("release").str("rel-1"), true),
            (KeyBuf::new().str("release").u64(3), true),
            (KeyBuf::new().str("releases").str("rel-1"), false),
            (KeyBuf::new().str("releas"), false),
        ];
        for (key, expected) in cases {
            assert_eq!(key.as_bytes().starts_with(&prefix), expected, "{key:?}");
        }
    }

    #[test]
    fn malformed_keys_say_what_was_expected_and_where() {
        let short = KeyBuf::new().str("a").into_vec();
        let mut reader = KeyReader::new(&short);
        reader.str().unwrap();
        let error = reader.u64().unwrap_err();
        assert_eq!(
            error.to_string(),
            "key a\\x00\\x01 has no valid u64 segment at byte 3: read it with the layout it was written with"
        );
        let unterminated = KeyReader::new(b"abc").str().unwrap_err();
        assert_eq!(unterminated.expected, "string");
        let trailing = KeyReader::new(&[1, 2]).finish().unwrap_err();
        assert_eq!((trailing.expected, trailing.offset), ("end", 0));
        assert_eq!(u64_from_key(&u64_key(42)), Some(42));
        assert_eq!(u64_from_key(&[1, 2, 3]), None);
    }
}
