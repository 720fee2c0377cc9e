//! Single-process unit tests of the protocol over a heap region.

use super::*;
use crate::layout::ROLE_SENDER;

/// A heap region for single-process unit tests of the protocol.
struct HeapRegion {
    mem: Vec<u128>,
    ring: Ring,
}

fn heap(lanes: u32, lane_size: u64, slots: u32) -> HeapRegion {
    let layout = Layout::new(lanes, lane_size, slots, 4).unwrap();
    let mut mem = vec![0u128; (layout.total_size as usize).div_ceil(16) + 256];
    // page-align the base inside the vector
    let addr = mem.as_mut_ptr() as usize;
    let skew = (4096 - addr % 4096) % 4096;
    assert!(skew.is_multiple_of(16));
    let base = NonNull::new((addr + skew) as *mut u8).unwrap();
    // SAFETY: the vector outlives the ring (same struct, ring dropped
    // first is irrelevant: Ring has no Drop), and is large enough.
    let ring = unsafe { Ring::new(base, layout) };
    ring.init_slots();
    for i in 0..4 {
        // registered participants 0..4 (generation 1): alive owners
        assert!(ring.try_claim_participant(i, ROLE_SENDER, 1).is_some());
    }
    HeapRegion { mem, ring }
}

fn me() -> Owner {
    Owner {
        index: 0,
        generation: 1,
    }
}

fn send(r: &Ring, bytes: &[u8]) -> Result<bool, Corruption> {
    let mut lease = r.try_lease(0, me())?.expect("lane free");
    let out = match r.allocate(&mut lease, bytes.len() as u64)? {
        None => false,
        Some(a) => {
            let p = r.allocation_payload(&lease, &a);
            // SAFETY: the allocation's payload is ours until published.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.as_ptr(), bytes.len()) };
            match r.publish(&lease, &a)? {
                Ok(()) => true,
                Err(Busy::IndexFull) => {
                    r.abort(&mut lease, a);
                    false
                }
            }
        }
    };
    r.unlease(lease);
    Ok(out)
}

fn recv(r: &Ring) -> Option<Vec<u8>> {
    let c = r.claim(me()).unwrap()?;
    let (p, len) = c.payload();
    // SAFETY: the claim gives exclusive access to the payload.
    let v = unsafe { std::slice::from_raw_parts(p.as_ptr(), len) }.to_vec();
    r.release(c);
    Some(v)
}

#[test]
fn remap_is_a_bijection() {
    for slots in [2u32, 8, 16, 64, 1024] {
        let h = heap(1, 4096, slots);
        let mut seen = std::collections::HashSet::new();
        for t in 0..u64::from(slots) {
            seen.insert(h.ring.slot(t) as *const Slot as usize);
        }
        assert_eq!(seen.len(), slots as usize);
        drop(h.mem);
    }
}

#[test]
fn fifo_wrap_and_padding() {
    let h = heap(1, 4096, 16); // 64 units, max message 512 B
    let r = &h.ring;
    assert_eq!(r.layout().max_message, 512);
    let mut expect = std::collections::VecDeque::new();
    for i in 0..500u32 {
        let len = (i as usize * 37) % 513;
        let msg: Vec<u8> = (0..len).map(|j| (i as usize + j) as u8).collect();
        // full: drain in order until it fits; an empty lane always fits
        while !send(r, &msg).unwrap() {
            let front = expect.pop_front().expect("an empty queue must accept");
            assert_eq!(recv(r).unwrap(), front);
        }
        expect.push_back(msg);
        if i % 3 == 0 {
            assert_eq!(recv(r).unwrap(), expect.pop_front().unwrap());
        }
    }
    while let Some(m) = expect.pop_front() {
        assert_eq!(recv(r).unwrap(), m);
    }
    assert!(recv(r).is_none());
}

#[test]
fn index_full_is_reported_and_aborted_space_returns() {
    let h = heap(1, 1 << 16, 2);
    let r = &h.ring;
    assert!(send(r, b"a").unwrap());
    assert!(send(r, b"b").unwrap());
    assert!(!r.index_has_room());
    assert!(!send(r, b"c").unwrap());
    let lease = r.try_lease(0, me()).unwrap().unwrap();
    assert_eq!(lease.end, 4, "aborted record rolled back");
    r.unlease(lease);
    assert_eq!(recv(r).unwrap(), b"a");
    assert!(send(r, b"c").unwrap());
    assert_eq!(recv(r).unwrap(), b"b");
    assert_eq!(recv(r).unwrap(), b"c");
}

#[test]
fn out_of_order_release_holds_the_frontier() {
    let h = heap(1, 4096, 16);
    let r = &h.ring;
    for m in [b"1", b"2", b"3"] {
        assert!(send(r, m).unwrap());
    }
    let a = r.claim(me()).unwrap().unwrap();
    let b = r.claim(me()).unwrap().unwrap();
    r.release(b);
    let mut lease = r.try_lease(0, me()).unwrap().unwrap();
    r.reclaim(&mut lease).unwrap();
    assert_eq!(lease.frontier, 0, "frontier must not pass the live record");
    r.release(a);
    r.reclaim(&mut lease).unwrap();
    assert_eq!(lease.frontier, 4);
    r.unlease(lease);
    assert_eq!(recv(r).unwrap(), b"3");
}

#[test]
fn corrupted_slot_is_an_error_not_ub() {
    let h = heap(1, 4096, 16);
    let r = &h.ring;
    assert!(send(r, b"x").unwrap());
    // point the published slot at a lane that does not exist
    r.slot(0).store(slot_word(0, u32::MAX), Ordering::Relaxed);
    assert!(r.claim(me()).is_err());
    // an impossible sequence
    r.slot(1).store(slot_word(12345, 0), Ordering::Relaxed);
    assert!(r.claim(me()).is_err());
}

#[test]
fn lap_tags_wrap_harmlessly() {
    let h = heap(1, 4096, 16);
    let r = &h.ring;
    // start the lane just before its 32-bit lap tag wraps
    let start = (1u64 << (32 + r.lane_shift)) - 40;
    r.lane(0).end.store(start, Ordering::Relaxed);
    r.lane(0).frontier.store(start, Ordering::Relaxed);
    for i in 0..200u32 {
        let msg = vec![i as u8; (i as usize * 13) % 300];
        assert!(send(r, &msg).unwrap());
        assert_eq!(recv(r).unwrap(), msg);
    }
    let lease = r.try_lease(0, me()).unwrap().unwrap();
    assert!(lease.end > 1 << (32 + r.lane_shift));
    r.unlease(lease);
}

#[test]
fn participants_count_and_retire_once() {
    let h = heap(1, 4096, 16);
    let r = &h.ring;
    // heap() attached entries 0..4 as senders
    assert_eq!(r.role_counts().0, 4);
    let o = Owner {
        index: 2,
        generation: 1,
    };
    assert!(
        r.try_claim_participant(2, ROLE_SENDER, 1).is_none(),
        "entry is taken"
    );
    let w = Ring::alive_word(o, ROLE_SENDER);
    assert_eq!(r.retire_participant(2, w), Some(ROLE_SENDER));
    assert_eq!(r.retire_participant(2, w), None);
    assert_eq!(r.role_counts().0, 3);
    let o2 = r.try_claim_participant(2, ROLE_SENDER, 1).unwrap();
    assert_eq!(r.role_counts().0, 4);
    assert_ne!(o.generation, o2.generation);
}

fn kill(r: &Ring, index: u32) {
    assert_eq!(try_reap(r, index), Some(ROLE_SENDER));
}

/// A later reaping pass over a dying entry `index` (by the reaper, 3).
fn finish_reap(r: &Ring, index: u32) {
    let reaper = Owner {
        index: 3,
        generation: 1,
    };
    r.finish_dying(index, reaper, &|j| j != index);
}

/// What the reaper does when participant `index`'s lock is gone: the
/// role it took the entry out of (`None`: already done).
fn try_reap(r: &Ring, index: u32) -> Option<u32> {
    let w = Ring::alive_word(
        Owner {
            index,
            generation: 1,
        },
        ROLE_SENDER,
    );
    // the reaper is a participant that lives (index 3)
    let reaper = Owner {
        index: 3,
        generation: 1,
    };
    r.reap_participant(index, w, Some(reaper), &|j| j != index)
}

fn other() -> Owner {
    Owner {
        index: 1,
        generation: 1,
    }
}

#[test]
fn a_dead_holders_lease_is_taken_over_and_its_unpublished_record_freed() {
    let h = heap(1, 4096, 16);
    let r = &h.ring;
    let mut lease = r.try_lease(0, me()).unwrap().unwrap();
    let a = r.allocate(&mut lease, 100).unwrap().unwrap();
    assert!(
        r.try_lease(0, other()).unwrap().is_none(),
        "a live holder keeps its lease"
    );
    let _ = lease; // the holder dies mid-write (no unlease)
    kill(r, 0);
    let mut taken = r.try_lease(0, other()).unwrap().expect("lease taken over");
    assert_eq!(taken.end(), a.pos() + Ring::record_units(100));
    r.reclaim(&mut taken).unwrap();
    assert_eq!(taken.frontier(), taken.end(), "WRITING(dead) freed");
    r.unlease(taken);
    assert!(recv(r).is_none(), "nothing was published");
}

#[test]
fn a_dead_producers_published_message_is_still_delivered() {
    let h = heap(1, 4096, 16);
    let r = &h.ring;
    let mut lease = r.try_lease(0, me()).unwrap().unwrap();
    let a = r.allocate(&mut lease, 3).unwrap().unwrap();
    r.write_payload(&lease, &a, b"abc");
    r.publish(&lease, &a).unwrap().unwrap();
    let _ = lease; // dies after publishing, still holding the lane
    kill(r, 0);
    let mut taken = r.try_lease(0, other()).unwrap().unwrap();
    r.reclaim(&mut taken).unwrap();
    assert_eq!(taken.frontier(), 0, "a published READY record is kept");
    r.unlease(taken);
    let c = r.claim(other()).unwrap().unwrap();
    let mut v = Vec::new();
    r.read_payload(&c, &mut v);
    assert_eq!(v, b"abc");
    r.release(c);
}

#[test]
fn a_dead_producers_unpublished_ready_record_is_freed() {
    let h = heap(1, 4096, 16);
    let r = &h.ring;
    let mut lease = r.try_lease(0, me()).unwrap().unwrap();
    let a = r.allocate(&mut lease, 3).unwrap().unwrap();
    // marked READY, died before the slot CAS
    r.record(0, a.pos()).state.store(
        (r.tag(a.pos()) << 32) | (R_READY << 24) | me().record_bits(),
        Ordering::Relaxed,
    );
    let _ = lease; // dies holding the lane
    kill(r, 0);
    let mut taken = r.try_lease(0, other()).unwrap().unwrap();
    r.reclaim(&mut taken).unwrap();
    assert_eq!(taken.frontier(), taken.end(), "orphan READY freed");
    r.unlease(taken);
}

#[test]
fn a_record_a_live_consumer_is_claiming_is_kept_and_a_dead_ones_returned() {
    let h = heap(1, 4096, 16);
    let r = &h.ring;
    assert!(send(r, b"m").unwrap());
    kill(r, 0); // the producer is gone: only the claim state matters
    // consumer 2 announced and won the slot, then stopped before READING
    let v = r.slot(0).load(Ordering::Relaxed);
    let claim = announcement(0, slot_ref(v));
    r.participant(2).claim.store(claim, Ordering::Relaxed);
    r.slot(0).store(slot_word(1, 0), Ordering::Relaxed);
    r.header().deq.hint.store(1, Ordering::Relaxed);
    let mut lease = r.try_lease(0, other()).unwrap().unwrap();
    r.reclaim(&mut lease).unwrap();
    assert_eq!(lease.frontier(), 0, "kept while its claimant lives");
    // the claimant dies: its reaper returns the record, which needs the
    // lane's lease; while a live holder has it, the entry is only dying
    assert_eq!(try_reap(r, 2), Some(ROLE_SENDER), "out of its role");
    assert_eq!(
        r.participant(2).word.load(Ordering::Relaxed) & 0xff,
        P_DYING
    );
    r.reclaim(&mut lease).unwrap();
    assert_eq!(lease.frontier(), 0, "never freed: it was committed");
    r.unlease(lease);
    finish_reap(r, 2);
    assert_eq!(r.participant(2).word.load(Ordering::Relaxed) & 0xff, P_FREE);
    // delivered again, whole
    assert_eq!(recv(r).unwrap(), b"m");
    let mut lease = r.try_lease(0, other()).unwrap().unwrap();
    r.reclaim(&mut lease).unwrap();
    assert_eq!(lease.frontier(), lease.end(), "freed once read");
    r.unlease(lease);
}

#[test]
fn a_dead_readers_record_is_freed_by_the_lane_holder() {
    let h = heap(1, 4096, 16);
    let r = &h.ring;
    assert!(send(r, b"x").unwrap());
    let reader = Owner {
        index: 3,
        generation: 1,
    };
    let c = r.claim(reader).unwrap().unwrap();
    let _ = c; // dies mid-read (no release)
    let mut lease = r.try_lease(0, me()).unwrap().unwrap();
    r.reclaim(&mut lease).unwrap();
    assert_eq!(lease.frontier(), 0, "a live reader keeps its record");
    kill(r, 3);
    r.reclaim(&mut lease).unwrap();
    assert_eq!(lease.frontier(), lease.end(), "READING(dead) freed");
    r.unlease(lease);
}

#[test]
fn a_stale_announcement_never_frees_a_later_record_at_the_same_offset() {
    let h = heap(1, 4096, 16);
    let r = &h.ring;
    // consumer 2 announced the record at offset 0, lap 0, then lost
    // (or finished) and died before withdrawing the announcement
    assert!(send(r, b"old").unwrap()); // ticket 0, at offset 0
    assert_eq!(recv(r).unwrap(), b"old");
    let stale = announcement(0, r.record_ref(0, 0));
    r.participant(2).claim.store(stale, Ordering::Relaxed);
    // the lane wraps: a new record at offset 0 (lap 1) is READY and its
    // producer is about to publish it
    let mut lease = r.try_lease(0, me()).unwrap().unwrap();
    while lease.end() < 64 {
        let a = r.allocate(&mut lease, 0).unwrap().unwrap();
        r.publish(&lease, &a).unwrap().unwrap();
        r.release(r.claim(other()).unwrap().unwrap());
    }
    let a = r.allocate(&mut lease, 3).unwrap().unwrap();
    assert_eq!(a.pos(), 64, "same offset, next lap");
    let ready = (r.tag(64) << 32) | (R_READY << 24) | me().record_bits();
    r.record(0, 64).state.store(ready, Ordering::Relaxed);
    // its producer is about to publish it under the next ticket
    let next = r.header().enq.hint.load(Ordering::Relaxed);
    r.record(0, 64).ticket.store(next, Ordering::Relaxed);
    // its reaper waits for the lease the producer holds (dying)
    assert_eq!(try_reap(r, 2), Some(ROLE_SENDER));
    assert_eq!(
        r.record(0, 64).state.load(Ordering::Relaxed),
        ready,
        "the reaper touched a record under a live lease holder"
    );
    assert!(r.publish(&lease, &a).unwrap().is_ok());
    r.unlease(lease);
    // with the lease free, it finds the record published (in a slot):
    // not the one its stale announcement names
    finish_reap(r, 2);
    assert_eq!(recv(r).unwrap().len(), 3);
    assert!(recv(r).is_none(), "delivered once");
}
