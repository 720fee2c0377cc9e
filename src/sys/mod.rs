//! The operating-system seam: one module per OS, chosen at compile time.
//! Everything above this layer is portable; only Linux is implemented (the
//! futex must be process-shared, which Windows' `WaitOnAddress` is not).

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::*;

#[cfg(not(target_os = "linux"))]
compile_error!("shmq supports Linux only for now: see src/sys/mod.rs");
