//! Fault injection: extra latency, a rate of failed requests and a rate of lost event
//! acknowledgements, set at start by flags and changed at run time over HTTP
//! (`GET`/`PUT /admin/faults`); and crashes — the process ends abruptly a set time after start
//! (`--fault-kill-after`) or on `POST /admin/kill`; its supervisor, `ducktrace demo`, restarts it.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::routing::{get, post};
use axum::Json;
use serde::{Deserialize, Serialize};

/// What to inject into every request this process serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields, default)]
pub struct FaultConfig {
    /// Extra latency added to every request served, in milliseconds.
    #[arg(long = "fault-latency-ms", env = "DEMO_FAULT_LATENCY_MS", default_value_t = 0)]
    pub latency_ms: u64,
    /// Share of requests (0.0 to 1.0) answered with an injected UNAVAILABLE error.
    #[arg(long = "fault-error-rate", env = "DEMO_FAULT_ERROR_RATE", default_value_t = 0.0,
          value_parser = parse_rate)]
    pub error_rate: f64,
    /// Share of consumed events (0.0 to 1.0) whose acknowledgement is lost after they were
    /// applied, so the broker or the outbox relay delivers them again.
    #[arg(long = "fault-lost-ack-rate", env = "DEMO_FAULT_LOST_ACK_RATE", default_value_t = 0.0,
          value_parser = parse_rate)]
    pub lost_ack_rate: f64,
    /// Crash (exit at once, status 137, nothing flushed) this many seconds after start. Start
    /// only: a supervisor restarts the process with the same flags, so it crashes again.
    #[arg(long = "fault-kill-after", env = "DEMO_FAULT_KILL_AFTER")]
    #[serde(skip)]
    pub kill_after_secs: Option<u64>,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!("a fault rate is a number from 0.0 to 1.0, got {text:?}")),
    }
}

/// An injected failure; the server answers it as UNAVAILABLE (gRPC) or 503 (HTTP).
#[derive(Debug, thiserror::Error)]
#[error("injected fault (error rate {rate})")]
pub struct InjectedFault {
    pub rate: f64,
}

/// True with probability `rate`.
fn strikes(rate: f64) -> bool {
    rate > 0.0 && fastrand::f64() < rate
}

/// Ends the process at once, without any clean-up, as a crash would.
fn crash() -> ! {
    std::process::exit(137)
}

/// The process's current fault settings, shared by the server layer and the admin endpoint.
#[derive(Clone, Default)]
pub struct Faults(Arc<RwLock<FaultConfig>>);

impl Faults {
    pub fn new(config: FaultConfig) -> Self {
        Self(Arc::new(RwLock::new(config)))
    }

    pub fn get(&self) -> FaultConfig {
        *self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn set(&self, config: FaultConfig) {
        *self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = config;
    }

    /// Waits the configured latency, then fails with the configured probability. Runs inside
    /// the server span, so injected delays and errors show on it.
    pub async fn inject(&self) -> Result<(), InjectedFault> {
        let config = self.get();
        if config.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(config.latency_ms)).await;
        }
        if strikes(config.error_rate) {
            tracing::warn!(fault.error_rate = config.error_rate, "fault.injected");
            return Err(InjectedFault {
                rate: config.error_rate,
            });
        }
        Ok(())
    }

    /// Whether to lose the acknowledgement of an event just applied (so it is delivered again);
    /// logs the fault in the current (consumer) span when it strikes.
    pub fn lose_ack(&self) -> bool {
        let rate = self.get().lost_ack_rate;
        let lost = strikes(rate);
        if lost {
            tracing::warn!(fault.lost_ack_rate = rate, "fault.injected");
        }
        lost
    }

    /// Starts the crash timer of `--fault-kill-after`, if set. Needs a tokio runtime.
    pub fn arm_kill_timer(&self) {
        if let Some(secs) = self.get().kill_after_secs {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(secs)).await;
                tracing::warn!("crashing: --fault-kill-after {secs}");
                crash();
            });
        }
    }

    /// `GET`/`PUT /admin/faults` (JSON `{"latency_ms": 0, "error_rate": 0.0,
    /// "lost_ack_rate": 0.0}`) and `POST /admin/kill`.
    pub fn admin_router(&self) -> axum::Router {
        let reader = self.clone();
        let writer = self.clone();
        axum::Router::new()
            .route(
                "/admin/faults",
                get(move || async move { Json(reader.get()) }).put(
                    move |Json(config): Json<FaultConfig>| async move {
                        for (name, rate) in [
                            ("error_rate", config.error_rate),
                            ("lost_ack_rate", config.lost_ack_rate),
                        ] {
                            if !(0.0..=1.0).contains(&rate) {
                                return Err((
                                    axum::http::StatusCode::BAD_REQUEST,
                                    format!("{name} must be from 0.0 to 1.0, got {rate}"),
                                ));
                            }
                        }
                        // The crash timer is set at start only and keeps running.
                        let config = FaultConfig {
                            kill_after_secs: writer.get().kill_after_secs,
                            ..config
                        };
                        tracing::info!(?config, "fault settings changed");
                        writer.set(config);
                        Ok(Json(config))
                    },
                ),
            )
            .route(
                "/admin/kill",
                post(|| async {
                    tracing::warn!("killed through /admin/kill");
                    // Answer first, then die without any clean-up, as a crash would.
                    tokio::spawn(async {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        crash();
                    });
                    "killed\n"
                }),
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn error_rate_zero_never_fails_and_one_always_fails() {
        let faults = Faults::default();
        for _ in 0..100 {
            assert!(faults.inject().await.is_ok());
        }
        faults.set(FaultConfig {
            error_rate: 1.0,
            ..FaultConfig::default()
        });
        for _ in 0..100 {
            assert!(faults.inject().await.is_err());
            assert!(!faults.lose_ack(), "acknowledgements are a fault of their own");
        }
        faults.set(FaultConfig {
            lost_ack_rate: 1.0,
            ..FaultConfig::default()
        });
        for _ in 0..100 {
            assert!(faults.lose_ack());
            assert!(faults.inject().await.is_ok());
        }
    }

    #[test]
    fn rates_outside_zero_to_one_are_refused() {
        assert!(parse_rate("1.5").is_err());
        assert!(parse_rate("-0.1").is_err());
        assert_eq!(parse_rate("0.25"), Ok(0.25));
    }
}
