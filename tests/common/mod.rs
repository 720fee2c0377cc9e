//! Helpers shared by the integration tests: unique queue names, a child
//! process that is this same test binary re-executed in a given role, and a
//! watchdog so that a hang fails the test instead of wedging CI.

#![allow(dead_code)]

pub mod model;

use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The environment variable that tells a re-executed test binary its role.
pub const ROLE_VAR: &str = "SHMQ_TEST_ROLE";

/// A queue name unique to this process and call; unlinked on drop.
pub struct TempName(pub String);

impl TempName {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        Self(format!("shmq-test-{tag}-{}-{n}", std::process::id()))
    }
}

impl Drop for TempName {
    fn drop(&mut self) {
        let _ = shmq::Queue::unlink(&self.0);
    }
}

impl std::ops::Deref for TempName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// `Some(role)` when this process is a child started by [`spawn_role`].
pub fn child_role() -> Option<String> {
    std::env::var(ROLE_VAR).ok()
}

/// Re-executes this test binary running only `test` (which must call
/// [`child_role`] first) with `role` and extra environment variables.
pub fn spawn_role(test: &str, role: &str, env: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE_VAR, role)
        .stdin(Stdio::null())
        // the child's own test-harness report would muddle the parent's;
        // its panics still reach stderr
        .stdout(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn child test process")
}

/// Re-executes this test binary running only `test` with `role`, inside a
/// private mount namespace where the shell command `mount` ran first (to
/// shape `/dev/shm` without touching the host's): as root directly,
/// otherwise inside an unprivileged user namespace (`unshare -r`), where
/// mounting a tmpfs is allowed. Panics unless the child succeeds.
pub fn run_in_mount_namespace(test: &str, role: &str, mount: &str) {
    let exe = std::env::current_exe().expect("current exe");
    let script = format!(
        "{mount} && exec {} {test} --exact --nocapture --test-threads=1",
        exe.display()
    );
    // `/proc/self` belongs to the process's effective user (std only: the
    // fuzz crate includes this module and has no libc).
    let root =
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").expect("/proc/self"))
            == 0;
    let mut args = vec!["-m", "--propagation", "private"];
    if !root {
        args.insert(0, "-r");
    }
    args.extend(["sh", "-c", &script]);
    let st = Command::new("unshare")
        .args(&args)
        .env(ROLE_VAR, role)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status();
    match st {
        Ok(st) => assert!(st.success(), "the child after `{mount}` failed: {st}"),
        Err(e) => panic!(
            "this test needs unshare (util-linux) and either root or unprivileged user namespaces: {e}"
        ),
    }
}

/// Waits for `child` for at most `limit`; kills it and panics on timeout.
pub fn wait_or_kill(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("watchdog: {what} still running after {limit:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A small deterministic PRNG (SplitMix64) so tests need no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// FNV-1a over `bytes`.
pub fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Bytes before a numbered message's payload: instance, sequence, FNV-1a
/// of the payload.
pub const HEADER: usize = 24;

/// The message `seq` of sender `instance` (the kill -9 torture tests): a
/// header, then `HEADER..len` bytes derived from both, `len` pseudo-random
/// up to `max` (every fourth may be that long, the others up to 512).
pub fn numbered(instance: u64, seq: u64, max: usize, buf: &mut Vec<u8>) {
    let mut r = Rng(instance << 40 ^ seq);
    let len = HEADER
        + (r.next() as usize % (max - HEADER + 1)).min(if seq.is_multiple_of(4) {
            max
        } else {
            512
        });
    buf.clear();
    buf.extend_from_slice(&instance.to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&[0; 8]);
    buf.extend((HEADER..len).map(|i| (seq as usize * 13 + i + instance as usize) as u8));
    let sum = fnv(&buf[HEADER..]);
    buf[16..24].copy_from_slice(&sum.to_le_bytes());
}

/// Removes every file `NAME-*` in /dev/shm (a torture test's ledger and
/// logs) however the test ends, so a failing run leaves nothing behind.
pub struct Scratch(pub String);

impl Drop for Scratch {
    fn drop(&mut self) {
        let prefix = format!("{}-", self.0);
        if let Ok(dir) = std::fs::read_dir("/dev/shm") {
            for e in dir.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}
