//! How values print: timestamps, durations, money and enums, in tables and in JSON, and the
//! table style. The conventions are those `--help` states under "Output".

use comfy_table::{Table, presets::NOTHING};
use proto::session::v1::{ActorStatus, DiscountKind, JobState, Money, SessionStatus};
use serde_json::Value;

/// A table with a header row, plain columns separated by spaces (no borders), as `ps` or
/// `kubectl get` print.
pub fn table<const N: usize>(header: [&str; N]) -> Table {
    let mut table = Table::new();
    table.load_style(NOTHING).set_header(header);
    table
}

/// A two-column table of `field value` rows, for one message.
pub fn fields(rows: Vec<(&str, String)>) -> Table {
    let mut table = Table::new();
    table.load_style(NOTHING);
    for (name, value) in rows {
        table.add_row(vec![name.to_owned(), value]);
    }
    table
}

/// A table as text: columns two spaces apart, no leading blank, each line without trailing
/// blanks, ending in a newline.
pub fn render(table: &Table) -> String {
    let mut table = table.clone();
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    let mut text = String::new();
    for line in table.lines() {
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// A timestamp in RFC 3339 (UTC, `Z`), with as many fractional digits as it needs: 0, 3, 6
/// or 9. `None` when unset.
pub fn rfc3339(timestamp: Option<&prost_types::Timestamp>) -> Option<String> {
    let timestamp = timestamp?;
    let nanos = timestamp.nanos.clamp(0, 999_999_999);
    let (date, time) = civil(timestamp.seconds);
    let fraction = if nanos == 0 {
        String::new()
    } else if nanos % 1_000_000 == 0 {
        format!(".{:03}", nanos / 1_000_000)
    } else if nanos % 1_000 == 0 {
        format!(".{:06}", nanos / 1_000)
    } else {
        format!(".{nanos:09}")
    };
    Some(format!("{date}T{time}{fraction}Z"))
}

/// A timestamp in a table: RFC 3339 to the second, `-` when unset.
pub fn timestamp_cell(timestamp: Option<&prost_types::Timestamp>) -> String {
    match timestamp {
        None => "-".to_owned(),
        Some(t) => {
            let (date, time) = civil(t.seconds);
            format!("{date}T{time}Z")
        }
    }
}

/// A timestamp in JSON: its RFC 3339 string, or null.
pub fn timestamp_json(timestamp: Option<&prost_types::Timestamp>) -> Value {
    rfc3339(timestamp).map_or(Value::Null, Value::String)
}

/// `YYYY-MM-DD` and `HH:MM:SS` of `seconds` since the Unix epoch, in UTC (proleptic
/// Gregorian calendar: Howard Hinnant's `civil_from_days`).
fn civil(seconds: i64) -> (String, String) {
    let days = seconds.div_euclid(86_400);
    let of_day = seconds.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (
        format!("{year:04}-{month:02}-{day:02}"),
        format!(
            "{:02}:{:02}:{:02}",
            of_day / 3_600,
            of_day / 60 % 60,
            of_day % 60
        ),
    )
}

/// A duration as seconds.
fn seconds(duration: &prost_types::Duration) -> f64 {
    duration.seconds as f64 + f64::from(duration.nanos) / 1e9
}

/// A duration in JSON: seconds as a number, or null when unset. The number is the one
/// closest to the exact decimal (1.613, not 1.6129999999999995).
pub fn duration_json(duration: Option<&prost_types::Duration>) -> Value {
    let Some(d) = duration else {
        return Value::Null;
    };
    let nanos = i128::from(d.seconds) * 1_000_000_000 + i128::from(d.nanos);
    let sign = if nanos < 0 { "-" } else { "" };
    let nanos = nanos.unsigned_abs();
    let exact = format!(
        "{sign}{}.{:09}",
        nanos / 1_000_000_000,
        nanos % 1_000_000_000
    );
    exact
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

/// A duration in a table, short and readable: `420µs`, `2.5ms`, `850ms`, `12.3s`, `4m05s`, `3h02m`, `2d05h`;
/// `-` when unset.
pub fn duration_cell(duration: Option<&prost_types::Duration>) -> String {
    let Some(duration) = duration else {
        return "-".to_owned();
    };
    let total = seconds(duration);
    if total < 0.001 {
        return format!("{:.0}µs", total * 1e6);
    }
    if total < 0.01 {
        return format!("{:.1}ms", total * 1e3);
    }
    if total < 1.0 {
        return format!("{:.0}ms", total * 1e3);
    }
    if total < 60.0 {
        return format!("{total:.1}s");
    }
    let whole = total as u64;
    match whole {
        0..3_600 => format!("{}m{:02}s", whole / 60, whole % 60),
        3_600..86_400 => format!("{}h{:02}m", whole / 3_600, whole / 60 % 60),
        _ => format!("{}d{:02}h", whole / 86_400, whole / 3_600 % 24),
    }
}

/// Money in JSON: `{"currency_code", "minor_units"}`, or null when unset.
pub fn money_json(money: Option<&Money>) -> Value {
    money.map_or(
        Value::Null,
        |m| serde_json::json!({"currency_code": m.currency_code, "minor_units": m.minor_units}),
    )
}

/// Money in a table: `19.99 USD`, with the currency's number of decimals (ISO 4217); `-` when
/// unset.
pub fn money_cell(money: Option<&Money>) -> String {
    let Some(money) = money else {
        return "-".to_owned();
    };
    let decimals = minor_unit_digits(&money.currency_code);
    let sign = if money.minor_units < 0 { "-" } else { "" };
    let units = money.minor_units.unsigned_abs();
    if decimals == 0 {
        return format!("{sign}{units} {}", money.currency_code);
    }
    let scale = 10u64.pow(decimals);
    format!(
        "{sign}{}.{:0width$} {}",
        units / scale,
        units % scale,
        money.currency_code,
        width = decimals as usize
    )
}

/// Decimal digits of a currency's minor unit (ISO 4217): 2 unless listed.
fn minor_unit_digits(currency: &str) -> u32 {
    const NONE: &[&str] = &[
        "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND",
        "VUV", "XAF", "XOF", "XPF",
    ];
    const THREE: &[&str] = &["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];
    if NONE.contains(&currency) {
        0
    } else if THREE.contains(&currency) {
        3
    } else {
        2
    }
}

/// An enum value's proto name (`ACTOR_STATUS_LIVE`) for JSON; a value this build does not
/// know stays its number, as in proto3's JSON mapping.
fn enum_json(value: i32, name: Option<&'static str>) -> Value {
    name.map_or(Value::from(value), Value::from)
}

/// An enum value in a table: its proto name without the enum's prefix, in lower case
/// (`live`, `checked_out`).
fn enum_cell(value: i32, name: Option<&'static str>, prefix: &str) -> String {
    match name {
        Some(name) => name
            .strip_prefix(prefix)
            .unwrap_or(name)
            .to_ascii_lowercase(),
        None => value.to_string(),
    }
}

fn actor_status_name(value: i32) -> Option<&'static str> {
    ActorStatus::try_from(value).ok().map(|s| s.as_str_name())
}

fn job_state_name(value: i32) -> Option<&'static str> {
    JobState::try_from(value).ok().map(|s| s.as_str_name())
}

fn session_status_name(value: i32) -> Option<&'static str> {
    SessionStatus::try_from(value).ok().map(|s| s.as_str_name())
}

fn discount_kind_name(value: i32) -> Option<&'static str> {
    DiscountKind::try_from(value).ok().map(|s| s.as_str_name())
}

/// An ActorStatus in JSON.
pub fn actor_status_json(value: i32) -> Value {
    enum_json(value, actor_status_name(value))
}

/// An ActorStatus in a table.
pub fn actor_status_cell(value: i32) -> String {
    enum_cell(value, actor_status_name(value), "ACTOR_STATUS_")
}

/// A JobState in JSON.
pub fn job_state_json(value: i32) -> Value {
    enum_json(value, job_state_name(value))
}

/// A JobState in a table.
pub fn job_state_cell(value: i32) -> String {
    enum_cell(value, job_state_name(value), "JOB_STATE_")
}

/// A SessionStatus in JSON.
pub fn session_status_json(value: i32) -> Value {
    enum_json(value, session_status_name(value))
}

/// A SessionStatus in a table.
pub fn session_status_cell(value: i32) -> String {
    enum_cell(value, session_status_name(value), "SESSION_STATUS_")
}

/// A DiscountKind in JSON.
pub fn discount_kind_json(value: i32) -> Value {
    enum_json(value, discount_kind_name(value))
}

/// A discount's value in a table: `10%` (basis points) or money in the cart's currency.
pub fn discount_cell(kind: i32, value: i64, currency: &str) -> String {
    match DiscountKind::try_from(kind) {
        Ok(DiscountKind::Percentage) => {
            format!("{}.{:02}%", value / 100, (value % 100).abs()).replace(".00%", "%")
        }
        Ok(DiscountKind::Fixed) => money_cell(Some(&Money {
            currency_code: currency.to_owned(),
            minor_units: value,
        })),
        _ => value.to_string(),
    }
}

/// Whether a job in `state` will change no more.
pub fn is_final(state: i32) -> bool {
    matches!(
        JobState::try_from(state),
        Ok(JobState::Succeeded | JobState::Failed | JobState::Cancelled)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64, nanos: i32) -> Option<String> {
        rfc3339(Some(&prost_types::Timestamp { seconds, nanos }))
    }

    #[test]
    fn timestamps_are_rfc3339_in_utc() {
        assert_eq!(at(0, 0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400, 0).unwrap(), "2000-02-29T00:00:00Z");
        assert_eq!(
            at(1_790_000_000, 5_000_000).unwrap(),
            "2026-09-21T14:13:20.005Z"
        );
        assert_eq!(
            at(1_790_000_000, 1_500).unwrap(),
            "2026-09-21T14:13:20.000001500Z"
        );
        assert_eq!(at(-1, 0).unwrap(), "1969-12-31T23:59:59Z");
        assert_eq!(at(253_402_300_799, 0).unwrap(), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(None), None);
        assert_eq!(timestamp_cell(None), "-");
    }

    #[test]
    fn durations_read_short_in_tables_and_as_seconds_in_json() {
        let d = |seconds, nanos| Some(prost_types::Duration { seconds, nanos });
        assert_eq!(duration_cell(d(0, 420_000).as_ref()), "420µs");
        assert_eq!(duration_cell(d(0, 2_500_000).as_ref()), "2.5ms");
        assert_eq!(duration_cell(d(0, 850_000_000).as_ref()), "850ms");
        assert_eq!(duration_cell(d(12, 340_000_000).as_ref()), "12.3s");
        assert_eq!(duration_cell(d(245, 0).as_ref()), "4m05s");
        assert_eq!(duration_cell(d(3 * 3600 + 120, 0).as_ref()), "3h02m");
        assert_eq!(duration_cell(d(2 * 86_400 + 5 * 3600, 0).as_ref()), "2d05h");
        assert_eq!(duration_cell(None), "-");
        assert_eq!(
            duration_json(d(1, 500_000_000).as_ref()),
            serde_json::json!(1.5)
        );
        assert_eq!(
            duration_json(d(4, 613_000_000).as_ref()).to_string(),
            "4.613"
        );
        assert_eq!(
            duration_json(d(-1, -500_000_000).as_ref()).to_string(),
            "-1.5"
        );
        assert_eq!(duration_json(None), Value::Null);
    }

    #[test]
    fn money_has_its_currency_decimals() {
        let m = |code: &str, minor_units| Money {
            currency_code: code.to_owned(),
            minor_units,
        };
        assert_eq!(money_cell(Some(&m("USD", 1999))), "19.99 USD");
        assert_eq!(money_cell(Some(&m("USD", -5))), "-0.05 USD");
        assert_eq!(money_cell(Some(&m("JPY", 500))), "500 JPY");
        assert_eq!(money_cell(Some(&m("KWD", 1234))), "1.234 KWD");
        assert_eq!(discount_cell(1, 1000, "USD"), "10%");
        assert_eq!(discount_cell(1, 1250, "USD"), "12.50%");
        assert_eq!(discount_cell(2, 500, "USD"), "5.00 USD");
    }

    #[test]
    fn enums_are_proto_names_in_json_and_short_in_tables() {
        assert_eq!(actor_status_json(1), serde_json::json!("ACTOR_STATUS_LIVE"));
        assert_eq!(actor_status_cell(2), "quarantined");
        assert_eq!(session_status_cell(2), "checked_out");
        assert_eq!(job_state_json(6), serde_json::json!("JOB_STATE_CANCELLED"));
        assert_eq!(job_state_json(42), serde_json::json!(42));
        assert_eq!(job_state_cell(42), "42");
        assert!(is_final(4) && is_final(5) && is_final(6));
        assert!(!is_final(1) && !is_final(3) && !is_final(0));
    }
}
