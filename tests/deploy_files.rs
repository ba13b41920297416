//! The deployment files must not drift from the code. No Docker engine runs where the tests run, so
//! the files are parsed and checked against what the binary really reads and serves: every
//! LOOKALIKE_* variable is a setting (an unknown one would stop the service at startup), every
//! command is a subcommand, every healthcheck probes the port its process listens on, every
//! workspace crate reaches the image build, and the CI file runs the README's test command.

use std::collections::BTreeSet;
use std::path::Path;

use lookalike_core::Config;
use serde_yaml::Value;

fn read(file: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file))
        .unwrap_or_else(|e| panic!("reading {file}: {e}"))
}

/// A YAML file with anchors resolved and `<<` merge keys applied, as Compose and GitLab read it.
fn yaml(file: &str) -> Value {
    let mut value: Value =
        serde_yaml::from_str(&read(file)).unwrap_or_else(|e| panic!("{file} is not YAML: {e}"));
    value
        .apply_merge()
        .unwrap_or_else(|e| panic!("{file}: merge keys: {e}"));
    // Nested merges (`environment: {<<: *env, ...}`) need a second pass over the merged tree.
    value
        .apply_merge()
        .unwrap_or_else(|e| panic!("{file}: merge keys: {e}"));
    value
}

fn lookalike_vars(text: &str) -> BTreeSet<String> {
    let mut vars = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("LOOKALIKE_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_uppercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'_')
        {
            end += 1;
        }
        vars.insert(text[start..end].to_string());
        i = end;
    }
    vars
}

fn assert_only_real_settings(file: &str) {
    let known: BTreeSet<String> = Config::env_names().into_iter().collect();
    let unknown: Vec<_> = lookalike_vars(&read(file))
        .into_iter()
        .filter(|v| v.contains("__") && !known.contains(v))
        .collect();
    assert!(
        unknown.is_empty(),
        "{file} sets settings the binary does not have: {unknown:?}"
    );
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| s.iter().map(str_of).collect())
        .unwrap_or_default()
}

/// The port at the end of `host:port` or of a URL's authority.
fn port_of(addr: &str) -> u16 {
    let authority = addr.split("://").last().unwrap();
    let authority = authority.split('/').next().unwrap();
    authority
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr}"))
}

fn host_of(url: &str) -> String {
    let authority = url.split("://").nth(1).unwrap().split('/').next().unwrap();
    let host_port = authority.rsplit('@').next().unwrap();
    host_port.split(':').next().unwrap().to_string()
}

/// `lookalike --help`'s subcommands.
fn subcommands() -> BTreeSet<String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lookalike"))
        .arg("--help")
        .output()
        .expect("running lookalike --help");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn docker_compose_matches_the_code() {
    assert_only_real_settings("docker-compose.yml");
    let compose = yaml("docker-compose.yml");
    let services = compose["services"].as_mapping().expect("services");
    let names: BTreeSet<String> = services.keys().map(str_of).collect();
    for wanted in ["postgres", "rabbitmq", "qdrant", "api", "worker"] {
        assert!(names.contains(wanted), "no `{wanted}` service");
    }
    for (name, service) in services {
        let name = str_of(name);
        assert!(
            service["healthcheck"]["test"].is_sequence(),
            "service `{name}` has no healthcheck"
        );
    }
    assert!(
        strings(&compose["services"]["rabbitmq"]["ports"])
            .iter()
            .any(|p| p.starts_with("15672:")),
        "the RabbitMQ management UI is published"
    );
    assert!(
        str_of(&compose["services"]["rabbitmq"]["image"]).contains("management"),
        "the RabbitMQ image has the management plugin"
    );

    let commands = subcommands();
    for (name, listen_var) in [
        ("api", "LOOKALIKE_HTTP__LISTEN"),
        ("worker", "LOOKALIKE_WORKER__LISTEN"),
    ] {
        let service = &compose["services"][name];
        let command = strings(&service["command"]);
        assert!(
            commands.contains(&command[0]),
            "`{name}` runs `lookalike {}`, not a subcommand ({commands:?})",
            command[0]
        );
        assert_eq!(
            command[0], name,
            "the `{name}` service runs `lookalike {name}`"
        );
        for dep in ["postgres", "rabbitmq", "qdrant"] {
            assert_eq!(
                str_of(&service["depends_on"][dep]["condition"]),
                "service_healthy",
                "`{name}` waits for a healthy {dep}"
            );
        }
        let env = &service["environment"];
        assert_eq!(str_of(&env["LOOKALIKE_INDEX__BACKEND"]), "qdrant");
        // Each URL points at the service of that name, on the port it serves.
        let url_host = |var: &str| host_of(&str_of(&env[var]));
        assert_eq!(url_host("LOOKALIKE_DATABASE__URL"), "postgres");
        assert_eq!(url_host("LOOKALIKE_QUEUE__URL"), "rabbitmq");
        assert_eq!(url_host("LOOKALIKE_INDEX__URL"), "qdrant");
        assert_eq!(
            port_of(&str_of(&env["LOOKALIKE_INDEX__URL"])),
            6334,
            "lookalike speaks gRPC to Qdrant"
        );
        let listen = port_of(&str_of(&env[listen_var]));
        assert!(str_of(&env[listen_var]).starts_with("0.0.0.0:"));
        let probe = strings(&service["healthcheck"]["test"]).join(" ");
        assert!(
            probe.contains(&format!("127.0.0.1:{listen}/readyz")),
            "`{name}`'s healthcheck probes its own port {listen}: {probe}"
        );
    }
    let api_ports = strings(&compose["services"]["api"]["ports"]);
    let api_listen = port_of(&str_of(
        &compose["services"]["api"]["environment"]["LOOKALIKE_HTTP__LISTEN"],
    ));
    assert!(
        api_ports
            .iter()
            .any(|p| p.ends_with(&format!(":{api_listen}"))),
        "the API's port {api_listen} is published: {api_ports:?}"
    );
    assert!(
        compose["services"]["worker"]["ports"].is_null(),
        "workers publish no host port, so `--scale worker=N` works"
    );
    let grace = str_of(&compose["services"]["worker"]["stop_grace_period"]);
    let grace_s: u64 = grace.trim_end_matches('s').parse().unwrap();
    let drain_ms = Config::load_from(None, Vec::new())
        .unwrap()
        .service
        .drain_deadline_ms;
    assert!(
        grace_s * 1000 > drain_ms,
        "stop_grace_period {grace} leaves the worker time to drain ({drain_ms} ms)"
    );
    for volume in ["postgres", "rabbitmq", "qdrant"] {
        assert!(
            compose["volumes"]
                .as_mapping()
                .is_some_and(|m| m.contains_key(volume)),
            "volume `{volume}`"
        );
    }
}

#[test]
fn dockerfile_builds_every_crate_and_runs_unprivileged() {
    assert_only_real_settings("Dockerfile");
    let dockerfile = read("Dockerfile");
    let manifest: toml::Table = read("Cargo.toml").parse().unwrap();
    let members = manifest["workspace"]["members"].as_array().unwrap();
    for member in members {
        let member = member.as_str().unwrap();
        assert!(
            dockerfile.contains(&format!("COPY {member}/Cargo.toml {member}/")),
            "the dependency layer copies {member}/Cargo.toml"
        );
    }
    // Cargo refuses a manifest whose declared benchmarks have no source, so each gets a stub.
    let stubs = dockerfile
        .lines()
        .find(|l| l.contains("for b in "))
        .expect("the benchmark stub loop");
    for bench in manifest["bench"].as_array().unwrap() {
        let name = bench["name"].as_str().unwrap();
        assert!(
            stubs
                .split_whitespace()
                .any(|w| w == name || w == format!("{name};")),
            "the dependency layer stubs benches/{name}.rs: {stubs}"
        );
    }
    for line in [
        "USER lookalike",
        "HEALTHCHECK",
        "EXPOSE 8080",
        "ENTRYPOINT [\"lookalike\"]",
    ] {
        assert!(dockerfile.contains(line), "Dockerfile lacks `{line}`");
    }
    assert!(
        dockerfile.contains("scripts/setup.sh"),
        "models and ONNX Runtime come from the set-up script"
    );
}

/// A GitLab job with its `extends` chain applied (keys of the job win over its templates').
fn gitlab_job(ci: &Value, name: &str) -> Value {
    let mut job = ci[name].clone();
    let parents = match &job["extends"] {
        Value::String(s) => vec![s.clone()],
        Value::Sequence(_) => strings(&job["extends"]),
        _ => Vec::new(),
    };
    for parent in parents {
        let base = gitlab_job(ci, &parent);
        if let (Some(job), Some(base)) = (job.as_mapping_mut(), base.as_mapping()) {
            for (k, v) in base {
                if !job.contains_key(k) {
                    job.insert(k.clone(), v.clone());
                }
            }
        }
    }
    job
}

#[test]
fn gitlab_ci_builds_tests_and_ships() {
    let ci = yaml(".gitlab-ci.yml");
    assert_eq!(strings(&ci["stages"]), ["build", "test", "deploy"]);
    let test = &gitlab_job(&ci, "test");
    assert_eq!(str_of(&test["stage"]), "test");
    assert!(
        strings(&test["script"])
            .iter()
            .any(|l| l.contains("scripts/test.sh")),
        "the test job runs the README's test command"
    );
    let readme = read("README.md");
    assert!(
        readme.contains("scripts/test.sh"),
        "the README names the test command"
    );
    let services: Vec<String> = test["services"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|s| str_of(&s["name"]))
        .collect();
    for wanted in ["postgres", "rabbitmq", "qdrant"] {
        assert!(
            services.iter().any(|s| s.starts_with(wanted)),
            "the test job has a {wanted} service: {services:?}"
        );
    }
    assert!(
        !str_of(&test["variables"]["QDRANT_URL"]).is_empty(),
        "the server backend's tests run in CI"
    );
    // One image job per channel, each pushing its tag.
    for (job, tag) in [
        ("image:latest", "$CI_REGISTRY_IMAGE:latest"),
        ("image:dev", "$CI_REGISTRY_IMAGE-dev:latest"),
        ("image:rc", "$CI_REGISTRY_IMAGE:rc"),
    ] {
        let job_def = gitlab_job(&ci, job);
        let script = strings(&job_def["script"]).join("\n");
        assert!(
            script.contains(&format!("docker push \"{tag}\"")),
            "{job} pushes {tag}"
        );
        assert_eq!(str_of(&job_def["stage"]), "deploy");
    }
    assert_eq!(
        str_of(&ci["deploy"]["when"]),
        "manual",
        "deploying is a manual job"
    );
    assert_eq!(str_of(&gitlab_job(&ci, "build")["stage"]), "build");
}

#[test]
fn the_scanner_finds_variables() {
    let vars = lookalike_vars("a: LOOKALIKE_HTTP__LISTEN=1\nLOOKALIKE_NOPE__X: 2");
    assert_eq!(
        vars.into_iter().collect::<Vec<_>>(),
        vec!["LOOKALIKE_HTTP__LISTEN", "LOOKALIKE_NOPE__X"]
    );
}
