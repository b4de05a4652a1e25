//! Per-client and per-process limits: a token-bucket rate limit with a burst, and raising the
//! open-files limit so that `--max-clients` connections can exist at all.

use std::time::Duration;
use tokio::time::Instant;

/// A token bucket: `rate` lines a second on average, up to `burst` at once.
///
/// Over the limit a client is not cut off: its reader waits for the next token, so TCP flow
/// control slows the sender down and nothing it sent is lost.
#[derive(Debug)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    /// A full bucket; `rate` must be positive.
    pub fn new(rate: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        RateLimit {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes a token for one line: `None` if one was there, or how long until one will be.
    pub fn take(&mut self) -> Option<Duration> {
        let now = Instant::now();
        let earned = now.saturating_duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            None
        } else {
            // At most an hour: a rate that small is refused at start-up anyway.
            let wait = (1.0 - self.tokens) / self.rate;
            Some(Duration::try_from_secs_f64(wait.min(3600.0)).unwrap_or(Duration::from_secs(3600)))
        }
    }
}

/// What raising the open-files limit achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimit {
    /// The soft limit now in force.
    pub soft: u64,
    /// The hard limit (the most an unprivileged process can get).
    pub hard: u64,
}

/// Descriptors kept aside for the listener, stdio, the transcript and the runtime.
pub const SPARE_FILES: u64 = 32;

/// Raises RLIMIT_NOFILE's soft limit to its hard limit. Returns the limits now in force, or
/// `None` where there is no such limit.
pub fn raise_file_limit() -> Option<FileLimit> {
    #[cfg(unix)]
    {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
        // RLIM_INFINITY is not a valid soft limit for files; the kernel's nr_open caps it.
        let target = hard.min(1 << 20);
        let soft = if soft < target && setrlimit(Resource::RLIMIT_NOFILE, target, hard).is_ok() {
            target
        } else {
            soft
        };
        Some(FileLimit {
            soft: rlim(soft),
            hard: rlim(hard),
        })
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// A limit as `u64`: `rlim_t` is unsigned on Linux and macOS and signed on the BSDs, where no
/// limit is negative.
#[cfg(unix)]
#[allow(clippy::unnecessary_fallible_conversions, clippy::useless_conversion)]
fn rlim(v: nix::sys::resource::rlim_t) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_then_rate() {
        let mut r = RateLimit::new(10.0, 3);
        assert_eq!(r.take(), None);
        assert_eq!(r.take(), None);
        assert_eq!(r.take(), None);
        let wait = r.take().expect("bucket empty");
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(r.take(), None);
        assert!(r.take().is_some());
        // A long pause refills at most to the burst.
        tokio::time::advance(Duration::from_secs(60)).await;
        for _ in 0..3 {
            assert_eq!(r.take(), None);
        }
        assert!(r.take().is_some());
    }

    /// However small the rate, the wait is a duration (at most an hour), not a panic.
    #[tokio::test(start_paused = true)]
    async fn a_tiny_rate_waits_an_hour_at_most() {
        for rate in [1e-20, f64::MIN_POSITIVE, 1e-3] {
            let mut r = RateLimit::new(rate, 1);
            assert_eq!(r.take(), None);
            let wait = r.take().expect("bucket empty");
            assert!(wait <= Duration::from_secs(3600), "{rate}: {wait:?}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn file_limit_is_raised_not_lowered() {
        use nix::sys::resource::{Resource, getrlimit};
        let (before, _) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
        let l = raise_file_limit().expect("a limit on unix");
        assert!(l.soft >= rlim(before) && l.soft <= l.hard);
    }
}
