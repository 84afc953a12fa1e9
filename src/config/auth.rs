//! `[auth]` and `[usage_plans.NAME]`: the key store, the gateway-wide throttle, and the
//! plans keys belong to (throttles and quotas).

use indexmap::IndexMap;
use serde::Deserialize;
use toml::Spanned;

use super::Validator;
use crate::auth::backend::StoreLocation;
use crate::auth::plans::{Period, Quota, Throttle, UsagePlan};

#[derive(Debug, Clone, Deserialize, Default)]
pub struct RawAuth {
    /// The key store: a SQLite file (default `keys.db` next to this file), or
    /// `dynamodb://PREFIX`, the fleet store every node shares. The CLI's `keys` commands
    /// write it; the server picks changes up within a second.
    pub key_store: Option<Spanned<String>>,
    /// Gateway-wide throttle (default rate 10000, burst 5000, as an AWS account), spent by
    /// requests about to call their upstream (not by those refused before).
    pub account_throttle: Option<Spanned<RawThrottle>>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct RawUsagePlan {
    /// Per key: steady rate and burst.
    pub throttle: Option<RawThrottle>,
    /// Per key and route, by `"METHOD /path"` as the route declares them.
    #[serde(default)]
    pub route_throttles: IndexMap<String, RawThrottle>,
    pub quota: Option<RawQuota>,
    /// The routes its keys may call, by `"METHOD /path"` as the routes declare them (as API
    /// Gateway's plans bind keys to stages and methods); a key calling another route gets
    /// 403. Absent: every route that needs a key.
    pub routes: Option<Vec<String>>,
    /// What the throttles count by: `["key"]` (the default: each key has the throttle),
    /// `["key", "source_ip"]` (each client address using a key has it: a browser key is
    /// shared by every visitor of a site, and the quota still bounds the key), or
    /// `["source_ip"]` (each address, whatever key of the plan it uses).
    pub throttle_by: Option<Vec<String>>,
    /// Its keys may bypass a route's cache with `Cache-Control: max-age=0` (API Gateway's
    /// `execute-api:InvalidateCache`; routes with `invalidation = "authorized"`).
    #[serde(default)]
    pub invalidate_cache: bool,
    /// A plan for principals, not keys: `principal` (the authorizer's principal) or
    /// `claim:NAME` (a verified token's claim, or a Lambda authorizer's context value). It
    /// applies to its `routes` (default: every route with an authorizer), each principal
    /// with its own throttle and quota.
    pub identity: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawQuota {
    /// Requests per period.
    pub limit: u64,
    /// `DAY`, `WEEK` (from Monday) or `MONTH`, in UTC.
    pub period: String,
    /// Requests already counted in the period a key is created in.
    #[serde(default)]
    pub offset: u64,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct RawThrottle {
    /// Requests per second refilled (fractions allowed).
    pub rate: f64,
    /// Bucket size: requests allowed at once.
    pub burst: u32,
}

impl Validator<'_> {
    /// A throttle; `span` locates its errors.
    pub(super) fn throttle(
        &mut self,
        t: RawThrottle,
        what: &str,
        span: Option<std::ops::Range<usize>>,
    ) -> Option<Throttle> {
        let throttle = Throttle {
            rate: t.rate,
            burst: t.burst,
        };
        if crate::auth::bucket(throttle).is_some() {
            return Some(throttle);
        }
        let problem = if !(t.rate.is_finite() && t.rate > 0.0) {
            format!("rate must be a number above 0, got {}", t.rate)
        } else if t.burst == 0 {
            "burst must be at least 1".to_string()
        } else {
            format!(
                "rate {} is too small to take effect (use at least 1e-9 per second)",
                t.rate
            )
        };
        self.error(span, format!("{what}: {problem}"));
        None
    }

    pub(super) fn usage_plan(
        &mut self,
        name: &str,
        p: &Spanned<RawUsagePlan>,
        routes: &[String],
    ) -> UsagePlan {
        let span = Some(p.span());
        let r = p.get_ref();
        let throttle = r
            .throttle
            .and_then(|t| self.throttle(t, &format!("usage plan {name}: throttle"), span.clone()));
        let mut route_throttles = Vec::new();
        for (route, t) in &r.route_throttles {
            if !routes.contains(route) {
                self.error(
                    span.clone(),
                    format!("usage plan {name}: no route {route:?} (routes are named like \"POST /v1/events\")"),
                );
            } else if let Some(t) =
                self.throttle(*t, &format!("usage plan {name}: {route}"), span.clone())
            {
                route_throttles.push((route.clone(), t));
            }
        }
        let quota = r
            .quota
            .as_ref()
            .and_then(|q| match Period::parse(&q.period) {
                Some(period) if q.limit > 0 => Some(Quota {
                    limit: q.limit,
                    period,
                    offset: q.offset,
                }),
                Some(_) => {
                    self.error(
                        span.clone(),
                        format!("usage plan {name}: quota limit must be at least 1"),
                    );
                    None
                }
                None => {
                    self.error(
                        span.clone(),
                        format!("usage plan {name}: quota period must be DAY, WEEK or MONTH"),
                    );
                    None
                }
            });
        let grants = r.routes.as_ref().map(|names| {
            for route in names {
                if !routes.contains(route) {
                    self.error(
                        span.clone(),
                        format!("usage plan {name}: routes: no route {route:?} (routes are named like \"POST /v1/events\")"),
                    );
                }
            }
            names.clone()
        });
        let (mut throttle_by_key, mut throttle_by_ip) = (true, false);
        if let Some(by) = &r.throttle_by {
            (throttle_by_key, throttle_by_ip) = (false, false);
            for b in by {
                match b.as_str() {
                    "key" => throttle_by_key = true,
                    "source_ip" => throttle_by_ip = true,
                    other => self.error(
                        span.clone(),
                        format!("usage plan {name}: throttle_by: {other:?} is neither \"key\" nor \"source_ip\""),
                    ),
                }
            }
            if by.is_empty() {
                self.error(
                    span.clone(),
                    format!(
                        "usage plan {name}: throttle_by must name \"key\", \"source_ip\" or both"
                    ),
                );
            }
        }
        let identity = r.identity.as_ref().and_then(|s| {
            let parsed = crate::auth::plans::PlanIdentity::parse(s);
            if parsed.is_none() {
                self.error(
                    span.clone(),
                    format!("usage plan {name}: identity {s:?}: use \"principal\" or \"claim:NAME\""),
                );
            }
            if r.throttle_by.is_some() {
                self.error(
                    span.clone(),
                    format!("usage plan {name}: a plan by identity throttles each principal; throttle_by does not apply"),
                );
            }
            parsed
        });
        UsagePlan {
            invalidate_cache: r.invalidate_cache,
            identity,
            throttle_by_key,
            throttle_by_ip,
            routes: grants,
            name: name.to_string(),
            throttle,
            route_throttles,
            quota,
        }
    }

    /// `[auth]` and `[usage_plans]`: the key store, the account throttle and the plans.
    pub(super) fn auth(
        &mut self,
        raw: &RawAuth,
        plans: &IndexMap<String, Spanned<RawUsagePlan>>,
        routes: &[String],
        base: &std::path::Path,
    ) -> (StoreLocation, Option<Throttle>, Vec<UsagePlan>) {
        let account_throttle = match &raw.account_throttle {
            Some(t) => self.throttle(*t.get_ref(), "auth.account_throttle", Some(t.span())),
            None => Some(Throttle {
                rate: 10_000.0,
                burst: 5_000,
            }),
        };
        let usage_plans = plans
            .iter()
            .map(|(name, p)| self.usage_plan(name, p, routes))
            .collect();
        let key_store = match &raw.key_store {
            None => StoreLocation::Sqlite(base.join("keys.db")),
            Some(s) => match crate::auth::fleet::parse_location(s.get_ref()) {
                None => StoreLocation::Sqlite(base.join(s.get_ref())),
                Some(Ok(prefix)) => StoreLocation::Dynamo { prefix },
                Some(Err(e)) => {
                    self.error(Some(s.span()), format!("auth.key_store {e}"));
                    StoreLocation::Sqlite(base.join("keys.db"))
                }
            },
        };
        (key_store, account_throttle, usage_plans)
    }
}
