//! `demo-registry`: the demo's service registry. Instances register with a time-to-live and
//! renew it by heartbeat; an entry whose lease lapses (the process died) disappears, so callers
//! stop choosing it. State is in memory: after a restart, instances re-register on their next
//! heartbeat.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use demo_contracts::registry_server::{Registry, RegistryServer};
use demo_contracts::{
    DeregisterRequest, Empty, HeartbeatRequest, Instance, Lease, RegisterRequest, ResolveRequest,
    ResolveResponse,
};
use tonic::{Request, Response, Status};

/// The demo's service registry.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Where to listen for registrations and lookups.
    #[arg(long, env = "DEMO_REGISTRY_LISTEN", default_value = "127.0.0.1:50050")]
    listen: SocketAddr,
}

/// The longest lease granted, so a dead instance never lingers.
const MAX_TTL: Duration = Duration::from_secs(60);

struct Entry {
    instance: Instance,
    ttl: Duration,
    expires: Instant,
}

#[derive(Default, Clone)]
struct Instances(Arc<Mutex<HashMap<String, Entry>>>);

impl Instances {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[tonic::async_trait]
impl Registry for Instances {
    async fn register(&self, request: Request<RegisterRequest>) -> Result<Response<Lease>, Status> {
        let request = request.into_inner();
        let instance = request
            .instance
            .filter(|i| !i.service.is_empty() && !i.instance_id.is_empty() && !i.address.is_empty())
            .ok_or_else(|| Status::invalid_argument("an instance needs service, instance_id and address"))?;
        let ttl = Duration::from_millis(request.ttl_ms.into()).clamp(Duration::from_secs(1), MAX_TTL);
        tracing::info!(service = %instance.service, instance = %instance.instance_id, address = %instance.address, "registered");
        self.lock().insert(
            instance.instance_id.clone(),
            Entry {
                instance,
                ttl,
                expires: Instant::now() + ttl,
            },
        );
        Ok(Response::new(Lease {
            ttl_ms: ttl.as_millis() as u32,
        }))
    }

    async fn heartbeat(&self, request: Request<HeartbeatRequest>) -> Result<Response<Lease>, Status> {
        let id = request.into_inner().instance_id;
        let mut instances = self.lock();
        let entry = instances
            .get_mut(&id)
            .filter(|entry| entry.expires > Instant::now())
            .ok_or_else(|| Status::not_found(format!("{id} is not registered: register again")))?;
        entry.expires = Instant::now() + entry.ttl;
        Ok(Response::new(Lease {
            ttl_ms: entry.ttl.as_millis() as u32,
        }))
    }

    async fn deregister(&self, request: Request<DeregisterRequest>) -> Result<Response<Empty>, Status> {
        let id = request.into_inner().instance_id;
        if self.lock().remove(&id).is_some() {
            tracing::info!(instance = %id, "deregistered");
        }
        Ok(Response::new(Empty {}))
    }

    async fn resolve(&self, request: Request<ResolveRequest>) -> Result<Response<ResolveResponse>, Status> {
        let service = request.into_inner().service;
        let now = Instant::now();
        let mut instances = self.lock();
        instances.retain(|id, entry| {
            let live = entry.expires > now;
            if !live {
                tracing::warn!(instance = %id, "lease expired");
            }
            live
        });
        let instances = instances
            .values()
            .filter(|entry| entry.instance.service == service)
            .map(|entry| entry.instance.clone())
            .collect();
        Ok(Response::new(ResolveResponse { instances }))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let telemetry = demo_platform::telemetry::init(
        &demo_platform::telemetry::ServiceIdentity {
            name: "registry",
            instance_id: format!("registry-{}", std::process::id()),
            version: env!("CARGO_PKG_VERSION"),
        },
        None,
    )?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("registry: cannot listen on {}", args.listen))?;
    println!("registry ready on {}", listener.local_addr()?);
    tonic::transport::Server::builder()
        .add_service(RegistryServer::new(Instances::default()))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            demo_platform::process::shutdown_signal(),
        )
        .await?;
    telemetry.shutdown();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str) -> Instance {
        Instance {
            service: "inventory".into(),
            instance_id: id.into(),
            address: "127.0.0.1:50051".into(),
        }
    }

    async fn resolve(registry: &Instances) -> Vec<String> {
        let request = Request::new(ResolveRequest {
            service: "inventory".into(),
        });
        let answer = registry.resolve(request).await.unwrap().into_inner();
        let mut ids: Vec<String> = answer.instances.into_iter().map(|i| i.instance_id).collect();
        ids.sort();
        ids
    }

    async fn register(registry: &Instances, id: &str, ttl_ms: u32) {
        let request = RegisterRequest {
            instance: Some(instance(id)),
            ttl_ms,
        };
        registry.register(Request::new(request)).await.unwrap();
    }

    #[tokio::test]
    async fn instances_come_and_go_with_registration_and_lease() {
        let registry = Instances::default();
        register(&registry, "inventory-1", 60_000).await;
        register(&registry, "inventory-2", 1_000).await;
        assert_eq!(resolve(&registry).await, ["inventory-1", "inventory-2"]);

        let request = DeregisterRequest {
            instance_id: "inventory-1".into(),
        };
        registry.deregister(Request::new(request)).await.unwrap();
        assert_eq!(resolve(&registry).await, ["inventory-2"]);

        // Without heartbeats the 1 s lease (the shortest granted) lapses.
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        assert!(resolve(&registry).await.is_empty());
        let request = HeartbeatRequest {
            instance_id: "inventory-2".into(),
        };
        let refused = registry.heartbeat(Request::new(request)).await.unwrap_err();
        assert_eq!(
            refused.code(),
            tonic::Code::NotFound,
            "a lapsed instance must register again"
        );
    }

    #[tokio::test]
    async fn incomplete_registrations_are_refused() {
        let registry = Instances::default();
        let request = RegisterRequest {
            instance: Some(Instance {
                address: String::new(),
                ..instance("inventory-1")
            }),
            ttl_ms: 1_000,
        };
        let refused = registry.register(Request::new(request)).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    }
}
