//! Errors of the rules this crate holds for the master and the agent alike.
//!
//! Each names the offending value cut short (see
//! [`berth_scheduler_core::quoted`]), so a caller's error never echoes
//! unbounded input.

use berth_scheduler_core::quoted;

/// A `host:port` address given on the wire (a new master's, an agent's)
/// is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// The address is empty.
    #[error("address must not be empty")]
    Empty,
    /// The address is longer than [`crate::MAX_ADDRESS_BYTES`].
    #[error("address {} is {len} bytes; at most {} are allowed", quoted(.address), crate::MAX_ADDRESS_BYTES)]
    TooLong {
        /// The address as given.
        address: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The address is not `host:port` (optionally behind `http://` or
    /// `https://`): no port, a port that is not 1-65535, an empty host,
    /// whitespace or control characters.
    #[error("address {} is not HOST:PORT ({reason})", quoted(.address))]
    Malformed {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// A task asks for less than every task, or every container task, needs
/// (see [`crate::minimums`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MinimumError {
    /// No cpus or no memory at all.
    #[error(
        "task {} asks for no {resource}: every task needs a positive {resource} request",
        quoted(.task)
    )]
    NotPositive {
        /// The task id.
        task: String,
        /// `"cpus"` or `"mem"`.
        resource: &'static str,
    },
    /// A container task under Docker's minimum.
    #[error(
        "task {} asks for {got} {resource}; a container task needs at least {min} \
         (Docker's minimum)",
        quoted(.task)
    )]
    BelowContainerMinimum {
        /// The task id.
        task: String,
        /// `"cpus"` or `"mem"` (MiB).
        resource: &'static str,
        /// What it asks for.
        got: f64,
        /// The minimum.
        min: f64,
    },
}

/// A command (a task's or a command health check's) is malformed (see
/// [`crate::task::validate_command`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Neither `shell` nor `argv` is set (and the task has no container
    /// whose image could supply one).
    #[error("the command needs `shell` or `argv`; neither is set")]
    Neither,
    /// Both `shell` and `argv` are set.
    #[error("the command must set only one of `shell` and `argv`; both are set")]
    Both,
    /// `argv[0]` is the empty string.
    #[error("the command's argv[0] must not be empty")]
    EmptyArgv0,
    /// `shell` or an argument contains a NUL byte (no `exec` can pass it).
    #[error("the command {} contains a NUL byte", quoted(.text))]
    Nul {
        /// The shell string or the argument.
        text: String,
    },
}

/// A container of a task is unusable (see
/// [`crate::task::validate_container`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContainerInfoError {
    /// The image reference is empty.
    #[error("container image must not be empty")]
    ImageEmpty,
    /// The image reference is too long or has whitespace or control
    /// characters.
    #[error(
        "container image {} must be at most {} bytes without whitespace or control characters",
        quoted(.image),
        crate::task::MAX_IMAGE_LEN
    )]
    Image {
        /// The image as given.
        image: String,
    },
    /// An entrypoint string contains a NUL byte.
    #[error("container entrypoint[{index}] {} contains a NUL byte", quoted(.arg))]
    EntrypointNul {
        /// Its index.
        index: usize,
        /// The string.
        arg: String,
    },
    /// The network is not one of Docker's built-in networks, spelt as
    /// Docker spells them (network names are case-sensitive).
    #[error(
        "container network {} is not one of bridge, host, none (network names are case-sensitive, as in Docker)",
        quoted(.network)
    )]
    Network {
        /// The network as given.
        network: String,
    },
    /// A port mapping on a network that has no published ports.
    #[error(
        "port mappings need the bridge network; with network {} {}",
        quoted(.network),
        if .network == "host" { "the task binds its ports directly" } else { "there are no ports" }
    )]
    PortsNeedBridge {
        /// The network (`host` or `none`).
        network: String,
    },
    /// A container port of 0 or over 65535, or a host port over 65535.
    #[error(
        "container port_mappings[{index}] {host_port}:{container_port} is out of range \
         (ports are 1-65535; host port 0 picks one)"
    )]
    PortRange {
        /// The mapping's index.
        index: usize,
        /// Its host port.
        host_port: u32,
        /// Its container port.
        container_port: u32,
    },
    /// A protocol other than tcp or udp (any case, as Docker takes it).
    #[error("container port_mappings[{index}] protocol {} is not tcp or udp", quoted(.protocol))]
    Protocol {
        /// The mapping's index.
        index: usize,
        /// The protocol as given.
        protocol: String,
    },
    /// A volume path that is not absolute.
    #[error(
        "volumes[{index}]: {side} path {} is not absolute; a volume needs absolute paths on both sides",
        quoted(.path)
    )]
    VolumeNotAbsolute {
        /// The volume's index.
        index: usize,
        /// `"host"` or `"container"`.
        side: &'static str,
        /// The path as given.
        path: String,
    },
    /// A volume path with a NUL byte.
    #[error("volumes[{index}]: {side} path {} contains a NUL byte", quoted(.path))]
    VolumeNul {
        /// The volume's index.
        index: usize,
        /// `"host"` or `"container"`.
        side: &'static str,
        /// The path as given.
        path: String,
    },
    /// A volume path with ':', which Docker's bind syntax cannot express.
    #[error(
        "volumes[{index}]: {side} path {} contains ':', which Docker's bind syntax cannot express",
        quoted(.path)
    )]
    VolumeColon {
        /// The volume's index.
        index: usize,
        /// `"host"` or `"container"`.
        side: &'static str,
        /// The path as given.
        path: String,
    },
    /// A container path with a `..` component.
    #[error("volumes[{index}]: container path {} must not contain \"..\"", quoted(.path))]
    VolumeParent {
        /// The volume's index.
        index: usize,
        /// The path as given.
        path: String,
    },
    /// A container path where the task's sandbox is mounted.
    #[error(
        "volumes[{index}]: container path {} is where the task's sandbox is mounted",
        quoted(.path)
    )]
    VolumeOnSandbox {
        /// The volume's index.
        index: usize,
        /// The path as given.
        path: String,
    },
    /// Two volumes on one container path.
    #[error("volumes[{index}]: container path {} is mounted twice", quoted(.path))]
    VolumeTwice {
        /// The index of the second volume.
        index: usize,
        /// The path as given.
        path: String,
    },
    /// A user with whitespace or control characters.
    #[error("container user {} must not contain whitespace or control characters", quoted(.user))]
    User {
        /// The user as given.
        user: String,
    },
    /// A service container is unusable.
    #[error("container {0}")]
    Service(crate::task::services::ServiceError),
}

/// A task's labels break a limit (see [`crate::task::validate_labels`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// More than [`crate::task::MAX_LABELS`] labels.
    #[error("{count} labels; at most {} are allowed", crate::task::MAX_LABELS)]
    TooMany {
        /// How many the task has.
        count: usize,
    },
    /// An empty key.
    #[error("labels[{index}]: the key must not be empty")]
    KeyEmpty {
        /// The label's index.
        index: usize,
    },
    /// A key longer than [`crate::task::MAX_LABEL_KEY_BYTES`].
    #[error(
        "labels[{index}]: key {} must be at most {} bytes",
        quoted(.key),
        crate::task::MAX_LABEL_KEY_BYTES
    )]
    KeyTooLong {
        /// The label's index.
        index: usize,
        /// The key as given.
        key: String,
    },
    /// A key with a NUL byte.
    #[error("labels[{index}]: key {} contains a NUL byte", quoted(.key))]
    KeyNul {
        /// The label's index.
        index: usize,
        /// The key as given.
        key: String,
    },
    /// A value longer than [`crate::task::MAX_LABEL_VALUE_BYTES`].
    #[error(
        "labels[{index}] {}: value {} must be at most {} bytes",
        quoted(.key),
        quoted(.value),
        crate::task::MAX_LABEL_VALUE_BYTES
    )]
    ValueTooLong {
        /// The label's index.
        index: usize,
        /// Its key.
        key: String,
        /// The value as given.
        value: String,
    },
    /// A value with a NUL byte.
    #[error("labels[{index}] {}: value {} contains a NUL byte", quoted(.key), quoted(.value))]
    ValueNul {
        /// The label's index.
        index: usize,
        /// Its key.
        key: String,
        /// The value as given.
        value: String,
    },
}

/// A task's health check is unusable (see
/// [`crate::task::validate_health_check`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HealthCheckError {
    /// Not exactly one of command, http and tcp is set; `set` names those
    /// that are.
    #[error(
        "the health check must set exactly one of command, http and tcp; {}",
        match .set.as_slice() {
            [] => "none is set".to_owned(),
            [a, b] => format!("{a} and {b} are set"),
            _ => "all three are set".to_owned(),
        }
    )]
    Kinds {
        /// The kinds that are set (none, two or three).
        set: Vec<&'static str>,
    },
    /// The check's command is malformed.
    #[error("health check: {0}")]
    Command(CommandError),
    /// The check's command sets an environment.
    #[error(
        "health check command.env is not supported: the check runs with the task's environment"
    )]
    CommandEnv,
    /// A port of 0.
    #[error("health check {field} is required (1-65535)")]
    PortMissing {
        /// `"http.port"` or `"tcp.port"`.
        field: &'static str,
    },
    /// A port over 65535.
    #[error("health check {field} {port} is out of range (1-65535)")]
    PortRange {
        /// `"http.port"` or `"tcp.port"`.
        field: &'static str,
        /// The port as given.
        port: u32,
    },
    /// `https`, which the agent's probe does not speak.
    #[error(
        "health check http.scheme \"https\" is not supported: health checks speak plain http only"
    )]
    Https,
    /// A scheme other than empty or `http`.
    #[error("health check http.scheme must be empty or \"http\", got {}", quoted(.scheme))]
    Scheme {
        /// The scheme as given.
        scheme: String,
    },
    /// A path not starting with '/'.
    #[error("health check http.path must start with '/', got {}", quoted(.path))]
    PathRelative {
        /// The path as given.
        path: String,
    },
    /// A path longer than [`crate::task::MAX_HTTP_PATH_BYTES`].
    #[error(
        "health check http.path must be at most {} bytes, got {len}",
        crate::task::MAX_HTTP_PATH_BYTES
    )]
    PathTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A path with a character that is not printable ASCII.
    #[error(
        "health check http.path must be printable ASCII without whitespace or control characters \
         (percent-encode others), found {found:?}"
    )]
    PathChars {
        /// The first such character.
        found: char,
    },
    /// A duration that is NaN, infinite, negative, too long or (for the
    /// interval and the timeout) too short.
    #[error("health check {field} must {rule}, got {value}")]
    Duration {
        /// The field.
        field: &'static str,
        /// What it must be.
        rule: String,
        /// The value as given.
        value: f64,
    },
}

/// A `TaskInfo` breaks a rule both the master and the agent apply (see
/// [`crate::task::validate_task`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TaskError {
    /// The task id is not a valid id.
    #[error(transparent)]
    Id(#[from] berth_scheduler_core::IdError),
    /// Any other rule; `task` is the task id.
    #[error("task {}: {error}", quoted(.task))]
    Invalid {
        /// The task id.
        task: String,
        /// What is wrong.
        error: TaskRuleError,
    },
}

/// What is wrong with a task whose id is valid (see [`TaskError`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TaskRuleError {
    /// The name is longer than [`crate::task::MAX_TASK_NAME_BYTES`].
    #[error("name longer than {} bytes ({len})", crate::task::MAX_TASK_NAME_BYTES)]
    NameTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// No command and no container.
    #[error("the task has no command (and no container whose image has one)")]
    NoCommand,
    /// The command is malformed.
    #[error(transparent)]
    Command(CommandError),
    /// An environment variable with an empty name.
    #[error("invalid environment variable name \"\": it must not be empty")]
    EnvNameEmpty,
    /// An environment variable name with '=' or NUL.
    #[error("invalid environment variable name {}: it must not contain '=' or NUL", quoted(.name))]
    EnvName {
        /// The name as given.
        name: String,
    },
    /// An environment variable value with NUL.
    #[error("environment variable {} must not contain NUL", quoted(.name))]
    EnvValueNul {
        /// The variable's name.
        name: String,
    },
    /// A label breaks a rule of [`crate::task::validate_labels`].
    #[error(transparent)]
    Label(LabelError),
    /// `kill_grace_period_seconds` is NaN, infinite, negative or over a
    /// year.
    #[error(
        "kill_grace_period_seconds must be a finite number of seconds between 0 and {}, got {value}",
        crate::task::MAX_KILL_GRACE_SECONDS
    )]
    KillGrace {
        /// The value as given.
        value: f64,
    },
    /// The container is unusable.
    #[error(transparent)]
    Container(ContainerInfoError),
    /// The health check is unusable.
    #[error(transparent)]
    HealthCheck(HealthCheckError),
    /// A fetched URI or an uploaded output breaks a rule of
    /// [`crate::transfer`].
    #[error("{0}")]
    Transfer(String),
    /// A masked value breaks a rule of [`crate::mask`].
    #[error("{0}")]
    Mask(String),
}
