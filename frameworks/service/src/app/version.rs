//! Versions of an app, and what a change between two definitions needs.
//!
//! As in Marathon, every change is a new version (a timestamp given by the
//! caller), kept with its full definition. [`VersionInfo`] tells the last
//! time the task's shape changed (`lastConfigChangeAt`, which is the
//! version instances carry) from the last time only `instances` changed
//! (`lastScalingAt`). A change of anything but `instances` restarts
//! instances, exactly as Marathon's `isUpgrade` decides (berth's
//! `deployment` settings count like `upgradeStrategy`, which Marathon
//! counts).

use serde_json::{Value, json};

use super::AppDefinition;
use crate::time::Timestamp;

/// What going from one definition to another needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The definitions are equal.
    None,
    /// Only `instances` differs: start or stop instances, restart none.
    Scale {
        /// Instances before.
        from: u32,
        /// Instances after.
        to: u32,
    },
    /// The task's shape (or how it is deployed) changed: replace every
    /// instance.
    Restart,
}

impl AppDefinition {
    /// What going from `self` to `new` needs.
    pub fn changes(&self, new: &AppDefinition) -> Change {
        if self == new {
            return Change::None;
        }
        let mut same_size = new.clone();
        same_size.instances = self.instances;
        if *self == same_size {
            Change::Scale {
                from: self.instances,
                to: new.instances,
            }
        } else {
            Change::Restart
        }
    }
}

/// Marathon's `versionInfo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VersionInfo {
    /// `lastScalingAt`: the last version that changed anything.
    pub last_scaling_at: Timestamp,
    /// `lastConfigChangeAt`: the last version that changed the task's
    /// shape; instances carry this version.
    pub last_config_change_at: Timestamp,
}

/// One version of an app: its full definition and when it was made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppVersion {
    /// The definition.
    pub definition: AppDefinition,
    /// `version`: when this version was made.
    pub version: Timestamp,
    /// `versionInfo`.
    pub info: VersionInfo,
}

impl AppVersion {
    /// The first version of an app, made at `at`.
    pub fn first(definition: AppDefinition, at: Timestamp) -> AppVersion {
        AppVersion {
            definition,
            version: at,
            info: VersionInfo {
                last_scaling_at: at,
                last_config_change_at: at,
            },
        }
    }

    /// The version after `self` with `definition`, made at `at`, and what
    /// the change needs.
    pub fn next(&self, definition: AppDefinition, at: Timestamp) -> (AppVersion, Change) {
        let change = self.definition.changes(&definition);
        let info = match change {
            Change::None => self.info,
            Change::Scale { .. } => VersionInfo {
                last_scaling_at: at,
                last_config_change_at: self.info.last_config_change_at,
            },
            Change::Restart => VersionInfo {
                last_scaling_at: at,
                last_config_change_at: at,
            },
        };
        let v = AppVersion {
            definition,
            version: at,
            info,
        };
        (v, change)
    }

    /// The version an instance of this app version carries: the last
    /// config change.
    pub fn config_version(&self) -> Timestamp {
        self.info.last_config_change_at
    }

    /// The definition as GET /v2/apps/{id} renders it, with `version` and
    /// `versionInfo`.
    pub fn to_marathon_json(&self) -> Value {
        let mut v = self.definition.to_marathon_json();
        if let Value::Object(map) = &mut v {
            map.insert("version".into(), json!(self.version.to_string()));
            map.insert(
                "versionInfo".into(),
                json!({
                    "lastScalingAt": self.info.last_scaling_at.to_string(),
                    "lastConfigChangeAt": self.info.last_config_change_at.to_string(),
                }),
            );
        }
        v
    }
}
