//! Ordering of allocation clients (roles, or frameworks within a role), after
//! Mesos's `src/master/allocator/sorter/`.
//!
//! A [`Sorter`] keeps, per client, what is allocated to it and its weight,
//! and orders the *active* clients by who should be offered next. The
//! allocator owns one sorter over roles and one per role over its
//! frameworks. [`DrfSorter`] implements Dominant Resource Fairness: the
//! client with the smallest `dominant_share / weight` comes first, ties
//! broken by client name.
//!
//! Sorters only look at the scalar dimensions; ports are ignored.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use crate::allocator::Weight;
use crate::resources::{PortRanges, Resources};

/// Orders allocation clients for the allocator.
///
/// Clients are added inactive or active; only active clients appear in
/// [`Sorter::sort`]. Allocation bookkeeping is kept for inactive clients too.
/// Calls naming an unknown client are ignored.
pub trait Sorter<K> {
    /// Adds `client` (inactive, weight one, nothing allocated). No-op if known.
    fn add_client(&mut self, client: K);
    /// Removes `client` and its bookkeeping.
    fn remove_client(&mut self, client: &K);
    /// Whether `client` is known.
    fn contains(&self, client: &K) -> bool;
    /// Makes `client` eligible to appear in [`Sorter::sort`].
    fn activate(&mut self, client: &K);
    /// Hides `client` from [`Sorter::sort`], keeping its allocation.
    fn deactivate(&mut self, client: &K);
    /// Whether `client` is known and active.
    fn is_active(&self, client: &K) -> bool;
    /// Sets the weight of `client`; a larger weight earns a larger share.
    fn set_weight(&mut self, client: &K, weight: Weight);
    /// Records that `resources` were allocated to `client`.
    fn allocated(&mut self, client: &K, resources: &Resources);
    /// Records that `resources` allocated to `client` were released.
    fn unallocated(&mut self, client: &K, resources: &Resources);
    /// What is allocated to `client` (scalars only).
    fn allocation(&self, client: &K) -> Option<&Resources>;
    /// Sets the pool that shares are computed against.
    fn set_total(&mut self, total: Resources);
    /// The pool that shares are computed against.
    fn total(&self) -> &Resources;
    /// The ordering key of `client` (for DRF, `dominant_share / weight`).
    fn share(&self, client: &K) -> Option<f64>;
    /// Active clients, first to be offered first.
    fn sort(&self) -> Vec<K>;
    /// Number of known clients (active or not).
    fn len(&self) -> usize;
    /// Whether there are no clients.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Number of active clients.
    fn active_len(&self) -> usize;
}

/// An `f64` ordered by [`f64::total_cmp`], so it can key a `BTreeSet`.
#[derive(Clone, Copy, Debug)]
struct ShareKey(f64);

impl PartialEq for ShareKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for ShareKey {}
impl PartialOrd for ShareKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ShareKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

#[derive(Clone, Debug)]
struct Client {
    allocation: Resources,
    weight: Weight,
    active: bool,
    key: ShareKey,
}

/// Dominant Resource Fairness sorter: orders active clients by
/// `dominant_share(allocation, total) / weight`, then by client name.
///
/// Updates are incremental: an allocation change re-keys one client in
/// `O(log n)`; only [`Sorter::set_total`] re-keys everyone.
#[derive(Clone, Debug)]
pub struct DrfSorter<K: Ord + Clone> {
    total: Resources,
    clients: BTreeMap<K, Client>,
    order: BTreeSet<(ShareKey, K)>,
}

impl<K: Ord + Clone> Default for DrfSorter<K> {
    fn default() -> Self {
        DrfSorter {
            total: Resources::empty(),
            clients: BTreeMap::new(),
            order: BTreeSet::new(),
        }
    }
}

fn scalars_only(r: &Resources) -> Resources {
    Resources {
        ports: PortRanges::new(),
        ..r.clone()
    }
}

impl<K: Ord + Clone> DrfSorter<K> {
    /// An empty sorter with an empty total.
    pub fn new() -> Self {
        Self::default()
    }

    fn key_of(&self, c: &Client) -> ShareKey {
        ShareKey(c.allocation.dominant_share(&self.total) / c.weight.to_f64())
    }

    /// Re-keys `client` after its allocation or weight changed.
    fn rekey(&mut self, client: &K, update: impl FnOnce(&mut Client)) {
        let total = &self.total;
        let Some(c) = self.clients.get_mut(client) else {
            return;
        };
        let old = c.key;
        update(c);
        c.key = ShareKey(c.allocation.dominant_share(total) / c.weight.to_f64());
        if c.active && c.key != old {
            self.order.remove(&(old, client.clone()));
            self.order.insert((c.key, client.clone()));
        }
    }

    /// Active clients in order, without allocating a vector.
    pub fn iter_sorted(&self) -> impl Iterator<Item = &K> + '_ {
        self.order.iter().map(|(_, k)| k)
    }

    /// Known clients (active or not), by name.
    pub fn clients(&self) -> impl Iterator<Item = &K> + '_ {
        self.clients.keys()
    }
}

impl<K: Ord + Clone> Sorter<K> for DrfSorter<K> {
    fn add_client(&mut self, client: K) {
        if self.clients.contains_key(&client) {
            return;
        }
        let c = Client {
            allocation: Resources::empty(),
            weight: Weight::ONE,
            active: false,
            key: ShareKey(0.0),
        };
        self.clients.insert(client, c);
    }

    fn remove_client(&mut self, client: &K) {
        if let Some(c) = self.clients.remove(client)
            && c.active
        {
            self.order.remove(&(c.key, client.clone()));
        }
    }

    fn contains(&self, client: &K) -> bool {
        self.clients.contains_key(client)
    }

    fn activate(&mut self, client: &K) {
        if let Some(c) = self.clients.get_mut(client)
            && !c.active
        {
            c.active = true;
            self.order.insert((c.key, client.clone()));
        }
    }

    fn deactivate(&mut self, client: &K) {
        if let Some(c) = self.clients.get_mut(client)
            && c.active
        {
            c.active = false;
            self.order.remove(&(c.key, client.clone()));
        }
    }

    fn is_active(&self, client: &K) -> bool {
        self.clients.get(client).is_some_and(|c| c.active)
    }

    fn set_weight(&mut self, client: &K, weight: Weight) {
        self.rekey(client, |c| c.weight = weight);
    }

    fn allocated(&mut self, client: &K, resources: &Resources) {
        self.rekey(client, |c| c.allocation += &scalars_only(resources));
    }

    fn unallocated(&mut self, client: &K, resources: &Resources) {
        self.rekey(client, |c| {
            c.allocation = c.allocation.saturating_sub(&scalars_only(resources));
        });
    }

    fn allocation(&self, client: &K) -> Option<&Resources> {
        self.clients.get(client).map(|c| &c.allocation)
    }

    fn set_total(&mut self, total: Resources) {
        self.total = scalars_only(&total);
        let keys: Vec<(K, ShareKey)> = self
            .clients
            .iter()
            .map(|(k, c)| (k.clone(), self.key_of(c)))
            .collect();
        self.order.clear();
        for (k, key) in keys {
            if let Some(c) = self.clients.get_mut(&k) {
                c.key = key;
                if c.active {
                    self.order.insert((key, k));
                }
            }
        }
    }

    fn total(&self) -> &Resources {
        &self.total
    }

    fn share(&self, client: &K) -> Option<f64> {
        self.clients.get(client).map(|c| c.key.0)
    }

    fn sort(&self) -> Vec<K> {
        self.iter_sorted().cloned().collect()
    }

    fn len(&self) -> usize {
        self.clients.len()
    }

    fn active_len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(s: &str) -> Resources {
        s.parse().unwrap()
    }

    #[test]
    fn drf_order_weights_and_activity() {
        let mut s = DrfSorter::<String>::new();
        s.set_total(res("cpus:100;mem:1000"));
        for c in ["a", "b", "c"] {
            s.add_client(c.to_owned());
            s.activate(&c.to_owned());
        }
        assert_eq!(s.sort(), ["a", "b", "c"]);
        s.allocated(&"a".to_owned(), &res("cpus:10")); // 0.1
        s.allocated(&"b".to_owned(), &res("mem:50")); // 0.05
        assert_eq!(s.sort(), ["c", "b", "a"]);
        s.set_weight(&"a".to_owned(), Weight::new(4.0).unwrap()); // 0.025
        assert_eq!(s.sort(), ["c", "a", "b"]);
        s.deactivate(&"c".to_owned());
        assert_eq!(s.sort(), ["a", "b"]);
        assert_eq!(s.active_len(), 2);
        assert_eq!(s.len(), 3);
        s.unallocated(&"b".to_owned(), &res("mem:50"));
        assert_eq!(s.sort(), ["b", "a"]);
        s.set_total(res("cpus:10;mem:1000")); // a: 1.0 / 4
        assert_eq!(s.share(&"a".to_owned()), Some(0.25));
        s.remove_client(&"b".to_owned());
        assert_eq!(s.sort(), ["a"]);
        assert!(!s.contains(&"b".to_owned()));
        s.activate(&"c".to_owned());
        assert_eq!(s.sort(), ["c", "a"]);
        assert_eq!(s.allocation(&"a".to_owned()), Some(&res("cpus:10")));
    }

    #[test]
    fn ignores_ports_and_unknown_clients() {
        let mut s = DrfSorter::<String>::new();
        s.add_client("a".to_owned());
        s.allocated(&"a".to_owned(), &res("cpus:1;ports:[1-2]"));
        assert_eq!(s.allocation(&"a".to_owned()), Some(&res("cpus:1")));
        s.allocated(&"zz".to_owned(), &res("cpus:1"));
        assert!(!s.contains(&"zz".to_owned()));
        assert!(s.sort().is_empty());
    }
}
