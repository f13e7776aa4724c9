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
use crate::schemas::{
    CHECKED_READING, ENRICHED_READING, QUARANTINED_READING, RAW_READING, VALIDATED_READING,
};
use crate::stages::{ActiveFault, CheckedReading, EnrichedReading};

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
        write_scored(self, &mut AvroWriter(out));
        true
    }

    fn read_fast(datum: &[u8]) -> Option<Result<Self, String>> {
        Some(read_scored(datum))
    }
}

/// The fields of a validated reading, which also open the enriched and
/// checked readings' schemas.
fn write_scored(this: &ScoredReading, w: &mut AvroWriter<'_>) {
    w.string(&this.event_id);
    w.string(&this.asset_id);
    w.int(index_of(&KINDS, &this.asset_kind));
    w.opt_string(this.site_id.as_deref());
    w.long(this.event_time);
    w.long(this.received_time);
    w.long(this.validated_time);
    w.string(&this.source);
    w.int(index_of(&CHANNELS, &this.channel));
    w.opt_long(this.interval_ms);
    for m in Metric::ALL {
        w.opt_double(this.metric(m));
    }
    w.int(this.quality_score);
    w.int(index_of(&TIERS, &this.quality_tier));
    if !this.flags.is_empty() {
        w.long(this.flags.len() as i64);
        for f in &this.flags {
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
    w.map(&this.attributes);
}

/// The enriched reading's own fields, after the validated reading's.
fn write_enriched(e: &EnrichedReading, w: &mut AvroWriter<'_>) {
    write_scored(&e.reading, w);
    w.opt_string(e.site_name.as_deref());
    w.opt_string(e.site_time_zone.as_deref());
    w.opt_double(e.site_latitude_deg);
    w.opt_double(e.site_longitude_deg);
    w.opt_string(e.model_id.as_deref());
    for v in [
        e.rated_power_kw,
        e.cut_in_wind_speed_ms,
        e.rated_wind_speed_ms,
        e.cut_out_wind_speed_ms,
        e.air_density_kg_m3,
        e.normalized_wind_speed_ms,
        e.expected_power_kw,
        e.power_deficit_kw,
        e.capacity_factor,
        e.contracted_capacity_kw,
    ] {
        w.opt_double(v);
    }
    w.opt_string(e.feeder_id.as_deref());
    w.boolean(e.vacant);
    if !e.context_flags.is_empty() {
        w.long(e.context_flags.len() as i64);
        for f in &e.context_flags {
            w.string(f);
        }
    }
    w.long(0);
}

fn read_enriched_from(r: &mut AvroReader<'_>) -> Result<EnrichedReading, String> {
    let mut e = EnrichedReading::bare(read_scored_from(r)?);
    e.site_name = r.opt_string()?;
    e.site_time_zone = r.opt_string()?;
    e.site_latitude_deg = r.opt_double()?;
    e.site_longitude_deg = r.opt_double()?;
    e.model_id = r.opt_string()?;
    e.rated_power_kw = r.opt_double()?;
    e.cut_in_wind_speed_ms = r.opt_double()?;
    e.rated_wind_speed_ms = r.opt_double()?;
    e.cut_out_wind_speed_ms = r.opt_double()?;
    e.air_density_kg_m3 = r.opt_double()?;
    e.normalized_wind_speed_ms = r.opt_double()?;
    e.expected_power_kw = r.opt_double()?;
    e.power_deficit_kw = r.opt_double()?;
    e.capacity_factor = r.opt_double()?;
    e.contracted_capacity_kw = r.opt_double()?;
    e.feeder_id = r.opt_string()?;
    e.vacant = r.boolean()?;
    loop {
        let n = r.block()?;
        if n == 0 {
            break;
        }
        for _ in 0..n {
            e.context_flags.push(r.string()?);
        }
    }
    Ok(e)
}

impl AvroRecord for EnrichedReading {
    fn fast_schemas() -> &'static [SchemaFile] {
        &[ENRICHED_READING]
    }

    fn write_fast(&self, out: &mut Vec<u8>) -> bool {
        write_enriched(self, &mut AvroWriter(out));
        true
    }

    fn read_fast(datum: &[u8]) -> Option<Result<Self, String>> {
        let mut r = AvroReader::new(datum);
        Some(read_enriched_from(&mut r).and_then(|e| r.done().map(|()| e)))
    }
}

impl AvroRecord for CheckedReading {
    fn fast_schemas() -> &'static [SchemaFile] {
        &[CHECKED_READING]
    }

    fn write_fast(&self, out: &mut Vec<u8>) -> bool {
        let mut w = AvroWriter(out);
        write_enriched(&self.enriched, &mut w);
        if !self.faults.is_empty() {
            w.long(self.faults.len() as i64);
            for f in &self.faults {
                w.string(&f.fault_id);
                w.string(&f.code);
                w.string(&f.severity);
            }
        }
        w.long(0);
        w.int(self.fault_deduction);
        true
    }

    fn read_fast(datum: &[u8]) -> Option<Result<Self, String>> {
        let mut r = AvroReader::new(datum);
        let read = |r: &mut AvroReader<'_>| -> Result<CheckedReading, String> {
            let enriched = read_enriched_from(r)?;
            let mut faults = Vec::new();
            loop {
                let n = r.block()?;
                if n == 0 {
                    break;
                }
                for _ in 0..n {
                    faults.push(ActiveFault {
                        fault_id: r.string()?,
                        code: r.string()?,
                        severity: r.string()?,
                    });
                }
            }
            let fault_deduction = r.int()?;
            r.done()?;
            Ok(CheckedReading {
                enriched,
                faults,
                fault_deduction,
            })
        };
        Some(read(&mut r))
    }
}

fn read_scored(datum: &[u8]) -> Result<ScoredReading, String> {
    let mut r = AvroReader::new(datum);
    let s = read_scored_from(&mut r)?;
    r.done()?;
    Ok(s)
}

fn read_scored_from(r: &mut AvroReader<'_>) -> Result<ScoredReading, String> {
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

    fn maybe<T>(rng: &mut impl Rng, v: impl FnOnce(&mut dyn rand::RngCore) -> T) -> Option<T> {
        if rng.random_bool(0.5) {
            Some(v(rng))
        } else {
            None
        }
    }

    fn enriched(rng: &mut rand_chacha::ChaCha8Rng) -> EnrichedReading {
        let mut e = EnrichedReading::bare(scored(rng));
        e.site_name = maybe(rng, |r| format!("site {}", r.next_u32()));
        e.site_time_zone = maybe(rng, |_| "Europe/Berlin".to_string());
        e.site_latitude_deg = maybe(rng, |r| f64::from(r.next_u32()) / 1e7);
        e.site_longitude_deg = maybe(rng, |r| f64::from(r.next_u32()) / 1e7);
        e.model_id = maybe(rng, |r| format!("M{}", r.next_u32() % 9));
        e.rated_power_kw = maybe(rng, |_| 2000.0);
        e.cut_in_wind_speed_ms = maybe(rng, |_| 3.0);
        e.rated_wind_speed_ms = maybe(rng, |_| 12.0);
        e.cut_out_wind_speed_ms = maybe(rng, |_| 25.0);
        e.air_density_kg_m3 = maybe(rng, |r| 1.1 + f64::from(r.next_u32() % 300) / 1000.0);
        e.normalized_wind_speed_ms = maybe(rng, |r| f64::from(r.next_u32() % 2500) / 100.0);
        e.expected_power_kw = maybe(rng, |r| f64::from(r.next_u32() % 2000));
        e.power_deficit_kw = maybe(rng, |r| f64::from(r.next_u32() % 400) - 200.0);
        e.capacity_factor = maybe(rng, |r| f64::from(r.next_u32() % 100) / 100.0);
        e.contracted_capacity_kw = maybe(rng, |_| 12.5);
        e.feeder_id = maybe(rng, |r| format!("F{}", r.next_u32() % 5));
        e.vacant = rng.random_bool(0.1);
        for _ in 0..rng.random_range(0..3) {
            e.context_flags.push(text(rng));
        }
        e
    }

    fn checked(rng: &mut rand_chacha::ChaCha8Rng) -> CheckedReading {
        let enriched = enriched(rng);
        let faults = (0..rng.random_range(0..3))
            .map(|i| ActiveFault {
                fault_id: format!(
                    "{}:CODE{i}:{}",
                    enriched.reading.asset_id,
                    rng.random::<u32>()
                ),
                code: text(rng),
                severity: "WARNING".into(),
            })
            .collect::<Vec<_>>();
        CheckedReading {
            fault_deduction: 30 * faults.len() as i32,
            enriched,
            faults,
        }
    }

    #[test]
    fn enriched_and_checked_readings_match_apache_avro_byte_for_byte() {
        check(ENRICHED_READING, enriched);
        check(CHECKED_READING, checked);
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
