//! Parsing the instants operators type: `--time` and `restore --at`.

use chrono::{DateTime, FixedOffset, Local, NaiveDateTime, TimeZone};

use crate::error::{Error, Result};

fn bad(what: &'static str, reason: String) -> Error {
    Error::BadInput { what, reason }
}

/// RFC 3339, `YYYY-MM-DD HH:MM[:SS]` in local time, or a duration ago (`90m`, `2h`, `3d`).
pub fn parse_instant(s: &str, now: DateTime<FixedOffset>) -> Result<DateTime<FixedOffset>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t);
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        // chrono takes "08:3" for 08:03: a digit lost in typing must not pick another time.
        if !local_shape(s) {
            break;
        }
        if let Ok(naive) = NaiveDateTime::parse_from_str(s, fmt) {
            return from_local(&Local, naive).ok_or_else(|| {
                bad(
                    "time",
                    format!("{s} does not exist in local time (a DST gap)"),
                )
            });
        }
    }
    if let Ok(d) = humantime::parse_duration(s) {
        return chrono::Duration::from_std(d)
            .ok()
            .and_then(|d| now.checked_sub_signed(d))
            .ok_or_else(|| bad("time", format!("{s} ago is before any representable time")));
    }
    Err(bad(
        "time",
        format!(
            "cannot read {s:?} as a time: use RFC 3339 (2026-11-25T14:30:00Z), \
             \"YYYY-MM-DD HH:MM[:SS]\" in local time, or a duration ago such as 90m, 2h or 3d"
        ),
    ))
}

/// Whether `s` has the digits of `YYYY-MM-DD HH:MM[:SS[.f]]` (or with `T`), each field in
/// full.
fn local_shape(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        !r.is_empty() && b.get(r).is_some_and(|x| x.iter().all(u8::is_ascii_digit))
    };
    let date_time = b.len() >= 16
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && matches!(b[10], b' ' | b'T')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16);
    date_time
        && match b.len() {
            16 => true,
            19 => b[16] == b':' && digits(17..19),
            n => b[16] == b':' && digits(17..19) && b[19] == b'.' && digits(20..n),
        }
}

/// The instant a wall-clock time in `tz` names; in a DST fold (the hour that happens twice
/// when clocks go back) the first of the two, the conservative choice for `--at`; `None` in
/// a gap. Worked out from the zone's offsets half a day either side, because what time zone
/// libraries answer for a repeated hour varies.
pub fn from_local<Tz: TimeZone>(tz: &Tz, naive: NaiveDateTime) -> Option<DateTime<FixedOffset>> {
    use chrono::Offset;
    let half_day = chrono::Duration::hours(12);
    let candidates = [naive - half_day, naive + half_day].map(|probe| {
        let offset = tz.offset_from_utc_datetime(&probe).fix();
        let utc = naive - chrono::Duration::seconds(i64::from(offset.local_minus_utc()));
        // Valid only if the zone has that offset at that instant.
        (tz.offset_from_utc_datetime(&utc).fix() == offset).then(|| offset.from_utc_datetime(&utc))
    });
    candidates.into_iter().flatten().min()
}

/// A duration as operators type it (`90m`, `7d`), bounded so that any instant it is
/// subtracted from or added to stays representable (a few thousand years either way).
pub fn parse_duration(s: &str) -> Result<chrono::Duration> {
    const MAX_YEARS: i64 = 10_000;
    let d =
        humantime::parse_duration(s.trim()).map_err(|e| bad("duration", format!("{s:?}: {e}")))?;
    chrono::Duration::from_std(d)
        .ok()
        .filter(|d| *d <= chrono::Duration::days(365 * MAX_YEARS))
        .ok_or_else(|| {
            bad(
                "duration",
                format!("{s} is too long (at most {MAX_YEARS} years)"),
            )
        })
}

/// Now, in the local time zone.
pub fn now() -> DateTime<FixedOffset> {
    Local::now().fixed_offset()
}

#[cfg(test)]
mod tests {
    /// Hostile pass (issue 25): a time with a digit missing is refused, never read as
    /// another time ("08:3" was 08:03).
    #[test]
    fn local_times_need_every_digit() {
        let now = super::now();
        for ok in [
            "2026-12-05 08:30",
            "2026-12-05T08:30",
            "2026-12-05 08:30:03",
            "2026-12-05 08:30:03.25",
            "2026-12-05T08:30:03Z",
        ] {
            assert!(super::parse_instant(ok, now).is_ok(), "{ok}");
        }
        for bad in [
            "2026-12-05 08:3",
            "2026-12-5 8:3",
            "2026-12-05 8:30",
            "2026-12-05 08:35:3",
            "2026-12-05 08:35:03.",
            "2026-12-05 08:35:03x",
            "26-12-05 08:35",
        ] {
            let e = super::parse_instant(bad, now).unwrap_err();
            assert!(e.to_string().contains("cannot read"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_repeated_local_hour_means_its_first_occurrence_and_a_skipped_one_none() {
        use chrono_tz::Europe::Berlin;
        let at = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
        let utc = |t: Option<DateTime<FixedOffset>>| t.map(|t| t.naive_utc().to_string());
        // Clocks went back at 03:00 CEST on 2026-10-25: 02:40 happened at 00:40Z and 01:40Z.
        assert_eq!(
            utc(from_local(&Berlin, at("2026-10-25 02:40"))),
            Some("2026-10-25 00:40:00".into())
        );
        assert_eq!(
            utc(from_local(&Berlin, at("2026-10-25 03:10"))),
            Some("2026-10-25 02:10:00".into())
        );
        assert_eq!(
            utc(from_local(&Berlin, at("2026-10-25 01:50"))),
            Some("2026-10-24 23:50:00".into())
        );
        // Clocks went forward at 02:00 CET on 2026-03-29: 02:30 never happened.
        assert_eq!(from_local(&Berlin, at("2026-03-29 02:30")), None);
        assert_eq!(
            utc(from_local(&Berlin, at("2026-07-01 12:00"))),
            Some("2026-07-01 10:00:00".into())
        );
    }

    use super::*;

    #[test]
    fn parses_the_three_forms() {
        let now = DateTime::parse_from_rfc3339("2026-11-25T18:00:00Z").unwrap();
        assert_eq!(
            parse_instant("2026-11-25T14:30:00+01:00", now).unwrap(),
            DateTime::parse_from_rfc3339("2026-11-25T13:30:00Z").unwrap()
        );
        assert_eq!(
            parse_instant("90m", now).unwrap(),
            DateTime::parse_from_rfc3339("2026-11-25T16:30:00Z").unwrap()
        );
        assert_eq!(
            parse_instant("3d", now).unwrap(),
            DateTime::parse_from_rfc3339("2026-11-22T18:00:00Z").unwrap()
        );
        let local = parse_instant("2026-06-01 12:34", now).unwrap();
        assert_eq!(local.naive_local().to_string(), "2026-06-01 12:34:00");
        assert!(parse_instant("yesterday-ish", now).is_err());
    }

    #[test]
    fn out_of_range_is_an_error_not_a_panic() {
        let now = DateTime::parse_from_rfc3339("2026-11-25T18:00:00Z").unwrap();
        for s in ["99999999d", "300000y", "9999999999999999s"] {
            assert!(parse_instant(s, now).is_err(), "{s}");
            assert!(parse_duration(s).is_err(), "{s}");
        }
        assert_eq!(parse_duration("7d").unwrap(), chrono::Duration::days(7));
    }
}
