use super::*;

#[test]
fn parses_reservations_and_attributes() {
    let (role, r) = parse_reservation("web=cpus:1;mem:128").unwrap();
    assert_eq!(role.as_str(), "web");
    assert_eq!(r.to_string(), "cpus:1;mem:128");
    assert!(
        parse_reservation("cpus:1")
            .unwrap_err()
            .contains("ROLE=RESOURCES")
    );
    let a = parse_attributes("rack:r1; zone:a").unwrap();
    assert_eq!(
        a.0,
        vec![("rack".into(), "r1".into()), ("zone".into(), "a".into())]
    );
    assert!(parse_attributes("rack").is_err());
}

#[test]
fn parses_peers() {
    assert_eq!(
        parse_peer("2=10.0.0.2:5050").unwrap(),
        (2, "10.0.0.2:5050".to_string())
    );
    assert!(parse_peer("0=h:1").unwrap_err().contains("start at 1"));
    assert!(
        parse_peer("x=h:1")
            .unwrap_err()
            .contains("positive integer")
    );
    assert!(parse_peer("2=nowhere").unwrap_err().contains("HOST:PORT"));
    assert!(parse_peer("h:1").unwrap_err().contains("ID=HOST:PORT"));
}

#[test]
fn every_daemon_starts_from_its_defaults() {
    use clap::Parser as _;
    // A default a value parser refuses would stop the daemon at start.
    for argv in [
        &["berth", "agent"][..],
        &["berth", "master"],
        &["berth", "dev"],
        &["berth", "ci", "run"],
        &["berth", "ci", "serve"],
        &["berth", "service", "serve"],
    ] {
        let cli = crate::Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        // ... and on loopback only.
        let (apis, insecure) = crate::daemon_apis(&cli.command).expect("a daemon");
        assert!(!insecure, "{argv:?}");
        assert!(
            apis.iter().all(|api| api.listen.ip().is_loopback()),
            "{argv:?}: {apis:?}"
        );
        assert_eq!(check_exposure(&apis, false), Ok(()), "{argv:?}");
    }
    assert_eq!(
        parse_gc_delay("604800").unwrap(),
        Duration::from_secs(604_800)
    );
    assert!(
        parse_gc_delay("31536001")
            .unwrap_err()
            .contains("at most 31536000 seconds")
    );
    assert!(parse_positive_seconds("3601").is_err());
    assert_eq!(parse_fraction("0.25"), Ok(0.25));
    for bad in ["-0.1", "1.5", "NaN", "x"] {
        assert!(parse_fraction(bad).is_err(), "{bad}");
    }
}

#[test]
fn transfer_retry_is_zero_to_an_hour() {
    assert_eq!(parse_retry_seconds("0"), Ok(Duration::ZERO));
    assert_eq!(parse_retry_seconds("300"), Ok(Duration::from_secs(300)));
    for bad in ["-1", "3601", "NaN", "inf", "x"] {
        let e = parse_retry_seconds(bad).unwrap_err();
        assert!(
            e.ends_with("must be a number of seconds from 0 to 3600"),
            "{e}"
        );
    }
    let e = parse_retry_seconds(&"9".repeat(100)).unwrap_err();
    assert!(e.contains("… (100 bytes)"), "{e}");
}

#[test]
fn rejects_bad_durations() {
    for bad in ["-1", "NaN", "inf", "0", "abc"] {
        assert!(parse_seconds(bad).is_err(), "{bad}");
    }
    assert_eq!(parse_seconds("1.5").unwrap(), Duration::from_millis(1500));
}

#[test]
fn only_loopback_is_served_without_insecure() {
    assert_eq!(host_of("http://build.example:5080/ci"), "build.example");
    assert_eq!(host_of("10.0.0.1:5050"), "10.0.0.1");
    assert_eq!(host_of("[::1]:5050"), "::1");
    assert_eq!(host_of("::1"), "::1");
    assert_eq!(host_of("http://user@localhost"), "localhost");
    assert_eq!(host_of("node-7"), "node-7");
    for local in [
        "localhost",
        "LOCALHOST.",
        "a.localhost",
        "127.0.0.1",
        "127.1.2.3",
        "::1",
    ] {
        assert!(is_loopback_host(local), "{local}");
    }
    for remote in [
        "0.0.0.0",
        "10.0.0.1",
        "::",
        "example.com",
        "localhost.example.com",
    ] {
        assert!(!is_loopback_host(remote), "{remote}");
    }
    let api = |listen: &str, advertise: Option<&'static str>| Api {
        name: "the master API",
        risk: MASTER_RISK,
        listen: listen.parse().unwrap(),
        advertise,
    };
    assert_eq!(
        check_exposure(&[api("127.0.0.1:5050", None)], false),
        Ok(())
    );
    assert_eq!(
        check_exposure(&[api("[::1]:5050", Some("localhost:5050"))], false),
        Ok(())
    );
    let e = check_exposure(&[api("0.0.0.0:5050", None)], false).unwrap_err();
    assert!(e.starts_with("refusing to listen on \"0.0.0.0:5050\" for the master API: it is not a loopback address"), "{e}");
    assert!(
        e.contains("run any command as root on every agent") && e.contains("--insecure"),
        "{e}"
    );
    let e = check_exposure(&[api("127.0.0.1:5050", Some("10.1.1.1:5050"))], false).unwrap_err();
    assert!(
        e.starts_with("refusing to advertise \"10.1.1.1:5050\""),
        "{e}"
    );
    assert_eq!(
        check_exposure(&[api("0.0.0.0:5050", Some("10.1.1.1:5050"))], true),
        Ok(())
    );
    assert_eq!(
        insecure_warnings(&[api("0.0.0.0:5050", None)]),
        [
            "berth: WARNING: --insecure: the master API on 0.0.0.0:5050 is unauthenticated: anyone who can reach it can run any command as root on every agent"
        ]
    );
}

#[test]
fn a_task_bind_beyond_loopback_needs_insecure() {
    use clap::Parser as _;
    let check = |argv: &[&str]| {
        let cli = crate::Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        let (apis, insecure) = crate::daemon_apis(&cli.command).expect("a daemon");
        check_exposure(&apis, insecure)
    };
    assert_eq!(
        check(&["berth", "agent", "--task-bind", "127.0.0.1"]),
        Ok(())
    );
    for argv in [
        &["berth", "agent", "--task-bind", "0.0.0.0"][..],
        &["berth", "dev", "--task-bind", "10.1.1.1"],
    ] {
        let e = check(argv).unwrap_err();
        assert!(e.contains("Docker tasks' published ports"), "{e}");
    }
    assert_eq!(
        check(&["berth", "agent", "--task-bind", "0.0.0.0", "--insecure"]),
        Ok(())
    );
    assert!(crate::Cli::try_parse_from(["berth", "agent", "--task-bind", "nowhere"]).is_err());
}

#[test]
fn offer_limit_is_a_count_or_none() {
    use clap::Parser as _;
    assert_eq!(parse_offer_limit("16"), Ok(OfferLimit(Some(16))));
    assert_eq!(parse_offer_limit("none"), Ok(OfferLimit(None)));
    for bad in ["0", "-1", "x", ""] {
        let e = parse_offer_limit(bad).unwrap_err();
        assert!(e.contains("must be a number of offers"), "{e}");
    }
    // The default is the master's, and "none" lifts it.
    let config = |argv: &[&str]| match crate::Cli::try_parse_from(argv).unwrap().command {
        crate::Command::Master { args, .. } => args.tuning.config("/tmp/x".into(), None),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        config(&["berth", "master"]).offer_limit,
        Some(berth_master::DEFAULT_OFFER_LIMIT)
    );
    assert_eq!(
        config(&["berth", "master", "--offer-limit", "none"]).offer_limit,
        None
    );
}
