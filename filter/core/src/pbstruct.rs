//! Decodes a protobuf `google.protobuf.Struct` into JSON.
//!
//! Envoy hands a plugin its `configuration` as the raw bytes of the `Any`'s value: a
//! `StringValue` arrives as the string itself (JSON text), a `Struct` as its protobuf
//! encoding. An `EnvoyFilter` can carry the configuration as YAML under
//! `"@type": type.googleapis.com/google.protobuf.Struct`; this module reads it without
//! a protobuf library (the filter stays small).
//!
//! Whole numbers come back as JSON integers: a `Struct` stores every number as a
//! double, and `poll_interval_ms: 10000` must still read as an integer.

use serde_json::{Map, Number, Value};

/// Nesting deeper than this is refused (a hostile or corrupt configuration).
const MAX_DEPTH: usize = 64;

/// Why the bytes are not a `Struct`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a protobuf google.protobuf.Struct: {0}")]
pub struct StructError(&'static str);

/// Decodes a serialized `google.protobuf.Struct` into a JSON object.
pub fn struct_to_json(bytes: &[u8]) -> Result<Value, StructError> {
    decode_struct(bytes, 0).map(Value::Object)
}

struct Reader<'a> {
    buf: &'a [u8],
}

enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, StructError> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self
                .buf
                .split_first()
                .ok_or(StructError("truncated varint"))?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(StructError("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StructError> {
        if n > self.buf.len() {
            return Err(StructError("field longer than the message"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// The next (field number, value), or `None` at the end.
    fn next(&mut self) -> Result<Option<(u64, Field<'a>)>, StructError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Field::Fixed64(u64::from_le_bytes(a))
            }
            2 => {
                let n = usize::try_from(self.varint()?)
                    .map_err(|_| StructError("length does not fit in memory"))?;
                Field::Bytes(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                Field::Fixed32
            }
            _ => return Err(StructError("unsupported wire type")),
        };
        Ok(Some((key >> 3, field)))
    }
}

fn decode_struct(bytes: &[u8], depth: usize) -> Result<Map<String, Value>, StructError> {
    if depth > MAX_DEPTH {
        return Err(StructError("nested more than 64 levels"));
    }
    let mut map = Map::new();
    let mut r = Reader { buf: bytes };
    while let Some((number, field)) = r.next()? {
        // Struct.fields (1) is a map<string, Value>: entries of key (1) and value (2).
        let (1, Field::Bytes(entry)) = (number, field) else {
            continue;
        };
        let mut e = Reader { buf: entry };
        let (mut key, mut value) = (String::new(), Value::Null);
        while let Some((n, f)) = e.next()? {
            match (n, f) {
                (1, Field::Bytes(k)) => {
                    key = std::str::from_utf8(k)
                        .map_err(|_| StructError("a key is not UTF-8"))?
                        .to_string();
                }
                (2, Field::Bytes(v)) => value = decode_value(v, depth + 1)?,
                _ => {}
            }
        }
        map.insert(key, value);
    }
    Ok(map)
}

fn decode_value(bytes: &[u8], depth: usize) -> Result<Value, StructError> {
    if depth > MAX_DEPTH {
        return Err(StructError("nested more than 64 levels"));
    }
    let mut out = Value::Null;
    let mut r = Reader { buf: bytes };
    while let Some((number, field)) = r.next()? {
        out = match (number, field) {
            (1, Field::Varint(_)) => Value::Null,
            (2, Field::Fixed64(bits)) => number_value(f64::from_bits(bits)),
            (3, Field::Bytes(s)) => Value::String(
                std::str::from_utf8(s)
                    .map_err(|_| StructError("a string is not UTF-8"))?
                    .to_string(),
            ),
            (4, Field::Varint(b)) => Value::Bool(b != 0),
            (5, Field::Bytes(s)) => Value::Object(decode_struct(s, depth + 1)?),
            (6, Field::Bytes(l)) => {
                let mut items = Vec::new();
                let mut lr = Reader { buf: l };
                while let Some((n, f)) = lr.next()? {
                    if let (1, Field::Bytes(v)) = (n, f) {
                        items.push(decode_value(v, depth + 1)?);
                    }
                }
                Value::Array(items)
            }
            _ => continue,
        };
    }
    Ok(out)
}

/// Whole doubles within ±2^53 as integers, others as floats (NaN/inf as null).
fn number_value(f: f64) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if f.fract() == 0.0 && f.abs() <= EXACT {
        // In range and whole: the conversion is exact.
        #[allow(clippy::cast_possible_truncation)]
        let i = f as i64;
        return Value::Number(Number::from(i));
    }
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // A tiny encoder, only to build test input.
    fn key(n: u64, wt: u64, out: &mut Vec<u8>) {
        varint((n << 3) | wt, out);
    }
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn bytes(n: u64, b: &[u8], out: &mut Vec<u8>) {
        key(n, 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }
    fn enc_value(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        match v {
            Value::Null => {
                key(1, 0, &mut out);
                varint(0, &mut out);
            }
            Value::Bool(b) => {
                key(4, 0, &mut out);
                varint(u64::from(*b), &mut out);
            }
            Value::Number(n) => {
                key(2, 1, &mut out);
                out.extend_from_slice(&n.as_f64().unwrap().to_bits().to_le_bytes());
            }
            Value::String(s) => bytes(3, s.as_bytes(), &mut out),
            Value::Array(a) => {
                let mut l = Vec::new();
                for i in a {
                    bytes(1, &enc_value(i), &mut l);
                }
                bytes(6, &l, &mut out);
            }
            Value::Object(_) => bytes(5, &enc_struct(v), &mut out),
        }
        out
    }
    fn enc_struct(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, val) in v.as_object().unwrap() {
            let mut entry = Vec::new();
            bytes(1, k.as_bytes(), &mut entry);
            bytes(2, &enc_value(val), &mut entry);
            bytes(1, &entry, &mut out);
        }
        out
    }

    #[test]
    fn round_trips_every_kind_and_keeps_integers_integers() {
        let v = json!({
            "collector": {"cluster": "meshtrace-collector", "timeout_ms": 5000},
            "sampling": {"default_strategy": {"type": "probabilistic", "param": 0.25},
                         "consistent_downstream": true},
            "custom_tags": [{"tag": "tier", "header": "x-tier"}, null, -3, 1.5],
            "empty": {}
        });
        assert_eq!(struct_to_json(&enc_struct(&v)).unwrap(), v);
        assert_eq!(struct_to_json(&[]).unwrap(), json!({}));
    }

    #[test]
    fn a_struct_configuration_reads_like_the_same_json() {
        use crate::config::Config;
        let v = json!({"service_name": "shop",
                       "sampling": {"remote": {"poll_interval_ms": 10000},
                                    "default_strategy": {"type": "probabilistic", "param": 0.5}}});
        let c = Config::from_plugin_bytes(&enc_struct(&v)).unwrap();
        let j = Config::from_plugin_bytes(v.to_string().as_bytes()).unwrap();
        assert_eq!(c.service_name.as_deref(), Some("shop"));
        assert_eq!(format!("{c:?}"), format!("{j:?}"));
        let bad = Config::from_plugin_bytes(&enc_struct(
            &json!({"sampling": {"remote": {"poll_interval_ms": -1}}}),
        ))
        .unwrap_err();
        assert!(
            bad.to_string().contains("sampling.remote.poll_interval_ms"),
            "{bad}"
        );
        let garbage = Config::from_plugin_bytes(b"\x0bxyz").unwrap_err();
        assert!(
            garbage.to_string().contains("neither a JSON object nor"),
            "{garbage}"
        );
    }

    #[test]
    fn corrupt_input_is_an_error_not_a_panic() {
        let good = enc_struct(&json!({"a": {"b": [1, "x"]}}));
        for cut in 1..good.len() {
            // Every truncation either decodes to something or errors; none panics.
            let _ = struct_to_json(&good[..cut]);
        }
        assert!(struct_to_json(&[0x0a, 0x05, 0x0a]).is_err());
        assert!(struct_to_json(&[0x0b]).is_err(), "wire type 3 is refused");
        // 100 nested structs: refused by the depth bound.
        let mut v = json!(1);
        for _ in 0..100 {
            v = json!({ "k": v });
        }
        let err = struct_to_json(&enc_struct(&v)).unwrap_err();
        assert!(err.to_string().contains("nested"), "{err}");
    }
}
