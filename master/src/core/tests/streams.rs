//! Answers and streams as data: what the handlers push to answer callers
//! and to open and end the streams of frameworks and agents (on the fake
//! Raft node of `handlers`, with no IO), and what the shell does with it.

use super::handlers::{Harness, agent_register, framework_of, subscribed_answer, take_actions};
use super::*;

#[test]
fn a_newer_subscription_ends_the_old_stream_with_superseded_then_answers() {
    let mut h = Harness::new();
    let old = h.subscribed("ci");
    let fw = framework_of(&old);
    h.subscribe_as(&old.framework_id, "ci", Caller::new(2));
    assert_eq!(take_actions(&mut h.core), Vec::new());

    h.commit();
    let answer = subscribed_answer(&h.core, Caller::new(2), &fw);
    assert_eq!(
        take_actions(&mut h.core),
        vec![
            Action::CloseFramework {
                framework: fw.clone(),
                stream_id: old.stream_id.clone(),
                last: Some(Ok(pb::event::Event::Error(pb::Error {
                    message: "superseded by a newer subscription".into(),
                }))),
            },
            answer,
        ]
    );
    assert_ne!(h.core.frameworks[&fw].stream_id, old.stream_id);
}

#[test]
fn an_agent_registering_on_a_new_connection_ends_its_old_stream_then_is_answered() {
    let mut h = Harness::new();
    let agent = h.registered(1);
    h.register(2, agent.as_str());
    assert_eq!(take_actions(&mut h.core), Vec::new());

    h.commit();
    assert_eq!(
        take_actions(&mut h.core),
        vec![
            Action::CloseAgent {
                agent: agent.clone(),
                conn: 1,
            },
            Action::Reply(Reply::Register {
                conn: 2,
                result: Ok(Registered {
                    agent: agent.clone(),
                    first: pb::Registered {
                        agent_id: agent.to_string(),
                        master_id: "m1".into(),
                        ping_interval_seconds: h.core.config.agent_ping_interval.as_secs_f64(),
                    },
                }),
            }),
        ]
    );
    assert_eq!(h.core.agents[&agent].conn, 2);
}

#[test]
fn a_refused_registration_is_answered_at_once_and_proposes_nothing() {
    let mut h = Harness::new();
    let mut register = agent_register("");
    if let Some(info) = register.info.as_mut() {
        info.hostname = " ".into();
    }
    h.core.register_agent(5, register);
    assert_eq!(
        take_actions(&mut h.core),
        vec![Action::Reply(Reply::Register {
            conn: 5,
            result: Err(CallError::InvalidArgument(
                "register: hostname must be 1 to 1024 bytes".into()
            )),
        })]
    );
    assert!(h.node.proposed().is_empty());
    h.assert_nothing_parked();
}

#[test]
fn stepping_down_ends_every_stream_frameworks_told_to_find_the_leader() {
    let mut h = Harness::new();
    let agent = h.registered(1);
    let header = h.subscribed("ci");
    h.core.step_down();
    assert_eq!(
        take_actions(&mut h.core),
        vec![
            Action::CloseFramework {
                framework: framework_of(&header),
                stream_id: header.stream_id.clone(),
                last: Some(Err(CallError::NotLeader { leader: None })),
            },
            Action::CloseAgent { agent, conn: 1 },
        ]
    );
    assert!(h.core.frameworks.is_empty() && h.core.agents.is_empty());
}

#[test]
fn a_call_that_changes_nothing_durable_is_answered_at_once() {
    let mut h = Harness::new();
    let header = h.subscribed("ci");
    let revive = pb::ReviveRequest {
        header: Some(header.clone()),
        roles: Vec::new(),
    };
    h.core.call(SchedulerCall::Revive(revive), Caller::new(9));
    assert_eq!(
        take_actions(&mut h.core),
        vec![Action::Reply(Reply::Call {
            to: Caller::new(9),
            result: Ok(CallReply::Empty),
        })]
    );
    let stale = pb::CallHeader {
        stream_id: "made-up".into(),
        ..header
    };
    let revive = pb::ReviveRequest {
        header: Some(stale),
        roles: Vec::new(),
    };
    h.core.call(SchedulerCall::Revive(revive), Caller::new(10));
    match take_actions(&mut h.core).as_slice() {
        [
            Action::Reply(Reply::Call {
                to,
                result: Err(CallError::FailedPrecondition(m)),
            }),
        ] => {
            assert_eq!(*to, Caller::new(10));
            assert!(m.starts_with("unknown stream id \"made-up\""), "{m}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(h.node.proposed().is_empty());
}

#[test]
fn a_teardown_is_answered_once_applied_after_the_stream_ends() {
    let mut h = Harness::new();
    let (header, agent) = h.launched();
    let fw = framework_of(&header);
    let teardown = pb::TeardownRequest {
        header: Some(header.clone()),
    };
    h.core
        .call(SchedulerCall::Teardown(teardown), Caller::new(4));
    assert_eq!(take_actions(&mut h.core), Vec::new());

    h.commit();
    assert_eq!(
        take_actions(&mut h.core),
        vec![
            Action::ToAgent {
                agent,
                message: pb::master_message::Message::ShutdownFramework(pb::ShutdownFramework {
                    framework_id: fw.to_string(),
                }),
            },
            Action::CloseFramework {
                framework: fw.clone(),
                stream_id: header.stream_id.clone(),
                last: Some(Ok(pb::event::Event::Error(pb::Error {
                    message: "framework removed: FRAMEWORK_TEARDOWN".into(),
                }))),
            },
            Action::Reply(Reply::Call {
                to: Caller::new(4),
                result: Ok(CallReply::Empty),
            }),
        ]
    );
    h.assert_nothing_parked();
}

#[test]
fn a_follower_redirects_every_caller_to_the_leader() {
    let mut h = Harness::new();
    h.core.step_down();
    h.core.members.insert(2, "10.0.0.2:5050".into());
    let following = RaftStatus {
        leader_id: 2,
        role: StateRole::Follower,
        ..h.core.raft_status.borrow().clone()
    };
    h.node.status.send(following).unwrap();
    let redirect = CallError::NotLeader {
        leader: Some("10.0.0.2:5050".into()),
    };
    let inputs = [
        Input::AgentRegister {
            conn: 3,
            register: agent_register(""),
        },
        Input::Call(
            SchedulerCall::Revive(pb::ReviveRequest::default()),
            Caller::new(4),
        ),
        Input::Operator(OperatorCall::Agents, false, Caller::new(5)),
        Input::Operator(OperatorCall::Agents, true, Caller::new(6)),
    ];
    for input in inputs {
        h.core.handle(input);
    }
    assert_eq!(
        take_actions(&mut h.core),
        vec![
            Action::Reply(Reply::Register {
                conn: 3,
                result: Err(redirect.clone()),
            }),
            Action::Reply(Reply::Call {
                to: Caller::new(4),
                result: Err(redirect.clone()),
            }),
            Action::Reply(Reply::Operator {
                to: Caller::new(5),
                result: Err(redirect.clone()),
            }),
            // A stale read is served from this master's registry.
            Action::Reply(Reply::Operator {
                to: Caller::new(6),
                result: Ok(OperatorReply::Agents(pb::AgentList { agents: Vec::new() })),
            }),
        ]
    );
    assert!(h.node.proposed().is_empty());
}

// The shell: what executing the answers does with the channels.

#[test]
fn the_shell_opens_a_subscription_with_subscribed_and_ends_it_with_the_last_event() {
    let mut h = Harness::new();
    let (reply, mut answer) = oneshot::channel();
    let input = h.core.park(Request::Subscribe {
        info: pb::FrameworkInfo {
            name: "ci".into(),
            ..Default::default()
        },
        reply,
    });
    h.core.handle(input.unwrap());
    h.commit();
    h.core.execute_actions();

    let mut sub = answer.try_recv().unwrap().unwrap();
    match sub.events.try_recv().unwrap().unwrap().event {
        Some(pb::event::Event::Subscribed(s)) => {
            assert_eq!(s.framework_id, sub.framework.as_str());
            assert_eq!(s.stream_id, sub.stream_id);
            assert_eq!(s.master_id, "m1");
        }
        other => panic!("expected SUBSCRIBED, got {other:?}"),
    }
    assert!(sub.events.try_recv().is_err());

    h.core.step_down();
    h.core.execute_actions();
    assert_eq!(
        sub.events.try_recv().unwrap().unwrap_err(),
        CallError::NotLeader { leader: None }
    );
    assert_eq!(
        sub.events.try_recv().unwrap_err(),
        mpsc::error::TryRecvError::Disconnected
    );
}

#[test]
fn the_shell_disconnects_an_agent_whose_stream_closed_before_its_answer() {
    let mut h = Harness::new();
    let (tx, stream) = mpsc::channel(AGENT_QUEUE);
    let (reply, mut answer) = oneshot::channel();
    let input = h.core.park(Request::AgentRegister {
        conn: 1,
        register: agent_register(""),
        tx,
        reply,
    });
    h.core.handle(input.unwrap());
    // The agent goes away while its registration is being committed.
    drop(stream);
    let commands = h.commit();
    let Some(Command::RegisterAgent { record, .. }) = commands.first() else {
        panic!("expected the registration, got {commands:?}");
    };
    h.core.execute_actions();

    assert_eq!(
        answer.try_recv().unwrap().unwrap_err(),
        CallError::Unavailable("agent stream closed during registration".into())
    );
    // Registered, not connected: it has until its ping timeout to return.
    assert!(h.core.registry.agent(&record.id).is_some());
    assert!(h.core.agents.is_empty() && h.core.conn_agents.is_empty());
    assert!(h.core.last_seen.contains_key(&record.id));
}
