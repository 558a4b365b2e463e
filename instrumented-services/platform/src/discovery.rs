//! Service discovery through the registry process: an instance registers its address with a
//! time-to-live and renews it by heartbeat, deregistering on shutdown; callers resolve a service
//! to its live instances (cached briefly) and take them in turn (round robin).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use demo_contracts::registry_client::RegistryClient;
use demo_contracts::{DeregisterRequest, HeartbeatRequest, Instance, RegisterRequest, ResolveRequest};
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

/// How long a registration lives without a heartbeat; heartbeats come three times as often.
pub const DEFAULT_TTL: Duration = Duration::from_secs(6);
/// How long a resolved instance list is reused before asking the registry again.
const CACHE_FOR: Duration = Duration::from_secs(2);
/// Time to open a connection to any instance.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Why no instance could be chosen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DiscoveryError {
    #[error("bad registry address {address:?}: {reason}")]
    BadAddress { address: String, reason: String },
    #[error("the registry did not answer: {0}")]
    Registry(String),
    #[error("no live instance of {0} is registered")]
    NoInstance(String),
}

fn channel(address: &str) -> Result<Channel, DiscoveryError> {
    let uri = if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    Endpoint::from_shared(uri)
        .map(|endpoint| endpoint.connect_timeout(CONNECT_TIMEOUT).connect_lazy())
        .map_err(|error| DiscoveryError::BadAddress {
            address: address.to_string(),
            reason: error.to_string(),
        })
}

/// The instance chosen for one call, with a connection to it.
#[derive(Clone, Debug)]
pub struct Chosen {
    pub instance_id: String,
    pub address: String,
    pub channel: Channel,
}

struct Cached {
    instances: Vec<Instance>,
    fetched: Instant,
}

/// Resolves service names to instances; one per process, cheap to clone.
#[derive(Clone)]
pub struct Resolver {
    registry: RegistryClient<Channel>,
    cache: Arc<Mutex<HashMap<String, Cached>>>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// Round-robin position per service, so turns of one service do not skip another's.
    turns: Arc<Mutex<HashMap<String, usize>>>,
}

impl Resolver {
    /// `registry` is `host:port` or `http://host:port`; nothing connects until first use.
    pub fn new(registry: &str) -> Result<Self, DiscoveryError> {
        Ok(Self {
            registry: RegistryClient::new(channel(registry)?),
            cache: Arc::default(),
            channels: Arc::default(),
            turns: Arc::default(),
        })
    }

    /// The registry's client, for registration.
    pub fn registry(&self) -> RegistryClient<Channel> {
        self.registry.clone()
    }

    /// The next instance of `service` in round-robin order.
    pub async fn choose(&self, service: &str) -> Result<Chosen, DiscoveryError> {
        let instances = self.instances(service).await?;
        let turn = {
            let mut turns = self.turns.lock().unwrap_or_else(|p| p.into_inner());
            let turn = turns.entry(service.to_string()).or_insert(0);
            *turn = turn.wrapping_add(1);
            *turn
        };
        let instance = &instances[turn % instances.len()];
        let channel = {
            let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
            match channels.get(&instance.address) {
                Some(channel) => channel.clone(),
                None => {
                    let channel = channel(&instance.address)?;
                    channels.insert(instance.address.clone(), channel.clone());
                    channel
                }
            }
        };
        Ok(Chosen {
            instance_id: instance.instance_id.clone(),
            address: instance.address.clone(),
            channel,
        })
    }

    /// Forgets the cached list of `service`, e.g. after an instance did not answer.
    pub fn invalidate(&self, service: &str) {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(service);
    }

    async fn instances(&self, service: &str) -> Result<Vec<Instance>, DiscoveryError> {
        if let Some(cached) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(service) {
            if cached.fetched.elapsed() < CACHE_FOR && !cached.instances.is_empty() {
                return Ok(cached.instances.clone());
            }
        }
        let mut instances = self
            .registry
            .clone()
            .resolve(ResolveRequest {
                service: service.to_string(),
            })
            .await
            .map_err(|status| DiscoveryError::Registry(status.message().to_string()))?
            .into_inner()
            .instances;
        if instances.is_empty() {
            return Err(DiscoveryError::NoInstance(service.to_string()));
        }
        instances.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(
            service.to_string(),
            Cached {
                instances: instances.clone(),
                fetched: Instant::now(),
            },
        );
        Ok(instances)
    }
}

/// This process's entry in the registry, kept alive until [`Registration::deregister`].
pub struct Registration {
    registry: RegistryClient<Channel>,
    instance_id: String,
    heartbeat: JoinHandle<()>,
}

impl Registration {
    /// Registers (retrying until the registry answers) and starts the heartbeat. A heartbeat
    /// the registry does not recognise (it restarted, or the lease lapsed) registers again.
    pub async fn start(mut registry: RegistryClient<Channel>, instance: Instance, ttl: Duration) -> Self {
        let request = RegisterRequest {
            instance: Some(instance.clone()),
            ttl_ms: ttl.as_millis() as u32,
        };
        let mut wait = Duration::from_millis(100);
        while let Err(status) = registry.register(request.clone()).await {
            tracing::warn!(
                "cannot register with the registry yet ({}); retrying",
                status.message()
            );
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
        tracing::info!(instance.id = %instance.instance_id, address = %instance.address, "registered");
        let heartbeat = {
            let mut registry = registry.clone();
            let instance_id = instance.instance_id.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    let beat = registry.heartbeat(HeartbeatRequest {
                        instance_id: instance_id.clone(),
                    });
                    match beat.await {
                        Ok(_) => {}
                        Err(status) if status.code() == tonic::Code::NotFound => {
                            let _ = registry.register(request.clone()).await;
                        }
                        Err(status) => tracing::warn!("heartbeat failed: {}", status.message()),
                    }
                }
            })
        };
        Self {
            registry,
            instance_id: instance.instance_id,
            heartbeat,
        }
    }

    /// Stops the heartbeat and removes the entry, so callers stop choosing this instance.
    pub async fn deregister(mut self) {
        self.heartbeat.abort();
        let request = DeregisterRequest {
            instance_id: self.instance_id.clone(),
        };
        if let Err(status) = self.registry.deregister(request).await {
            tracing::warn!("could not deregister: {}", status.message());
        }
    }
}
