//! Quota counters: per key (or principal) the count of its current period and the requests
//! not yet written to the store, in one record found by one probe.
//!
//! Counters live in a slab indexed by a hash table of slot numbers, keyed by the same
//! per-process hash of the id the keyed throttles use (computed once per request), with the
//! id kept beside the counts to tell hash collisions apart. A counter that gains unflushed
//! counts is listed once in `dirty`, so a flush visits only the counters used since the last
//! one, not every counter held, and nothing is allocated per request or per flush for a key
//! already seen. Counts of a day other than a counter's current one (a period that rolled
//! over before its flush, counts put back after a failed write) wait in `spill`, which is
//! empty in the steady state.

use std::collections::HashMap;
use std::sync::Arc;

use hashbrown::HashTable;

/// One key's quota state.
pub(super) struct QuotaCounter {
    pub(super) hash: u64,
    pub(super) id: Arc<str>,
    pub(super) period_start: i64,
    /// When the period ends: then the counter holds nothing the next period needs (it
    /// starts from the store's counts of its own days), and a sweep may drop it.
    pub(super) period_end: i64,
    pub(super) used: u64,
    /// The UTC day (days since the epoch) of `unflushed`.
    day: i64,
    /// Requests counted on `day` and not yet written to the store.
    unflushed: u64,
    /// With the fleet store: the quota leased to this node for the period and not yet
    /// spent, and what a lease call last said of the fleet.
    pub(super) lease: Lease,
}

/// A counter's lease of its quota (the fleet store; see `fleet::leases`).
#[derive(Default, Clone, Copy)]
pub(super) struct Lease {
    /// Units this node may still admit.
    pub(super) left: u64,
    /// The size of the last lease taken (a new one is asked for below half of it).
    pub(super) last: u64,
    /// Units the fleet had been granted after the last lease call.
    pub(super) granted: u64,
    /// A lease call for it is queued or running.
    pub(super) asked: bool,
    /// The fleet has none left, or the store could not be reached: no call before this
    /// (epoch ms); `unavailable` tells which.
    pub(super) hold_until: i64,
    pub(super) unavailable: bool,
    /// Admitted since the last lease call, and when that was (the rate the next lease is
    /// sized by).
    pub(super) since: u64,
    pub(super) at: i64,
    /// The last admission (an idle lease goes back to the fleet).
    pub(super) used_at: i64,
}

#[derive(Default)]
pub(super) struct Counters {
    index: HashTable<u32>,
    slots: Vec<QuotaCounter>,
    /// Slots with unflushed counts, each once.
    dirty: Vec<u32>,
    /// Counts not on their counter's current day, by id and day.
    spill: HashMap<Arc<str>, HashMap<i64, u64>>,
}

/// Adds `n` counts of `id` on `day` to those waiting beside their counters.
fn spill(spill: &mut HashMap<Arc<str>, HashMap<i64, u64>>, id: Arc<str>, day: i64, n: u64) {
    *spill.entry(id).or_default().entry(day).or_insert(0) += n;
}

impl Counters {
    /// The slot of the counter for `id` (hashed to `hash`), created empty (its period
    /// unset) if new.
    pub(super) fn slot(&mut self, hash: u64, id: &str) -> u32 {
        let slots = &self.slots;
        let found = self
            .index
            .find(hash, |&i| {
                let c = &slots[i as usize];
                c.hash == hash && *c.id == *id
            })
            .copied();
        if let Some(i) = found {
            return i;
        }
        let i = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        self.slots.push(QuotaCounter {
            hash,
            id: Arc::from(id),
            period_start: i64::MIN,
            period_end: i64::MIN,
            used: 0,
            day: 0,
            unflushed: 0,
            lease: Lease::default(),
        });
        let slots = &self.slots;
        self.index
            .insert_unique(hash, i, |&j| slots[j as usize].hash);
        i
    }

    /// The counter in slot `i` (from [`Counters::slot`], with no sweep since).
    pub(super) fn at(&mut self, i: u32) -> &mut QuotaCounter {
        &mut self.slots[i as usize]
    }

    /// Counts one request for the store on `day` (days since the epoch) against the
    /// counter in slot `i`.
    pub(super) fn count(&mut self, i: u32, day: i64) {
        let c = &mut self.slots[i as usize];
        if c.unflushed > 0 && c.day != day {
            spill(&mut self.spill, c.id.clone(), c.day, c.unflushed);
            c.unflushed = 0;
        }
        if c.unflushed == 0 {
            self.dirty.push(i);
        }
        c.day = day;
        c.unflushed += 1;
    }

    /// Takes the unflushed counts, as (id, day, count).
    pub(super) fn take(&mut self) -> Vec<(Arc<str>, i64, u64)> {
        let mut out = Vec::with_capacity(self.dirty.len());
        for i in std::mem::take(&mut self.dirty) {
            let c = &mut self.slots[i as usize];
            if c.unflushed > 0 {
                out.push((c.id.clone(), c.day, c.unflushed));
                c.unflushed = 0;
            }
        }
        for (id, days) in self.spill.drain() {
            out.extend(days.into_iter().map(|(d, n)| (id.clone(), d, n)));
        }
        out
    }

    /// Puts counts back (after a failed write), so none are lost.
    pub(super) fn restore(&mut self, counts: impl IntoIterator<Item = (Arc<str>, i64, u64)>) {
        for (id, day, n) in counts {
            spill(&mut self.spill, id, day, n);
        }
    }

    /// Drops the counters whose period ended before `now_ms` (what they hold unflushed
    /// waits in `spill`), and returns their memory.
    pub(super) fn sweep(&mut self, now_ms: i64) {
        let before = self.slots.len();
        let spilled = &mut self.spill;
        self.slots.retain(|c| {
            if c.period_end > now_ms {
                return true;
            }
            if c.unflushed > 0 {
                spill(spilled, c.id.clone(), c.day, c.unflushed);
            }
            false
        });
        if self.slots.len() == before {
            return;
        }
        self.slots.shrink_to_fit();
        self.index = HashTable::with_capacity(self.slots.len());
        self.dirty.clear();
        for (i, c) in self.slots.iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            let slots = &self.slots;
            self.index
                .insert_unique(c.hash, i, |&j| slots[j as usize].hash);
            if c.unflushed > 0 {
                self.dirty.push(i);
            }
        }
    }

    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Every counter, for the lease upkeep.
    pub(super) fn all(&mut self) -> impl Iterator<Item = &mut QuotaCounter> {
        self.slots.iter_mut()
    }

    /// The counter for `id`, if there is one.
    pub(super) fn find(&mut self, hash: u64, id: &str) -> Option<&mut QuotaCounter> {
        let slots = &self.slots;
        let i = *self.index.find(hash, |&i| {
            let c = &slots[i as usize];
            c.hash == hash && *c.id == *id
        })?;
        Some(&mut self.slots[i as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counts taken, in order.
    fn taken(c: &mut Counters) -> Vec<(String, i64, u64)> {
        let mut t: Vec<_> = c
            .take()
            .into_iter()
            .map(|(i, d, n)| (i.to_string(), d, n))
            .collect();
        t.sort();
        t
    }

    #[test]
    fn counts_are_taken_once_and_survive_a_day_change_and_a_sweep() {
        let mut c = Counters::default();
        for (id, h) in [("a", 1), ("b", 2), ("a", 1)] {
            let i = c.slot(h, id);
            c.at(i).period_end = 100;
            c.count(i, 7);
        }
        // A hash collision is a different counter.
        let z = c.slot(1, "z");
        c.at(z).period_end = 100;
        c.count(z, 7);
        assert_eq!(c.len(), 3);
        assert_eq!(
            taken(&mut c),
            [("a".into(), 7, 2), ("b".into(), 7, 1), ("z".into(), 7, 1)]
        );
        assert!(c.take().is_empty());
        // A day change with counts unflushed keeps both days.
        let b = c.slot(2, "b");
        c.count(b, 7);
        c.count(b, 8);
        c.restore([(Arc::from("b"), 7, 5)]);
        // Ended periods are swept; their unflushed counts stay.
        c.at(b).period_end = 300;
        c.sweep(200);
        assert_eq!(c.len(), 1);
        assert_eq!(taken(&mut c), [("b".into(), 7, 6), ("b".into(), 8, 1)]);
        let b = c.slot(2, "b");
        c.count(b, 8);
        c.sweep(300);
        assert_eq!(c.len(), 0);
        assert_eq!(taken(&mut c), [("b".into(), 8, 1)]);
        let b = c.slot(2, "b");
        assert_eq!(c.at(b).used, 0);
    }
}
