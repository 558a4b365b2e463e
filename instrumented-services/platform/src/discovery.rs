//! Service discovery, in one of two modes ([`DiscoveryMode`]):
//!
//! - **registry** (the default): an instance registers its address with the registry process
//!   with a time-to-live and renews it by heartbeat, deregistering on shutdown; callers ask the
//!   registry for a service's live instances.
//! - **dns** (Kubernetes): nothing registers; callers resolve a DNS name per service (a headless
//!   Service has one A record per ready pod) with the system resolver.
//!
//! Either way callers cache the instance list briefly and take the instances in turn (round
//! robin); the chosen instance becomes the `peer.instance.id` of the call's span.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use demo_contracts::registry_client::RegistryClient;
use demo_contracts::{DeregisterRequest, HeartbeatRequest, Instance, RegisterRequest, ResolveRequest};
use futures_util::future::BoxFuture;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

/// How long a registration lives without a heartbeat; heartbeats come three times as often.
pub const DEFAULT_TTL: Duration = Duration::from_secs(6);
/// How long a resolved instance list is reused before asking the registry (or DNS) again.
const CACHE_FOR: Duration = Duration::from_secs(2);
/// Time to open a connection to any instance.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// What `{service}` in a DNS name pattern stands for.
const SERVICE_PLACEHOLDER: &str = "{service}";

/// Why no instance could be chosen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DiscoveryError {
    #[error("bad registry address {address:?}: {reason}")]
    BadAddress { address: String, reason: String },
    #[error("the registry did not answer: {0}")]
    Registry(String),
    #[error("cannot resolve {name:?} (the DNS name of {service}): {reason}")]
    Dns {
        service: String,
        name: String,
        reason: String,
    },
    #[error("no live instance of {0} is known")]
    NoInstance(String),
}

/// Where callers find the instances of a service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DiscoveryMode {
    /// Ask the registry process, where every instance registers itself.
    #[default]
    Registry,
    /// Resolve the service's DNS name (e.g. a Kubernetes headless Service); nothing registers.
    Dns,
}

/// The discovery flags every service takes.
#[derive(clap::Args, Debug, Clone)]
pub struct DiscoveryArgs {
    /// How to find other services: through the registry, or through DNS (Kubernetes).
    #[arg(long, env = "DEMO_DISCOVERY", value_enum, default_value_t = DiscoveryMode::Registry)]
    pub discovery: DiscoveryMode,
    /// The registry's gRPC address (registry mode).
    #[arg(long, env = "DEMO_REGISTRY", default_value = "127.0.0.1:50050")]
    pub registry: String,
    /// The `host:port` resolved for a service in DNS mode; `{service}` stands for its name.
    #[arg(long, env = "DEMO_DNS_PATTERN", default_value = "{service}:50051",
          value_parser = parse_dns_pattern)]
    pub dns_pattern: String,
    /// `service=host:port` for a service whose DNS name does not follow the pattern (DNS
    /// mode); repeat the flag, or separate them with commas in the environment.
    #[arg(long = "dns-name", env = "DEMO_DNS_NAMES", value_delimiter = ',',
          value_parser = parse_dns_name)]
    pub dns_names: Vec<(String, String)>,
}

fn parse_dns_pattern(text: &str) -> Result<String, String> {
    match text.rsplit_once(':') {
        Some((host, port)) if host.contains(SERVICE_PLACEHOLDER) && port.parse::<u16>().is_ok() => {
            Ok(text.to_string())
        }
        _ => Err(format!(
            "a DNS name pattern is host:port with {SERVICE_PLACEHOLDER} in the host, e.g. \
             {SERVICE_PLACEHOLDER}.demo.svc.cluster.local:50051; got {text:?}"
        )),
    }
}

fn parse_dns_name(text: &str) -> Result<(String, String), String> {
    let parsed = text.split_once('=').and_then(|(service, name)| {
        let (host, port) = name.rsplit_once(':')?;
        (!service.is_empty() && !host.is_empty() && port.parse::<u16>().is_ok())
            .then(|| (service.to_string(), name.to_string()))
    });
    parsed.ok_or_else(|| {
        format!("a DNS name is service=host:port, e.g. inventory=localhost:50061; got {text:?}")
    })
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

/// Resolves a `host:port` name to socket addresses: the system resolver (tokio's
/// `lookup_host`), or a fixed table in unit tests.
type Lookup = fn(String) -> BoxFuture<'static, std::io::Result<Vec<SocketAddr>>>;

fn system_lookup(name: String) -> BoxFuture<'static, std::io::Result<Vec<SocketAddr>>> {
    Box::pin(async move { Ok(tokio::net::lookup_host(name).await?.collect()) })
}

/// Where the instance lists come from.
#[derive(Clone)]
enum Source {
    Registry(RegistryClient<Channel>),
    Dns {
        pattern: String,
        names: Arc<HashMap<String, String>>,
        lookup: Lookup,
    },
}

/// Resolves service names to instances; one per process, cheap to clone.
#[derive(Clone)]
pub struct Resolver {
    source: Source,
    cache: Arc<Mutex<HashMap<String, Cached>>>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// Round-robin position per service, so turns of one service do not skip another's.
    turns: Arc<Mutex<HashMap<String, usize>>>,
}

impl Resolver {
    /// A resolver in the mode the flags choose; nothing connects or resolves until first use.
    pub fn new(args: &DiscoveryArgs) -> Result<Self, DiscoveryError> {
        let source = match args.discovery {
            DiscoveryMode::Registry => Source::Registry(RegistryClient::new(channel(&args.registry)?)),
            DiscoveryMode::Dns => Source::Dns {
                pattern: args.dns_pattern.clone(),
                names: Arc::new(args.dns_names.iter().cloned().collect()),
                lookup: system_lookup,
            },
        };
        Ok(Self {
            source,
            cache: Arc::default(),
            channels: Arc::default(),
            turns: Arc::default(),
        })
    }

    /// The registry's client, for registration; `None` in DNS mode, where nothing registers.
    pub fn registry(&self) -> Option<RegistryClient<Channel>> {
        match &self.source {
            Source::Registry(registry) => Some(registry.clone()),
            Source::Dns { .. } => None,
        }
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
        let mut instances = match &self.source {
            Source::Registry(registry) => {
                registry
                    .clone()
                    .resolve(ResolveRequest {
                        service: service.to_string(),
                    })
                    .await
                    .map_err(|status| DiscoveryError::Registry(status.message().to_string()))?
                    .into_inner()
                    .instances
            }
            Source::Dns {
                pattern,
                names,
                lookup,
            } => {
                let name = names
                    .get(service)
                    .cloned()
                    .unwrap_or_else(|| pattern.replace(SERVICE_PLACEHOLDER, service));
                let addresses = lookup(name.clone()).await.map_err(|error| DiscoveryError::Dns {
                    service: service.to_string(),
                    name,
                    reason: error.to_string(),
                })?;
                // DNS knows no instance ids: an instance is its address.
                addresses
                    .into_iter()
                    .map(|address| Instance {
                        service: service.to_string(),
                        instance_id: address.to_string(),
                        address: address.to_string(),
                    })
                    .collect()
            }
        };
        if instances.is_empty() {
            return Err(DiscoveryError::NoInstance(service.to_string()));
        }
        // A stable order for the turns; a resolver may also list an address twice.
        instances.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        instances.dedup_by(|a, b| a.instance_id == b.instance_id);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The names looked up by [`three_addresses`], in order.
    static LOOKED_UP: Mutex<Vec<String>> = Mutex::new(Vec::new());

    /// A DNS answer with three addresses, one listed twice, out of order.
    fn three_addresses(name: String) -> BoxFuture<'static, std::io::Result<Vec<SocketAddr>>> {
        LOOKED_UP.lock().unwrap().push(name);
        let answer = [
            "127.0.0.3:7003",
            "127.0.0.1:7001",
            "127.0.0.2:7002",
            "127.0.0.1:7001",
        ];
        Box::pin(async move { Ok(answer.iter().map(|a| a.parse().unwrap()).collect()) })
    }

    fn dns_args(names: &[&str]) -> DiscoveryArgs {
        DiscoveryArgs {
            discovery: DiscoveryMode::Dns,
            registry: "127.0.0.1:50050".into(),
            dns_pattern: "{service}.demo.svc.cluster.local:50051".into(),
            dns_names: names.iter().map(|n| parse_dns_name(n).unwrap()).collect(),
        }
    }

    #[tokio::test]
    async fn dns_mode_takes_every_address_in_turn_and_caches_the_answer() {
        let mut resolver = Resolver::new(&dns_args(&["user=users.example:9000"])).unwrap();
        assert!(resolver.registry().is_none(), "nothing registers in DNS mode");
        if let Source::Dns { lookup, .. } = &mut resolver.source {
            *lookup = three_addresses;
        }
        let mut chosen = Vec::new();
        for _ in 0..6 {
            chosen.push(resolver.choose("inventory").await.unwrap().instance_id);
        }
        let first: Vec<&str> = chosen[..3].iter().map(String::as_str).collect();
        let mut sorted = first.clone();
        sorted.sort();
        assert_eq!(sorted, ["127.0.0.1:7001", "127.0.0.2:7002", "127.0.0.3:7003"]);
        assert_eq!(chosen[..3], chosen[3..], "round robin repeats the same order");
        assert_eq!(
            *LOOKED_UP.lock().unwrap(),
            ["inventory.demo.svc.cluster.local:50051"],
            "one lookup, then the cache"
        );
        let user = resolver.choose("user").await.unwrap();
        assert_eq!(user.address, user.instance_id);
        resolver.invalidate("inventory");
        resolver.choose("inventory").await.unwrap();
        assert_eq!(
            LOOKED_UP.lock().unwrap()[1..],
            ["users.example:9000", "inventory.demo.svc.cluster.local:50051"],
            "a name given per service wins over the pattern; invalidating looks up again"
        );
    }

    #[tokio::test]
    async fn dns_mode_resolves_through_the_system_resolver() {
        let resolver = Resolver::new(&dns_args(&["inventory=localhost:50099"])).unwrap();
        let expected: Vec<String> = tokio::net::lookup_host("localhost:50099")
            .await
            .unwrap()
            .map(|a| a.to_string())
            .collect();
        assert!(expected.contains(&"127.0.0.1:50099".to_string()), "{expected:?}");
        let mut chosen: Vec<String> = Vec::new();
        for _ in 0..expected.len() {
            chosen.push(resolver.choose("inventory").await.unwrap().address);
        }
        chosen.sort();
        let mut expected = expected;
        expected.sort();
        expected.dedup();
        assert_eq!(chosen, expected, "each address of localhost once per round");
        let unknown = resolver.choose("no-such-service.invalid").await.unwrap_err();
        assert!(matches!(unknown, DiscoveryError::Dns { .. }), "{unknown}");
    }

    #[test]
    fn dns_flags_are_checked() {
        assert!(parse_dns_pattern("{service}:50051").is_ok());
        assert!(parse_dns_pattern("inventory:50051").is_err(), "no placeholder");
        assert!(parse_dns_pattern("{service}").is_err(), "no port");
        assert_eq!(
            parse_dns_name("auth=localhost:7000"),
            Ok(("auth".to_string(), "localhost:7000".to_string()))
        );
        assert!(parse_dns_name("auth=localhost").is_err(), "no port");
        assert!(parse_dns_name("localhost:7000").is_err(), "no service");
    }
}
