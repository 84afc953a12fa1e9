//! Connection limits: how many connections are open at once, in all and per client
//! address. A connection past either is closed as soon as it is accepted (before anything
//! is read or allocated for it) and counted; so a client holding idle connections cannot
//! use up the process's file descriptors and stop it accepting everyone else.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;

use crate::telemetry;

/// The limits of one listener and what is open against them.
#[derive(Debug)]
pub struct ConnectionLimits {
    max: usize,
    per_ip: usize,
    open: AtomicUsize,
    by_ip: DashMap<IpAddr, usize>,
    listener: &'static str,
}

/// Why a connection was closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The listener has `max` connections open.
    Total,
    /// The client's address has `per_ip` open.
    PerAddress,
}

impl Refused {
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Total => "total",
            Refused::PerAddress => "per_address",
        }
    }
}

impl ConnectionLimits {
    pub fn new(listener: &'static str, max: usize, per_ip: usize) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits {
            max: max.max(1),
            per_ip: per_ip.max(1),
            open: AtomicUsize::new(0),
            by_ip: DashMap::new(),
            listener,
        })
    }

    /// Admits a new connection from `ip`, or says why not. The guard gives the place back.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Refused> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            telemetry::connection_refused(self.listener, Refused::Total.as_str());
            return Err(Refused::Total);
        }
        {
            let mut n = self.by_ip.entry(ip).or_insert(0);
            if *n >= self.per_ip {
                drop(n);
                self.open.fetch_sub(1, Ordering::AcqRel);
                telemetry::connection_refused(self.listener, Refused::PerAddress.as_str());
                return Err(Refused::PerAddress);
            }
            *n += 1;
        }
        telemetry::connections_open(self.listener, self.open.load(Ordering::Acquire));
        Ok(Admitted {
            limits: self.clone(),
            ip,
        })
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// An open connection's place; dropping it (the connection ended) frees it.
#[derive(Debug)]
pub struct Admitted {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let l = &self.limits;
        l.by_ip.remove_if_mut(&self.ip, |_, n| {
            *n -= 1;
            *n == 0
        });
        let open = l.open.fetch_sub(1, Ordering::AcqRel) - 1;
        telemetry::connections_open(l.listener, open);
    }
}

/// Raises the soft limit on open files as far as the hard limit allows; returns the soft
/// limit in force (or `None` where the platform has none).
pub fn raise_file_limit() -> Option<u64> {
    rlimit::increase_nofile_limit(u64::MAX).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_counted_in_all_and_per_address() {
        let limits = ConnectionLimits::new("test", 3, 2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let a1 = limits.admit(a).unwrap();
        let _a2 = limits.admit(a).unwrap();
        assert_eq!(limits.admit(a).unwrap_err(), Refused::PerAddress);
        let _b1 = limits.admit(b).unwrap();
        assert_eq!(limits.admit(b).unwrap_err(), Refused::Total);
        assert_eq!(limits.open(), 3);
        drop(a1);
        assert_eq!(limits.open(), 2);
        let _a3 = limits.admit(a).unwrap();
        assert_eq!(limits.by_ip.len(), 2);
    }
}
