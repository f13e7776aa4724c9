//! Hand-written Avro binary encodings of the two records on the hot path
//! (`RawReading` read by validate, `ScoredReading` written by it), used by
//! the runtime only when the registered schema is exactly the shipped one.
//! The tests compare them byte for byte with `apache-avro` over many
//! generated values, so a schema change not mirrored here fails the tests
//! rather than the data.

use gale_runtime::binary::{AvroReader, AvroRecord, AvroWriter};
use gale_runtime::schema::SchemaFile;

use crate::reading::{
    AssetKind, FlagCode, IngestChannel, Measurement, Metric, QualityFlag, QualityTier, RawReading,
    ScoredReading,
};
use crate::schemas::{QUARANTINED_READING, RAW_READING, VALIDATED_READING};

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
const CODES: [FlagCode; 8] = [
    FlagCode::UnitConverted,
    FlagCode::UnitInferred,
    FlagCode::FutureTimestamp,
    FlagCode::BackdatedTimestamp,
    FlagCode::OutOfRange,
    FlagCode::Spike,
    FlagCode::Drop,
    FlagCode::DuplicateTime,
];

fn index_of<T: PartialEq>(all: &[T], v: &T) -> i32 {
    all.iter()
        .position(|x| x == v)
        .expect("every variant is listed") as i32
}

impl AvroRecord for RawReading {
    fn fast_schemas() -> &'static [SchemaFile] {
        &[RAW_READING]
    }

    fn write_fast(&self, out: &mut Vec<u8>) -> bool {
        let mut w = AvroWriter(out);
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
        w.opt_long(self.interval_ms);
        true
    }

    fn read_fast(datum: &[u8]) -> Option<Result<Self, String>> {
        Some(read_raw(datum))
    }
}

fn read_raw(datum: &[u8]) -> Result<RawReading, String> {
    let mut r = AvroReader::new(datum);
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
    let interval_ms = r.opt_long()?;
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
        interval_ms,
    })
}

impl AvroRecord for ScoredReading {
    fn fast_schemas() -> &'static [SchemaFile] {
        &[VALIDATED_READING, QUARANTINED_READING]
    }

    fn write_fast(&self, out: &mut Vec<u8>) -> bool {
        let mut w = AvroWriter(out);
        w.string(&self.event_id);
        w.string(&self.asset_id);
        w.int(index_of(&KINDS, &self.asset_kind));
        w.opt_string(self.site_id.as_deref());
        w.long(self.event_time);
        w.long(self.received_time);
        w.long(self.validated_time);
        w.string(&self.source);
        w.int(index_of(&CHANNELS, &self.channel));
        w.opt_long(self.interval_ms);
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
        true
    }

    fn read_fast(datum: &[u8]) -> Option<Result<Self, String>> {
        Some(read_scored(datum))
    }
}

fn read_scored(datum: &[u8]) -> Result<ScoredReading, String> {
    let mut r = AvroReader::new(datum);
    let event_id = r.string()?;
    let asset_id = r.string()?;
    let asset_kind = KINDS[r.enum_index(KINDS.len(), "AssetKind")?];
    let site_id = r.opt_string()?;
    let event_time = r.long()?;
    let received_time = r.long()?;
    let validated_time = r.long()?;
    let source = r.string()?;
    let channel = CHANNELS[r.enum_index(CHANNELS.len(), "IngestChannel")?];
    let interval_ms = r.opt_long()?;
    let mut values = [None; Metric::ALL.len()];
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
        interval_ms,
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
                    metric: Metric::ALL[rng.random_range(0..Metric::ALL.len())],
                    value: rng.random::<f64>() * 1e6 - 5e5,
                    unit: rng.random_bool(0.5).then(|| text(rng)),
                })
                .collect(),
            attributes: (0..rng.random_range(0..5))
                .map(|_| (text(rng), text(rng)))
                .collect(),
            interval_ms: rng.random_bool(0.5).then(|| rng.random()),
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
                    code: CODES[rng.random_range(0..CODES.len())],
                    metric: rng
                        .random_bool(0.5)
                        .then(|| Metric::ALL[rng.random_range(0..Metric::ALL.len())]),
                    deduction: rng.random_range(0..40),
                    quarantine: rng.random(),
                    detail: text(rng),
                })
                .collect(),
            attributes: r.attributes,
            interval_ms: r.interval_ms,
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
        T: AvroRecord + PartialEq + std::fmt::Debug,
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
            assert!(value.write_fast(&mut ours));
            assert_eq!(ours, expected, "{} bytes differ for {value:?}", file.name);
            assert_eq!(T::read_fast(&ours).unwrap().unwrap(), value);
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
        raw(&mut rng).write_fast(&mut good);
        for cut in 0..good.len() {
            assert!(read_raw(&good[..cut]).is_err());
        }
        let mut extra = good.clone();
        extra.push(0);
        assert!(read_raw(&extra).is_err());
        for _ in 0..2000 {
            let junk: Vec<u8> = (0..rng.random_range(0..200))
                .map(|_| rng.random())
                .collect();
            let _ = read_raw(&junk);
            let _ = read_scored(&junk);
        }
    }
}
