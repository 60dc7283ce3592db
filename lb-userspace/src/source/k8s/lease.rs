//! Leader election with a `coordination.k8s.io/v1` Lease: one agent (the
//! holder) allocates pool addresses and writes Services' status. A holder
//! renews every [`RENEW_EVERY`]; others take the Lease over once it has not
//! been renewed for its duration. Updates carry the resourceVersion read, so
//! two agents racing for it cannot both win.
use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{api::PostParams, Api};

/// Name of the allocator's Lease.
pub const LEASE_NAME: &str = "xlb-vip-allocator";
/// How long a Lease is valid without renewal.
pub const LEASE_SECONDS: i32 = 15;
/// How often the holder renews and the others retry.
pub const RENEW_EVERY: Duration = Duration::from_secs(2);

/// Tries to acquire or renew the Lease for `identity`; returns whether it
/// holds it now.
pub async fn try_hold(api: &Api<Lease>, identity: &str) -> kube::Result<bool> {
    let now = MicroTime(Timestamp::now());
    let Some(mut lease) = api.get_opt(LEASE_NAME).await? else {
        let lease = Lease {
            metadata: ObjectMeta { name: Some(LEASE_NAME.into()), ..Default::default() },
            spec: Some(LeaseSpec {
                holder_identity: Some(identity.into()),
                lease_duration_seconds: Some(LEASE_SECONDS),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    let mine = spec.holder_identity.as_deref() == Some(identity);
    let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
        (Some(t), Some(d)) => t.0.as_millisecond() + i64::from(d) * 1000 < now.0.as_millisecond(),
        _ => true,
    };
    if !mine && !expired {
        return Ok(false);
    }
    if !mine {
        spec.holder_identity = Some(identity.into());
        spec.acquire_time = Some(now.clone());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(now);
    spec.lease_duration_seconds = Some(LEASE_SECONDS);
    match api.replace(LEASE_NAME, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Gives the Lease up if `identity` holds it (at shutdown), so another
/// agent takes over at its next try instead of after the Lease expires.
pub async fn release(api: &Api<Lease>, identity: &str) -> kube::Result<()> {
    let Some(mut lease) = api.get_opt(LEASE_NAME).await? else { return Ok(()) };
    let Some(spec) = lease.spec.as_mut().filter(|s| s.holder_identity.as_deref() == Some(identity)) else {
        return Ok(());
    };
    spec.holder_identity = None;
    spec.renew_time = None;
    spec.acquire_time = None;
    api.replace(LEASE_NAME, &PostParams::default(), &lease).await.map(|_| ())
}
