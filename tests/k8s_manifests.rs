//! deploy/k8s/ is consistent with the binaries it runs: every flag and environment variable it
//! passes is one the binary's `--help` lists, every Service selects a Deployment and targets a
//! port it exposes, every address a container is given names a Service port, and listen
//! addresses match container ports. Services find each other through DNS: every service that
//! discovers does so in DNS mode, and its name pattern resolves each gRPC service to a headless
//! Service of that service's Deployment. The Dockerfile at the root puts every binary used into
//! the image and runs as the user the pods expect. (Schema validation against a cluster, and
//! building the image, are not done here.)

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

fn manifests() -> BTreeMap<String, Vec<Yaml>> {
    let dir = common::repo_path("deploy/k8s");
    std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path.file_name().unwrap().to_string_lossy().into_owned(), docs)
        })
        .collect()
}

fn text(yaml: &Yaml) -> String {
    match yaml {
        Yaml::String(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

fn help(binary: &str) -> String {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_ducktrace")).with_file_name(binary);
    let mut command = Command::new(&path);
    if binary == "ducktrace" {
        command.arg("serve");
    }
    let output = command
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (build the whole workspace)", path.display()));
    String::from_utf8(output.stdout).unwrap()
}

/// `host:port` or `http://host:port` → (host, port).
fn host_port(address: &str) -> (String, i64) {
    let address = address.trim_start_matches("http://");
    let (host, port) = address.rsplit_once(':').unwrap();
    (host.to_string(), port.trim_end_matches('/').parse().unwrap())
}

#[test]
fn k8s_manifests_match_the_binaries_and_each_other() {
    let files = manifests();
    let kustomization = &files["kustomization.yaml"][0];
    let listed: BTreeSet<String> = kustomization["resources"]
        .as_vec()
        .unwrap()
        .iter()
        .map(text)
        .collect();
    let present: BTreeSet<String> = files
        .keys()
        .filter(|f| *f != "kustomization.yaml")
        .cloned()
        .collect();
    assert_eq!(listed, present, "kustomization.yaml lists every manifest");

    let docs: Vec<&Yaml> = files.values().flatten().collect();
    let deployments: Vec<&Yaml> = docs
        .iter()
        .copied()
        .filter(|d| d["kind"].as_str() == Some("Deployment"))
        .collect();
    let services: Vec<&Yaml> = docs
        .iter()
        .copied()
        .filter(|d| d["kind"].as_str() == Some("Service"))
        .collect();
    let claims: BTreeSet<String> = docs
        .iter()
        .filter(|d| d["kind"].as_str() == Some("PersistentVolumeClaim"))
        .map(|d| text(&d["metadata"]["name"]))
        .collect();

    // Service name → ports it offers.
    let service_ports: BTreeMap<String, Vec<i64>> = services
        .iter()
        .map(|s| {
            let ports = s["spec"]["ports"]
                .as_vec()
                .unwrap()
                .iter()
                .map(|p| p["port"].as_i64().unwrap())
                .collect();
            (text(&s["metadata"]["name"]), ports)
        })
        .collect();
    let reachable = |address: &str, what: &str| {
        let (host, port) = host_port(address);
        assert!(
            service_ports
                .get(&host)
                .is_some_and(|ports| ports.contains(&port)),
            "{what}: {address} is no Service port ({service_ports:?})"
        );
    };

    // The services callers look up by name, each the Deployment running `demo-<name>`.
    let grpc_services = ["auth", "user", "order", "inventory"];
    // The image the manifests name is built by the Dockerfile at the root.
    let dockerfile = std::fs::read_to_string(common::repo_path("Dockerfile")).unwrap();
    let image_user: i64 = dockerfile
        .lines()
        .find_map(|line| line.strip_prefix("USER "))
        .expect("the Dockerfile sets a USER")
        .trim()
        .parse()
        .expect("a numeric USER, so that runAsNonRoot can check it");
    let mut binaries = BTreeSet::new();
    let mut discovering = BTreeSet::new();
    for deployment in &deployments {
        let name = text(&deployment["metadata"]["name"]);
        let spec = &deployment["spec"];
        assert_eq!(
            spec["selector"]["matchLabels"], spec["template"]["metadata"]["labels"],
            "{name}: the selector matches the pod labels"
        );
        let pod = &spec["template"]["spec"];
        for volume in pod["volumes"].as_vec().into_iter().flatten() {
            if let Some(claim) = volume["persistentVolumeClaim"]["claimName"].as_str() {
                assert!(claims.contains(claim), "{name}: claim {claim} is defined");
            }
        }
        let security = &pod["securityContext"];
        assert_eq!(
            (security["runAsUser"].as_i64(), security["fsGroup"].as_i64()),
            (Some(image_user), Some(image_user)),
            "{name}: runs as the image's user, volumes writable for it"
        );
        let containers = pod["containers"].as_vec().unwrap();
        assert_eq!(containers.len(), 1, "{name}");
        let container = &containers[0];
        assert_eq!(
            container["image"].as_str(),
            Some("ducktrace-demo:latest"),
            "{name}: one image"
        );
        let binary = text(&container["command"][0]);
        binaries.insert(binary.clone());
        let help = help(&binary);
        let container_ports: Vec<i64> = container["ports"]
            .as_vec()
            .into_iter()
            .flatten()
            .map(|p| p["containerPort"].as_i64().unwrap())
            .collect();

        let args: Vec<String> = container["args"].as_vec().unwrap().iter().map(text).collect();
        for (i, arg) in args.iter().enumerate() {
            if !arg.starts_with("--") {
                continue;
            }
            assert!(
                help.contains(&format!("{arg} ")),
                "{name}: {binary} has no flag {arg}"
            );
            let value = &args[i + 1];
            match arg.as_str() {
                "--listen" | "--otlp-grpc-addr" | "--otlp-http-addr" | "--http-addr" => {
                    assert!(
                        container_ports.contains(&host_port(value).1),
                        "{name}: {arg} {value} is a container port"
                    )
                }
                "--gateway" => reachable(value, &name),
                _ => {}
            }
        }
        let env: BTreeMap<String, String> = container["env"]
            .as_vec()
            .into_iter()
            .flatten()
            .filter_map(|v| Some((text(&v["name"]), v["value"].as_str()?.to_string())))
            .collect();
        if help.contains("[env: DEMO_DISCOVERY=") {
            discovering.insert(name.clone());
            assert_eq!(
                env.get("DEMO_DISCOVERY").map(String::as_str),
                Some("dns"),
                "{name}: discovers through DNS in Kubernetes"
            );
            assert!(
                !env.contains_key("DEMO_REGISTRY") && !env.contains_key("DEMO_ADVERTISE"),
                "{name}: nothing registers in DNS mode"
            );
            let pattern = env
                .get("DEMO_DNS_PATTERN")
                .unwrap_or_else(|| panic!("{name}: DEMO_DNS_PATTERN is set"));
            for callee in grpc_services {
                let address = pattern.replace("{service}", callee);
                reachable(&address, &name);
                let (host, _) = host_port(&address);
                let service = services
                    .iter()
                    .find(|s| s["metadata"]["name"].as_str() == Some(host.as_str()))
                    .unwrap();
                assert_eq!(
                    service["spec"]["clusterIP"].as_str(),
                    Some("None"),
                    "{name}: {host} is headless, so its DNS name lists every pod"
                );
                let target = deployments
                    .iter()
                    .find(|d| d["spec"]["template"]["metadata"]["labels"] == service["spec"]["selector"])
                    .unwrap_or_else(|| panic!("Service {host} selects no Deployment"));
                assert_eq!(
                    text(&target["spec"]["template"]["spec"]["containers"][0]["command"][0]),
                    format!("demo-{callee}"),
                    "{name}: the DNS name of {callee} leads to {callee}'s pods"
                );
            }
        }
        for variable in container["env"].as_vec().into_iter().flatten() {
            let key = text(&variable["name"]);
            assert!(
                help.contains(&format!("[env: {key}=")),
                "{name}: {binary} reads no {key}"
            );
            let Some(value) = variable["value"].as_str() else {
                continue;
            };
            match key.as_str() {
                "DEMO_LISTEN" => assert!(
                    container_ports.contains(&host_port(value).1),
                    "{name}: listens on a container port"
                ),
                "OTEL_EXPORTER_OTLP_ENDPOINT" => reachable(value, &name),
                _ => {}
            }
        }
    }

    for service in &services {
        let name = text(&service["metadata"]["name"]);
        let selector = &service["spec"]["selector"];
        let target = deployments
            .iter()
            .find(|d| d["spec"]["template"]["metadata"]["labels"] == *selector)
            .unwrap_or_else(|| panic!("Service {name} selects no Deployment"));
        let container_ports: Vec<i64> = target["spec"]["template"]["spec"]["containers"][0]["ports"]
            .as_vec()
            .unwrap()
            .iter()
            .map(|p| p["containerPort"].as_i64().unwrap())
            .collect();
        for port in service["spec"]["ports"].as_vec().unwrap() {
            let target_port = port["targetPort"].as_i64().unwrap();
            assert!(
                container_ports.contains(&target_port),
                "Service {name}: targetPort {target_port}"
            );
        }
    }

    let expected: BTreeSet<String> = [
        "ducktrace",
        "demo-auth",
        "demo-user",
        "demo-order",
        "demo-inventory",
        "demo-api-gateway",
        "demo-loadgen",
    ]
    .map(String::from)
    .into();
    assert_eq!(
        binaries, expected,
        "every process of the demo is deployed (no registry: DNS finds the services)"
    );
    for binary in &binaries {
        assert!(
            dockerfile.contains(&format!("target/release/{binary} ")),
            "the Dockerfile puts {binary} into the image"
        );
    }
    let callers: BTreeSet<String> = ["api-gateway", "auth", "user", "order", "inventory"]
        .map(String::from)
        .into();
    assert_eq!(discovering, callers, "every service takes the discovery flags");
    let inventory = deployments
        .iter()
        .find(|d| d["metadata"]["name"].as_str() == Some("inventory"))
        .unwrap();
    assert_eq!(
        inventory["spec"]["replicas"].as_i64(),
        Some(2),
        "two inventory instances"
    );
}
