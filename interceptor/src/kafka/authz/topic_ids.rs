//! Topic id → name (KIP-516), learned from the Metadata (and DescribeTopicPartitions)
//! responses the interceptor relays, shared by every session. Requests that name topics by id
//! (Produce v13, Fetch v13+) are authorized by the name found here; an id not found here is
//! refused with UNKNOWN_TOPIC_ID, never forwarded unchecked.
//!
//! Reads (one per topic per request on the data path) take a shared lock and clone an `Arc`;
//! writes only happen for an id not yet known or whose name changed. Bounded: when full, the
//! id learned first is forgotten first (a forgotten id is learned again from the next Metadata
//! response that carries it, and clients refresh metadata on UNKNOWN_TOPIC_ID).

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, RwLock},
};

pub struct TopicIds {
    capacity: usize,
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    names: HashMap<[u8; 16], Arc<str>>,
    /// Ids in the order they were first learned, for eviction.
    order: VecDeque<[u8; 16]>,
}

impl TopicIds {
    /// Remembers at most `capacity` topics.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: RwLock::new(Inner::default()),
        }
    }

    pub fn name(&self, id: &[u8; 16]) -> Option<Arc<str>> {
        // A poisoned lock only means a writer panicked between two consistent states of a map
        // and a queue (an allocation failure): the data is still usable.
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.names.get(id).cloned()
    }

    /// Remembers that `id` names `name`. The nil id (which stands for "no id") is ignored.
    pub fn learn(&self, id: [u8; 16], name: &str) {
        if self.capacity == 0 || id == [0; 16] || name.is_empty() {
            return;
        }
        if self.name(&id).is_some_and(|known| &*known == name) {
            return;
        }
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let name: Arc<str> = Arc::from(name);
        if inner.names.insert(id, name).is_some() {
            return; // an id already queued: only its name changed
        }
        inner.order.push_back(id);
        while inner.order.len() > self.capacity {
            if let Some(oldest) = inner.order.pop_front() {
                inner.names.remove(&oldest);
            }
        }
    }

    /// How many ids are known.
    pub fn len(&self) -> usize {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> [u8; 16] {
        let mut id = [0; 16];
        id[15] = n;
        id
    }

    #[test]
    fn learned_ids_resolve_and_unknown_ones_do_not() {
        let ids = TopicIds::new(4);
        ids.learn(id(1), "orders");
        assert_eq!(ids.name(&id(1)).as_deref(), Some("orders"));
        assert_eq!(ids.name(&id(2)), None);
        // The nil id means "no id" in Kafka responses: never an entry.
        ids.learn([0; 16], "ghost");
        assert_eq!(ids.name(&[0; 16]), None);
    }

    #[test]
    fn capacity_bounds_the_map_and_the_oldest_goes_first() {
        let ids = TopicIds::new(2);
        ids.learn(id(1), "a");
        ids.learn(id(2), "b");
        ids.learn(id(1), "a"); // known: no reordering, no growth
        ids.learn(id(3), "c");
        assert_eq!(ids.len(), 2);
        assert_eq!(ids.name(&id(1)), None);
        assert_eq!(ids.name(&id(2)).as_deref(), Some("b"));
        assert_eq!(ids.name(&id(3)).as_deref(), Some("c"));
        let none = TopicIds::new(0);
        none.learn(id(1), "a");
        assert!(none.is_empty());
    }

    #[test]
    fn a_renamed_id_keeps_one_entry() {
        let ids = TopicIds::new(2);
        ids.learn(id(1), "old");
        ids.learn(id(1), "new");
        ids.learn(id(2), "b");
        assert_eq!(ids.len(), 2);
        assert_eq!(ids.name(&id(1)).as_deref(), Some("new"));
    }

    #[test]
    fn shared_between_threads() {
        let ids = Arc::new(TopicIds::new(1000));
        let writers: Vec<_> = (0..4u8)
            .map(|t| {
                let ids = Arc::clone(&ids);
                std::thread::spawn(move || {
                    for n in 0..100u8 {
                        let mut key = id(n);
                        key[0] = t + 1;
                        ids.learn(key, &format!("t{t}-{n}"));
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        assert_eq!(ids.len(), 400);
        let mut key = id(7);
        key[0] = 4;
        assert_eq!(ids.name(&key).as_deref(), Some("t3-7"));
    }
}
