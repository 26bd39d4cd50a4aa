//! A plain least-recently-used map of bounded size: the model of the data
//! path's `BPF_MAP_TYPE_LRU_HASH` tables (conntrack, rate-limit buckets).
//! Exact LRU, where the kernel's is approximate; an oracle wants the simple
//! rule: when full, inserting evicts the entry used longest ago.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

#[derive(Clone, Debug)]
pub struct Lru<K, V> {
    capacity: usize,
    /// Key -> (value, the tick of its last use).
    entries: HashMap<K, (V, u64)>,
    /// Tick of last use -> key, oldest first.
    by_age: BTreeMap<u64, K>,
    tick: u64,
}

impl<K: Clone + Eq + Hash, V> Lru<K, V> {
    pub fn new(capacity: usize) -> Self {
        Lru {
            capacity,
            entries: HashMap::new(),
            by_age: BTreeMap::new(),
            tick: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value of `key`, marked as just used.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let tick = self.next_tick();
        let (value, used) = self.entries.get_mut(key)?;
        self.by_age.remove(used);
        *used = tick;
        self.by_age.insert(tick, key.clone());
        Some(value)
    }

    /// Inserts or replaces `key`, evicting the least recently used entry
    /// when the map is full. With capacity 0 nothing is stored.
    pub fn insert(&mut self, key: K, value: V) {
        if self.capacity == 0 {
            return;
        }
        self.remove(&key);
        if self.entries.len() >= self.capacity
            && let Some((_, oldest)) = self.by_age.pop_first()
        {
            self.entries.remove(&oldest);
        }
        let tick = self.next_tick();
        self.by_age.insert(tick, key.clone());
        self.entries.insert(key, (value, tick));
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let (value, used) = self.entries.remove(key)?;
        self.by_age.remove(&used);
        Some(value)
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }
}

#[cfg(test)]
mod tests {
    use super::Lru;

    #[test]
    fn evicts_least_recently_used() {
        let mut lru = Lru::new(2);
        lru.insert("a", 1);
        lru.insert("b", 2);
        assert_eq!(lru.get_mut(&"a"), Some(&mut 1)); // "b" is now the oldest
        lru.insert("c", 3);
        assert_eq!(lru.len(), 2);
        assert!(lru.remove(&"b").is_none());
        assert_eq!((lru.remove(&"a"), lru.remove(&"c")), (Some(1), Some(3)));
    }

    #[test]
    fn zero_capacity_stores_nothing() {
        let mut lru = Lru::new(0);
        lru.insert(1, 1);
        assert!(lru.is_empty());
    }
}
