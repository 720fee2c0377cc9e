//! The pull bridge's memory of the messages it put into its local queue,
//! by the id `shmq bridge push` gave them (`Nats-Msg-Id`), so that one
//! JetStream delivers again while this bridge lives (an ack lost with a
//! connection, or a server that restarted and forgot recent acks) is acked
//! and not sent twice. Ids, not stream sequence numbers: a server killed
//! before writing its newest messages reuses their sequence numbers.

use std::collections::{HashSet, VecDeque};

/// A message id as `shmq bridge push` writes it: the region's instance,
/// the lane and the record (`shmq::MessageId`'s `Display` form).
pub type Id = (u64, u32, u64);

/// Parses `iiiiiiiiiiiiiiii-L-rrrr` (hex, decimal, hex); `None` for any
/// other id (a message some other publisher sent: never suppressed).
pub fn parse_id(s: &str) -> Option<Id> {
    let mut parts = s.split('-');
    let (i, l, r) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || i.len() != 16 {
        return None;
    }
    Some((
        u64::from_str_radix(i, 16).ok()?,
        l.parse().ok()?,
        u64::from_str_radix(r, 16).ok()?,
    ))
}

/// The last `capacity` ids sent, oldest forgotten first.
#[derive(Debug)]
pub struct Recent {
    set: HashSet<Id>,
    order: VecDeque<Id>,
    capacity: usize,
}

impl Recent {
    /// Remembers up to `capacity` ids (0: none).
    pub fn new(capacity: usize) -> Self {
        Self {
            set: HashSet::with_capacity(capacity.min(1 << 16)),
            order: VecDeque::with_capacity(capacity.min(1 << 16)),
            capacity,
        }
    }

    /// Whether `id` was sent (and not forgotten yet).
    pub fn contains(&self, id: &Id) -> bool {
        self.set.contains(id)
    }

    /// Remembers that `id` was sent.
    pub fn insert(&mut self, id: Id) {
        if self.capacity == 0 || !self.set.insert(id) {
            return;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_as_push_writes_them_and_nothing_else_does() {
        let id = parse_id("00ab0000000000ff-3-1000000002a").unwrap();
        assert_eq!(id, (0x00ab_0000_0000_00ff, 3, 0x0100_0000_002a));
        assert_eq!(parse_id("00ab0000000000ff-3"), None);
        assert_eq!(parse_id("ab-3-2a"), None);
        assert_eq!(parse_id("00ab0000000000ff-3-2a-9"), None);
        assert_eq!(parse_id("my-own-id"), None);
    }

    #[test]
    fn the_oldest_ids_are_forgotten_first() {
        let mut r = Recent::new(3);
        for k in 0..5u64 {
            r.insert((1, 0, k));
        }
        r.insert((1, 0, 4)); // again: no effect
        assert!(!r.contains(&(1, 0, 0)) && !r.contains(&(1, 0, 1)));
        assert!((2..5).all(|k| r.contains(&(1, 0, k))));
        let mut none = Recent::new(0);
        none.insert((1, 0, 0));
        assert!(!none.contains(&(1, 0, 0)));
    }
}
