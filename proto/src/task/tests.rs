//! Unit tests of the shared `TaskInfo` validation.

use super::*;
use crate::{HttpCheck, PortMapping, TcpCheck, Volume};

fn shell(s: &str) -> CommandInfo {
    CommandInfo {
        shell: s.into(),
        ..Default::default()
    }
}

fn task(command: Option<CommandInfo>) -> TaskInfo {
    TaskInfo {
        task_id: "t1".into(),
        command,
        ..Default::default()
    }
}

fn image(i: &str) -> ContainerInfo {
    ContainerInfo {
        image: i.into(),
        ..Default::default()
    }
}

fn err(t: &TaskInfo) -> String {
    validate_task(t).unwrap_err().to_string()
}

fn container_err(c: &ContainerInfo) -> ContainerInfoError {
    validate_container(c).unwrap_err()
}

fn tcp(port: u32) -> HealthCheck {
    HealthCheck {
        tcp: Some(TcpCheck { port }),
        ..Default::default()
    }
}

fn http(port: u32, path: &str, scheme: &str) -> HealthCheck {
    HealthCheck {
        http: Some(HttpCheck {
            port,
            path: path.into(),
            scheme: scheme.into(),
        }),
        ..Default::default()
    }
}

fn hc_err(h: &HealthCheck) -> String {
    validate_health_check(h).unwrap_err().to_string()
}

#[test]
fn a_plain_task_passes_and_returns_its_id() {
    assert_eq!(
        validate_task(&task(Some(shell("true")))).unwrap().as_str(),
        "t1"
    );
}

#[test]
fn task_id_and_name() {
    let mut t = task(Some(shell("true")));
    t.task_id = "a/b".into();
    assert!(matches!(validate_task(&t), Err(TaskError::Id(_))));
    assert!(err(&t).contains("invalid task id \"a/b\""), "{}", err(&t));
    let mut t = task(Some(shell("true")));
    t.name = "n".repeat(MAX_TASK_NAME_BYTES);
    assert!(validate_task(&t).is_ok());
    t.name.push('n');
    assert_eq!(err(&t), "task \"t1\": name longer than 1024 bytes (1025)");
}

#[test]
fn command_shape() {
    assert_eq!(
        err(&task(None)),
        "task \"t1\": the task has no command (and no container whose image has one)"
    );
    assert_eq!(
        err(&task(Some(CommandInfo::default()))),
        "task \"t1\": the command needs `shell` or `argv`; neither is set"
    );
    let both = CommandInfo {
        shell: "true".into(),
        argv: vec!["true".into()],
        ..Default::default()
    };
    assert_eq!(validate_command(&both), Err(CommandError::Both));
    let empty0 = CommandInfo {
        argv: vec![String::new(), "x".into()],
        ..Default::default()
    };
    assert_eq!(validate_command(&empty0), Err(CommandError::EmptyArgv0));
    let nul_arg = CommandInfo {
        argv: vec!["echo".into(), "a\0b".into()],
        ..Default::default()
    };
    assert_eq!(
        validate_command(&nul_arg).unwrap_err().to_string(),
        "the command \"a\\0b\" contains a NUL byte"
    );
    assert!(matches!(
        validate_command(&shell("tr\0ue")),
        Err(CommandError::Nul { .. })
    ));
    // A container task may leave the command empty (the image's CMD)...
    let mut t = task(None);
    t.container = Some(image("busybox"));
    assert!(validate_task(&t).is_ok());
    t.command = Some(CommandInfo::default());
    assert!(validate_task(&t).is_ok());
    // ...but a command it gives is checked.
    t.command = Some(both);
    assert!(err(&t).ends_with("both are set"), "{}", err(&t));
}

#[test]
fn environment() {
    let with = |k: &str, v: &str| {
        let mut c = shell("true");
        c.env.insert(k.into(), v.into());
        task(Some(c))
    };
    assert!(validate_task(&with("A", "1")).is_ok());
    assert_eq!(
        err(&with("", "x")),
        "task \"t1\": invalid environment variable name \"\": it must not be empty"
    );
    for bad in ["A=B", "A\0B"] {
        assert!(
            err(&with(bad, "x")).contains("it must not contain '=' or NUL"),
            "{bad:?}"
        );
    }
    assert_eq!(
        err(&with("A", "x\0")),
        "task \"t1\": environment variable \"A\" must not contain NUL"
    );
    // A huge name is quoted cut short.
    let huge = format!("{}=", "k".repeat(1 << 20));
    let e = err(&with(&huge, "v"));
    assert!(e.len() < 300 && e.contains("(1048577 bytes)"), "{e}");
}

fn label(key: &str, value: &str) -> Label {
    Label {
        key: key.into(),
        value: value.into(),
    }
}

fn with_labels(labels: Vec<Label>) -> TaskInfo {
    let mut t = task(Some(shell("true")));
    t.labels = labels;
    t
}

#[test]
fn labels_at_their_limits_pass() {
    let full = |i: usize| {
        let key = format!("{i:0>width$}", width = MAX_LABEL_KEY_BYTES);
        label(&key, &"v".repeat(MAX_LABEL_VALUE_BYTES))
    };
    let t = with_labels((0..MAX_LABELS).map(full).collect());
    assert_eq!(
        validate_task(&t).map(|id| id.as_str().to_owned()),
        Ok("t1".to_owned())
    );
    // Empty values and repeated keys are fine.
    assert_eq!(validate_labels(&[label("k", ""), label("k", "")]), Ok(()));
}

#[test]
fn too_many_labels() {
    let t = with_labels(vec![label("k", "v"); MAX_LABELS + 1]);
    assert_eq!(
        validate_task(&t),
        Err(TaskError::Invalid {
            task: "t1".into(),
            error: TaskRuleError::Label(LabelError::TooMany { count: 65 }),
        })
    );
    assert_eq!(err(&t), "task \"t1\": 65 labels; at most 64 are allowed");
}

#[test]
fn label_keys() {
    let t = with_labels(vec![label("a", "1"), label("", "2")]);
    assert_eq!(
        validate_labels(&t.labels),
        Err(LabelError::KeyEmpty { index: 1 })
    );
    assert_eq!(err(&t), "task \"t1\": labels[1]: the key must not be empty");

    let long = "k".repeat(MAX_LABEL_KEY_BYTES + 1);
    assert!(matches!(
        validate_labels(&[label(&long, "v")]),
        Err(LabelError::KeyTooLong { index: 0, .. })
    ));
    let e = err(&with_labels(vec![label(&long, "v")]));
    assert_eq!(
        e,
        format!(
            "task \"t1\": labels[0]: key \"{}\"… (256 bytes) must be at most 255 bytes",
            "k".repeat(64)
        )
    );

    assert_eq!(
        err(&with_labels(vec![label("a\0b", "v")])),
        r#"task "t1": labels[0]: key "a\0b" contains a NUL byte"#
    );
}

#[test]
fn label_values() {
    let long = "v".repeat(MAX_LABEL_VALUE_BYTES + 1);
    assert!(matches!(
        validate_labels(&[label("k", &long)]),
        Err(LabelError::ValueTooLong { index: 0, .. })
    ));
    let e = err(&with_labels(vec![label("k", "ok"), label("k", &long)]));
    assert_eq!(
        e,
        format!(
            "task \"t1\": labels[1] \"k\": value \"{}\"… (4097 bytes) must be at most 4096 bytes",
            "v".repeat(64)
        )
    );
    // A huge value is never echoed whole.
    let e = err(&with_labels(vec![label("k", &"v".repeat(1 << 20))]));
    assert!(e.len() < 200, "{e}");

    assert_eq!(
        err(&with_labels(vec![label("k", "x\0")])),
        r#"task "t1": labels[0] "k": value "x\0" contains a NUL byte"#
    );
}

#[test]
fn kill_grace_period() {
    for good in [0.0, 1.5, MAX_KILL_GRACE_SECONDS] {
        let mut t = task(Some(shell("true")));
        t.kill_grace_period_seconds = good;
        assert!(validate_task(&t).is_ok(), "{good}");
    }
    for bad in [-1.0, f64::NAN, f64::INFINITY, MAX_KILL_GRACE_SECONDS * 2.0] {
        let mut t = task(Some(shell("true")));
        t.kill_grace_period_seconds = bad;
        assert!(
            err(&t).contains("kill_grace_period_seconds must be a finite number"),
            "{bad}"
        );
    }
}

#[test]
fn container_image() {
    assert!(validate_container(&image(&"a".repeat(MAX_IMAGE_LEN))).is_ok());
    assert_eq!(container_err(&image("")), ContainerInfoError::ImageEmpty);
    for bad in [
        "busy box",
        "busybox\t",
        "busy\0box",
        "busy\nbox",
        &"a".repeat(MAX_IMAGE_LEN + 1),
    ] {
        assert!(
            matches!(container_err(&image(bad)), ContainerInfoError::Image { .. }),
            "{bad:?}"
        );
    }
    let e = container_err(&image(&"a".repeat(1 << 20))).to_string();
    assert!(
        e.contains("(1048576 bytes) must be at most 255 bytes without whitespace"),
        "{e}"
    );
}

#[test]
fn container_entrypoint_and_user() {
    let mut c = image("img");
    c.entrypoint = vec!["/bin/sh".into(), "-c".into()];
    c.user = "1000:1000".into();
    assert!(validate_container(&c).is_ok());
    c.entrypoint.push("a\0b".into());
    assert_eq!(
        container_err(&c).to_string(),
        r#"container entrypoint[2] "a\0b" contains a NUL byte"#
    );
    let mut c = image("img");
    for bad in ["nobody x", "no\0body"] {
        c.user = bad.into();
        assert_eq!(
            container_err(&c).to_string(),
            format!("container user {bad:?} must not contain whitespace or control characters")
        );
    }
}

#[test]
fn container_network_is_case_sensitive() {
    for good in ["", "bridge", "host", "none"] {
        let mut c = image("img");
        c.network = good.into();
        assert!(validate_container(&c).is_ok(), "{good}");
    }
    for bad in ["overlay", "HOST", "Bridge", "None"] {
        let mut c = image("img");
        c.network = bad.into();
        assert_eq!(
            container_err(&c).to_string(),
            format!(
                "container network {bad:?} is not one of bridge, host, none \
                 (network names are case-sensitive, as in Docker)"
            )
        );
    }
}

fn mapping(container_port: u32, host_port: u32, protocol: &str) -> PortMapping {
    PortMapping {
        container_port,
        host_port,
        protocol: protocol.into(),
    }
}

#[test]
fn port_mappings() {
    let with = |m: Vec<PortMapping>| {
        let mut c = image("img");
        c.port_mappings = m;
        c
    };
    assert!(
        validate_container(&with(vec![
            mapping(80, 0, ""),
            mapping(443, 31000, "TCP"),
            mapping(53, 65535, "udp"),
        ]))
        .is_ok()
    );
    for (bad, index) in [
        (vec![mapping(0, 0, "")], 0),
        (vec![mapping(80, 0, ""), mapping(70000, 0, "")], 1),
        (vec![mapping(80, 65536, "")], 0),
    ] {
        assert!(
            matches!(
                container_err(&with(bad)),
                ContainerInfoError::PortRange { index: i, .. } if i == index
            ),
            "{index}"
        );
    }
    assert_eq!(
        container_err(&with(vec![mapping(0, 0, "")])).to_string(),
        "container port_mappings[0] 0:0 is out of range (ports are 1-65535; host port 0 picks one)"
    );
    assert_eq!(
        container_err(&with(vec![mapping(80, 0, "sctp")])).to_string(),
        "container port_mappings[0] protocol \"sctp\" is not tcp or udp"
    );
    for net in ["host", "none"] {
        let mut c = with(vec![mapping(80, 0, "")]);
        c.network = net.into();
        let e = container_err(&c).to_string();
        assert!(
            e.starts_with("port mappings need the bridge network"),
            "{e}"
        );
    }
}

fn volume(host: &str, container: &str) -> Volume {
    Volume {
        host_path: host.into(),
        container_path: container.into(),
        read_only: false,
    }
}

#[test]
fn volumes() {
    let with = |v: Vec<Volume>| {
        let mut c = image("img");
        c.volumes = v;
        c
    };
    let e = |v: Vec<Volume>| container_err(&with(v)).to_string();
    assert!(validate_container(&with(vec![volume("/srv/data", "/data")])).is_ok());
    // Inside the sandbox mount is fine.
    assert!(validate_container(&with(vec![volume("/srv", "/mnt/berth/sandbox/data")])).is_ok());
    assert_eq!(
        e(vec![volume("srv", "/data")]),
        r#"volumes[0]: host path "srv" is not absolute; a volume needs absolute paths on both sides"#
    );
    assert_eq!(
        e(vec![volume("/srv", "")]),
        r#"volumes[0]: container path "" is not absolute; a volume needs absolute paths on both sides"#
    );
    assert_eq!(
        e(vec![volume("/srv\0x", "/data")]),
        r#"volumes[0]: host path "/srv\0x" contains a NUL byte"#
    );
    assert_eq!(
        e(vec![volume("/srv", "/da:ta")]),
        r#"volumes[0]: container path "/da:ta" contains ':', which Docker's bind syntax cannot express"#
    );
    assert_eq!(
        e(vec![volume("/srv", "/data/../etc")]),
        r#"volumes[0]: container path "/data/../etc" must not contain "..""#
    );
    for sandbox in [
        "/mnt/berth/sandbox",
        "/mnt/berth/sandbox/",
        "/mnt//berth/sandbox",
    ] {
        let e = e(vec![volume("/srv", sandbox)]);
        assert!(
            e.ends_with("is where the task's sandbox is mounted"),
            "{sandbox}: {e}"
        );
    }
    assert_eq!(
        e(vec![volume("/a", "/data"), volume("/b", "/data/")]),
        r#"volumes[1]: container path "/data/" is mounted twice"#
    );
}

#[test]
fn health_check_kinds() {
    assert!(validate_health_check(&tcp(80)).is_ok());
    assert_eq!(
        hc_err(&HealthCheck::default()),
        "the health check must set exactly one of command, http and tcp; none is set"
    );
    let mut h = tcp(80);
    h.http = http(80, "/", "").http;
    assert_eq!(
        hc_err(&h),
        "the health check must set exactly one of command, http and tcp; http and tcp are set"
    );
    h.command = Some(shell("true"));
    assert!(hc_err(&h).ends_with("all three are set"));
    h.http = None;
    assert!(hc_err(&h).ends_with("command and tcp are set"));
}

#[test]
fn health_check_command() {
    let command = |c: CommandInfo| HealthCheck {
        command: Some(c),
        ..Default::default()
    };
    assert!(validate_health_check(&command(shell("true"))).is_ok());
    assert_eq!(
        hc_err(&command(CommandInfo::default())),
        "health check: the command needs `shell` or `argv`; neither is set"
    );
    let both = CommandInfo {
        shell: "true".into(),
        argv: vec!["true".into()],
        ..Default::default()
    };
    assert!(hc_err(&command(both)).ends_with("both are set"));
    let empty0 = CommandInfo {
        argv: vec![String::new(), "x".into()],
        ..Default::default()
    };
    assert_eq!(
        hc_err(&command(empty0)),
        "health check: the command's argv[0] must not be empty"
    );
    assert!(hc_err(&command(shell("tr\0ue"))).contains("NUL"));
    let nul_arg = CommandInfo {
        argv: vec!["test".into(), "a\0b".into()],
        ..Default::default()
    };
    assert!(hc_err(&command(nul_arg)).contains("NUL"));
    let mut env = shell("true");
    env.env.insert("A".into(), "1".into());
    assert!(hc_err(&command(env)).contains("command.env is not supported"));
}

#[test]
fn health_check_ports() {
    assert_eq!(
        hc_err(&tcp(0)),
        "health check tcp.port is required (1-65535)"
    );
    assert_eq!(
        hc_err(&tcp(65536)),
        "health check tcp.port 65536 is out of range (1-65535)"
    );
    assert_eq!(
        hc_err(&http(0, "/", "")),
        "health check http.port is required (1-65535)"
    );
    assert_eq!(
        hc_err(&http(70000, "/", "")),
        "health check http.port 70000 is out of range (1-65535)"
    );
    assert!(validate_health_check(&tcp(65535)).is_ok());
}

#[test]
fn health_check_http_path_and_scheme() {
    assert!(validate_health_check(&http(80, "", "")).is_ok());
    assert!(validate_health_check(&http(80, "/health?full=1", "http")).is_ok());
    assert_eq!(
        hc_err(&http(80, "health", "")),
        "health check http.path must start with '/', got \"health\""
    );
    for bad in ["/a b", "/a\tb", "/a\nb", "/a\0b", "/caf\u{e9}"] {
        let e = hc_err(&http(80, bad, ""));
        assert!(
            e.contains("printable ASCII without whitespace"),
            "{bad:?}: {e}"
        );
    }
    let longest = format!("/{}", "a".repeat(MAX_HTTP_PATH_BYTES - 1));
    assert!(validate_health_check(&http(80, &longest, "")).is_ok());
    assert_eq!(
        hc_err(&http(80, &format!("{longest}a"), "")),
        "health check http.path must be at most 2048 bytes, got 2049"
    );
    assert!(hc_err(&http(80, "/", "https")).contains("\"https\" is not supported"));
    assert_eq!(
        hc_err(&http(80, "/", "ftp")),
        "health check http.scheme must be empty or \"http\", got \"ftp\""
    );
}

#[test]
fn health_check_durations() {
    type Set = fn(&mut HealthCheck, f64);
    let fields: [(&str, Set); 4] = [
        ("delay_seconds", |h, v| h.delay_seconds = v),
        ("grace_period_seconds", |h, v| h.grace_period_seconds = v),
        ("interval_seconds", |h, v| h.interval_seconds = v),
        ("timeout_seconds", |h, v| h.timeout_seconds = v),
    ];
    for (name, set) in fields {
        let with = |v: f64| {
            let mut h = tcp(80);
            set(&mut h, v);
            h
        };
        for (v, rule) in [
            (-1.0, "not be negative, got -1"),
            (f64::NAN, "be a finite number of seconds, got NaN"),
            (f64::INFINITY, "be a finite number of seconds, got inf"),
            (86_400.5, "be at most 86400 seconds, got 86400.5"),
        ] {
            assert_eq!(hc_err(&with(v)), format!("health check {name} must {rule}"));
        }
        assert!(validate_health_check(&with(86_400.0)).is_ok(), "{name}");
        assert!(validate_health_check(&with(0.0)).is_ok(), "{name}");
    }
    let mut h = tcp(80);
    h.interval_seconds = 0.05;
    assert_eq!(
        hc_err(&h),
        "health check interval_seconds must be at least 0.1 seconds, got 0.05"
    );
    let mut h = tcp(80);
    h.timeout_seconds = 0.001;
    assert_eq!(
        hc_err(&h),
        "health check timeout_seconds must be at least 0.01 seconds, got 0.001"
    );
    let mut h = tcp(80);
    h.delay_seconds = 0.001;
    h.grace_period_seconds = 0.001;
    assert!(validate_health_check(&h).is_ok());
}

#[test]
fn task_wraps_container_health_transfer_and_mask_errors() {
    let mut t = task(Some(shell("true")));
    t.container = Some(image(""));
    assert_eq!(err(&t), "task \"t1\": container image must not be empty");
    let mut t = task(Some(shell("true")));
    t.health_check = Some(tcp(0));
    assert_eq!(
        err(&t),
        "task \"t1\": health check tcp.port is required (1-65535)"
    );
    let mut t = task(Some(shell("true")));
    if let Some(c) = t.command.as_mut() {
        c.uris = vec![crate::FetchUri {
            url: "ftp://x".into(),
            ..Default::default()
        }];
    }
    assert!(matches!(
        validate_task(&t),
        Err(TaskError::Invalid {
            error: TaskRuleError::Transfer(_),
            ..
        })
    ));
    let mut t = task(Some(shell("true")));
    t.masked_values = vec!["short".into()];
    assert!(matches!(
        validate_task(&t),
        Err(TaskError::Invalid {
            error: TaskRuleError::Mask(_),
            ..
        })
    ));
}
