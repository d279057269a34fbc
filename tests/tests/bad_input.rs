//! Bad input gets a specific error and changes nothing. These tests speak
//! raw gRPC, so they can send what the SDK would refuse to build.
//!
//! Covered: bad accepts, superseded streams and unknown frameworks (a
//! stream id the master never opened is "unknown", not "superseded"), bad
//! operator and agent input, bad pending work, and megabyte ids, names,
//! roles and addresses on every call (scheduler, operator, agent
//! `Register`, `ReadLog`), which must get short specific errors whose
//! trailers fit the 8 KiB standard gRPC clients accept.

use std::time::Duration;

use berth_proto as pb;
use berth_tests::{Cluster, init_logging, next_offers, raw_scheduler, subscribe_raw};
use tonic::Code;

fn task(id: &str, resources: pb::Resources) -> pb::TaskInfo {
    pb::TaskInfo {
        task_id: id.to_string(),
        name: id.to_string(),
        resources: Some(resources),
        command: Some(pb::CommandInfo {
            shell: "sleep 600".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn small() -> pb::Resources {
    pb::Resources {
        cpus: 0.1,
        mem: 32.0,
        ..Default::default()
    }
}

fn accept(header: &pb::CallHeader, offers: &[&str], tasks: Vec<pb::TaskInfo>) -> pb::AcceptRequest {
    pb::AcceptRequest {
        header: Some(header.clone()),
        offer_ids: offers.iter().map(ToString::to_string).collect(),
        operations: vec![pb::Operation {
            operation: Some(pb::operation::Operation::Launch(pb::Launch { tasks })),
        }],
        filters: None,
    }
}

/// Asserts a call failed with `code` and a message containing `needle`.
fn refused<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, needle: &str) {
    match result {
        Ok(v) => panic!("expected {code:?} containing {needle:?}, got Ok({v:?})"),
        Err(s) => {
            assert_eq!(s.code(), code, "{}", s.message());
            assert!(
                s.message().contains(needle),
                "{:?} does not contain {needle:?}",
                s.message()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_accepts_are_refused_and_change_nothing() -> anyhow::Result<()> {
    init_logging();
    let cluster = Cluster::start(&["cpus:1;mem:512"]).await?;
    cluster.wait_agents(1, Duration::from_secs(10)).await?;
    let addr = cluster.master_addr();
    let mut client = raw_scheduler(&addr).await?;
    let mut a = subscribe_raw(&addr, "", "a").await?;
    let offers = next_offers(&mut a).await?;
    assert_eq!(offers.len(), 1);
    let offer = offers[0].id.clone();
    let h = a.header.clone();

    // Offer ids.
    refused(
        client
            .accept(accept(&h, &[], vec![task("t", small())]))
            .await,
        Code::InvalidArgument,
        "no offer",
    );
    refused(
        client
            .accept(accept(&h, &["nope-O1"], vec![task("t", small())]))
            .await,
        Code::InvalidArgument,
        "nope-O1",
    );
    refused(
        client
            .accept(accept(&h, &[&offer, &offer], vec![task("t", small())]))
            .await,
        Code::InvalidArgument,
        "more than once",
    );
    refused(
        client
            .accept(accept(&h, &["a/b"], vec![task("t", small())]))
            .await,
        Code::InvalidArgument,
        "offer id",
    );

    // Tasks.
    let huge = pb::Resources {
        cpus: 0.1,
        mem: 100_000.0,
        ..Default::default()
    };
    refused(
        client
            .accept(accept(&h, &[&offer], vec![task("big", huge)]))
            .await,
        Code::InvalidArgument,
        "need more than the offers hold",
    );
    refused(
        client
            .accept(accept(
                &h,
                &[&offer],
                vec![task("same", small()), task("same", small())],
            ))
            .await,
        Code::InvalidArgument,
        "appears twice",
    );
    // Containers and health checks.
    let with = |c: Option<pb::ContainerInfo>, hc: Option<pb::HealthCheck>| {
        let mut t = task("boxed", small());
        t.container = c;
        t.health_check = hc;
        t
    };
    let image = |i: &str| pb::ContainerInfo {
        image: i.into(),
        ..Default::default()
    };
    let tcp = |port: u32| pb::TcpCheck { port };
    for (bad, needle) in [
        (with(Some(image("")), None), "image must not be empty"),
        (with(Some(image("a b")), None), "without whitespace"),
        (
            with(
                Some(pb::ContainerInfo {
                    network: "overlay".into(),
                    ..image("busybox")
                }),
                None,
            ),
            "not one of bridge, host, none",
        ),
        (
            with(
                Some(pb::ContainerInfo {
                    port_mappings: vec![pb::PortMapping {
                        container_port: 0,
                        host_port: 0,
                        protocol: String::new(),
                    }],
                    ..image("busybox")
                }),
                None,
            ),
            "out of range",
        ),
        (
            with(
                None,
                Some(pb::HealthCheck {
                    tcp: Some(tcp(80)),
                    http: Some(pb::HttpCheck {
                        port: 80,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            ),
            "exactly one of command, http and tcp",
        ),
        (
            with(
                None,
                Some(pb::HealthCheck {
                    tcp: Some(tcp(70_000)),
                    ..Default::default()
                }),
            ),
            "out of range",
        ),
        (
            with(
                None,
                Some(pb::HealthCheck {
                    tcp: Some(tcp(80)),
                    interval_seconds: -1.0,
                    ..Default::default()
                }),
            ),
            "interval_seconds",
        ),
    ] {
        refused(
            client.accept(accept(&h, &[&offer], vec![bad])).await,
            Code::InvalidArgument,
            needle,
        );
    }
    // Fetched URIs and uploaded outputs.
    let fetching = |uris: Vec<pb::FetchUri>| {
        let mut t = task("fetch", small());
        if let Some(c) = t.command.as_mut() {
            c.uris = uris;
        }
        t
    };
    let uri = |url: &str, output_path: &str| pb::FetchUri {
        url: url.into(),
        output_path: output_path.into(),
        ..Default::default()
    };
    let uploading = |outputs: Vec<pb::OutputUpload>| {
        let mut t = task("upload", small());
        t.outputs = outputs;
        t
    };
    let output = |url: &str, paths: &[&str]| pb::OutputUpload {
        url: url.into(),
        paths: paths.iter().map(ToString::to_string).collect(),
        ..Default::default()
    };
    let long_url = format!("http://h/{}", "a".repeat(5000));
    for (bad, needle) in [
        (
            fetching(vec![uri("ftp://h/x", "")]),
            "uris[0]: url \"ftp://h/x\" has the unsupported scheme \"ftp\"",
        ),
        (
            fetching(vec![uri("http://h/a", ""), uri("https://h/x", "")]),
            "uris[1]: url \"https://h/x\" has the unsupported scheme",
        ),
        (fetching(vec![uri("no-scheme", "")]), "has no scheme"),
        (fetching(vec![uri("http://a b/", "")]), "does not parse"),
        (fetching(vec![uri("file://host/x", "")]), "absolute path"),
        (fetching(vec![uri("http://h/x", "/etc/x")]), "is absolute"),
        (
            fetching(vec![uri("http://h/x", "a/../../x")]),
            "must not contain \"..\"",
        ),
        (
            fetching(vec![uri("http://h/", "")]),
            "names no file; set output_path",
        ),
        (
            fetching(vec![uri(&long_url, "")]),
            "at most 4096 are allowed",
        ),
        (
            fetching(vec![uri("http://h/x", ""); 65]),
            "65 uris; at most 64 are allowed",
        ),
        (
            uploading(vec![output("http://h/put", &[])]),
            "outputs[0]: paths is empty",
        ),
        (
            uploading(vec![output("gopher://h/put", &["a"])]),
            "outputs[0]: url",
        ),
        (
            uploading(vec![output("http://h/put", &["../up"])]),
            "outputs[0]: paths[0]: path \"../up\" must not contain",
        ),
        (
            uploading(vec![output("http://h/put", &["/abs/**"])]),
            "is absolute",
        ),
        (
            uploading(vec![output("http://h/put", &["a/[z"])]),
            "outputs[0]: paths[0]: glob",
        ),
        (
            uploading(vec![pb::OutputUpload {
                exclude: vec!["x".into(); 257],
                ..output("http://h/put", &["a"])
            }]),
            "exclude: 257 globs; at most 256",
        ),
        (
            uploading(vec![pb::OutputUpload {
                when: 5,
                ..output("http://h/put", &["a"])
            }]),
            "when 5 is not",
        ),
        (
            uploading(vec![output("http://h/put", &["a"]); 17]),
            "17 outputs; at most 16 are allowed",
        ),
    ] {
        refused(
            client.accept(accept(&h, &[&offer], vec![bad])).await,
            Code::InvalidArgument,
            needle,
        );
    }
    for (bad, needle) in [
        ("a/b", "'/'"),
        ("..", ".."),
        ("x\ny", "control"),
        ("", "empty"),
    ] {
        refused(
            client
                .accept(accept(&h, &[&offer], vec![task(bad, small())]))
                .await,
            Code::InvalidArgument,
            needle,
        );
    }
    for (r, needle) in [
        (
            pb::Resources {
                cpus: -1.0,
                mem: 32.0,
                ..Default::default()
            },
            "negative",
        ),
        (
            pb::Resources {
                cpus: f64::NAN,
                mem: 32.0,
                ..Default::default()
            },
            "finite",
        ),
        (
            pb::Resources {
                cpus: 0.1,
                mem: 1e300,
                ..Default::default()
            },
            "large",
        ),
        (
            pb::Resources {
                cpus: 0.1,
                mem: 1e-310,
                ..Default::default()
            },
            "subnormal",
        ),
        (
            pb::Resources {
                cpus: 0.0,
                mem: 0.0,
                ..Default::default()
            },
            "task \"r\" asks for no cpus: every task needs a positive cpus request",
        ),
        (
            pb::Resources {
                cpus: 0.5,
                mem: 0.0,
                ..Default::default()
            },
            "task \"r\" asks for no mem: every task needs a positive mem request",
        ),
        (
            pb::Resources {
                cpus: 0.0001,
                mem: 32.0,
                ..Default::default()
            },
            "asks for no cpus",
        ),
    ] {
        refused(
            client
                .accept(accept(&h, &[&offer], vec![task("r", r)]))
                .await,
            Code::InvalidArgument,
            needle,
        );
    }
    // A container task needs what Docker accepts: 6 MiB and 0.01 cpus.
    for (cpus, mem, needle) in [
        (
            0.1,
            5.0,
            "task \"c\" asks for 5 mem; a container task needs at least 6",
        ),
        (
            0.005,
            32.0,
            "task \"c\" asks for 0.005 cpus; a container task needs at least 0.01",
        ),
    ] {
        let mut t = task(
            "c",
            pb::Resources {
                cpus,
                mem,
                ..Default::default()
            },
        );
        t.container = Some(pb::ContainerInfo {
            image: "busybox".into(),
            ..Default::default()
        });
        refused(
            client.accept(accept(&h, &[&offer], vec![t])).await,
            Code::InvalidArgument,
            needle,
        );
    }
    let mut no_command = task("nc", small());
    no_command.command = Some(pb::CommandInfo::default());
    refused(
        client.accept(accept(&h, &[&offer], vec![no_command])).await,
        Code::InvalidArgument,
        "`shell` or `argv`",
    );
    let mut wrong_agent = task("wa", small());
    wrong_agent.agent_id = "agent-other".into();
    refused(
        client
            .accept(accept(&h, &[&offer], vec![wrong_agent]))
            .await,
        Code::InvalidArgument,
        "names agent",
    );

    // Another framework's offer, and calls from outside any subscription.
    let b = subscribe_raw(&addr, "", "b").await?;
    refused(
        client
            .accept(accept(&b.header, &[&offer], vec![task("t", small())]))
            .await,
        Code::InvalidArgument,
        "belongs to",
    );
    // b's stream closes: its offers go back to the allocator.
    drop(b);
    let stranger = pb::CallHeader {
        framework_id: "fw-stranger".into(),
        stream_id: "s".into(),
    };
    refused(
        client.accept(accept(&stranger, &[&offer], vec![])).await,
        Code::NotFound,
        "is not registered",
    );
    let mut no_header = accept(&h, &[&offer], vec![]);
    no_header.header = None;
    refused(
        client.accept(no_header).await,
        Code::InvalidArgument,
        "header",
    );

    // Nothing changed: no task exists, and the same offer still works.
    let mut op = cluster.operator().await?;
    let tasks = op
        .list_tasks(pb::ListTasksRequest {
            framework_id: String::new(),
            include_completed: true,
        })
        .await?
        .into_inner()
        .tasks;
    assert!(tasks.is_empty(), "refused accepts launched {tasks:?}");
    let ok = client
        .accept(accept(&h, &[&offer], vec![task("good", small())]))
        .await?
        .into_inner();
    assert_eq!(ok.launched_task_ids, ["good"]);

    // The offer is used now: accepting it again is refused as such, and so
    // is a second task with an id that is already running.
    refused(
        client
            .accept(accept(&h, &[&offer], vec![task("t2", small())]))
            .await,
        Code::InvalidArgument,
        "rescinded or already used",
    );
    let more = next_offers(&mut a).await?;
    refused(
        client
            .accept(accept(&h, &[&more[0].id], vec![task("good", small())]))
            .await,
        Code::InvalidArgument,
        "already exists",
    );
    let tasks = op
        .list_tasks(pb::ListTasksRequest::default())
        .await?
        .into_inner()
        .tasks;
    assert_eq!(tasks.len(), 1);

    // Declined offers are gone too.
    client
        .decline(pb::DeclineRequest {
            header: Some(h.clone()),
            offer_ids: vec![more[0].id.clone()],
            filters: Some(pb::Filters {
                refuse_seconds: Some(0.0),
            }),
        })
        .await?;
    refused(
        client
            .accept(accept(&h, &[&more[0].id], vec![task("t3", small())]))
            .await,
        Code::InvalidArgument,
        "rescinded or already used",
    );
    refused(
        client
            .decline(pb::DeclineRequest {
                header: Some(h.clone()),
                offer_ids: vec!["x-O1".into()],
                filters: Some(pb::Filters {
                    refuse_seconds: Some(f64::NAN),
                }),
            })
            .await,
        Code::InvalidArgument,
        "refuse_seconds",
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn superseded_streams_and_unknown_frameworks_are_refused() -> anyhow::Result<()> {
    init_logging();
    let cluster = Cluster::start(&["cpus:1;mem:512"]).await?;
    let addr = cluster.master_addr();
    let mut client = raw_scheduler(&addr).await?;
    let mut first = subscribe_raw(&addr, "", "fw").await?;
    let id = first.header.framework_id.clone();
    let second = subscribe_raw(&addr, &id, "fw").await?;
    assert_ne!(first.header.stream_id, second.header.stream_id);

    // The old stream is told and closed; its calls are refused.
    let mut told = false;
    while let Ok(Some(ev)) = first.events.message().await {
        if let Some(pb::event::Event::Error(e)) = ev.event {
            assert!(e.message.contains("superseded"), "{}", e.message);
            told = true;
        }
    }
    assert!(told);
    let revive = |header: &pb::CallHeader| pb::ReviveRequest {
        header: Some(header.clone()),
        roles: vec![],
    };
    refused(
        client.revive(revive(&first.header)).await,
        Code::FailedPrecondition,
        "superseded",
    );
    client.revive(revive(&second.header)).await?;

    // Re-subscribing with an id the master never issued.
    let mut raw = raw_scheduler(&addr).await?;
    let unknown = raw
        .subscribe(pb::SubscribeRequest {
            framework: Some(pb::FrameworkInfo {
                id: "fw-never".into(),
                name: "x".into(),
                ..Default::default()
            }),
        })
        .await;
    refused(unknown.map(|_| ()), Code::NotFound, "not registered");

    // Invalid subscriptions.
    for (info, needle) in [
        (
            pb::FrameworkInfo {
                name: String::new(),
                ..Default::default()
            },
            "name",
        ),
        (
            pb::FrameworkInfo {
                name: "x".into(),
                roles: vec!["a/b".into()],
                ..Default::default()
            },
            "role",
        ),
        (
            pb::FrameworkInfo {
                name: "x".into(),
                failover_timeout_seconds: -1.0,
                ..Default::default()
            },
            "failover_timeout",
        ),
        (
            pb::FrameworkInfo {
                name: "x".into(),
                failover_timeout_seconds: f64::INFINITY,
                ..Default::default()
            },
            "failover_timeout",
        ),
    ] {
        let r = raw
            .subscribe(pb::SubscribeRequest {
                framework: Some(info),
            })
            .await;
        refused(r.map(|_| ()), Code::InvalidArgument, needle);
    }
    // Suppressing a role the framework is not subscribed to.
    refused(
        client
            .suppress(pb::SuppressRequest {
                header: Some(second.header.clone()),
                roles: vec!["other".into()],
            })
            .await,
        Code::InvalidArgument,
        "not subscribed to role",
    );
    // Killing a task that does not exist; acknowledging with a bad uuid.
    refused(
        client
            .kill(pb::KillRequest {
                header: Some(second.header.clone()),
                task_id: "ghost".into(),
                grace_period_seconds: None,
            })
            .await,
        Code::NotFound,
        "ghost",
    );
    refused(
        client
            .acknowledge(pb::AcknowledgeRequest {
                header: Some(second.header.clone()),
                agent_id: "agent-x".into(),
                task_id: "t".into(),
                uuid: vec![1, 2, 3],
            })
            .await,
        Code::InvalidArgument,
        "16 bytes",
    );
    let frameworks = cluster
        .operator()
        .await?
        .list_frameworks(pb::Empty {})
        .await?
        .into_inner()
        .frameworks;
    assert_eq!(
        frameworks.len(),
        1,
        "refused subscriptions registered nothing"
    );

    // A stream id the master never opened is called unknown, not
    // superseded.
    let made_up = pb::CallHeader {
        stream_id: "made-up".into(),
        ..second.header.clone()
    };
    refused(
        client.revive(revive(&made_up)).await,
        Code::FailedPrecondition,
        "unknown stream id \"made-up\"",
    );
    // A framework whose stream ended is not subscribed (it may come back).
    let third = subscribe_raw(&addr, "", "gone").await?;
    let third_header = third.header.clone();
    drop(third);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match client.revive(revive(&third_header)).await {
            Err(e) if e.code() == Code::FailedPrecondition => {
                assert!(
                    e.message().contains("is not subscribed to this master"),
                    "{}",
                    e.message()
                );
                break;
            }
            other => assert!(
                tokio::time::Instant::now() < deadline,
                "a closed stream's framework still answers {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A torn-down framework is not found, on every call.
    client
        .teardown(pb::TeardownRequest {
            header: Some(second.header.clone()),
        })
        .await?;
    refused(
        client.revive(revive(&second.header)).await,
        Code::NotFound,
        "is not registered (torn down",
    );
    refused(
        client
            .kill(pb::KillRequest {
                header: Some(second.header.clone()),
                task_id: "t".into(),
                grace_period_seconds: None,
            })
            .await,
        Code::NotFound,
        "is not registered",
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_operator_and_agent_input_is_refused() -> anyhow::Result<()> {
    init_logging();
    let cluster = Cluster::start(&[]).await?;
    let mut op = cluster.operator().await?;
    refused(
        op.drain_agent(pb::AgentRef {
            agent_id: "agent-none".into(),
        })
        .await,
        Code::NotFound,
        "agent-none",
    );
    refused(
        op.drain_agent(pb::AgentRef {
            agent_id: String::new(),
        })
        .await,
        Code::InvalidArgument,
        "empty",
    );
    refused(
        op.set_weight(pb::SetWeightRequest {
            role: "web".into(),
            weight: f64::NAN,
        })
        .await,
        Code::InvalidArgument,
        "weight",
    );
    refused(
        op.set_weight(pb::SetWeightRequest {
            role: "web".into(),
            weight: 0.0,
        })
        .await,
        Code::InvalidArgument,
        "weight",
    );
    let quota = pb::SetQuotaRequest {
        role: "web".into(),
        guarantee: Some(pb::Resources {
            cpus: 4.0,
            ..Default::default()
        }),
        limit: Some(pb::Resources {
            cpus: 2.0,
            ..Default::default()
        }),
    };
    refused(op.set_quota(quota).await, Code::InvalidArgument, "");
    refused(
        op.remove_quota(pb::RoleRef { role: "web".into() }).await,
        Code::NotFound,
        "no quota",
    );
    let roles = op.list_roles(pb::Empty {}).await?.into_inner().roles;
    assert!(
        roles.iter().all(|r| r.name != "web"),
        "refused calls created role state: {roles:?}"
    );

    // An agent registering with invalid resources is refused.
    let ch = tonic::transport::Channel::from_shared(pb::endpoint_uri(&cluster.master_addr()))?
        .connect()
        .await?;
    let mut agent_api = pb::agent_api_client::AgentApiClient::new(ch);
    for (resources, needle) in [
        (
            pb::Resources {
                cpus: f64::NAN,
                ..Default::default()
            },
            "cpus",
        ),
        (
            pb::Resources {
                cpus: 1.0,
                mem: -5.0,
                ..Default::default()
            },
            "mem",
        ),
        (
            pb::Resources {
                cpus: 1.0,
                ports: vec![pb::Range { begin: 10, end: 1 }],
                ..Default::default()
            },
            "port",
        ),
    ] {
        let register = pb::AgentMessage {
            message: Some(pb::agent_message::Message::Register(pb::Register {
                agent_id: String::new(),
                info: Some(pb::AgentInfo {
                    hostname: "h".into(),
                    resources: Some(resources),
                    ..Default::default()
                }),
                tasks: vec![],
            })),
        };
        let r = agent_api.attach(tokio_stream::iter(vec![register])).await;
        refused(r.map(|_| ()), Code::InvalidArgument, needle);
    }
    let first_not_register = pb::AgentMessage {
        message: Some(pb::agent_message::Message::Pong(pb::Pong { seq: 1 })),
    };
    let r = agent_api
        .attach(tokio_stream::iter(vec![first_not_register]))
        .await;
    refused(r.map(|_| ()), Code::InvalidArgument, "Register");
    let agents = op.list_agents(pb::Empty {}).await?.into_inner().agents;
    assert!(
        agents.is_empty(),
        "refused registrations registered {agents:?}"
    );
    Ok(())
}

/// The leader's pending work, all of it.
async fn pending_of(
    op: &mut pb::operator_client::OperatorClient<tonic::transport::Channel>,
) -> anyhow::Result<Vec<pb::PendingView>> {
    Ok(op
        .list_pending(pb::ListPendingRequest::default())
        .await?
        .into_inner()
        .tasks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pending_work_is_refused_and_changes_nothing() -> anyhow::Result<()> {
    init_logging();
    let cluster = Cluster::start(&[]).await?;
    let addr = cluster.master_addr();
    let mut client = raw_scheduler(&addr).await?;
    let fw = subscribe_raw(&addr, "", "pending").await?;
    let h = fw.header.clone();
    let good = pb::PendingTask {
        task_id: "big".into(),
        name: "big".into(),
        resources: Some(pb::Resources {
            cpus: 1.0,
            mem: 4096.0,
            ..Default::default()
        }),
        reason: "no offer fits: 2 short on mem".into(),
        considered: 2,
        short_on: Some(pb::DimensionCounts {
            mem: 2,
            ..Default::default()
        }),
        ..Default::default()
    };
    let update = |header: Option<pb::CallHeader>, tasks: Vec<pb::PendingTask>| {
        pb::UpdatePendingRequest { header, tasks }
    };
    client
        .update_pending(update(Some(h.clone()), vec![good.clone()]))
        .await?;
    let mut op = cluster.operator().await?;
    let before = pending_of(&mut op).await?;
    assert_eq!(before.len(), 1);
    assert_eq!(
        before[0].task.as_ref().map(|t| t.task_id.as_str()),
        Some("big")
    );

    // Callers.
    let header = |framework_id: &str, stream_id: &str| {
        Some(pb::CallHeader {
            framework_id: framework_id.into(),
            stream_id: stream_id.into(),
        })
    };
    for (header, code, needle) in [
        (None, Code::InvalidArgument, "header is missing"),
        (
            header("a/b", &h.stream_id),
            Code::InvalidArgument,
            "framework id",
        ),
        (
            header("fw-never", &h.stream_id),
            Code::NotFound,
            "is not registered",
        ),
        (
            header(&h.framework_id, "made-up-stream"),
            Code::FailedPrecondition,
            "unknown stream id \"made-up-stream\"",
        ),
    ] {
        refused(
            client.update_pending(update(header, Vec::new())).await,
            code,
            needle,
        );
    }

    // Lists.
    let with = |f: &dyn Fn(&mut pb::PendingTask)| {
        let mut t = good.clone();
        f(&mut t);
        vec![t]
    };
    let many: Vec<pb::PendingTask> = (0..10_001)
        .map(|i| pb::PendingTask {
            task_id: format!("t{i}"),
            ..Default::default()
        })
        .collect();
    for (tasks, needle) in [
        (many, "at most 10000 pending tasks"),
        (vec![good.clone(), good.clone()], "appears twice"),
        (with(&|t| t.task_id = "a b".into()), "whitespace"),
        (with(&|t| t.task_id = String::new()), "must not be empty"),
        (
            with(&|t| t.name = "n".repeat(1025)),
            "name longer than 1024",
        ),
        (
            with(&|t| t.resources.as_mut().expect("set").mem = f64::NAN),
            "mem",
        ),
        (
            with(&|t| t.resources.as_mut().expect("set").cpus = -1.0),
            "cpus",
        ),
        (
            with(&|t| t.reason = "r".repeat(4097)),
            "reason longer than 4096",
        ),
        (
            with(&|t| t.reason = "two\nlines".into()),
            "control characters",
        ),
        (
            with(&|t| t.considered = 1),
            "2 short on mem, but only 1 of 1",
        ),
        (with(&|t| t.fit = 3), "fit (3) is more than considered (2)"),
        (
            with(&|t| {
                t.filtered = vec![pb::ConstraintCount {
                    constraint: String::new(),
                    count: 0,
                }]
            }),
            "constraint text",
        ),
        (with(&|t| t.since = f64::NAN), "since"),
    ] {
        refused(
            client.update_pending(update(Some(h.clone()), tasks)).await,
            Code::InvalidArgument,
            needle,
        );
    }
    refused(
        op.list_pending(pb::ListPendingRequest {
            framework_id: "a/b".into(),
        })
        .await,
        Code::InvalidArgument,
        "framework id",
    );
    assert_eq!(pending_of(&mut op).await?, before, "nothing changed");

    // An empty list clears the framework's pending work.
    client
        .update_pending(update(Some(h.clone()), Vec::new()))
        .await?;
    assert!(pending_of(&mut op).await?.is_empty());
    Ok(())
}

/// One megabyte: ids, names, roles and addresses this long are refused
/// with errors that quote them cut short (tonic refuses requests over
/// 4 MiB before they reach berth, so this is as long as an input gets).
const MB: usize = 1 << 20;

fn huge(c: char) -> String {
    c.to_string().repeat(MB)
}

/// What an error costs a gRPC client in trailers: its message
/// percent-encoded (at most three bytes per byte) and the other metadata.
fn trailer_bytes(s: &tonic::Status) -> usize {
    3 * s.message().len()
        + s.metadata()
            .as_ref()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len())
            .sum::<usize>()
}

/// Asserts `result` is an error with `code` saying `needle`, whose message
/// stays short whatever the input's size (it quotes at most 64 bytes of
/// any value) and whose trailers fit the 8 KiB standard clients accept.
fn refused_short<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, tonic::Status>,
    code: Code,
    needle: &str,
) {
    let s = match result {
        Ok(v) => panic!("{what}: expected {code:?} containing {needle:?}, got Ok({v:?})"),
        Err(s) => s,
    };
    let shown: String = s.message().chars().take(300).collect();
    assert_eq!(s.code(), code, "{what}: {shown}");
    assert!(
        s.message().contains(needle),
        "{what}: {shown:?} does not contain {needle:?}"
    );
    assert!(
        s.message().len() <= 1024,
        "{what}: a {}-byte message: {shown}",
        s.message().len()
    );
    assert!(
        trailer_bytes(&s) < 8 * 1024,
        "{what}: {} bytes of trailers",
        trailer_bytes(&s)
    );
}

/// Every call that takes an id, a name, a role or an address, given a
/// megabyte of it, is refused with its specific error, quoting the value
/// cut short, and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn megabyte_inputs_get_short_specific_errors_on_every_call() -> anyhow::Result<()> {
    init_logging();
    let cluster = Cluster::start(&["cpus:1;mem:512"]).await?;
    cluster.wait_agents(1, Duration::from_secs(10)).await?;
    let addr = cluster.master_addr();
    let mut client = raw_scheduler(&addr).await?;
    let mut fw = subscribe_raw(&addr, "", "huge").await?;
    let offers = next_offers(&mut fw).await?;
    let offer = offers[0].id.clone();
    let h = fw.header.clone();
    let big = huge('x');
    let spaced = format!("a {}", huge('y'));

    // Subscribe.
    let info = |f: &dyn Fn(&mut pb::FrameworkInfo)| {
        let mut i = pb::FrameworkInfo {
            name: "x".into(),
            ..Default::default()
        };
        f(&mut i);
        pb::SubscribeRequest { framework: Some(i) }
    };
    for (what, req, code, needle) in [
        (
            "subscribe id",
            info(&|i| i.id = big.clone()),
            Code::InvalidArgument,
            "invalid framework id \"xxx",
        ),
        (
            "subscribe name",
            info(&|i| i.name = big.clone()),
            Code::InvalidArgument,
            "at most 1024 bytes",
        ),
        (
            "subscribe hostname",
            info(&|i| i.hostname = big.clone()),
            Code::InvalidArgument,
            "at most 1024 bytes",
        ),
        (
            "subscribe role",
            info(&|i| i.roles = vec![spaced.clone()]),
            Code::InvalidArgument,
            "(1048578 bytes): must be at most 255 bytes",
        ),
    ] {
        let r = client.subscribe(req).await;
        refused_short(what, r.map(|_| ()), code, needle);
    }

    // Every call, with a megabyte framework id and with a megabyte stream id.
    let bad_fw = pb::CallHeader {
        framework_id: big.clone(),
        stream_id: h.stream_id.clone(),
    };
    let bad_stream = pb::CallHeader {
        framework_id: h.framework_id.clone(),
        stream_id: big.clone(),
    };
    for (header, code, needle) in [
        (
            &bad_fw,
            Code::InvalidArgument,
            "(1048576 bytes): must be at most 255 bytes",
        ),
        (
            &bad_stream,
            Code::FailedPrecondition,
            "unknown stream id \"xxx",
        ),
    ] {
        let hd = Some(header.clone());
        refused_short(
            "accept",
            client.accept(accept(header, &[&offer], vec![])).await,
            code,
            needle,
        );
        let r = client
            .decline(pb::DeclineRequest {
                header: hd.clone(),
                offer_ids: vec![offer.clone()],
                filters: None,
            })
            .await;
        refused_short("decline", r, code, needle);
        let r = client
            .revive(pb::ReviveRequest {
                header: hd.clone(),
                roles: vec![],
            })
            .await;
        refused_short("revive", r, code, needle);
        let r = client
            .suppress(pb::SuppressRequest {
                header: hd.clone(),
                roles: vec![],
            })
            .await;
        refused_short("suppress", r, code, needle);
        let r = client
            .kill(pb::KillRequest {
                header: hd.clone(),
                task_id: "t".into(),
                grace_period_seconds: None,
            })
            .await;
        refused_short("kill", r, code, needle);
        let r = client
            .acknowledge(pb::AcknowledgeRequest {
                header: hd.clone(),
                agent_id: "a".into(),
                task_id: "t".into(),
                uuid: vec![0; 16],
            })
            .await;
        refused_short("acknowledge", r, code, needle);
        let r = client
            .reconcile(pb::ReconcileRequest {
                header: hd.clone(),
                tasks: vec![],
            })
            .await;
        refused_short("reconcile", r, code, needle);
        let r = client
            .update_pending(pb::UpdatePendingRequest {
                header: hd.clone(),
                tasks: vec![],
            })
            .await;
        refused_short("update pending", r, code, needle);
        let r = client
            .teardown(pb::TeardownRequest { header: hd.clone() })
            .await;
        refused_short("teardown", r, code, needle);
    }

    // The ids, names and values inside the calls.
    let long_id = "(1048576 bytes): must be at most 255 bytes";
    refused_short(
        "accept offer id",
        client
            .accept(accept(&h, &[&big], vec![task("t", small())]))
            .await,
        Code::InvalidArgument,
        long_id,
    );
    let with = |f: &dyn Fn(&mut pb::TaskInfo)| {
        let mut t = task("t", small());
        f(&mut t);
        vec![t]
    };
    let image = |f: &dyn Fn(&mut pb::ContainerInfo)| {
        with(&|t| {
            let mut c = pb::ContainerInfo {
                image: "busybox".into(),
                ..Default::default()
            };
            f(&mut c);
            t.container = Some(c);
        })
    };
    for (what, tasks, needle) in [
        ("task id", with(&|t| t.task_id = big.clone()), long_id),
        (
            "task id with a space",
            with(&|t| t.task_id = spaced.clone()),
            "invalid task id \"a yyy",
        ),
        (
            "task name",
            with(&|t| t.name = big.clone()),
            "name longer than 1024 bytes",
        ),
        (
            "task agent id",
            with(&|t| t.agent_id = big.clone()),
            "(1048576 bytes) but the offers are on agent",
        ),
        (
            "container image",
            image(&|c| c.image = big.clone()),
            "(1048576 bytes) must be at most 255 bytes",
        ),
        (
            "container network",
            image(&|c| c.network = big.clone()),
            "(1048576 bytes) is not one of bridge, host, none",
        ),
        (
            "port protocol",
            image(&|c| {
                c.port_mappings = vec![pb::PortMapping {
                    container_port: 80,
                    host_port: 0,
                    protocol: big.clone(),
                }]
            }),
            "(1048576 bytes) is not tcp or udp",
        ),
        (
            "volume",
            image(&|c| {
                c.volumes = vec![pb::Volume {
                    host_path: big.clone(),
                    container_path: "/v".into(),
                    ..Default::default()
                }]
            }),
            "needs absolute paths on both sides",
        ),
        (
            "environment variable",
            with(&|t| {
                if let Some(c) = t.command.as_mut() {
                    c.env.insert(format!("{big}="), "v".into());
                }
            }),
            "invalid environment variable name",
        ),
        (
            "fetched url",
            with(&|t| {
                if let Some(c) = t.command.as_mut() {
                    c.uris = vec![pb::FetchUri {
                        url: big.clone(),
                        ..Default::default()
                    }];
                }
            }),
            "at most 4096 are allowed",
        ),
        (
            "output name",
            with(&|t| {
                t.outputs = vec![pb::OutputUpload {
                    url: "http://h/put".into(),
                    paths: vec!["a".into()],
                    name: big.clone(),
                    ..Default::default()
                }]
            }),
            "at most 255 are allowed",
        ),
    ] {
        refused_short(
            what,
            client.accept(accept(&h, &[&offer], tasks)).await,
            Code::InvalidArgument,
            needle,
        );
    }
    // A list of bad ids: the first is reported, cut short.
    let r = client
        .decline(pb::DeclineRequest {
            header: Some(h.clone()),
            offer_ids: vec![big.clone(), big.clone(), big.clone()],
            filters: None,
        })
        .await;
    refused_short("decline ids", r, Code::InvalidArgument, long_id);
    for (what, roles) in [
        ("revive", vec![big.clone()]),
        ("suppress", vec![spaced.clone()]),
    ] {
        let r = if what == "revive" {
            client
                .revive(pb::ReviveRequest {
                    header: Some(h.clone()),
                    roles,
                })
                .await
        } else {
            client
                .suppress(pb::SuppressRequest {
                    header: Some(h.clone()),
                    roles,
                })
                .await
        };
        refused_short(what, r, Code::InvalidArgument, "invalid role");
    }
    let r = client
        .kill(pb::KillRequest {
            header: Some(h.clone()),
            task_id: big.clone(),
            grace_period_seconds: None,
        })
        .await;
    refused_short("kill task id", r, Code::InvalidArgument, long_id);
    for (agent_id, task_id) in [(big.clone(), "t".to_string()), ("a".into(), big.clone())] {
        let r = client
            .acknowledge(pb::AcknowledgeRequest {
                header: Some(h.clone()),
                agent_id,
                task_id,
                uuid: vec![0; 16],
            })
            .await;
        refused_short("acknowledge ids", r, Code::InvalidArgument, long_id);
    }
    let r = client
        .reconcile(pb::ReconcileRequest {
            header: Some(h.clone()),
            tasks: vec![
                pb::ReconcileTask {
                    task_id: big.clone(),
                    agent_id: String::new(),
                };
                3
            ],
        })
        .await;
    refused_short("reconcile ids", r, Code::InvalidArgument, long_id);
    let r = client
        .update_pending(pb::UpdatePendingRequest {
            header: Some(h.clone()),
            tasks: vec![pb::PendingTask {
                task_id: spaced.clone(),
                ..Default::default()
            }],
        })
        .await;
    refused_short(
        "pending task id",
        r,
        Code::InvalidArgument,
        "pending task 0 (\"a yyy",
    );

    // Operator calls.
    let mut op = cluster.operator().await?;
    let agent_ref = || pb::AgentRef {
        agent_id: big.clone(),
    };
    refused_short(
        "drain",
        op.drain_agent(agent_ref()).await,
        Code::InvalidArgument,
        long_id,
    );
    refused_short(
        "reactivate",
        op.reactivate_agent(agent_ref()).await,
        Code::InvalidArgument,
        long_id,
    );
    let r = op
        .list_tasks(pb::ListTasksRequest {
            framework_id: big.clone(),
            include_completed: true,
        })
        .await;
    refused_short("list tasks", r, Code::InvalidArgument, long_id);
    let r = op
        .list_pending(pb::ListPendingRequest {
            framework_id: big.clone(),
        })
        .await;
    refused_short("list pending", r, Code::InvalidArgument, long_id);
    let r = op
        .set_weight(pb::SetWeightRequest {
            role: big.clone(),
            weight: 1.0,
        })
        .await;
    refused_short("set weight", r, Code::InvalidArgument, long_id);
    let r = op
        .set_quota(pb::SetQuotaRequest {
            role: big.clone(),
            guarantee: Some(small()),
            limit: None,
        })
        .await;
    refused_short("set quota", r, Code::InvalidArgument, long_id);
    let r = op.remove_quota(pb::RoleRef { role: big.clone() }).await;
    refused_short("remove quota", r, Code::InvalidArgument, long_id);
    let r = op
        .add_member(pb::AddMemberRequest {
            id: 9,
            address: format!("{big}:5050"),
        })
        .await;
    refused_short(
        "add member",
        r,
        Code::InvalidArgument,
        "(1048581 bytes) is 1048581 bytes; at most 255",
    );

    // Agent registrations.
    let ch = tonic::transport::Channel::from_shared(pb::endpoint_uri(&addr))?
        .connect()
        .await?;
    let mut agent_api = pb::agent_api_client::AgentApiClient::new(ch);
    let register = |f: &dyn Fn(&mut pb::Register)| {
        let mut r = pb::Register {
            agent_id: String::new(),
            info: Some(pb::AgentInfo {
                hostname: "h".into(),
                address: "127.0.0.1:1".into(),
                resources: Some(small()),
                ..Default::default()
            }),
            tasks: vec![],
        };
        f(&mut r);
        pb::AgentMessage {
            message: Some(pb::agent_message::Message::Register(r)),
        }
    };
    let info = |f: &dyn Fn(&mut pb::AgentInfo)| {
        register(&|r| {
            if let Some(i) = r.info.as_mut() {
                f(i);
            }
        })
    };
    for (what, message, needle) in [
        ("agent id", register(&|r| r.agent_id = big.clone()), long_id),
        (
            "hostname",
            info(&|i| i.hostname = big.clone()),
            "hostname must be 1 to 1024 bytes",
        ),
        (
            "address",
            info(&|i| i.address = big.clone()),
            "at most 255 are allowed",
        ),
        (
            "attribute",
            info(&|i| {
                i.attributes = vec![pb::Attribute {
                    name: big.clone(),
                    value: "v".into(),
                }]
            }),
            "(1048576 bytes) must be 1 to 255 bytes",
        ),
        (
            "reserved role",
            info(&|i| {
                i.reserved.insert(big.clone(), small());
            }),
            long_id,
        ),
        (
            "task's framework",
            register(&|r| {
                r.tasks = vec![pb::AgentTask {
                    framework_id: big.clone(),
                    task: Some(task("t", small())),
                    state: pb::TaskState::TaskRunning as i32,
                }]
            }),
            long_id,
        ),
    ] {
        let r = agent_api.attach(tokio_stream::iter(vec![message])).await;
        refused_short(what, r.map(|_| ()), Code::InvalidArgument, needle);
    }

    // The agent's own ReadLog.
    let agents = op.list_agents(pb::Empty {}).await?.into_inner().agents;
    assert_eq!(agents.len(), 1, "refused registrations registered nothing");
    let agent_addr = agents[0]
        .info
        .as_ref()
        .map(|i| i.address.clone())
        .unwrap_or_default();
    let ch = tonic::transport::Channel::from_shared(pb::endpoint_uri(&agent_addr))?
        .connect()
        .await?;
    let mut logs = pb::agent_client::AgentClient::new(ch);
    for (task_id, framework_id) in [(big.clone(), String::new()), ("t".into(), big.clone())] {
        let r = logs
            .read_log(pb::ReadLogRequest {
                task_id,
                framework_id,
                ..Default::default()
            })
            .await;
        refused_short("read log", r.map(|_| ()), Code::InvalidArgument, long_id);
    }
    let r = logs
        .read_log(pb::ReadLogRequest {
            task_id: "x".repeat(255),
            framework_id: "f".repeat(255),
            ..Default::default()
        })
        .await;
    refused_short(
        "read log of an unknown task",
        r.map(|_| ()),
        Code::NotFound,
        "(255 bytes) of framework",
    );

    // Over the 4 MiB message limit: refused before berth sees it, with the
    // code scheduler.proto documents (tonic's OUT_OF_RANGE).
    let r = client
        .accept(accept(
            &h,
            &[&offer],
            vec![task(&"z".repeat(5 * MB), small())],
        ))
        .await;
    refused_short(
        "a 5 MiB accept",
        r,
        Code::OutOfRange,
        "decoded message length too large",
    );

    // Nothing changed: one framework, no task, no role state; the offer
    // still launches.
    let state = op.get_state(pb::Empty {}).await?.into_inner();
    assert_eq!(state.frameworks.len(), 1);
    assert!(state.tasks.is_empty(), "{:?}", state.tasks);
    let ok = client
        .accept(accept(&h, &[&offer], vec![task("good", small())]))
        .await?
        .into_inner();
    assert_eq!(ok.launched_task_ids, ["good"]);
    Ok(())
}
