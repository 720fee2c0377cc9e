//! The waker threads behind async calls (design.md §5.4): a task that must
//! wait registers its waker with the futex word it waits on and the epoch
//! it read; a *shard* thread sleeps in `futex_waitv` on every word its
//! tasks wait on, and wakes a task when its word's epoch moved or its
//! liveness period ended. The shared protocol is unchanged: a registered
//! task is counted in the word's `sleepers` like a parked thread.
//!
//! One reactor per fork generation (a forked child starts its own). Without
//! `futex_waitv` (Linux before 5.16, or a seccomp filter that refuses it),
//! each shard watches one word with a plain futex wait.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::Waker;
use std::time::Duration;

use rustix::thread::futex;

use crate::layout::WaitWord;
use crate::sys;
use crate::wait::{LIVENESS_PERIOD, registration_due};

/// Shared words one `futex_waitv` shard watches (the call takes 128 words;
/// one is the shard's control word).
const WORDS_PER_SHARD: usize = 127;

/// A registration, to take back with [`cancel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket(u64);

/// A task waiting for a word to move.
#[derive(Debug)]
struct Entry {
    id: u64,
    /// The epoch the task read before it announced itself.
    expected: u32,
    /// When it registered: it is woken a liveness period later at most.
    since: Duration,
    waker: Waker,
}

/// A futex word a shard sleeps on.
#[derive(Debug)]
struct Watched {
    /// The region it lies in (`Shared::id`), forgotten before it is unmapped.
    region: usize,
    word: WordPtr,
    entries: Vec<Entry>,
    /// When its last entry left (a word idle for a liveness period stops
    /// being watched).
    idle_since: Option<Duration>,
}

/// The address of a futex word (its epoch and sleeper count) in a mapped
/// region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WordPtr(NonNull<WaitWord>);

// SAFETY: a word's address is only dereferenced under the reactor's lock,
// while its region is mapped: a word is watched only while it has entries
// (whose futures keep the region mapped) or until `forget_region` removes
// it, which `Shared::drop` calls before unmapping.
unsafe impl Send for WordPtr {}

impl WordPtr {
    /// # Safety
    /// The word's region must still be mapped (see the `Send` impl).
    unsafe fn get(&self) -> &WaitWord {
        // SAFETY: the caller's promise: the mapping is alive.
        unsafe { self.0.as_ref() }
    }

    /// The epoch's address, for the kernel (never dereferenced here).
    fn epoch_addr(&self) -> *mut AtomicU32 {
        // `epoch` is the first field of the `repr(C)` `WaitWord`
        self.0.as_ptr().cast()
    }
}

/// One waker thread and the words it watches.
#[derive(Debug)]
struct Shard {
    id: u64,
    /// Bumped (and woken) when a word is added (`futex_waitv` shards only;
    /// leaked, so that its address outlives any sleep on it).
    control: Option<&'static AtomicU32>,
    words: Vec<Watched>,
}

#[derive(Debug, Default)]
struct State {
    shards: Vec<Shard>,
    next_id: u64,
}

/// The reactor of one fork generation.
#[derive(Debug)]
struct Reactor {
    fork_gen: u64,
    /// `futex_waitv` works here (else one word per shard).
    waitv: bool,
    state: Mutex<State>,
}

static REACTOR: AtomicPtr<Reactor> = AtomicPtr::new(std::ptr::null_mut());

/// This fork generation's reactor, made on first use.
fn reactor() -> &'static Reactor {
    let gen_now = sys::fork_generation();
    let p = REACTOR.load(Ordering::Acquire);
    // SAFETY: a published reactor is leaked, never freed.
    if let Some(r) = unsafe { p.as_ref() }
        && r.fork_gen == gen_now
    {
        return r;
    }
    let fresh = Box::into_raw(Box::new(Reactor {
        fork_gen: gen_now,
        waitv: waitv_works(),
        state: Mutex::new(State::default()),
    }));
    match REACTOR.compare_exchange(p, fresh, Ordering::AcqRel, Ordering::Acquire) {
        // SAFETY: just leaked; the parent's reactor, if any, is left behind
        // (its threads did not survive the fork).
        Ok(_) => unsafe { &*fresh },
        Err(_) => {
            // SAFETY: `fresh` was never published.
            drop(unsafe { Box::from_raw(fresh) });
            reactor()
        }
    }
}

/// Whether `futex_waitv` is available (probed once per process).
fn waitv_works() -> bool {
    static PROBED: AtomicU32 = AtomicU32::new(0); // 0 unknown, 1 no, 2 yes
    match PROBED.load(Ordering::Relaxed) {
        1 => return false,
        2 => return true,
        _ => {}
    }
    let forced_off = std::env::var_os("SHMQ_NO_FUTEX_WAITV").is_some_and(|v| v == "1");
    // An empty list is `EINVAL` where the call exists.
    let works = !forced_off
        && !matches!(
            futex::waitv(
                &[],
                futex::WaitvFlags::empty(),
                None,
                rustix::time::ClockId::Monotonic
            ),
            Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM)
        );
    PROBED.store(if works { 2 } else { 1 }, Ordering::Relaxed);
    works
}

impl Reactor {
    fn lock(&self) -> MutexGuard<'_, State> {
        // a panic while holding the lock left the lists consistent (every
        // change is one push or remove)
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What [`register`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Registered {
    /// Registered: the waker will be called.
    Yes(Ticket),
    /// The word no longer holds the expected epoch: the wake-up the task
    /// waits for may have come already (and a shard may have taken it
    /// before the registration existed). Nothing registered: look again.
    Moved,
    /// No waker thread could be started: nothing registered, and no
    /// wake-up will come.
    NoThread,
}

/// Registers `waker` to be woken when `word`'s epoch (in region `region`)
/// no longer holds `expected`, or a liveness period after `since`.
pub(crate) fn register(
    region: usize,
    word: &WaitWord,
    expected: u32,
    since: Duration,
    waker: &Waker,
) -> Registered {
    let r = reactor();
    let ptr = WordPtr(NonNull::from(word));
    let mut st = r.lock();
    // Under the lock a shard cannot be between its load of the word and
    // its look at the registrations: if the epoch moved since the task read
    // it, the wake-up that moved it may have reached a shard that found no
    // registration then (design.md §5.4; the loom model `task_wait` finds
    // this interleaving when the check is left out).
    if word.epoch.load(Ordering::Acquire) != expected {
        return Registered::Moved;
    }
    let id = st.next_id;
    st.next_id += 1;
    let entry = Entry {
        id,
        expected,
        since,
        waker: waker.clone(),
    };
    if let Some(w) = st
        .shards
        .iter_mut()
        .flat_map(|s| s.words.iter_mut())
        .find(|w| w.word == ptr)
    {
        // its shard sleeps on the word already: it hears the next wake
        w.entries.push(entry);
        w.idle_since = None;
        return Registered::Yes(Ticket(id));
    }
    let watched = Watched {
        region,
        word: ptr,
        entries: vec![entry],
        idle_since: None,
    };
    if r.waitv
        && let Some(s) = st
            .shards
            .iter_mut()
            .find(|s| s.words.len() < WORDS_PER_SHARD)
    {
        s.words.push(watched);
        let control = s.control.expect("a futex_waitv shard has a control word");
        drop(st);
        control.fetch_add(1, Ordering::Release);
        sys::futex_wake_private(control, 1);
        return Registered::Yes(Ticket(id));
    }
    let shard_id = st.next_id;
    st.next_id += 1;
    let control: Option<&'static AtomicU32> =
        r.waitv.then(|| &*Box::leak(Box::new(AtomicU32::new(0))));
    let spawned = std::thread::Builder::new()
        .name("shmq-waker".into())
        .spawn(move || run_shard(r, shard_id, control));
    if spawned.is_err() {
        return Registered::NoThread;
    }
    st.shards.push(Shard {
        id: shard_id,
        control,
        words: vec![watched],
    });
    Registered::Yes(Ticket(id))
}

/// Takes a registration back; `false` if its shard had fired it already.
pub(crate) fn cancel(t: Ticket) -> bool {
    let mut st = reactor().lock();
    let taken = st
        .shards
        .iter_mut()
        .flat_map(|s| s.words.iter_mut())
        .find_map(|w| {
            let i = w.entries.iter().position(|e| e.id == t.0)?;
            Some(w.entries.swap_remove(i))
        });
    drop(st);
    // its waker is dropped outside the lock: dropping a waker may drop a
    // task, whose futures may take registrations back in turn
    taken.is_some()
}

/// Stops watching every word of region `region` (called before the region
/// is unmapped; no task waits on it then, since a waiting task keeps its
/// region mapped).
pub(crate) fn forget_region(region: usize) {
    let p = REACTOR.load(Ordering::Acquire);
    // SAFETY: a published reactor is leaked, never freed.
    let Some(r) = (unsafe { p.as_ref() }) else {
        return; // no async call was ever made
    };
    if r.fork_gen != sys::fork_generation() {
        return;
    }
    let mut st = r.lock();
    let mut gone = Vec::new();
    for s in &mut st.shards {
        let (keep, left): (Vec<_>, Vec<_>) = s.words.drain(..).partition(|w| w.region != region);
        s.words = keep;
        gone.extend(left);
    }
    drop(st);
    // wakers of leaked futures (a `mem::forget`) go outside the lock: a
    // dropped waker may drop a task whose futures take the lock
    drop(gone);
}

/// A shard's thread: fire what is due, sleep on every watched word, again.
fn run_shard(r: &'static Reactor, id: u64, control: Option<&'static AtomicU32>) {
    let mut waits: Vec<futex::Wait> = Vec::with_capacity(WORDS_PER_SHARD + 1);
    // the shared words of `waits`, in order, with the epoch slept at
    let mut slept: Vec<(WordPtr, u32)> = Vec::with_capacity(WORDS_PER_SHARD);
    let mut fired: Vec<Waker> = Vec::new();
    // the word whose wake ended the last sleep, and the epoch slept at
    let mut woken_by: Option<(WordPtr, u32)> = None;
    loop {
        waits.clear();
        slept.clear();
        let now = sys::monotonic_now();
        let mut until = None::<Duration>;
        {
            let mut st = r.lock();
            let Some(pos) = st.shards.iter().position(|s| s.id == id) else {
                return;
            };
            let shard = &mut st.shards[pos];
            if let Some(c) = control {
                // read before the words: a word added after this read bumps
                // it, and the sleep below returns at once
                let mut w = futex::Wait::new();
                w.val = u64::from(c.load(Ordering::Acquire));
                w.uaddr = futex::WaitPtr::new(std::ptr::from_ref(c).cast_mut().cast());
                w.flags = futex::WaitFlags::SIZE_U32 | futex::WaitFlags::PRIVATE;
                waits.push(w);
            }
            shard.words.retain_mut(|w| {
                // SAFETY: under the lock, the word is mapped (`WordPtr`).
                let word = unsafe { w.word.get() };
                let cur = word.epoch.load(Ordering::Acquire);
                let before = fired.len();
                let mut i = 0;
                while i < w.entries.len() {
                    let e = &w.entries[i];
                    if registration_due(e.expected, cur, e.since, now) {
                        fired.push(w.entries.swap_remove(i).waker);
                    } else {
                        until = Some(until.map_or(e.since, |u| u.min(e.since)));
                        i += 1;
                    }
                }
                if let Some((ptr, at)) = woken_by
                    && ptr == w.word
                    && cur != at
                    && fired.len() == before
                {
                    // The kernel handed this shard a wake of the word that
                    // no task here was waiting for (its task was dropped,
                    // or the word was idle): it was meant for a sleeper
                    // elsewhere. Pass it on (design.md §5.4).
                    relay(word);
                }
                if w.entries.is_empty() {
                    let idle = *w.idle_since.get_or_insert(now);
                    if now.saturating_sub(idle) >= LIVENESS_PERIOD {
                        return false;
                    }
                }
                let mut fw = futex::Wait::new();
                fw.val = u64::from(cur);
                fw.uaddr = futex::WaitPtr::new(w.word.epoch_addr().cast());
                fw.flags = futex::WaitFlags::SIZE_U32;
                waits.push(fw);
                slept.push((w.word, cur));
                true
            });
            if control.is_none() && shard.words.is_empty() {
                // a one-word shard whose word went: its thread ends
                st.shards.remove(pos);
                drop(st);
                fired.drain(..).for_each(Waker::wake);
                return;
            }
        }
        fired.drain(..).for_each(Waker::wake);
        // wake at the earliest liveness end, and at least once a period
        // while any word is watched (idle words are dropped on time)
        let deadline = (!slept.is_empty()).then(|| {
            until.map_or(now + LIVENESS_PERIOD, |u| {
                (u + LIVENESS_PERIOD).min(now + LIVENESS_PERIOD)
            })
        });
        woken_by = sleep(&waits, control.is_some(), deadline)
            .and_then(|i| i.checked_sub(usize::from(control.is_some())))
            .and_then(|i| slept.get(i).copied());
    }
}

/// Passes on a wake of `word` that reached this shard for nobody here:
/// wakes every other sleeper of the word, if there is one (each re-checks;
/// the one the wake was meant for finds its message). Every sleeper, not
/// one: a wake of one could reach another idle shard, which passes on a
/// wake only once per move of the epoch, and would be lost there.
fn relay(word: &WaitWord) {
    if word.sleepers.load(Ordering::Relaxed) > 0 {
        sys::futex_wake(&word.epoch, u32::MAX);
    }
}

/// Sleeps until a word of `waits` moves or is woken, or `deadline`.
/// `Some(i)`: a wake of `waits[i]` ended the sleep.
fn sleep(waits: &[futex::Wait], waitv: bool, deadline: Option<Duration>) -> Option<usize> {
    if waitv {
        let ts = deadline.map(|d| rustix::time::Timespec {
            tv_sec: d.as_secs() as i64,
            tv_nsec: i64::from(d.subsec_nanos()),
        });
        // any other outcome (a word moved before the sleep, timed out,
        // interrupted, a word unmapped under us) means: look again
        return futex::waitv(
            waits,
            futex::WaitvFlags::empty(),
            ts.as_ref(),
            rustix::time::ClockId::Monotonic,
        )
        .ok();
    }
    let w = waits.first()?;
    let deadline = deadline.unwrap_or_else(|| sys::monotonic_now() + LIVENESS_PERIOD);
    sys::futex_wait_at(w.uaddr.ptr.cast::<AtomicU32>(), w.val as u32, deadline).then_some(0)
}
