//! Usage plans and their calendar periods. Pure: no clock, no I/O.

use std::time::Duration;

use crate::mapping::context::civil_from_days;

/// A token bucket: `rate` requests per second refilled, up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throttle {
    pub rate: f64,
    pub burst: u32,
}

/// Quota periods, aligned to UTC calendar boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day,
    /// Weeks start on Monday 00:00 UTC.
    Week,
    Month,
}

impl Period {
    pub fn parse(s: &str) -> Option<Period> {
        match s.to_ascii_uppercase().as_str() {
            "DAY" => Some(Period::Day),
            "WEEK" => Some(Period::Week),
            "MONTH" => Some(Period::Month),
            _ => None,
        }
    }

    /// The period containing `now_ms` (epoch milliseconds): `[start, end)` in epoch ms.
    pub fn bounds(self, now_ms: i64) -> (i64, i64) {
        const DAY_MS: i64 = 86_400_000;
        let day = now_ms.div_euclid(DAY_MS);
        match self {
            Period::Day => (day * DAY_MS, (day + 1) * DAY_MS),
            Period::Week => {
                // 1970-01-01 was a Thursday: Monday-based weekday is (day + 3) % 7.
                let start = day - (day + 3).rem_euclid(7);
                (start * DAY_MS, (start + 7) * DAY_MS)
            }
            Period::Month => {
                let (y, m, _) = civil_from_days(day);
                let start = days_from_civil(y, m, 1);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                (start * DAY_MS, days_from_civil(ny, nm, 1) * DAY_MS)
            }
        }
    }
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD` of the UTC day containing `ms`.
pub fn day_label(ms: i64) -> String {
    let (y, m, d) = civil_from_days(ms.div_euclid(86_400_000));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Epoch ms of the start of a `YYYY-MM-DD` day.
pub fn parse_day(s: &str) -> Option<i64> {
    let mut parts = s.trim().splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let d: u32 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let days = days_from_civil(y, m, d);
    // Reject dates like 02-31 that roll over into the next month.
    (civil_from_days(days) == (y, m, d)).then_some(days * 86_400_000)
}

/// A quota: at most `limit` requests per period; `offset` requests are already counted in
/// the period a key was created in (API Gateway's `offset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u64,
    pub period: Period,
    pub offset: u64,
}

/// A usage plan.
#[derive(Debug, Clone, PartialEq)]
pub struct UsagePlan {
    pub name: String,
    pub throttle: Option<Throttle>,
    /// Per-route overrides, by `"METHOD /path"` as written in the route.
    pub route_throttles: Vec<(String, Throttle)>,
    pub quota: Option<Quota>,
    /// The routes its keys may call, by `"METHOD /path"`; `None`: every route.
    pub routes: Option<Vec<String>>,
    /// What the plan's throttles count by: per key (the default), per key and client
    /// address together (`throttle_by = ["key", "source_ip"]`: a browser key is shared by a
    /// site's visitors, each of whom gets the throttle), or per address alone.
    pub throttle_by_key: bool,
    pub throttle_by_ip: bool,
    /// A plan for principals instead of keys: what names the caller an authorizer admitted.
    pub identity: Option<PlanIdentity>,
    /// Its keys may invalidate cached answers (`invalidate_cache`).
    pub invalidate_cache: bool,
}

/// What a principal's plan counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanIdentity {
    /// The authorizer's principal (a JWT's `sub`, a Lambda authorizer's `principalId`).
    Principal,
    /// A verified token's claim (or a Lambda authorizer's `context` value) of this name.
    Claim(String),
}

impl PlanIdentity {
    /// `principal`, or `claim:NAME`.
    pub fn parse(s: &str) -> Option<PlanIdentity> {
        match s.trim() {
            "principal" => Some(PlanIdentity::Principal),
            s => {
                let name = s.strip_prefix("claim:")?;
                (!name.is_empty()).then(|| PlanIdentity::Claim(name.to_string()))
            }
        }
    }
}

/// Longest identity value a principal's plan counts by: longer ones are refused (403),
/// so counters cannot be made to hold arbitrary text.
pub const MAX_IDENTITY_LEN: usize = 256;

/// The address a client is counted under by address throttles: IPv4 (and IPv4-mapped
/// IPv6) as the IPv4 address, IPv6 by its /64 (one subscriber's prefix, so rotating
/// addresses within it does not multiply the allowance).
pub fn address_bucket(ip: std::net::IpAddr) -> std::net::IpAddr {
    use std::net::IpAddr;
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// Seconds to tell a client in `Retry-After`: at least 1, rounded up.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(date: &str, hms: (i64, i64, i64)) -> i64 {
        parse_day(date).unwrap() + (hms.0 * 3600 + hms.1 * 60 + hms.2) * 1000
    }

    #[test]
    fn periods_roll_over_at_utc_calendar_boundaries() {
        let just_before = ms("2026-11-25", (23, 59, 59)) + 999;
        let midnight = ms("2026-11-26", (0, 0, 0));
        assert_eq!(
            Period::Day.bounds(just_before),
            (ms("2026-11-25", (0, 0, 0)), midnight)
        );
        assert_eq!(Period::Day.bounds(midnight).0, midnight);
        // 2026-11-25 is a Wednesday; its week runs Monday 23rd to Monday 30th.
        assert_eq!(
            Period::Week.bounds(just_before),
            (ms("2026-11-23", (0, 0, 0)), ms("2026-11-30", (0, 0, 0)))
        );
        assert_eq!(
            Period::Week.bounds(ms("2026-11-30", (0, 0, 0))).0,
            ms("2026-11-30", (0, 0, 0))
        );
        assert_eq!(
            Period::Month.bounds(just_before),
            (ms("2026-11-01", (0, 0, 0)), ms("2026-12-01", (0, 0, 0)))
        );
        assert_eq!(
            Period::Month.bounds(ms("2026-12-31", (12, 0, 0))),
            (ms("2026-12-01", (0, 0, 0)), ms("2027-01-01", (0, 0, 0)))
        );
        assert_eq!(
            Period::Month.bounds(ms("2028-02-29", (0, 0, 0))).1,
            ms("2028-03-01", (0, 0, 0))
        );
    }

    #[test]
    fn days_parse_and_print() {
        assert_eq!(day_label(ms("2026-02-28", (13, 0, 0))), "2026-02-28");
        assert_eq!(parse_day("1970-01-01"), Some(0));
        assert_eq!(parse_day("2026-02-31"), None);
        assert_eq!(parse_day("2026-13-01"), None);
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(2001)), 3);
    }
}
