//! One row per event id in each table partition.
//!
//! Upstream delivery is at least once: a client retrying a batch after a
//! 503, validate replaying after a kill, a file dropped again before its
//! done marker all put a reading on the topic twice, at different offsets.
//! The archive keeps the first and drops the others, at three places:
//!
//! * **within a file**: of the rows of one Hive partition in one flush, only
//!   the first (lowest offset) per id is written;
//! * **across files**: before a file is written, its ids are checked against
//!   the ids already in the partition's files of the same Kafka partition
//!   (a repeated reading has the same key, so the same Kafka partition),
//!   remembered in memory and, for a partition not written since the
//!   archive started, read back from those files' id column. Files not yet
//!   covered by the checkpoint (a flush being rebuilt) are not counted;
//! * **at compaction**: merged files keep one row per id (the lowest Kafka
//!   partition and offset), which also removes the rare duplicate written by
//!   two owners of a Kafka partition during a rebalance.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::DataType;

use crate::layout::HiveKey;

/// An event id as remembered: UUIDs (Gale's own ids) in 16 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IdKey {
    /// A UUID in its canonical text form.
    Uuid(u128),
    /// Any other id.
    Text(Box<str>),
}

impl IdKey {
    /// The key of `id`.
    pub fn of(id: &str) -> IdKey {
        match uuid::Uuid::try_parse(id) {
            Ok(u) if u.hyphenated().to_string() == id => IdKey::Uuid(u.as_u128()),
            _ => IdKey::Text(id.into()),
        }
    }
}

/// Ids already in a table partition (from one Kafka partition).
pub type IdSet = HashSet<IdKey>;

/// The ids of `column` in `batch`, or `None` when it has no such text column.
pub fn ids(batch: &RecordBatch, column: &str) -> Option<Vec<Option<IdKey>>> {
    let col = batch.column_by_name(column)?;
    let text = match col.data_type() {
        DataType::Utf8 => col.as_string::<i32>(),
        _ => return None,
    };
    Some(
        (0..text.len())
            .map(|i| text.is_valid(i).then(|| IdKey::of(text.value(i))))
            .collect(),
    )
}

/// `batch` (rows in offset order) without the rows whose id is in `known`
/// or appeared earlier in the batch; also returns the ids kept and how many
/// rows were dropped. Rows without an id are kept.
pub fn drop_repeats(
    batch: &RecordBatch,
    column: &str,
    known: &IdSet,
) -> Result<(RecordBatch, Vec<IdKey>, usize), String> {
    let Some(ids) = ids(batch, column) else {
        return Ok((batch.clone(), Vec::new(), 0));
    };
    let mut seen: HashSet<&IdKey> = HashSet::with_capacity(ids.len());
    let mut keep = Vec::with_capacity(ids.len());
    let mut kept = Vec::with_capacity(ids.len());
    for id in &ids {
        let k = match id {
            None => true,
            Some(id) => !known.contains(id) && seen.insert(id),
        };
        keep.push(k);
        if k {
            if let Some(id) = id {
                kept.push(id.clone());
            }
        }
    }
    let dropped = keep.iter().filter(|k| !**k).count();
    if dropped == 0 {
        return Ok((batch.clone(), kept, 0));
    }
    let filtered =
        filter_record_batch(batch, &BooleanArray::from(keep)).map_err(|e| e.to_string())?;
    Ok((filtered, kept, dropped))
}

/// Which ids each table partition already holds, per Kafka partition,
/// bounded in memory: the least recently written partitions are forgotten
/// first (and read back from their files when written again).
#[derive(Debug, Default)]
pub struct Index {
    sets: HashMap<Slot, (Arc<IdSet>, u64)>,
    ids: usize,
    cap: usize,
    clock: u64,
}

/// A table partition as written by one Kafka partition.
pub type Slot = (String, i32, HiveKey);

impl Index {
    /// An index remembering about `cap` ids.
    pub fn new(cap: usize) -> Self {
        Index {
            cap,
            ..Index::default()
        }
    }

    /// The ids of `slot`, if known.
    pub fn get(&mut self, slot: &Slot) -> Option<Arc<IdSet>> {
        self.clock += 1;
        let clock = self.clock;
        self.sets.get_mut(slot).map(|(set, used)| {
            *used = clock;
            set.clone()
        })
    }

    /// Remembers that `slot` holds `set`.
    pub fn insert(&mut self, slot: Slot, set: IdSet) {
        self.clock += 1;
        self.ids += set.len();
        if let Some((old, _)) = self.sets.insert(slot, (Arc::new(set), self.clock)) {
            self.ids -= old.len();
        }
        self.evict();
    }

    /// Adds ids written to `slot`.
    pub fn extend(&mut self, slot: &Slot, ids: Vec<IdKey>) {
        self.clock += 1;
        let clock = self.clock;
        let Some((set, used)) = self.sets.get_mut(slot) else {
            return;
        };
        *used = clock;
        let set = Arc::make_mut(set);
        let before = set.len();
        set.extend(ids);
        self.ids += set.len() - before;
        self.evict();
    }

    /// Forgets the slots of a Kafka partition (revoked: another archive
    /// writes it now).
    pub fn forget(&mut self, topic: &str, partition: i32) {
        let gone: Vec<Slot> = self
            .sets
            .keys()
            .filter(|(t, p, _)| t == topic && *p == partition)
            .cloned()
            .collect();
        for slot in gone {
            if let Some((set, _)) = self.sets.remove(&slot) {
                self.ids -= set.len();
            }
        }
    }

    /// Ids remembered.
    pub fn len(&self) -> usize {
        self.ids
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.ids == 0
    }

    fn evict(&mut self) {
        while self.ids > self.cap && self.sets.len() > 1 {
            let Some(oldest) = self
                .sets
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            else {
                return;
            };
            if let Some((set, _)) = self.sets.remove(&oldest) {
                self.ids -= set.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};

    fn batch(ids: &[Option<&str>]) -> RecordBatch {
        let id: Arc<dyn Array> = Arc::new(StringArray::from(ids.to_vec()));
        let offset: Arc<dyn Array> =
            Arc::new(Int64Array::from((0..ids.len() as i64).collect::<Vec<_>>()));
        RecordBatch::try_from_iter([("event_id", id), ("kafka_offset", offset)]).unwrap()
    }

    #[test]
    fn the_first_row_per_id_is_kept() {
        let known: IdSet = [IdKey::of("k")].into_iter().collect();
        let b = batch(&[Some("a"), Some("b"), Some("a"), None, Some("k"), None]);
        let (out, kept, dropped) = drop_repeats(&b, "event_id", &known).unwrap();
        assert_eq!(dropped, 2);
        assert_eq!(kept, vec![IdKey::of("a"), IdKey::of("b")]);
        let offsets = out.column(1).as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(offsets.values().to_vec(), vec![0, 1, 3, 5]);
        // No such column: nothing dropped.
        let (same, _, none) = drop_repeats(&b, "nope", &known).unwrap();
        assert_eq!((same.num_rows(), none), (6, 0));
    }

    #[test]
    fn uuids_are_compact_and_other_ids_kept_whole() {
        let u = "6f1c2a52-7a1e-5a0e-9e1c-0a1b2c3d4e5f";
        assert!(matches!(IdKey::of(u), IdKey::Uuid(_)));
        assert_eq!(IdKey::of(u), IdKey::of(u));
        // Upper case is another string, so another id.
        assert!(matches!(IdKey::of(&u.to_uppercase()), IdKey::Text(_)));
        assert!(matches!(IdKey::of("reading-1"), IdKey::Text(_)));
    }

    #[test]
    fn the_index_forgets_the_least_recently_written_partitions() {
        let key = |h: u32| HiveKey {
            date: chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap(),
            hour: h,
            granularity: crate::layout::Granularity::Hour,
            extras: vec![],
        };
        let set = |n: usize, tag: &str| -> IdSet {
            (0..n).map(|i| IdKey::of(&format!("{tag}{i}"))).collect()
        };
        let mut index = Index::new(10);
        index.insert(("t".into(), 0, key(0)), set(4, "a"));
        index.insert(("t".into(), 0, key(1)), set(4, "b"));
        assert!(index.get(&("t".into(), 0, key(0))).is_some()); // a is used
        index.insert(("t".into(), 1, key(2)), set(4, "c"));
        assert_eq!(index.len(), 8);
        assert!(index.get(&("t".into(), 0, key(1))).is_none(), "b went");
        index.extend(
            &("t".into(), 0, key(0)),
            vec![IdKey::of("a9"), IdKey::of("a0")],
        );
        assert_eq!(index.len(), 9);
        index.forget("t", 0);
        assert_eq!(index.len(), 4);
    }
}
