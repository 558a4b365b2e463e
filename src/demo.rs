//! `ducktrace demo`: ducktrace itself plus the instrumented microservices of
//! `instrumented-services/` and their load generator, each a child process. Faults can be given
//! to chosen services at start (`--fault inventory-2:kill-after=30`); services that die (so
//! injected, or through `POST /admin/kill`) are restarted after `--restart-delay`; Ctrl-C stops
//! everything.

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
    /// A fault given to services at start, as `<target>:<fault>=<value>`: the target is a
    /// service (`inventory`: all its instances) or one instance (`inventory-2`); the faults are
    /// latency-ms, error-rate, lost-ack-rate (0.0 to 1.0) and kill-after (seconds after each
    /// start). Repeat for more.
    #[arg(long = "fault", value_name = "TARGET:FAULT=VALUE", value_parser = parse_fault)]
    faults: Vec<Fault>,
    /// Seconds between a service's death and its restart.
    #[arg(long, default_value_t = 1.0, value_parser = parse_seconds)]
    restart_delay: f64,
}

/// A fault flag for the services `target` names.
#[derive(Clone, Debug)]
struct Fault {
    target: String,
    /// The service's flag, e.g. `--fault-error-rate`.
    flag: &'static str,
    value: String,
}

fn parse_fault(text: &str) -> Result<Fault, String> {
    let (target, setting) = text.split_once(':').ok_or_else(|| {
        format!("a fault is TARGET:FAULT=VALUE, e.g. inventory:error-rate=0.5; got {text:?}")
    })?;
    let (name, value) = setting.split_once('=').ok_or_else(|| {
        format!("a fault is TARGET:FAULT=VALUE, e.g. inventory:error-rate=0.5; got {text:?}")
    })?;
    let whole = value.parse::<u64>().is_ok();
    let rate = value.parse::<f64>().is_ok_and(|rate| (0.0..=1.0).contains(&rate));
    let (flag, valid) = match name {
        "latency-ms" => ("--fault-latency-ms", whole),
        "kill-after" => ("--fault-kill-after", whole),
        "error-rate" => ("--fault-error-rate", rate),
        "lost-ack-rate" => ("--fault-lost-ack-rate", rate),
        other => {
            return Err(format!(
                "unknown fault {other:?}: latency-ms, error-rate, lost-ack-rate or kill-after"
            ))
        }
    };
    if !valid {
        return Err(format!(
            "{name}={value}: latency-ms and kill-after take whole numbers, the rates 0.0 to 1.0"
        ));
    }
    Ok(Fault {
        target: target.to_string(),
        flag,
        value: value.to_string(),
    })
}

fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(secs) if (0.0..=3600.0).contains(&secs) => Ok(secs),
        _ => Err(format!("a delay is 0 to 3600 seconds, got {text:?}")),
    }
}

/// One supervised process: how to start it and the running child.
struct Supervised {
    name: String,
    command: Box<dyn Fn() -> Command + Send>,
    child: Option<Child>,
    /// Restart after exit (not the load generator, which ends by itself only on error).
    restart: bool,
    /// When a dead child is due to start again.
    restart_at: Option<Instant>,
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
            restart_at: None,
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
    let targets: Vec<String> = ["auth", "user", "order", "api-gateway", "inventory"]
        .map(String::from)
        .into_iter()
        .chain((1..=args.inventory_instances).map(|n| format!("inventory-{n}")))
        .collect();
    if let Some(unknown) = args.faults.iter().find(|f| !targets.contains(&f.target)) {
        anyhow::bail!(
            "--fault {}: no such service; targets are {}",
            unknown.target,
            targets.join(", ")
        );
    }
    // The fault flags of a service's instance (`inventory`, `inventory-2`).
    let faults_of = |service: &str, instance: &str| -> Vec<String> {
        args.faults
            .iter()
            .filter(|f| f.target == service || f.target == instance)
            .flat_map(|f| [f.flag.to_string(), f.value.clone()])
            .collect()
    };
    let service = |binary: &str, mut extra: Vec<String>| -> Box<dyn Fn() -> Command + Send> {
        let name = binary.trim_start_matches("demo-");
        let instance = extra
            .iter()
            .position(|arg| arg == "--instance-id")
            .map_or(name, |i| extra[i + 1].as_str());
        let faults = faults_of(name, instance);
        extra.extend(faults);
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
    for fault in &args.faults {
        println!(
            "  fault at start: {} {} {}",
            fault.target, fault.flag, fault.value
        );
    }
    let stopping = Arc::new(AtomicBool::new(false));
    let supervisor = {
        let stopping = stopping.clone();
        let delay = Duration::from_secs_f64(args.restart_delay);
        tokio::task::spawn_blocking(move || supervise(processes, delay, &stopping))
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

/// Starts everything in order, restarts what dies `restart_delay` later (each on its own
/// schedule), and on `stopping` stops all in reverse order.
fn supervise(
    mut processes: Vec<Supervised>,
    restart_delay: Duration,
    stopping: &AtomicBool,
) -> anyhow::Result<()> {
    for process in &mut processes {
        start(process);
        // The collector and registry first, so the others find them at once.
        std::thread::sleep(Duration::from_millis(300));
    }
    while !stopping.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        for process in &mut processes {
            if process.restart_at.is_some_and(|at| Instant::now() >= at) {
                process.restart_at = None;
                eprintln!("ducktrace demo: restarting {}", process.name);
                start(process);
            }
            let Some(child) = &mut process.child else { continue };
            if let Ok(Some(status)) = child.try_wait() {
                process.child = None;
                if process.restart {
                    eprintln!(
                        "ducktrace demo: {} exited ({status}); restarting in {:.1} s",
                        process.name,
                        restart_delay.as_secs_f64()
                    );
                    process.restart_at = Some(Instant::now() + restart_delay);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_flags_become_service_flags() {
        let fault = parse_fault("inventory-2:kill-after=30").unwrap();
        assert_eq!(
            (fault.target.as_str(), fault.flag, fault.value.as_str()),
            ("inventory-2", "--fault-kill-after", "30")
        );
        assert_eq!(
            parse_fault("order:latency-ms=200").unwrap().flag,
            "--fault-latency-ms"
        );
        assert_eq!(
            parse_fault("inventory:error-rate=0.5").unwrap().flag,
            "--fault-error-rate"
        );
        assert_eq!(
            parse_fault("inventory:lost-ack-rate=1").unwrap().flag,
            "--fault-lost-ack-rate"
        );
        for bad in [
            "inventory",
            "inventory:error-rate",
            "inventory:error-rate=1.5",
            "inventory:kill-after=-3",
            "inventory:latency-ms=0.5",
            "inventory:explode=1",
        ] {
            assert!(parse_fault(bad).is_err(), "{bad}");
        }
    }
}
