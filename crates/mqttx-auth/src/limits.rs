//! Rate limits: a token bucket with the time passed in, and a bounded table of buckets per
//! key (source address, client).

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A token bucket: `rate` tokens per second, at most `burst` saved up. Time is an argument,
/// so tests and callers control it.
///
/// ```
/// use std::time::{Duration, Instant};
/// use mqttx_auth::limits::TokenBucket;
///
/// let start = Instant::now();
/// let mut bucket = TokenBucket::new(10, 2, start);
/// assert!(bucket.try_take(start, 1) && bucket.try_take(start, 1));
/// assert!(!bucket.try_take(start, 1)); // burst spent
/// assert!(bucket.try_take(start + Duration::from_millis(100), 1)); // one token per 100 ms
/// ```
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_second: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: f64::from(rate_per_second),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes `n` tokens if there are that many (a request larger than the burst is allowed
    /// when the bucket is full, so large messages are never refused forever).
    pub fn try_take(&mut self, now: Instant, n: u64) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        #[allow(clippy::cast_precision_loss)] // counts far below 2^52
        let n = n as f64;
        if self.tokens >= n || self.tokens >= self.burst {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Whether the bucket would be full at `now` (nothing to remember about it).
    fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * self.rate >= self.burst
    }
}

/// Token buckets per key, at most `capacity` of them: full buckets are forgotten first, and
/// when every bucket is in use a new key is refused (a flood from many addresses cannot
/// grow the table without bound).
#[derive(Debug)]
pub struct RateTable<K> {
    rate: u32,
    burst: u32,
    capacity: usize,
    buckets: HashMap<K, TokenBucket>,
}

impl<K: Eq + Hash + Clone> RateTable<K> {
    /// A table of buckets of `rate` per second with `burst`.
    pub fn new(rate: u32, burst: u32, capacity: usize) -> Self {
        Self {
            rate,
            burst,
            capacity,
            buckets: HashMap::new(),
        }
    }

    /// Takes one token from `key`'s bucket.
    pub fn try_take(&mut self, key: &K, now: Instant) -> bool {
        if !self.buckets.contains_key(key) && self.buckets.len() >= self.capacity {
            self.buckets.retain(|_, b| !b.is_full(now));
            if self.buckets.len() >= self.capacity {
                return false;
            }
        }
        self.buckets
            .entry(key.clone())
            .or_insert_with(|| TokenBucket::new(self.rate, self.burst, now))
            .try_take(now, 1)
    }

    /// The number of keys remembered.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// How long a bucket of `rate` takes to refill `burst` tokens (for documentation and tests).
pub fn refill_time(rate: u32, burst: u32) -> Duration {
    if rate == 0 {
        return Duration::MAX;
    }
    Duration::from_secs_f64(f64::from(burst) / f64::from(rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_its_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, 10, t0);
        assert_eq!((0..20).filter(|_| b.try_take(t0, 1)).count(), 10);
        let t1 = t0 + Duration::from_millis(50);
        assert_eq!((0..20).filter(|_| b.try_take(t1, 1)).count(), 5);
        // Never more than the burst, however long it waited.
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!((0..20).filter(|_| b.try_take(t2, 1)).count(), 10);
        // A request over the burst passes only from a full bucket.
        let t3 = t2 + Duration::from_secs(1);
        assert!(b.try_take(t3, 50));
        assert!(!b.try_take(t3, 1));
    }

    #[test]
    fn table_is_bounded() {
        let t0 = Instant::now();
        let mut table = RateTable::new(1, 1, 3);
        for key in 0..3 {
            assert!(table.try_take(&key, t0));
        }
        // Every bucket is in use: a fourth key is refused, not remembered.
        assert!(!table.try_take(&3, t0));
        assert_eq!(table.len(), 3);
        // Once buckets are full again they are forgotten and new keys get room.
        let later = t0 + refill_time(1, 1);
        assert!(table.try_take(&3, later));
        assert_eq!(table.len(), 1);
    }
}
