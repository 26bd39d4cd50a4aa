//! Token buckets of the rate-limit phase (LANGUAGE.md §3, phase 4).
//!
//! Each rate-limited rule (`limit`, or `allow ... rate`) has its own table
//! of buckets, an [`Lru`] of `ratelimit_size` keys; the key is the packet's
//! source address (`per src`), destination address (`per dst`), its
//! directional 5-tuple (`per flow`; ports 0 for protocols without ports) or
//! nothing (`global`).
//!
//! A bucket holds at most `burst` tokens and gains one every `interval_ns`;
//! a new bucket starts full. The credit is kept in nanoseconds (tokens ×
//! `interval_ns`, fractions included) like the data path does, so refill
//! is "add the elapsed time, clamp at burst × interval".

use std::net::IpAddr;

use super::lru::Lru;
use crate::frame::IpPacket;
use crate::typed::{Rate, RateKey};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BucketKey {
    Src(IpAddr),
    Dst(IpAddr),
    Flow {
        proto: u8,
        src: IpAddr,
        dst: IpAddr,
        src_port: u16,
        dst_port: u16,
    },
    Global,
}

impl BucketKey {
    pub fn of(key: RateKey, packet: &IpPacket) -> BucketKey {
        match key {
            RateKey::Src => BucketKey::Src(packet.src),
            RateKey::Dst => BucketKey::Dst(packet.dst),
            RateKey::Flow => {
                let (src_port, dst_port) = packet.ports().unwrap_or((0, 0));
                BucketKey::Flow {
                    proto: packet.proto,
                    src: packet.src,
                    dst: packet.dst,
                    src_port,
                    dst_port,
                }
            }
            RateKey::Global => BucketKey::Global,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Bucket {
    credit_ns: u128,
    last_ns: u64,
}

/// The buckets of one rate-limited rule.
#[derive(Clone, Debug)]
pub struct Buckets {
    rate: Rate,
    buckets: Lru<BucketKey, Bucket>,
}

/// The result of taking a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Take {
    /// A token was taken; this many whole tokens are left.
    Taken { tokens_left: u64 },
    /// Less than one token: the packet is dropped.
    Empty,
}

impl Buckets {
    pub fn new(rate: Rate, capacity: u32) -> Self {
        Buckets {
            rate,
            buckets: Lru::new(capacity as usize),
        }
    }

    /// Takes one token from `key`'s bucket at time `now_ns`.
    pub fn take(&mut self, key: BucketKey, now_ns: u64) -> Take {
        let cost = u128::from(self.rate.interval_ns.max(1));
        let full = u128::from(self.rate.burst) * cost;
        let mut bucket = match self.buckets.get_mut(&key) {
            Some(bucket) => *bucket,
            None => Bucket {
                credit_ns: full,
                last_ns: now_ns,
            },
        };
        let elapsed = now_ns.saturating_sub(bucket.last_ns);
        bucket.credit_ns = (bucket.credit_ns + u128::from(elapsed)).min(full);
        bucket.last_ns = now_ns.max(bucket.last_ns);
        let result = if bucket.credit_ns >= cost {
            bucket.credit_ns -= cost;
            let tokens_left = u64::try_from(bucket.credit_ns / cost).unwrap_or(u64::MAX);
            Take::Taken { tokens_left }
        } else {
            Take::Empty
        };
        match self.buckets.get_mut(&key) {
            Some(stored) => *stored = bucket,
            None => self.buckets.insert(key, bucket),
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::typed::NS_PER_SEC;

    fn per_second(count: u64, burst: u64) -> Buckets {
        let rate = Rate {
            count,
            unit_ns: NS_PER_SEC,
            interval_ns: NS_PER_SEC / count,
            burst,
            key: RateKey::Global,
        };
        Buckets::new(rate, 16)
    }

    #[test]
    fn burst_then_refill_one_token_per_interval() {
        let mut b = per_second(10, 3);
        let k = BucketKey::Global;
        assert_eq!(b.take(k, 0), Take::Taken { tokens_left: 2 });
        assert_eq!(b.take(k, 0), Take::Taken { tokens_left: 1 });
        assert_eq!(b.take(k, 0), Take::Taken { tokens_left: 0 });
        assert_eq!(b.take(k, 0), Take::Empty);
        // 99 ms later: still less than one token (100 ms each).
        assert_eq!(b.take(k, 99_000_000), Take::Empty);
        assert_eq!(b.take(k, 100_000_000), Take::Taken { tokens_left: 0 });
        // A long pause refills at most `burst` tokens.
        assert_eq!(b.take(k, 100 * NS_PER_SEC), Take::Taken { tokens_left: 2 });
    }

    #[test]
    fn keys_have_separate_buckets() {
        let mut b = per_second(1, 1);
        let a = BucketKey::Src("192.0.2.1".parse().unwrap());
        let c = BucketKey::Src("192.0.2.2".parse().unwrap());
        assert_eq!(b.take(a, 0), Take::Taken { tokens_left: 0 });
        assert_eq!(b.take(a, 0), Take::Empty);
        assert_eq!(b.take(c, 0), Take::Taken { tokens_left: 0 });
    }
}
