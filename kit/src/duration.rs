//! Human-friendly durations for flags and environment variables (`250ms`, `5s`, `2m`, `1h`,
//! `1h30m`, `7d`), parsed by `humantime`.

use std::time::Duration;

/// Parses a duration with units, as humantime reads them (`250ms`, `5s`, `1h 30m`, `7d`). A
/// bare number is rejected so that `--grace-period 20` cannot silently mean 20 ms to one
/// reader and 20 s to another.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    humantime::parse_duration(text).map_err(|error| {
        format!("{text:?} is not a duration ({error}): write e.g. 250ms, 5s, 2m, 1h or 1h30m")
    })
}

/// `duration` as humantime writes it (`1h 30m`, `250ms`), for messages and `--help`.
pub fn show(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit_and_combinations() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse(" 0s "), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_missing_or_unknown_units_and_overflow() {
        for bad in ["20", "5x", "ms", "-5s", "", "99999999999999999999999h"] {
            let error = parse(bad).unwrap_err();
            assert!(error.contains("write e.g."), "{bad}: {error}");
        }
    }

    #[test]
    fn shows_what_it_parses() {
        assert_eq!(show(Duration::from_secs(5400)), "1h 30m");
        assert_eq!(
            parse(&show(Duration::from_millis(1250))),
            Ok(Duration::from_millis(1250))
        );
    }
}
