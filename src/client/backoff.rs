//! Exponential backoff with jitter: [`Backoff`].

use std::time::Duration;

/// Exponential backoff with jitter, pure: no clock, no random source of its own.
///
/// The delay before attempt `n` (counting from 1) is
///
/// ```text
/// min(base * 2^(n-1), max) * (0.5 + random * 0.5)      random in [0, 1]
/// ```
///
/// so it doubles per attempt up to `max`, and the "equal jitter" keeps at least half of it
/// while spreading a crowd of clients that lost the same server over the other half.
///
/// The state is the policy and how many attempts were made since the last
/// [`reset`](Self::reset).
///
/// ```
/// use std::time::Duration;
/// use hibiki::client::Backoff;
///
/// let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).max_attempts(Some(3));
/// assert_eq!(backoff.next(1.0), Some(Duration::from_millis(100)));
/// assert_eq!(backoff.next(1.0), Some(Duration::from_millis(200)));
/// assert_eq!(backoff.next(0.0), Some(Duration::from_millis(200))); // 400 ms, halved by the jitter
/// assert_eq!(backoff.next(1.0), None); // given up
/// backoff.reset();
/// assert_eq!(backoff.next(1.0), Some(Duration::from_millis(100)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    max_attempts: Option<u32>,
    attempts: u32,
}

impl Default for Backoff {
    /// Base 1 s, cap 30 s, at most 10 attempts in a row.
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max: Duration::from_secs(30),
            max_attempts: Some(10),
            attempts: 0,
        }
    }
}

impl Backoff {
    /// A backoff starting at `base` and capped at `max`, with the default limit of 10 attempts.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self { base, max, ..Self::default() }
    }

    /// Sets the most attempts in a row before [`next`](Self::next) gives up; `None`: never.
    #[must_use]
    pub fn max_attempts(mut self, attempts: Option<u32>) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// The first delay (before jitter).
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The largest delay (before jitter).
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The attempt limit, if any.
    pub fn attempt_limit(&self) -> Option<u32> {
        self.max_attempts
    }

    /// Attempts made since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Whether [`next`](Self::next) would give up.
    pub fn is_exhausted(&self) -> bool {
        self.max_attempts.is_some_and(|limit| self.attempts >= limit)
    }

    /// The delay before attempt `attempt` (1 for the first; 0 is taken as 1), with `random`
    /// in `[0, 1]` (clamped; NaN counts as 1): `min(base * 2^(attempt-1), max) * (0.5 +
    /// random * 0.5)`. Never panics or overflows.
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        let exponent = attempt.saturating_sub(1);
        let raw = 2u32
            .checked_pow(exponent)
            .and_then(|factor| self.base.checked_mul(factor))
            .map_or(self.max, |d| d.min(self.max));
        let random = if random.is_nan() { 1.0 } else { random.clamp(0.0, 1.0) };
        let factor = 0.5 + random * 0.5;
        if factor >= 1.0 {
            return raw;
        }
        // Float seconds lose nanoseconds only for delays of months; the result never exceeds `raw`.
        Duration::try_from_secs_f64(raw.as_secs_f64() * factor).map_or(raw, |d| d.min(raw))
    }

    /// Counts an attempt and returns the delay to wait before it, or `None` once the attempt
    /// limit is reached (the count then stays where it is).
    pub fn next(&mut self, random: f64) -> Option<Duration> {
        if self.is_exhausted() {
            return None;
        }
        self.attempts = self.attempts.saturating_add(1);
        Some(self.delay(self.attempts, random))
    }

    /// Starts over, after a success.
    pub fn reset(&mut self) {
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn formula() {
        let b = Backoff::new(100 * MS, 10_000 * MS);
        assert_eq!(b.delay(1, 1.0), 100 * MS);
        assert_eq!(b.delay(2, 1.0), 200 * MS);
        assert_eq!(b.delay(3, 1.0), 400 * MS);
        assert_eq!(b.delay(4, 0.0), 400 * MS);
        assert_eq!(b.delay(4, 0.5), 600 * MS);
        assert_eq!(b.delay(0, 1.0), 100 * MS, "attempt 0 counts as the first");
    }

    #[test]
    fn bounds() {
        let b = Backoff::default();
        assert_eq!(b.delay(6, 1.0), Duration::from_secs(30), "32 s capped at 30");
        assert_eq!(b.delay(40, 1.0), Duration::from_secs(30), "2^39 s overflows the factor");
        assert_eq!(b.delay(u32::MAX, 0.0), Duration::from_secs(15));
        let huge = Backoff::new(Duration::MAX, Duration::MAX);
        assert_eq!(huge.delay(3, 1.0), Duration::MAX, "overflowing product is capped");
        for attempt in 1..50 {
            for r in [0.0, 0.1, 0.5, 0.99, 1.0] {
                let d = b.delay(attempt, r);
                let raw = b.delay(attempt, 1.0);
                assert!(d >= raw / 2 && d <= raw && d <= b.max(), "attempt {attempt} random {r}: {d:?}");
            }
        }
        // Out-of-range randomness is clamped, not a panic.
        assert_eq!(b.delay(1, -3.0), Duration::from_millis(500));
        assert_eq!(b.delay(1, 7.0), Duration::from_secs(1));
        assert_eq!(b.delay(1, f64::NAN), Duration::from_secs(1));
        assert_eq!(b.delay(1, f64::INFINITY), Duration::from_secs(1));
    }

    #[test]
    fn counts_and_resets() {
        let mut b = Backoff::new(10 * MS, 1000 * MS);
        let delays: Vec<_> = (0..4).map(|_| b.next(1.0).unwrap()).collect();
        assert_eq!(delays, [10 * MS, 20 * MS, 40 * MS, 80 * MS]);
        assert_eq!(b.attempts(), 4);
        b.reset();
        assert_eq!(b.attempts(), 0);
        assert_eq!(b.next(1.0), Some(10 * MS));
    }

    #[test]
    fn exhaustion() {
        let mut b = Backoff::default();
        assert_eq!(b.attempt_limit(), Some(10));
        for _ in 0..10 {
            assert!(b.next(0.5).is_some());
        }
        assert!(b.is_exhausted());
        assert_eq!(b.next(0.5), None);
        assert_eq!(b.next(0.5), None);
        assert_eq!(b.attempts(), 10);
        b.reset();
        assert!(!b.is_exhausted());
        assert!(b.next(0.5).is_some());

        let mut unlimited = Backoff::default().max_attempts(None);
        for _ in 0..1000 {
            assert!(unlimited.next(0.5).unwrap() <= Duration::from_secs(30));
        }
        let mut never = Backoff::default().max_attempts(Some(0));
        assert_eq!(never.next(0.5), None);
    }
}
