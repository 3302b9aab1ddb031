//! Wake-up coalescing for a controller's async runtime.
//!
//! A busy controller is woken by every watch event and every response separately: the
//! runtime runs out of work, blocks in `epoll_wait`, is woken for one event of a few KB,
//! handles it, and blocks again. Each of those rounds costs a context switch, a poll of every
//! stream adapter between the socket and the reconciler, and read calls that come back
//! empty; on a cluster-wide rollout that overhead is a large part of the controller's CPU.
//!
//! [`coalesce`] makes the runtime wait, when it runs out of work, until `interval` has passed
//! since it was last woken; what arrives meanwhile is read and handled in one round. A quiet
//! controller is not delayed: the wait only happens when the previous wake-up was less than
//! `interval` ago, so a wake-up after a quiet period is served at once and only a burst of
//! wake-ups is spaced. The cost is up to `interval` of latency per network round trip
//! during a burst (the hooks are tokio's `on_thread_park` / `on_thread_unpark`; the sleep
//! happens on the runtime's own thread, so nothing else runs on it meanwhile).

use std::cell::Cell;
use std::time::{Duration, Instant};

thread_local! {
    /// When this runtime thread was last woken (unparked).
    static LAST_WAKE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Installs wake-up coalescing on `builder` (no-op for a zero `interval`).
pub fn coalesce(builder: &mut tokio::runtime::Builder, interval: Duration) {
    if interval.is_zero() {
        return;
    }
    builder
        .on_thread_unpark(|| LAST_WAKE.with(|w| w.set(Some(Instant::now()))))
        .on_thread_park(move || {
            if let Some(woken) = LAST_WAKE.with(Cell::get) {
                let busy = woken.elapsed();
                if busy < interval {
                    std::thread::sleep(interval - busy);
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::{MissedTickBehavior, interval};

    /// Counts how often a 1 ms ticker runs in `window` on a current-thread runtime.
    fn ticks(coalescing: Duration, window: Duration) -> u32 {
        let mut builder = tokio::runtime::Builder::new_current_thread();
        builder.enable_all();
        coalesce(&mut builder, coalescing);
        let runtime = builder.build().expect("runtime");
        runtime.block_on(async {
            let mut ticker = interval(Duration::from_millis(1));
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let start = Instant::now();
            let mut n = 0;
            while start.elapsed() < window {
                ticker.tick().await;
                n += 1;
            }
            n
        })
    }

    #[test]
    fn wake_ups_are_spaced_by_the_interval() {
        // Every tick parks the runtime once; with coalescing each park waits until 20 ms
        // after the last wake-up, so 200 ms hold at most ~10 ticks (a slow machine only
        // lowers the count).
        let coalesced = ticks(Duration::from_millis(20), Duration::from_millis(200));
        assert!(coalesced <= 12, "{coalesced} wake-ups in 200 ms");
    }

    #[test]
    fn zero_interval_installs_nothing() {
        // Without coalescing the 1 ms ticker runs far more often than 12 times in 200 ms.
        let plain = ticks(Duration::ZERO, Duration::from_millis(200));
        assert!(plain > 12, "{plain} wake-ups in 200 ms");
    }
}
