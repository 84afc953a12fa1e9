use std::time::Duration;

use governor::clock::FakeRelativeClock;

use super::plans::{Period, parse_day};
use super::store::KeyRecord;
use super::*;

const KEY: &str = "partner-key-0123456789abcdef";

fn hasher() -> keys::Hasher {
    keys::Hasher::new([3; 32])
}

fn record(id: &str, value: &str, plan: &str) -> KeyRecord {
    KeyRecord {
        id: id.into(),
        name: id.into(),
        plan: plan.into(),
        hash: hasher().hash(value),
        enabled: true,
        created_at: 0,
        expires_at: None,
        description: None,
        customer: None,
        previous: Vec::new(),
        origins: Vec::new(),
        allow_no_origin: false,
    }
}

fn at(day: &str, h: i64, m: i64, s: i64) -> i64 {
    parse_day(day).unwrap() + (h * 3600 + m * 60 + s) * 1000
}

fn plan(name: &str, throttle: Option<(f64, u32)>, quota: Option<(u64, Period, u64)>) -> UsagePlan {
    UsagePlan {
        invalidate_cache: false,
        name: name.into(),
        throttle: throttle.map(|(rate, burst)| Throttle { rate, burst }),
        route_throttles: Vec::new(),
        routes: None,
        throttle_by_key: true,
        throttle_by_ip: false,
        identity: None,
        quota: quota.map(|(limit, period, offset)| Quota {
            limit,
            period,
            offset,
        }),
    }
}

fn keyed_route() -> RouteAuth {
    RouteAuth {
        name: "POST /v1/events".into(),
        key_required: true,
        ..RouteAuth::default()
    }
}

fn authorizer(
    plans: Vec<UsagePlan>,
    records: Vec<KeyRecord>,
) -> (Authorizer<FakeRelativeClock>, FakeRelativeClock) {
    let clock = FakeRelativeClock::default();
    let a = Authorizer::new(
        clock.clone(),
        plans,
        vec![keyed_route()],
        None,
        Snapshot::from_records(records, hasher()),
        vec![],
    );
    (a, clock)
}

#[test]
fn burst_then_steady_rate() {
    let (a, clock) = authorizer(
        vec![plan("p", Some((2.0, 3)), None)],
        vec![record("k1", KEY, "p")],
    );
    let now = at("2026-11-25", 12, 0, 0);
    for _ in 0..3 {
        assert!(
            a.authorize(0, Some(KEY), now).is_ok(),
            "the burst is allowed"
        );
    }
    assert_eq!(
        a.authorize(0, Some(KEY), now).unwrap_err(),
        Denied::Throttled {
            retry_after: 1,
            scope: "usage plan"
        }
    );
    // 2 per second: one token every 500 ms.
    clock.advance(Duration::from_millis(499));
    assert!(a.authorize(0, Some(KEY), now).is_err());
    clock.advance(Duration::from_millis(1));
    assert!(a.authorize(0, Some(KEY), now).is_ok());
    assert!(a.authorize(0, Some(KEY), now).is_err());
    clock.advance(Duration::from_secs(10));
    for _ in 0..3 {
        assert!(
            a.authorize(0, Some(KEY), now).is_ok(),
            "the bucket refills to the burst, no more"
        );
    }
    assert!(a.authorize(0, Some(KEY), now).is_err());
}

#[test]
fn fractional_rates() {
    let (a, clock) = authorizer(
        vec![plan("p", Some((0.5, 1)), None)],
        vec![record("k1", KEY, "p")],
    );
    assert!(a.authorize(0, Some(KEY), 0).is_ok());
    assert_eq!(
        a.authorize(0, Some(KEY), 0).unwrap_err(),
        Denied::Throttled {
            retry_after: 2,
            scope: "usage plan"
        }
    );
    clock.advance(Duration::from_secs(2));
    assert!(a.authorize(0, Some(KEY), 0).is_ok());
}

#[test]
fn quota_bites_exactly_at_its_limit_and_rolls_over_at_utc_midnight() {
    let (a, _) = authorizer(
        vec![plan("p", None, Some((5, Period::Day, 0)))],
        vec![record("k1", KEY, "p")],
    );
    let evening = at("2026-11-25", 23, 59, 30);
    for i in 0..5 {
        let ok = a.authorize(0, Some(KEY), evening).unwrap();
        assert_eq!(ok.quota.unwrap().remaining, 4 - i);
    }
    assert_eq!(
        a.authorize(0, Some(KEY), evening).unwrap_err(),
        Denied::QuotaExceeded { retry_after: 30 }
    );
    let last_ms = at("2026-11-25", 23, 59, 59) + 999;
    assert_eq!(
        a.authorize(0, Some(KEY), last_ms).unwrap_err(),
        Denied::QuotaExceeded { retry_after: 1 }
    );
    let midnight = at("2026-11-26", 0, 0, 0);
    let ok = a.authorize(0, Some(KEY), midnight).unwrap();
    assert_eq!(
        ok.quota,
        Some(QuotaStatus {
            limit: 5,
            remaining: 4,
            reset_ms: at("2026-11-27", 0, 0, 0)
        })
    );
}

#[test]
fn weekly_and_monthly_quotas_roll_over_on_calendar_boundaries() {
    let (a, _) = authorizer(
        vec![
            plan("w", None, Some((1, Period::Week, 0))),
            plan("m", None, Some((1, Period::Month, 0))),
        ],
        vec![
            record("kw", KEY, "w"),
            record("km", "monthly-key-0123456789abcdef", "m"),
        ],
    );
    // Sunday 2026-11-29 is the last day of the week that began Monday 2026-11-23.
    assert!(a.authorize(0, Some(KEY), at("2026-11-23", 0, 0, 0)).is_ok());
    assert!(
        a.authorize(0, Some(KEY), at("2026-11-29", 23, 59, 59))
            .is_err()
    );
    assert!(a.authorize(0, Some(KEY), at("2026-11-30", 0, 0, 0)).is_ok());
    let mk = Some("monthly-key-0123456789abcdef");
    assert!(a.authorize(0, mk, at("2026-11-01", 0, 0, 0)).is_ok());
    assert!(a.authorize(0, mk, at("2026-11-30", 23, 59, 59)).is_err());
    assert!(a.authorize(0, mk, at("2026-12-01", 0, 0, 0)).is_ok());
}

#[test]
fn offset_counts_in_the_period_the_key_was_created() {
    let mut rec = record("k1", KEY, "p");
    rec.created_at = at("2026-11-25", 8, 0, 0);
    let (a, _) = authorizer(vec![plan("p", None, Some((5, Period::Day, 3)))], vec![rec]);
    assert!(a.authorize(0, Some(KEY), at("2026-11-25", 9, 0, 0)).is_ok());
    assert!(a.authorize(0, Some(KEY), at("2026-11-25", 9, 0, 0)).is_ok());
    assert!(
        a.authorize(0, Some(KEY), at("2026-11-25", 9, 0, 0))
            .is_err(),
        "3 + 2 = 5"
    );
    for _ in 0..5 {
        assert!(
            a.authorize(0, Some(KEY), at("2026-11-26", 9, 0, 0)).is_ok(),
            "later periods are whole"
        );
    }
}

#[test]
fn counts_persisted_before_a_restart_still_count() {
    let now = at("2026-11-25", 10, 0, 0);
    let clock = FakeRelativeClock::default();
    let a = Authorizer::new(
        clock,
        vec![plan("p", None, Some((5, Period::Month, 0)))],
        vec![keyed_route()],
        None,
        Snapshot::from_records(vec![record("k1", KEY, "p")], hasher()),
        vec![
            ("k1".into(), "2026-11-02".into(), 3),
            ("k1".into(), "2026-10-31".into(), 99),
        ],
    );
    assert!(a.authorize(0, Some(KEY), now).is_ok());
    assert!(a.authorize(0, Some(KEY), now).is_ok());
    assert_eq!(
        a.authorize(0, Some(KEY), now).unwrap_err(),
        Denied::QuotaExceeded {
            retry_after: 5 * 86400 + 14 * 3600
        }
    );
    let mut pending = a.take_pending();
    pending.sort();
    assert_eq!(
        pending,
        vec![("k1".into(), "2026-11-25".into(), 2)],
        "only admitted requests count"
    );
    assert!(a.take_pending().is_empty());
}

#[test]
fn unusable_keys_are_forbidden() {
    let mut disabled = record("k2", "disabled-key-0123456789ab", "p");
    disabled.enabled = false;
    let mut expired = record("k3", "expired-key-0123456789abc", "p");
    expired.expires_at = Some(1_000);
    let orphan = record("k4", "orphan-key-0123456789abcd", "no-such-plan");
    let (a, _) = authorizer(
        vec![plan("p", None, None)],
        vec![record("k1", KEY, "p"), disabled, expired, orphan],
    );
    let cases = [
        (None, "no key"),
        (Some(""), "no key"),
        (Some("wrong-key-0123456789abcdef"), "unknown key"),
        (Some("disabled-key-0123456789ab"), "disabled key"),
        (Some("expired-key-0123456789abc"), "expired key"),
        (
            Some("orphan-key-0123456789abcd"),
            "key's usage plan is not configured",
        ),
    ];
    for (key, reason) in cases {
        assert_eq!(
            a.authorize(0, key, 2_000).unwrap_err(),
            Denied::Forbidden(reason),
            "{key:?}"
        );
    }
    let long = "x".repeat(10_000);
    assert_eq!(
        a.authorize(0, Some(&long), 0).unwrap_err(),
        Denied::Forbidden("key too long")
    );
    assert!(
        a.authorize(0, Some("expired-key-0123456789abc"), 999)
            .is_ok(),
        "valid before expiry"
    );
    assert_eq!(
        a.authorize(0, Some(KEY), 0).unwrap().key.unwrap().id(),
        "k1"
    );
}

#[test]
fn rotated_keys_keep_working_for_the_grace_period() {
    let mut rec = record("k1", "new-secret-0123456789abcdef", "p");
    rec.previous = vec![(hasher().hash(KEY), 10_000)];
    let (a, _) = authorizer(vec![plan("p", None, None)], vec![rec]);
    assert!(a.authorize(0, Some(KEY), 9_999).is_ok());
    assert_eq!(
        a.authorize(0, Some(KEY), 10_000).unwrap_err(),
        Denied::Forbidden("rotated key past its grace period")
    );
    assert!(
        a.authorize(0, Some("new-secret-0123456789abcdef"), 10_000)
            .is_ok()
    );
}

#[test]
fn hot_snapshot_replacement() {
    let (a, _) = authorizer(vec![plan("p", None, None)], vec![]);
    assert!(a.authorize(0, Some(KEY), 0).is_err());
    a.replace_snapshot(Snapshot::from_records(
        vec![record("k1", KEY, "p")],
        hasher(),
    ));
    assert!(a.authorize(0, Some(KEY), 0).is_ok());
    a.replace_snapshot(Snapshot::default());
    assert_eq!(
        a.authorize(0, Some(KEY), 0).unwrap_err(),
        Denied::Forbidden("unknown key")
    );
}

#[test]
fn route_overrides_route_throttles_and_the_account_throttle() {
    let clock = FakeRelativeClock::default();
    let mut p = plan("p", Some((100.0, 100)), None);
    p.route_throttles.push((
        "POST /v1/events".into(),
        Throttle {
            rate: 1.0,
            burst: 1,
        },
    ));
    let routes = vec![
        keyed_route(),
        RouteAuth {
            name: "POST /open".into(),
            throttle: Some(Throttle {
                rate: 1.0,
                burst: 2,
            }),
            ..RouteAuth::default()
        },
        RouteAuth {
            name: "POST /other".into(),
            key_required: true,
            ..RouteAuth::default()
        },
    ];
    let a = Authorizer::new(
        clock.clone(),
        vec![p],
        routes,
        Some(Throttle {
            rate: 1.0,
            burst: 6,
        }),
        Snapshot::from_records(vec![record("k1", KEY, "p")], hasher()),
        vec![],
    );
    assert!(a.authorize(0, Some(KEY), 0).is_ok());
    assert_eq!(
        a.authorize(0, Some(KEY), 0).unwrap_err(),
        Denied::Throttled {
            retry_after: 1,
            scope: "usage plan"
        }
    );
    assert!(
        a.authorize(2, Some(KEY), 0).is_ok(),
        "other routes use the plan's own throttle"
    );
    assert!(a.authorize(1, None, 0).is_ok(), "keyless route");
    assert!(a.authorize(1, None, 0).is_ok());
    assert_eq!(
        a.authorize(1, None, 0).unwrap_err(),
        Denied::Throttled {
            retry_after: 1,
            scope: "route"
        }
    );
    // The account throttle is spent only by requests admitted to their upstream.
    for _ in 0..20 {
        assert!(a.authorize(2, Some(KEY), 0).is_ok());
    }
    for _ in 0..6 {
        assert!(a.admit_to_upstream().is_ok());
    }
    assert_eq!(
        a.admit_to_upstream().unwrap_err(),
        Denied::Throttled {
            retry_after: 1,
            scope: "account"
        }
    );
}

/// A reloaded configuration shares the keys and quota counts, keeps the bucket of a throttle
/// it left unchanged, and starts afresh only what it changed; the route indices may move.
#[test]
fn a_reconfigured_authorizer_keeps_counts_and_unchanged_buckets() {
    let (a, clock) = authorizer(
        vec![
            plan("steady", Some((1.0, 2)), Some((5, Period::Day, 0))),
            plan("changed", Some((1.0, 2)), None),
        ],
        vec![
            record("k1", KEY, "steady"),
            record("k2", "other-key-0123456789", "changed"),
        ],
    );
    let now = at("2026-11-25", 12, 0, 0);
    for _ in 0..2 {
        a.authorize(0, Some(KEY), now).unwrap();
        a.authorize(0, Some("other-key-0123456789"), now).unwrap();
    }
    // A route added in front of the old one, and one plan's throttle changed.
    let added = RouteAuth {
        name: "GET /v1/status".into(),
        ..RouteAuth::default()
    };
    let b = a.reconfigured(
        vec![
            plan("steady", Some((1.0, 2)), Some((5, Period::Day, 0))),
            plan("changed", Some((1.0, 3)), None),
        ],
        vec![added, keyed_route()],
        None,
    );
    // The unchanged plan's bucket is still empty; the changed one's starts full.
    assert!(matches!(
        b.authorize(1, Some(KEY), now),
        Err(Denied::Throttled { .. })
    ));
    for _ in 0..3 {
        b.authorize(1, Some("other-key-0123456789"), now).unwrap();
    }
    // Counts taken on either count for both: the old configuration's in-flight requests
    // and the new one's share one quota.
    clock.advance(Duration::from_secs(10));
    let left = a
        .authorize(0, Some(KEY), now)
        .unwrap()
        .quota
        .unwrap()
        .remaining;
    assert_eq!(left, 2);
    let left = b
        .authorize(1, Some(KEY), now)
        .unwrap()
        .quota
        .unwrap()
        .remaining;
    assert_eq!(left, 1);
    assert_eq!(a.take_pending().iter().map(|(_, _, n)| n).sum::<u64>(), 4);
    // Keys replaced through one are the keys of both.
    b.replace_snapshot(Snapshot::from_records(vec![], hasher()));
    assert!(a.authorize(0, Some(KEY), now).is_err());
}

#[test]
fn a_sweep_forgets_only_refilled_buckets() {
    // 1 request/s, burst 2: refilled 2 s after the burst is spent.
    let (a, clock) = authorizer(
        vec![plan("p", Some((1.0, 2)), None)],
        vec![record("k1", KEY, "p")],
    );
    let now = at("2026-11-25", 12, 0, 0);
    assert!(a.authorize(0, Some(KEY), now).is_ok());
    assert!(a.authorize(0, Some(KEY), now).is_ok());
    a.sweep(now);
    assert!(
        a.authorize(0, Some(KEY), now).is_err(),
        "a sweep does not refill a spent bucket"
    );
    clock.advance(Duration::from_millis(1_000));
    a.sweep(now);
    assert!(a.authorize(0, Some(KEY), now).is_ok(), "one token back");
    assert!(a.authorize(0, Some(KEY), now).is_err(), "and only one");
    clock.advance(Duration::from_secs(3));
    a.sweep(now);
    assert!(a.authorize(0, Some(KEY), now).is_ok());
    assert!(a.authorize(0, Some(KEY), now).is_ok());
    assert!(a.authorize(0, Some(KEY), now).is_err());
}

#[test]
fn a_sweep_keeps_counters_of_current_periods_and_loses_no_count() {
    let (a, _) = authorizer(
        vec![plan("p", None, Some((3, Period::Day, 0)))],
        vec![
            record("k1", KEY, "p"),
            record("k2", "other-key-0123456789abcdef", "p"),
        ],
    );
    let day = at("2026-11-25", 12, 0, 0);
    assert!(a.authorize(0, Some(KEY), day).is_ok());
    assert!(a.authorize(0, Some(KEY), day).is_ok());
    assert!(
        a.authorize(0, Some("other-key-0123456789abcdef"), day)
            .is_ok()
    );
    assert_eq!(a.counters_held(), 2);
    a.sweep(day + 3_600_000);
    assert_eq!(a.counters_held(), 2, "the periods have not ended");
    let status = a.authorize(0, Some(KEY), day).unwrap().quota.unwrap();
    assert_eq!(status.remaining, 0, "the count survived the sweep");
    assert!(a.authorize(0, Some(KEY), day).is_err());
    let next = at("2026-11-26", 0, 0, 1);
    a.sweep(next);
    assert_eq!(a.counters_held(), 0, "ended periods are forgotten");
    assert_eq!(
        a.authorize(0, Some(KEY), next)
            .unwrap()
            .quota
            .unwrap()
            .remaining,
        2
    );
    // What the sweep dropped had been counted for the store.
    let pending: u64 = a.take_pending().iter().map(|(_, _, n)| n).sum();
    assert_eq!(
        pending, 5,
        "three of k1 and one of k2 on the first day, one the next"
    );
}

#[test]
fn throttles_of_a_reloaded_configuration_are_swept_too() {
    let (a, clock) = authorizer(
        vec![plan("p", Some((1.0, 1)), None)],
        vec![record("k1", KEY, "p")],
    );
    let b = a.reconfigured(
        vec![plan("p", Some((2.0, 1)), None)],
        vec![keyed_route()],
        None,
    );
    let now = at("2026-11-25", 12, 0, 0);
    assert!(b.authorize(0, Some(KEY), now).is_ok());
    drop(a);
    clock.advance(Duration::from_secs(1));
    b.sweep(now);
    assert_eq!(
        b.state.keyed.lock().unwrap().len(),
        1,
        "the old plan's bucket is gone"
    );
    assert!(b.authorize(0, Some(KEY), now).is_ok());
}

/// A key's lease of a daily quota: admitted from the lease only, the next lease asked for
/// when it is spent, none past the fleet's answer that nothing is left, and a new period at
/// UTC midnight that starts with no lease (a late answer for the old period is ignored).
#[test]
fn leased_quotas_admit_from_the_lease_and_roll_over_at_utc_midnight() {
    let (a, _) = authorizer(
        vec![plan("p", None, Some((5, Period::Day, 0)))],
        vec![record("k1", KEY, "p")],
    );
    a.lease_quotas();
    let evening = at("2026-12-03", 23, 59, 58);
    assert_eq!(
        a.authorize(0, Some(KEY), evening).unwrap_err(),
        Denied::NeedsLease
    );
    // Asked once, however many requests wait.
    assert_eq!(
        a.authorize(0, Some(KEY), evening).unwrap_err(),
        Denied::NeedsLease
    );
    let needs = a.lease_needs();
    assert_eq!(needs.len(), 1);
    assert_eq!(needs[0].period_start, at("2026-12-03", 0, 0, 0));
    assert_eq!(needs[0].limit, 5);
    a.lease_taken(&needs[0], 3, Some(3), evening);
    for left in [4, 3, 2] {
        let q = a.authorize(0, Some(KEY), evening).unwrap().quota.unwrap();
        assert_eq!(q.remaining, left);
    }
    // Spent: the next lease is asked for (it was already, below half of the last).
    assert_eq!(
        a.authorize(0, Some(KEY), evening).unwrap_err(),
        Denied::NeedsLease
    );
    let needs = a.lease_needs();
    assert_eq!(needs.len(), 1);
    // The fleet has none left: refused as a spent quota without asking again.
    a.lease_taken(&needs[0], 0, Some(5), evening);
    assert!(matches!(
        a.authorize(0, Some(KEY), evening + 10),
        Err(Denied::QuotaExceeded { retry_after: 2 })
    ));
    assert!(a.lease_needs().is_empty());
    // Midnight: a new period, a new lease.
    let midnight = at("2026-12-04", 0, 0, 0);
    assert_eq!(
        a.authorize(0, Some(KEY), midnight).unwrap_err(),
        Denied::NeedsLease
    );
    let needs = a.lease_needs();
    assert_eq!(needs[0].period_start, midnight);
    // An old period's lease arriving late is not this period's.
    let mut late = needs[0].clone();
    late.period_start = at("2026-12-03", 0, 0, 0);
    a.lease_taken(&late, 5, Some(5), midnight);
    assert_eq!(
        a.authorize(0, Some(KEY), midnight).unwrap_err(),
        Denied::NeedsLease
    );
    a.lease_taken(&needs[0], 2, Some(2), midnight);
    assert!(a.authorize(0, Some(KEY), midnight).is_ok());
    // Unspent units go back; the store could not be reached: 503 for a moment.
    assert_eq!(
        a.take_leases(midnight, None),
        vec![(Arc::from("k1"), midnight, 1)]
    );
    assert_eq!(
        a.authorize(0, Some(KEY), midnight).unwrap_err(),
        Denied::NeedsLease
    );
    let needs = a.lease_needs();
    a.lease_taken(&needs[0], 0, None, midnight);
    assert!(matches!(
        a.authorize(0, Some(KEY), midnight + 1),
        Err(Denied::Unavailable { .. })
    ));
}

proptest::proptest! {
    /// Three nodes leasing one key's quota from a shared grant count, in any interleaving of
    /// requests, lease answers, returns and crashes, never admit past the limit; and when
    /// none crashed and every node was asked until refused, they admitted all of it.
    #[test]
    fn a_fleet_of_leasing_nodes_never_admits_past_the_quota(
        ops in proptest::collection::vec((0..3usize, 0..20u8), 1..300),
        limit in 1..120u64,
    ) {
        let nodes: Vec<_> = (0..3)
            .map(|_| {
                let (a, _) = authorizer(
                    vec![plan("p", None, Some((limit, Period::Day, 0)))],
                    vec![record("k1", KEY, "p")],
                );
                a.lease_quotas();
                a
            })
            .collect();
        let mut alive = [true; 3];
        let (mut granted, mut admitted) = (0u64, 0u64);
        let mut now = at("2026-12-03", 12, 0, 0);
        let fill = |a: &Authorizer<FakeRelativeClock>, granted: &mut u64, now: i64| {
            for need in a.lease_needs() {
                // The conditional update: never past the limit.
                let n = crate::auth::fleet::leases::size(&need, 3).min(limit - *granted);
                *granted += n;
                a.lease_taken(&need, n, Some(*granted), now);
            }
        };
        for (node, op) in ops {
            now += 7;
            if !alive[node] {
                continue;
            }
            let a = &nodes[node];
            match op {
                0 => alive[node] = false,
                1 => {
                    for (_, _, units) in a.take_leases(now, None) {
                        granted -= units;
                    }
                }
                2 => fill(a, &mut granted, now),
                _ => match a.authorize(0, Some(KEY), now) {
                    Ok(_) => admitted += 1,
                    Err(Denied::NeedsLease) => {
                        fill(a, &mut granted, now);
                        if a.authorize(0, Some(KEY), now).is_ok() {
                            admitted += 1;
                        }
                    }
                    Err(_) => {}
                },
            }
            proptest::prop_assert!(admitted <= limit, "admitted {admitted} of {limit}");
            proptest::prop_assert!(granted <= limit);
        }
        // The survivors spend what they hold and what is left.
        if alive.iter().all(|a| *a) {
            now += 2 * LEASE_HOLD_MS;
            for a in &nodes {
                loop {
                    match a.authorize(0, Some(KEY), now) {
                        Ok(_) => admitted += 1,
                        Err(Denied::NeedsLease) => fill(a, &mut granted, now),
                        Err(_) => break,
                    }
                }
            }
            proptest::prop_assert_eq!(admitted, limit);
        }
    }
}
