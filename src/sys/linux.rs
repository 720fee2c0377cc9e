//! Linux: POSIX shared memory under `/dev/shm`, `fallocate`, `mmap`, the
//! process-shared futex with an absolute monotonic deadline, and open-file-
//! description (OFD) byte locks for kernel-backed liveness.

use std::ffi::c_void;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Once;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use rustix::fs::{self, AtFlags, Mode, OFlags};
use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags};
use rustix::thread::futex;
use rustix::time::{ClockId, Timespec};

use crate::error::OpenError;
use crate::sync::Wake;

/// Where POSIX shared-memory objects live on Linux.
pub(crate) const SHM_DIR: &str = "/dev/shm";

/// The environment variable that moves regions out of [`SHM_DIR`] (for a
/// machine without `/dev/shm`, or to keep a test's queues apart). Every
/// process of a queue must see the same value.
pub(crate) const DIR_ENV: &str = "SHMQ_DIR";

/// The directory regions live in: `$SHMQ_DIR` if set and non-empty, else
/// `/dev/shm`.
pub(crate) fn dir_path() -> String {
    match std::env::var(DIR_ENV) {
        Ok(d) if !d.is_empty() => d,
        _ => SHM_DIR.to_owned(),
    }
}

/// Longest accepted queue name (a file name under `/dev/shm`, leaving room
/// for the kernel's 255-byte limit).
pub(crate) const MAX_NAME_LEN: usize = 200;

/// Checks that `name` can name a shared-memory object: non-empty, at most
/// [`MAX_NAME_LEN`] bytes, no `/`, no NUL, not `.` or `..`. A single leading
/// `/` (the POSIX `shm_open` spelling) is accepted and stripped.
pub(crate) fn validate_name(name: &str) -> Result<&str, OpenError> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    let why = if bare.is_empty() {
        Some("the name is empty")
    } else if bare.len() > MAX_NAME_LEN {
        Some("the name is longer than 200 bytes")
    } else if bare.contains('/') {
        Some("the name contains '/'")
    } else if bare.contains('\0') {
        Some("the name contains a NUL byte")
    } else if bare == "." || bare == ".." {
        Some("the name is '.' or '..'")
    } else {
        None
    };
    match why {
        Some(reason) => Err(OpenError::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(bare),
    }
}

/// Opens the region directory, or says why it cannot be used.
fn shm_dir() -> Result<OwnedFd, OpenError> {
    let path = dir_path();
    let missing = |reason: &str| OpenError::NoShmDir {
        path: path.clone(),
        reason: reason.to_owned(),
    };
    if !path.starts_with('/') {
        return Err(missing(
            "it is not an absolute path, so processes in other directories would not agree",
        ));
    }
    fs::open(
        path.as_str(),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::NOENT => missing("it does not exist"),
        Errno::NOTDIR => missing("it is not a directory"),
        Errno::ACCESS | Errno::PERM => missing("permission denied"),
        other => OpenError::Io(io::Error::from(other)),
    })
}

/// The names of the regular files in the region directory (candidate
/// regions; symbolic links and directories are skipped).
pub(crate) fn list_names() -> Result<Vec<String>, OpenError> {
    let dir = shm_dir()?;
    let mut names = Vec::new();
    let entries = fs::Dir::read_from(&dir).map_err(|e| OpenError::Io(e.into()))?;
    for entry in entries {
        let entry = entry.map_err(|e| OpenError::Io(e.into()))?;
        if entry.file_type() != fs::FileType::RegularFile {
            continue;
        }
        if let Ok(name) = entry.file_name().to_str()
            && validate_name(name).is_ok()
        {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn open_error(name: &str, err: Errno) -> OpenError {
    match err {
        Errno::NOENT => OpenError::NotFound {
            name: name.to_owned(),
        },
        Errno::EXIST => OpenError::AlreadyExists {
            name: name.to_owned(),
        },
        Errno::ACCESS | Errno::PERM => OpenError::PermissionDenied {
            name: name.to_owned(),
        },
        Errno::LOOP => OpenError::Corrupted(format!(
            "{}/{name} is a symbolic link; shmq never follows one",
            dir_path()
        )),
        other => OpenError::Io(io::Error::from(other)),
    }
}

/// An open shared-memory object (a file under `/dev/shm`).
#[derive(Debug)]
pub(crate) struct ShmFile {
    fd: OwnedFd,
}

impl ShmFile {
    /// Creates `name` exclusively with `mode` and reserves `size` bytes with
    /// `fallocate`, so a full `/dev/shm` is an error now and never a SIGBUS
    /// later. On failure nothing is left behind.
    /// The creator holds an OFD lock on `init_lock_byte` from the moment the
    /// file exists until it unlocks it after initialising the region.
    pub(crate) fn create(
        name: &str,
        size: u64,
        mode: u32,
        init_lock_byte: u64,
    ) -> Result<Self, OpenError> {
        let dir = shm_dir()?;
        let fd = fs::openat(
            &dir,
            name,
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_bits_truncate(mode),
        )
        .map_err(|e| open_error(name, e))?;
        // The umask may have narrowed the mode; set it exactly as asked.
        let _ = fs::fchmod(&fd, Mode::from_bits_truncate(mode));
        let file = Self { fd };
        // Openers see the lock and wait while we reserve and initialise.
        let _ = file.try_lock_byte(init_lock_byte);
        if let Err(e) = fs::fallocate(&file.fd, fs::FallocateFlags::empty(), 0, size) {
            // fallocate leaves a 0-byte file behind on ENOSPC: remove it.
            let _ = fs::unlinkat(&dir, name, AtFlags::empty());
            return Err(match e {
                Errno::NOSPC | Errno::FBIG => OpenError::NoSpace {
                    needed: size,
                    available: fs::fstatvfs(&dir)
                        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
                        .unwrap_or(0),
                },
                other => OpenError::Io(io::Error::from(other)),
            });
        }
        Ok(file)
    }

    /// Opens an existing object read-write, refusing symbolic links.
    pub(crate) fn open(name: &str) -> Result<Self, OpenError> {
        let dir = shm_dir()?;
        let fd = fs::openat(
            &dir,
            name,
            OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| open_error(name, e))?;
        let st = fs::fstat(&fd).map_err(|e| OpenError::Io(e.into()))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(OpenError::Corrupted(format!(
                "{}/{name} is not a regular file",
                dir_path()
            )));
        }
        Ok(Self { fd })
    }

    /// A second, independent open file description of the same object, so
    /// that its byte locks are distinct from every other handle's (works even
    /// after the name was unlinked).
    pub(crate) fn reopen(&self) -> io::Result<Self> {
        let path = format!("/proc/self/fd/{}", self.fd.as_raw_fd());
        let fd = fs::open(path.as_str(), OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())?;
        Ok(Self { fd })
    }

    /// Reads a little-endian `u32` at byte `offset` (short file: an error).
    pub(crate) fn read_u32_at(&self, offset: u64) -> io::Result<u32> {
        let mut b = [0u8; 4];
        let n = rustix::io::pread(&self.fd, &mut b, offset)?;
        if n != 4 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        Ok(u32::from_le_bytes(b))
    }

    /// How long ago the object's inode last changed (creation, resize,
    /// mode): a freshly created region is young.
    pub(crate) fn changed_ago(&self) -> io::Result<Duration> {
        let st = fs::fstat(&self.fd)?;
        let changed = Duration::new(st.st_ctime as u64, st.st_ctime_nsec as u32);
        let now = rustix::time::clock_gettime(ClockId::Realtime);
        let now = Duration::new(now.tv_sec as u64, now.tv_nsec as u32);
        Ok(now.saturating_sub(changed))
    }

    /// The current size of the object in bytes.
    pub(crate) fn size(&self) -> io::Result<u64> {
        Ok(fs::fstat(&self.fd)?.st_size as u64)
    }

    /// Takes an exclusive OFD lock on byte `offset`. `Ok(false)` if another
    /// open file description holds it.
    pub(crate) fn try_lock_byte(&self, offset: u64) -> io::Result<bool> {
        match self.fcntl_lock(libc::F_OFD_SETLK, libc::F_WRLCK, offset) {
            Ok(_) => Ok(true),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Takes an exclusive OFD lock on byte `offset`, retrying for up to
    /// `patience` while another description holds it (holders keep such a
    /// lock for a few system calls; a dead holder's lock is dropped by the
    /// kernel). `Ok(false)` if it stayed taken: a stopped holder never
    /// hangs the caller.
    pub(crate) fn lock_byte_within(&self, offset: u64, patience: Duration) -> io::Result<bool> {
        let start = monotonic_now();
        loop {
            if self.try_lock_byte(offset)? {
                return Ok(true);
            }
            if monotonic_now().saturating_sub(start) > patience {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Releases this description's lock on byte `offset`.
    pub(crate) fn unlock_byte(&self, offset: u64) -> io::Result<()> {
        self.fcntl_lock(libc::F_OFD_SETLK, libc::F_UNLCK, offset)
            .map(drop)
    }

    /// Whether another open file description holds a lock on byte `offset`.
    /// The kernel drops a dead process's locks, so this is a liveness probe
    /// that a recycled pid cannot fool.
    pub(crate) fn byte_locked_by_other(&self, offset: u64) -> io::Result<bool> {
        let lk = self.fcntl_lock(libc::F_OFD_GETLK, libc::F_WRLCK, offset)?;
        Ok(lk.l_type != libc::F_UNLCK as libc::c_short)
    }

    fn fcntl_lock(
        &self,
        cmd: libc::c_int,
        ty: libc::c_int,
        offset: u64,
    ) -> io::Result<libc::flock> {
        // SAFETY: `flock` is a plain C struct for which all-zeroes is valid.
        let mut lk: libc::flock = unsafe { std::mem::zeroed() };
        lk.l_type = ty as libc::c_short;
        lk.l_whence = libc::SEEK_SET as libc::c_short;
        lk.l_start = offset as libc::off_t;
        lk.l_len = 1;
        lk.l_pid = 0; // required to be 0 for OFD locks
        // SAFETY: the fd is open for the lifetime of `self`, and `lk` is a
        // valid, exclusively borrowed `flock` for the duration of the call.
        let rc = unsafe { libc::fcntl(self.fd.as_raw_fd(), cmd, &mut lk as *mut libc::flock) };
        if rc == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(lk)
        }
    }
}

const NO_FD: i32 = -1;
const TRACKED_FDS: usize = 1024;
/// Liveness-lock descriptors of this process. A forked child closes them
/// all at once (in the `pthread_atfork` child hook), so a child never keeps
/// its parent's participants looking alive after the parent died.
static LOCK_FDS: [std::sync::atomic::AtomicI32; TRACKED_FDS] =
    [const { std::sync::atomic::AtomicI32::new(NO_FD) }; TRACKED_FDS];

/// An open file description used only to hold one participant's liveness
/// lock; closed by the child side of a `fork`.
#[derive(Debug)]
pub(crate) struct LockFile {
    file: std::mem::ManuallyDrop<ShmFile>,
    fork_gen: u64,
    slot: Option<usize>,
}

impl LockFile {
    /// A new description of `file`'s object for one participant's lock.
    pub(crate) fn new(file: &ShmFile) -> io::Result<Self> {
        let fork_gen = fork_generation();
        let file = file.reopen()?;
        let raw = file.fd.as_raw_fd();
        let slot = LOCK_FDS.iter().position(|s| {
            s.compare_exchange(NO_FD, raw, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        });
        Ok(Self {
            file: std::mem::ManuallyDrop::new(file),
            fork_gen,
            slot,
        })
    }

    /// The description the lock is taken on.
    pub(crate) fn file(&self) -> &ShmFile {
        &self.file
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        if fork_generation() != self.fork_gen {
            // Inherited across fork: the child hook closed the descriptor
            // already (if tracked); closing the number again could close an
            // unrelated descriptor that reuses it.
            if self.slot.is_some() {
                return;
            }
        }
        if let Some(i) = self.slot {
            LOCK_FDS[i].store(NO_FD, Ordering::Release);
        }
        // SAFETY: dropped exactly once, here, and never used afterwards.
        unsafe { std::mem::ManuallyDrop::drop(&mut self.file) };
    }
}

/// Whether `/dev/shm/name` is (still) the object `file` has open.
pub(crate) fn same_file_at_name(file: &ShmFile, name: &str) -> io::Result<bool> {
    let dir = shm_dir().map_err(|e| match e {
        OpenError::Io(e) => e,
        other => io::Error::new(io::ErrorKind::NotFound, other.to_string()),
    })?;
    let at = fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    let open = fs::fstat(&file.fd)?;
    Ok(at.st_dev == open.st_dev && at.st_ino == open.st_ino)
}

/// Removes `name` from `/dev/shm`. Mappings that exist stay valid.
pub(crate) fn unlink(name: &str) -> Result<(), OpenError> {
    let dir = shm_dir()?;
    fs::unlinkat(&dir, name, AtFlags::empty()).map_err(|e| open_error(name, e))
}

/// A shared, read-write mapping of a whole [`ShmFile`].
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; all access to it goes through
// raw pointers and atomics (see `layout`), never through references that
// assume exclusivity, so it may be used and dropped from any thread.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only hands out raw pointers.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the first `len` bytes of `file` shared and read-write.
    pub(crate) fn new(file: &ShmFile, len: usize) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty mapping"));
        }
        // SAFETY: a fresh mapping chosen by the kernel (null hint) aliases no
        // Rust object; the fd is valid for the call.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                file.fd.as_fd(),
                0,
            )?
        };
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { ptr, len })
    }

    /// Maps every page of the mapping now (`MADV_POPULATE_WRITE`, Linux
    /// 5.14+), so that the first pass of messages through the arena takes
    /// no page fault in this process. Best effort: an older kernel, or a
    /// page that cannot be mapped, leaves the rest to ordinary faults.
    /// Only the first `len` bytes (the validated layout's size): a file
    /// larger than its layout is not populated beyond it.
    pub(crate) fn prefault(&self, len: usize) {
        // SAFETY: the range starts at this live mapping and is clamped to
        // its length; populating maps the file's pages (allocated by the
        // creator's fallocate; a hole in a foreign file is allocated as a
        // zero page, or the call fails with an error, never a signal) and
        // changes no byte of them.
        let _ = unsafe {
            rustix::mm::madvise(
                self.ptr.as_ptr().cast::<c_void>(),
                len.min(self.len),
                rustix::mm::Advice::LinuxPopulateWrite,
            )
        };
    }

    /// The base address of the mapping.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned, and every
        // handle that points into the mapping holds an `Arc` to it, so no
        // pointer into it is used after this.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast::<c_void>(), self.len) };
    }
}

/// CPUs online in the machine: the kernel's list, not this process's
/// affinity mask, which is one CPU when processes are pinned apart (exactly
/// when spinning pays).
pub(crate) fn online_cpus() -> usize {
    // e.g. "0-1" or "0,2-5"
    let count = |list: &str| -> Option<usize> {
        let mut n = 0usize;
        for part in list.trim().split(',') {
            n += match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?);
                    b.checked_sub(a)? + 1
                }
                None => part.parse::<usize>().map(|_| 1).ok()?,
            };
        }
        Some(n)
    };
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|l| count(&l))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The current `CLOCK_MONOTONIC` time (the clock of futex deadlines).
pub(crate) fn monotonic_now() -> Duration {
    let ts = rustix::time::clock_gettime(ClockId::Monotonic);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Sleeps while `*word == expected`, until woken or until the absolute
/// `CLOCK_MONOTONIC` `deadline`. Process-shared (no `FUTEX_PRIVATE_FLAG`), so
/// a waker in another process reaches it.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, deadline: Duration) -> Wake {
    let ts = Timespec {
        tv_sec: deadline.as_secs() as _,
        tv_nsec: deadline.subsec_nanos() as _,
    };
    let any = std::num::NonZeroU32::new(!0).expect("nonzero");
    match futex::wait_bitset(word, futex::Flags::empty(), expected, Some(&ts), any) {
        Err(Errno::TIMEDOUT) => Wake::TimedOut,
        _ => Wake::Woken,
    }
}

/// Wakes up to `n` waiters on `word`, in any process.
pub(crate) fn futex_wake(word: &AtomicU32, n: u32) {
    // The kernel reads the count as a signed int: `u32::MAX` would be -1,
    // which wakes exactly one waiter (`++woken >= nr_wake` stops at once),
    // so "every waiter" is `i32::MAX`.
    let _ = futex::wake(word, futex::Flags::empty(), n.min(i32::MAX as u32));
}

/// Wakes up to `n` waiters on a word private to this process.
pub(crate) fn futex_wake_private(word: &AtomicU32, n: u32) {
    let _ = futex::wake(word, futex::Flags::PRIVATE, n.min(i32::MAX as u32));
}

/// [`futex_wait`] on a word given by address, which may be unmapped by
/// the time the kernel reads it (then the wait fails at once: the kernel
/// never faults on a futex address). For the reactor's one-word shards,
/// whose word's region can go while they head for the sleep. Whether a
/// wake ended it (not a timeout, a moved word or a signal).
pub(crate) fn futex_wait_at(word: *const AtomicU32, expected: u32, deadline: Duration) -> bool {
    let ts = libc::timespec {
        tv_sec: deadline.as_secs() as _,
        tv_nsec: deadline.subsec_nanos() as _,
    };
    // SAFETY: FUTEX_WAIT_BITSET only passes the address to the kernel,
    // which checks it; `ts` lives across the call; the last two arguments
    // are the unused second address and the "any" bitset.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word,
            libc::FUTEX_WAIT_BITSET,
            expected,
            &raw const ts,
            std::ptr::null::<u32>(),
            !0u32,
        )
    };
    rc == 0
}

/// A random `u64` from the kernel (`getrandom`), or, if that fails, the
/// clock and the process id mixed: a region's instance number needs to
/// differ from its name's earlier regions, not to be secret.
pub(crate) fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: `bytes` is a writable buffer of the length passed.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), libc::GRND_NONBLOCK) };
    if n == 8 {
        return u64::from_ne_bytes(bytes);
    }
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
    let mix = (t.tv_sec as u64).rotate_left(32) ^ t.tv_nsec as u64 ^ u64::from(getpid()) << 40;
    // splitmix64's finaliser: nearby inputs give unrelated outputs
    let mut z = mix.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The process id of the caller.
pub(crate) fn getpid() -> u32 {
    rustix::process::getpid().as_raw_nonzero().get() as u32
}

static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);
static FORK_HOOK: Once = Once::new();

extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
    for s in &LOCK_FDS {
        let fd = s.swap(NO_FD, Ordering::AcqRel);
        if fd != NO_FD {
            // SAFETY: `fd` is a descriptor this process (the parent) owned in
            // a `LockFile`; the child's copy of that `LockFile` will not
            // close it again (its fork generation differs). `close` is
            // async-signal-safe.
            unsafe { libc::close(fd) };
        }
    }
}

/// A counter that changes in a child process after every `fork`. Handles
/// compare it with the value they registered under: an inherited handle
/// belongs to the parent and must not be used as-is in the child.
pub(crate) fn fork_generation() -> u64 {
    FORK_HOOK.call_once(|| {
        // SAFETY: `after_fork_in_child` does only what is allowed in a
        // forked child of a threaded process: a relaxed atomic add, atomic
        // swaps over a static array and `close`, all async-signal-safe,
        // taking no lock another thread could have held at the fork; and
        // it lives for the whole program.
        unsafe {
            libc::pthread_atfork(None, None, Some(after_fork_in_child));
        }
    });
    FORK_GENERATION.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(validate_name("ok-name_1").is_ok());
        assert_eq!(validate_name("/lead").unwrap(), "lead");
        for bad in ["", "/", "a/b", ".", "..", "nul\0x"] {
            assert!(
                matches!(validate_name(bad), Err(OpenError::InvalidName { .. })),
                "{bad:?} accepted"
            );
        }
        assert!(validate_name(&"x".repeat(MAX_NAME_LEN + 1)).is_err());
    }

    #[test]
    fn ofd_locks_conflict_between_descriptions() {
        let name = format!("shmq-sys-test-{}", getpid());
        let f = ShmFile::create(&name, 4096, 0o600, 100).unwrap();
        let g = f.reopen().unwrap();
        assert!(f.try_lock_byte(3).unwrap());
        assert!(!g.try_lock_byte(3).unwrap());
        assert!(g.byte_locked_by_other(3).unwrap());
        assert!(
            !f.byte_locked_by_other(3).unwrap(),
            "own lock is no conflict"
        );
        assert!(!g.byte_locked_by_other(4).unwrap());
        f.unlock_byte(3).unwrap();
        assert!(!g.byte_locked_by_other(3).unwrap());
        unlink(&name).unwrap();
    }

    #[test]
    fn a_wake_of_every_waiter_wakes_every_waiter() {
        // several threads asleep on one word; one wake with `u32::MAX`
        // (what `Ring::wake` passes to wake everyone) must wake them all,
        // none may sleep on to its deadline
        let w = AtomicU32::new(0);
        let deadline = monotonic_now() + Duration::from_secs(20);
        std::thread::scope(|s| {
            let sleepers: Vec<_> = (0..4)
                .map(|_| s.spawn(|| futex_wait(&w, 0, deadline)))
                .collect();
            // let them fall asleep (one that has not yet sees the new
            // value and returns at once: `Woken` too)
            std::thread::sleep(Duration::from_millis(50));
            w.store(1, Ordering::SeqCst);
            futex_wake(&w, u32::MAX);
            for t in sleepers {
                assert_eq!(t.join().unwrap(), Wake::Woken, "a waiter slept on");
            }
        });
    }

    #[test]
    fn futex_deadline_is_absolute() {
        let w = AtomicU32::new(7);
        let start = monotonic_now();
        let r = futex_wait(&w, 7, start + Duration::from_millis(30));
        assert_eq!(r, Wake::TimedOut);
        assert!(monotonic_now() >= start + Duration::from_millis(30));
        // a mismatched word returns at once
        assert_eq!(
            futex_wait(&w, 8, start + Duration::from_secs(60)),
            Wake::Woken
        );
    }
}
