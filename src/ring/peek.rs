//! Read-only looks at the whole ring, for `inspect` and the queue's
//! counts: they change nothing and take no lease.

use super::*;

impl Ring {
    /// Approximate number of published, unclaimed messages.
    pub(crate) fn len(&self) -> usize {
        let h = self.header();
        let d = h.deq.hint.load(Ordering::Acquire);
        let e = h.enq.hint.load(Ordering::Acquire);
        (e.saturating_sub(d)).min(u64::from(self.layout.slot_count)) as usize
    }

    /// Exact number of published, unclaimed messages: a scan of the whole
    /// index (for inspection and lifecycle decisions, not the hot path).
    #[cfg(not(loom))]
    pub(crate) fn published_exact(&self) -> usize {
        (0..u64::from(self.layout.slot_count))
            .filter(|&i| slot_ref(self.slot_at(i).load(Ordering::Acquire)) != 0)
            .count()
    }

    /// Whether some participant holds `lane`'s lease (for inspection, and
    /// the wait condition of a publisher waiting for the publish lease).
    pub fn lane_leased(&self, lane: u32) -> bool {
        self.lane(lane).owner.load(Ordering::Acquire) != 0
    }

    /// Units of `lane` held by records that are not free yet (waiting,
    /// being written or read), walking from its frontier to its end; for
    /// inspection. A record that fails a check ends the walk.
    #[cfg(not(loom))]
    pub(crate) fn lane_live_units(&self, lane: u32) -> u64 {
        let lu = self.layout.lane_units();
        let l = self.lane(lane);
        let end = l.end.load(Ordering::Acquire);
        let mut f = l.frontier.load(Ordering::Acquire);
        if f > end || end - f > lu {
            return 0;
        }
        let mut live = 0;
        while f < end {
            let h = self.record(lane, f);
            let s = h.state.load(Ordering::Acquire);
            let units = u64::from(h.units.load(Ordering::Relaxed));
            if s >> 32 != self.tag(f) || units == 0 || units > end - f {
                break;
            }
            if !matches!((s >> 24) & 0xff, R_FREE | R_PAD) {
                live += units;
            }
            f += units;
        }
        live
    }

    /// Participant entry `i`'s word, pid and claim announcement, for
    /// inspection.
    #[cfg(not(loom))]
    pub(crate) fn participant_snapshot(&self, i: u32) -> (u64, u32, u64) {
        let p = self.participant(i);
        (
            p.word.load(Ordering::Acquire),
            p.pid.load(Ordering::Relaxed),
            p.claim.load(Ordering::Relaxed),
        )
    }
}
