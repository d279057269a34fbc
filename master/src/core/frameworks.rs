//! Framework subscriptions and streams: subscribe, supersede, disconnect,
//! remove, and the check of a call's header (`caller`).
//!
//! A call's framework must be registered (NOT_FOUND otherwise) and call on
//! its current stream (FAILED_PRECONDITION: "not subscribed", "superseded"
//! for one of its last 8 streams, "unknown stream id"). A framework whose
//! stream closes is disconnected: its offers are rescinded, and after its
//! `failover_timeout` it is removed and its tasks are killed.

use super::*;

impl Core {
    /// Records a subscription, then (once committed) opens its event stream.
    pub(super) fn subscribe(&mut self, info: pb::FrameworkInfo, to: Caller<Subscription>) {
        let record = match self.validate_framework(&info) {
            Ok(r) => r,
            Err(e) => {
                self.reply(Reply::Subscribe { to, result: Err(e) });
                return;
            }
        };
        let known = self.registry.framework(&record.id).is_some();
        *self.subscribing.entry(record.id.clone()).or_default() += 1;
        self.propose(
            Command::SubscribeFramework {
                record: record.clone(),
            },
            Then::Subscribed { record, known, to },
        );
    }

    /// A subscription is committed: supersede an older stream, activate
    /// the framework in the allocator; the answer opens the new stream.
    pub(super) fn subscribed(&mut self, record: FrameworkRecord, known: bool) -> Subscribed {
        let id = record.id.clone();
        // A newer subscription supersedes the old stream; offers made on the
        // old stream are void.
        let superseded = pb::event::Event::Error(pb::Error {
            message: "superseded by a newer subscription".into(),
        });
        if let Some(old) = self.drop_connection(&id, Some(Ok(superseded))) {
            self.retire_stream(&id, old.stream_id);
        }
        self.rescind_framework_offers(&id);
        if known {
            if let Err(e) = self.allocator.update_framework(&id, record.roles.clone()) {
                warn!(framework = %id, "allocator update: {e}");
                self.allocator
                    .add_framework(id.clone(), record.roles.clone(), true);
            }
            self.allocator.activate_framework(&id);
        } else {
            self.allocator
                .add_framework(id.clone(), record.roles.clone(), true);
        }

        let stream_id = uuid::Uuid::new_v4().to_string();
        self.frameworks.insert(
            id.clone(),
            FrameworkConn {
                stream_id: stream_id.clone(),
                connected_at_ms: self.clock.unix_ms,
            },
        );
        info!(framework = %id, name = %record.name, resubscribed = known, "framework subscribed");
        self.allocation_dirty = true;
        Subscribed {
            framework: id.clone(),
            first: pb::Subscribed {
                framework_id: id.to_string(),
                stream_id,
                heartbeat_interval_seconds: self.config.heartbeat_interval.as_secs_f64(),
                master_id: self.master_id.clone(),
            },
        }
    }

    /// Forgets the framework's connection, if it has one, and asks the
    /// shell to end its stream after `last`.
    pub(super) fn drop_connection(
        &mut self,
        id: &FrameworkId,
        last: Option<Result<pb::event::Event, CallError>>,
    ) -> Option<FrameworkConn> {
        let conn = self.frameworks.remove(id)?;
        self.actions.push(Action::CloseFramework {
            framework: id.clone(),
            stream_id: conn.stream_id.clone(),
            last,
        });
        Some(conn)
    }

    fn validate_framework(&self, info: &pb::FrameworkInfo) -> Result<FrameworkRecord, CallError> {
        if info.name.trim().is_empty() {
            return Err(CallError::invalid_argument(
                "framework name must not be empty",
            ));
        }
        if info.name.len() > MAX_NAME || info.hostname.len() > MAX_NAME {
            return Err(CallError::invalid_argument(format!(
                "framework name and hostname must be at most {MAX_NAME} bytes"
            )));
        }
        let mut roles = BTreeSet::new();
        for r in &info.roles {
            roles.insert(
                Role::new(r.clone()).map_err(|e| CallError::invalid_argument(e.to_string()))?,
            );
        }
        if roles.is_empty() {
            roles.insert(Role::default());
        }
        let failover = seconds("failover_timeout_seconds", info.failover_timeout_seconds)?;
        let id = if info.id.is_empty() {
            FrameworkId::new(format!("fw-{}", uuid::Uuid::new_v4().simple()))
                .map_err(|e| CallError::internal(e.to_string()))?
        } else {
            let id = FrameworkId::new(info.id.clone())
                .map_err(|e| CallError::invalid_argument(e.to_string()))?;
            if self.registry.framework(&id).is_none() && !info.create {
                return Err(CallError::not_found(format!(
                    "framework {} is not registered (it was removed or never existed)",
                    quoted(&info.id)
                )));
            }
            id
        };
        Ok(FrameworkRecord {
            id,
            name: info.name.clone(),
            roles,
            failover_timeout_ms: u64::try_from(failover.as_millis()).unwrap_or(u64::MAX),
            partition_aware: info.partition_aware,
            hostname: info.hostname.clone(),
            registered_at_ms: self.clock.unix_ms,
            disconnected_at_ms: None,
        })
    }

    pub(super) fn framework_closed(&mut self, id: &FrameworkId, stream_id: &str) {
        let current = self
            .frameworks
            .get(id)
            .is_some_and(|c| c.stream_id == stream_id);
        if !current {
            return;
        }
        self.drop_connection(id, None);
        self.retire_stream(id, stream_id.to_string());
        if self.subscribing.contains_key(id) {
            // A newer subscription is being committed; it takes over.
            return;
        }
        self.disconnect_framework(id);
    }

    /// The shell could not queue an event on the framework's stream
    /// `stream_id` (full or closed) and dropped it: if it is still the
    /// framework's current stream, the framework is disconnected (its
    /// failover clock starts at the next tick).
    pub(super) fn framework_stream_failed(&mut self, id: &FrameworkId, stream_id: &str) {
        if self
            .frameworks
            .get(id)
            .is_none_or(|c| c.stream_id != stream_id)
        {
            return;
        }
        self.drop_connection(id, None);
        self.retire_stream(id, stream_id.to_string());
        self.allocator.deactivate_framework(id);
        self.rescind_framework_offers(id);
    }

    pub(super) fn disconnect_framework(&mut self, id: &FrameworkId) {
        self.drop_connection(id, None);
        self.allocator.deactivate_framework(id);
        self.rescind_framework_offers(id);
        if self.registry.framework(id).is_some() {
            self.propose_detached(Command::DisconnectFramework {
                id: id.clone(),
                at_ms: self.clock.unix_ms,
            });
        }
        info!(framework = %id, "framework disconnected; failover timeout running");
    }

    pub(super) fn rescind_framework_offers(&mut self, id: &FrameworkId) {
        let now = self.now();
        for offer in self.offers.remove_framework(id) {
            self.allocator.recover(
                &offer.agent,
                &offer.framework,
                &offer.role,
                &offer.resources,
                None,
                now,
            );
            self.allocation_dirty = true;
        }
    }

    /// Removes a framework for good; `reply` is answered once the removal
    /// is committed. On error nothing changed.
    pub(super) fn remove_framework(&mut self, id: &FrameworkId, reason: &str, reply: RemovalReply) {
        self.propose(
            Command::RemoveFramework {
                id: id.clone(),
                at_ms: self.clock.unix_ms,
                reason: reason.to_string(),
            },
            Then::FrameworkRemoved {
                id: id.clone(),
                reason: reason.to_string(),
                reply,
            },
        );
    }

    /// A framework's removal is committed: shut it down on its agents and
    /// drop its offers, allocator entry, queued kills and stream.
    pub(super) fn framework_removed(&mut self, id: &FrameworkId, reason: &str, effects: &Effects) {
        let agents: BTreeSet<AgentId> = effects.freed.iter().map(|(a, ..)| a.clone()).collect();
        for agent in agents {
            self.send_agent(
                &agent,
                pb::master_message::Message::ShutdownFramework(pb::ShutdownFramework {
                    framework_id: id.to_string(),
                }),
            );
        }
        for offer in self.offers.remove_framework(id) {
            debug!(offer = %offer.id, "offer dropped with its framework");
        }
        self.allocator.remove_framework(id);
        // Kills queued for disconnected agents: ShutdownFramework (or the
        // kill of unknown tasks at re-registration) covers them now.
        for kills in self.pending_kills.values_mut() {
            kills.retain(|k| k.framework_id != id.as_str());
        }
        self.pending_kills.retain(|_, kills| !kills.is_empty());
        self.retired_streams.remove(id);
        let removed = pb::event::Event::Error(pb::Error {
            message: format!("framework removed: {reason}"),
        });
        self.drop_connection(id, Some(Ok(removed)));
        self.allocation_dirty = true;
        info!(framework = %id, reason, "framework removed");
    }

    /// Remembers a framework's stream that ended or was superseded (the
    /// last few), so that a late call on it is answered "superseded", not
    /// "unknown".
    pub(super) fn retire_stream(&mut self, id: &FrameworkId, stream_id: String) {
        const KEPT: usize = 8;
        let retired = self.retired_streams.entry(id.clone()).or_default();
        if retired.len() == KEPT {
            retired.pop_front();
        }
        retired.push_back(stream_id);
    }

    /// Checks the call's header: the framework is registered (NOT_FOUND
    /// otherwise) and subscribed on this stream (FAILED_PRECONDITION
    /// otherwise, saying whether the stream is an older one of the
    /// framework or one this master never opened for it).
    pub(super) fn caller(&self, header: Option<&pb::CallHeader>) -> Result<FrameworkId, CallError> {
        let header = header.ok_or_else(|| CallError::invalid_argument("call header is missing"))?;
        let id = FrameworkId::new(header.framework_id.clone())
            .map_err(|e| CallError::invalid_argument(e.to_string()))?;
        if self.registry.framework(&id).is_none() {
            return Err(CallError::not_found(format!(
                "framework {} is not registered (torn down, removed after its failover \
                 timeout, or never registered)",
                quoted(id.as_str())
            )));
        }
        let stream = &header.stream_id;
        match self.frameworks.get(&id) {
            None => Err(CallError::failed_precondition(format!(
                "framework {} is not subscribed to this master (its stream ended); \
                 subscribe again with its id",
                quoted(id.as_str())
            ))),
            Some(conn) if conn.stream_id == *stream => Ok(id),
            Some(_)
                if self
                    .retired_streams
                    .get(&id)
                    .is_some_and(|r| r.contains(stream)) =>
            {
                Err(CallError::failed_precondition(format!(
                    "stream {} was superseded by a newer subscription of framework {}",
                    quoted(stream),
                    quoted(id.as_str())
                )))
            }
            Some(_) => Err(CallError::failed_precondition(format!(
                "unknown stream id {} for framework {}: this master did not open it \
                 (use the stream_id of the framework's SUBSCRIBED event)",
                quoted(stream),
                quoted(id.as_str())
            ))),
        }
    }
}
