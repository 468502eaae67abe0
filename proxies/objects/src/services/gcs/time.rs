//! The two time formats GCS needs: RFC 3339 from its JSON (`updated`) and the compact UTC stamp
//! of V4 signatures. Civil-date arithmetic after Howard Hinnant's `days_from_civil`.

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of `days` since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `("YYYYMMDD", "YYYYMMDDTHHMMSSZ")` of a Unix time.
pub fn utc_stamp(secs: u64) -> (String, String) {
    let secs = secs as i64;
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let of_day = secs.rem_euclid(86_400);
    let date = format!("{year:04}{month:02}{day:02}");
    let stamp = format!("{date}T{:02}{:02}{:02}Z", of_day / 3600, of_day / 60 % 60, of_day % 60);
    (date, stamp)
}

/// Milliseconds since the epoch of an RFC 3339 UTC time (`2026-11-30T21:22:26.081Z`).
pub fn rfc3339_ms(text: &str) -> Option<u64> {
    let (date, time) = text.split_once(['T', 't'])?;
    let mut date = date.split('-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (date.next()??, date.next()??, date.next()??);
    let time = time.strip_suffix(['Z', 'z'])?;
    let (clock, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut clock = clock.split(':').map(|p| p.parse::<i64>().ok());
    let (hour, minute, second) = (clock.next()??, clock.next()??, clock.next()??);
    let millis = format!("{fraction:0<3}").get(..3)?.parse::<i64>().ok()?;
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    u64::try_from(secs * 1000 + millis).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_convert_both_ways() {
        assert_eq!(utc_stamp(0), ("19700101".into(), "19700101T000000Z".into()));
        // 2026-11-30T21:22:26Z, as `date -u -d @1796073746` prints it.
        assert_eq!(utc_stamp(1_796_073_746).1, "20261130T212226Z");
        assert_eq!(utc_stamp(951_782_400).0, "20000229");
        assert_eq!(rfc3339_ms("2026-11-30T21:22:26.08128Z"), Some(1_796_073_746_081));
        assert_eq!(rfc3339_ms("2026-11-30T21:22:26Z"), Some(1_796_073_746_000));
        assert_eq!(rfc3339_ms("2000-02-29T00:00:00.5Z"), Some(951_782_400_500));
        assert_eq!(rfc3339_ms("yesterday"), None);
    }
}
