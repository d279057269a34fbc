//! Periodic work on the leader: pings and agent timeouts, heartbeats,
//! framework failover timeouts, offer expiry and allocation cycles; while
//! taking over, only the deadline of the barrier.
//!
//! Allocation runs every `allocation_interval`, and soon after anything
//! frees resources: at once when no request waits, otherwise at the first
//! 50 ms tick that is 4× the last cycle's duration after it (at most
//! 200 ms), so cheap cycles are not delayed and costly ones are folded.

use super::*;

impl Core {
    /// The run loop's tick. A leader does its periodic work
    /// ([`Self::on_tick`]); a master taking over only ends its barrier
    /// when past its deadline ([`COMMIT_TIMEOUT`]), and a follower has
    /// nothing to do.
    pub(super) fn tick(&mut self, idle: bool) {
        if self.leading.is_some() {
            self.on_tick(idle);
        } else if self.taking_over.is_some() {
            self.expire_pending(self.clock.instant);
        }
    }

    /// Periodic work. `idle` says no request is waiting: a change (a new
    /// agent, a decline, a finished task) triggers an allocation at once
    /// when idle; while requests keep coming, at the next tick after
    /// [`BUSY_ALLOCATION_SPACING`] times the last cycle's duration, and at
    /// most [`BUSY_ALLOCATION_INTERVAL`] later, so that a burst of declines
    /// or status updates is folded into one costly cycle instead of one per
    /// tick, while cheap cycles do not make frameworks wait.
    pub(super) fn on_tick(&mut self, idle: bool) {
        let now = self.clock.instant;
        self.expire_pending(now);
        self.expire_leases();
        if now.duration_since(self.last_ping) >= self.config.agent_ping_interval {
            self.last_ping = now;
            let ids: Vec<AgentId> = self.agents.keys().cloned().collect();
            for id in ids {
                let seq = self.agents.get_mut(&id).map_or(0, |c| {
                    c.ping_seq += 1;
                    c.ping_seq
                });
                self.send_agent(&id, pb::master_message::Message::Ping(pb::Ping { seq }));
            }
            self.check_agent_timeouts(now);
            self.check_failover_timeouts();
        }
        if now.duration_since(self.last_heartbeat) >= self.config.heartbeat_interval {
            self.last_heartbeat = now;
            let ids: Vec<FrameworkId> = self.frameworks.keys().cloned().collect();
            for id in ids {
                self.send_event(&id, pb::event::Event::Heartbeat(pb::Heartbeat {}));
            }
            // Frameworks dropped for a full queue start their failover clock.
            let dropped: Vec<FrameworkId> = self
                .registry
                .frameworks()
                .filter(|f| {
                    f.disconnected_at_ms.is_none()
                        && !self.frameworks.contains_key(&f.id)
                        && !self.subscribing.contains_key(&f.id)
                })
                .map(|f| f.id.clone())
                .collect();
            for id in dropped {
                self.disconnect_framework(&id);
            }
        }
        let t = self.now();
        for offer in self.offers.expire(t) {
            self.allocator.recover(
                &offer.agent,
                &offer.framework,
                &offer.role,
                &offer.resources,
                None,
                t,
            );
            self.send_event(
                &offer.framework.clone(),
                pb::event::Event::Rescind(pb::Rescind {
                    offer_id: offer.id.to_string(),
                }),
            );
            self.allocation_dirty = true;
        }
        let since = now.duration_since(self.last_allocation);
        let busy_wait =
            (self.last_allocation_cost * BUSY_ALLOCATION_SPACING).min(BUSY_ALLOCATION_INTERVAL);
        if (self.allocation_dirty && (idle || since >= busy_wait))
            || since >= self.config.allocation_interval
        {
            self.allocation_dirty = false;
            self.last_allocation = now;
            self.allocate();
            // A measurement of the cycle's cost, not a time a decision is
            // made at: the one clock read outside the shell.
            self.last_allocation_cost = now.elapsed();
        }
    }

    fn check_agent_timeouts(&mut self, now: Instant) {
        let timeout = self.config.agent_ping_timeout;
        // Inherited agents that have not registered with this leader yet
        // are within their re-registration grace after a takeover.
        if now >= self.reregister_until {
            self.inherited.clear();
        }
        let expired: Vec<AgentId> = self
            .last_seen
            .iter()
            .filter(|(id, _)| !self.inherited.contains(*id))
            .filter(|(_, seen)| now.duration_since(**seen) > timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.last_seen.remove(&id);
            if let Some(conn) = self.agents.get(&id).map(|c| c.conn) {
                // Connected but silent: drop the stream; it re-registers.
                self.agent_closed(conn);
            }
            self.last_seen.remove(&id);
            warn!(agent = %id, "agent missed its pings; marking it unreachable");
            if self.registry.agent(&id).is_some() {
                self.propose_detached(Command::MarkAgentUnreachable {
                    id,
                    at_ms: self.clock.unix_ms,
                });
            }
        }
    }

    fn check_failover_timeouts(&mut self) {
        let now_ms = self.clock.unix_ms;
        let expired: Vec<FrameworkId> = self
            .registry
            .frameworks()
            .filter(|f| !self.frameworks.contains_key(&f.id))
            .filter(|f| {
                f.disconnected_at_ms
                    .is_some_and(|at| now_ms >= at.saturating_add(f.failover_timeout_ms))
            })
            .map(|f| f.id.clone())
            .collect();
        for id in expired {
            self.remove_framework(&id, "FAILOVER_TIMEOUT", RemovalReply::Nobody);
        }
    }

    pub(super) fn allocate(&mut self) {
        let now = self.now();
        if self.config.offer_limit.is_some() {
            for fw in self.frameworks.keys() {
                self.allocator
                    .set_outstanding_offers(fw, self.offers.count_of(fw));
            }
        }
        let allocations = self.allocator.allocate(now);
        let mut by_framework: BTreeMap<FrameworkId, Vec<pb::Offer>> = BTreeMap::new();
        for allocation in allocations {
            if !self.frameworks.contains_key(&allocation.framework) {
                self.allocator.recover(
                    &allocation.agent,
                    &allocation.framework,
                    &allocation.role,
                    &allocation.resources,
                    None,
                    now,
                );
                continue;
            }
            let offer = self.offers.create(allocation, now);
            let agent = self.registry.agent(&offer.agent);
            by_framework
                .entry(offer.framework.clone())
                .or_default()
                .push(pb::Offer {
                    id: offer.id.to_string(),
                    framework_id: offer.framework.to_string(),
                    agent_id: offer.agent.to_string(),
                    hostname: agent.map(|a| a.hostname.clone()).unwrap_or_default(),
                    role: offer.role.to_string(),
                    resources: Some(resources_to_proto(&offer.resources.total())),
                    reserved: Some(resources_to_proto(&offer.resources.reserved)),
                    attributes: agent
                        .map(|a| {
                            a.attributes
                                .iter()
                                .map(|(name, value)| pb::Attribute {
                                    name: name.clone(),
                                    value: value.clone(),
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                });
        }
        for (fw, offers) in by_framework {
            self.send_event(&fw, pb::event::Event::Offers(pb::Offers { offers }));
        }
    }
}
