//! The registry each service exposes on `/metrics`, and the handles that update it.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sqlx::AnyPool;

use crate::grpc::GrpcMetricsLayer;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CallLabels {
    pub service: String,
    pub method: String,
    pub code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    pub service: String,
    pub method: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    purpose: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabels {
    channel: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// A key version number (never key material).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: u32,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: &'static str,
}

/// How the gateway's enforcement point decided one reveal or lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionResult {
    Allowed,
    DeniedPolicy,
    DeniedConsent,
    /// The decision could not be made or carried out (access log, vault, database).
    Error,
}

impl DecisionResult {
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionResult::Allowed => "allowed",
            DecisionResult::DeniedPolicy => "denied_policy",
            DecisionResult::DeniedConsent => "denied_consent",
            DecisionResult::Error => "error",
        }
    }
}

/// What became of one attempt to deliver a campaign message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageOutcome {
    Sent,
    /// Not sent: the person has no active consent for the purpose.
    SkippedNoConsent,
    /// Not sent: the person was erased.
    SkippedErased,
    /// Not sent, for good: out of attempts, or refused permanently.
    Failed,
    /// Not sent yet: a transient failure, to be tried again.
    Retried,
}

impl MessageOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageOutcome::Sent => "sent",
            MessageOutcome::SkippedNoConsent => "skipped_no_consent",
            MessageOutcome::SkippedErased => "skipped_erased",
            MessageOutcome::Failed => "failed",
            MessageOutcome::Retried => "retried",
        }
    }
}

/// Whether a data key came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    Hit,
    Miss,
}

/// The metrics of one service. Cheap to clone; every clone updates the same registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    grpc_requests: Family<CallLabels, Counter>,
    grpc_duration: Family<RouteLabels, Histogram>,
    decisions: Family<DecisionLabels, Counter>,
    messages: Family<MessageLabels, Counter>,
    audit_write: Histogram,
    dek_cache: Family<ResultLabels, Counter>,
    key_versions: Family<StateLabels, Gauge>,
    key_provider: Family<ProviderLabels, Gauge>,
    rewrap_progress: Gauge<f64, AtomicU64>,
    reindex_progress: Gauge<f64, AtomicU64>,
    kek_encryptions: Family<VersionLabels, Gauge>,
    kek_encryption_alarm: Family<VersionLabels, Gauge>,
    pool_connections: Family<StateLabels, Gauge>,
    pool_max: Gauge,
    /// The pool sampled on each scrape.
    pool: Mutex<Option<AnyPool>>,
}

/// Seconds from 1 ms to about 33 s: covers a cached reveal and a stuck database.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 16)
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        // prometheus-client appends `_total` to counter names.
        let grpc_requests = Family::<CallLabels, Counter>::default();
        registry.register(
            "grpc_server_requests",
            "gRPC calls finished, by method and status code",
            grpc_requests.clone(),
        );
        let grpc_duration =
            Family::<RouteLabels, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets()));
        registry.register(
            "grpc_server_request_duration_seconds",
            "Time from a gRPC call's request headers to its final status",
            grpc_duration.clone(),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register("qupia_decisions", "Reveal and lookup decisions, by purpose and result", decisions.clone());
        let messages = Family::<MessageLabels, Counter>::default();
        registry.register(
            "qupia_marketing_messages",
            "Campaign message delivery attempts, by channel and outcome",
            messages.clone(),
        );
        let audit_write = Histogram::new(latency_buckets());
        registry.register("qupia_audit_write_seconds", "Time to append entries to the access log", audit_write.clone());
        let dek_cache = Family::<ResultLabels, Counter>::default();
        registry.register("qupia_dek_cache", "Data-key cache lookups, by hit or miss", dek_cache.clone());
        let key_versions = Family::<StateLabels, Gauge>::default();
        registry.register("qupia_key_versions", "Key-encryption-key versions, by state", key_versions.clone());
        let key_provider = Family::<ProviderLabels, Gauge>::default();
        registry.register(
            "qupia_key_provider",
            "The key provider in use (keyring-file or pkcs11): 1 on its label",
            key_provider.clone(),
        );
        let rewrap_progress = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "qupia_rewrap_progress_ratio",
            "Share of data keys wrapped by the current key-encryption key during a rewrap",
            rewrap_progress.clone(),
        );
        let reindex_progress = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "qupia_reindex_progress_ratio",
            "Share of people indexed under the current blind-index key during a reindex",
            reindex_progress.clone(),
        );
        let kek_encryptions = Family::<VersionLabels, Gauge>::default();
        registry.register(
            "qupia_kek_encryptions",
            "Encryptions (wraps) counted under each key-encryption-key version",
            kek_encryptions.clone(),
        );
        let kek_encryption_alarm = Family::<VersionLabels, Gauge>::default();
        registry.register(
            "qupia_kek_encryption_alarm",
            "1 when a key-encryption-key version reached its encryption alarm threshold: rotate it",
            kek_encryption_alarm.clone(),
        );
        let pool_connections = Family::<StateLabels, Gauge>::default();
        registry.register(
            "qupia_db_pool_connections",
            "Database pool connections, idle or in use",
            pool_connections.clone(),
        );
        let pool_max = Gauge::default();
        registry.register("qupia_db_pool_max", "The most connections the database pool opens", pool_max.clone());
        Metrics {
            inner: Arc::new(Inner {
                registry,
                grpc_requests,
                grpc_duration,
                decisions,
                messages,
                audit_write,
                dek_cache,
                key_versions,
                key_provider,
                rewrap_progress,
                reindex_progress,
                kek_encryptions,
                kek_encryption_alarm,
                pool_connections,
                pool_max,
                pool: Mutex::new(None),
            }),
        }
    }

    /// A tower layer for `tonic::transport::Server::builder().layer(..)` that counts and
    /// times every call.
    pub fn grpc_layer(&self) -> GrpcMetricsLayer {
        GrpcMetricsLayer::new(self.clone())
    }

    pub(crate) fn record_call(&self, service: &str, method: &str, code: &'static str, elapsed: Duration) {
        let route = RouteLabels { service: service.to_owned(), method: method.to_owned() };
        self.inner.grpc_duration.get_or_create(&route).observe(elapsed.as_secs_f64());
        let call = CallLabels { service: route.service, method: route.method, code };
        self.inner.grpc_requests.get_or_create(&call).inc();
    }

    /// Counts one decision; `purpose` is the purpose's wire name.
    pub fn decision(&self, purpose: &'static str, result: DecisionResult) {
        self.inner.decisions.get_or_create(&DecisionLabels { purpose, result: result.as_str() }).inc();
    }

    /// Counts one delivery attempt of a campaign message; `channel` is `email` or `sms`.
    pub fn message(&self, channel: &'static str, outcome: MessageOutcome) {
        self.inner.messages.get_or_create(&MessageLabels { channel, outcome: outcome.as_str() }).inc();
    }

    /// Records how long one access-log append took.
    pub fn audit_write(&self, elapsed: Duration) {
        self.inner.audit_write.observe(elapsed.as_secs_f64());
    }

    pub fn dek_cache(&self, result: CacheResult) {
        let result = match result {
            CacheResult::Hit => "hit",
            CacheResult::Miss => "miss",
        };
        self.inner.dek_cache.get_or_create(&ResultLabels { result }).inc();
    }

    /// Sets the number of key versions in each state; states not listed become 0.
    pub fn set_key_versions(&self, states: impl IntoIterator<Item = &'static str>) {
        self.inner.key_versions.clear();
        for state in states {
            self.inner.key_versions.get_or_create(&StateLabels { state }).inc();
        }
    }

    /// Names the key provider in use (`KeyProvider::name`).
    pub fn set_key_provider(&self, provider: &'static str) {
        self.inner.key_provider.clear();
        self.inner.key_provider.get_or_create(&ProviderLabels { provider }).set(1);
    }

    /// Sets the rewrap progress, from 0 to 1.
    pub fn set_rewrap_progress(&self, ratio: f64) {
        self.inner.rewrap_progress.set(ratio.clamp(0.0, 1.0));
    }

    /// Sets the reindex progress, from 0 to 1.
    pub fn set_reindex_progress(&self, ratio: f64) {
        self.inner.reindex_progress.set(ratio.clamp(0.0, 1.0));
    }

    /// Sets the encryptions counted under a KEK version.
    pub fn set_kek_encryptions(&self, version: u32, encryptions: u64) {
        let value = i64::try_from(encryptions).unwrap_or(i64::MAX);
        self.inner.kek_encryptions.get_or_create(&VersionLabels { version }).set(value);
    }

    /// Raises (or clears) the encryption alarm of a KEK version.
    pub fn set_kek_encryption_alarm(&self, version: u32, raised: bool) {
        self.inner.kek_encryption_alarm.get_or_create(&VersionLabels { version }).set(i64::from(raised));
    }

    /// Samples `pool` on every scrape.
    pub fn observe_pool(&self, pool: AnyPool) {
        *self.inner.pool.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(pool);
    }

    fn sample_pool(&self) {
        let pool = self.inner.pool.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        let Some(pool) = pool else { return };
        let open = i64::from(pool.size());
        let idle = i64::try_from(pool.num_idle()).unwrap_or(i64::MAX);
        self.inner.pool_connections.get_or_create(&StateLabels { state: "idle" }).set(idle);
        self.inner.pool_connections.get_or_create(&StateLabels { state: "in_use" }).set((open - idle).max(0));
        self.inner.pool_max.set(i64::from(pool.options().get_max_connections()));
    }

    /// The registry in the OpenMetrics text format, pool gauges sampled now.
    pub fn render(&self) -> String {
        self.sample_pool();
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.inner.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_its_labels() {
        let metrics = Metrics::new();
        metrics.decision("service_delivery", DecisionResult::Allowed);
        metrics.audit_write(Duration::from_millis(3));
        metrics.message("email", MessageOutcome::SkippedNoConsent);
        metrics.dek_cache(CacheResult::Miss);
        metrics.set_key_versions(["active", "decrypt_only"]);
        metrics.set_rewrap_progress(0.5);
        metrics.set_reindex_progress(0.25);
        metrics.set_kek_encryptions(2, 17);
        metrics.set_kek_encryption_alarm(2, true);
        metrics.set_key_provider("keyring-file");
        metrics.set_key_provider("pkcs11");
        metrics.record_call("qupia.vault.v1.VaultService", "Tokenize", "OK", Duration::from_millis(2));
        let text = metrics.render();
        for expected in [
            "qupia_decisions_total{purpose=\"service_delivery\",result=\"allowed\"} 1",
            "qupia_audit_write_seconds_count 1",
            "qupia_marketing_messages_total{channel=\"email\",outcome=\"skipped_no_consent\"} 1",
            "qupia_dek_cache_total{result=\"miss\"} 1",
            "qupia_key_versions{state=\"active\"} 1",
            "qupia_rewrap_progress_ratio 0.5",
            "qupia_reindex_progress_ratio 0.25",
            "qupia_kek_encryptions{version=\"2\"} 17",
            "qupia_kek_encryption_alarm{version=\"2\"} 1",
            "qupia_key_provider{provider=\"pkcs11\"} 1",
            "grpc_server_requests_total{service=\"qupia.vault.v1.VaultService\",method=\"Tokenize\",code=\"OK\"} 1",
            "grpc_server_request_duration_seconds_count{service=\"qupia.vault.v1.VaultService\",method=\"Tokenize\"} 1",
            "# TYPE qupia_db_pool_max gauge",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert!(!text.contains("provider=\"keyring-file\""), "only the provider in use is named:\n{text}");
    }
}
