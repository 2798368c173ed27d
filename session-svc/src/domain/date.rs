//! A calendar date, as the wire carries it: ISO 8601 `YYYY-MM-DD`, years 0001 to 9999,
//! proleptic Gregorian. No time zone: a to-do date is a day on the user's calendar.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// Why a date was refused. Messages do not echo the input: it may be huge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DateError {
    /// Not shaped like `YYYY-MM-DD` (four, two and two ASCII digits).
    #[error("date must be YYYY-MM-DD")]
    Format,
    /// Year 0000 (the format has no room for 10000 and beyond).
    #[error("year must be 0001 to 9999")]
    Year,
    /// A month outside 1..=12.
    #[error("month {0:02} does not exist")]
    Month(u8),
    /// A day the month does not have, such as 2026-02-29.
    #[error("day {day:02} does not exist in {year:04}-{month:02}")]
    Day {
        /// The year asked for.
        year: u16,
        /// The month asked for.
        month: u8,
        /// The day that is not in it.
        day: u8,
    },
}

/// A valid calendar date. Ordered chronologically (the fields compare year, month, day).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    /// 1..=9999; four digits on the wire.
    year: u16,
    /// 1..=12.
    month: u8,
    /// 1..=days in that month of that year.
    day: u8,
}

/// Whether `year` has a February 29th: every fourth year, except centuries, except every
/// fourth century (Gregorian rule, applied to all years).
pub fn is_leap_year(year: u16) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

/// How many days `month` (1..=12) of `year` has; 0 for a month that does not exist.
pub fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

impl Date {
    /// The date `year-month-day`, if the calendar has it.
    pub fn new(year: u16, month: u8, day: u8) -> Result<Self, DateError> {
        if !(1..=9999).contains(&year) {
            return Err(DateError::Year);
        }
        if !(1..=12).contains(&month) {
            return Err(DateError::Month(month));
        }
        if day == 0 || day > days_in_month(year, month) {
            return Err(DateError::Day { year, month, day });
        }
        Ok(Self { year, month, day })
    }

    /// Parses exactly `YYYY-MM-DD`: no signs, spaces, short fields or times of day.
    pub fn parse(text: &str) -> Result<Self, DateError> {
        let b = text.as_bytes();
        let shaped = b.len() == 10
            && b[4] == b'-'
            && b[7] == b'-'
            && b.iter()
                .enumerate()
                .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
        if !shaped {
            return Err(DateError::Format);
        }
        // Every byte of these ranges is an ASCII digit, so the sums cannot overflow.
        let number = |range: std::ops::Range<usize>| {
            b[range]
                .iter()
                .fold(0u16, |n, c| n * 10 + u16::from(c - b'0'))
        };
        let (year, month, day) = (number(0..4), number(5..7), number(8..10));
        // Two digits are at most 99, so these conversions cannot fail.
        let narrow = |n: u16| u8::try_from(n).map_err(|_| DateError::Format);
        Self::new(year, narrow(month)?, narrow(day)?)
    }

    /// The year, 1..=9999.
    pub fn year(&self) -> u16 {
        self.year
    }

    /// The month, 1..=12.
    pub fn month(&self) -> u8 {
        self.month
    }

    /// The day of the month, from 1.
    pub fn day(&self) -> u8 {
        self.day
    }
}

impl FromStr for Date {
    type Err = DateError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

/// `YYYY-MM-DD`, zero-padded, so it parses back to the same date.
impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl fmt::Debug for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Date({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Date {
        Date::parse(text).unwrap()
    }

    #[test]
    fn february_29_only_in_leap_years() {
        assert!(Date::parse("2024-02-29").is_ok());
        assert_eq!(
            Date::parse("2026-02-29"),
            Err(DateError::Day {
                year: 2026,
                month: 2,
                day: 29
            })
        );
        assert!(Date::parse("2000-02-29").is_ok(), "divisible by 400");
        assert!(Date::parse("1900-02-29").is_err(), "a century");
        assert!(Date::parse("2100-02-29").is_err(), "a century");
        assert!(Date::parse("0004-02-29").is_ok());
        assert!(Date::parse("2024-02-30").is_err());
    }

    #[test]
    fn leap_year_rule() {
        let leap: Vec<u16> = (1896..=2024).filter(|y| is_leap_year(*y)).collect();
        assert_eq!(leap.len(), 32, "1896..=2024 skips only 1900");
        assert!(!leap.contains(&1900));
        assert!(is_leap_year(2000) && is_leap_year(1600) && !is_leap_year(1700));
    }

    #[test]
    fn months_have_their_lengths() {
        let lengths: Vec<u8> = (1..=12).map(|m| days_in_month(2023, m)).collect();
        assert_eq!(lengths, [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]);
        assert_eq!(days_in_month(2024, 2), 29);
        assert_eq!(days_in_month(2024, 13), 0);
        for m in 1..=12 {
            let last = days_in_month(2023, m);
            assert!(Date::new(2023, m, last).is_ok());
            assert!(Date::new(2023, m, last + 1).is_err());
        }
    }

    #[test]
    fn years_run_from_0001_to_9999() {
        assert_eq!(d("0001-01-01").year(), 1);
        assert_eq!(d("9999-12-31").year(), 9999);
        assert_eq!(Date::parse("0000-01-01"), Err(DateError::Year));
        assert_eq!(Date::new(10_000, 1, 1), Err(DateError::Year));
    }

    #[test]
    fn month_and_day_must_exist() {
        assert_eq!(Date::parse("2024-00-10"), Err(DateError::Month(0)));
        assert_eq!(Date::parse("2024-13-10"), Err(DateError::Month(13)));
        assert!(matches!(
            Date::parse("2024-01-00"),
            Err(DateError::Day { day: 0, .. })
        ));
        assert!(matches!(
            Date::parse("2024-04-31"),
            Err(DateError::Day { day: 31, .. })
        ));
        assert!(matches!(
            Date::parse("2024-01-99"),
            Err(DateError::Day { day: 99, .. })
        ));
    }

    #[test]
    fn only_the_exact_iso_shape_parses() {
        for bad in [
            "",
            "2024-1-05",
            "2024-01-5",
            "24-01-05",
            "2024/01/05",
            "20240105",
            " 2024-01-05",
            "2024-01-05 ",
            "2024-01-05T00:00",
            "+202-01-05",
            "2024-0a-05",
            "２０２４-01-05",
            "2024--1-05",
            "-024-01-05",
        ] {
            assert_eq!(Date::parse(bad), Err(DateError::Format), "{bad:?}");
        }
    }

    #[test]
    fn dates_format_back_as_they_parse() {
        for text in ["0001-01-01", "0999-09-09", "2024-02-29", "9999-12-31"] {
            assert_eq!(d(text).to_string(), text);
            assert_eq!(text.parse::<Date>().unwrap(), d(text));
        }
        assert_eq!(format!("{:?}", d("2024-03-01")), "Date(2024-03-01)");
    }

    #[test]
    fn dates_order_chronologically() {
        let mut dates = [
            d("2024-03-01"),
            d("2023-12-31"),
            d("2024-02-29"),
            d("0999-01-01"),
        ];
        dates.sort();
        let shown: Vec<String> = dates.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            ["0999-01-01", "2023-12-31", "2024-02-29", "2024-03-01"]
        );
    }

    #[test]
    fn accessors_return_the_parts() {
        let date = d("2024-07-04");
        assert_eq!((date.year(), date.month(), date.day()), (2024, 7, 4));
    }

    #[test]
    fn error_messages_are_lowercase_and_precise() {
        assert_eq!(DateError::Format.to_string(), "date must be YYYY-MM-DD");
        assert_eq!(
            Date::parse("2026-02-29").unwrap_err().to_string(),
            "day 29 does not exist in 2026-02"
        );
        assert_eq!(DateError::Month(13).to_string(), "month 13 does not exist");
    }
}
