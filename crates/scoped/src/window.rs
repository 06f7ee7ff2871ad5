//! Daily windows: when a scope's data may be opened without a live
//! request of its owner (a nightly job that sends notifications between
//! 02:00 and 03:00). The authority keeps the window with the scope and
//! checks it on every decryption; a check that fails is refused with the
//! stable code `outside_window`.

use std::fmt;
use std::str::FromStr;

use crate::error::{Result, ScopedError};

const MINUTES_PER_DAY: u16 = 24 * 60;

/// A time of day, in whole minutes after midnight UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimeOfDay(u16);

impl TimeOfDay {
    pub fn from_minutes(minutes: u16) -> Result<Self> {
        if minutes >= MINUTES_PER_DAY {
            return Err(ScopedError::InvalidWindow(format!(
                "{minutes} minutes is not a time of day (0 to 1439)"
            )));
        }
        Ok(Self(minutes))
    }

    pub fn minutes(self) -> u16 {
        self.0
    }
}

impl FromStr for TimeOfDay {
    type Err = ScopedError;

    /// `HH:MM`, 24-hour, UTC.
    fn from_str(text: &str) -> Result<Self> {
        let bad = || ScopedError::InvalidWindow(format!("{text:?} is not a time HH:MM (UTC)"));
        let (hours, minutes) = text.split_once(':').ok_or_else(bad)?;
        if hours.len() != 2 || minutes.len() != 2 {
            return Err(bad());
        }
        let hours: u16 = hours.parse().map_err(|_| bad())?;
        let minutes: u16 = minutes.parse().map_err(|_| bad())?;
        if hours > 23 || minutes > 59 {
            return Err(bad());
        }
        Self::from_minutes(hours * 60 + minutes)
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

/// From `start` (inclusive) to `end` (exclusive), every day, in UTC; a
/// window whose end is before its start runs over midnight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DailyWindow {
    start: TimeOfDay,
    end: TimeOfDay,
}

impl DailyWindow {
    /// A window of at least one minute and less than a whole day.
    pub fn new(start: TimeOfDay, end: TimeOfDay) -> Result<Self> {
        if start == end {
            return Err(ScopedError::InvalidWindow(format!(
                "the window {start}-{end} is empty: give different start and end times"
            )));
        }
        Ok(Self { start, end })
    }

    pub fn start(&self) -> TimeOfDay {
        self.start
    }

    pub fn end(&self) -> TimeOfDay {
        self.end
    }

    /// Whether `unix_secs` falls inside the window.
    pub fn contains(&self, unix_secs: u64) -> bool {
        let minute = u16::try_from((unix_secs / 60) % u64::from(MINUTES_PER_DAY))
            .expect("a minute of the day fits in u16");
        if self.start < self.end {
            self.start.0 <= minute && minute < self.end.0
        } else {
            minute >= self.start.0 || minute < self.end.0
        }
    }

    /// `Ok` inside the window, else [`ScopedError::OutsideWindow`].
    pub fn check(&self, scope: &str, unix_secs: u64) -> Result<()> {
        if self.contains(unix_secs) {
            Ok(())
        } else {
            Err(ScopedError::OutsideWindow {
                scope: scope.to_owned(),
                window: self.to_string(),
            })
        }
    }
}

impl fmt::Display for DailyWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{} UTC", self.start, self.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(h: u64, m: u64) -> u64 {
        // Some day in 2027, plus the time of day.
        1_800_000_000 / 86_400 * 86_400 + h * 3600 + m * 60
    }

    fn window(start: &str, end: &str) -> DailyWindow {
        DailyWindow::new(start.parse().unwrap(), end.parse().unwrap()).unwrap()
    }

    #[test]
    fn inside_and_outside_a_window() {
        let w = window("02:00", "03:00");
        assert!(w.contains(at(2, 0)));
        assert!(w.contains(at(2, 59)));
        assert!(!w.contains(at(3, 0)));
        assert!(!w.contains(at(1, 59)));
        assert_eq!(
            w.check("user:1", at(12, 0)).unwrap_err().code(),
            "outside_window"
        );
        assert!(w.check("user:1", at(2, 30)).is_ok());
    }

    #[test]
    fn a_window_over_midnight() {
        let w = window("23:30", "00:30");
        assert!(w.contains(at(23, 45)));
        assert!(w.contains(at(0, 10)));
        assert!(!w.contains(at(0, 30)));
        assert!(!w.contains(at(12, 0)));
    }

    #[test]
    fn bad_times_and_empty_windows_are_refused() {
        for bad in ["24:00", "2:00", "02:60", "0200", "", "aa:bb", "-1:00"] {
            assert_eq!(
                bad.parse::<TimeOfDay>().unwrap_err().code(),
                "invalid_window",
                "{bad}"
            );
        }
        let t: TimeOfDay = "02:00".parse().unwrap();
        assert_eq!(DailyWindow::new(t, t).unwrap_err().code(), "invalid_window");
        assert_eq!(t.to_string(), "02:00");
        assert_eq!(window("02:00", "03:00").to_string(), "02:00-03:00 UTC");
    }
}
