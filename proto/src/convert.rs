//! Conversions between wire messages and `berth-scheduler-core` types.
//!
//! Every conversion from the wire validates: scalars go through
//! [`Scalar::from_f64`] (no negative, NaN, infinite, subnormal or absurdly
//! large values) and ports through [`PortRanges::from_ranges`].
//!
//! Also here: [`pb::TaskState::is_terminal`] and [`unix_now`], the clock
//! reading of `TaskStatus.timestamp`.

use berth_scheduler_core::{PortRanges, ResourceError, Resources, Scalar};

use crate::v1 as pb;

/// Converts wire resources into validated fixed-point resources.
///
/// # Errors
/// A [`ResourceError`] naming the first invalid field.
pub fn resources_from_proto(r: &pb::Resources) -> Result<Resources, ResourceError> {
    let ranges: Vec<(u64, u64)> = r.ports.iter().map(|p| (p.begin, p.end)).collect();
    Ok(Resources {
        cpus: Scalar::from_f64("cpus", r.cpus)?,
        mem: Scalar::from_f64("mem", r.mem)?,
        disk: Scalar::from_f64("disk", r.disk)?,
        gpus: Scalar::from_f64("gpus", r.gpus)?,
        ports: PortRanges::from_ranges(&ranges)?,
    })
}

/// Converts optional wire resources; a missing message is empty resources.
///
/// # Errors
/// As [`resources_from_proto`].
pub fn resources_from_proto_opt(r: Option<&pb::Resources>) -> Result<Resources, ResourceError> {
    r.map_or_else(|| Ok(Resources::empty()), resources_from_proto)
}

/// Converts fixed-point resources to their wire form.
#[must_use]
pub fn resources_to_proto(r: &Resources) -> pb::Resources {
    pb::Resources {
        cpus: r.cpus.to_f64(),
        mem: r.mem.to_f64(),
        disk: r.disk.to_f64(),
        gpus: r.gpus.to_f64(),
        ports: r
            .ports
            .ranges()
            .iter()
            .map(|&(begin, end)| pb::Range {
                begin: u64::from(begin),
                end: u64::from(end),
            })
            .collect(),
    }
}

impl pb::TaskState {
    /// Whether the state is terminal: the task will never run again.
    #[must_use]
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::TaskFinished
                | Self::TaskFailed
                | Self::TaskKilled
                | Self::TaskLost
                | Self::TaskError
        )
    }
}

impl pb::TaskReason {
    /// The reason's name without the `TASK_REASON_` prefix, as people and
    /// scripts read it (`"OOM"`, `"FETCH_FAILED"`); empty for
    /// `UNSPECIFIED`.
    #[must_use]
    pub fn short_name(self) -> &'static str {
        match self {
            Self::Unspecified => "",
            r => r
                .as_str_name()
                .strip_prefix("TASK_REASON_")
                .unwrap_or(r.as_str_name()),
        }
    }

    /// The reason named `name` without its prefix ([`Self::short_name`]),
    /// if there is one.
    #[must_use]
    pub fn from_short_name(name: &str) -> Option<Self> {
        if name.is_empty() {
            return None;
        }
        Self::from_str_name(&format!("TASK_REASON_{name}"))
    }
}

/// Current wall-clock time as seconds since the Unix epoch, the form of
/// `TaskStatus.timestamp`.
#[must_use]
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let r: Resources = "cpus:1.5;mem:256;ports:[31000-31005]".parse().unwrap();
        assert_eq!(resources_from_proto(&resources_to_proto(&r)).unwrap(), r);
    }

    #[test]
    fn rejects_bad_scalars() {
        for bad in [-1.0, f64::NAN, f64::INFINITY, 1e300, 1e-310] {
            let p = pb::Resources {
                cpus: bad,
                ..Default::default()
            };
            let err = resources_from_proto(&p).unwrap_err().to_string();
            assert!(err.contains("cpus"), "{err}");
        }
        let p = pb::Resources {
            ports: vec![pb::Range { begin: 10, end: 5 }],
            ..Default::default()
        };
        assert!(resources_from_proto(&p).is_err());
    }

    #[test]
    fn reason_short_names_round_trip() {
        assert_eq!(pb::TaskReason::Oom.short_name(), "OOM");
        assert_eq!(pb::TaskReason::FetchFailed.short_name(), "FETCH_FAILED");
        assert_eq!(pb::TaskReason::Unspecified.short_name(), "");
        for r in [
            pb::TaskReason::Exited,
            pb::TaskReason::ContainerRecoveryFailed,
            pb::TaskReason::FailoverTimeout,
        ] {
            assert_eq!(pb::TaskReason::from_short_name(r.short_name()), Some(r));
        }
        assert_eq!(pb::TaskReason::from_short_name(""), None);
        assert_eq!(pb::TaskReason::from_short_name("NO_SUCH"), None);
        assert_eq!(pb::TaskReason::from_short_name("TASK_REASON_OOM"), None);
    }

    #[test]
    fn terminal_states() {
        assert!(pb::TaskState::TaskFinished.is_terminal());
        assert!(!pb::TaskState::TaskUnreachable.is_terminal());
        assert!(!pb::TaskState::TaskRunning.is_terminal());
    }
}
