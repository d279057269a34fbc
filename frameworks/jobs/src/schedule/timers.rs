//! [`Timers`]: one due time per key, ordered by time, so the earliest due
//! key is found and removed in `O(log n)` without scanning every job.

use std::collections::{BTreeMap, BTreeSet};

use crate::time::Timestamp;

/// Timers keyed by `K`: each key has at most one due time; the earliest is
/// found in `O(log n)`.
///
/// Two ordered indexes: by `(due time, key)` (the order timers fire in;
/// keys break ties) and by key (to find a key's time when it is replaced
/// or removed).
#[derive(Clone, Debug)]
pub struct Timers<K: Ord + Clone> {
    by_time: BTreeSet<(Timestamp, K)>,
    by_key: BTreeMap<K, Timestamp>,
}

impl<K: Ord + Clone> Default for Timers<K> {
    fn default() -> Self {
        Timers {
            by_time: BTreeSet::new(),
            by_key: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone> Timers<K> {
    /// Sets `key`'s due time (replacing the one it had).
    pub fn set(&mut self, key: K, at: Timestamp) {
        if let Some(old) = self.by_key.insert(key.clone(), at) {
            self.by_time.remove(&(old, key.clone()));
        }
        self.by_time.insert((at, key));
    }

    /// Removes `key`'s timer.
    pub fn remove(&mut self, key: &K) {
        if let Some(old) = self.by_key.remove(key) {
            self.by_time.remove(&(old, key.clone()));
        }
    }

    /// `key`'s due time, if it has a timer.
    #[must_use]
    pub fn get(&self, key: &K) -> Option<Timestamp> {
        self.by_key.get(key).copied()
    }

    /// The earliest due time, if any.
    #[must_use]
    pub fn earliest(&self) -> Option<Timestamp> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// Removes and returns the keys due at `now` (due time `<= now`),
    /// earliest first (keys in order among equal times).
    pub fn pop_due(&mut self, now: Timestamp) -> Vec<(K, Timestamp)> {
        let mut out = Vec::new();
        while self.by_time.first().is_some_and(|(at, _)| *at <= now) {
            if let Some((at, key)) = self.by_time.pop_first() {
                self.by_key.remove(&key);
                out.push((key, at));
            }
        }
        out
    }

    /// How many keys have a timer.
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether no key has a timer.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn set_replaces_and_pop_due_takes_the_earliest_first() {
        let mut t = Timers::default();
        t.set("b", Timestamp(20));
        t.set("a", Timestamp(30));
        t.set("c", Timestamp(10));
        t.set("c", Timestamp(25)); // replaces 10
        assert_eq!(
            (t.len(), t.earliest(), t.get(&"c")),
            (3, Some(Timestamp(20)), Some(Timestamp(25)))
        );
        t.remove(&"b");
        t.remove(&"zz");
        assert_eq!(t.pop_due(Timestamp(24)), []);
        assert_eq!(
            t.pop_due(Timestamp(30)),
            [("c", Timestamp(25)), ("a", Timestamp(30))]
        );
        assert!(t.is_empty() && t.earliest().is_none());
    }

    #[derive(Clone, Debug)]
    enum Step {
        Set(u8, i64),
        Remove(u8),
        Pop(i64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u8..16, 0i64..100).prop_map(|(k, at)| Step::Set(k, at)),
            (0u8..16).prop_map(Step::Remove),
            (0i64..100).prop_map(Step::Pop),
        ]
    }

    proptest! {
        /// Timers behave as a map scanned whole (the naive model).
        #[test]
        fn matches_a_naive_model(steps in prop::collection::vec(step(), 0..200)) {
            let mut timers = Timers::default();
            let mut model: BTreeMap<u8, i64> = BTreeMap::new();
            for s in steps {
                match s {
                    Step::Set(k, at) => {
                        timers.set(k, Timestamp(at));
                        model.insert(k, at);
                    }
                    Step::Remove(k) => {
                        timers.remove(&k);
                        model.remove(&k);
                    }
                    Step::Pop(now) => {
                        let mut want: Vec<(u8, Timestamp)> = model
                            .iter()
                            .filter(|(_, at)| **at <= now)
                            .map(|(k, at)| (*k, Timestamp(*at)))
                            .collect();
                        want.sort_by_key(|(k, at)| (*at, *k));
                        model.retain(|_, at| *at > now);
                        prop_assert_eq!(timers.pop_due(Timestamp(now)), want);
                    }
                }
                prop_assert_eq!(timers.len(), model.len());
                prop_assert_eq!(timers.earliest(), model.values().min().map(|at| Timestamp(*at)));
            }
        }
    }
}
