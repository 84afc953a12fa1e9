//! The pre-authentication throttle by client address (`server.ip_throttle`): a public page's
//! key is in every visitor's hands, so it cannot be what stops one visitor from flooding.
//! IPv6 clients are counted by their /64 (one subscriber's prefix), so rotating addresses
//! within it does not multiply the allowance.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::RateLimiter;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DashMapStateStore;

use crate::auth::plans::{Throttle, retry_after_seconds};

/// Checks between sweeps of addresses whose buckets are full again (forgotten, so the table
/// holds only recent clients).
const SWEEP_EVERY: u64 = 1 << 16;

/// A keyed throttle by client address.
pub struct IpThrottle {
    limiter: RateLimiter<IpAddr, DashMapStateStore<IpAddr>, DefaultClock>,
    clock: DefaultClock,
    checks: AtomicU64,
}

impl IpThrottle {
    pub fn new(t: Throttle) -> Option<IpThrottle> {
        let quota = crate::auth::bucket(t)?;
        Some(IpThrottle {
            limiter: RateLimiter::dashmap(quota),
            clock: DefaultClock::default(),
            checks: AtomicU64::new(0),
        })
    }

    /// `Err(seconds to wait)` when `ip` is over its rate.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        self.limiter
            .check_key(&bucket_key(ip))
            .map_err(|not_until| retry_after_seconds(not_until.wait_time_from(self.clock.now())))
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.limiter.len()
    }
}

/// The address a client is counted under: IPv4 as is, IPv6 by its /64.
pub use crate::auth::plans::address_bucket as bucket_key;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_has_its_own_burst() {
        let t = IpThrottle::new(Throttle {
            rate: 1.0,
            burst: 2,
        })
        .unwrap();
        let a: IpAddr = "198.51.100.1".parse().unwrap();
        let b: IpAddr = "198.51.100.2".parse().unwrap();
        assert!(t.check(a).is_ok());
        assert!(t.check(a).is_ok());
        assert!(t.check(a).unwrap_err() >= 1);
        assert!(t.check(b).is_ok());
    }

    #[test]
    fn ipv6_addresses_in_one_64_share_a_bucket() {
        let t = IpThrottle::new(Throttle {
            rate: 1.0,
            burst: 1,
        })
        .unwrap();
        assert!(t.check("2001:db8:1:2::1".parse().unwrap()).is_ok());
        assert!(t.check("2001:db8:1:2:ffff::9".parse().unwrap()).is_err());
        assert!(t.check("2001:db8:1:3::1".parse().unwrap()).is_ok());
        assert_eq!(t.tracked(), 2);
    }
}
