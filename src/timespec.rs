//! Parsing the instants operators type: `--time` and `restore --at`.

use chrono::{DateTime, FixedOffset, Local, NaiveDateTime, TimeZone};

/// RFC 3339, `YYYY-MM-DD HH:MM[:SS]` in local time, or a duration ago (`90m`, `2h`, `3d`).
pub fn parse_instant(s: &str, now: DateTime<FixedOffset>) -> Result<DateTime<FixedOffset>, String> {
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
        if let Ok(naive) = NaiveDateTime::parse_from_str(s, fmt) {
            return match Local.from_local_datetime(&naive) {
                chrono::LocalResult::Single(t) => Ok(t.fixed_offset()),
                // In a DST fold the earlier instant is the conservative choice for `--at`.
                chrono::LocalResult::Ambiguous(a, _) => Ok(a.fixed_offset()),
                chrono::LocalResult::None => {
                    Err(format!("{s} does not exist in local time (a DST gap)"))
                }
            };
        }
    }
    if let Ok(d) = humantime::parse_duration(s) {
        let d = chrono::Duration::from_std(d).map_err(|e| e.to_string())?;
        return Ok(now - d);
    }
    Err(format!(
        "cannot read {s:?} as a time: use RFC 3339 (2026-11-25T14:30:00Z), \
         \"YYYY-MM-DD HH:MM[:SS]\" in local time, or a duration ago such as 90m, 2h or 3d"
    ))
}

pub fn now() -> DateTime<FixedOffset> {
    Local::now().fixed_offset()
}

#[cfg(test)]
mod tests {
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
}
