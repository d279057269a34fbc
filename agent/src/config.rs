//! Agent configuration and resource detection.
//!
//! [`AgentConfig::validate`] checks a configuration. [`detect_resources`]
//! measures the machine (cpus, memory, the work dir's free disk, ports
//! 31000-32000). The operator's `--resources` are [`ResourceOverrides`],
//! merged over what was detected name by name, as Mesos does: `ports:[...]`
//! alone keeps the detected cpus, memory and disk. [`nothing_to_offer`]
//! is the warning the daemon gives at start for an agent left with no cpus
//! or no memory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_scheduler_core::{PortRanges, Resources, Role, Scalar};

use crate::error::AgentError;

/// Default grace period between SIGTERM and SIGKILL.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(3);
/// Default time without any message from the master (it pings every
/// second) before the agent takes it as lost and finds the leader again: a
/// frozen or cut-off leader is left within 5 s.
pub const DEFAULT_MASTER_TIMEOUT: Duration = Duration::from_secs(4);
/// Default first resend delay of an unacknowledged status update: 10 s, as
/// in Mesos (`STATUS_UPDATE_RETRY_INTERVAL_MIN`). Updates are also resent at
/// once after every re-registration, so a lost master costs no 10 s wait; a
/// shorter delay only makes a busy master read every slow acknowledgement's
/// update twice.
pub const DEFAULT_STATUS_RETRY_INITIAL: Duration = Duration::from_secs(10);
/// Largest resend delay of an unacknowledged status update.
pub const STATUS_RETRY_MAX: Duration = Duration::from_secs(10);
/// Ports an agent offers when its resources are auto-detected.
pub const DEFAULT_PORTS: (u16, u16) = (31000, 32000);
/// Default bound on one Docker Engine call.
pub const DEFAULT_DOCKER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default largest download of one fetched URI (2 GiB).
pub const DEFAULT_FETCH_MAX_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Default bound on fetching one URI.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(300);
/// Default time a forgotten task's sandbox is kept (a week).
pub const DEFAULT_SANDBOX_GC_DELAY: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default bound on archiving and uploading one output.
pub const DEFAULT_UPLOAD_TIMEOUT: Duration = Duration::from_secs(300);
/// Default time a fetch or upload that failed in a way that may pass (the
/// server refuses or drops connections, times out, answers 5xx) is tried
/// again: long enough for a file server's restart or a short outage.
pub const DEFAULT_TRANSFER_RETRY: Duration = Duration::from_secs(300);
/// Longest [`AgentConfig::transfer_retry`].
pub const MAX_TRANSFER_RETRY: Duration = Duration::from_secs(3600);

/// How an agent is configured. Build with [`AgentConfig::new`], adjust the
/// public fields, then [`AgentConfig::validate`] (which [`crate::run`] also
/// calls).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Master addresses, `host:port` or `http://host:port`; tried in order,
    /// round-robin on failure.
    pub masters: Vec<String>,
    /// Root of the agent's files; sandboxes live under
    /// `work_dir/sandboxes/<framework_id>/<task_id>/`.
    pub work_dir: PathBuf,
    /// Unreserved resources to advertise; `None` detects them with
    /// [`detect_resources`].
    pub resources: Option<Resources>,
    /// Resources given by the operator (`berth agent --resources`), merged
    /// over the ones above per resource name, as Mesos does: each name
    /// given replaces that amount, the others stay as detected (or as in
    /// `resources`).
    pub resource_overrides: Option<ResourceOverrides>,
    /// Static reservations, advertised in `AgentInfo.reserved`.
    pub reserved: BTreeMap<Role, Resources>,
    /// Attributes advertised in `AgentInfo.attributes`.
    pub attributes: Vec<(String, String)>,
    /// Hostname to advertise; `None` is the system hostname.
    pub hostname: Option<String>,
    /// Address of this agent's log API as reachable by others; `None` is the
    /// listener's local address (with the hostname substituted when the
    /// listener is bound to an unspecified address such as `0.0.0.0`).
    pub advertise_address: Option<String>,
    /// Grace between SIGTERM and SIGKILL when neither the kill nor the task
    /// says otherwise.
    pub default_kill_grace: Duration,
    /// Take the master as lost and find the leader again when nothing (not
    /// even a ping) arrives from it for this long (at least two of its ping
    /// intervals).
    pub master_timeout: Duration,
    /// First resend delay of an unacknowledged status update (doubling up to
    /// [`STATUS_RETRY_MAX`]).
    pub status_retry_initial: Duration,
    /// Use the local Docker Engine for tasks with a `container` (when a
    /// daemon answers at start-up; without one the agent runs process tasks
    /// only and says so once).
    pub docker: bool,
    /// How long one Docker Engine call may take before the daemon counts as
    /// not answering.
    pub docker_timeout: Duration,
    /// The host address Docker tasks' ports are published on; `None` is
    /// the listener's IP when it and the advertised address are loopback
    /// (an agent kept on loopback keeps its tasks there too), else every
    /// interface (`0.0.0.0`). Health checks of Docker tasks connect to it (to
    /// 127.0.0.1 when it is unspecified); the service framework's router
    /// reaches tasks at the host of the agent's advertised address.
    pub task_bind: Option<std::net::IpAddr>,
    /// Kill every task when the agent shuts down. Off by default: a stopped
    /// agent leaves its tasks running and re-adopts them from its
    /// checkpoint when it starts again (as a Mesos agent does).
    pub kill_tasks_on_shutdown: bool,
    /// Largest file one fetched URI may be (`CommandInfo.uris`), and the
    /// most an extracted archive may unpack to.
    pub fetch_max_bytes: u64,
    /// How long fetching one URI (download and extraction) may take.
    pub fetch_timeout: Duration,
    /// How long archiving and uploading one output (`TaskInfo.outputs`) may
    /// take.
    pub upload_timeout: Duration,
    /// How long a fetch or an upload whose HTTP attempt failed in a way
    /// that may pass is tried again, counted from the first failure (with
    /// backoff, each attempt within its timeout); zero: never. See the
    /// agent's transfer module for which failures count.
    pub transfer_retry: Duration,
    /// Who is the parent of process tasks: the agent's own process by
    /// default; `berth agent` and `berth dev` run every process task under
    /// a `berth task-supervisor` process, which outlives an agent restart
    /// and records the task's exit status (see [`crate::supervisor`] for
    /// what the default loses).
    pub task_supervisor: crate::supervisor::TaskSupervisor,
    /// Whether tasks may fetch from and upload to `file://` URLs, paths of
    /// the agent's host, which the agent reads and writes with its own
    /// rights. On by default (as Mesos's fetcher); turn it off where
    /// frameworks are not trusted with the host's files.
    pub file_urls: bool,
    /// How long the sandbox of a task the agent has forgotten (ended, last
    /// update acknowledged) is kept after it last changed; see
    /// [`crate::gc`]. A week by default, as Mesos's `--gc_delay`.
    pub sandbox_gc_delay: Duration,
    /// The share of the disk to keep free (0 to 1, default 0.1): the
    /// fuller the disk, the shorter the delay (scaled by `1 - headroom -
    /// used`, but at least 10 minutes), as Mesos's `--gc_disk_headroom`.
    pub sandbox_gc_disk_headroom: f64,
}

impl AgentConfig {
    /// A configuration with the defaults: detected resources, no
    /// reservations or attributes, system hostname, 3 s kill grace, 15 s
    /// master timeout, 1 s first status resend delay, Docker used when a
    /// daemon answers (10 s per call), tasks left running on shutdown,
    /// fetches of at most 2 GiB and 5 minutes per URI, 5 minutes per upload,
    /// failed transfers retried for 5 minutes.
    #[must_use]
    pub fn new(masters: Vec<String>, work_dir: PathBuf) -> Self {
        AgentConfig {
            masters,
            work_dir,
            resources: None,
            resource_overrides: None,
            reserved: BTreeMap::new(),
            attributes: Vec::new(),
            hostname: None,
            advertise_address: None,
            default_kill_grace: DEFAULT_KILL_GRACE,
            master_timeout: DEFAULT_MASTER_TIMEOUT,
            status_retry_initial: DEFAULT_STATUS_RETRY_INITIAL,
            docker: true,
            docker_timeout: DEFAULT_DOCKER_TIMEOUT,
            task_bind: None,
            kill_tasks_on_shutdown: false,
            fetch_max_bytes: DEFAULT_FETCH_MAX_BYTES,
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
            upload_timeout: DEFAULT_UPLOAD_TIMEOUT,
            transfer_retry: DEFAULT_TRANSFER_RETRY,
            task_supervisor: crate::supervisor::TaskSupervisor::InAgent,
            file_urls: true,
            sandbox_gc_delay: DEFAULT_SANDBOX_GC_DELAY,
            sandbox_gc_disk_headroom: 0.1,
        }
    }

    /// Checks the configuration.
    ///
    /// # Errors
    /// [`AgentError::Config`] naming the first bad field: no masters, an
    /// empty master address, an empty work dir, a zero master timeout or
    /// status retry delay, an empty attribute name, a zero fetch limit,
    /// fetch timeout or upload timeout, a transfer retry of more than an
    /// hour.
    pub fn validate(self) -> Result<Self, AgentError> {
        if self.masters.is_empty() {
            return Err(AgentError::Config(
                "masters: at least one master address is required".into(),
            ));
        }
        if let Some(bad) = self.masters.iter().find(|m| m.trim().is_empty()) {
            return Err(AgentError::Config(format!(
                "masters: empty address {bad:?}"
            )));
        }
        if self.work_dir.as_os_str().is_empty() {
            return Err(AgentError::Config("work_dir: must not be empty".into()));
        }
        if self.master_timeout.is_zero() {
            return Err(AgentError::Config(
                "master_timeout: must be positive".into(),
            ));
        }
        if self.docker_timeout.is_zero() {
            return Err(AgentError::Config(
                "docker_timeout: must be positive".into(),
            ));
        }
        if self.status_retry_initial.is_zero() {
            return Err(AgentError::Config(
                "status_retry_initial: must be positive".into(),
            ));
        }
        if self.fetch_max_bytes == 0 {
            return Err(AgentError::Config(
                "fetch_max_bytes: must be positive".into(),
            ));
        }
        if self.fetch_timeout.is_zero() {
            return Err(AgentError::Config("fetch_timeout: must be positive".into()));
        }
        if self.upload_timeout.is_zero() {
            return Err(AgentError::Config(
                "upload_timeout: must be positive".into(),
            ));
        }
        if self.transfer_retry > MAX_TRANSFER_RETRY {
            return Err(AgentError::Config(format!(
                "transfer_retry: {}s is more than the {}s allowed",
                self.transfer_retry.as_secs(),
                MAX_TRANSFER_RETRY.as_secs()
            )));
        }
        if self.sandbox_gc_delay.is_zero() {
            return Err(AgentError::Config(
                "sandbox_gc_delay: must be positive".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.sandbox_gc_disk_headroom) {
            return Err(AgentError::Config(format!(
                "sandbox_gc_disk_headroom: {} is not between 0 and 1",
                self.sandbox_gc_disk_headroom
            )));
        }
        if self.attributes.iter().any(|(k, _)| k.is_empty()) {
            return Err(AgentError::Config(
                "attributes: names must not be empty".into(),
            ));
        }
        if let Some(h) = &self.hostname
            && h.trim().is_empty()
        {
            return Err(AgentError::Config(
                "hostname: must not be empty when set".into(),
            ));
        }
        Ok(self)
    }
}

const MIB: u64 = 1024 * 1024;

/// Resources given by name, each replacing the amount of that name in
/// another set (what `berth agent --resources` gives: `ports:[...]` alone
/// keeps the detected cpus, memory and disk). Parsed from the Mesos text
/// form; a name given with 0 is given (that amount becomes 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceOverrides {
    given: Resources,
    /// The names given, as in the text.
    names: Vec<&'static str>,
}

impl std::str::FromStr for ResourceOverrides {
    type Err = berth_scheduler_core::ResourceError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let given: Resources = text.parse()?;
        // The parser accepted every token, so each names one of these.
        let names = text
            .split(';')
            .filter_map(|t| t.split_once(':'))
            .filter_map(|(name, _)| {
                ["cpus", "mem", "disk", "gpus", "ports"]
                    .into_iter()
                    .find(|n| *n == name.trim())
            })
            .collect();
        Ok(ResourceOverrides { given, names })
    }
}

impl ResourceOverrides {
    /// `base` with every given name replaced by the given amount.
    #[must_use]
    pub fn over(&self, base: &Resources) -> Resources {
        let mut out = base.clone();
        for name in &self.names {
            match *name {
                "cpus" => out.cpus = self.given.cpus,
                "mem" => out.mem = self.given.mem,
                "disk" => out.disk = self.given.disk,
                "gpus" => out.gpus = self.given.gpus,
                _ => out.ports = self.given.ports.clone(),
            }
        }
        out
    }

    /// The names given, in the order of the text.
    #[must_use]
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }
}

/// What an agent with these resources cannot run, for a warning at start:
/// with no cpus or no memory no task (they all ask for some) is ever
/// placed on it.
#[must_use]
pub fn nothing_to_offer(r: &Resources) -> Option<String> {
    let missing: Vec<&str> = [("cpus", r.cpus), ("mem", r.mem)]
        .into_iter()
        .filter(|(_, v)| *v == Scalar::ZERO)
        .map(|(n, _)| n)
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "this agent offers no {} ({r}): no task that needs {} will ever run here",
            missing.join(" and no "),
            if missing.len() == 2 { "them" } else { "it" }
        )
    })
}

/// Detects this machine's resources: `cpus` = available parallelism, `mem`
/// = total RAM minus 1 GiB (but at least half of it), `disk` = free space of
/// `work_dir`'s filesystem minus 10 %, ports `[31000-32000]`.
///
/// `work_dir` need not exist yet: its nearest existing ancestor is measured.
///
/// # Errors
/// [`AgentError::Detect`] when `/proc/meminfo` or the filesystem cannot be
/// read.
pub fn detect_resources(work_dir: &Path) -> Result<Resources, AgentError> {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let mem_total_mib = mem_total_mib()?;
    let mem = mem_total_mib.saturating_sub(1024).max(mem_total_mib / 2);
    let disk = free_disk_mib(work_dir)? * 9 / 10;
    Ok(Resources {
        cpus: Scalar::from_units(u64::try_from(cpus).unwrap_or(1)),
        mem: Scalar::from_units(mem),
        disk: Scalar::from_units(disk),
        gpus: Scalar::ZERO,
        ports: PortRanges::range(DEFAULT_PORTS.0, DEFAULT_PORTS.1),
    })
}

fn mem_total_mib() -> Result<u64, AgentError> {
    let path = Path::new("/proc/meminfo");
    let text = std::fs::read_to_string(path).map_err(|source| AgentError::Detect {
        path: path.to_owned(),
        source,
    })?;
    parse_mem_total_kib(&text)
        .map(|kib| kib / 1024)
        .ok_or_else(|| AgentError::Detect {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "no MemTotal line"),
        })
}

/// The `MemTotal:` value of a `/proc/meminfo` text, in KiB.
fn parse_mem_total_kib(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn free_disk_mib(work_dir: &Path) -> Result<u64, AgentError> {
    let mut dir = work_dir.to_path_buf();
    while !dir.exists() {
        if !dir.pop() || dir.as_os_str().is_empty() {
            dir = PathBuf::from(".");
            break;
        }
    }
    let st = nix::sys::statvfs::statvfs(&dir).map_err(|e| AgentError::Detect {
        path: dir.clone(),
        source: std::io::Error::from(e),
    })?;
    #[allow(clippy::useless_conversion)] // the field types differ between platforms
    let bytes = u64::from(st.blocks_available()).saturating_mul(u64::from(st.fragment_size()));
    Ok(bytes / MIB)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_positive_resources() {
        let dir = tempfile::tempdir().unwrap();
        let r = detect_resources(&dir.path().join("not/yet/there")).unwrap();
        assert!(r.cpus.milli() > 0, "{r}");
        assert!(r.mem.milli() > 0, "{r}");
        assert!(r.ports.contains_port(31000));
    }

    #[test]
    fn parses_meminfo() {
        let text = "MemTotal:       16318420 kB\nMemFree:         1234 kB\n";
        assert_eq!(parse_mem_total_kib(text), Some(16_318_420));
        assert_eq!(parse_mem_total_kib("nothing"), None);
    }

    #[test]
    fn given_resources_replace_the_detected_ones_by_name() {
        let detected: Resources = "cpus:8;mem:16000;disk:50000;ports:[31000-32000]"
            .parse()
            .unwrap();
        let only_ports: ResourceOverrides = "ports:[40000-40009]".parse().unwrap();
        assert_eq!(only_ports.names(), ["ports"]);
        assert_eq!(
            only_ports.over(&detected),
            "cpus:8;mem:16000;disk:50000;ports:[40000-40009]"
                .parse()
                .unwrap()
        );
        let some: ResourceOverrides = " cpus : 2 ; mem:0;gpus:1".parse().unwrap();
        assert_eq!(some.names(), ["cpus", "mem", "gpus"]);
        assert_eq!(
            some.over(&detected),
            "cpus:2;mem:0;disk:50000;gpus:1;ports:[31000-32000]"
                .parse()
                .unwrap()
        );
        // Empty: everything stays detected.
        let none: ResourceOverrides = "".parse().unwrap();
        assert_eq!(none.over(&detected), detected);
        // The text's errors are the parser's.
        assert!("cpus:x".parse::<ResourceOverrides>().is_err());
        assert!("bogus:1".parse::<ResourceOverrides>().is_err());
        assert!("cpus:1;cpus:2".parse::<ResourceOverrides>().is_err());
    }

    #[test]
    fn an_agent_without_cpus_or_memory_is_told() {
        let full: Resources = "cpus:1;mem:64".parse().unwrap();
        assert_eq!(nothing_to_offer(&full), None);
        let no_mem: Resources = "cpus:1;ports:[1-2]".parse().unwrap();
        assert_eq!(
            nothing_to_offer(&no_mem).unwrap(),
            "this agent offers no mem (cpus:1;ports:[1-2]): no task that needs it will ever run here"
        );
        let nothing: Resources = "ports:[1-2]".parse().unwrap();
        assert!(
            nothing_to_offer(&nothing)
                .unwrap()
                .starts_with("this agent offers no cpus and no mem")
        );
    }

    #[test]
    fn validate_rejects_bad_config() {
        let ok = AgentConfig::new(vec!["127.0.0.1:5050".into()], "/tmp/x".into());
        assert!(ok.clone().validate().is_ok());
        let err = AgentConfig::new(vec![], "/tmp/x".into())
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("masters"), "{err}");
        let mut c = ok.clone();
        c.fetch_max_bytes = 0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("fetch_max_bytes")
        );
        let mut c = ok.clone();
        c.fetch_timeout = Duration::ZERO;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("fetch_timeout")
        );
        let mut c = ok.clone();
        c.transfer_retry = MAX_TRANSFER_RETRY + Duration::from_secs(1);
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "invalid agent configuration: transfer_retry: 3601s is more than the 3600s allowed"
        );
        let mut c = ok.clone();
        c.transfer_retry = Duration::ZERO;
        assert!(c.validate().is_ok(), "zero: no retries");
        let mut c = ok.clone();
        c.sandbox_gc_delay = Duration::ZERO;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("sandbox_gc_delay: must be positive")
        );
        let mut c = ok.clone();
        c.sandbox_gc_disk_headroom = f64::NAN;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("sandbox_gc_disk_headroom: NaN is not between 0 and 1")
        );
        let mut c = ok;
        c.master_timeout = Duration::ZERO;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("master_timeout")
        );
    }
}
