//! Batching: the policy (what fits, when to flush, how to back off) in [`policy`], pure and
//! unit-tested.

pub mod policy;
