//! The baselines, measured in the same run as the transports:
//!
//! * memcpy: one thread copies a buffer of the message size into another
//!   (both touched first), in batches of about 16 ms; the best batch.
//! * cache line: the two pinned processes bounce a counter through two
//!   cache lines of a shared mapping (a `memfd` both map), spinning; each
//!   round trip timed on its own. The latency floor of any shared-memory
//!   queue.
//! * futex: the same, but each side sleeps at once in `FUTEX_WAIT` (shared,
//!   not `FUTEX_PRIVATE_FLAG`) and is woken by `FUTEX_WAKE`: the floor for
//!   a wake-up of a sleeping peer.

use std::ffi::CStr;
use std::fs::File;
use std::hint::black_box;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use crate::cells::{Cell, CellOut, Transport};
use crate::common::{Peer, Res, drop_warm_up, max_rss_kib, peer_done, peer_ready};

/// `__cell memcpy copy SIZE`: GB/s of the best batch.
pub fn memcpy(cell: &Cell) -> Res<CellOut> {
    let size = cell.size;
    let src = vec![0x5au8; size];
    let mut dst = vec![0xa5u8; size];
    // about 1 GiB of copying per batch at the small end, at least 2 copies
    let reps = ((256usize << 20) / size).clamp(2, 1 << 24);
    let mut best = f64::MAX;
    let start = Instant::now();
    let mut batches = 0;
    while batches < 5 || (start.elapsed().as_secs_f64() < cell.secs && batches < 1000) {
        let t = Instant::now();
        for _ in 0..reps {
            dst.copy_from_slice(black_box(&src));
            black_box(&mut dst);
        }
        best = best.min(t.elapsed().as_secs_f64());
        batches += 1;
    }
    if dst[size - 1] != 0x5a {
        return Err("memcpy check failed".into());
    }
    Ok(CellOut {
        values: vec![("gb_per_s".into(), (reps * size) as f64 / best / 1e9)],
        count: batches,
        rss_main: max_rss_kib(),
        rss_peer: None,
    })
}

/// A page shared by the two processes of a baseline cell.
struct Shared {
    ptr: NonNull<u8>,
    fd: OwnedFd,
}

const PAGE: usize = 4096;
/// Offsets of the two words: a cache line apart (two, against prefetch).
const A: usize = 0;
const B: usize = 128;
/// The value that tells the peer to stop.
const STOP: u32 = u32::MAX;

impl Shared {
    fn create() -> Res<Self> {
        let name: &CStr = c"shmq-compare-baseline";
        // SAFETY: `name` is a valid C string; memfd_create returns a new
        // descriptor (or -1) and keeps no pointer.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        // SAFETY: `fd` was just returned by memfd_create and is owned by
        // no one else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        File::from(fd.try_clone()?).set_len(PAGE as u64)?;
        Self::map(fd)
    }

    fn inherited(arg: &str) -> Res<Self> {
        let fd: i32 = arg.parse()?;
        // SAFETY: the main process passed this descriptor number for us
        // alone (it cleared close-on-exec on it before spawning us).
        Self::map(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn map(fd: OwnedFd) -> Res<Self> {
        // SAFETY: a new shared mapping of one page of a file that is one
        // page long; the kernel picks the address.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(Shared {
            ptr: NonNull::new(p.cast()).ok_or("mmap returned null")?,
            fd,
        })
    }

    fn word(&self, off: usize) -> &AtomicU64 {
        let p = self.ptr.as_ptr().wrapping_add(off).cast::<AtomicU64>();
        // SAFETY: `off` + 8 is inside the page, which is mapped for as long
        // as `self` lives and is 8-aligned (page-aligned base, offsets 0 and
        // 128); both processes touch these words only through atomics.
        unsafe { &*p }
    }

    fn word32(&self, off: usize) -> &AtomicU32 {
        let p = self.ptr.as_ptr().wrapping_add(off).cast::<AtomicU32>();
        // SAFETY: as in `word`, for a 4-byte word at an 8-aligned offset.
        unsafe { &*p }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: unmaps the page mapped in `map`; no reference made by
        // `word` outlives `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), PAGE) };
    }
}

fn futex_wait(w: &AtomicU32, expected: u32) {
    // SAFETY: `w` is a valid, aligned 4-byte word in a shared mapping;
    // FUTEX_WAIT (shared: no PRIVATE flag) with no timeout only reads it.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            w.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            std::ptr::null::<libc::timespec>(),
        )
    };
}

fn futex_wake(w: &AtomicU32) {
    // SAFETY: as in `futex_wait`; FUTEX_WAKE wakes at most one waiter.
    unsafe { libc::syscall(libc::SYS_futex, w.as_ptr(), libc::FUTEX_WAKE, 1) };
}

/// The timing side of the cache-line and futex cells.
pub fn main_side(cell: &Cell) -> Res<CellOut> {
    let shm = Shared::create()?;
    let fd = shm.fd.as_raw_fd();
    let mut peer = Peer::spawn(&cell.peer_args(&[fd.to_string()]), &[fd])?;
    peer.ready()?;
    let futex = cell.transport == Transport::Futex;
    let limit = std::time::Duration::from_secs_f64(cell.secs);
    let start = Instant::now();
    let mut rtts = Vec::with_capacity(cell.max.min(1 << 20) as usize);
    let mut i = 0u64;
    while i < cell.max && (i < cell.min || start.elapsed() < limit) {
        i += 1;
        let t = Instant::now();
        if futex {
            let (a, b) = (shm.word32(A), shm.word32(B));
            let v = i as u32 & 0x7fff_ffff;
            a.store(v, Ordering::Release);
            futex_wake(a);
            loop {
                let got = b.load(Ordering::Acquire);
                if got == v {
                    break;
                }
                futex_wait(b, got);
            }
        } else {
            let (a, b) = (shm.word(A), shm.word(B));
            a.store(i, Ordering::Release);
            while b.load(Ordering::Acquire) != i {
                std::hint::spin_loop();
            }
        }
        rtts.push(t.elapsed().as_nanos() as u64);
    }
    if futex {
        shm.word32(A).store(STOP, Ordering::Release);
        futex_wake(shm.word32(A));
    } else {
        shm.word(A).store(u64::MAX, Ordering::Release);
    }
    let (_, rss) = peer.done()?;
    drop_warm_up(&mut rtts);
    Ok(CellOut::round_trip(rtts, Some(rss)))
}

/// The echo side of the cache-line and futex cells.
pub fn peer_side(cell: &Cell, extra: &[String]) -> Res<()> {
    let shm = Shared::inherited(extra.first().ok_or("no descriptor")?)?;
    peer_ready();
    let mut n = 0u64;
    if cell.transport == Transport::Futex {
        let (a, b) = (shm.word32(A), shm.word32(B));
        let mut last = 0;
        loop {
            let v = a.load(Ordering::Acquire);
            if v == last {
                futex_wait(a, last);
                continue;
            }
            if v == STOP {
                break;
            }
            b.store(v, Ordering::Release);
            futex_wake(b);
            last = v;
            n += 1;
        }
    } else {
        let (a, b) = (shm.word(A), shm.word(B));
        let mut last = 0;
        loop {
            let v = a.load(Ordering::Acquire);
            if v == last {
                std::hint::spin_loop();
                continue;
            }
            if v == u64::MAX {
                break;
            }
            b.store(v, Ordering::Release);
            last = v;
            n += 1;
        }
    }
    peer_done(n);
    Ok(())
}
