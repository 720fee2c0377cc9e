//! The participant table: claiming an entry for a role, the role counts,
//! retiring an entry, and the liveness words a reaper compares.

use super::*;

impl Ring {
    /// Tries to mark entry `i` alive for `role`. The caller holds the entry's
    /// liveness lock already, so a scanner never sees it alive and unlocked.
    pub fn try_claim_participant(&self, i: u32, role: u32, pid: u32) -> Option<Owner> {
        let p = self.participant(i);
        let w = p.word.load(Ordering::Acquire);
        if w & 0xff != P_FREE {
            return None;
        }
        let generation = ((w >> 32) as u32).wrapping_add(1).max(1);
        let new = participant_word(generation, role, P_ALIVE);
        // The count goes up before the entry is alive and down after it is
        // free, so it is never below the number of live entries: a process
        // dying between the two steps can only leave it too high, which the
        // slow path's table scan (`alive_count`) sees through.
        // (an attachment has no count)
        let counter = self.role_counter(role);
        // a dead predecessor's claim must not look like ours
        p.claim.store(0, Ordering::Relaxed);
        if let Some(c) = counter {
            c.fetch_add(1, Ordering::AcqRel);
        }
        if p.word
            .compare_exchange(w, new, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            if let Some(c) = counter {
                let _ = c.fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| c.checked_sub(1));
            }
            return None;
        }
        p.pid.store(pid, Ordering::Relaxed);
        if counter.is_some() {
            // SYNC: Release after the count: a reader that sees the bit
            // (Acquire, loaded first in `role_counts`) sees the count too.
            self.header().roles.ever.fetch_or(role, Ordering::AcqRel);
        }
        Some(Owner {
            index: i,
            generation,
        })
    }

    pub(super) fn role_counter(&self, role: u32) -> Option<&crate::sync::AtomicU32> {
        let roles = &self.header().roles;
        match role {
            crate::layout::ROLE_SENDER => Some(&roles.senders),
            crate::layout::ROLE_RECEIVER => Some(&roles.receivers),
            _ => None,
        }
    }

    /// Entries of the table marked alive with `role` (the slow, exact
    /// count; liveness of each is the caller's business).
    pub fn alive_count(&self, role: u32) -> u32 {
        (0..self.layout.participant_count)
            .filter_map(|i| self.participant_alive_word(i))
            .filter(|w| ((w >> 8) & 0xff) as u32 == role)
            .count() as u32
    }

    /// Whether entry `i` is marked alive; returns its word if so.
    pub fn participant_alive_word(&self, i: u32) -> Option<u64> {
        let w = self.participant(i).word.load(Ordering::Acquire);
        (w & 0xff == P_ALIVE).then_some(w)
    }

    /// Marks entry `i` free if it still holds exactly `word` (alive) and
    /// decrements its role count. Returns the role if this call did it, so
    /// exactly one of a deregistering owner and a reaper counts it down.
    pub fn retire_participant(&self, i: u32, word: u64) -> Option<u32> {
        self.leave_role(i, word, (word & !0xffff) | P_FREE)
    }

    /// Moves entry `i` from exactly `word` (alive) to `to` (free, or dying)
    /// and decrements its role count. Returns the role if this call did it.
    pub(crate) fn leave_role(&self, i: u32, word: u64, to: u64) -> Option<u32> {
        let p = self.participant(i);
        p.word
            .compare_exchange(word, to, Ordering::AcqRel, Ordering::Relaxed)
            .ok()?;
        let role = ((word >> 8) & 0xff) as u32;
        if let Some(counter) = self.role_counter(role) {
            let _ = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| c.checked_sub(1));
        }
        Some(role)
    }

    /// The word an alive participant `owner` with `role` has.
    pub fn alive_word(owner: Owner, role: u32) -> u64 {
        participant_word(owner.generation, role, P_ALIVE)
    }

    /// Live senders / receivers (never below the truth), and which roles
    /// ever attached. `ever` is loaded first: a registrant sets it after
    /// counting itself, so a set bit is never paired with a stale zero count.
    pub fn role_counts(&self) -> (u32, u32, u32) {
        let r = &self.header().roles;
        let ever = r.ever.load(Ordering::Acquire);
        (
            r.senders.load(Ordering::Acquire),
            r.receivers.load(Ordering::Acquire),
            ever,
        )
    }
}
