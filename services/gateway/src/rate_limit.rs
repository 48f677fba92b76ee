//! Per-caller rate limits, so one misbehaving service cannot starve the others.

use std::collections::BTreeMap;
use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use qupia_transport::ServiceIdentity;

use crate::config::RateLimit;

/// One keyed limiter for the default quota, one limiter per overridden caller.
#[derive(Debug)]
pub struct CallerLimits {
    default: DefaultKeyedRateLimiter<ServiceIdentity>,
    overrides: BTreeMap<ServiceIdentity, governor::DefaultDirectRateLimiter>,
}

fn quota(limit: RateLimit) -> Quota {
    let rate = NonZeroU32::new(limit.per_second.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(limit.burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(burst)
}

impl CallerLimits {
    pub fn new(default: RateLimit, overrides: &BTreeMap<ServiceIdentity, RateLimit>) -> CallerLimits {
        CallerLimits {
            default: RateLimiter::keyed(quota(default)),
            overrides: overrides
                .iter()
                .map(|(caller, limit)| (caller.clone(), RateLimiter::direct(quota(*limit))))
                .collect(),
        }
    }

    /// Whether `caller` may make `cost` more requests now (a batch costs one per item).
    pub fn admit(&self, caller: &ServiceIdentity, cost: u32) -> bool {
        let cost = NonZeroU32::new(cost.max(1)).unwrap_or(NonZeroU32::MIN);
        let outcome = match self.overrides.get(caller) {
            Some(limiter) => limiter.check_n(cost),
            None => self.default.check_key_n(caller, cost),
        };
        matches!(outcome, Ok(Ok(())))
    }
}
