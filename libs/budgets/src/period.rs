//! Calendar periods: the hour, day, week (from Monday) or month that holds
//! an instant, reckoned in a time zone, as a half-open UTC interval
//! `[start, end)`. The end of one period is the start of the next, so every
//! instant lies in exactly one period and an event exactly at a boundary
//! belongs to the period that starts there.

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use stratavore_events::budget::BudgetPeriod;

/// One period of a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// Its first instant.
    pub start: DateTime<Utc>,
    /// The first instant of the next period.
    pub end: DateTime<Utc>,
}

impl Period {
    /// Whether `at` lies in the period.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.start <= at && at < self.end
    }
}

/// A time zone name the tz database does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IANA time zone name (for example UTC or Europe/Paris)")]
pub struct UnknownTimeZone(pub String);

/// Parse an IANA time zone name.
pub fn time_zone(name: &str) -> Result<Tz, UnknownTimeZone> {
    name.parse::<Tz>()
        .map_err(|_| UnknownTimeZone(name.to_owned()))
}

/// The period of kind `period` that holds `at`, in `zone`.
pub fn period_at(period: BudgetPeriod, zone: Tz, at: DateTime<Utc>) -> Period {
    if period == BudgetPeriod::Hourly {
        // An hour is counted from the instant the local clock read :00, not
        // rebuilt from a local date and hour: the hour a DST change repeats
        // is two periods, and zones offset by half an hour stay exact.
        let local = at.with_timezone(&zone);
        let into_hour = Duration::minutes(i64::from(local.minute()))
            + Duration::seconds(i64::from(local.second()))
            + Duration::nanoseconds(i64::from(local.nanosecond()));
        let start = at - into_hour;
        return Period {
            start,
            end: start + Duration::hours(1),
        };
    }
    let day = at.with_timezone(&zone).date_naive();
    let first = match period {
        BudgetPeriod::Weekly => {
            day - Duration::days(i64::from(day.weekday().num_days_from_monday()))
        }
        BudgetPeriod::Monthly => day.with_day(1).unwrap_or(day),
        BudgetPeriod::Daily | BudgetPeriod::Hourly => day,
    };
    let next = match period {
        BudgetPeriod::Weekly => first + Duration::days(7),
        BudgetPeriod::Monthly => first_of_next_month(first),
        BudgetPeriod::Daily | BudgetPeriod::Hourly => first + Duration::days(1),
    };
    Period {
        start: local_midnight(zone, first),
        end: local_midnight(zone, next),
    }
}

/// [`period_at`] in the zone named `zone`. A budget's zone was checked
/// when it was created; UTC stands in only for a name a later tz database
/// dropped, so a stored budget always has a period.
pub fn period_in_zone(period: BudgetPeriod, zone: &str, at: DateTime<Utc>) -> Period {
    period_at(period, time_zone(zone).unwrap_or(Tz::UTC), at)
}

fn first_of_next_month(first: NaiveDate) -> NaiveDate {
    let (year, month) = if first.month() == 12 {
        (first.year() + 1, 1)
    } else {
        (first.year(), first.month() + 1)
    };
    NaiveDate::from_ymd_opt(year, month, 1).unwrap_or(first + Duration::days(31))
}

/// The first instant of `day` in `zone`. Where a DST change skips
/// midnight, the day starts when the clock resumes; where midnight happens
/// twice, at the first.
fn local_midnight(zone: Tz, day: NaiveDate) -> DateTime<Utc> {
    let mut local = day.and_hms_opt(0, 0, 0).unwrap_or_default();
    // Transitions fall on whole minutes, and no gap lasts two days (Samoa
    // skipped one), so this walk always ends.
    for _ in 0..(2 * 24 * 60) {
        match zone.from_local_datetime(&local) {
            LocalResult::Single(t) => return t.with_timezone(&Utc),
            LocalResult::Ambiguous(first, _) => return first.with_timezone(&Utc),
            LocalResult::None => local += Duration::minutes(1),
        }
    }
    Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn paris() -> Tz {
        time_zone("Europe/Paris").unwrap()
    }

    #[test]
    fn a_day_in_paris_runs_from_local_midnight_to_local_midnight() {
        let p = period_at(BudgetPeriod::Daily, paris(), utc("2025-06-10T12:00:00Z"));
        assert_eq!(p.start, utc("2025-06-09T22:00:00Z"));
        assert_eq!(p.end, utc("2025-06-10T22:00:00Z"));
    }

    #[test]
    fn the_spring_dst_day_in_paris_is_23_hours_and_the_autumn_one_25() {
        let spring = period_at(BudgetPeriod::Daily, paris(), utc("2025-03-30T12:00:00Z"));
        assert_eq!(spring.start, utc("2025-03-29T23:00:00Z"));
        assert_eq!(spring.end, utc("2025-03-30T22:00:00Z"));
        assert_eq!(spring.end - spring.start, Duration::hours(23));
        let autumn = period_at(BudgetPeriod::Daily, paris(), utc("2025-10-26T12:00:00Z"));
        assert_eq!(autumn.start, utc("2025-10-25T22:00:00Z"));
        assert_eq!(autumn.end, utc("2025-10-26T23:00:00Z"));
        assert_eq!(autumn.end - autumn.start, Duration::hours(25));
    }

    #[test]
    fn the_hour_a_dst_change_repeats_is_two_periods() {
        // 2025-10-26 in Paris: 02:00-03:00 local happens twice.
        let first = period_at(BudgetPeriod::Hourly, paris(), utc("2025-10-26T00:30:00Z"));
        let second = period_at(BudgetPeriod::Hourly, paris(), utc("2025-10-26T01:30:00Z"));
        assert_eq!(first.start, utc("2025-10-26T00:00:00Z"));
        assert_eq!(second.start, utc("2025-10-26T01:00:00Z"));
        assert_eq!(first.end, second.start);
    }

    #[test]
    fn hours_in_a_half_hour_zone_start_at_the_local_hour() {
        let kolkata = time_zone("Asia/Kolkata").unwrap();
        let p = period_at(BudgetPeriod::Hourly, kolkata, utc("2025-01-01T10:10:00Z"));
        assert_eq!(p.start, utc("2025-01-01T09:30:00Z"));
        assert_eq!(p.end, utc("2025-01-01T10:30:00Z"));
    }

    #[test]
    fn weeks_start_on_monday() {
        // 2025-06-15 is a Sunday; its week began on Monday 9 June.
        let p = period_at(BudgetPeriod::Weekly, Tz::UTC, utc("2025-06-15T23:59:59Z"));
        assert_eq!(p.start, utc("2025-06-09T00:00:00Z"));
        assert_eq!(p.end, utc("2025-06-16T00:00:00Z"));
        let monday = period_at(BudgetPeriod::Weekly, Tz::UTC, utc("2025-06-16T00:00:00Z"));
        assert_eq!(monday.start, utc("2025-06-16T00:00:00Z"));
    }

    #[test]
    fn months_end_on_their_last_day_across_years_and_leap_days() {
        let feb = period_at(BudgetPeriod::Monthly, Tz::UTC, utc("2024-02-29T18:00:00Z"));
        assert_eq!(feb.start, utc("2024-02-01T00:00:00Z"));
        assert_eq!(feb.end, utc("2024-03-01T00:00:00Z"));
        let dec = period_at(BudgetPeriod::Monthly, paris(), utc("2025-12-31T22:59:59Z"));
        assert_eq!(dec.start, utc("2025-11-30T23:00:00Z"));
        assert_eq!(dec.end, utc("2025-12-31T23:00:00Z"));
    }

    #[test]
    fn an_instant_exactly_at_a_boundary_belongs_to_the_period_it_starts() {
        let at = utc("2025-06-09T22:00:00Z");
        let p = period_at(BudgetPeriod::Daily, paris(), at);
        assert_eq!(p.start, at);
        assert!(p.contains(at));
        let before = period_at(BudgetPeriod::Daily, paris(), at - Duration::nanoseconds(1));
        assert_eq!(before.end, at);
        assert!(!before.contains(at));
    }

    #[test]
    fn a_day_whose_midnight_a_dst_change_skips_starts_when_the_clock_resumes() {
        // Santiago moved its clocks from 00:00 to 01:00 on 2024-09-08.
        let santiago = time_zone("America/Santiago").unwrap();
        let p = period_at(BudgetPeriod::Daily, santiago, utc("2024-09-08T15:00:00Z"));
        assert_eq!(p.start, utc("2024-09-08T04:00:00Z"));
        assert_eq!(p.end, utc("2024-09-09T03:00:00Z"));
    }

    #[test]
    fn an_unknown_zone_is_refused_with_its_name() {
        let err = time_zone("Mars/Olympus").unwrap_err();
        assert!(err.to_string().contains("Mars/Olympus"));
    }
}
