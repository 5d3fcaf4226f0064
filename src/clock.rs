//! Time as the tool shows and reads it: RFC 3339 timestamps in UTC, and
//! human durations (`30s`, `10m`, `24h`, `1h30m`).

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How often a sleeping agent thread looks at its stop flag. Half a second
/// stops an agent promptly on a signal; 50 ms kept a machine busy when
/// thousands of simulated agents in one process waited out a backoff at
/// once (9,000 agents on etcd: a load of 10,000, the store starved).
const STOP_CHECK: Duration = Duration::from_millis(500);

/// Sleeps for `pause` unless `stop` is raised first; whether it was not.
pub fn pause_unless_stopped(stop: &AtomicBool, pause: Duration) -> bool {
    let until = Instant::now() + pause;
    while Instant::now() < until {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        thread::sleep(STOP_CHECK.min(until.saturating_duration_since(Instant::now())));
    }
    !stop.load(Ordering::SeqCst)
}

/// Formats a time as RFC 3339 in UTC with whole seconds (`2026-11-24T10:00:00Z`).
pub fn format_rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Parses an RFC 3339 timestamp.
pub fn parse_rfc3339(text: &str) -> Result<SystemTime, String> {
    humantime::parse_rfc3339_weak(text)
        .or_else(|_| humantime::parse_rfc3339(text))
        .map_err(|e| format!("{text:?} is not an RFC 3339 time: {e}"))
}

/// The current time as RFC 3339.
pub fn now_rfc3339() -> String {
    format_rfc3339(SystemTime::now())
}

/// Whole seconds from `then` to `now`; zero if `then` is in the future.
pub fn age_seconds(then: SystemTime, now: SystemTime) -> u64 {
    now.duration_since(then).map(|d| d.as_secs()).unwrap_or(0)
}

/// A random number in [0, 1), for jitter and splay (not for anything secret):
/// the process's randomly keyed hasher over the current time.
pub fn random_fraction() -> f64 {
    use std::hash::BuildHasher;
    let bits = std::collections::hash_map::RandomState::new().hash_one(std::time::Instant::now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// A short human rendering of a number of seconds (`42s`, `5m`, `3h12m`, `2d4h`).
pub fn format_age(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// A duration written the human way (`30s`, `10m`, `24h`, `1h30m`); bare
/// numbers are refused so that `30` is never read as the wrong unit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s == "0" {
            return Ok(HumanDuration(Duration::ZERO));
        }
        humantime::parse_duration(s)
            .map(HumanDuration)
            .map_err(|e| format!("{s:?} is not a duration such as 30s, 10m or 24h ({e})"))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_zero() {
            return f.write_str("0s");
        }
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_ends_early_on_stop_and_says_so() {
        let stop = AtomicBool::new(false);
        assert!(pause_unless_stopped(&stop, Duration::from_millis(20)));
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let raiser = {
            let stop = std::sync::Arc::clone(&stop);
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(100));
                stop.store(true, Ordering::SeqCst);
            })
        };
        let started = Instant::now();
        assert!(!pause_unless_stopped(&stop, Duration::from_secs(60)));
        // Within one look at the flag after it was raised, not the minute.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        raiser.join().unwrap();
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(
            "30s".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(30)
        );
        assert_eq!(
            "1h30m".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(5400)
        );
        assert_eq!("0".parse::<HumanDuration>().unwrap().0, Duration::ZERO);
        assert!("30".parse::<HumanDuration>().is_err());
        assert!("soon".parse::<HumanDuration>().is_err());
        assert_eq!("24h".parse::<HumanDuration>().unwrap().to_string(), "1day");
    }

    #[test]
    fn timestamps_round_trip() {
        let t = parse_rfc3339("2026-11-24T10:00:00Z").unwrap();
        assert_eq!(format_rfc3339(t), "2026-11-24T10:00:00Z");
        assert!(parse_rfc3339("yesterday").is_err());
    }

    #[test]
    fn ages_read_well() {
        assert_eq!(format_age(5), "5s");
        assert_eq!(format_age(125), "2m05s");
        assert_eq!(format_age(3 * 3600 + 720), "3h12m");
        assert_eq!(format_age(2 * 86_400 + 4 * 3600), "2d04h");
    }
}
