//! The node's liveness, shared by its tasks: the lease clock (fed by the
//! heartbeat task's confirms, read by the watcher for every lease it
//! writes), the latest samples of its runners, whether it drains, and the
//! fence that ends the incarnation.

use crate::domain::liveness::LeaseClock;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use stratavore_events::process::RunnerSample;
use stratavore_runtime::{BootInstant, Shutdown};

/// Now on `CLOCK_BOOTTIME`, as a duration since boot.
#[must_use]
pub fn boot_now() -> Duration {
    Duration::from_nanos(BootInstant::now().as_nanos())
}

/// One incarnation's liveness.
#[derive(Debug)]
pub struct Liveness {
    clock: Mutex<LeaseClock>,
    samples: Mutex<Vec<RunnerSample>>,
    draining: AtomicBool,
    fenced: AtomicBool,
    /// The incarnation's scope: triggered by the fence.
    scope: Shutdown,
}

impl Liveness {
    /// An incarnation begun now, its tasks under `scope`.
    #[must_use]
    pub fn new(ttl: Duration, scope: Shutdown) -> Self {
        Self {
            clock: Mutex::new(LeaseClock::new(ttl, boot_now())),
            samples: Mutex::default(),
            draining: AtomicBool::new(false),
            fenced: AtomicBool::new(false),
            scope,
        }
    }

    fn clock(&self) -> std::sync::MutexGuard<'_, LeaseClock> {
        // A panic while holding it cannot leave a clock half-updated.
        self.clock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The TTL the orchestrator's `start` carried.
    pub fn set_ttl(&self, ttl: Duration) {
        self.clock().set_ttl(ttl);
    }

    /// A heartbeat published at `published_at` was confirmed.
    pub fn confirmed(&self, published_at: Duration) {
        self.clock().confirmed(published_at);
    }

    /// The deadline (boot-time nanoseconds) every lease may have now.
    #[must_use]
    pub fn lease_deadline_nanos(&self) -> Option<u64> {
        self.clock()
            .lease_deadline()
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    /// Half the TTL: how long a shim may run on one lease.
    #[must_use]
    pub fn lease_span(&self) -> Duration {
        self.clock().ttl() / 2
    }

    /// Ends the incarnation if its last confirm is older than half the TTL;
    /// true once it is ended.
    pub fn check_fence(&self) -> bool {
        if self.fenced.load(Ordering::SeqCst) {
            return true;
        }
        let now = boot_now();
        let clock = self.clock().clone();
        if !clock.is_fenced(now) {
            if let Some(age) = clock.confirm_age(now) {
                crate::metrics::heartbeat_confirm_age(age);
            }
            return false;
        }
        tracing::error!(
            confirm_age = ?clock.confirm_age(now),
            ttl = ?clock.ttl(),
            "no heartbeat confirmed for half the TTL: ending this incarnation"
        );
        crate::metrics::fenced();
        self.fenced.store(true, Ordering::SeqCst);
        self.scope.trigger();
        true
    }

    /// Whether the incarnation was ended by the fence.
    #[must_use]
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::SeqCst)
    }

    /// The latest samples of this node's runners.
    pub fn set_samples(&self, samples: Vec<RunnerSample>) {
        *self
            .samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = samples;
    }

    /// The samples a heartbeat carries.
    #[must_use]
    pub fn samples(&self) -> Vec<RunnerSample> {
        self.samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Whether the node drains (takes no offers).
    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::SeqCst);
    }

    /// Whether the node drains.
    #[must_use]
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}
