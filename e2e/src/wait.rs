//! Polling with a deadline: the one helper tests use to wait for something that a watch does
//! not deliver (a status written, a pod running, a port answering).
//!
//! The probe is an async closure, called every [`POLL_INTERVAL`] until it returns a value or
//! the timeout passes. It answers either an `Option` (`Some(value)` when done) or a `Result`
//! (`Ok(value)` when done, `Err(what it saw)` to keep waiting): with a `Result` the timeout's
//! message shows the last observation, e.g. `timed out after 20s waiting for 3 pods running
//! (last seen: 2 running: web-0, web-1)`.
//!
//! ```no_run
//! # async fn demo(count: impl Fn() -> usize) {
//! use std::time::Duration;
//! let n = e2e::wait::until("3 pods running", Duration::from_secs(20), || async {
//!     let n = count();
//!     if n == 3 { Ok(n) } else { Err(format!("{n} running")) }
//! })
//! .await;
//! # }
//! ```
//!
//! Time is tokio's (`tokio::time::Instant`), so a test on a paused clock times out in its own
//! virtual time.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

/// How often the probe is called.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// What a probe answers: done with a value, or not yet (with what it saw, when it says).
pub trait Outcome {
    /// The value a finished wait returns.
    type Value;
    /// `Ok(value)` when done; `Err(observation)` to keep polling.
    fn into_poll(self) -> Result<Self::Value, Option<String>>;
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn into_poll(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

impl<T, E: Display> Outcome for Result<T, E> {
    type Value = T;
    fn into_poll(self) -> Result<T, Option<String>> {
        self.map_err(|seen| Some(seen.to_string()))
    }
}

/// A wait that timed out: what was awaited, for how long, and the last observation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("timed out after {timeout:?} waiting for {what}{}", last_seen(.last))]
pub struct Timeout {
    pub what: String,
    pub timeout: Duration,
    /// What the probe's last call saw, when it answered with an `Err`.
    pub last: Option<String>,
}

fn last_seen(last: &Option<String>) -> String {
    last.as_ref()
        .map(|seen| format!(" (last seen: {seen})"))
        .unwrap_or_default()
}

/// Calls `probe` every [`POLL_INTERVAL`] until it answers a value; [`Timeout`] once `timeout`
/// has passed (the probe is always called at least once).
pub async fn try_until<F, Fut>(
    what: &str,
    timeout: Duration,
    mut probe: F,
) -> Result<<Fut::Output as Outcome>::Value, Timeout>
where
    F: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Outcome,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match probe().await.into_poll() {
            Ok(value) => return Ok(value),
            Err(last) => last,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(Timeout {
                what: what.to_string(),
                timeout,
                last,
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// [`try_until`] for tests: panics with the [`Timeout`]'s message.
pub async fn until<F, Fut>(
    what: &str,
    timeout: Duration,
    probe: F,
) -> <Fut::Output as Outcome>::Value
where
    F: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Outcome,
{
    try_until(what, timeout, probe)
        .await
        .unwrap_or_else(|timeout| panic!("{timeout}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn returns_the_first_value_and_polls_until_then() {
        let calls = AtomicU32::new(0);
        let got = until("the third call", Duration::from_secs(5), || async {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            (n == 3).then_some(n * 10)
        })
        .await;
        assert_eq!(got, 30);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_timeout_names_what_and_the_last_observation() {
        let calls = AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        let err = try_until("3 pods running", Duration::from_millis(200), || async {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(format!("{n} running"))
        })
        .await
        .expect_err("never done");
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(200), "{waited:?}");
        let last = calls.load(Ordering::SeqCst) - 1;
        assert_eq!(err.last, Some(format!("{last} running")));
        assert_eq!(
            err.to_string(),
            format!("timed out after 200ms waiting for 3 pods running (last seen: {last} running)")
        );
    }

    #[tokio::test]
    async fn an_option_probe_times_out_without_an_observation() {
        let err = try_until("nothing", Duration::from_millis(100), || async {
            None::<()>
        })
        .await
        .expect_err("never done");
        assert_eq!(err.to_string(), "timed out after 100ms waiting for nothing");
    }

    #[tokio::test]
    #[should_panic(expected = "timed out after 50ms waiting for the impossible (last seen: no)")]
    async fn until_panics_with_the_message() {
        until("the impossible", Duration::from_millis(50), || async {
            Err::<(), _>("no")
        })
        .await;
    }

    #[tokio::test]
    async fn a_zero_timeout_still_probes_once() {
        let got = until("an immediate answer", Duration::ZERO, || async { Some(7) }).await;
        assert_eq!(got, 7);
    }
}
