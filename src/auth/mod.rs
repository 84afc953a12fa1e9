//! API keys, usage plans, throttling and quotas: the `authorize` stage.
//!
//! The request path reads only memory: a snapshot of the key store (swapped whole when the
//! store changes), governor token buckets, and per-key quota counters. Background tasks
//! (see [`sync`]) reload the snapshot when the CLI changes the store and flush quota counts
//! to it every second.
//!
//! Order of checks, as API Gateway: the key (403 if missing, unknown, disabled or expired),
//! the plan's throttle for the key (the route's override within the plan if any), the
//! route's throttle, the account throttle, then the quota. Only a request that passes every
//! throttle counts against the quota, so a quota counts exactly the requests admitted.

pub mod backend;
mod counters;
pub mod fleet;
pub mod keys;
pub mod plans;
pub mod snapshot;
pub mod store;
pub mod sync;

use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota as Bucket, RateLimiter};

use plans::{Quota, Throttle, UsagePlan, day_label, retry_after_seconds};
pub use snapshot::{KeyRef, Snapshot, UNKNOWN_KEY};

/// Throttles by key (or principal, or address) count under a 64-bit hash of its id, keyed
/// per process, so a check needs no copy of the id and a bucket costs 16 bytes.
type Keyed<C> = RateLimiter<u64, DashMapStateStore<u64>, C, NoOpMiddleware<<C as Clock>::Instant>>;
type Direct<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// What the authorizer knows of the caller beside its key.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caller<'a> {
    /// The request's `Origin` header.
    pub origin: Option<&'a str>,
    /// The client's address (for plans that throttle by it).
    pub ip: Option<std::net::IpAddr>,
}

/// Authorization settings for one route.
#[derive(Debug, Clone, Default)]
pub struct RouteAuth {
    /// `"METHOD /path"`, as plans name routes.
    pub name: String,
    pub key_required: bool,
    /// A query parameter that may carry the key (besides the `x-api-key` header).
    pub key_query: Option<String>,
    pub throttle: Option<Throttle>,
    /// The plan by identity that counts this route's principals (see
    /// [`Authorizer::authorize_principal`]).
    pub identity_plan: Option<String>,
}

/// A request's quota position after it was admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaStatus {
    pub limit: u64,
    pub remaining: u64,
    /// Epoch milliseconds when the period ends.
    pub reset_ms: i64,
}

/// An admitted request.
#[derive(Debug, Clone, Default)]
pub struct Admitted {
    pub key: Option<KeyRef>,
    pub quota: Option<QuotaStatus>,
}

/// A refused request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// 403: no usable key. The reason is for the log only.
    Forbidden(&'static str),
    /// 429 Too Many Requests; seconds until a token.
    Throttled {
        retry_after: u64,
        scope: &'static str,
    },
    /// 429 Limit Exceeded; seconds until the next period.
    QuotaExceeded { retry_after: u64 },
    /// The fleet store: this node's lease of the key's quota is spent and a new one is
    /// asked for; wait for it ([`Authorizer::lease_needs`]) and authorize again.
    NeedsLease,
    /// The fleet store could not be reached for a lease: 503, try again shortly.
    Unavailable { retry_after: u64 },
}

/// A lease of a key's quota a node asks the fleet for (see `fleet::leases`).
#[derive(Debug, Clone)]
pub struct LeaseNeed {
    pub hash: u64,
    /// The key's id (or a principal's `PLAN/PRINCIPAL`).
    pub id: Arc<str>,
    pub period_start: i64,
    pub period_end: i64,
    pub limit: u64,
    /// What the period counts before any lease: usage already recorded and the plan's
    /// offset (used when the period's lease item is created).
    pub base: u64,
    /// The last lease's size, and what the fleet had been granted then.
    pub last: u64,
    pub granted: u64,
    /// This node's recent admissions per second for the key.
    pub rate: f64,
}

/// Seconds from `now_ms` until a period ending at `end` (at least 1): a spent quota's
/// `Retry-After`.
fn until_period_end(end: i64, now_ms: i64) -> u64 {
    u64::try_from((end - now_ms + 999) / 1000)
        .unwrap_or(1)
        .max(1)
}

/// How long a key whose fleet quota is spent is not asked for again.
pub const LEASE_HOLD_MS: i64 = 1_000;

struct PlanLimits<C: Clock> {
    plan: UsagePlan,
    /// The routes (by index) the plan's keys may call; `None`: every route.
    grants: Option<std::collections::HashSet<usize>>,
    throttle: Option<Arc<Keyed<C>>>,
    /// By route index.
    route_throttles: HashMap<usize, Arc<Keyed<C>>>,
    /// The plan's throttles count by client address (`throttle_by` names `source_ip`): by
    /// key and address, or by address alone.
    by_ip: bool,
    by_key: bool,
    /// Checks of address-keyed throttles, for their sweeps.
    ip_checks: std::sync::atomic::AtomicU64,
}

impl<C: Clock + Send + Sync> PlanLimits<C>
where
    C::Instant: Send + Sync,
{
    /// Counts a check of a throttle whose buckets callers choose (by address or principal),
    /// and sweeps it every 65,536 checks, so a flood of new addresses between the periodic
    /// sweeps cannot grow it without bound.
    fn count_check(&self, l: &Keyed<C>) {
        let n = self
            .ip_checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n % (1 << 16) == (1 << 16) - 1 {
            l.sweep();
        }
    }
}

/// Keyed throttle state that a sweep thins out.
trait Sweep: Send + Sync {
    /// Forgets the buckets that are full again (a bucket is forgotten only once it has
    /// refilled: a key coming back finds the same bucket it would have had), and returns the
    /// memory.
    fn sweep(&self);
}

impl<C: Clock + Send + Sync> Sweep for Keyed<C>
where
    C::Instant: Send + Sync,
{
    fn sweep(&self) {
        self.retain_recent();
        self.shrink_to_fit();
    }
}

/// The request-path authorizer. `C` is governor's clock (a fake one in tests).
pub struct Authorizer<C: Clock = DefaultClock> {
    clock: C,
    plans: HashMap<String, PlanLimits<C>>,
    routes: Vec<(RouteAuth, Option<Arc<Direct<C>>>)>,
    account: Option<(Throttle, Arc<Direct<C>>)>,
    /// What outlives a reconfiguration (see [`Authorizer::reconfigured`]).
    state: Arc<State>,
}

/// The keys and the usage counts: one set however often the configuration is reloaded, so
/// a request still finishing on the old configuration counts where the new one looks.
struct State {
    snapshot: ArcSwap<Snapshot>,
    /// Hashes ids for the keyed throttles (random per process).
    ids: std::hash::RandomState,
    /// Quota counts and the requests not yet written to the store.
    counters: Mutex<counters::Counters>,
    /// Counts persisted before start-up: by key id, (UTC day number, count) in day order.
    persisted: HashMap<Box<str>, Box<[(i64, u64)]>>,
    /// Every keyed throttle of every configuration still alive, for the sweeps.
    keyed: Mutex<Vec<std::sync::Weak<dyn Sweep>>>,
    /// Quotas are admitted from leases of the fleet store's (see `fleet::leases`).
    leasing: std::sync::atomic::AtomicBool,
    /// Leases asked for and not yet taken by the lease task.
    needs: Mutex<Vec<LeaseNeed>>,
    /// The nodes sharing the throttles (1 alone): each request spends this many tokens of
    /// a throttle's bucket, so each node admits about rate / nodes.
    share: std::sync::atomic::AtomicU32,
}

/// Persisted counts by key, in day order, without the days' text.
fn by_key(counts: Vec<(String, String, u64)>) -> HashMap<Box<str>, Box<[(i64, u64)]>> {
    let mut by: HashMap<Box<str>, Vec<(i64, u64)>> = HashMap::new();
    for (key, day, n) in counts {
        let Some(ms) = plans::parse_day(&day) else {
            continue;
        };
        by.entry(key.into_boxed_str())
            .or_default()
            .push((ms.div_euclid(86_400_000), n));
    }
    by.into_iter()
        .map(|(k, mut days)| {
            days.sort_unstable();
            (k, days.into_boxed_slice())
        })
        .collect()
}

/// A governor bucket for a throttle; `None` if the numbers cannot make one.
pub fn bucket(t: Throttle) -> Option<Bucket> {
    if !(t.rate.is_finite() && t.rate > 0.0) {
        return None;
    }
    let period = Duration::try_from_secs_f64(1.0 / t.rate).ok()?;
    Some(Bucket::with_period(period)?.allow_burst(NonZeroU32::new(t.burst)?))
}

fn wait<P: governor::clock::Reference>(not_until: &governor::NotUntil<P>, now: P) -> u64 {
    retry_after_seconds(not_until.wait_time_from(now))
}

impl<C: Clock + Clone + Send + Sync + 'static> Authorizer<C>
where
    C::Instant: Send + Sync,
{
    /// Builds the authorizer. `persisted` are usage counts already in the store (at least
    /// those of the current periods).
    pub fn new(
        clock: C,
        plans: Vec<UsagePlan>,
        routes: Vec<RouteAuth>,
        account: Option<Throttle>,
        snapshot: Snapshot,
        persisted: Vec<(String, String, u64)>,
    ) -> Authorizer<C> {
        let state = Arc::new(State {
            snapshot: ArcSwap::from_pointee(snapshot),
            ids: std::hash::RandomState::new(),
            counters: Mutex::default(),
            persisted: by_key(persisted),
            keyed: Mutex::default(),
            leasing: std::sync::atomic::AtomicBool::new(false),
            needs: Mutex::default(),
            share: std::sync::atomic::AtomicU32::new(1),
        });
        Authorizer::build(clock, plans, routes, account, state, None)
    }

    /// An authorizer for a new configuration that shares this one's keys and usage counts,
    /// and keeps the buckets of every throttle the new configuration leaves as it was (a
    /// plan's, by plan name; a route's, by route name; the account's), so a reload neither
    /// refills nor forgets them.
    pub fn reconfigured(
        &self,
        plans: Vec<UsagePlan>,
        routes: Vec<RouteAuth>,
        account: Option<Throttle>,
    ) -> Authorizer<C> {
        Authorizer::build(
            self.clock.clone(),
            plans,
            routes,
            account,
            self.state.clone(),
            Some(self),
        )
    }

    /// An authorizer for another stage of the same configuration: the same keys, usage
    /// counts, plan and account throttles (a key's plan and the account span every stage,
    /// as on API Gateway), and route throttles of its own (a stage's are its own).
    pub fn for_stage(
        &self,
        plans: Vec<UsagePlan>,
        routes: Vec<RouteAuth>,
        account: Option<Throttle>,
    ) -> Authorizer<C> {
        let mut a = self.reconfigured(plans, routes, account);
        for (r, limiter) in &mut a.routes {
            *limiter = r
                .throttle
                .and_then(bucket)
                .map(|b| Arc::new(RateLimiter::direct_with_clock(b, a.clock.clone())));
        }
        a
    }

    fn build(
        clock: C,
        plans: Vec<UsagePlan>,
        routes: Vec<RouteAuth>,
        account: Option<Throttle>,
        state: Arc<State>,
        old: Option<&Authorizer<C>>,
    ) -> Authorizer<C> {
        let keyed = |t: Throttle| {
            let limiter = Arc::new(RateLimiter::dashmap_with_clock(bucket(t)?, clock.clone()));
            let weak: std::sync::Weak<dyn Sweep> = Arc::downgrade(&limiter) as _;
            state
                .keyed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(weak);
            Some(limiter)
        };
        let direct = |t: Throttle| {
            bucket(t).map(|b| Arc::new(RateLimiter::direct_with_clock(b, clock.clone())))
        };
        // The old routes by name, looked up once per new route.
        let old_routes: HashMap<&str, usize> = old
            .map(|o| {
                o.routes
                    .iter()
                    .enumerate()
                    .map(|(i, (r, _))| (r.name.as_str(), i))
                    .collect()
            })
            .unwrap_or_default();
        let new_routes: HashMap<&str, usize> = routes
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.as_str(), i))
            .collect();
        let o_route = |name: &str| {
            let i = *old_routes.get(name)?;
            Some((i, &old?.routes[i]))
        };
        let plans = plans
            .into_iter()
            .map(|p| {
                let was = old.and_then(|o| o.plans.get(&p.name));
                let route_throttles = p
                    .route_throttles
                    .iter()
                    .filter_map(|(name, t)| {
                        let i = *new_routes.get(name.as_str())?;
                        // Kept when the plan throttled this route the same way before.
                        let kept = was
                            .filter(|w| {
                                w.plan
                                    .route_throttles
                                    .iter()
                                    .any(|(n, was)| n == name && was == t)
                            })
                            .and_then(|w| w.route_throttles.get(&o_route(name)?.0).cloned());
                        Some((i, kept.or_else(|| keyed(*t))?))
                    })
                    .collect();
                let grants = p.routes.as_ref().map(|names| {
                    names
                        .iter()
                        .filter_map(|name| new_routes.get(name.as_str()).copied())
                        .collect()
                });
                let throttle = match was {
                    Some(w) if w.plan.throttle == p.throttle => w.throttle.clone(),
                    _ => p.throttle.and_then(keyed),
                };
                let limits = PlanLimits {
                    grants,
                    throttle,
                    route_throttles,
                    by_ip: p.throttle_by_ip,
                    by_key: p.throttle_by_key,
                    ip_checks: std::sync::atomic::AtomicU64::new(0),
                    plan: p,
                };
                (limits.plan.name.clone(), limits)
            })
            .collect();
        let routes = routes
            .into_iter()
            .map(|r| {
                let kept = o_route(&r.name)
                    .filter(|(_, (was, _))| was.throttle == r.throttle)
                    .and_then(|(_, (_, limiter))| limiter.clone());
                let limiter = kept.or_else(|| r.throttle.and_then(direct));
                (r, limiter)
            })
            .collect();
        let account = account.and_then(|t| match old.and_then(|o| o.account.as_ref()) {
            Some((was, limiter)) if *was == t => Some((t, limiter.clone())),
            _ => Some((t, direct(t)?)),
        });
        Authorizer {
            account,
            clock,
            plans,
            routes,
            state,
        }
    }

    /// The live nodes sharing the throttles (1 alone): the tokens a request spends of each
    /// throttle's bucket.
    pub fn nodes(&self) -> u32 {
        self.state.share.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A keyed throttle's check, spending the node's share; a share past the burst spends
    /// the whole burst.
    fn keyed_check(&self, l: &Keyed<C>, key: &u64) -> Result<(), governor::NotUntil<C::Instant>> {
        let share = self.nodes();
        if share <= 1 {
            return l.check_key(key);
        }
        let n = NonZeroU32::new(share).unwrap_or(NonZeroU32::MIN);
        match l.check_key_n(key, n) {
            Ok(r) => r,
            Err(governor::InsufficientCapacity(max)) => l
                .check_key_n(key, NonZeroU32::new(max).unwrap_or(NonZeroU32::MIN))
                .unwrap_or(Ok(())),
        }
    }

    fn direct_check(&self, l: &Direct<C>) -> Result<(), governor::NotUntil<C::Instant>> {
        let share = self.nodes();
        if share <= 1 {
            return l.check();
        }
        let n = NonZeroU32::new(share).unwrap_or(NonZeroU32::MIN);
        match l.check_n(n) {
            Ok(r) => r,
            Err(governor::InsufficientCapacity(max)) => l
                .check_n(NonZeroU32::new(max).unwrap_or(NonZeroU32::MIN))
                .unwrap_or(Ok(())),
        }
    }

    /// Sets how many nodes share the throttles (from the fleet's membership).
    pub fn set_share(&self, nodes: u32) {
        self.state
            .share
            .store(nodes.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// Admits quotas from leases of the fleet store's from now on.
    pub fn lease_quotas(&self) {
        self.state
            .leasing
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Replaces the keys (after the store changed).
    pub fn replace_snapshot(&self, snapshot: Snapshot) {
        self.state.snapshot.store(Arc::new(snapshot));
    }

    /// The keys as the request path now sees them.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.state.snapshot.load_full()
    }

    pub fn snapshot_len(&self) -> usize {
        self.state.snapshot.load().len()
    }

    pub fn route(&self, route: usize) -> Option<&RouteAuth> {
        self.routes.get(route).map(|(r, _)| r)
    }

    /// Decides whether a request to `route`, presenting `key`, may proceed at `now_ms`.
    pub fn authorize(
        &self,
        route: usize,
        key: Option<&str>,
        now_ms: i64,
    ) -> Result<Admitted, Denied> {
        self.authorize_caller(route, key, now_ms, Caller::default())
    }

    /// As [`Authorizer::authorize`], for a caller whose origin and address are known: a
    /// browser key is refused from other origins, and plans that throttle by address do.
    pub fn authorize_caller(
        &self,
        route: usize,
        key: Option<&str>,
        now_ms: i64,
        caller: Caller<'_>,
    ) -> Result<Admitted, Denied> {
        let Some((route_auth, route_limiter)) = self.routes.get(route) else {
            return Ok(Admitted::default());
        };
        let mut admitted = Admitted::default();
        let mut plan_quota: Option<(Quota, u64)> = None;
        if route_auth.key_required {
            let presented = key
                .filter(|k| !k.is_empty())
                .ok_or(Denied::Forbidden("no key"))?;
            if presented.len() > keys::MAX_KEY_LEN {
                return Err(Denied::Forbidden("key too long"));
            }
            let snapshot = self.state.snapshot.load();
            let entry = snapshot
                .lookup(presented, now_ms)
                .map_err(Denied::Forbidden)?;
            let Some(plan) = self.plans.get(entry.plan()) else {
                return Err(Denied::Forbidden("key's usage plan is not configured"));
            };
            if plan.grants.as_ref().is_some_and(|g| !g.contains(&route)) {
                return Err(Denied::Forbidden(
                    "key's usage plan does not grant this route",
                ));
            }
            let origins = entry.origins();
            if !origins.is_empty() {
                match caller.origin {
                    Some(o) if origins.iter().any(|a| a.eq_ignore_ascii_case(o)) => {}
                    Some(_) => return Err(Denied::Forbidden("key is bound to other origins")),
                    None if entry.allow_no_origin() => {}
                    None => {
                        return Err(Denied::Forbidden(
                            "key is bound to origins and the request sent no Origin",
                        ));
                    }
                }
            }
            let key_hash = self.state.ids.hash_one(entry.id());
            let limiter = plan.route_throttles.get(&route).or(plan.throttle.as_ref());
            if let Some(l) = limiter {
                let checked = match (plan.by_ip, caller.ip) {
                    (true, Some(ip)) => {
                        plan.count_check(l);
                        let ip = plans::address_bucket(ip);
                        let bucket = if plan.by_key {
                            self.state.ids.hash_one((entry.id(), ip))
                        } else {
                            self.state.ids.hash_one(ip)
                        };
                        self.keyed_check(l, &bucket)
                    }
                    _ => self.keyed_check(l, &key_hash),
                };
                if let Err(nu) = checked {
                    return Err(Denied::Throttled {
                        retry_after: wait(&nu, self.clock.now()),
                        scope: "usage plan",
                    });
                }
            }
            plan_quota = plan.plan.quota.map(|q| (q, key_hash));
            admitted.key = Some(entry);
        }
        if let Some(l) = route_limiter
            && let Err(nu) = self.direct_check(l)
        {
            return Err(Denied::Throttled {
                retry_after: wait(&nu, self.clock.now()),
                scope: "route",
            });
        }
        if let (Some((q, key_hash)), Some(key)) = (plan_quota, &admitted.key) {
            admitted.quota =
                Some(self.take_quota(key_hash, key.id(), key.created_at(), q, now_ms)?);
        }
        Ok(admitted)
    }

    /// What the route's plan by identity counts by, if it has one.
    pub fn identity_plan(&self, route: usize) -> Option<&plans::PlanIdentity> {
        let (r, _) = self.routes.get(route)?;
        self.plans
            .get(r.identity_plan.as_ref()?)?
            .plan
            .identity
            .as_ref()
    }

    /// The route's plan by identity, for a principal an authorizer admitted (its `sub`, a
    /// claim, or a Lambda authorizer's context value, as the plan says): the plan's
    /// throttle and quota count per principal, under the id `PLAN/PRINCIPAL` (which
    /// `usage` reports). `Ok(None)`: the route has no such plan.
    pub fn authorize_principal(
        &self,
        route: usize,
        principal: Option<&str>,
        now_ms: i64,
    ) -> Result<Option<QuotaStatus>, Denied> {
        let Some(plan_name) = self
            .routes
            .get(route)
            .and_then(|(r, _)| r.identity_plan.as_ref())
        else {
            return Ok(None);
        };
        let Some(plan) = self.plans.get(plan_name) else {
            return Ok(None);
        };
        let principal = principal
            .filter(|p| !p.is_empty())
            .ok_or(Denied::Forbidden("no identity for the route's usage plan"))?;
        if principal.len() > plans::MAX_IDENTITY_LEN {
            return Err(Denied::Forbidden("identity too long for the usage plan"));
        }
        let id = format!("{plan_name}/{principal}");
        let hash = self.state.ids.hash_one(&id);
        let limiter = plan.route_throttles.get(&route).or(plan.throttle.as_ref());
        if let Some(l) = limiter {
            plan.count_check(l);
            if let Err(nu) = self.keyed_check(l, &hash) {
                return Err(Denied::Throttled {
                    retry_after: wait(&nu, self.clock.now()),
                    scope: "usage plan",
                });
            }
        }
        match plan.plan.quota {
            Some(q) => self.take_quota(hash, &id, i64::MIN, q, now_ms).map(Some),
            None => Ok(None),
        }
    }

    /// The gateway-wide throttle, taken by a request about to call its upstream: requests
    /// refused before (no key, a bad body, no template) do not spend it, so junk cannot starve
    /// the requests that are admitted.
    pub fn admit_to_upstream(&self) -> Result<(), Denied> {
        if let Some((_, l)) = &self.account
            && let Err(nu) = self.direct_check(l)
        {
            return Err(Denied::Throttled {
                retry_after: wait(&nu, self.clock.now()),
                scope: "account",
            });
        }
        Ok(())
    }

    /// Counts one request against a key's quota, or refuses it when the quota is spent.
    /// Allocation-free once a key has been seen.
    /// `id` is a key's id (or a principal's `PLAN/PRINCIPAL`), `created_at` when it was
    /// issued (the plan's offset counts in that period).
    fn take_quota(
        &self,
        hash: u64,
        id: &str,
        created_at: i64,
        q: Quota,
        now_ms: i64,
    ) -> Result<QuotaStatus, Denied> {
        let (start, end) = q.period.bounds(now_ms);
        let mut counters = self
            .state
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let slot = counters.slot(hash, id);
        let counter = counters.at(slot);
        if counter.period_start != start {
            counter.period_start = start;
            counter.period_end = end;
            counter.lease = counters::Lease::default();
            counter.used = self.counted_before(id, start, end, created_at, q);
        }
        if self
            .state
            .leasing
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return self.take_leased(&mut counters, slot, q, created_at, now_ms);
        }
        if counter.used >= q.limit {
            return Err(Denied::QuotaExceeded {
                retry_after: until_period_end(end, now_ms),
            });
        }
        counter.used += 1;
        let used = counter.used;
        counters.count(slot, now_ms.div_euclid(86_400_000));
        Ok(QuotaStatus {
            limit: q.limit,
            remaining: q.limit - used,
            reset_ms: end,
        })
    }

    /// [`Authorizer::take_quota`] with the fleet store: one unit of the node's lease, or a
    /// lease asked for (the request waits for it), or, when the fleet has none left,
    /// refused as API Gateway refuses a spent quota.
    fn take_leased(
        &self,
        counters: &mut counters::Counters,
        slot: u32,
        q: Quota,
        created_at: i64,
        now_ms: i64,
    ) -> Result<QuotaStatus, Denied> {
        let c = counters.at(slot);
        if c.lease.left == 0 {
            if now_ms < c.lease.hold_until {
                return Err(if c.lease.unavailable {
                    Denied::Unavailable { retry_after: 1 }
                } else {
                    Denied::QuotaExceeded {
                        retry_after: until_period_end(c.period_end, now_ms),
                    }
                });
            }
            self.ask(c, q, created_at, now_ms);
            return Err(Denied::NeedsLease);
        }
        c.lease.left -= 1;
        c.lease.since += 1;
        c.lease.used_at = now_ms;
        c.used += 1;
        // Below half of the last lease: the next one is asked for before this one is spent.
        if c.lease.left * 2 < c.lease.last {
            self.ask(c, q, created_at, now_ms);
        }
        let remaining = q
            .limit
            .saturating_sub(c.lease.granted)
            .saturating_add(c.lease.left)
            .min(q.limit);
        let end = c.period_end;
        counters.count(slot, now_ms.div_euclid(86_400_000));
        Ok(QuotaStatus {
            limit: q.limit,
            remaining,
            reset_ms: end,
        })
    }

    /// Asks for a lease for the counter, unless one is asked for already.
    fn ask(&self, c: &mut counters::QuotaCounter, q: Quota, created_at: i64, now_ms: i64) {
        if c.lease.asked {
            return;
        }
        c.lease.asked = true;
        let need = self.need(c, q, created_at, now_ms);
        self.state
            .needs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(need);
    }

    fn need(
        &self,
        c: &counters::QuotaCounter,
        q: Quota,
        created_at: i64,
        now_ms: i64,
    ) -> LeaseNeed {
        let (start, end) = (c.period_start, c.period_end);
        let elapsed = (now_ms - c.lease.at).max(1);
        LeaseNeed {
            hash: c.hash,
            id: c.id.clone(),
            period_start: start,
            period_end: end,
            limit: q.limit,
            base: self.counted_before(&c.id, start, end, created_at, q),
            last: c.lease.last,
            granted: c.lease.granted,
            rate: if c.lease.at == 0 {
                0.0
            } else {
                c.lease.since as f64 * 1000.0 / elapsed as f64
            },
        }
    }

    /// The leases asked for since the last call (the lease task takes them).
    pub fn lease_needs(&self) -> Vec<LeaseNeed> {
        std::mem::take(&mut *self.state.needs.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether leases are waiting to be taken.
    pub fn leases_wanted(&self) -> bool {
        !self
            .state
            .needs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// The fleet granted `n` units of `need` (0: none left), leaving `granted` granted in
    /// all; or, `granted` `None`, the store could not be reached.
    pub fn lease_taken(&self, need: &LeaseNeed, n: u64, granted: Option<u64>, now_ms: i64) {
        let mut counters = self
            .state
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let Some(c) = counters.find(need.hash, &need.id) else {
            return;
        };
        if c.period_start != need.period_start {
            return;
        }
        let l = &mut c.lease;
        l.asked = false;
        match granted {
            None => {
                l.hold_until = now_ms + LEASE_HOLD_MS;
                l.unavailable = true;
            }
            Some(total) => {
                l.left += n;
                l.granted = total;
                l.since = 0;
                l.at = now_ms;
                l.unavailable = false;
                if n == 0 {
                    l.hold_until = now_ms + LEASE_HOLD_MS;
                } else {
                    l.last = n;
                }
            }
        }
    }

    /// Takes back the unspent leases of the current periods, of every key (`idle_ms`
    /// `None`: at shutdown) or of keys with no admission for `idle_ms`, as (key id, period
    /// start, units), to give them back to the fleet.
    pub fn take_leases(&self, now_ms: i64, idle_ms: Option<i64>) -> Vec<(Arc<str>, i64, u64)> {
        let mut counters = self
            .state
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for c in counters.all() {
            let idle = idle_ms.is_none_or(|ms| now_ms - c.lease.used_at > ms);
            if c.lease.left > 0 && c.period_end > now_ms && idle {
                out.push((c.id.clone(), c.period_start, c.lease.left));
                c.lease.granted = c.lease.granted.saturating_sub(c.lease.left);
                c.lease.left = 0;
                c.lease.last = 0;
            }
        }
        out
    }

    /// What a period counts before its first request here: the counts persisted for its
    /// days, and the plan's offset when the key was created in it.
    fn counted_before(&self, id: &str, start: i64, end: i64, created_at: i64, q: Quota) -> u64 {
        self.persisted_between(id, start, end)
            + if (start..end).contains(&created_at) {
                q.offset
            } else {
                0
            }
    }

    fn persisted_between(&self, key: &str, start: i64, end: i64) -> u64 {
        let Some(days) = self.state.persisted.get(key) else {
            return 0;
        };
        let (first, last) = (
            start.div_euclid(86_400_000),
            (end - 1).div_euclid(86_400_000),
        );
        days.iter()
            .filter(|(d, _)| (first..=last).contains(d))
            .map(|(_, n)| n)
            .sum()
    }

    /// Forgets state no request needs: throttle buckets that refilled, and quota counters
    /// whose period ended (their counts are in the store, or pending for it). Run every
    /// minute or so (see `sync::run`), so a million keys used once each do not stay in
    /// memory.
    pub fn sweep(&self, now_ms: i64) {
        let live: Vec<Arc<dyn Sweep>> = {
            let mut keyed = self.state.keyed.lock().unwrap_or_else(|p| p.into_inner());
            keyed.retain(|w| w.strong_count() > 0);
            keyed.iter().filter_map(std::sync::Weak::upgrade).collect()
        };
        for l in live {
            l.sweep();
        }
        let mut counters = self
            .state
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        counters.sweep(now_ms);
    }

    /// Quota counters held (for tests and the memory figures).
    pub fn counters_held(&self) -> usize {
        self.state
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Takes the counts not yet written to the store, as (key id, `YYYY-MM-DD`, count).
    pub fn take_pending(&self) -> Vec<(Arc<str>, String, u64)> {
        let taken = self
            .state
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        taken
            .into_iter()
            .map(|(k, d, n)| (k, day_label(d * 86_400_000), n))
            .collect()
    }

    /// Puts counts back after a failed write, so none are lost.
    pub fn restore_pending(&self, counts: Vec<(Arc<str>, String, u64)>) {
        let back = counts.into_iter().map(|(k, d, n)| {
            let day = plans::parse_day(&d).unwrap_or(0).div_euclid(86_400_000);
            (k, day, n)
        });
        self.state
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .restore(back);
    }
}

#[cfg(test)]
mod tests;
