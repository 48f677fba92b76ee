//! Kazakhstan's working-day calendar: which days count towards the 30 working days a
//! data-subject request must be answered in (policy clause 5.2).
//!
//! Saturdays and Sundays never count unless a transfer decree made one a working day;
//! weekdays count unless the holiday file lists them. The file is data, not code, so
//! that operators add each year and each Government transfer decree as published. A
//! calendar knows the years it covers and refuses to count into any other: a due date
//! computed without that year's holidays would be silently early.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use time::{Date, Month, OffsetDateTime, UtcOffset, Weekday};

/// The shipped calendar: public holidays of 2026 and 2027 and the days carried over
/// from those falling on a weekend.
pub const DEFAULT_HOLIDAYS: &str = include_str!("../../data/holidays-kz.txt");

/// Asia/Almaty: all of Kazakhstan keeps UTC+5 since 1 March 2024, without daylight
/// saving time.
const ALMATY_OFFSET_SECONDS: i32 = 5 * 3600;

/// Why a holiday file was refused, or a date could not be counted.
#[derive(Debug, thiserror::Error)]
pub enum CalendarError {
    #[error("failed to read the holiday calendar {path}: {error}")]
    Read { path: String, error: std::io::Error },
    /// `origin` is the file's path (or "the built-in holiday calendar").
    #[error("{origin}: line {line}: {reason}")]
    Malformed { origin: String, line: usize, reason: String },
    #[error("{origin}: {reason}")]
    Incomplete { origin: String, reason: String },
    /// Counting reached a day of a year the file does not list.
    #[error("the holiday calendar does not cover {0}")]
    NotCovered(i32),
}

/// What a line says about its date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DayKind {
    Off,
    Workday,
}

/// The working days of the years a holiday file covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolidayCalendar {
    days_off: BTreeSet<Date>,
    working_weekend_days: BTreeSet<Date>,
    first_year: i32,
    last_year: i32,
}

impl HolidayCalendar {
    /// The file at `path`, or the built-in calendar when `None`.
    pub fn load(path: Option<&Path>) -> Result<HolidayCalendar, CalendarError> {
        match path {
            None => HolidayCalendar::parse(DEFAULT_HOLIDAYS, "the built-in holiday calendar"),
            Some(path) => {
                let origin = path.display().to_string();
                let text = std::fs::read_to_string(path)
                    .map_err(|error| CalendarError::Read { path: origin.clone(), error })?;
                HolidayCalendar::parse(&text, &origin)
            }
        }
    }

    /// Parses a holiday file (see `data/holidays-kz.txt` for the format); `origin` names
    /// it in errors. Refuses a malformed line, a date listed twice, a `workday` that is
    /// not a weekend day, a year listed without its 1 January (likely half-entered), and
    /// a gap between the years listed.
    pub fn parse(text: &str, origin: &str) -> Result<HolidayCalendar, CalendarError> {
        let malformed = |line: usize, reason: &str| CalendarError::Malformed {
            origin: origin.to_owned(),
            line,
            reason: reason.to_owned(),
        };
        let mut days_off = BTreeSet::new();
        let mut working_weekend_days = BTreeSet::new();
        // The first line of each year, to point at when the year is incomplete.
        let mut years: BTreeMap<i32, usize> = BTreeMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let content = raw.split_once('#').map_or(raw, |(before, _)| before).trim();
            if content.is_empty() {
                continue;
            }
            let mut words = content.split_whitespace();
            let date = words.next().and_then(parse_date).ok_or_else(|| {
                malformed(line, "expected a date as YYYY-MM-DD, optionally followed by `off` or `workday`")
            })?;
            let kind = match words.next() {
                None | Some("off") => DayKind::Off,
                Some("workday") => DayKind::Workday,
                Some(_) => return Err(malformed(line, "after the date, only `off` or `workday` may follow")),
            };
            if words.next().is_some() {
                return Err(malformed(line, "unexpected text after the date; put names after `#`"));
            }
            if days_off.contains(&date) || working_weekend_days.contains(&date) {
                return Err(malformed(line, "this date is listed twice"));
            }
            match kind {
                DayKind::Off => days_off.insert(date),
                DayKind::Workday if is_weekend(date) => working_weekend_days.insert(date),
                DayKind::Workday => {
                    return Err(malformed(line, "only a Saturday or Sunday can be made a working day"));
                }
            };
            years.entry(date.year()).or_insert(line);
        }
        let incomplete = |reason: String| CalendarError::Incomplete { origin: origin.to_owned(), reason };
        let (Some((&first_year, _)), Some((&last_year, _))) = (years.first_key_value(), years.last_key_value()) else {
            return Err(incomplete("lists no dates".to_owned()));
        };
        for (&year, &line) in &years {
            let new_year = Date::from_calendar_date(year, Month::January, 1).ok();
            if !new_year.is_some_and(|d| days_off.contains(&d)) {
                return Err(malformed(
                    line,
                    &format!("{year} is listed without its 1 January: list a year in full or not at all"),
                ));
            }
        }
        if let Some(missing) = (first_year..=last_year).find(|year| !years.contains_key(year)) {
            return Err(incomplete(format!("skips {missing}: list every year between the first and the last")));
        }
        Ok(HolidayCalendar { days_off, working_weekend_days, first_year, last_year })
    }

    /// The first and last years listed; every year between is listed too.
    pub fn years(&self) -> (i32, i32) {
        (self.first_year, self.last_year)
    }

    pub fn covers(&self, year: i32) -> bool {
        (self.first_year..=self.last_year).contains(&year)
    }

    /// Whether `date` is a working day; an error for a year not covered.
    pub fn is_working_day(&self, date: Date) -> Result<bool, CalendarError> {
        if !self.covers(date.year()) {
            return Err(CalendarError::NotCovered(date.year()));
        }
        Ok(self.working_weekend_days.contains(&date) || !(is_weekend(date) || self.days_off.contains(&date)))
    }

    /// The `count`-th working day after `from`; `from` itself never counts, whatever it is.
    pub fn add_working_days(&self, from: Date, count: u32) -> Result<Date, CalendarError> {
        let mut day = from;
        let mut counted = 0;
        while counted < count {
            day = day.next_day().ok_or(CalendarError::NotCovered(day.year() + 1))?;
            if self.is_working_day(day)? {
                counted += 1;
            }
        }
        Ok(day)
    }
}

/// Today's date in Asia/Almaty, the calendar the register's dates are in.
pub fn today_in_almaty() -> Date {
    let offset = UtcOffset::from_whole_seconds(ALMATY_OFFSET_SECONDS).unwrap_or(UtcOffset::UTC);
    OffsetDateTime::now_utc().to_offset(offset).date()
}

/// `YYYY-MM-DD` exactly (four-digit year, zero-padded month and day), a real date.
pub fn parse_date(text: &str) -> Option<Date> {
    let bytes = text.as_bytes();
    let shaped = bytes.len() == 10
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes.iter().enumerate().all(|(i, b)| i == 4 || i == 7 || b.is_ascii_digit());
    if !shaped {
        return None;
    }
    let year: i32 = text[0..4].parse().ok()?;
    let month: u8 = text[5..7].parse().ok()?;
    let day: u8 = text[8..10].parse().ok()?;
    Date::from_calendar_date(year, Month::try_from(month).ok()?, day).ok()
}

fn is_weekend(date: Date) -> bool {
    matches!(date.weekday(), Weekday::Saturday | Weekday::Sunday)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(text: &str) -> Date {
        parse_date(text).unwrap_or_else(|| panic!("{text} is a date"))
    }

    fn shipped() -> HolidayCalendar {
        HolidayCalendar::parse(DEFAULT_HOLIDAYS, "shipped").expect("the shipped calendar parses")
    }

    fn malformed_line(text: &str) -> usize {
        match HolidayCalendar::parse(text, "test.txt") {
            Err(CalendarError::Malformed { line, .. }) => line,
            other => panic!("expected a malformed-line error, got {other:?}"),
        }
    }

    #[test]
    fn dates_are_strict() {
        assert_eq!(parse_date("2026-12-15"), Date::from_calendar_date(2026, Month::December, 15).ok());
        for bad in ["2026-2-15", "2026-02-30", "2026-13-01", "26-12-15", "2026/12/15", "2026-12-15 ", "+026-12-15", ""]
        {
            assert_eq!(parse_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_shipped_calendar_covers_2026_and_2027() {
        let calendar = shipped();
        assert_eq!(calendar.years(), (2026, 2027));
        assert!(!calendar.is_working_day(date("2026-12-16")).unwrap(), "Independence Day");
        assert!(!calendar.is_working_day(date("2027-01-04")).unwrap(), "carried over from 2 January");
        assert!(!calendar.is_working_day(date("2026-12-19")).unwrap(), "a Saturday");
        assert!(calendar.is_working_day(date("2026-12-17")).unwrap());
        // Kurban Ait on a Sunday carries nothing over: the Monday after is worked.
        assert!(calendar.is_working_day(date("2027-05-17")).unwrap());
        assert!(matches!(calendar.is_working_day(date("2028-01-03")), Err(CalendarError::NotCovered(2028))));
    }

    #[test]
    fn the_day_received_does_not_count() {
        let calendar = shipped();
        // Thursday 2026-12-17 is working; the next working day is Friday the 18th.
        assert_eq!(calendar.add_working_days(date("2026-12-17"), 1).unwrap(), date("2026-12-18"));
        // From the holiday itself, the count starts the next day.
        assert_eq!(calendar.add_working_days(date("2026-12-16"), 1).unwrap(), date("2026-12-17"));
        assert_eq!(calendar.add_working_days(date("2026-12-15"), 30).unwrap(), date("2027-02-01"));
        assert!(matches!(calendar.add_working_days(date("2027-12-01"), 30), Err(CalendarError::NotCovered(2028))));
    }

    #[test]
    fn a_transfer_decree_moves_a_working_day() {
        let text = "2026-01-01\n2026-01-05 # given off by decree\n2026-01-03 workday # worked instead\n";
        let calendar = HolidayCalendar::parse(text, "test.txt").expect("parses");
        assert!(calendar.is_working_day(date("2026-01-03")).unwrap());
        assert!(!calendar.is_working_day(date("2026-01-05")).unwrap());
        assert_eq!(calendar.add_working_days(date("2026-01-02"), 1).unwrap(), date("2026-01-03"));
    }

    #[test]
    fn a_bad_line_is_named() {
        assert_eq!(malformed_line("# header\n2026-01-01  # New Year\n2026-13-01  # no such month\n"), 3);
        assert_eq!(malformed_line("2026-01-01\n\n2026-01-02 New Year\n"), 3);
        assert_eq!(malformed_line("2026-01-01\n2026-1-7\n"), 2);
        assert_eq!(malformed_line("2026-01-01\n2026-01-01 # again\n"), 2);
        assert_eq!(malformed_line("2026-01-01\n2026-01-05 workday # a Monday\n"), 2);
        assert_eq!(malformed_line("2026-01-01 off workday\n"), 1);
        assert_eq!(malformed_line("2026-01-01\n2027-03-08 # 2027 without its New Year\n"), 2);
        let err = HolidayCalendar::parse("x\n", "/etc/qupia/holidays.txt").unwrap_err();
        assert!(err.to_string().starts_with("/etc/qupia/holidays.txt: line 1: "), "{err}");
    }

    #[test]
    fn a_calendar_has_no_gaps() {
        let err = HolidayCalendar::parse("2026-01-01\n2028-01-01\n", "test.txt").unwrap_err();
        assert_eq!(err.to_string(), "test.txt: skips 2027: list every year between the first and the last");
        assert!(matches!(HolidayCalendar::parse("# nothing\n", "test.txt"), Err(CalendarError::Incomplete { .. })));
    }
}
