//! Deployment: how a compiled policy goes onto an interface that may
//! already run one, and how a running one is changed. The decisions are
//! data in, data out (unit-tested without root); the kernel work is
//! `crate::install`'s.
//!
//! - [`roles`]: which role each map plays (state, classifier contents,
//!   DIR-24 arrays, conntrack, counters) — the one place that asks.
//! - [`decide`]: in place or a load and replace; which state maps a
//!   replace keeps.
//! - [`carry`]: counters carried into the new policy by rule identity.
//! - [`tables`]: run-time table edits on the running maps (fast paths,
//!   DIR-24 slots included).

pub mod carry;
pub mod decide;
pub mod roles;
pub mod tables;
