//! Direct Avro binary encoding of the two records on the hot path
//! (`RawReading` read by validate, `ScoredReading` written by it).
//!
//! `apache-avro`'s schema-aware serde looks every field up by name and
//! allocates on the way, which was about 40 % of validate's CPU per record.
//! These functions write and read the same bytes field by field. They are
//! used only when the registered schema is exactly one of the shipped
//! schemas ([`FastAvro::schemas`]); the tests compare them byte for byte with
//! `apache-avro` over many generated values, so a schema change that is not
//! mirrored here fails the build's tests rather than the data.

use std::collections::BTreeMap;

use crate::schema::{
    AssetKind, FlagCode, IngestChannel, Measurement, Metric, QualityFlag, QualityTier, RawReading,
    SchemaFile, ScoredReading, QUARANTINED_READING, RAW_READING, VALIDATED_READING,
};

/// A type with a hand-written Avro binary encoding for specific schemas.
pub trait FastAvro: Sized {
    /// The schemas whose binary layout [`FastAvro::write`]/[`FastAvro::read`] implement.
    fn schemas() -> &'static [SchemaFile];
    /// Appends the Avro datum (no wire header).
    fn write(&self, out: &mut Vec<u8>);
    /// Reads one Avro datum.
    fn read(datum: &[u8]) -> Result<Self, String>;
}

/// A value that travels on a topic: serde for any schema, plus a fast path
/// for the schemas a type has a [`FastAvro`] encoding of.
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

impl AvroRecord for RawReading {
    fn fast_schemas() -> &'static [SchemaFile] {
        <Self as FastAvro>::schemas()
    }
    fn write_fast(&self, out: &mut Vec<u8>) -> bool {
        FastAvro::write(self, out);
        true
    }
    fn read_fast(datum: &[u8]) -> Option<Result<Self, String>> {
        Some(<Self as FastAvro>::read(datum))
    }
}

impl AvroRecord for ScoredReading {
    fn fast_schemas() -> &'static [SchemaFile] {
        <Self as FastAvro>::schemas()
    }
    fn write_fast(&self, out: &mut Vec<u8>) -> bool {
        FastAvro::write(self, out);
        true
    }
    fn read_fast(datum: &[u8]) -> Option<Result<Self, String>> {
        Some(<Self as FastAvro>::read(datum))
    }
}

/// True when `file` is one of the schemas `T` has a fast path for.
pub fn fast_path_for<T: AvroRecord>(file: SchemaFile) -> bool {
    T::fast_schemas()
        .iter()
        .any(|f| std::ptr::eq(f.text, file.text) || f.text == file.text)
}

/// Appends Avro primitives.
struct W<'a>(&'a mut Vec<u8>);

impl W<'_> {
    fn long(&mut self, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            self.0.push((z as u8) | 0x80);
            z >>= 7;
        }
        self.0.push(z as u8);
    }
    fn int(&mut self, v: i32) {
        self.long(v as i64)
    }
    fn string(&mut self, s: &str) {
        self.long(s.len() as i64);
        self.0.extend_from_slice(s.as_bytes());
    }
    fn double(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn boolean(&mut self, b: bool) {
        self.0.push(b as u8);
    }
    fn opt_string(&mut self, s: Option<&str>) {
        match s {
            None => self.long(0),
            Some(s) => {
                self.long(1);
                self.string(s);
            }
        }
    }
    fn opt_double(&mut self, v: Option<f64>) {
        match v {
            None => self.long(0),
            Some(v) => {
                self.long(1);
                self.double(v);
            }
        }
    }
    fn map(&mut self, m: &BTreeMap<String, String>) {
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

/// Reads Avro primitives.
struct R<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> R<'a> {
    fn long(&mut self) -> Result<i64, String> {
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
    fn int(&mut self) -> Result<i32, String> {
        i32::try_from(self.long()?).map_err(|_| "int out of range".to_string())
    }
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or("datum ends inside a value")?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn string(&mut self) -> Result<String, String> {
        let n = usize::try_from(self.long()?).map_err(|_| "negative string length")?;
        let b = self.bytes(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| "string is not UTF-8".to_string())
    }
    fn double(&mut self) -> Result<f64, String> {
        let b = self.bytes(8)?;
        Ok(f64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    fn boolean(&mut self) -> Result<bool, String> {
        match self.bytes(1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(format!("invalid boolean byte {b}")),
        }
    }
    fn union(&mut self, branches: i64) -> Result<i64, String> {
        let i = self.long()?;
        if (0..branches).contains(&i) {
            Ok(i)
        } else {
            Err(format!("union branch {i} does not exist"))
        }
    }
    fn opt_string(&mut self) -> Result<Option<String>, String> {
        Ok(match self.union(2)? {
            0 => None,
            _ => Some(self.string()?),
        })
    }
    fn opt_double(&mut self) -> Result<Option<f64>, String> {
        Ok(match self.union(2)? {
            0 => None,
            _ => Some(self.double()?),
        })
    }
    /// Item count of the next array/map block (0 ends it).
    fn block(&mut self) -> Result<usize, String> {
        let n = self.long()?;
        if n < 0 {
            self.long()?; // block size in bytes, not needed
        }
        usize::try_from(n.unsigned_abs()).map_err(|_| "block too large".to_string())
    }
    fn map(&mut self) -> Result<BTreeMap<String, String>, String> {
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
    fn enum_index(&mut self, symbols: usize, what: &str) -> Result<usize, String> {
        let i = self.int()?;
        usize::try_from(i)
            .ok()
            .filter(|i| *i < symbols)
            .ok_or_else(|| format!("{what} symbol index {i} does not exist"))
    }
    fn done(&self) -> Result<(), String> {
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

const KINDS: [AssetKind; 2] = [AssetKind::Turbine, AssetKind::Meter];
const CHANNELS: [IngestChannel; 4] = [
    IngestChannel::Http,
    IngestChannel::File,
    IngestChannel::Simulator,
    IngestChannel::Unknown,
];
const TIERS: [QualityTier; 3] = [
    QualityTier::Premium,
    QualityTier::Standard,
    QualityTier::Quarantine,
];
const CODES: [FlagCode; 7] = [
    FlagCode::UnitConverted,
    FlagCode::UnitInferred,
    FlagCode::FutureTimestamp,
    FlagCode::BackdatedTimestamp,
    FlagCode::OutOfRange,
    FlagCode::Spike,
    FlagCode::Drop,
];

fn index_of<T: PartialEq>(all: &[T], v: &T) -> i32 {
    all.iter()
        .position(|x| x == v)
        .expect("every variant is listed") as i32
}

impl FastAvro for RawReading {
    fn schemas() -> &'static [SchemaFile] {
        &[RAW_READING]
    }

    fn write(&self, out: &mut Vec<u8>) {
        let mut w = W(out);
        w.string(&self.event_id);
        w.string(&self.asset_id);
        match self.asset_kind {
            None => w.long(0),
            Some(k) => {
                w.long(1);
                w.int(index_of(&KINDS, &k));
            }
        }
        w.long(self.event_time);
        w.long(self.received_time);
        w.string(&self.source);
        w.int(index_of(&CHANNELS, &self.channel));
        if !self.measurements.is_empty() {
            w.long(self.measurements.len() as i64);
            for m in &self.measurements {
                w.int(m.metric as i32);
                w.double(m.value);
                w.opt_string(m.unit.as_deref());
            }
        }
        w.long(0);
        w.map(&self.attributes);
    }

    fn read(datum: &[u8]) -> Result<Self, String> {
        let mut r = R { buf: datum, pos: 0 };
        let event_id = r.string()?;
        let asset_id = r.string()?;
        let asset_kind = match r.union(2)? {
            0 => None,
            _ => Some(KINDS[r.enum_index(KINDS.len(), "AssetKind")?]),
        };
        let event_time = r.long()?;
        let received_time = r.long()?;
        let source = r.string()?;
        let channel = CHANNELS[r.enum_index(CHANNELS.len(), "IngestChannel")?];
        let mut measurements = Vec::new();
        loop {
            let n = r.block()?;
            if n == 0 {
                break;
            }
            measurements.reserve(n.min(64));
            for _ in 0..n {
                let metric = Metric::ALL[r.enum_index(Metric::ALL.len(), "Metric")?];
                let value = r.double()?;
                let unit = r.opt_string()?;
                measurements.push(Measurement {
                    metric,
                    value,
                    unit,
                });
            }
        }
        let attributes = r.map()?;
        r.done()?;
        Ok(RawReading {
            event_id,
            asset_id,
            asset_kind,
            event_time,
            received_time,
            source,
            channel,
            measurements,
            attributes,
        })
    }
}

impl FastAvro for ScoredReading {
    fn schemas() -> &'static [SchemaFile] {
        &[VALIDATED_READING, QUARANTINED_READING]
    }

    fn write(&self, out: &mut Vec<u8>) {
        let mut w = W(out);
        w.string(&self.event_id);
        w.string(&self.asset_id);
        w.int(index_of(&KINDS, &self.asset_kind));
        w.opt_string(self.site_id.as_deref());
        w.long(self.event_time);
        w.long(self.received_time);
        w.long(self.validated_time);
        w.string(&self.source);
        w.int(index_of(&CHANNELS, &self.channel));
        for m in Metric::ALL {
            w.opt_double(self.metric(m));
        }
        w.int(self.quality_score);
        w.int(index_of(&TIERS, &self.quality_tier));
        if !self.flags.is_empty() {
            w.long(self.flags.len() as i64);
            for f in &self.flags {
                w.int(index_of(&CODES, &f.code));
                match f.metric {
                    None => w.long(0),
                    Some(m) => {
                        w.long(1);
                        w.int(m as i32);
                    }
                }
                w.int(f.deduction);
                w.boolean(f.quarantine);
                w.string(&f.detail);
            }
        }
        w.long(0);
        w.map(&self.attributes);
    }

    fn read(datum: &[u8]) -> Result<Self, String> {
        let mut r = R { buf: datum, pos: 0 };
        let event_id = r.string()?;
        let asset_id = r.string()?;
        let asset_kind = KINDS[r.enum_index(KINDS.len(), "AssetKind")?];
        let site_id = r.opt_string()?;
        let event_time = r.long()?;
        let received_time = r.long()?;
        let validated_time = r.long()?;
        let source = r.string()?;
        let channel = CHANNELS[r.enum_index(CHANNELS.len(), "IngestChannel")?];
        let mut values = [None; 16];
        for v in values.iter_mut() {
            *v = r.opt_double()?;
        }
        let quality_score = r.int()?;
        let quality_tier = TIERS[r.enum_index(TIERS.len(), "QualityTier")?];
        let mut flags = Vec::new();
        loop {
            let n = r.block()?;
            if n == 0 {
                break;
            }
            for _ in 0..n {
                let code = CODES[r.enum_index(CODES.len(), "FlagCode")?];
                let metric = match r.union(2)? {
                    0 => None,
                    _ => Some(Metric::ALL[r.enum_index(Metric::ALL.len(), "Metric")?]),
                };
                let deduction = r.int()?;
                let quarantine = r.boolean()?;
                let detail = r.string()?;
                flags.push(QualityFlag {
                    code,
                    metric,
                    deduction,
                    quarantine,
                    detail,
                });
            }
        }
        let attributes = r.map()?;
        r.done()?;
        let mut s = ScoredReading {
            site_id,
            received_time,
            validated_time,
            source,
            channel,
            quality_score,
            quality_tier,
            flags,
            attributes,
            ..ScoredReading::new(event_id, asset_id, asset_kind, event_time)
        };
        for (m, v) in Metric::ALL.into_iter().zip(values) {
            if let Some(v) = v {
                s.set_metric(m, v);
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::reader::datum::GenericDatumReader;
    use apache_avro::writer::datum::GenericDatumWriter;
    use apache_avro::Schema;
    use rand::{Rng, SeedableRng};

    fn text(rng: &mut impl Rng) -> String {
        let len = rng.random_range(0..70);
        let mut s: String = (0..len).map(|_| rng.random_range(' '..='~')).collect();
        if rng.random_bool(0.3) {
            s.push('é');
        }
        s
    }

    fn raw(rng: &mut impl Rng) -> RawReading {
        RawReading {
            event_id: text(rng),
            asset_id: text(rng),
            asset_kind: [None, Some(AssetKind::Turbine), Some(AssetKind::Meter)]
                [rng.random_range(0..3)],
            event_time: rng.random(),
            received_time: rng.random_range(-5..5_000_000_000_000),
            source: text(rng),
            channel: CHANNELS[rng.random_range(0..4)],
            measurements: (0..rng.random_range(0..20))
                .map(|_| Measurement {
                    metric: Metric::ALL[rng.random_range(0..16)],
                    value: rng.random::<f64>() * 1e6 - 5e5,
                    unit: rng.random_bool(0.5).then(|| text(rng)),
                })
                .collect(),
            attributes: (0..rng.random_range(0..5))
                .map(|_| (text(rng), text(rng)))
                .collect(),
        }
    }

    fn scored(rng: &mut impl Rng) -> ScoredReading {
        let r = raw(rng);
        let mut s = ScoredReading {
            site_id: rng.random_bool(0.5).then(|| text(rng)),
            received_time: r.received_time,
            validated_time: rng.random(),
            source: r.source,
            channel: r.channel,
            quality_score: rng.random_range(0..=100),
            quality_tier: TIERS[rng.random_range(0..3)],
            flags: (0..rng.random_range(0..4))
                .map(|_| QualityFlag {
                    code: CODES[rng.random_range(0..7)],
                    metric: rng
                        .random_bool(0.5)
                        .then(|| Metric::ALL[rng.random_range(0..16)]),
                    deduction: rng.random_range(0..40),
                    quarantine: rng.random(),
                    detail: text(rng),
                })
                .collect(),
            attributes: r.attributes,
            ..ScoredReading::new(
                r.event_id,
                r.asset_id,
                KINDS[rng.random_range(0..2)],
                r.event_time,
            )
        };
        for m in Metric::ALL {
            if rng.random_bool(0.6) {
                s.set_metric(m, rng.random::<f64>() * 3000.0 - 100.0);
            }
        }
        s
    }

    fn check<T>(file: SchemaFile, make: impl Fn(&mut rand_chacha::ChaCha8Rng) -> T)
    where
        T: FastAvro + serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let schema = Schema::parse_str(file.text).unwrap();
        let writer = GenericDatumWriter::builder(&schema)
            .human_readable(false)
            .build()
            .unwrap();
        let reader = GenericDatumReader::builder(&schema)
            .human_readable(false)
            .build()
            .unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for _ in 0..500 {
            let value = make(&mut rng);
            let expected = writer.write_ser_to_vec(&value).unwrap();
            let mut ours = Vec::new();
            value.write(&mut ours);
            assert_eq!(ours, expected, "{} bytes differ for {value:?}", file.name);
            assert_eq!(T::read(&ours).unwrap(), value);
            let via_crate: T = {
                let v = reader.read_value(&mut &ours[..]).unwrap();
                apache_avro::from_value(&v).unwrap()
            };
            assert_eq!(via_crate, value);
        }
    }

    #[test]
    fn raw_reading_matches_apache_avro_byte_for_byte() {
        check(RAW_READING, raw);
    }

    #[test]
    fn scored_reading_matches_apache_avro_for_both_schemas() {
        check(VALIDATED_READING, scored);
        check(QUARANTINED_READING, scored);
    }

    #[test]
    fn bad_bytes_are_errors_not_panics() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut good = Vec::new();
        raw(&mut rng).write(&mut good);
        for cut in 0..good.len() {
            assert!(RawReading::read(&good[..cut]).is_err());
        }
        let mut extra = good.clone();
        extra.push(0);
        assert!(RawReading::read(&extra).is_err());
        for _ in 0..2000 {
            let junk: Vec<u8> = (0..rng.random_range(0..200))
                .map(|_| rng.random())
                .collect();
            let _ = RawReading::read(&junk);
            let _ = ScoredReading::read(&junk);
        }
    }
}
