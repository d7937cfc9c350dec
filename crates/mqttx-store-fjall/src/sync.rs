//! [`SyncPolicy`]: when a committed batch reaches the disk, and its textual form for the
//! command line and configuration files.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// When [`FjallJournal::commit`](crate::FjallJournal) makes a batch durable.
///
/// Every policy hands the batch to the operating system (a `write(2)` of the journal)
/// before `commit` returns, so a crash of the process alone (`kill -9`, a panic, an abort)
/// loses nothing that was committed. The policies differ in what a power failure or a
/// crash of the operating system loses, which is what reaches the disk (`fsync(2)`):
///
/// | policy | `commit` returns after | process crash loses | power failure loses |
/// | --- | --- | --- | --- |
/// | `EveryBatch` (default) | write + fsync | nothing | nothing |
/// | `Interval(d)` | write | nothing | at most the batches of the last `d` (plus the fsync under way) |
/// | `None` | write | nothing | whatever the OS had not written back yet (Linux: typically up to 30 s) |
///
/// The text form, for [`FromStr`] and [`Display`](fmt::Display), is `every-batch`,
/// `none`, or `interval:` followed by a duration in `ms` or `s` (`interval:100ms`,
/// `interval:1s`); an interval is between 1 ms and 1 hour.
///
/// ```
/// use std::time::Duration;
/// use mqttx_store_fjall::SyncPolicy;
///
/// assert_eq!("every-batch".parse::<SyncPolicy>()?, SyncPolicy::EveryBatch);
/// assert_eq!("interval:100ms".parse::<SyncPolicy>()?, SyncPolicy::Interval(Duration::from_millis(100)));
/// assert_eq!(SyncPolicy::Interval(Duration::from_secs(2)).to_string(), "interval:2s");
/// assert!("interval".parse::<SyncPolicy>().is_err());
/// # Ok::<(), mqttx_store_fjall::ParseSyncPolicyError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SyncPolicy {
    /// `commit` returns once the batch is on the disk (`fsync` of the journal), so a
    /// batch the broker acknowledged survives a power failure. The default.
    #[default]
    EveryBatch,
    /// `commit` returns once the batch is written to the operating system; a background
    /// thread fsyncs the journal every interval. A process crash loses nothing; a power
    /// failure loses at most the batches committed in the last interval (and during the
    /// fsync in progress). Commits wait while that fsync holds the journal.
    Interval(Duration),
    /// `commit` returns once the batch is written to the operating system; the store never
    /// fsyncs the journal itself (the operating system writes it back on its own schedule,
    /// and fjall fsyncs when it rotates the journal and when the store is closed). A process
    /// crash loses nothing; a power failure loses what the operating system had not yet
    /// written back.
    None,
}

impl SyncPolicy {
    /// The shortest interval [`SyncPolicy::Interval`] accepts in its text form.
    pub const MIN_INTERVAL: Duration = Duration::from_millis(1);
    /// The longest interval [`SyncPolicy::Interval`] accepts in its text form.
    pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
}

impl fmt::Display for SyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncPolicy::EveryBatch => f.write_str("every-batch"),
            SyncPolicy::None => f.write_str("none"),
            SyncPolicy::Interval(d) => {
                if d.subsec_nanos() == 0 {
                    write!(f, "interval:{}s", d.as_secs())
                } else if d.subsec_nanos() % 1_000_000 == 0 {
                    write!(f, "interval:{}ms", d.as_millis())
                } else {
                    // Not produced by `from_str`; written so that it parses back.
                    write!(f, "interval:{}ms", d.as_millis().max(1))
                }
            }
        }
    }
}

/// A sync policy's text that [`SyncPolicy::from_str`] cannot read; its `Display` says what
/// the accepted forms are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseSyncPolicyError {
    input: String,
    reason: &'static str,
}

impl fmt::Display for ParseSyncPolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid sync policy {:?}: {} (expected every-batch, interval:DURATION such as interval:100ms or interval:1s, or none)",
            self.input, self.reason
        )
    }
}

impl std::error::Error for ParseSyncPolicyError {}

impl FromStr for SyncPolicy {
    type Err = ParseSyncPolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParseSyncPolicyError {
            input: s.to_owned(),
            reason,
        };
        match s {
            "every-batch" => return Ok(SyncPolicy::EveryBatch),
            "none" => return Ok(SyncPolicy::None),
            "interval" => return Err(err("the interval needs a duration")),
            _ => {}
        }
        let Some(duration) = s.strip_prefix("interval:") else {
            return Err(err("unknown policy"));
        };
        let (digits, unit_ms) = if let Some(ms) = duration.strip_suffix("ms") {
            (ms, 1)
        } else if let Some(secs) = duration.strip_suffix('s') {
            (secs, 1000)
        } else {
            return Err(err("the duration needs a unit, ms or s"));
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("the duration is not a whole number"));
        }
        let interval = digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(unit_ms))
            .map(Duration::from_millis)
            .ok_or_else(|| err("the duration is too long"))?;
        if interval < SyncPolicy::MIN_INTERVAL {
            return Err(err("the interval must be at least 1ms"));
        }
        if interval > SyncPolicy::MAX_INTERVAL {
            return Err(err("the interval must be at most 3600s"));
        }
        Ok(SyncPolicy::Interval(interval))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let ok = [
            ("every-batch", SyncPolicy::EveryBatch),
            ("none", SyncPolicy::None),
            (
                "interval:100ms",
                SyncPolicy::Interval(Duration::from_millis(100)),
            ),
            (
                "interval:1ms",
                SyncPolicy::Interval(Duration::from_millis(1)),
            ),
            ("interval:2s", SyncPolicy::Interval(Duration::from_secs(2))),
            (
                "interval:3600s",
                SyncPolicy::Interval(Duration::from_secs(3600)),
            ),
        ];
        for (text, policy) in ok {
            assert_eq!(text.parse::<SyncPolicy>(), Ok(policy), "{text}");
            assert_eq!(
                policy.to_string().parse::<SyncPolicy>(),
                Ok(policy),
                "{text}"
            );
        }
        assert_eq!(SyncPolicy::default(), SyncPolicy::EveryBatch);
        assert_eq!(
            SyncPolicy::Interval(Duration::from_millis(1500)).to_string(),
            "interval:1500ms"
        );
    }

    #[test]
    fn rejects_with_a_reason() {
        let bad = [
            ("", "unknown policy"),
            ("Every-Batch", "unknown policy"),
            ("always", "unknown policy"),
            ("interval", "needs a duration"),
            ("interval:", "needs a unit"),
            ("interval:100", "needs a unit"),
            ("interval:ms", "not a whole number"),
            ("interval:-1s", "not a whole number"),
            ("interval:1.5s", "not a whole number"),
            ("interval:0ms", "at least 1ms"),
            ("interval:3601s", "at most 3600s"),
            ("interval:99999999999999999999s", "too long"),
            ("interval:18446744073709551615s", "too long"),
        ];
        for (text, reason) in bad {
            let err = text.parse::<SyncPolicy>().expect_err(text);
            let shown = err.to_string();
            assert!(shown.contains(reason), "{text}: {shown}");
            assert!(shown.contains("every-batch"), "{text}: {shown}");
        }
    }
}
