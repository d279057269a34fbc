//! `berth master members | add | remove`: the masters' Raft group.
//!
//! `members` shows a member the leader has not heard from for 2 s as
//! unreachable. `add` first checks that a fresh master with that id
//! (started with `--join`) answers at the address, adds it as a learner
//! and promotes it to a voter once it has caught up.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail};
use berth_proto as pb;
use serde_json::json;

use crate::ClientOpts;
use crate::client::{CALL_TIMEOUT, masters, operator, operator_at};
use crate::table::render;

/// A member the leader has not heard from for longer than this is shown as
/// unreachable (the leader hears from every member several times a second).
const UNREACHABLE_AFTER: Duration = Duration::from_secs(2);
/// How long one call to a new master may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `master add` waits for a new master to answer (it may have
/// been started a moment ago) before refusing it.
const JOINER_WAIT: Duration = Duration::from_secs(5);
/// How long a new master may take to catch up as a learner before `master
/// add` gives up promoting it.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);

/// How a member looks from the answering master: `up`, `unreachable (last
/// heard 12s ago)`, `unreachable (never heard from)`, or `-` when the
/// answering master is not the leader and cannot tell.
fn reachability(m: &pb::MemberView, list: &pb::MemberList, now: f64) -> (Option<bool>, String) {
    if m.id == list.answered_by {
        return (Some(true), "up".into());
    }
    if list.answered_by != list.leader_id {
        return (None, "-".into());
    }
    if m.last_heard_at <= 0.0 {
        return (Some(false), "unreachable (never heard from)".into());
    }
    let ago = (now - m.last_heard_at).max(0.0);
    if ago > UNREACHABLE_AFTER.as_secs_f64() {
        (
            Some(false),
            format!("unreachable (last heard {} ago)", human_seconds(ago)),
        )
    } else {
        (Some(true), "up".into())
    }
}

/// `12s`, `3m04s`, `2h05m`.
fn human_seconds(s: f64) -> String {
    // Whole seconds are enough here; a negative or absurd value is shown
    // as 0.
    let s = if s.is_finite() && s > 0.0 {
        s as u64
    } else {
        0
    };
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The group as the leader sees it; without a leader, as the first master
/// that answers sees it (said on stderr).
async fn member_list(client: &ClientOpts) -> anyhow::Result<pb::MemberList> {
    match operator(client).await {
        Ok(mut op) => Ok(op
            .list_members(pb::Empty {})
            .await
            .map_err(|s| anyhow!("{}", berth_proto::leader::status_reason(&s)))?
            .into_inner()),
        Err(no_leader) => {
            for address in masters(client)?.addresses() {
                let Ok(mut op) = operator_at(address, PROBE_TIMEOUT) else {
                    continue;
                };
                if let Ok(list) = op.list_members(pb::Empty {}).await {
                    eprintln!("berth: {no_leader:#}; showing master {address}'s view");
                    return Ok(list.into_inner());
                }
            }
            Err(no_leader)
        }
    }
}

pub(crate) async fn members(client: &ClientOpts) -> anyhow::Result<()> {
    let list = member_list(client).await?;
    let now = unix_now();
    if client.json {
        let members: Vec<serde_json::Value> = list
            .members
            .iter()
            .map(|m| {
                let (reachable, _) = reachability(m, &list, now);
                json!({
                    "id": m.id, "address": m.address, "role": m.role, "index": m.index,
                    "reachable": reachable,
                    "last_heard_at": (m.last_heard_at > 0.0).then_some(m.last_heard_at),
                })
            })
            .collect();
        return crate::admin::print_json(&json!({
            "leader_id": list.leader_id, "term": list.term, "answered_by": list.answered_by, "members": members,
        }));
    }
    let rows: Vec<Vec<String>> = list
        .members
        .iter()
        .map(|m| {
            vec![
                m.id.to_string(),
                m.address.clone(),
                m.role.clone(),
                if m.index == 0 && m.id != list.answered_by {
                    "-".into()
                } else {
                    m.index.to_string()
                },
                reachability(m, &list, now).1,
            ]
        })
        .collect();
    out!(
        "{}",
        render(&["ID", "ADDRESS", "ROLE", "INDEX", "STATUS"], &rows)
    )?;
    outln!(
        "term {}, answered by master {}",
        list.term,
        list.answered_by
    )?;
    Ok(())
}

/// Checks that a master answers at `address`, runs with Raft id `id`, and
/// belongs to no group yet (started with `--join`).
async fn check_joiner(id: u64, address: &str) -> anyhow::Result<()> {
    let op = operator_at(address, PROBE_TIMEOUT)?;
    // A master started a moment ago may not listen yet: ask for a while.
    let deadline = tokio::time::Instant::now() + JOINER_WAIT;
    let list = loop {
        match op.clone().list_members(pb::Empty {}).await {
            Ok(list) => break list.into_inner(),
            Err(s) if tokio::time::Instant::now() >= deadline => bail!(
                "no master answers at {address}: {} (start it first with `berth master --id {id} --join`, or add --force)",
                berth_proto::leader::status_reason(&s)
            ),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    if list.answered_by != id {
        bail!(
            "the master at {address} runs with id {}, not {id} (add --force to add it anyway)",
            list.answered_by
        );
    }
    if !list.members.is_empty() {
        bail!(
            "the master at {address} already belongs to a group of {} (start it with --join and an empty --data-dir, or add --force)",
            list.members.len()
        );
    }
    Ok(())
}

pub(crate) async fn add_member(
    client: &ClientOpts,
    id: u64,
    address: &str,
    force: bool,
) -> anyhow::Result<()> {
    if !force {
        check_joiner(id, address).await?;
    }
    let request = pb::AddMemberRequest {
        id,
        address: address.to_string(),
    };
    // First as a learner (it gets the log, it does not vote), then, once it
    // has caught up, as a voter: a voter far behind would stall commits.
    let mut op = operator(client).await?;
    let role = match op.add_member(request.clone()).await {
        Ok(r) => r.into_inner().role,
        // Added as a learner by an earlier `master add`: promote it.
        Err(s) if s.code() == tonic::Code::FailedPrecondition => "LEARNER".into(),
        Err(s) => bail!("{}", berth_proto::leader::status_reason(&s)),
    };
    if role == "LEARNER" {
        eprintln!("berth: master {id} added as a learner; waiting for it to catch up");
    }
    let deadline = tokio::time::Instant::now() + CATCH_UP_TIMEOUT;
    let mut role = role;
    while role != "VOTER" {
        tokio::time::sleep(Duration::from_millis(250)).await;
        // The leader may have changed meanwhile.
        let mut op = operator(client).await?;
        match op.add_member(request.clone()).await {
            Ok(r) => role = r.into_inner().role,
            Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                if tokio::time::Instant::now() >= deadline {
                    bail!(
                        "master {id} did not catch up within {CATCH_UP_TIMEOUT:?} ({}); it stays a learner (it does not vote) — see its log, or take it out with `berth master remove {id}`",
                        s.message()
                    );
                }
            }
            Err(s) => bail!("{}", berth_proto::leader::status_reason(&s)),
        }
    }
    if client.json {
        return crate::admin::print_json(&json!({"id": id, "address": address}));
    }
    outln!("master {id} ({address}) added")?;
    Ok(())
}

pub(crate) async fn remove_member(client: &ClientOpts, id: u64) -> anyhow::Result<()> {
    let leader = crate::client::leader(client).await?;
    operator_at(&leader.address, CALL_TIMEOUT)?
        .remove_member(pb::RemoveMemberRequest { id })
        .await
        .map_err(|s| anyhow!("{}", berth_proto::leader::status_reason(&s)))?;
    if client.json {
        return crate::admin::print_json(&json!({"id": id, "removed": true}));
    }
    outln!("master {id} removed")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, heard: f64) -> pb::MemberView {
        pb::MemberView {
            id,
            last_heard_at: heard,
            ..Default::default()
        }
    }

    #[test]
    fn members_are_unreachable_when_the_leader_has_not_heard_from_them() {
        let list = pb::MemberList {
            leader_id: 1,
            answered_by: 1,
            ..Default::default()
        };
        let now = 1000.0;
        assert_eq!(reachability(&member(1, 0.0), &list, now).1, "up");
        assert_eq!(reachability(&member(2, 999.5), &list, now).1, "up");
        assert_eq!(
            reachability(&member(3, 988.0), &list, now),
            (Some(false), "unreachable (last heard 12s ago)".to_owned())
        );
        assert_eq!(
            reachability(&member(4, 0.0), &list, now).1,
            "unreachable (never heard from)"
        );
        let follower = pb::MemberList {
            leader_id: 1,
            answered_by: 2,
            ..Default::default()
        };
        assert_eq!(
            reachability(&member(3, 0.0), &follower, now),
            (None, "-".into())
        );
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_seconds(12.4), "12s");
        assert_eq!(human_seconds(184.0), "3m04s");
        assert_eq!(human_seconds(7500.0), "2h05m");
        assert_eq!(human_seconds(f64::NAN), "0s");
    }
}
