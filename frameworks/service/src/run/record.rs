//! The stored form of an instance slot, kept in the masters' key-value
//! store under `instances/<instance id>` so that the framework's next
//! active instance knows which slots exist and which task each may have
//! launched (it reconciles those before anything else).
//!
//! Stored: the slot's app, config version, attempt, creation time, backoff
//! (failures, not before), whether it is being killed, and its launched
//! attempt's task, agent and host ports. Not stored: task states, health,
//! readiness and unreachability, which the master's reconciliation tells
//! again.
//!
//! Every value is a JSON object with `"format": 1` ([`FORMAT`]); a newer
//! format is refused (fail closed). `run/record/golden-1.json` holds the
//! bytes of a fixed slot, compared byte for byte.

use serde::{Deserialize, Serialize};

use crate::run::instances::{Killing, Run, Slot};
use crate::time::Timestamp;

/// The format written.
pub const FORMAT: u64 = 1;

/// The key prefix of instance records.
pub const PREFIX: &str = "instances/";

/// The key of instance `id`.
#[must_use]
pub fn key_of_instance(id: &str) -> String {
    format!("{PREFIX}{id}")
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RunRecord {
    task_id: String,
    agent_id: String,
    ports: Vec<u16>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SlotRecord {
    format: u64,
    app: String,
    version: Timestamp,
    attempt: u32,
    created_at: Timestamp,
    failures: u32,
    not_before: Timestamp,
    /// `draining` (since `draining_since`) or `now`; absent when live.
    #[serde(skip_serializing_if = "Option::is_none")]
    killing: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    draining_since: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    run: Option<RunRecord>,
}

/// Why a stored record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Not JSON of the record's shape.
    #[error("instance record {key}: {why}")]
    Decode {
        /// The key.
        key: String,
        /// What is wrong.
        why: String,
    },
    /// Written by a newer berth.
    #[error("instance record {key} is format {format}; this berth reads format {FORMAT}")]
    Format {
        /// The key.
        key: String,
        /// Its format.
        format: u64,
    },
}

/// A slot as stored.
#[must_use]
pub fn encode(slot: &Slot) -> Vec<u8> {
    let (killing, draining_since) = match slot.killing {
        None => (None, None),
        Some(Killing::Draining(since)) => (Some("draining".to_owned()), Some(since)),
        Some(Killing::Now) => (Some("now".to_owned()), None),
    };
    let rec = SlotRecord {
        format: FORMAT,
        app: slot.app.clone(),
        version: slot.version,
        attempt: slot.attempt,
        created_at: slot.created_at,
        failures: slot.failures,
        not_before: slot.not_before,
        killing,
        draining_since,
        run: slot.run.as_ref().map(|r| RunRecord {
            task_id: r.task_id.clone(),
            agent_id: r.agent_id.clone(),
            ports: r.ports.clone(),
        }),
    };
    serde_json::to_vec(&rec).unwrap_or_default()
}

/// A stored slot, read back (its run with no state known yet).
///
/// # Errors
/// [`RecordError`] for bytes that are not a record of a known format.
pub fn decode(key: &str, bytes: &[u8]) -> Result<Slot, RecordError> {
    let decode_err = |why: String| RecordError::Decode {
        key: berth_scheduler_core::error::quoted(key).to_string(),
        why,
    };
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| decode_err(e.to_string()))?;
    let format = value.get("format").and_then(serde_json::Value::as_u64);
    if let Some(format) = format.filter(|f| *f > FORMAT) {
        return Err(RecordError::Format {
            key: berth_scheduler_core::error::quoted(key).to_string(),
            format,
        });
    }
    let rec: SlotRecord = serde_json::from_value(value).map_err(|e| decode_err(e.to_string()))?;
    let killing = match (rec.killing.as_deref(), rec.draining_since) {
        (None, _) => None,
        (Some("draining"), Some(since)) => Some(Killing::Draining(since)),
        (Some("now"), _) => Some(Killing::Now),
        (Some(other), _) => {
            return Err(decode_err(format!(
                "killing is {}",
                berth_scheduler_core::error::quoted(other)
            )));
        }
    };
    Ok(Slot {
        app: rec.app,
        version: rec.version,
        attempt: rec.attempt,
        created_at: rec.created_at,
        run: rec.run.map(|r| Run {
            task_id: r.task_id,
            agent_id: r.agent_id,
            ports: r.ports,
            state: None,
            healthy_since: None,
            unreachable_since: None,
            ready: false,
        }),
        failures: rec.failures,
        not_before: rec.not_before,
        killing,
    })
}

#[cfg(test)]
mod tests;
