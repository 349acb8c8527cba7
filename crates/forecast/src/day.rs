//! Business days as whole days since 1970-01-01 (`i32`): what series are indexed by, so a
//! series' gap between two days is a subtraction. Conversions follow Howard Hinnant's
//! `days_from_civil` / `civil_from_days` (proleptic Gregorian calendar).

/// Days since 1970-01-01 of a calendar date.
pub fn from_civil(year: i32, month: u32, day: u32) -> i32 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i32;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i32 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The calendar date `(year, month, day)` of a day number.
pub fn to_civil(days: i32) -> (i32, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i32::from(m <= 2);
    (y, m, d)
}

/// `YYYY-MM-DD`.
pub fn iso(days: i32) -> String {
    let (y, m, d) = to_civil(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Unix milliseconds as an RFC 3339 UTC time (`2026-03-10T10:00:00.000Z`).
pub fn rfc3339(ms: i64) -> String {
    let (days, in_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let date = iso(i32::try_from(days).unwrap_or_default());
    let (h, m, s, milli) = (in_day / 3_600_000, in_day / 60_000 % 60, in_day / 1000 % 60, in_day % 1000);
    format!("{date}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

/// A `YYYY-MM-DD` date, checked.
pub fn parse_iso(raw: &str) -> Option<i32> {
    let date: jiff::civil::Date = raw.parse().ok()?;
    Some(from_civil(i32::from(date.year()), date.month() as u32, date.day() as u32))
}

/// Day of the week, Monday = 0 … Sunday = 6.
pub fn weekday(days: i32) -> usize {
    // 1970-01-01 was a Thursday (3).
    (days + 3).rem_euclid(7) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_read_as_rfc_3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_773_136_800_123), "2026-03-10T10:00:00.123Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn day_numbers_round_trip_across_leap_years_and_eras() {
        assert_eq!(from_civil(1970, 1, 1), 0);
        assert_eq!(from_civil(2000, 3, 1), 11_017);
        assert_eq!(iso(from_civil(2024, 2, 29)), "2024-02-29");
        for d in -800_000..800_000 {
            let (y, m, dd) = to_civil(d);
            assert_eq!(from_civil(y, m, dd), d);
        }
        assert_eq!(parse_iso("2026-11-30"), Some(from_civil(2026, 11, 30)));
        assert_eq!(parse_iso("2026-02-30"), None);
    }

    #[test]
    fn weekdays_count_from_monday() {
        assert_eq!(weekday(from_civil(2026, 11, 30)), 0, "a Monday");
        assert_eq!(weekday(from_civil(2026, 11, 29)), 6, "a Sunday");
    }
}
