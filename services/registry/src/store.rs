//! Subjects, versions and schema ids, with Confluent's semantics, persisted to
//! one JSON file.
//!
//! Ids are global: the same schema registered under two subjects gets one id.
//! A schema is "the same" when its JSON is equal after normalisation
//! (whitespace and key order do not matter). Every change is written to a
//! temporary file and renamed over the old one, so a crash never leaves a
//! half-written state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use apache_avro::schema_compatibility::{Compatibility as AvroCompat, SchemaCompatibility};
use apache_avro::Schema;
use serde::{Deserialize, Serialize};

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
        serde_json::from_value(serde_json::Value::String(s.to_ascii_uppercase())).map_err(|_| {
            RegistryError::InvalidCompatibility(format!(
                "Invalid compatibility level {s:?}; valid values are NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE"
            ))
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

/// One stored schema.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredSchema {
    /// The schema text as first registered.
    pub schema: String,
    /// Normalised JSON, for identity.
    pub normalized: String,
}

/// One version of a subject.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Version {
    /// 1-based version number.
    pub version: u32,
    /// Global schema id.
    pub id: u32,
    /// Soft-deleted.
    #[serde(default)]
    pub deleted: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Subject {
    versions: Vec<Version>,
    compatibility: Option<Level>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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
    path: Option<PathBuf>,
}

fn normalize(schema: &str) -> Result<String, RegistryError> {
    let value: serde_json::Value = serde_json::from_str(schema)
        .map_err(|e| RegistryError::InvalidSchema(format!("schema is not JSON: {e}")))?;
    Ok(value.to_string())
}

fn parse_avro(schema: &str) -> Result<Schema, RegistryError> {
    Schema::parse_str(schema)
        .map_err(|e| RegistryError::InvalidSchema(format!("Invalid schema: {e}")))
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

impl Store {
    /// Opens the store at `path` (created on first write), or an in-memory one.
    pub fn open(path: Option<&Path>, default_level: Level) -> Result<Store, RegistryError> {
        let fresh = State {
            next_id: 1,
            schemas: BTreeMap::new(),
            subjects: BTreeMap::new(),
            compatibility: default_level,
        };
        let state = match path {
            Some(p) if p.exists() => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| RegistryError::Storage(format!("reading {}: {e}", p.display())))?;
                serde_json::from_str(&text).map_err(|e| {
                    RegistryError::Storage(format!(
                        "{} is not a registry state file: {e}",
                        p.display()
                    ))
                })?
            }
            _ => fresh,
        };
        Ok(Store {
            state,
            path: path.map(Path::to_path_buf),
        })
    }

    fn persist(&self) -> Result<(), RegistryError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| RegistryError::Storage(format!("creating {}: {e}", dir.display())))?;
        }
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(&self.state)
            .map_err(|e| RegistryError::Storage(e.to_string()))?;
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, path))
            .map_err(|e| RegistryError::Storage(format!("writing {}: {e}", path.display())))
    }

    /// Effective compatibility of `subject`.
    pub fn level(&self, subject: &str) -> Level {
        self.state
            .subjects
            .get(subject)
            .and_then(|s| s.compatibility)
            .unwrap_or(self.state.compatibility)
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
        self.state.compatibility = level;
        self.persist()
    }

    /// Sets (or with `None` clears) a subject's level.
    pub fn set_subject_level(
        &mut self,
        subject: &str,
        level: Option<Level>,
    ) -> Result<(), RegistryError> {
        self.state
            .subjects
            .entry(subject.to_string())
            .or_default()
            .compatibility = level;
        self.persist()
    }

    fn live_versions(&self, subject: &str) -> Vec<&Version> {
        self.state
            .subjects
            .get(subject)
            .map(|s| s.versions.iter().filter(|v| !v.deleted).collect())
            .unwrap_or_default()
    }

    /// Why `candidate` may not be registered under `subject` at its level
    /// (checked against `against`, or the versions the level names).
    pub fn check(
        &self,
        subject: &str,
        candidate: &str,
        against: Option<u32>,
    ) -> Result<Vec<String>, RegistryError> {
        let new = parse_avro(candidate)?;
        let level = self.level(subject);
        let live = self.live_versions(subject);
        let targets: Vec<&Version> = match against {
            Some(v) => live.into_iter().filter(|x| x.version == v).collect(),
            None if level.transitive() => live,
            None => live.last().copied().into_iter().collect(),
        };
        let mut problems = Vec::new();
        if level == Level::None {
            return Ok(problems);
        }
        for target in targets {
            let old = parse_avro(&self.state.schemas[&target.id].schema)?;
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

    /// Registers `schema` under `subject`, returning its global id. An
    /// identical schema already under the subject returns its id unchanged.
    pub fn register(&mut self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let normalized = normalize(schema)?;
        parse_avro(schema)?;
        if let Some(existing) = self.lookup(subject, schema)? {
            return Ok(existing.id);
        }
        let problems = self.check(subject, schema, None)?;
        if !problems.is_empty() {
            return Err(RegistryError::Incompatible(format!(
                "Schema being registered is incompatible with an earlier schema for subject \"{subject}\" ({:?}): {}",
                self.level(subject),
                problems.join("; ")
            )));
        }
        let id = match self
            .state
            .schemas
            .iter()
            .find(|(_, s)| s.normalized == normalized)
        {
            Some((id, _)) => *id,
            None => {
                let id = self.state.next_id;
                self.state.next_id += 1;
                self.state.schemas.insert(
                    id,
                    StoredSchema {
                        schema: schema.to_string(),
                        normalized,
                    },
                );
                id
            }
        };
        let entry = self.state.subjects.entry(subject.to_string()).or_default();
        let version = entry.versions.iter().map(|v| v.version).max().unwrap_or(0) + 1;
        entry.versions.push(Version {
            version,
            id,
            deleted: false,
        });
        self.persist()?;
        Ok(id)
    }

    /// The version of `subject` holding `schema`, if registered.
    pub fn lookup(
        &self,
        subject: &str,
        schema: &str,
    ) -> Result<Option<SubjectVersion>, RegistryError> {
        let normalized = normalize(schema)?;
        Ok(self.live_versions(subject).into_iter().find_map(|v| {
            let stored = &self.state.schemas[&v.id];
            (stored.normalized == normalized).then(|| SubjectVersion {
                subject: subject.to_string(),
                id: v.id,
                version: v.version,
                schema: stored.schema.clone(),
            })
        }))
    }

    /// Schema by global id.
    pub fn schema(&self, id: u32) -> Option<&StoredSchema> {
        self.state.schemas.get(&id)
    }

    /// Subjects with at least one live version.
    pub fn subjects(&self) -> Vec<String> {
        self.state
            .subjects
            .iter()
            .filter(|(_, s)| s.versions.iter().any(|v| !v.deleted))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// True when the subject has live versions.
    pub fn has_subject(&self, subject: &str) -> bool {
        !self.live_versions(subject).is_empty()
    }

    /// Live version numbers of `subject`.
    pub fn versions(&self, subject: &str) -> Vec<u32> {
        self.live_versions(subject)
            .iter()
            .map(|v| v.version)
            .collect()
    }

    /// One version; `None` means latest.
    pub fn version(&self, subject: &str, version: Option<u32>) -> Option<SubjectVersion> {
        let live = self.live_versions(subject);
        let v = match version {
            None => live.last().copied(),
            Some(n) => live.into_iter().find(|v| v.version == n),
        }?;
        Some(SubjectVersion {
            subject: subject.to_string(),
            id: v.id,
            version: v.version,
            schema: self.state.schemas[&v.id].schema.clone(),
        })
    }

    /// Subjects and versions using schema `id`.
    pub fn usages(&self, id: u32) -> Vec<(String, u32)> {
        self.state
            .subjects
            .iter()
            .flat_map(|(name, s)| {
                s.versions
                    .iter()
                    .filter(move |v| v.id == id && !v.deleted)
                    .map(move |v| (name.clone(), v.version))
            })
            .collect()
    }

    /// Soft-deletes (or, with `permanent`, removes) a subject; returns the versions affected.
    pub fn delete_subject(
        &mut self,
        subject: &str,
        permanent: bool,
    ) -> Result<Vec<u32>, RegistryError> {
        let Some(entry) = self.state.subjects.get_mut(subject) else {
            return Err(RegistryError::SubjectNotFound(subject.to_string()));
        };
        let affected: Vec<u32> = entry
            .versions
            .iter()
            .filter(|v| permanent || !v.deleted)
            .map(|v| v.version)
            .collect();
        if permanent {
            self.state.subjects.remove(subject);
        } else {
            entry.versions.iter_mut().for_each(|v| v.deleted = true);
        }
        self.persist()?;
        Ok(affected)
    }

    /// Soft-deletes one version.
    pub fn delete_version(
        &mut self,
        subject: &str,
        version: Option<u32>,
    ) -> Result<u32, RegistryError> {
        let target = self
            .version(subject, version)
            .ok_or_else(|| RegistryError::VersionNotFound(subject.to_string()))?
            .version;
        if let Some(entry) = self.state.subjects.get_mut(subject) {
            for v in entry.versions.iter_mut().filter(|v| v.version == target) {
                v.deleted = true;
            }
        }
        self.persist()?;
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}"#;
    const V2_WITH_DEFAULT: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"b","type":"string","default":""}]}"#;
    const V2_NO_DEFAULT: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"b","type":"string"}]}"#;

    #[test]
    fn same_schema_same_id_across_subjects_and_whitespace() {
        let mut s = Store::open(None, Level::Backward).unwrap();
        let a = s.register("x-value", V1).unwrap();
        let spaced = V1.replace(',', " , ");
        assert_eq!(s.register("x-value", &spaced).unwrap(), a);
        assert_eq!(s.register("y-value", V1).unwrap(), a);
        assert_eq!(s.versions("x-value"), vec![1]);
    }

    #[test]
    fn backward_rejects_new_field_without_default() {
        let mut s = Store::open(None, Level::Backward).unwrap();
        s.register("t-value", V1).unwrap();
        let err = s.register("t-value", V2_NO_DEFAULT).unwrap_err();
        assert!(matches!(err, RegistryError::Incompatible(_)), "{err}");
        let id = s.register("t-value", V2_WITH_DEFAULT).unwrap();
        assert_eq!(s.version("t-value", None).unwrap().id, id);
        assert_eq!(s.versions("t-value"), vec![1, 2]);
    }

    #[test]
    fn forward_and_none_levels() {
        let mut s = Store::open(None, Level::Forward).unwrap();
        s.register("f-value", V2_NO_DEFAULT).unwrap();
        // Old readers need `b`, which the new schema no longer writes and has no default.
        assert!(s.register("f-value", V1).is_err());
        s.set_subject_level("f-value", Some(Level::None)).unwrap();
        assert!(s.register("f-value", V1).is_ok());
    }

    #[test]
    fn invalid_schema_is_rejected() {
        let mut s = Store::open(None, Level::Backward).unwrap();
        assert!(matches!(
            s.register("x", "{\"type\":\"nope\"}"),
            Err(RegistryError::InvalidSchema(_))
        ));
        assert!(matches!(
            s.register("x", "not json"),
            Err(RegistryError::InvalidSchema(_))
        ));
    }

    #[test]
    fn state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reg.json");
        let id = {
            let mut s = Store::open(Some(&path), Level::Backward).unwrap();
            s.set_subject_level("t-value", Some(Level::Full)).unwrap();
            s.register("t-value", V1).unwrap()
        };
        let s = Store::open(Some(&path), Level::Backward).unwrap();
        assert_eq!(s.schema(id).unwrap().schema, V1);
        assert_eq!(s.level("t-value"), Level::Full);
        let mut s = s;
        let id2 = s.register("u-value", V2_WITH_DEFAULT).unwrap();
        assert!(id2 > id, "ids keep increasing after restart");
    }

    #[test]
    fn soft_delete_hides_versions_but_keeps_ids() {
        let mut s = Store::open(None, Level::Backward).unwrap();
        let id = s.register("d-value", V1).unwrap();
        assert_eq!(s.delete_subject("d-value", false).unwrap(), vec![1]);
        assert!(!s.has_subject("d-value"));
        assert!(s.schema(id).is_some());
    }
}
