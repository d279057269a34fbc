//! The stored form of [`Services`]: what the runtime keeps in the masters'
//! key-value store, and how it is read back.
//!
//! ## Keys
//!
//! | key | value |
//! |---|---|
//! | `apps/<id>` (`apps/shop/web`) | the app: its current version, its running deployment's id, its history |
//! | `versions/<id>/<version>` (`versions/shop/web/2024-05-01T12:00:00.000Z`) | one kept version: the definition in Marathon's JSON shape (as GET renders it), `versionInfo` |
//! | `deployments/<deployment id>` | a running deployment: its app, cause, versions, and the planner's state |
//!
//! Every value is a JSON object with `"format": 1` ([`FORMAT`]). A reader
//! refuses a newer format (fail closed) and keeps reading every older one
//! once the format changes; `state/golden/format-1.kv` holds the bytes of
//! a fixed state and the tests compare them byte for byte.
//!
//! What is stored and why: the versions are the intent (what to run), the
//! deployment is where a rollout stands (so a new active instance resumes
//! it instead of starting over), the history is what the CLI and API show
//! of past rollouts. Instances, health and router statistics are observed
//! state and are not stored.

use std::collections::BTreeMap;

use berth_scheduler_core::error::quoted;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    AppState, Applied, Cause, DeploymentId, FinishedDeployment, RunningDeployment, Services,
};
use crate::app::{AppDefinition, AppId, AppVersion, VersionInfo};
use crate::deploy::Deployment;
use crate::error::LoadError;
use crate::time::Timestamp;

/// The format every value is written in.
pub const FORMAT: u64 = 1;

/// One write: the key and its new value, `None` to delete it.
pub type Write = (String, Option<Vec<u8>>);

/// `apps/<id>`.
pub fn key_of_app(id: &AppId) -> String {
    format!("apps{id}")
}

/// `versions/<id>/<version>`.
pub fn key_of_version(id: &AppId, version: Timestamp) -> String {
    format!("versions{id}/{version}")
}

/// `deployments/<deployment id>`.
pub fn key_of_deployment(id: &DeploymentId) -> String {
    format!("deployments/{id}")
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AppRecord {
    format: u64,
    id: String,
    current: Timestamp,
    deployment: Option<DeploymentId>,
    history: Vec<FinishedDeployment>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct VersionRecord {
    format: u64,
    id: String,
    version: Timestamp,
    last_scaling_at: Timestamp,
    last_config_change_at: Timestamp,
    definition: Value,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DeploymentRecord {
    format: u64,
    id: DeploymentId,
    app: String,
    cause: Cause,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    started_at: Timestamp,
    plan: Deployment,
}

fn bytes(v: &impl Serialize) -> Vec<u8> {
    // Plain data with string or integer map keys: serializing cannot fail.
    #[allow(clippy::expect_used)]
    serde_json::to_vec(v).expect("stored records serialize")
}

/// Every stored entry of one app.
fn entries(st: &AppState) -> BTreeMap<String, Vec<u8>> {
    let id = st.id();
    let mut out = BTreeMap::new();
    let app = AppRecord {
        format: FORMAT,
        id: id.to_string(),
        current: st.current.version,
        deployment: st.deployment.as_ref().map(|d| d.id.clone()),
        history: st.history.clone(),
    };
    out.insert(key_of_app(id), bytes(&app));
    for v in st.versions() {
        let rec = VersionRecord {
            format: FORMAT,
            id: id.to_string(),
            version: v.version,
            last_scaling_at: v.info.last_scaling_at,
            last_config_change_at: v.info.last_config_change_at,
            definition: v.definition.to_marathon_json(),
        };
        out.insert(key_of_version(id, v.version), bytes(&rec));
    }
    if let Some(d) = &st.deployment {
        let rec = DeploymentRecord {
            format: FORMAT,
            id: d.id.clone(),
            app: id.to_string(),
            cause: d.cause,
            from: d.from,
            to: d.to,
            started_at: d.started_at,
            plan: d.plan.clone(),
        };
        out.insert(key_of_deployment(&d.id), bytes(&rec));
    }
    out
}

impl Applied {
    /// The writes and deletes this operation causes, by key (empty when it
    /// changed nothing).
    pub fn writes(&self) -> Vec<Write> {
        let before = self.before.as_ref().map(entries).unwrap_or_default();
        let after = self.after.as_ref().map(entries).unwrap_or_default();
        let mut out = Vec::new();
        for k in before.keys() {
            if !after.contains_key(k) {
                out.push((k.clone(), None));
            }
        }
        for (k, v) in after {
            if before.get(&k) != Some(&v) {
                out.push((k, Some(v)));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

impl Services {
    /// Every stored entry of the whole state, by key.
    pub fn entries(&self) -> BTreeMap<String, Vec<u8>> {
        self.apps.values().flat_map(entries).collect()
    }

    /// Whether `key` is one of the framework's stored keys.
    pub fn owns_key(key: &str) -> bool {
        ["apps/", "versions/", "deployments/"]
            .iter()
            .any(|p| key.starts_with(p))
    }

    /// Rebuilds the state from stored entries (every key under `apps/`,
    /// `versions/` and `deployments/`). Fails closed: an unknown key, a
    /// value that does not decode, a newer format or entries that do not
    /// fit together load nothing.
    pub fn load(
        entries: impl IntoIterator<Item = (String, Vec<u8>)>,
    ) -> Result<Services, LoadError> {
        let mut apps: Vec<AppRecord> = Vec::new();
        let mut versions: BTreeMap<AppId, BTreeMap<Timestamp, AppVersion>> = BTreeMap::new();
        let mut deployments: BTreeMap<DeploymentId, DeploymentRecord> = BTreeMap::new();
        for (key, value) in entries {
            if key.starts_with("apps/") {
                let rec: AppRecord = decode(&key, &value)?;
                let id = app_id(&key, &rec.id)?;
                expect_key(&key, &key_of_app(&id))?;
                apps.push(rec);
            } else if key.starts_with("versions/") {
                let rec: VersionRecord = decode(&key, &value)?;
                let id = app_id(&key, &rec.id)?;
                expect_key(&key, &key_of_version(&id, rec.version))?;
                let definition =
                    AppDefinition::from_value(&rec.definition).map_err(|e| corrupt(&key, e))?;
                if definition.id != id {
                    return Err(corrupt(&key, "the definition's id is not the record's"));
                }
                let v = AppVersion {
                    definition,
                    version: rec.version,
                    info: VersionInfo {
                        last_scaling_at: rec.last_scaling_at,
                        last_config_change_at: rec.last_config_change_at,
                    },
                };
                versions.entry(id).or_default().insert(rec.version, v);
            } else if key.starts_with("deployments/") {
                let rec: DeploymentRecord = decode(&key, &value)?;
                expect_key(&key, &key_of_deployment(&rec.id))?;
                deployments.insert(rec.id.clone(), rec);
            } else {
                return Err(LoadError::UnknownKey(quoted(&key).to_string()));
            }
        }
        let mut s = Services::new();
        for rec in apps {
            let id = app_id("apps/", &rec.id)?;
            let inconsistent = |why: &str| LoadError::Inconsistent(format!("app {id}: {why}"));
            let mut older = versions.remove(&id).unwrap_or_default();
            let current = older
                .remove(&rec.current)
                .ok_or_else(|| inconsistent("its current version is not stored"))?;
            let deployment = match rec.deployment {
                None => None,
                Some(did) => {
                    let d = deployments
                        .remove(&did)
                        .ok_or_else(|| inconsistent("its deployment is not stored"))?;
                    if d.app != rec.id {
                        return Err(inconsistent("its deployment names another app"));
                    }
                    let known = |v: Option<Timestamp>| {
                        v.is_none_or(|v| v == current.version || older.contains_key(&v))
                    };
                    if !known(d.from) || !known(d.to) {
                        return Err(inconsistent("its deployment names a version not stored"));
                    }
                    Some(RunningDeployment {
                        id: d.id,
                        cause: d.cause,
                        from: d.from,
                        to: d.to,
                        started_at: d.started_at,
                        plan: d.plan,
                    })
                }
            };
            let st = AppState {
                current,
                older,
                deployment,
                history: rec.history,
            };
            if s.apps.insert(id.clone(), st).is_some() {
                return Err(inconsistent("stored twice"));
            }
        }
        if let Some(id) = versions.keys().next() {
            return Err(LoadError::Inconsistent(format!(
                "versions of {id} are stored without the app"
            )));
        }
        if let Some(id) = deployments.keys().next() {
            return Err(LoadError::Inconsistent(format!(
                "deployment {id} is stored without an app naming it"
            )));
        }
        Ok(s)
    }
}

fn corrupt(key: &str, why: impl std::fmt::Display) -> LoadError {
    LoadError::Corrupt {
        key: quoted(key).to_string(),
        why: why.to_string(),
    }
}

fn expect_key(key: &str, want: &str) -> Result<(), LoadError> {
    if key == want {
        Ok(())
    } else {
        Err(corrupt(
            key,
            format!("the value belongs under {}", quoted(want)),
        ))
    }
}

fn app_id(key: &str, id: &str) -> Result<AppId, LoadError> {
    AppId::parse(id).map_err(|e| corrupt(key, e))
}

/// Decodes a value of format 1 (the only one so far; a later format adds
/// its reader here and keeps this one).
fn decode<T: serde::de::DeserializeOwned>(key: &str, value: &[u8]) -> Result<T, LoadError> {
    let v: Value = serde_json::from_slice(value).map_err(|e| corrupt(key, e))?;
    let format = v
        .get("format")
        .and_then(Value::as_u64)
        .ok_or_else(|| corrupt(key, "no \"format\" number"))?;
    match format {
        1 => serde_json::from_value(v).map_err(|e| corrupt(key, e)),
        f if f < FORMAT => Err(corrupt(key, format!("format {f} never existed"))),
        f => Err(LoadError::UnsupportedFormat {
            key: quoted(key).to_string(),
            format: f,
            supported: FORMAT,
        }),
    }
}
