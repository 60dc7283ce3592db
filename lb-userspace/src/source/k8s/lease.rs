//! Leader election with `coordination.k8s.io/v1` Leases, one [`Elector`]
//! per Lease: the VIP allocator's (`xlb-vip-allocator`, one holder in the
//! cluster allocates pool addresses and writes Services' status) and the L2
//! announcers' (`xlb-l2-<VIP>`, see [`crate::announce::lease`]).
//!
//! The rules are client-go's leader election:
//! - a holder renews every [`Timing::renew_every`]; with a
//!   [`Timing::renew_deadline`] it believes it holds the Lease only while
//!   its last successful renewal is younger than that (shorter than the
//!   duration, so a holder cut off from the API server stops acting before
//!   anyone else may start: the allocator, which must never have two).
//!   Without one it holds the Lease until the API server says otherwise
//!   (another holder, a conflict): the L2 announcer, for which a VIP
//!   announced twice for a while beats a VIP nobody announces while the API
//!   server is unreachable for every node;
//! - another candidate takes the Lease over when it is free (no holder: it
//!   was released) or when the candidate has seen the same record, unchanged,
//!   for the Lease's `leaseDurationSeconds` — time measured on the
//!   candidate's own clock from when it first saw that record, so clock skew
//!   between nodes does not matter;
//! - release writes an empty holder with `leaseDurationSeconds: 1` (what
//!   client-go's `ReleaseOnCancel` writes), so the others take it at once;
//! - every write carries the resourceVersion read, so two candidates racing
//!   for a Lease cannot both win (the loser gets 409 Conflict).
use std::time::{Duration, Instant};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{api::PostParams, Api};

/// Name of the allocator's Lease.
pub const LEASE_NAME: &str = "xlb-vip-allocator";
/// How often the allocator's holder renews and the others retry.
pub const RENEW_EVERY: Duration = Duration::from_secs(2);

/// The allocator's timings: nothing is urgent about a VIP allocation.
pub const ALLOCATOR: Timing = Timing {
    duration: Duration::from_secs(15),
    renew_every: RENEW_EVERY,
    retry_every: RENEW_EVERY,
    renew_deadline: Some(Duration::from_secs(10)),
};

/// The timings of one kind of Lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// `leaseDurationSeconds`: how long others wait, from when they saw the
    /// last renewal, before they take the Lease over (whole seconds).
    pub duration: Duration,
    /// How often the holder renews.
    pub renew_every: Duration,
    /// How often a candidate that does not hold the Lease looks again.
    pub retry_every: Duration,
    /// The holder gives up (stops acting) when it has not renewed for this
    /// long (shorter than `duration`); `None`: only when the API server
    /// shows another holder.
    pub renew_deadline: Option<Duration>,
}

/// What a candidate should do with the Lease as it sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// There is no such Lease: create it, holding it.
    Create,
    /// It is free (released, or not renewed for its duration): take it.
    Acquire {
        /// The holder it is taken from (`None`: it was free).
        from: Option<String>,
    },
    /// This candidate holds it: renew it (when due).
    Renew,
    /// Another candidate holds it and it has not expired.
    Wait {
        /// The holder.
        holder: String,
    },
}

/// The holder named in `lease`, if any (an empty name is none).
pub fn holder(lease: &Lease) -> Option<&str> {
    lease.spec.as_ref()?.holder_identity.as_deref().filter(|h| !h.is_empty())
}

fn duration_of(lease: &Lease, default: Duration) -> Duration {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_duration_seconds)
        .and_then(|d| u64::try_from(d).ok())
        .map_or(default, Duration::from_secs)
}

/// Decides what `identity` does with `lease` (`None`: there is none), which
/// it has seen unchanged for `unchanged_for`; `default_duration` applies
/// to a Lease without `leaseDurationSeconds`.
pub fn decide(lease: Option<&Lease>, identity: &str, unchanged_for: Duration, default_duration: Duration) -> Decision {
    let Some(lease) = lease else { return Decision::Create };
    match holder(lease) {
        Some(h) if h == identity => Decision::Renew,
        None => Decision::Acquire { from: None },
        Some(h) if unchanged_for >= duration_of(lease, default_duration) => {
            Decision::Acquire { from: Some(h.to_owned()) }
        }
        Some(h) => Decision::Wait { holder: h.to_owned() },
    }
}

/// A new Lease `name` held by `identity`.
pub fn fresh(name: &str, identity: &str, now: Timestamp, duration: Duration) -> Lease {
    let now = MicroTime(now);
    Lease {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        spec: Some(LeaseSpec {
            holder_identity: Some(identity.into()),
            lease_duration_seconds: Some(seconds(duration)),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(0),
            ..Default::default()
        }),
    }
}

fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

/// `lease` taken (acquired or renewed) by `identity` at `now`: a new holder
/// sets `acquireTime` and counts a transition; both set `renewTime`.
pub fn taken(mut lease: Lease, identity: &str, now: Timestamp, duration: Duration) -> Lease {
    let now = MicroTime(now);
    let mine = holder(&lease) == Some(identity);
    let spec = lease.spec.get_or_insert_with(Default::default);
    if !mine {
        spec.holder_identity = Some(identity.into());
        spec.acquire_time = Some(now.clone());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(now);
    spec.lease_duration_seconds = Some(seconds(duration));
    lease
}

/// `lease` released by `identity` at `now` (as client-go releases: empty
/// holder, duration 1 s, both times now, transitions kept), or `None` when
/// `identity` does not hold it.
pub fn released(mut lease: Lease, identity: &str, now: Timestamp) -> Option<Lease> {
    if holder(&lease) != Some(identity) {
        return None;
    }
    let now = MicroTime(now);
    let spec = lease.spec.get_or_insert_with(Default::default);
    spec.holder_identity = Some(String::new());
    spec.lease_duration_seconds = Some(1);
    spec.acquire_time = Some(now.clone());
    spec.renew_time = Some(now);
    Some(lease)
}

/// What one round of an [`Elector`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the elector holds the Lease now.
    pub held: bool,
    /// Set when this round acquired it (it was not held before): the holder
    /// it was taken from (`None`: it was free or new).
    pub acquired_from: Option<Option<String>>,
    /// Another candidate's holder name, when it holds the Lease.
    pub other: Option<String>,
}

/// Competes for one Lease on behalf of one identity.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    /// The record last seen (resourceVersion) and when it was first seen.
    seen: Option<(String, Instant)>,
    /// When this elector last wrote the Lease holding it, and what the
    /// server answered (the copy the next renewal starts from).
    held: Option<(Instant, Lease)>,
}

impl std::fmt::Debug for Elector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elector").field("name", &self.name).field("held", &self.holding()).finish_non_exhaustive()
    }
}

impl Elector {
    /// An elector for Lease `name` (in `api`'s namespace) as `identity`.
    pub fn new(api: Api<Lease>, name: impl Into<String>, identity: impl Into<String>, timing: Timing) -> Self {
        Elector { api, name: name.into(), identity: identity.into(), timing, seen: None, held: None }
    }

    /// The Lease's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this elector holds the Lease: it renewed it less than the
    /// renew deadline ago (without a deadline: it renewed it and has not
    /// seen another holder since).
    pub fn holding(&self) -> bool {
        self.held.as_ref().is_some_and(|(at, _)| self.timing.renew_deadline.is_none_or(|d| at.elapsed() < d))
    }

    /// One round with the Lease as read now (by a GET, or from a watch
    /// cache): acquires it when free or expired, renews it when due.
    /// An API error leaves the elector holding it until the renew deadline
    /// (see [`Elector::holding`]).
    pub async fn step(&mut self, current: Option<Lease>) -> kube::Result<Outcome> {
        let was = self.holding();
        let now = Instant::now();
        let rv = current.as_ref().and_then(|l| l.metadata.resource_version.clone()).unwrap_or_default();
        let since = match &self.seen {
            Some((seen_rv, at)) if *seen_rv == rv => *at,
            _ => {
                self.seen = Some((rv, now));
                now
            }
        };
        let outcome = |held: bool, acquired_from: Option<Option<String>>, other: Option<String>| Outcome {
            held,
            acquired_from: if held && !was { acquired_from.or(Some(None)) } else { None },
            other,
        };
        let mut decision = decide(current.as_ref(), &self.identity, now - since, self.timing.duration);
        // A cache that lags behind our own successful write still shows the
        // Lease free (or absent): it is ours, renew it from our copy rather
        // than race our own write, lose with a 409 and forget we hold it.
        if was && matches!(decision, Decision::Create | Decision::Acquire { from: None }) {
            decision = Decision::Renew;
        }
        match decision {
            Decision::Wait { holder } => {
                self.held = None;
                Ok(outcome(false, None, Some(holder)))
            }
            Decision::Create => {
                let lease = fresh(&self.name, &self.identity, Timestamp::now(), self.timing.duration);
                let r = self.write(true, lease).await?;
                Ok(outcome(r, None, None))
            }
            Decision::Acquire { from } => {
                let Some(current) = current else { return Ok(outcome(false, None, None)) };
                let lease = taken(current, &self.identity, Timestamp::now(), self.timing.duration);
                let r = self.write(false, lease).await?;
                Ok(outcome(r, Some(from), None))
            }
            Decision::Renew => {
                if let Some((at, _)) = &self.held {
                    if at.elapsed() < self.timing.renew_every {
                        return Ok(outcome(true, None, None));
                    }
                }
                // From our own last write when we have it (the cache may lag
                // behind it), else from what was read.
                let base = match (&self.held, current) {
                    (Some((_, mine)), _) => mine.clone(),
                    (None, Some(c)) => c,
                    (None, None) => return Ok(outcome(false, None, None)),
                };
                let lease = taken(base, &self.identity, Timestamp::now(), self.timing.duration);
                // On an error the caller asks [`Elector::holding`]: held
                // until the renew deadline.
                let r = self.write(false, lease).await?;
                Ok(outcome(r, None, None))
            }
        }
    }

    /// Creates (`create`) or replaces the Lease; `Ok(false)` when
    /// another candidate won the race (409).
    async fn write(&mut self, create: bool, lease: Lease) -> kube::Result<bool> {
        let pp = PostParams::default();
        let r =
            if create { self.api.create(&pp, &lease).await } else { self.api.replace(&self.name, &pp, &lease).await };
        match r {
            Ok(written) => {
                self.held = Some((Instant::now(), written));
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                self.held = None;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Reads the Lease and does one round ([`Elector::step`]).
    pub async fn try_hold(&mut self) -> kube::Result<Outcome> {
        let current = self.api.get_opt(&self.name).await?;
        self.step(current).await
    }

    /// Releases the Lease if this elector holds it (written from its last
    /// renewal; on a conflict, read again once); returns whether it wrote.
    pub async fn release(&mut self) -> kube::Result<bool> {
        let Some((_, mine)) = self.held.take() else { return Ok(false) };
        let pp = PostParams::default();
        if let Some(lease) = released(mine, &self.identity, Timestamp::now()) {
            match self.api.replace(&self.name, &pp, &lease).await {
                Ok(_) => return Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        let Some(current) = self.api.get_opt(&self.name).await? else { return Ok(false) };
        match released(current, &self.identity, Timestamp::now()) {
            Some(lease) => self.api.replace(&self.name, &pp, &lease).await.map(|_| true),
            None => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(6);

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    /// A store of one Lease with optimistic concurrency, as the API server.
    #[derive(Default)]
    struct Store {
        lease: Option<Lease>,
        rv: u64,
    }

    impl Store {
        fn get(&self) -> Option<Lease> {
            self.lease.clone()
        }
        fn write(&mut self, mut l: Lease, create: bool) -> bool {
            let ok = match (&self.lease, create) {
                (None, true) => true,
                (Some(cur), false) => cur.metadata.resource_version == l.metadata.resource_version,
                _ => false,
            };
            if ok {
                self.rv += 1;
                l.metadata.resource_version = Some(self.rv.to_string());
                self.lease = Some(l);
            }
            ok
        }
    }

    /// A candidate as the Elector runs it, on a simulated clock (seconds).
    struct Candidate {
        id: &'static str,
        seen: Option<(Option<String>, u64)>,
    }

    impl Candidate {
        /// One round at time `t`: whether it holds the Lease after it.
        fn round(&mut self, store: &mut Store, t: u64) -> bool {
            let cur = store.get();
            let rv = cur.as_ref().and_then(|l| l.metadata.resource_version.clone());
            let since = match &self.seen {
                Some((r, s)) if *r == rv => *s,
                _ => {
                    self.seen = Some((rv, t));
                    t
                }
            };
            let now = at(i64::try_from(t).unwrap());
            match decide(cur.as_ref(), self.id, Duration::from_secs(t - since), D) {
                Decision::Create => store.write(fresh("l", self.id, now, D), true),
                Decision::Acquire { .. } | Decision::Renew => store.write(taken(cur.unwrap(), self.id, now, D), false),
                Decision::Wait { .. } => false,
            }
        }
    }

    fn lease_held_by(h: Option<&str>) -> Lease {
        let mut l = fresh("l", "x", at(0), D);
        l.spec.as_mut().unwrap().holder_identity = h.map(str::to_owned);
        l
    }

    #[test]
    fn no_lease_is_created_and_a_free_one_taken_at_once() {
        assert_eq!(decide(None, "a", Duration::ZERO, D), Decision::Create);
        for free in [None, Some("")] {
            assert_eq!(decide(Some(&lease_held_by(free)), "a", Duration::ZERO, D), Decision::Acquire { from: None });
        }
    }

    #[test]
    fn anothers_lease_expires_only_after_its_duration_unchanged() {
        let l = lease_held_by(Some("b"));
        assert_eq!(decide(Some(&l), "a", Duration::from_secs(5), D), Decision::Wait { holder: "b".into() });
        assert_eq!(decide(Some(&l), "a", D, D), Decision::Acquire { from: Some("b".into()) });
        // The Lease's own duration wins over the default.
        let mut short = l.clone();
        short.spec.as_mut().unwrap().lease_duration_seconds = Some(1);
        assert_eq!(decide(Some(&short), "a", Duration::from_secs(1), D), Decision::Acquire { from: Some("b".into()) });
        // Ours: renew.
        assert_eq!(decide(Some(&l), "b", Duration::ZERO, D), Decision::Renew);
    }

    #[test]
    fn taking_counts_transitions_and_renewing_does_not() {
        let l = fresh("l", "a", at(0), D);
        let renewed = taken(l.clone(), "a", at(2), D);
        let s = renewed.spec.as_ref().unwrap();
        assert_eq!((s.lease_transitions, s.acquire_time.as_ref().map(|t| t.0)), (Some(0), Some(at(0))));
        assert_eq!(s.renew_time.as_ref().map(|t| t.0), Some(at(2)));
        let moved = taken(renewed, "b", at(9), D);
        let s = moved.spec.as_ref().unwrap();
        assert_eq!(s.holder_identity.as_deref(), Some("b"));
        assert_eq!((s.lease_transitions, s.acquire_time.as_ref().map(|t| t.0)), (Some(1), Some(at(9))));
        assert_eq!(s.lease_duration_seconds, Some(6));
    }

    #[test]
    fn release_empties_the_holder_as_client_go_does_and_only_for_the_holder() {
        let l = taken(fresh("l", "a", at(0), D), "a", at(2), D);
        assert!(released(l.clone(), "b", at(3)).is_none());
        let r = released(l, "a", at(3)).unwrap();
        let s = r.spec.as_ref().unwrap();
        assert_eq!(s.holder_identity.as_deref(), Some(""));
        assert_eq!(s.lease_duration_seconds, Some(1));
        assert_eq!(s.renew_time.as_ref().map(|t| t.0), Some(at(3)));
        assert_eq!(s.lease_transitions, Some(0));
        assert_eq!(holder(&r), None);
        assert_eq!(decide(Some(&r), "b", Duration::ZERO, D), Decision::Acquire { from: None });
    }

    #[test]
    fn two_candidates_one_holder_renewals_keep_it_expiry_and_release_move_it() {
        let mut store = Store::default();
        let mut a = Candidate { id: "a", seen: None };
        let mut b = Candidate { id: "b", seen: None };
        // Both race at t=0: exactly one wins the create.
        assert!(a.round(&mut store, 0));
        assert!(!b.round(&mut store, 0));
        // a renews every 2 s: b never takes it over, however long.
        for t in 1..30 {
            if t % 2 == 0 {
                assert!(a.round(&mut store, t), "renewal at {t}");
            }
            assert!(!b.round(&mut store, t), "b took a renewed Lease at {t}");
        }
        assert_eq!(holder(store.lease.as_ref().unwrap()), Some("a"));
        // a dies after its renewal at t=28: b takes it 6 s after it saw that.
        for t in 30..34 {
            assert!(!b.round(&mut store, t), "b took it early at {t}");
        }
        assert!(b.round(&mut store, 34));
        assert_eq!(holder(store.lease.as_ref().unwrap()), Some("b"));
        assert_eq!(store.lease.as_ref().unwrap().spec.as_ref().unwrap().lease_transitions, Some(1));
        // a comes back: it sees b's renewals, waits.
        assert!(!a.round(&mut store, 35));
        // b releases: a takes it on its next round, no waiting.
        let rel = released(store.get().unwrap(), "b", at(36)).unwrap();
        assert!(store.write(rel, false));
        assert!(a.round(&mut store, 36));
        assert_eq!(holder(store.lease.as_ref().unwrap()), Some("a"));
    }

    #[test]
    fn a_stale_copy_loses_the_race() {
        let mut store = Store::default();
        assert!(store.write(fresh("l", "a", at(0), D), true));
        let stale = store.get().unwrap();
        let free = released(stale.clone(), "a", at(1)).unwrap();
        assert!(store.write(free, false));
        // b takes it; a, writing from its older copy, gets a conflict.
        assert!(store.write(taken(store.get().unwrap(), "b", at(2), D), false));
        assert!(!store.write(taken(stale, "a", at(2), D), false));
        assert_eq!(holder(store.lease.as_ref().unwrap()), Some("b"));
    }
}
