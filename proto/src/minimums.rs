//! The least a task may ask for, checked alike by the master when a task is
//! accepted and by the agent before it launches one: positive cpus and
//! memory for every task, and for a container task at least 0.01 cpus and
//! 6 MiB.
//!
//! Why: a task without a memory request ran with no memory limit at all
//! (Docker reads a zero limit as "unlimited"), and one without cpus took
//! none of the agent's share, so both could take a whole agent while the
//! allocator counted nothing. Mesos and Marathon refuse such tasks too.
//! A container task must also ask for what Docker accepts: a memory limit
//! under 6 MiB is refused by the daemon ("Minimum memory limit allowed is
//! 6MB"), and a CPU quota under 0.01 cpus by the kernel (the cgroup's
//! `cpu.cfs_quota_us` is at least 1 ms of the 100 ms period), both at
//! container start, long after the accept said yes.

use berth_scheduler_core::{Resources, Scalar};

pub use crate::error::MinimumError;

/// Least memory of a container task, in MiB (Docker's minimum limit).
pub const MIN_CONTAINER_MEM_MIB: f64 = 6.0;
/// Least cpus of a container task (Docker's smallest CPU quota).
pub const MIN_CONTAINER_CPUS: f64 = 0.01;

/// Checks that a task named `task_id` asks for positive cpus and memory,
/// and, when it runs in a container, at least [`MIN_CONTAINER_CPUS`] and
/// [`MIN_CONTAINER_MEM_MIB`].
///
/// # Errors
/// A [`MinimumError`] naming the task and the resource.
pub fn check_task_minimums(
    task_id: &str,
    resources: &Resources,
    container: bool,
) -> Result<(), MinimumError> {
    for (resource, got, container_min) in [
        ("cpus", resources.cpus, MIN_CONTAINER_CPUS),
        ("mem", resources.mem, MIN_CONTAINER_MEM_MIB),
    ] {
        if got == Scalar::ZERO {
            return Err(MinimumError::NotPositive {
                task: task_id.to_owned(),
                resource,
            });
        }
        if container && got.to_f64() < container_min {
            return Err(MinimumError::BelowContainerMinimum {
                task: task_id.to_owned(),
                resource,
                got: got.to_f64(),
                min: container_min,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Resources {
        s.parse().expect("resources")
    }

    #[test]
    fn a_task_needs_positive_cpus_and_mem() {
        assert_eq!(
            check_task_minimums("t", &r("cpus:0.001;mem:0.001"), false),
            Ok(())
        );
        let e = check_task_minimums("t", &r("cpus:1"), false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "task \"t\" asks for no mem: every task needs a positive mem request"
        );
        let e = check_task_minimums("web", &r("mem:64"), false).unwrap_err();
        assert!(
            e.to_string().starts_with("task \"web\" asks for no cpus"),
            "{e}"
        );
        // Below a milli-unit is zero.
        let e = check_task_minimums("t", &r("cpus:0.0001;mem:64"), false).unwrap_err();
        assert!(e.to_string().contains("no cpus"), "{e}");
    }

    #[test]
    fn a_container_task_needs_what_docker_accepts() {
        assert_eq!(
            check_task_minimums("t", &r("cpus:0.01;mem:6"), true),
            Ok(())
        );
        let e = check_task_minimums("t", &r("cpus:1;mem:5.999"), true).unwrap_err();
        assert_eq!(
            e.to_string(),
            "task \"t\" asks for 5.999 mem; a container task needs at least 6 \
             (Docker's minimum)"
        );
        let e = check_task_minimums("t", &r("cpus:0.009;mem:64"), true).unwrap_err();
        assert!(
            e.to_string()
                .contains("0.009 cpus; a container task needs at least 0.01"),
            "{e}"
        );
        // A process task may ask for less.
        assert_eq!(
            check_task_minimums("t", &r("cpus:0.009;mem:1"), false),
            Ok(())
        );
    }
}
