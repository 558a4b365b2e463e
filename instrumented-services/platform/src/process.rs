//! The life of a demo service process, the same for all: common flags, telemetry, discovery
//! and faults at start; serving until SIGINT/SIGTERM (or an injected crash); then
//! deregistering, draining and flushing spans. This is the services' binary edge, so errors here are `anyhow`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use demo_contracts::Instance;
use tokio::net::TcpListener;

use crate::discovery::{DiscoveryArgs, Registration, Resolver, DEFAULT_TTL};
use crate::faults::{FaultConfig, Faults};
use crate::grpc::ServerLayer;
use crate::telemetry::{self, ServiceIdentity, Telemetry};

/// Flags every service takes (each also readable from the environment, for containers).
#[derive(clap::Args, Debug, Clone)]
pub struct CommonArgs {
    /// Where to listen; port 0 picks a free port.
    #[arg(long, env = "DEMO_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub discovery: DiscoveryArgs,
    /// The address other services use to reach this one (default: the listen address).
    #[arg(long, env = "DEMO_ADVERTISE")]
    pub advertise: Option<String>,
    /// OTLP/gRPC endpoint spans are exported to; `none` exports nothing.
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_ENDPOINT",
        default_value = "http://127.0.0.1:4317"
    )]
    pub otlp_endpoint: String,
    /// `service.instance.id` (default: service name and process id).
    #[arg(long, env = "DEMO_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Where the service keeps its SQLite database.
    #[arg(long, env = "DEMO_DATA_DIR", default_value = "./demo-data")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub faults: FaultConfig,
}

/// A started service: telemetry installed, listener bound, ready to serve.
pub struct Process {
    pub identity: ServiceIdentity,
    pub resolver: Resolver,
    pub faults: Faults,
    pub args: CommonArgs,
    listener: TcpListener,
    telemetry: Telemetry,
}

impl Process {
    /// Binds the listener and installs telemetry; call first thing in `main`.
    pub async fn start(service: &'static str, args: CommonArgs) -> anyhow::Result<Self> {
        let identity = ServiceIdentity {
            name: service,
            instance_id: args
                .instance_id
                .clone()
                .unwrap_or_else(|| format!("{service}-{}", std::process::id())),
            version: env!("CARGO_PKG_VERSION"),
        };
        let endpoint = (args.otlp_endpoint != "none").then_some(args.otlp_endpoint.as_str());
        let telemetry = telemetry::init(&identity, endpoint)?;
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("{service}: cannot listen on {}", args.listen))?;
        let resolver = Resolver::new(&args.discovery)?;
        let faults = Faults::new(args.faults);
        faults.arm_kill_timer();
        Ok(Self {
            identity,
            resolver,
            faults,
            args,
            listener,
            telemetry,
        })
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves `routes` (gRPC services) and the `/admin` endpoints, registered in the registry
    /// (unless discovery is through DNS), until a shutdown signal.
    pub async fn serve_grpc(self, routes: tonic::service::Routes) -> anyhow::Result<()> {
        let local = self.local_addr()?;
        let address = self.args.advertise.clone().unwrap_or_else(|| local.to_string());
        let routes =
            tonic::service::Routes::from(routes.into_axum_router().merge(self.faults.admin_router()));
        let server = tonic::transport::Server::builder()
            .accept_http1(true)
            .layer(ServerLayer::new(self.faults.clone()))
            .add_routes(routes)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(self.listener),
                shutdown_signal(),
            );
        let server = tokio::spawn(server);
        let instance = Instance {
            service: self.identity.name.to_string(),
            instance_id: self.identity.instance_id.clone(),
            address,
        };
        let registration = match self.resolver.registry() {
            Some(registry) => Some(Registration::start(registry, instance, DEFAULT_TTL).await),
            None => None,
        };
        announce(&self.identity, local);
        let served = server.await;
        if let Some(registration) = registration {
            registration.deregister().await;
        }
        self.telemetry.shutdown();
        served?.context("gRPC server")
    }

    /// Serves an HTTP router (the gateway's) and the `/admin` endpoints until a shutdown signal.
    pub async fn serve_http(self, router: axum::Router) -> anyhow::Result<()> {
        let local = self.local_addr()?;
        announce(&self.identity, local);
        let router = router.merge(self.faults.admin_router());
        let served = axum::serve(
            self.listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown_signal())
        .await;
        self.telemetry.shutdown();
        served.context("HTTP server")
    }
}

/// One line on stdout that supervisors and tests wait for.
fn announce(identity: &ServiceIdentity, local: SocketAddr) {
    println!("{} {} ready on {local}", identity.name, identity.instance_id);
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}
