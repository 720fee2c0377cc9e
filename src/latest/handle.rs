//! The state behind a [`Writer`](super::Writer) or
//! [`Reader`](super::Reader): its registration (fork-safe, shared with the
//! other kinds through `region::Member`) and the [`Endpoint`] the shared
//! blocking loops (`crate::blocking`) run over.

use std::sync::Arc;

use crate::blocking::Endpoint;
use crate::error::OpenError;
use crate::region::{Admission, Member, Shared, endpoint_via_member};
use crate::sync::AtomicU32;
use crate::wait::{Disconnect, WaitStrategy, Waiter};

/// A writer or reader of one latest-value region.
#[derive(Debug)]
pub(super) struct Handle {
    pub(super) member: Member,
    wait: WaitStrategy,
    disconnect: Disconnect,
    /// Unused (a latest-value region has no lanes to choose); the loops
    /// ask for it.
    preferred_lane: AtomicU32,
}

impl Handle {
    /// A handle whose registrations (the first, and a forked child's)
    /// must pass `admit`.
    pub(super) fn new(
        shared: &Arc<Shared>,
        role: u32,
        wait: WaitStrategy,
        disconnect: Disconnect,
        admit: Option<Admission>,
    ) -> Result<Self, OpenError> {
        Ok(Self {
            member: Member::admitted(shared, role, admit)?,
            wait,
            disconnect,
            preferred_lane: AtomicU32::new(0),
        })
    }

    pub(super) fn shared(&self) -> &Shared {
        &self.member.shared
    }
}

impl Endpoint for Handle {
    endpoint_via_member!();

    fn waiter(&self) -> Waiter {
        Waiter {
            strategy: self.wait,
            disconnect: self.disconnect,
            peers: self.member.peers(),
        }
    }

    fn preferred_lane(&self) -> &AtomicU32 {
        &self.preferred_lane
    }

    fn pinned_by_this_thread(&self, _need: u64) -> bool {
        false
    }

    fn after_claim(&self) {}
}
