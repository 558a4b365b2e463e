//! `ducktrace demo`: ducktrace itself plus the instrumented microservices of
//! `instrumented-services/` and their load generator, each a child process. Services that die
//! (e.g. through `POST /admin/kill`) are restarted; Ctrl-C stops everything.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

#[derive(Args)]
pub struct DemoArgs {
    /// Where ducktrace's span store and the services' SQLite files live.
    #[arg(long, default_value = "./ducktrace-demo")]
    data_dir: PathBuf,
    /// ducktrace's UI and API.
    #[arg(long, default_value = "127.0.0.1:16686")]
    http_addr: SocketAddr,
    /// ducktrace's OTLP/gRPC receiver, where the services export.
    #[arg(long, default_value = "127.0.0.1:4317")]
    otlp_grpc_addr: SocketAddr,
    /// ducktrace's OTLP/HTTP receiver.
    #[arg(long, default_value = "127.0.0.1:4318")]
    otlp_http_addr: SocketAddr,
    /// The service registry.
    #[arg(long, default_value = "127.0.0.1:50050")]
    registry_addr: SocketAddr,
    /// The gateway's REST API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    gateway_addr: SocketAddr,
    /// Inventory instances.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=8))]
    inventory_instances: u32,
    /// Requests per second of the load generator; 0 starts none.
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// Send order events through this NATS JetStream server (`nats://127.0.0.1:4222`, started
    /// separately with `nats-server -js`) instead of straight to inventory over gRPC.
    #[arg(long)]
    nats_url: Option<String>,
}

/// One supervised process: how to start it and the running child.
struct Supervised {
    name: String,
    command: Box<dyn Fn() -> Command + Send>,
    child: Option<Child>,
    /// Restart after exit (not the load generator, which ends by itself only on error).
    restart: bool,
}

/// How long each child gets to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The directory holding the `demo-*` binaries: the one holding this executable.
fn binaries() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the ducktrace executable")?;
    let dir = exe
        .parent()
        .context("the executable has no directory")?
        .to_owned();
    if !dir.join("demo-api-gateway").exists() {
        anyhow::bail!(
            "the demo services are not next to {} (build them with `cargo build --release --workspace`)",
            exe.display()
        );
    }
    Ok(dir)
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let bin = binaries()?;
    let exe = std::env::current_exe()?;
    let services_dir = args.data_dir.join("services");
    let otlp = format!("http://{}", args.otlp_grpc_addr);
    let registry = args.registry_addr.to_string();
    let mut processes = Vec::new();
    let mut add = |name: &str, restart: bool, make: Box<dyn Fn() -> Command + Send>| {
        processes.push(Supervised {
            name: name.to_string(),
            command: make,
            child: None,
            restart,
        })
    };

    let store_dir = args.data_dir.join("ducktrace");
    let (grpc, http, ui) = (args.otlp_grpc_addr, args.otlp_http_addr, args.http_addr);
    add(
        "ducktrace",
        true,
        Box::new(move || {
            let mut command = Command::new(&exe);
            command.arg("serve").arg("--data-dir").arg(&store_dir);
            command.args([
                "--otlp-grpc-addr",
                &grpc.to_string(),
                "--otlp-http-addr",
                &http.to_string(),
            ]);
            command.args(["--http-addr", &ui.to_string()]);
            command
        }),
    );
    let service = |binary: &str, extra: Vec<String>| -> Box<dyn Fn() -> Command + Send> {
        let (path, otlp, registry, dir) = (
            bin.join(binary),
            otlp.clone(),
            registry.clone(),
            services_dir.clone(),
        );
        Box::new(move || {
            let mut command = Command::new(&path);
            command.args(["--registry", &registry, "--otlp-endpoint", &otlp]);
            command
                .arg("--data-dir")
                .arg(&dir)
                .args(&extra)
                .env("DEMO_LOG", "warn");
            command
        })
    };
    add(
        "registry",
        true,
        Box::new({
            let (path, registry) = (bin.join("demo-registry"), registry.clone());
            move || {
                let mut command = Command::new(&path);
                command.args(["--listen", &registry]).env("DEMO_LOG", "warn");
                command
            }
        }),
    );
    let nats: Vec<String> = match &args.nats_url {
        Some(url) => vec!["--nats-url".into(), url.clone()],
        None => Vec::new(),
    };
    for name in ["auth", "user"] {
        add(name, true, service(&format!("demo-{name}"), Vec::new()));
    }
    add("order", true, service("demo-order", nats.clone()));
    for n in 1..=args.inventory_instances {
        let id = format!("inventory-{n}");
        let mut extra = vec!["--instance-id".into(), id.clone()];
        extra.extend(nats.iter().cloned());
        add(&id, true, service("demo-inventory", extra));
    }
    add(
        "api-gateway",
        true,
        service(
            "demo-api-gateway",
            vec!["--listen".into(), args.gateway_addr.to_string()],
        ),
    );
    if args.rate > 0.0 {
        let (path, gateway, otlp, rate) = (
            bin.join("demo-loadgen"),
            args.gateway_addr,
            otlp.clone(),
            args.rate,
        );
        add(
            "loadgen",
            false,
            Box::new(move || {
                let mut command = Command::new(&path);
                command.args([
                    "--gateway",
                    &format!("http://{gateway}"),
                    "--otlp-endpoint",
                    &otlp,
                ]);
                command.args(["--rate", &rate.to_string(), "--duration", "0"]);
                command
            }),
        );
    }

    println!("ducktrace demo: starting ducktrace, the registry and the services");
    println!("  traces (UI)  http://{}/", args.http_addr);
    println!(
        "  REST API     http://{}/api/login  (users alice, bob, …; password demo)",
        args.gateway_addr
    );
    println!("  Ctrl-C stops everything");
    println!("  faults: PUT http://<service address>/admin/faults {{\"latency_ms\":200,\"error_rate\":0.3}}");
    let stopping = Arc::new(AtomicBool::new(false));
    let supervisor = {
        let stopping = stopping.clone();
        tokio::task::spawn_blocking(move || supervise(processes, &stopping))
    };
    crate::serve::shutdown_signal().await;
    println!("ducktrace demo: stopping");
    stopping.store(true, Ordering::Relaxed);
    supervisor.await?
}

fn start(process: &mut Supervised) {
    let mut command = (process.command)();
    // Its own process group: Ctrl-C in the terminal reaches only us, and we stop the children
    // in order.
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    match command.spawn() {
        Ok(child) => process.child = Some(child),
        Err(error) => eprintln!("ducktrace demo: cannot start {}: {error}", process.name),
    }
}

/// Starts everything in order, restarts what dies, and on `stopping` stops all in reverse order.
fn supervise(mut processes: Vec<Supervised>, stopping: &AtomicBool) -> anyhow::Result<()> {
    for process in &mut processes {
        start(process);
        // The collector and registry first, so the others find them at once.
        std::thread::sleep(Duration::from_millis(300));
    }
    while !stopping.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        for process in &mut processes {
            let Some(child) = &mut process.child else { continue };
            if let Ok(Some(status)) = child.try_wait() {
                process.child = None;
                if process.restart && !stopping.load(Ordering::Relaxed) {
                    eprintln!(
                        "ducktrace demo: {} exited ({status}); restarting in 1 s",
                        process.name
                    );
                    std::thread::sleep(Duration::from_secs(1));
                    if !stopping.load(Ordering::Relaxed) {
                        start(process);
                    }
                }
            }
        }
    }
    // One by one, callers before callees and ducktrace last, so every span is exported.
    for process in processes.iter_mut().rev() {
        if let Some(child) = &mut process.child {
            terminate(child);
            wait_or_kill(&process.name, child, Instant::now() + STOP_TIMEOUT);
        }
    }
    Ok(())
}

/// Asks a child to stop as Ctrl-C would (SIGTERM), so it deregisters and flushes its spans.
fn terminate(child: &Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
}

fn wait_or_kill(name: &str, child: &mut Child, deadline: Instant) {
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("ducktrace demo: {name} did not stop in time; killing it");
    let _ = child.kill();
    let _ = child.wait();
}
