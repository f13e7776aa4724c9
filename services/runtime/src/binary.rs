//! Avro binary primitives and the hook for hand-written record encodings.
//!
//! `apache-avro`'s schema-aware serde looks every field up by name and
//! allocates on the way, which was about 40 % of validate's CPU per record.
//! A record type on a hot path can therefore write and read its datum field
//! by field with [`AvroWriter`] and [`AvroReader`] through [`AvroRecord`];
//! the runtime uses that only when the registered schema is exactly one the
//! type declares ([`AvroRecord::fast_schemas`]). Types should test their
//! encoding byte for byte against `apache-avro` (the reading types in
//! `gale-model` do).

use std::collections::BTreeMap;

use crate::schema::SchemaFile;

/// A value that travels on a topic: serde for any schema, plus a fast path
/// for the schemas a type has a hand-written encoding of.
pub trait AvroRecord: serde::Serialize + serde::de::DeserializeOwned + Send + Sync {
    /// Schemas the fast path handles (none by default).
    fn fast_schemas() -> &'static [SchemaFile] {
        &[]
    }
    /// Appends the datum if the fast path applies; returns false otherwise.
    fn write_fast(&self, _out: &mut Vec<u8>) -> bool {
        false
    }
    /// Reads the datum if the fast path applies.
    fn read_fast(_datum: &[u8]) -> Option<Result<Self, String>> {
        None
    }
}

/// True when `file` is one of the schemas `T` has a fast path for.
pub fn fast_path_for<T: AvroRecord>(file: SchemaFile) -> bool {
    T::fast_schemas()
        .iter()
        .any(|f| std::ptr::eq(f.text, file.text) || f.text == file.text)
}

/// Appends Avro primitives to a buffer.
pub struct AvroWriter<'a>(pub &'a mut Vec<u8>);

impl AvroWriter<'_> {
    /// A zig-zag varint long.
    pub fn long(&mut self, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            self.0.push((z as u8) | 0x80);
            z >>= 7;
        }
        self.0.push(z as u8);
    }
    /// An int (a long on the wire).
    pub fn int(&mut self, v: i32) {
        self.long(v as i64)
    }
    /// A length-prefixed UTF-8 string.
    pub fn string(&mut self, s: &str) {
        self.long(s.len() as i64);
        self.0.extend_from_slice(s.as_bytes());
    }
    /// A little-endian IEEE 754 double.
    pub fn double(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    /// One byte, 0 or 1.
    pub fn boolean(&mut self, b: bool) {
        self.0.push(b as u8);
    }
    /// `["null", "string"]`.
    pub fn opt_string(&mut self, s: Option<&str>) {
        match s {
            None => self.long(0),
            Some(s) => {
                self.long(1);
                self.string(s);
            }
        }
    }
    /// `["null", "long"]`.
    pub fn opt_long(&mut self, v: Option<i64>) {
        match v {
            None => self.long(0),
            Some(v) => {
                self.long(1);
                self.long(v);
            }
        }
    }
    /// `["null", "double"]`.
    pub fn opt_double(&mut self, v: Option<f64>) {
        match v {
            None => self.long(0),
            Some(v) => {
                self.long(1);
                self.double(v);
            }
        }
    }
    /// A map of strings (blocks ending with 0).
    pub fn map(&mut self, m: &BTreeMap<String, String>) {
        if !m.is_empty() {
            self.long(m.len() as i64);
            for (k, v) in m {
                self.string(k);
                self.string(v);
            }
        }
        self.long(0);
    }
}

/// Reads Avro primitives from a datum.
pub struct AvroReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> AvroReader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        AvroReader { buf, pos: 0 }
    }

    /// A zig-zag varint long.
    pub fn long(&mut self) -> Result<i64, String> {
        let mut z: u64 = 0;
        let mut shift = 0;
        loop {
            let b = *self.buf.get(self.pos).ok_or("datum ends inside a number")?;
            self.pos += 1;
            if shift >= 64 {
                return Err("number longer than 10 bytes".into());
            }
            z |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }
    /// An int (a long on the wire).
    pub fn int(&mut self) -> Result<i32, String> {
        i32::try_from(self.long()?).map_err(|_| "int out of range".to_string())
    }
    /// The next `n` raw bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or("datum ends inside a value")?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    /// A length-prefixed UTF-8 string.
    pub fn string(&mut self) -> Result<String, String> {
        let n = usize::try_from(self.long()?).map_err(|_| "negative string length")?;
        let b = self.bytes(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| "string is not UTF-8".to_string())
    }
    /// A little-endian IEEE 754 double.
    pub fn double(&mut self) -> Result<f64, String> {
        let b = self.bytes(8)?;
        Ok(f64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    /// One byte, 0 or 1.
    pub fn boolean(&mut self) -> Result<bool, String> {
        match self.bytes(1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(format!("invalid boolean byte {b}")),
        }
    }
    /// A union branch index below `branches`.
    pub fn union(&mut self, branches: i64) -> Result<i64, String> {
        let i = self.long()?;
        if (0..branches).contains(&i) {
            Ok(i)
        } else {
            Err(format!("union branch {i} does not exist"))
        }
    }
    /// `["null", "string"]`.
    pub fn opt_string(&mut self) -> Result<Option<String>, String> {
        Ok(match self.union(2)? {
            0 => None,
            _ => Some(self.string()?),
        })
    }
    /// `["null", "long"]`.
    pub fn opt_long(&mut self) -> Result<Option<i64>, String> {
        Ok(match self.union(2)? {
            0 => None,
            _ => Some(self.long()?),
        })
    }
    /// `["null", "double"]`.
    pub fn opt_double(&mut self) -> Result<Option<f64>, String> {
        Ok(match self.union(2)? {
            0 => None,
            _ => Some(self.double()?),
        })
    }
    /// Item count of the next array/map block (0 ends it).
    pub fn block(&mut self) -> Result<usize, String> {
        let n = self.long()?;
        if n < 0 {
            self.long()?; // block size in bytes, not needed
        }
        usize::try_from(n.unsigned_abs()).map_err(|_| "block too large".to_string())
    }
    /// A map of strings (blocks ending with 0).
    pub fn map(&mut self) -> Result<BTreeMap<String, String>, String> {
        let mut m = BTreeMap::new();
        loop {
            let n = self.block()?;
            if n == 0 {
                return Ok(m);
            }
            for _ in 0..n {
                let k = self.string()?;
                let v = self.string()?;
                m.insert(k, v);
            }
        }
    }
    /// An enum symbol index below `symbols`.
    pub fn enum_index(&mut self, symbols: usize, what: &str) -> Result<usize, String> {
        let i = self.int()?;
        usize::try_from(i)
            .ok()
            .filter(|i| *i < symbols)
            .ok_or_else(|| format!("{what} symbol index {i} does not exist"))
    }
    /// Checks the whole datum was read.
    pub fn done(&self) -> Result<(), String> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(format!(
                "{} bytes left after the record",
                self.buf.len() - self.pos
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primitives_round_trip() {
        let mut buf = Vec::new();
        let mut w = AvroWriter(&mut buf);
        for v in [0i64, -1, 1, 63, -64, 64, i64::MAX, i64::MIN] {
            w.long(v);
        }
        w.string("héllo");
        w.opt_double(Some(2.5));
        w.opt_string(None);
        w.boolean(true);
        w.map(&BTreeMap::from([("k".to_string(), "v".to_string())]));
        let mut r = AvroReader::new(&buf);
        for v in [0i64, -1, 1, 63, -64, 64, i64::MAX, i64::MIN] {
            assert_eq!(r.long().unwrap(), v);
        }
        assert_eq!(r.string().unwrap(), "héllo");
        assert_eq!(r.opt_double().unwrap(), Some(2.5));
        assert_eq!(r.opt_string().unwrap(), None);
        assert!(r.boolean().unwrap());
        assert_eq!(r.map().unwrap().get("k").map(String::as_str), Some("v"));
        r.done().unwrap();
        assert!(AvroReader::new(&[0x80; 11]).long().is_err());
        assert!(AvroReader::new(&[2]).boolean().is_err());
    }
}
