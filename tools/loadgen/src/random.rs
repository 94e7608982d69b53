//! The seeded random choices the stream is made of: every one draws from the run's one
//! generator, so that a seed gives back the same stream.

use std::collections::HashMap;
use std::hash::Hash;

use rand::RngExt;
use rand::rngs::StdRng;

/// Clerk-like id: prefix, `_`, 27 alphanumerics (as `sample::random_id`, but seeded).
pub(crate) fn seeded_id(rng: &mut StdRng, prefix: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let tail: String = (0..27)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}_{tail}")
}

pub(crate) fn pick<'a>(rng: &mut StdRng, list: &[&'a str]) -> &'a str {
    list[rng.random_range(0..list.len())]
}

/// Items with O(1) insert, remove and uniform pick.
#[derive(Default)]
pub(crate) struct Bag<T> {
    items: Vec<T>,
    index: HashMap<T, usize>,
}

impl<T: Copy + Eq + Hash> Bag<T> {
    pub(crate) fn insert(&mut self, item: T) {
        if !self.index.contains_key(&item) {
            self.index.insert(item, self.items.len());
            self.items.push(item);
        }
    }

    pub(crate) fn remove(&mut self, item: T) {
        if let Some(i) = self.index.remove(&item) {
            self.items.swap_remove(i);
            if let Some(moved) = self.items.get(i) {
                self.index.insert(*moved, i);
            }
        }
    }

    pub(crate) fn pick(&self, rng: &mut StdRng) -> Option<T> {
        (!self.items.is_empty()).then(|| self.items[rng.random_range(0..self.items.len())])
    }

    pub(crate) fn contains(&self, item: T) -> bool {
        self.index.contains_key(&item)
    }

    /// The items, in an order the seed alone decides (a removal moves the last item).
    pub(crate) fn items(&self) -> &[T] {
        &self.items
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn seeded_ids_look_like_clerk_ids_and_follow_the_seed() {
        let id = seeded_id(&mut StdRng::seed_from_u64(1), "user");
        let tail = id.strip_prefix("user_").expect("prefixed");
        assert_eq!(tail.len(), 27);
        assert!(tail.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(id, seeded_id(&mut StdRng::seed_from_u64(1), "user"));
        assert_ne!(id, seeded_id(&mut StdRng::seed_from_u64(2), "user"));
    }

    #[test]
    fn bag_keeps_its_index_right_through_removals() {
        let mut bag = Bag::default();
        for i in 0..5 {
            bag.insert(i);
        }
        bag.insert(3);
        assert_eq!(bag.len(), 5);
        // Removing from the middle moves the last item into the hole; the index must follow.
        bag.remove(1);
        bag.remove(4);
        bag.remove(7);
        assert_eq!(bag.len(), 3);
        for i in [0, 2, 3] {
            assert!(bag.contains(i));
        }
        assert!(!bag.contains(1) && !bag.contains(4));
        let mut rng = StdRng::seed_from_u64(5);
        for _ in 0..50 {
            assert!([0, 2, 3].contains(&bag.pick(&mut rng).expect("not empty")));
        }
        for i in [0, 2, 3] {
            bag.remove(i);
        }
        assert_eq!(bag.pick(&mut rng), None);
    }
}
