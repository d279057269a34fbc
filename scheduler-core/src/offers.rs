//! The offer book: outstanding offers on the leading master.
//!
//! Offers are ephemeral (never persisted; a new leader starts with an empty
//! book). The book hands out ids, checks that an accept or decline names
//! live offers of the calling framework on one agent, and remembers recently
//! removed ids so a late accept gets "rescinded" rather than "unknown".
//! With a timeout, offers expire: [`OfferBook::expire`] removes them.
//! It does not talk to the allocator: the master returns the resources of
//! removed offers with [`crate::Allocator::recover`].

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::allocator::{Allocated, Allocation};
pub use crate::error::OfferError;
use crate::ids::{AgentId, FrameworkId, OfferId, Role, sanitize_prefix};
use crate::time::Time;

/// How many removed offer ids the book remembers.
pub const RESCINDED_MEMORY: usize = 10_000;

/// Resources offered to a framework on one agent in one role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// The offer id, `"{prefix}-O{n}"`.
    pub id: OfferId,
    /// Who the offer is for.
    pub framework: FrameworkId,
    /// Where the resources are.
    pub agent: AgentId,
    /// The role the resources were allocated to.
    pub role: Role,
    /// The resources, split into reserved and unreserved parts.
    pub resources: Allocated,
    /// When the offer was made.
    pub created: Time,
    /// When the offer expires, if the book has a timeout.
    pub expires: Option<Time>,
}

/// Outstanding offers, by id. See the module docs.
#[derive(Clone, Debug)]
pub struct OfferBook {
    prefix: String,
    timeout: Option<Duration>,
    next: u64,
    /// Offers by sequence number, so iteration follows creation order.
    offers: BTreeMap<u64, Offer>,
    by_id: HashMap<OfferId, u64>,
    rescinded: VecDeque<OfferId>,
    rescinded_set: HashSet<OfferId>,
    /// Live offers per framework.
    per_framework: HashMap<FrameworkId, usize>,
}

impl OfferBook {
    /// An empty book issuing ids `"{id_prefix}-O{n}"`, `n` counting from 1,
    /// whose offers expire after `offer_timeout` if set. The prefix should
    /// be a valid id (the caller validates it); characters an id may not
    /// hold are replaced by `_` and it is cut to 200 bytes.
    pub fn new(id_prefix: &str, offer_timeout: Option<Duration>) -> Self {
        OfferBook {
            prefix: sanitize_prefix(id_prefix, 200),
            timeout: offer_timeout,
            next: 1,
            offers: BTreeMap::new(),
            by_id: HashMap::new(),
            rescinded: VecDeque::new(),
            rescinded_set: HashSet::new(),
            per_framework: HashMap::new(),
        }
    }

    /// Stores a new offer for `allocation` and returns a copy of it.
    pub fn create(&mut self, allocation: Allocation, now: Time) -> Offer {
        let seq = self.next;
        self.next += 1;
        let id = OfferId::from_trusted(format!("{}-O{seq}", self.prefix));
        let offer = Offer {
            id: id.clone(),
            framework: allocation.framework,
            agent: allocation.agent,
            role: allocation.role,
            resources: allocation.resources,
            created: now,
            expires: self.timeout.map(|t| now + t),
        };
        self.by_id.insert(id, seq);
        *self
            .per_framework
            .entry(offer.framework.clone())
            .or_default() += 1;
        self.offers.insert(seq, offer.clone());
        offer
    }

    /// The live offer `id`.
    pub fn get(&self, id: &OfferId) -> Option<&Offer> {
        self.by_id.get(id).and_then(|s| self.offers.get(s))
    }

    /// Checks that `ids` is a non-empty list of distinct live offers held by
    /// `framework`, all on one agent. Changes nothing.
    pub fn validate(
        &self,
        framework: &FrameworkId,
        ids: &[OfferId],
    ) -> Result<Vec<&Offer>, OfferError> {
        if ids.is_empty() {
            return Err(OfferError::Empty);
        }
        let mut seen = HashSet::with_capacity(ids.len());
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if !seen.insert(id) {
                return Err(OfferError::Duplicate(id.clone()));
            }
            let Some(offer) = self.get(id) else {
                return Err(if self.rescinded_set.contains(id) {
                    OfferError::Rescinded(id.clone())
                } else {
                    OfferError::Unknown(id.clone())
                });
            };
            if offer.framework != *framework {
                return Err(OfferError::NotYours {
                    offer: id.clone(),
                    owner: offer.framework.clone(),
                });
            }
            out.push(offer);
        }
        if out.iter().any(|o| o.agent != out[0].agent) {
            return Err(OfferError::DifferentAgents);
        }
        Ok(out)
    }

    /// Validates like [`OfferBook::validate`] and then removes the offers
    /// (accept or decline). All or nothing. Their ids are remembered as used.
    pub fn take(
        &mut self,
        framework: &FrameworkId,
        ids: &[OfferId],
    ) -> Result<Vec<Offer>, OfferError> {
        self.validate(framework, ids)?;
        Ok(ids.iter().filter_map(|id| self.remove(id)).collect())
    }

    fn remember(&mut self, id: OfferId) {
        if self.rescinded_set.insert(id.clone()) {
            self.rescinded.push_back(id);
            while self.rescinded.len() > RESCINDED_MEMORY {
                if let Some(old) = self.rescinded.pop_front() {
                    self.rescinded_set.remove(&old);
                }
            }
        }
    }

    /// Removes (rescinds) one offer; its id is remembered as rescinded.
    pub fn remove(&mut self, id: &OfferId) -> Option<Offer> {
        let seq = self.by_id.remove(id)?;
        let offer = self.offers.remove(&seq)?;
        if let Some(n) = self.per_framework.get_mut(&offer.framework) {
            *n -= 1;
            if *n == 0 {
                self.per_framework.remove(&offer.framework);
            }
        }
        self.remember(offer.id.clone());
        Some(offer)
    }

    fn remove_where(&mut self, pred: impl Fn(&Offer) -> bool) -> Vec<Offer> {
        let ids: Vec<OfferId> = self
            .offers
            .values()
            .filter(|o| pred(o))
            .map(|o| o.id.clone())
            .collect();
        ids.iter().filter_map(|id| self.remove(id)).collect()
    }

    /// Rescinds every offer on `agent`, oldest first.
    pub fn remove_agent(&mut self, agent: &AgentId) -> Vec<Offer> {
        self.remove_where(|o| o.agent == *agent)
    }

    /// Rescinds every offer held by `framework`, oldest first.
    pub fn remove_framework(&mut self, framework: &FrameworkId) -> Vec<Offer> {
        self.remove_where(|o| o.framework == *framework)
    }

    /// Removes the offers whose expiry is at or before `now`, oldest first;
    /// their ids are remembered as rescinded.
    pub fn expire(&mut self, now: Time) -> Vec<Offer> {
        self.remove_where(|o| o.expires.is_some_and(|e| e <= now))
    }

    /// Number of live offers.
    pub fn len(&self) -> usize {
        self.offers.len()
    }

    /// Whether there are no live offers.
    pub fn is_empty(&self) -> bool {
        self.offers.is_empty()
    }

    /// How many live offers `framework` holds.
    pub fn count_of(&self, framework: &FrameworkId) -> usize {
        self.per_framework.get(framework).copied().unwrap_or(0)
    }

    /// The live offers of `framework`, oldest first.
    pub fn offers_of(&self, framework: &FrameworkId) -> Vec<&Offer> {
        self.offers
            .values()
            .filter(|o| o.framework == *framework)
            .collect()
    }

    /// All live offers, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Offer> + '_ {
        self.offers.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Resources;

    fn fw(s: &str) -> FrameworkId {
        FrameworkId::new(s).unwrap()
    }
    fn agent(s: &str) -> AgentId {
        AgentId::new(s).unwrap()
    }
    fn oid(s: &str) -> OfferId {
        OfferId::new(s).unwrap()
    }
    fn alloc(f: &str, a: &str) -> Allocation {
        Allocation {
            framework: fw(f),
            agent: agent(a),
            role: Role::default(),
            resources: Allocated {
                unreserved: "cpus:1;mem:128".parse::<Resources>().unwrap(),
                reserved: Resources::empty(),
            },
        }
    }

    #[test]
    fn ids_and_lookup() {
        let mut book = OfferBook::new("m1", Some(Duration::from_secs(10)));
        let o1 = book.create(alloc("f1", "a1"), Time::from_millis(5));
        let o2 = book.create(alloc("f1", "a2"), Time::from_millis(5));
        assert_eq!(o1.id.as_str(), "m1-O1");
        assert_eq!(o2.id.as_str(), "m1-O2");
        assert_eq!(o1.expires, Some(Time::from_millis(10_005)));
        assert_eq!(book.get(&o1.id), Some(&o1));
        assert_eq!(book.len(), 2);
        assert!(!book.is_empty());
        assert_eq!(book.offers_of(&fw("f1")).len(), 2);
        assert!(book.offers_of(&fw("f2")).is_empty());
        let odd = OfferBook::new("a b/c", None).create(alloc("f1", "a1"), Time::ZERO);
        assert_eq!(odd.id.as_str(), "a_b_c-O1");
        assert_eq!(odd.expires, None);
    }

    #[test]
    fn errors() {
        let mut book = OfferBook::new("m1", None);
        let o1 = book.create(alloc("f1", "a1"), Time::ZERO);
        let o2 = book.create(alloc("f1", "a2"), Time::ZERO);
        let o3 = book.create(alloc("f2", "a1"), Time::ZERO);
        let o4 = book.create(alloc("f1", "a1"), Time::ZERO);

        let e = book.validate(&fw("f1"), &[]).unwrap_err();
        assert_eq!(e, OfferError::Empty);
        assert_eq!(e.to_string(), "no offer ids given");

        let e = book.validate(&fw("f1"), &[oid("m1-O99")]).unwrap_err();
        assert_eq!(e, OfferError::Unknown(oid("m1-O99")));
        assert_eq!(e.to_string(), r#"unknown offer "m1-O99""#);

        let e = book
            .validate(&fw("f1"), &[o1.id.clone(), o1.id.clone()])
            .unwrap_err();
        assert_eq!(e, OfferError::Duplicate(o1.id.clone()));
        assert_eq!(e.to_string(), r#"offer "m1-O1" given more than once"#);

        let e = book
            .validate(&fw("f1"), std::slice::from_ref(&o3.id))
            .unwrap_err();
        assert_eq!(
            e,
            OfferError::NotYours {
                offer: o3.id.clone(),
                owner: fw("f2")
            }
        );
        assert_eq!(e.to_string(), r#"offer "m1-O3" belongs to framework "f2""#);

        let e = book
            .validate(&fw("f1"), &[o1.id.clone(), o2.id.clone()])
            .unwrap_err();
        assert_eq!(e, OfferError::DifferentAgents);

        // A failed take changes nothing.
        assert!(
            book.take(&fw("f1"), &[o1.id.clone(), o2.id.clone()])
                .is_err()
        );
        assert_eq!(book.len(), 4);

        let taken = book
            .take(&fw("f1"), &[o1.id.clone(), o4.id.clone()])
            .unwrap();
        assert_eq!(taken.len(), 2);
        assert_eq!(book.len(), 2);
        let e = book
            .take(&fw("f1"), std::slice::from_ref(&o1.id))
            .unwrap_err();
        assert_eq!(e, OfferError::Rescinded(o1.id.clone()));
        assert_eq!(
            e.to_string(),
            r#"offer "m1-O1" was rescinded or already used"#
        );

        assert_eq!(book.remove(&o3.id).map(|o| o.id), Some(o3.id.clone()));
        assert_eq!(book.remove(&o3.id), None);
        assert_eq!(
            book.validate(&fw("f2"), std::slice::from_ref(&o3.id)),
            Err(OfferError::Rescinded(o3.id.clone()))
        );
    }

    #[test]
    fn expiry_and_bulk_removal() {
        let mut book = OfferBook::new("m1", Some(Duration::from_secs(1)));
        let o1 = book.create(alloc("f1", "a1"), Time::ZERO);
        let o2 = book.create(alloc("f1", "a2"), Time::from_millis(500));
        assert!(book.expire(Time::from_millis(999)).is_empty());
        let gone = book.expire(Time::from_millis(1000));
        assert_eq!(gone.iter().map(|o| &o.id).collect::<Vec<_>>(), [&o1.id]);
        assert_eq!(
            book.validate(&fw("f1"), std::slice::from_ref(&o1.id)),
            Err(OfferError::Rescinded(o1.id.clone()))
        );
        assert!(
            book.validate(&fw("f1"), std::slice::from_ref(&o2.id))
                .is_ok()
        );

        let o3 = book.create(alloc("f2", "a2"), Time::from_millis(600));
        let o4 = book.create(alloc("f2", "a3"), Time::from_millis(600));
        let gone = book.remove_agent(&agent("a2"));
        assert_eq!(
            gone.iter().map(|o| &o.id).collect::<Vec<_>>(),
            [&o2.id, &o3.id]
        );
        let gone = book.remove_framework(&fw("f2"));
        assert_eq!(gone.iter().map(|o| &o.id).collect::<Vec<_>>(), [&o4.id]);
        assert!(book.is_empty());
    }

    #[test]
    fn rescinded_memory_is_bounded() {
        let mut book = OfferBook::new("m1", None);
        let first = book.create(alloc("f1", "a1"), Time::ZERO);
        book.remove(&first.id);
        for _ in 0..RESCINDED_MEMORY {
            let o = book.create(alloc("f1", "a1"), Time::ZERO);
            book.remove(&o.id);
        }
        assert_eq!(
            book.validate(&fw("f1"), std::slice::from_ref(&first.id)),
            Err(OfferError::Unknown(first.id.clone()))
        );
        assert_eq!(book.rescinded.len(), RESCINDED_MEMORY);
    }
}
