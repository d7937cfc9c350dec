//! Exact counting (sequence numbers seen per publisher), percentiles, and CPU and memory use
//! read from `/proc` (Linux; elsewhere these read as unknown).

/// The sequence numbers one subscriber received from one publisher: a bitmap, so duplicates
/// and gaps are counted exactly.
#[derive(Debug, Default)]
pub(crate) struct SeqTracker {
    bits: Vec<u64>,
    /// Distinct sequence numbers received.
    pub(crate) unique: u64,
    /// Receptions of a sequence number already received.
    pub(crate) duplicates: u64,
}

impl SeqTracker {
    /// Records one reception of `seq`.
    pub(crate) fn record(&mut self, seq: u32) {
        let word = (seq / 64) as usize;
        if word >= self.bits.len() {
            // Grows by doubling; sequence numbers are dense from 0.
            self.bits.resize((word + 1).max(self.bits.len() * 2), 0);
        }
        let bit = 1u64 << (seq % 64);
        if self.bits[word] & bit == 0 {
            self.bits[word] |= bit;
            self.unique += 1;
        } else {
            self.duplicates += 1;
        }
    }
}

/// The value at quantile `q` (0..=1) of sorted `values`.
pub(crate) fn quantile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// CPU time (user + system) of process `pid` (`None`: this process), in seconds.
pub(crate) fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => String::from("/proc/self/stat"),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may hold spaces; fields after its closing parenthesis are
    // plain. utime and stime are fields 14 and 15, in clock ticks (100 per second on Linux).
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Resident memory of process `pid`, in bytes.
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_counts_duplicates_and_distinct() {
        let mut t = SeqTracker::default();
        for seq in [0, 1, 2, 1, 500, 500, 64] {
            t.record(seq);
        }
        assert_eq!((t.unique, t.duplicates), (5, 2));
    }

    #[test]
    fn quantiles_pick_the_rank() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(quantile(&v, 0.5), Some(500));
        assert_eq!(quantile(&v, 0.99), Some(990));
        assert_eq!(quantile(&v, 0.999), Some(999));
        assert_eq!(quantile(&v, 1.0), Some(1000));
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[7], 0.0), Some(7));
    }

    #[test]
    fn own_cpu_time_is_readable_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(cpu_seconds(None).is_some());
            assert!(rss_bytes(std::process::id()).is_some_and(|r| r > 0));
        }
    }
}
