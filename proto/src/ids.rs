//! Trace and span identifiers.

use std::fmt;

/// Why an id could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("expected {expected} hex characters, got {got}")]
    Length { expected: usize, got: usize },
    #[error("invalid hex character")]
    NotHex,
    #[error("uppercase hex is not allowed")]
    Uppercase,
    #[error("all-zero id is invalid")]
    AllZero,
    #[error("expected {expected} bytes, got {got}")]
    ByteLength { expected: usize, got: usize },
}

/// A 128-bit trace id; never all zero when parsed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TraceId(pub [u8; 16]);

/// A 64-bit span id; never all zero when parsed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SpanId(pub [u8; 8]);

/// Each byte's value as a hex digit: 0–15, [`UPPER`] + value for `A`–`F`,
/// [`NOT_HEX`] for anything else (one lookup per character: ids are parsed on
/// the filter's request path).
const HEX_VALUES: [u8; 256] = {
    let mut t = [NOT_HEX; 256];
    let mut i = 0;
    while i < 16 {
        t[HEX[i] as usize] = i as u8;
        i += 1;
    }
    let mut c = b'A';
    while c <= b'F' {
        t[c as usize] = UPPER + (c - b'A' + 10);
        c += 1;
    }
    t
};
const UPPER: u8 = 0x10;
const NOT_HEX: u8 = 0xff;

fn hex_val(c: u8, allow_upper: bool) -> Result<u8, IdError> {
    match HEX_VALUES[usize::from(c)] {
        v @ 0..=15 => Ok(v),
        NOT_HEX => Err(IdError::NotHex),
        v if allow_upper => Ok(v - UPPER),
        _ => Err(IdError::Uppercase),
    }
}

/// Decodes `src` (exactly `2 * N` lowercase hex chars unless `allow_upper`) into `out`.
fn decode_exact<const N: usize>(src: &[u8], allow_upper: bool) -> Result<[u8; N], IdError> {
    if src.len() != 2 * N {
        return Err(IdError::Length {
            expected: 2 * N,
            got: src.len(),
        });
    }
    let mut out = [0u8; N];
    for (i, pair) in src.chunks_exact(2).enumerate() {
        out[i] = (hex_val(pair[0], allow_upper)? << 4) | hex_val(pair[1], allow_upper)?;
    }
    if out.iter().all(|b| *b == 0) {
        return Err(IdError::AllZero);
    }
    Ok(out)
}

/// Decodes up to `2 * N` hex chars, left-padding with zeros (B3 64-bit and Jaeger ids).
fn decode_padded<const N: usize>(src: &[u8], allow_upper: bool) -> Result<[u8; N], IdError> {
    if src.is_empty() || src.len() > 2 * N {
        return Err(IdError::Length {
            expected: 2 * N,
            got: src.len(),
        });
    }
    let mut padded = [b'0'; 64];
    let start = 2 * N - src.len();
    padded[start..2 * N].copy_from_slice(src);
    decode_exact::<N>(&padded[..2 * N], allow_upper)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Each byte's two lowercase hex digits.
const HEX_PAIRS: [[u8; 2]; 256] = {
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [HEX[i >> 4], HEX[i & 0xf]];
        i += 1;
    }
    t
};

/// `bytes` as lowercase hex, on the stack (a table lookup per byte: ids are
/// formatted once or twice per request on the filter's request path).
fn hex_array<const N: usize, const H: usize>(bytes: &[u8; N]) -> [u8; H] {
    let mut out = [0u8; H];
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(*b)]);
    }
    out
}

fn encode_into(bytes: &[u8], out: &mut String) {
    for b in bytes {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 0xf) as usize] as char);
    }
}

impl TraceId {
    /// Strict W3C form: 32 lowercase hex chars, not all zero.
    pub fn from_hex(src: &[u8]) -> Result<Self, IdError> {
        decode_exact::<16>(src, false).map(Self)
    }
    /// Lenient form used by B3 and Jaeger: 1..=32 hex chars (either case), left-padded.
    pub fn from_hex_padded(src: &[u8]) -> Result<Self, IdError> {
        decode_padded::<16>(src, true).map(Self)
    }
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdError> {
        let arr: [u8; 16] = bytes.try_into().map_err(|_| IdError::ByteLength {
            expected: 16,
            got: bytes.len(),
        })?;
        Ok(Self(arr))
    }
    pub fn is_valid(&self) -> bool {
        self.0.iter().any(|b| *b != 0)
    }
    /// True when the upper 64 bits are zero (a 64-bit B3/Jaeger id).
    pub fn is_64bit(&self) -> bool {
        self.0[..8].iter().all(|b| *b == 0)
    }
    /// The lower 56 bits, the randomness OpenTelemetry's consistent sampling uses.
    pub fn randomness(&self) -> u64 {
        let mut v = 0u64;
        for b in &self.0[9..16] {
            v = (v << 8) | u64::from(*b);
        }
        v
    }
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(32);
        encode_into(&self.0, &mut s);
        s
    }
    /// Appends 16 hex chars if the id is 64-bit, else 32.
    pub fn write_short_hex(&self, out: &mut String) {
        if self.is_64bit() {
            encode_into(&self.0[8..], out);
        } else {
            encode_into(&self.0, out);
        }
    }
    pub fn write_hex(&self, out: &mut String) {
        encode_into(&self.0, out);
    }
    /// The 32 lowercase hex chars, as bytes.
    pub fn hex_bytes(&self) -> [u8; 32] {
        hex_array(&self.0)
    }
}

impl SpanId {
    /// Strict W3C form: 16 lowercase hex chars, not all zero.
    pub fn from_hex(src: &[u8]) -> Result<Self, IdError> {
        decode_exact::<8>(src, false).map(Self)
    }
    /// Lenient form used by B3 and Jaeger: 1..=16 hex chars (either case), left-padded.
    pub fn from_hex_padded(src: &[u8]) -> Result<Self, IdError> {
        decode_padded::<8>(src, true).map(Self)
    }
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdError> {
        let arr: [u8; 8] = bytes.try_into().map_err(|_| IdError::ByteLength {
            expected: 8,
            got: bytes.len(),
        })?;
        Ok(Self(arr))
    }
    pub fn is_valid(&self) -> bool {
        self.0.iter().any(|b| *b != 0)
    }
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(16);
        encode_into(&self.0, &mut s);
        s
    }
    pub fn write_hex(&self, out: &mut String) {
        encode_into(&self.0, out);
    }
    /// The 16 lowercase hex chars, as bytes.
    pub fn hex_bytes(&self) -> [u8; 16] {
        hex_array(&self.0)
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({})", self.to_hex())
    }
}
impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_id_table() {
        let cases: &[(&str, Result<(), IdError>, &str)] = &[
            ("4bf92f3577b34da6a3ce929d0e0e4736", Ok(()), "valid"),
            (
                "4BF92F3577B34DA6A3CE929D0E0E4736",
                Err(IdError::Uppercase),
                "uppercase rejected in strict form",
            ),
            (
                "00000000000000000000000000000000",
                Err(IdError::AllZero),
                "all zero",
            ),
            (
                "4bf92f3577b34da6a3ce929d0e0e473",
                Err(IdError::Length {
                    expected: 32,
                    got: 31,
                }),
                "short",
            ),
            (
                "4bf92f3577b34da6a3ce929d0e0e4736a",
                Err(IdError::Length {
                    expected: 32,
                    got: 33,
                }),
                "long",
            ),
            (
                "4bf92f3577b34da6a3ce929d0e0e473g",
                Err(IdError::NotHex),
                "non-hex",
            ),
        ];
        for (input, want, why) in cases {
            let got = TraceId::from_hex(input.as_bytes()).map(|_| ());
            assert_eq!(&got, want, "{why}: {input}");
        }
    }

    #[test]
    fn every_byte_reads_as_hex_only_when_it_is_one() {
        for c in 0..=255u8 {
            let want = (c as char).to_digit(16).map(|d| d as u8);
            let lower = !c.is_ascii_uppercase();
            match (hex_val(c, false), want) {
                (Ok(v), Some(d)) => assert!(v == d && lower, "{c}"),
                (Err(IdError::Uppercase), Some(_)) => assert!(!lower, "{c}"),
                (Err(IdError::NotHex), None) => {}
                other => panic!("{c}: {other:?}"),
            }
            assert_eq!(hex_val(c, true).ok(), want, "{c}");
        }
    }

    #[test]
    fn hex_bytes_match_the_string_form_for_every_byte() {
        for b in 0..=255u8 {
            let t = TraceId([b, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, b]);
            assert_eq!(t.hex_bytes().as_slice(), t.to_hex().as_bytes());
            let s = SpanId([b, 0xff, 0x10, 0x0f, 0xa0, 0x09, 0x5a, b]);
            assert_eq!(s.hex_bytes().as_slice(), s.to_hex().as_bytes());
            assert_eq!(&s.hex_bytes()[..2], format!("{b:02x}").as_bytes());
        }
    }

    #[test]
    fn padded_forms() {
        let id = TraceId::from_hex_padded(b"a3ce929d0e0e4736").unwrap();
        assert!(id.is_64bit());
        let mut s = String::new();
        id.write_short_hex(&mut s);
        assert_eq!(s, "a3ce929d0e0e4736");
        assert_eq!(id.to_hex(), "0000000000000000a3ce929d0e0e4736");
        assert_eq!(
            SpanId::from_hex_padded(b"1").unwrap().to_hex(),
            "0000000000000001"
        );
        assert_eq!(
            SpanId::from_hex_padded(b"").unwrap_err(),
            IdError::Length {
                expected: 16,
                got: 0
            }
        );
        assert_eq!(SpanId::from_hex_padded(b"0").unwrap_err(), IdError::AllZero);
    }

    #[test]
    fn randomness_is_low_56_bits() {
        let id = TraceId::from_hex(b"ffffffffffffffffff00000000000001").unwrap();
        assert_eq!(id.randomness(), 1);
        let id = TraceId::from_hex(b"00000000000000000affffffffffffff").unwrap();
        assert_eq!(id.randomness(), (1u64 << 56) - 1);
    }
}
