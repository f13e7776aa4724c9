//! Subjects, versions and schema ids, with Confluent's semantics, persisted to
//! one JSON file.
//!
//! Ids are global: the same schema registered under two subjects gets one id,
//! and an id is never reused, not even after a permanent delete, so data
//! written with it stays readable. A schema is "the same" when its JSON is
//! equal after canonicalisation (whitespace and key order do not matter).
//!
//! Every change is made to a copy of the state. The copy is written to a
//! temporary file, fsynced, renamed over the data file and the directory is
//! fsynced; only then does the copy replace the state in memory. A failed
//! write therefore changes nothing: the client gets 50001 and a retry makes
//! the whole change again instead of answering 200 for a change that is not
//! on disk. A crash or power loss leaves the old file or the new one, never
//! a mix. One case stays ambiguous, as a timeout would: when only the
//! directory fsync fails, the client is told the change failed, yet the new
//! file may survive a restart.
//!
//! A data file is checked when it is opened. One that refers to schema ids it
//! does not hold, holds a schema that is not Avro or would hand out an id
//! twice stops start-up with the file's name and the problem, instead of
//! failing requests later.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use apache_avro::schema_compatibility::{Compatibility as AvroCompat, SchemaCompatibility};
use apache_avro::Schema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::RegistryError;

/// Compatibility levels, as Confluent names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Level {
    /// No checks.
    None,
    /// New schema can read data written with the latest one.
    Backward,
    /// New schema can read data written with every earlier one.
    BackwardTransitive,
    /// Latest schema can read data written with the new one.
    Forward,
    /// Every earlier schema can read data written with the new one.
    ForwardTransitive,
    /// Backward and forward against the latest.
    Full,
    /// Backward and forward against all.
    FullTransitive,
}

impl std::str::FromStr for Level {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(Value::String(s.to_ascii_uppercase())).map_err(|_| {
            RegistryError::InvalidCompatibility(format!(
                "Invalid compatibility level {s:?}; valid values are NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE"
            ))
        })
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Level::None => "NONE",
            Level::Backward => "BACKWARD",
            Level::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Level::Forward => "FORWARD",
            Level::ForwardTransitive => "FORWARD_TRANSITIVE",
            Level::Full => "FULL",
            Level::FullTransitive => "FULL_TRANSITIVE",
        })
    }
}

impl Level {
    fn transitive(self) -> bool {
        matches!(
            self,
            Level::BackwardTransitive | Level::ForwardTransitive | Level::FullTransitive
        )
    }
    fn backward(self) -> bool {
        matches!(
            self,
            Level::Backward | Level::BackwardTransitive | Level::Full | Level::FullTransitive
        )
    }
    fn forward(self) -> bool {
        matches!(
            self,
            Level::Forward | Level::ForwardTransitive | Level::Full | Level::FullTransitive
        )
    }
}

/// A version as named in a path: a number, or `latest` (also `-1`), which is
/// the newest version that is not soft-deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionId {
    /// The newest live version.
    Latest,
    /// One version number, 1 to 2^31-1.
    Number(u32),
}

impl std::str::FromStr for VersionId {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("latest") || s == "-1" {
            return Ok(VersionId::Latest);
        }
        s.parse::<i32>()
            .ok()
            .filter(|n| *n > 0)
            .map(|n| VersionId::Number(n.unsigned_abs()))
            .ok_or_else(|| {
                RegistryError::InvalidVersion(format!(
                    "The specified version '{s}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
                ))
            })
    }
}

impl std::fmt::Display for VersionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VersionId::Latest => f.write_str("latest"),
            VersionId::Number(n) => write!(f, "{n}"),
        }
    }
}

/// Which versions a listing sees (Confluent's `deleted` and `deletedOnly`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// Live versions only (the default).
    Exclude,
    /// Live and soft-deleted versions (`deleted=true`).
    Include,
    /// Soft-deleted versions only (`deletedOnly=true`).
    Only,
}

impl Deleted {
    fn admits(self, v: &Version) -> bool {
        match self {
            Deleted::Exclude => !v.deleted,
            Deleted::Include => true,
            Deleted::Only => v.deleted,
        }
    }

    fn including(include_deleted: bool) -> Deleted {
        if include_deleted {
            Deleted::Include
        } else {
            Deleted::Exclude
        }
    }
}

/// One stored schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredSchema {
    /// The schema text as first registered.
    pub schema: String,
    /// Canonical JSON, for identity; recomputed when a file is opened.
    #[serde(default)]
    pub normalized: String,
}

/// One version of a subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    /// 1-based version number.
    pub version: u32,
    /// Global schema id.
    pub id: u32,
    /// Soft-deleted.
    #[serde(default)]
    pub deleted: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Subject {
    /// Ascending by version number.
    #[serde(default)]
    versions: Vec<Version>,
    #[serde(default)]
    compatibility: Option<Level>,
}

/// Everything the registry knows; the data file is this, as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct State {
    next_id: u32,
    schemas: BTreeMap<u32, StoredSchema>,
    subjects: BTreeMap<String, Subject>,
    compatibility: Level,
}

/// A subject's version as returned by the API.
#[derive(Debug, Clone, Serialize)]
pub struct SubjectVersion {
    /// Subject name.
    pub subject: String,
    /// Global id.
    pub id: u32,
    /// Version number.
    pub version: u32,
    /// Schema text.
    pub schema: String,
}

/// The registry state and where it is kept.
pub struct Store {
    state: State,
    /// The data file; `None` keeps everything in memory.
    path: Option<PathBuf>,
    /// `server.compatibility`: the global level of a new data file, and what
    /// `DELETE /config` goes back to.
    default_level: Level,
}

fn parse_avro(schema: &str) -> Result<Schema, RegistryError> {
    Schema::parse_str(schema)
        .map_err(|e| RegistryError::InvalidSchema(format!("Invalid schema: {e}")))
}

/// `schema` as JSON with object keys sorted and no whitespace.
fn canonical(schema: &str) -> Result<String, RegistryError> {
    let value: Value = serde_json::from_str(schema)
        .map_err(|e| RegistryError::InvalidSchema(format!("Invalid schema: not JSON: {e}")))?;
    let mut out = String::with_capacity(schema.len());
    write_canonical(&value, &mut out);
    Ok(out)
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Why `reader` cannot read data written with `writer`, if it cannot.
fn incompatibility(writer: &Schema, reader: &Schema) -> Option<String> {
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(AvroCompat::Full) => None,
        Ok(AvroCompat::Partial) => Some(
            "reader can only read part of the writer's values (enum symbols or union branches missing)"
                .into(),
        ),
        Err(e) => Some(e.to_string()),
    }
}

/// `path` plus `.tmp`, in the same directory so the rename is atomic.
fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(OsString::from).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Replaces `path` with `bytes` so that a crash at any point leaves either
/// the old content or the new one: write and fsync a temporary file, rename
/// it over `path`, fsync the directory so the rename itself is durable.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let tmp = temp_path(path);
    let replaced = File::create(&tmp)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if replaced.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    replaced?;
    File::open(dir)?.sync_all()
}

impl State {
    fn new(level: Level) -> State {
        State {
            next_id: 1,
            schemas: BTreeMap::new(),
            subjects: BTreeMap::new(),
            compatibility: level,
        }
    }

    /// Reads and checks a data file; every error names the file.
    fn load(path: &Path, text: &str) -> Result<State, RegistryError> {
        let unusable = |problem: String| {
            RegistryError::Storage(format!(
                "{} is not a usable registry state file: {problem}",
                path.display()
            ))
        };
        let mut state: State = serde_json::from_str(text).map_err(|e| unusable(e.to_string()))?;
        state.check_and_normalise().map_err(unusable)?;
        Ok(state)
    }

    /// Checks what the rest of the store relies on (every version's schema id
    /// exists, ids are never handed out twice, stored schemas are Avro) and
    /// sorts versions and recomputes canonical forms, which a hand edit may
    /// have left stale.
    fn check_and_normalise(&mut self) -> Result<(), String> {
        if self.next_id == 0 {
            return Err("next_id is 0; schema ids start at 1".into());
        }
        for (id, stored) in self.schemas.iter_mut() {
            if *id == 0 {
                return Err("schema id 0 is not valid; ids start at 1".into());
            }
            parse_avro(&stored.schema)
                .map_err(|e| format!("schema id {id} is not a valid Avro schema: {e}"))?;
            stored.normalized = canonical(&stored.schema).map_err(|e| e.to_string())?;
        }
        if let Some(max) = self.schemas.keys().next_back() {
            if self.next_id <= *max {
                return Err(format!(
                    "next_id is {} but schema id {max} exists, so ids would be handed out twice (next_id must be at least {})",
                    self.next_id,
                    u64::from(*max) + 1
                ));
            }
        }
        let schemas = &self.schemas;
        for (name, subject) in self.subjects.iter_mut() {
            subject.versions.sort_by_key(|v| v.version);
            for v in &subject.versions {
                if v.version == 0 {
                    return Err(format!(
                        "subject {name:?} has version 0; versions start at 1"
                    ));
                }
                if !schemas.contains_key(&v.id) {
                    return Err(format!(
                        "subject {name:?} version {} refers to schema id {}, which the file does not hold",
                        v.version, v.id
                    ));
                }
            }
            if let Some(pair) = subject
                .versions
                .windows(2)
                .find(|pair| pair[0].version == pair[1].version)
            {
                return Err(format!(
                    "subject {name:?} has version {} more than once",
                    pair[0].version
                ));
            }
        }
        Ok(())
    }

    fn level(&self, subject: &str) -> Level {
        self.subjects
            .get(subject)
            .and_then(|s| s.compatibility)
            .unwrap_or(self.compatibility)
    }

    /// Versions of `subject` that `filter` admits, oldest first.
    fn versions_of<'a>(
        &'a self,
        subject: &str,
        filter: Deleted,
    ) -> impl DoubleEndedIterator<Item = &'a Version> + 'a {
        self.subjects
            .get(subject)
            .map(|s| s.versions.as_slice())
            .unwrap_or_default()
            .iter()
            .filter(move |v| filter.admits(v))
    }

    fn has_versions(&self, subject: &str, filter: Deleted) -> bool {
        self.versions_of(subject, filter).next().is_some()
    }

    fn stored(&self, id: u32) -> Result<&StoredSchema, RegistryError> {
        // Checked when the file was opened and kept true by every change.
        self.schemas.get(&id).ok_or_else(|| {
            RegistryError::Storage(format!(
                "the state refers to schema id {id}, which it does not hold"
            ))
        })
    }

    fn subject_version(&self, subject: &str, v: &Version) -> Result<SubjectVersion, RegistryError> {
        Ok(SubjectVersion {
            subject: subject.to_string(),
            id: v.id,
            version: v.version,
            schema: self.stored(v.id)?.schema.clone(),
        })
    }

    /// The version `version` names: `latest` is the newest live version; a
    /// number may name a soft-deleted one when `include_deleted`.
    fn resolve(
        &self,
        subject: &str,
        version: VersionId,
        include_deleted: bool,
    ) -> Result<&Version, RegistryError> {
        let found = match version {
            VersionId::Latest => self.versions_of(subject, Deleted::Exclude).next_back(),
            VersionId::Number(n) => self
                .versions_of(subject, Deleted::including(include_deleted))
                .find(|v| v.version == n),
        };
        found.ok_or_else(|| {
            if self.has_versions(subject, Deleted::including(include_deleted)) {
                RegistryError::VersionNotFound {
                    subject: subject.to_string(),
                    version: version.to_string(),
                }
            } else {
                RegistryError::SubjectNotFound(subject.to_string())
            }
        })
    }

    /// The newest version of `subject` admitted by `filter` whose schema has
    /// canonical form `key`.
    fn find(&self, subject: &str, key: &str, filter: Deleted) -> Option<&Version> {
        self.versions_of(subject, filter)
            .rev()
            .find(|v| self.schemas.get(&v.id).is_some_and(|s| s.normalized == key))
    }

    fn lookup(
        &self,
        subject: &str,
        schema: &str,
        include_deleted: bool,
    ) -> Result<SubjectVersion, RegistryError> {
        parse_avro(schema)?;
        let key = canonical(schema)?;
        let filter = Deleted::including(include_deleted);
        match self.find(subject, &key, filter) {
            Some(v) => self.subject_version(subject, v),
            None if self.has_versions(subject, filter) => Err(RegistryError::SchemaNotFound(None)),
            None => Err(RegistryError::SubjectNotFound(subject.to_string())),
        }
    }

    fn check(
        &self,
        subject: &str,
        candidate: &str,
        against: Option<VersionId>,
    ) -> Result<Vec<String>, RegistryError> {
        let level = self.level(subject);
        let live: Vec<&Version> = self.versions_of(subject, Deleted::Exclude).collect();
        let targets: Vec<&Version> = match against {
            Some(VersionId::Number(n)) => {
                let v = live
                    .iter()
                    .find(|v| v.version == n)
                    .copied()
                    .ok_or_else(|| RegistryError::VersionNotFound {
                        subject: subject.to_string(),
                        version: n.to_string(),
                    })?;
                vec![v]
            }
            // Nothing registered yet: anything valid is compatible.
            Some(VersionId::Latest) => live.last().copied().into_iter().collect(),
            None if level.transitive() => live,
            None => live.last().copied().into_iter().collect(),
        };
        let new = parse_avro(candidate)?;
        let mut problems = Vec::new();
        if level == Level::None {
            return Ok(problems);
        }
        for target in targets {
            let old = Schema::parse_str(&self.stored(target.id)?.schema).map_err(|e| {
                RegistryError::Storage(format!(
                    "stored schema id {} does not parse: {e}",
                    target.id
                ))
            })?;
            if level.backward() {
                if let Some(why) = incompatibility(&old, &new) {
                    problems.push(format!(
                        "new schema cannot read data written with version {}: {why}",
                        target.version
                    ));
                }
            }
            if level.forward() {
                if let Some(why) = incompatibility(&new, &old) {
                    problems.push(format!(
                        "version {} cannot read data written with the new schema: {why}",
                        target.version
                    ));
                }
            }
        }
        Ok(problems)
    }

    fn register(&mut self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        parse_avro(schema)?;
        let key = canonical(schema)?;
        if let Some(existing) = self.find(subject, &key, Deleted::Exclude) {
            return Ok(existing.id);
        }
        let problems = self.check(subject, schema, None)?;
        if !problems.is_empty() {
            return Err(RegistryError::Incompatible(format!(
                "Schema being registered is incompatible with an earlier schema for subject \"{subject}\" ({}), details: {}",
                self.level(subject),
                problems.join("; ")
            )));
        }
        let id = match self.schemas.iter().find(|(_, s)| s.normalized == key) {
            Some((id, _)) => *id,
            None => {
                let id = self.next_id;
                self.next_id = id
                    .checked_add(1)
                    .ok_or_else(|| RegistryError::Storage("schema ids are exhausted".into()))?;
                self.schemas.insert(
                    id,
                    StoredSchema {
                        schema: schema.to_string(),
                        normalized: key,
                    },
                );
                id
            }
        };
        let entry = self.subjects.entry(subject.to_string()).or_default();
        let version = entry.versions.last().map_or(0, |v| v.version) + 1;
        entry.versions.push(Version {
            version,
            id,
            deleted: false,
        });
        Ok(id)
    }

    fn delete_subject(
        &mut self,
        subject: &str,
        permanent: bool,
    ) -> Result<Vec<u32>, RegistryError> {
        if !self.has_versions(subject, Deleted::Include) {
            return Err(RegistryError::SubjectNotFound(subject.to_string()));
        }
        let live: Vec<u32> = self
            .versions_of(subject, Deleted::Exclude)
            .map(|v| v.version)
            .collect();
        match (permanent, live.is_empty()) {
            (true, false) => Err(RegistryError::SubjectNotSoftDeleted(subject.to_string())),
            (false, true) => Err(RegistryError::SubjectSoftDeleted(subject.to_string())),
            (true, true) => Ok(self
                .subjects
                .remove(subject)
                .map(|s| s.versions.iter().map(|v| v.version).collect())
                .unwrap_or_default()),
            (false, false) => {
                if let Some(entry) = self.subjects.get_mut(subject) {
                    entry.versions.iter_mut().for_each(|v| v.deleted = true);
                    // As Confluent does: a deleted subject loses its own level.
                    entry.compatibility = None;
                }
                Ok(live)
            }
        }
    }

    fn delete_version(
        &mut self,
        subject: &str,
        version: VersionId,
        permanent: bool,
    ) -> Result<u32, RegistryError> {
        let target = self.resolve(subject, version, true)?.clone();
        if permanent && !target.deleted {
            return Err(RegistryError::VersionNotSoftDeleted {
                subject: subject.to_string(),
                version: target.version,
            });
        }
        if !permanent && target.deleted {
            return Err(RegistryError::VersionSoftDeleted {
                subject: subject.to_string(),
                version: target.version,
            });
        }
        let Some(entry) = self.subjects.get_mut(subject) else {
            return Err(RegistryError::SubjectNotFound(subject.to_string()));
        };
        if permanent {
            entry.versions.retain(|v| v.version != target.version);
            if entry.versions.is_empty() && entry.compatibility.is_none() {
                self.subjects.remove(subject);
            }
        } else {
            for v in entry
                .versions
                .iter_mut()
                .filter(|v| v.version == target.version)
            {
                v.deleted = true;
            }
            if entry.versions.iter().all(|v| v.deleted) {
                entry.compatibility = None;
            }
        }
        Ok(target.version)
    }

    fn set_subject_level(&mut self, subject: &str, level: Level) {
        self.subjects
            .entry(subject.to_string())
            .or_default()
            .compatibility = Some(level);
    }

    fn clear_subject_level(&mut self, subject: &str) -> Result<Level, RegistryError> {
        let entry = self.subjects.get_mut(subject);
        let previous = entry
            .and_then(|s| s.compatibility.take())
            .ok_or_else(|| RegistryError::SubjectConfigNotFound(subject.to_string()))?;
        if self
            .subjects
            .get(subject)
            .is_some_and(|s| s.versions.is_empty())
        {
            self.subjects.remove(subject);
        }
        Ok(previous)
    }
}

impl Store {
    /// Opens the store at `path` (created on first write), or an in-memory one.
    ///
    /// `default_level` is the global level of a new file. An existing file
    /// keeps its own (set with `PUT /config`); when the two differ that is
    /// logged, since `server.compatibility` then has no effect.
    pub fn open(path: Option<&Path>, default_level: Level) -> Result<Store, RegistryError> {
        let state = match path {
            None => State::new(default_level),
            Some(p) => match std::fs::read_to_string(p) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::info!(data_file = %p.display(), compatibility = %default_level, "no data file yet; it is created on the first change");
                    State::new(default_level)
                }
                Err(e) => {
                    return Err(RegistryError::Storage(format!(
                        "reading {}: {e}",
                        p.display()
                    )))
                }
                Ok(text) => {
                    let state = State::load(p, &text)?;
                    if state.compatibility != default_level {
                        tracing::warn!(
                            data_file = %p.display(),
                            file = %state.compatibility,
                            configured = %default_level,
                            "server.compatibility is ignored: the data file keeps its global compatibility level; change it with PUT /config"
                        );
                    } else {
                        tracing::info!(data_file = %p.display(), subjects = state.subjects.len(), schemas = state.schemas.len(), "registry state loaded");
                    }
                    state
                }
            },
        };
        Ok(Store {
            state,
            path: path.map(Path::to_path_buf),
            default_level,
        })
    }

    /// Applies `change` to a copy of the state, persists the copy and only
    /// then makes it the state: on any error nothing has changed.
    fn change<T>(
        &mut self,
        change: impl FnOnce(&mut State) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let mut next = self.state.clone();
        let out = change(&mut next)?;
        if next != self.state {
            if let Some(path) = &self.path {
                let text = serde_json::to_vec_pretty(&next)
                    .map_err(|e| RegistryError::Storage(e.to_string()))?;
                write_atomically(path, &text).map_err(|e| {
                    RegistryError::Storage(format!("writing {}: {e}", path.display()))
                })?;
            }
            self.state = next;
        }
        Ok(out)
    }

    /// Effective compatibility of `subject`.
    pub fn level(&self, subject: &str) -> Level {
        self.state.level(subject)
    }

    /// Subject-level setting only.
    pub fn subject_level(&self, subject: &str) -> Option<Level> {
        self.state
            .subjects
            .get(subject)
            .and_then(|s| s.compatibility)
    }

    /// Global level.
    pub fn global_level(&self) -> Level {
        self.state.compatibility
    }

    /// Sets the global level.
    pub fn set_global_level(&mut self, level: Level) -> Result<(), RegistryError> {
        self.change(|s| {
            s.compatibility = level;
            Ok(())
        })
    }

    /// Puts the global level back to `server.compatibility`; returns the old one.
    pub fn reset_global_level(&mut self) -> Result<Level, RegistryError> {
        let default = self.default_level;
        self.change(|s| Ok(std::mem::replace(&mut s.compatibility, default)))
    }

    /// Sets a subject's own level.
    pub fn set_subject_level(&mut self, subject: &str, level: Level) -> Result<(), RegistryError> {
        self.change(|s| {
            s.set_subject_level(subject, level);
            Ok(())
        })
    }

    /// Removes a subject's own level, returning it (40408 when it has none).
    pub fn clear_subject_level(&mut self, subject: &str) -> Result<Level, RegistryError> {
        self.change(|s| s.clear_subject_level(subject))
    }

    /// Why `candidate` may not be registered under `subject` at its level:
    /// checked against version `against` (`latest` of a subject without
    /// versions passes), or with `None` against the versions the level names.
    pub fn check(
        &self,
        subject: &str,
        candidate: &str,
        against: Option<VersionId>,
    ) -> Result<Vec<String>, RegistryError> {
        self.state.check(subject, candidate, against)
    }

    /// Registers `schema` under `subject`, returning its global id. An
    /// identical schema already live under the subject returns its id
    /// unchanged (and writes nothing).
    pub fn register(&mut self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        self.change(|s| s.register(subject, schema))
    }

    /// The version of `subject` holding `schema` (the newest, if several).
    pub fn lookup(
        &self,
        subject: &str,
        schema: &str,
        include_deleted: bool,
    ) -> Result<SubjectVersion, RegistryError> {
        self.state.lookup(subject, schema, include_deleted)
    }

    /// Schema by global id (ids are kept after deletes).
    pub fn schema(&self, id: i64) -> Result<&StoredSchema, RegistryError> {
        u32::try_from(id)
            .ok()
            .and_then(|id| self.state.schemas.get(&id))
            .ok_or(RegistryError::SchemaNotFound(Some(id)))
    }

    /// Subjects with at least one version `filter` admits, optionally only
    /// those starting with `prefix`.
    pub fn subjects(&self, filter: Deleted, prefix: Option<&str>) -> Vec<String> {
        self.state
            .subjects
            .iter()
            .filter(|(name, s)| {
                prefix.is_none_or(|p| name.starts_with(p))
                    && s.versions.iter().any(|v| filter.admits(v))
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Version numbers of `subject` that `filter` admits; 40401 when the
    /// subject has no version at all (no live one, unless deleted ones count).
    pub fn versions(&self, subject: &str, filter: Deleted) -> Result<Vec<u32>, RegistryError> {
        let exists = match filter {
            Deleted::Exclude => Deleted::Exclude,
            Deleted::Include | Deleted::Only => Deleted::Include,
        };
        if !self.state.has_versions(subject, exists) {
            return Err(RegistryError::SubjectNotFound(subject.to_string()));
        }
        Ok(self
            .state
            .versions_of(subject, filter)
            .map(|v| v.version)
            .collect())
    }

    /// One version (40401 or 40402 when there is none).
    pub fn version(
        &self,
        subject: &str,
        version: VersionId,
        include_deleted: bool,
    ) -> Result<SubjectVersion, RegistryError> {
        let v = self.state.resolve(subject, version, include_deleted)?;
        self.state.subject_version(subject, v)
    }

    /// Subjects and versions using schema `id`, optionally of one subject
    /// only (40403 when there is no such schema).
    pub fn usages(
        &self,
        id: i64,
        include_deleted: bool,
        subject: Option<&str>,
    ) -> Result<Vec<(String, u32)>, RegistryError> {
        self.schema(id)?;
        let filter = Deleted::including(include_deleted);
        Ok(self
            .state
            .subjects
            .iter()
            .filter(|(name, _)| subject.is_none_or(|s| s == name.as_str()))
            .flat_map(|(name, s)| {
                s.versions
                    .iter()
                    .filter(move |v| i64::from(v.id) == id && filter.admits(v))
                    .map(move |v| (name.clone(), v.version))
            })
            .collect())
    }

    /// Soft-deletes a subject (40404 if it already is), or with `permanent`
    /// removes a soft-deleted one (40405 if it is not); returns the versions
    /// affected.
    pub fn delete_subject(
        &mut self,
        subject: &str,
        permanent: bool,
    ) -> Result<Vec<u32>, RegistryError> {
        self.change(|s| s.delete_subject(subject, permanent))
    }

    /// Soft-deletes one version (40406 if it already is), or with `permanent`
    /// removes a soft-deleted one (40407 if it is not); returns its number.
    pub fn delete_version(
        &mut self,
        subject: &str,
        version: VersionId,
        permanent: bool,
    ) -> Result<u32, RegistryError> {
        self.change(|s| s.delete_version(subject, version, permanent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}"#;
    const V2_WITH_DEFAULT: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"b","type":"string","default":""}]}"#;
    const V2_NO_DEFAULT: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"b","type":"string"}]}"#;
    const V3: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"b","type":"string","default":""},{"name":"c","type":"long","default":0}]}"#;

    fn code(e: &RegistryError) -> &'static str {
        match e {
            RegistryError::SubjectNotFound(_) => "40401",
            RegistryError::VersionNotFound { .. } => "40402",
            RegistryError::SchemaNotFound(_) => "40403",
            RegistryError::SubjectSoftDeleted(_) => "40404",
            RegistryError::SubjectNotSoftDeleted(_) => "40405",
            RegistryError::VersionSoftDeleted { .. } => "40406",
            RegistryError::VersionNotSoftDeleted { .. } => "40407",
            RegistryError::SubjectConfigNotFound(_) => "40408",
            RegistryError::InvalidSchema(_) => "42201",
            RegistryError::InvalidVersion(_) => "42202",
            RegistryError::Incompatible(_) => "409",
            RegistryError::Storage(_) => "50001",
            _ => "other",
        }
    }

    fn file_store(dir: &Path) -> (PathBuf, Store) {
        let path = dir.join("reg.json");
        let store = Store::open(Some(&path), Level::Backward).unwrap();
        (path, store)
    }

    /// Makes every write of `path` fail, whoever runs the test (root
    /// ignores permissions): a directory where the temporary file goes.
    fn block_writes(path: &Path) -> PathBuf {
        let blocker = temp_path(path);
        std::fs::create_dir(&blocker).unwrap();
        blocker
    }

    #[test]
    fn same_schema_same_id_across_subjects_whitespace_and_key_order() {
        let mut s = Store::open(None, Level::Backward).unwrap();
        let a = s.register("x-value", V1).unwrap();
        let spaced = V1.replace(',', " , ");
        assert_eq!(s.register("x-value", &spaced).unwrap(), a);
        let reordered = r#"{"fields":[{"type":"int","name":"a"}],"name":"R","type":"record"}"#;
        assert_eq!(s.register("x-value", reordered).unwrap(), a);
        assert_eq!(s.register("y-value", V1).unwrap(), a);
        assert_eq!(s.versions("x-value", Deleted::Exclude).unwrap(), vec![1]);
    }

    #[test]
    fn backward_rejects_new_field_without_default() {
        let mut s = Store::open(None, Level::Backward).unwrap();
        s.register("t-value", V1).unwrap();
        let err = s.register("t-value", V2_NO_DEFAULT).unwrap_err();
        assert!(matches!(err, RegistryError::Incompatible(_)), "{err}");
        let id = s.register("t-value", V2_WITH_DEFAULT).unwrap();
        assert_eq!(
            s.version("t-value", VersionId::Latest, false).unwrap().id,
            id
        );
        assert_eq!(s.versions("t-value", Deleted::Exclude).unwrap(), vec![1, 2]);
    }

    #[test]
    fn forward_and_none_levels() {
        let mut s = Store::open(None, Level::Forward).unwrap();
        s.register("f-value", V2_NO_DEFAULT).unwrap();
        // Old readers need `b`, which the new schema no longer writes and has no default.
        assert!(s.register("f-value", V1).is_err());
        s.set_subject_level("f-value", Level::None).unwrap();
        assert!(s.register("f-value", V1).is_ok());
    }

    #[test]
    fn invalid_schema_is_rejected() {
        let mut s = Store::open(None, Level::Backward).unwrap();
        for bad in ["{\"type\":\"nope\"}", "not json"] {
            let err = s.register("x", bad).unwrap_err();
            assert_eq!(code(&err), "42201", "{err}");
        }
        assert!(s.subjects(Deleted::Include, None).is_empty());
    }

    #[test]
    fn version_ids_parse_like_confluent() {
        assert_eq!("latest".parse::<VersionId>().unwrap(), VersionId::Latest);
        assert_eq!("-1".parse::<VersionId>().unwrap(), VersionId::Latest);
        assert_eq!("7".parse::<VersionId>().unwrap(), VersionId::Number(7));
        for bad in ["0", "-2", "abc", "2147483648", "1.5", ""] {
            let err = bad.parse::<VersionId>().unwrap_err();
            assert_eq!(code(&err), "42202", "{bad:?}");
        }
    }

    #[test]
    fn state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut s) = file_store(dir.path());
        s.set_subject_level("t-value", Level::Full).unwrap();
        let id = s.register("t-value", V1).unwrap();
        drop(s);
        let mut s = Store::open(Some(&path), Level::Backward).unwrap();
        assert_eq!(s.schema(i64::from(id)).unwrap().schema, V1);
        assert_eq!(s.level("t-value"), Level::Full);
        let id2 = s.register("u-value", V2_WITH_DEFAULT).unwrap();
        assert!(id2 > id, "ids keep increasing after restart");
    }

    #[test]
    fn failed_write_changes_nothing_and_a_retry_fails_again() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut s) = file_store(dir.path());
        let id1 = s.register("t-value", V1).unwrap();
        let blocker = block_writes(&path);

        for _ in 0..2 {
            let err = s.register("t-value", V2_WITH_DEFAULT).unwrap_err();
            assert_eq!(code(&err), "50001", "{err}");
            assert!(err.to_string().contains("reg.json"), "{err}");
            assert_eq!(s.versions("t-value", Deleted::Include).unwrap(), vec![1]);
            assert_eq!(
                code(&s.lookup("t-value", V2_WITH_DEFAULT, true).unwrap_err()),
                "40403"
            );
        }
        assert_eq!(code(&s.set_global_level(Level::None).unwrap_err()), "50001");
        assert_eq!(s.global_level(), Level::Backward);
        assert_eq!(
            code(&s.delete_subject("t-value", false).unwrap_err()),
            "50001"
        );
        assert_eq!(s.versions("t-value", Deleted::Exclude).unwrap(), vec![1]);
        assert_eq!(
            code(&s.set_subject_level("t-value", Level::Full).unwrap_err()),
            "50001"
        );
        assert_eq!(s.subject_level("t-value"), None);
        // Nothing to write: answers without touching the disk.
        assert_eq!(s.register("t-value", V1).unwrap(), id1);

        std::fs::remove_dir(&blocker).unwrap();
        let id2 = s.register("t-value", V2_WITH_DEFAULT).unwrap();
        assert_eq!(id2, id1 + 1, "the failed attempts used up no id");
        let reopened = Store::open(Some(&path), Level::Backward).unwrap();
        assert_eq!(
            reopened.versions("t-value", Deleted::Exclude).unwrap(),
            vec![1, 2]
        );
        assert_eq!(
            reopened.schema(i64::from(id2)).unwrap().schema,
            V2_WITH_DEFAULT
        );
        assert!(!temp_path(&path).exists());
    }

    #[test]
    fn a_leftover_temporary_file_is_ignored_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut s) = file_store(dir.path());
        let id = s.register("t-value", V1).unwrap();
        std::fs::write(temp_path(&path), b"{\"half\": ").unwrap();
        let mut s = Store::open(Some(&path), Level::Backward).unwrap();
        assert_eq!(s.schema(i64::from(id)).unwrap().schema, V1);
        s.register("u-value", V2_WITH_DEFAULT).unwrap();
        assert!(!temp_path(&path).exists());
        Store::open(Some(&path), Level::Backward).unwrap();
    }

    fn open_text(text: &str) -> Result<Store, RegistryError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.json");
        std::fs::write(&path, text).unwrap();
        Store::open(Some(&path), Level::Backward)
    }

    fn state_text(next_id: u32, schema: &str, versions: &str) -> String {
        let schema = serde_json::to_string(schema).unwrap();
        format!(
            r#"{{"next_id":{next_id},"schemas":{{"1":{{"schema":{schema},"normalized":""}}}},"subjects":{{"t-value":{{"versions":{versions},"compatibility":null}}}},"compatibility":"BACKWARD"}}"#
        )
    }

    #[test]
    fn corrupt_state_files_fail_with_the_file_and_the_problem() {
        let ok = r#"[{"version":1,"id":1}]"#;
        assert!(open_text(&state_text(2, V1, ok)).is_ok());
        let cases = [
            (
                state_text(2, V1, r#"[{"version":1,"id":1},{"version":2,"id":7}]"#),
                "version 2 refers to schema id 7",
            ),
            (state_text(1, V1, ok), "next_id is 1 but schema id 1 exists"),
            (
                state_text(2, r#"{"type":"nope"}"#, ok),
                "schema id 1 is not a valid Avro schema",
            ),
            (
                state_text(2, V1, r#"[{"version":1,"id":1},{"version":1,"id":1}]"#),
                "version 1 more than once",
            ),
            (state_text(2, V1, r#"[{"version":0,"id":1}]"#), "version 0"),
            ("{\"next_id\": 1,".to_string(), "EOF"),
            ("[]".to_string(), "expected struct State"),
        ];
        for (text, problem) in cases {
            let err = open_text(&text)
                .err()
                .expect("a corrupt file must not open");
            let msg = err.to_string();
            assert!(
                msg.contains("bad.json") && msg.contains(problem),
                "{problem}: {msg}"
            );
        }
    }

    #[test]
    fn hand_edited_files_are_normalised() {
        // Versions out of order and canonical forms missing.
        let text = format!(
            r#"{{"next_id":3,"schemas":{{"1":{{"schema":{}}},"2":{{"schema":{}}}}},"subjects":{{"t-value":{{"versions":[{{"version":2,"id":2}},{{"version":1,"id":1}}]}}}},"compatibility":"BACKWARD"}}"#,
            serde_json::to_string(V1).unwrap(),
            serde_json::to_string(V2_WITH_DEFAULT).unwrap()
        );
        let mut s = open_text(&text).unwrap();
        assert_eq!(
            s.version("t-value", VersionId::Latest, false).unwrap().id,
            2
        );
        assert_eq!(s.register("t-value", V2_WITH_DEFAULT).unwrap(), 2);
        assert_eq!(s.lookup("t-value", V1, false).unwrap().version, 1);
    }

    #[test]
    fn subject_delete_codes_follow_confluent() {
        let mut s = Store::open(None, Level::Backward).unwrap();
        assert_eq!(
            code(&s.delete_subject("d-value", false).unwrap_err()),
            "40401"
        );
        assert_eq!(
            code(&s.delete_subject("d-value", true).unwrap_err()),
            "40401"
        );
        let id = s.register("d-value", V1).unwrap();
        s.register("d-value", V2_WITH_DEFAULT).unwrap();
        s.set_subject_level("d-value", Level::Full).unwrap();

        assert_eq!(
            code(&s.delete_subject("d-value", true).unwrap_err()),
            "40405"
        );
        assert_eq!(s.delete_subject("d-value", false).unwrap(), vec![1, 2]);
        assert_eq!(
            code(&s.delete_subject("d-value", false).unwrap_err()),
            "40404"
        );
        assert_eq!(
            s.subject_level("d-value"),
            None,
            "soft delete drops the subject's level"
        );
        assert!(s.subjects(Deleted::Exclude, None).is_empty());
        assert_eq!(s.subjects(Deleted::Include, None), vec!["d-value"]);
        assert_eq!(s.subjects(Deleted::Only, None), vec!["d-value"]);
        assert_eq!(
            code(&s.versions("d-value", Deleted::Exclude).unwrap_err()),
            "40401"
        );
        assert_eq!(s.versions("d-value", Deleted::Include).unwrap(), vec![1, 2]);
        assert_eq!(
            code(
                &s.version("d-value", VersionId::Number(1), false)
                    .unwrap_err()
            ),
            "40401"
        );
        assert_eq!(
            s.version("d-value", VersionId::Number(1), true).unwrap().id,
            id
        );
        assert_eq!(s.lookup("d-value", V1, true).unwrap().version, 1);
        assert_eq!(code(&s.lookup("d-value", V1, false).unwrap_err()), "40401");

        // Re-registering after a soft delete continues the numbering.
        s.register("d-value", V1).unwrap();
        assert_eq!(s.versions("d-value", Deleted::Exclude).unwrap(), vec![3]);
        s.delete_subject("d-value", false).unwrap();
        assert_eq!(s.delete_subject("d-value", true).unwrap(), vec![1, 2, 3]);
        assert_eq!(
            code(&s.versions("d-value", Deleted::Include).unwrap_err()),
            "40401"
        );
        assert!(
            s.schema(i64::from(id)).is_ok(),
            "ids outlive their subjects"
        );
        assert_eq!(s.register("d-value", V1).unwrap(), id);
        assert_eq!(s.versions("d-value", Deleted::Exclude).unwrap(), vec![1]);
    }

    #[test]
    fn version_delete_codes_follow_confluent() {
        let mut s = Store::open(None, Level::Backward).unwrap();
        let latest = VersionId::Latest;
        assert_eq!(
            code(
                &s.delete_version("v-value", VersionId::Number(1), false)
                    .unwrap_err()
            ),
            "40401"
        );
        assert_eq!(
            code(&s.delete_version("v-value", latest, true).unwrap_err()),
            "40401"
        );
        s.register("v-value", V1).unwrap();
        s.register("v-value", V2_WITH_DEFAULT).unwrap();
        s.register("v-value", V3).unwrap();
        s.set_subject_level("v-value", Level::Backward).unwrap();

        assert_eq!(
            code(
                &s.delete_version("v-value", VersionId::Number(9), false)
                    .unwrap_err()
            ),
            "40402"
        );
        assert_eq!(
            code(
                &s.delete_version("v-value", VersionId::Number(2), true)
                    .unwrap_err()
            ),
            "40407"
        );
        assert_eq!(
            s.delete_version("v-value", VersionId::Number(2), false)
                .unwrap(),
            2
        );
        assert_eq!(
            code(
                &s.delete_version("v-value", VersionId::Number(2), false)
                    .unwrap_err()
            ),
            "40406"
        );
        assert_eq!(s.versions("v-value", Deleted::Exclude).unwrap(), vec![1, 3]);
        assert_eq!(s.versions("v-value", Deleted::Only).unwrap(), vec![2]);
        assert_eq!(
            code(
                &s.version("v-value", VersionId::Number(2), false)
                    .unwrap_err()
            ),
            "40402"
        );
        assert_eq!(
            s.version("v-value", VersionId::Number(2), true)
                .unwrap()
                .version,
            2
        );

        assert_eq!(
            s.delete_version("v-value", VersionId::Number(2), true)
                .unwrap(),
            2
        );
        assert_eq!(s.versions("v-value", Deleted::Include).unwrap(), vec![1, 3]);
        assert_eq!(
            code(
                &s.delete_version("v-value", VersionId::Number(2), true)
                    .unwrap_err()
            ),
            "40402"
        );

        assert_eq!(s.delete_version("v-value", latest, false).unwrap(), 3);
        assert_eq!(s.version("v-value", latest, false).unwrap().version, 1);
        assert_eq!(s.subject_level("v-value"), Some(Level::Backward));
        assert_eq!(s.delete_version("v-value", latest, false).unwrap(), 1);
        assert_eq!(
            s.subject_level("v-value"),
            None,
            "the last live version takes the level with it"
        );
        assert_eq!(
            code(&s.delete_version("v-value", latest, false).unwrap_err()),
            "40402"
        );
    }

    #[test]
    fn compatibility_checks_against_missing_versions() {
        let mut s = Store::open(None, Level::Backward).unwrap();
        assert!(s
            .check("new-value", V1, Some(VersionId::Latest))
            .unwrap()
            .is_empty());
        assert_eq!(
            code(
                &s.check("new-value", V1, Some(VersionId::Number(1)))
                    .unwrap_err()
            ),
            "40402"
        );
        s.register("c-value", V1).unwrap();
        assert_eq!(
            s.check("c-value", V2_NO_DEFAULT, Some(VersionId::Latest))
                .unwrap()
                .len(),
            1
        );
        assert!(s
            .check("c-value", V2_WITH_DEFAULT, Some(VersionId::Number(1)))
            .unwrap()
            .is_empty());
        assert_eq!(code(&s.check("c-value", "{", None).unwrap_err()), "42201");
    }

    #[test]
    fn subject_config_clear_and_global_reset() {
        let mut s = Store::open(None, Level::Full).unwrap();
        assert_eq!(
            code(&s.clear_subject_level("k-value").unwrap_err()),
            "40408"
        );
        s.set_subject_level("k-value", Level::None).unwrap();
        assert_eq!(s.clear_subject_level("k-value").unwrap(), Level::None);
        assert_eq!(s.level("k-value"), Level::Full);
        assert_eq!(
            code(&s.delete_subject("k-value", false).unwrap_err()),
            "40401"
        );
        s.set_global_level(Level::Forward).unwrap();
        assert_eq!(s.reset_global_level().unwrap(), Level::Forward);
        assert_eq!(s.global_level(), Level::Full);
    }

    #[test]
    fn usages_by_id() {
        let mut s = Store::open(None, Level::Backward).unwrap();
        let id = i64::from(s.register("a-value", V1).unwrap());
        s.register("b-value", V1).unwrap();
        s.delete_subject("b-value", false).unwrap();
        let live = s.usages(id, false, None).unwrap();
        assert_eq!(live, vec![("a-value".to_string(), 1)]);
        assert_eq!(s.usages(id, true, None).unwrap().len(), 2);
        assert_eq!(
            s.usages(id, true, Some("b-value")).unwrap(),
            vec![("b-value".to_string(), 1)]
        );
        assert_eq!(code(&s.usages(99, true, None).unwrap_err()), "40403");
        assert_eq!(code(&s.schema(-1).unwrap_err()), "40403");
    }
}
