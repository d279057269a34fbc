//! Bad input gets a specific error and changes nothing. These tests speak
//! raw gRPC, so they can send what the SDK would refuse to build.

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
            "some cpus or mem",
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
        Code::FailedPrecondition,
        "not subscribed",
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
            Code::FailedPrecondition,
            "not subscribed",
        ),
        (
            header(&h.framework_id, "old-stream"),
            Code::FailedPrecondition,
            "superseded",
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
