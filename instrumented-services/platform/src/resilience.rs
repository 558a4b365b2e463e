//! How one service calls another: [`Downstream::call`] resolves an instance, applies a timeout
//! to every attempt, retries retryable failures with exponential backoff and full jitter, and
//! goes through a circuit breaker per downstream service. Every attempt is its own CLIENT span
//! (`retry.attempt`, `retry.delay_ms`, the chosen instance); breaker transitions are span events
//! (`breaker.opened`, `breaker.half_open`, `breaker.closed`); calls refused by an open breaker
//! get a span with `breaker.fast_fail = true` and never reach the network.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::{Code, Status};
use tracing::Instrument;

use crate::discovery::{DiscoveryError, Resolver};
use crate::grpc::{inject_context, TracedChannel};

/// When and how often to retry.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Ceiling of the first retry's delay; doubles per retry (100, 200, 400 ms …).
    pub base_delay: Duration,
    /// No delay ceiling grows beyond this.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// The ceiling before retry number `retry` (1 for the first retry): `base · 2^(retry-1)`,
    /// capped at `max_delay`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.saturating_sub(1)).unwrap_or(u32::MAX);
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// Full jitter: a uniformly random delay from zero to the ceiling, so that callers that
    /// failed together do not retry together.
    pub fn delay(&self, retry: u32) -> Duration {
        self.ceiling(retry).mul_f64(fastrand::f64())
    }
}

/// Failures worth another attempt: the callee may succeed next time (another instance, the
/// overload gone). Business answers (not found, out of stock, bad request) are final.
pub fn is_retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Aborted
    )
}

/// Circuit breaker settings.
#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    /// Consecutive failed attempts that open the breaker.
    pub failure_threshold: u32,
    /// How long an open breaker refuses calls before letting one probe through.
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_for: Duration::from_secs(3),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum BreakerState {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// What the breaker says about the next call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// The breaker just went half-open: this call is the probe.
    Probe,
    Refused,
}

/// A circuit breaker: closed → open after `failure_threshold` consecutive failures → half-open
/// after `open_for`, where one probe decides between closed and open again.
pub struct Breaker {
    config: BreakerConfig,
    state: Mutex<BreakerState>,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: Mutex::new(BreakerState::Closed { failures: 0 }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn admit(&self) -> Admission {
        let mut state = self.state();
        match *state {
            BreakerState::Closed { .. } => Admission::Allowed,
            BreakerState::Open { until } if Instant::now() >= until => {
                *state = BreakerState::HalfOpen { probing: true };
                Admission::Probe
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen { probing: true } => Admission::Refused,
            BreakerState::HalfOpen { probing: false } => {
                *state = BreakerState::HalfOpen { probing: true };
                Admission::Probe
            }
        }
    }

    /// Records a success; `true` when this closed the breaker.
    pub fn succeeded(&self) -> bool {
        let mut state = self.state();
        let was_closed = matches!(*state, BreakerState::Closed { .. });
        *state = BreakerState::Closed { failures: 0 };
        !was_closed
    }

    /// Records a failure; `true` when this opened the breaker.
    pub fn failed(&self) -> bool {
        let mut state = self.state();
        let open = BreakerState::Open {
            until: Instant::now() + self.config.open_for,
        };
        match *state {
            BreakerState::Closed { failures } if failures + 1 >= self.config.failure_threshold => {
                *state = open;
                true
            }
            BreakerState::Closed { failures } => {
                *state = BreakerState::Closed {
                    failures: failures + 1,
                };
                false
            }
            BreakerState::HalfOpen { .. } => {
                *state = open;
                true
            }
            BreakerState::Open { .. } => false,
        }
    }
}

/// Why a call to another service failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The callee answered with a final (non-retryable) error; passed on as it came.
    #[error("{service} refused: {}", .status.message())]
    Refused { service: &'static str, status: Status },
    /// Every attempt failed with a retryable error or timed out.
    #[error("{service} failed after {attempts} attempts: {last}")]
    Exhausted {
        service: &'static str,
        attempts: u32,
        last: String,
    },
    /// The breaker is open: the call was not attempted.
    #[error("{service} is unavailable: its circuit breaker is open")]
    CircuitOpen { service: &'static str },
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
}

impl CallError {
    /// What to answer our own caller: the downstream's status when it refused (so business
    /// errors travel to the edge), UNAVAILABLE otherwise.
    pub fn to_status(&self) -> Status {
        match self {
            Self::Refused { status, .. } => status.clone(),
            other => crate::grpc::error(demo_kernel::ErrorCode::Unavailable, other.to_string()),
        }
    }
}

/// Timeout, retries and breaker of one downstream, as a caller configures them.
#[derive(Debug, Clone, Copy)]
pub struct CallPolicy {
    /// Per attempt, not per call.
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub breaker: BreakerConfig,
}

impl Default for CallPolicy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(1),
            retry: RetryPolicy::default(),
            breaker: BreakerConfig::default(),
        }
    }
}

/// A downstream service as seen by one caller: discovery, timeout, retries and breaker.
/// Share one per downstream within a process, so that all its callers feed the same breaker.
pub struct Downstream {
    /// The registry name, e.g. `inventory`.
    service: &'static str,
    resolver: Resolver,
    breaker: Breaker,
    retry: RetryPolicy,
    timeout: Duration,
}

impl Downstream {
    /// `service` is the name instances register under, e.g. `inventory`.
    pub fn new(service: &'static str, resolver: Resolver, policy: CallPolicy) -> Arc<Self> {
        Arc::new(Self {
            service,
            resolver,
            breaker: Breaker::new(policy.breaker),
            retry: policy.retry,
            timeout: policy.timeout,
        })
    }

    /// Calls `rpc` (`Service/Method` as in proto/, e.g. `Inventory/Reserve`) through `attempt`,
    /// which gets a traced channel to the chosen instance and makes one request on it.
    /// Retries: only for idempotent calls.
    pub async fn call<T, F, Fut>(&self, rpc: &'static str, attempt: F) -> Result<T, CallError>
    where
        F: FnMut(TracedChannel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.call_with(rpc, self.retry.max_attempts, attempt).await
    }

    /// [`Downstream::call`] without retries, for calls that must not run twice (placing an
    /// order): timeout and breaker still apply.
    pub async fn call_once<T, F, Fut>(&self, rpc: &'static str, attempt: F) -> Result<T, CallError>
    where
        F: FnMut(TracedChannel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.call_with(rpc, 1, attempt).await
    }

    async fn call_with<T, F, Fut>(
        &self,
        rpc: &'static str,
        max_attempts: u32,
        mut attempt: F,
    ) -> Result<T, CallError>
    where
        F: FnMut(TracedChannel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let (grpc_service, method) = rpc.split_once('/').unwrap_or((rpc, ""));
        let grpc_service = format!("{}.{grpc_service}", crate::GRPC_PACKAGE);
        let name = format!("{grpc_service}/{method}");
        let mut last = String::new();
        for number in 1..=max_attempts {
            let delay = if number > 1 {
                self.retry.delay(number - 1)
            } else {
                Duration::ZERO
            };
            tokio::time::sleep(delay).await;
            let span = tracing::info_span!(
                "grpc.client",
                otel.name = %name,
                otel.kind = "client",
                otel.status_code = tracing::field::Empty,
                rpc.system = "grpc",
                rpc.service = %grpc_service,
                rpc.method = method,
                rpc.grpc.status_code = tracing::field::Empty,
                peer.service = self.service,
                peer.instance.id = tracing::field::Empty,
                server.address = tracing::field::Empty,
                // Integers as i64: tracing-opentelemetry would store unsigned ones as text.
                retry.attempt = i64::from(number),
                retry.delay_ms = delay.as_millis() as i64,
                breaker.fast_fail = tracing::field::Empty,
                error.type = tracing::field::Empty,
            );
            match self.breaker.admit() {
                Admission::Refused => {
                    span.record("breaker.fast_fail", true);
                    span.record("otel.status_code", "error");
                    span.record("error.type", "circuit_open");
                    return Err(CallError::CircuitOpen {
                        service: self.service,
                    });
                }
                Admission::Probe => {
                    span.in_scope(|| tracing::info!(breaker.state = "half_open", "breaker.half_open"))
                }
                Admission::Allowed => {}
            }
            let chosen = match self.resolver.choose(self.service).instrument(span.clone()).await {
                Ok(chosen) => chosen,
                Err(error) => {
                    span.record("otel.status_code", "error");
                    span.record("error.type", "discovery");
                    last = error.to_string();
                    self.failed(&span);
                    continue;
                }
            };
            span.record("peer.instance.id", chosen.instance_id.as_str());
            span.record("server.address", chosen.address.as_str());
            let outcome = tokio::time::timeout(self.timeout, attempt(inject_context(chosen.channel)))
                .instrument(span.clone())
                .await;
            let status = match outcome {
                Ok(Ok(response)) => {
                    span.record("rpc.grpc.status_code", Code::Ok as i64);
                    if self.breaker.succeeded() {
                        span.in_scope(|| tracing::info!(breaker.state = "closed", "breaker.closed"));
                    }
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) => status,
                Err(_) => Status::deadline_exceeded(format!("no answer within {:?}", self.timeout)),
            };
            span.record("rpc.grpc.status_code", status.code() as i64);
            span.record("error.type", format!("{:?}", status.code()));
            if !is_retryable(status.code()) {
                // A business answer: the callee is healthy, so the breaker counts a success.
                self.breaker.succeeded();
                return Err(CallError::Refused {
                    service: self.service,
                    status,
                });
            }
            span.record("otel.status_code", "error");
            if status.code() == Code::Unavailable {
                self.resolver.invalidate(self.service);
            }
            last = status.message().to_string();
            self.failed(&span);
        }
        Err(CallError::Exhausted {
            service: self.service,
            attempts: max_attempts,
            last,
        })
    }

    fn failed(&self, span: &tracing::Span) {
        if self.breaker.failed() {
            span.in_scope(|| {
                tracing::warn!(
                    breaker.state = "open",
                    breaker.downstream = self.service,
                    "breaker.opened"
                )
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_ceilings_double_then_cap() {
        let policy = RetryPolicy::default();
        let ceilings: Vec<u64> = (1..=7)
            .map(|retry| policy.ceiling(retry).as_millis() as u64)
            .collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(policy.ceiling(64), policy.max_delay);
        for retry in 1..=7 {
            for _ in 0..50 {
                assert!(policy.delay(retry) <= policy.ceiling(retry));
            }
        }
    }

    #[test]
    fn only_transient_codes_are_retried() {
        assert!(is_retryable(Code::Unavailable));
        assert!(is_retryable(Code::DeadlineExceeded));
        for code in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::FailedPrecondition,
            Code::Unauthenticated,
        ] {
            assert!(!is_retryable(code), "{code:?}");
        }
    }

    #[test]
    fn breaker_opens_after_threshold_then_probes_once() {
        let breaker = Breaker::new(BreakerConfig {
            failure_threshold: 3,
            open_for: Duration::from_millis(30),
        });
        assert!(!breaker.failed());
        assert!(!breaker.failed());
        assert!(breaker.failed(), "the third consecutive failure opens it");
        assert_eq!(breaker.admit(), Admission::Refused);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(breaker.admit(), Admission::Probe);
        assert_eq!(breaker.admit(), Admission::Refused, "one probe at a time");
        assert!(breaker.failed(), "a failed probe opens it again");
        assert_eq!(breaker.admit(), Admission::Refused);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(breaker.admit(), Admission::Probe);
        assert!(breaker.succeeded(), "a successful probe closes it");
        assert_eq!(breaker.admit(), Admission::Allowed);
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let breaker = Breaker::new(BreakerConfig {
            failure_threshold: 2,
            open_for: Duration::from_secs(60),
        });
        assert!(!breaker.failed());
        assert!(!breaker.succeeded());
        assert!(!breaker.failed());
        assert_eq!(breaker.admit(), Admission::Allowed);
    }
}
