//! Stuck jobs, the decisions: a pending job whose `tags` no agent has is
//! stuck (GitLab: "This job is stuck because ..."), pure. The runner lists
//! the agents (with their attributes) while such jobs wait, shows why each
//! is stuck in the records it hands out, and, when
//! `RunnerConfig::stuck_timeout` is set (`berth ci run` sets it), fails a
//! job stuck that long with `stuck_or_timeout_failure` (which `retry:when`
//! can name). Without a timeout (`berth ci serve`'s default) the job stays
//! pending, stuck, until an agent with its tags registers, as in GitLab.

use std::collections::BTreeMap;

use berth_sdk::proto as pb;

use super::record::PipelineRecord;
use super::state::JobStatus;
use super::task::tags_match;

/// An agent as far as tags go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AgentTags {
    /// Its name (hostname, else id).
    pub(crate) name: String,
    /// Its attributes.
    pub(crate) attributes: Vec<pb::Attribute>,
}

impl AgentTags {
    /// The agents of a master's list that can take jobs (active ones).
    pub(crate) fn from_views(views: &[pb::AgentView]) -> Vec<AgentTags> {
        views
            .iter()
            .filter(|v| v.state.is_empty() || v.state == "ACTIVE")
            .map(|v| {
                let info = v.info.clone().unwrap_or_default();
                AgentTags {
                    name: if info.hostname.is_empty() {
                        v.id.clone()
                    } else {
                        info.hostname
                    },
                    attributes: info.attributes,
                }
            })
            .collect()
    }

    /// What it offers a job's `tags`: its attribute names and the values
    /// of its `tags` attribute.
    fn offered(&self) -> Vec<String> {
        let mut out = Vec::new();
        for a in &self.attributes {
            if a.name == "tags" {
                out.extend(
                    a.value
                        .split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(str::to_string),
                );
            } else {
                out.push(a.name.clone());
            }
        }
        out
    }
}

/// The most agents a reason lists.
const LISTED_AGENTS: usize = 5;

/// Why a job with `tags` is stuck among `agents`, or `None` when one of
/// them has every tag (or the job has none).
pub(crate) fn stuck_reason(tags: &[String], agents: &[AgentTags]) -> Option<String> {
    if tags.is_empty() || agents.iter().any(|a| tags_match(tags, &a.attributes)) {
        return None;
    }
    let wanted = format!("[{}]", tags.join(", "));
    if agents.is_empty() {
        return Some(format!(
            "This job is stuck because no agent has the tags {wanted}: no agent is active"
        ));
    }
    let mut offers: Vec<String> = agents
        .iter()
        .take(LISTED_AGENTS)
        .map(|a| format!("{} [{}]", a.name, a.offered().join(", ")))
        .collect();
    if agents.len() > LISTED_AGENTS {
        offers.push(format!("and {} more", agents.len() - LISTED_AGENTS));
    }
    Some(format!(
        "This job is stuck because no agent has the tags {wanted}; the agents offer: {}",
        offers.join("; ")
    ))
}

/// The pending jobs (not trigger jobs) that are stuck among `agents`, with
/// why: (pipeline, job) → reason.
pub(crate) fn stuck_jobs(
    pipelines: &BTreeMap<u64, PipelineRecord>,
    agents: &[AgentTags],
) -> BTreeMap<(u64, usize), String> {
    let mut out = BTreeMap::new();
    for rec in pipelines.values() {
        for (j, job) in rec.state.jobs().iter().enumerate() {
            let Some(planned) = rec.plan.jobs.get(j) else {
                continue;
            };
            if job.status != JobStatus::Pending || planned.trigger.is_some() {
                continue;
            }
            if let Some(why) = stuck_reason(&planned.tags, agents) {
                out.insert((rec.id, j), why);
            }
        }
    }
    out
}

/// Whether any pending job has tags (then the agents are worth listing).
pub(crate) fn any_tagged_pending(pipelines: &BTreeMap<u64, PipelineRecord>) -> bool {
    pipelines.values().any(|rec| {
        rec.state.pending().iter().any(|&j| {
            rec.plan
                .jobs
                .get(j)
                .is_some_and(|p| !p.tags.is_empty() && p.trigger.is_none())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(name: &str, attrs: &[(&str, &str)]) -> AgentTags {
        AgentTags {
            name: name.into(),
            attributes: attrs
                .iter()
                .map(|(n, v)| pb::Attribute {
                    name: (*n).into(),
                    value: (*v).into(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_job_is_stuck_when_no_agent_has_its_tags_and_says_what_they_offer() {
        let agents = [
            agent("node-1", &[("docker", "yes"), ("tags", "linux, x86")]),
            agent("node-2", &[]),
        ];
        assert_eq!(stuck_reason(&[], &agents), None);
        assert_eq!(stuck_reason(&["linux".into()], &agents), None);
        assert_eq!(
            stuck_reason(&["gpu".into()], &agents).as_deref(),
            Some(
                "This job is stuck because no agent has the tags [gpu]; the agents offer: node-1 [docker, linux, x86]; node-2 []"
            )
        );
        let none = stuck_reason(&["gpu".into(), "arm".into()], &[]).unwrap();
        assert!(
            none.contains("[gpu, arm]") && none.contains("no agent is active"),
            "{none}"
        );
    }

    #[test]
    fn only_active_agents_take_jobs_and_long_lists_are_cut() {
        let views: Vec<pb::AgentView> = (0..8)
            .map(|i| pb::AgentView {
                id: format!("a{i}"),
                state: if i == 0 {
                    "DRAINING".into()
                } else {
                    "ACTIVE".into()
                },
                ..Default::default()
            })
            .collect();
        let agents = AgentTags::from_views(&views);
        assert_eq!(agents.len(), 7);
        assert_eq!(agents[0].name, "a1");
        let why = stuck_reason(&["gpu".into()], &agents).unwrap();
        assert!(why.ends_with("and 2 more"), "{why}");
    }
}
