//! The deployment files must not drift from the code. No Docker engine runs where the tests run, so
//! the files are parsed and checked against what the binary really reads and serves: every
//! LOOKALIKE_* variable is a setting (an unknown one would stop the service at startup), every
//! command is a subcommand, every healthcheck probes the port its process listens on, every
//! workspace crate reaches the image build, compose runs the image CI pushes, and the CI file runs the
//! README's test command on a job that has what the tests need. tests/dockerfile.rs replays the
//! Dockerfile itself.

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
    // The image CI pushed runs where LOOKALIKE_IMAGE names it (`deploy`); `build:` stays for local use.
    for name in ["api", "worker"] {
        let service = &compose["services"][name];
        let image = service["image"].as_str().unwrap_or_else(|| {
            panic!(
                "`{name}` has no `image:`, so `docker compose pull` never fetches what CI pushed"
            )
        });
        assert!(
            image.starts_with("${LOOKALIKE_IMAGE"),
            "`{name}` runs the image named by $LOOKALIKE_IMAGE (the registry's), so `docker compose \
             pull` fetches what CI pushed: image: {image}"
        );
        let context = match &service["build"] {
            Value::String(s) => s.clone(),
            Value::Mapping(_) => str_of(&service["build"]["context"]),
            other => panic!("`{name}` keeps `build:` for local builds: {other:?}"),
        };
        assert!(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(&context)
                .join("Dockerfile")
                .is_file(),
            "`{name}` builds from {context}, which has no Dockerfile"
        );
    }
    assert_eq!(
        str_of(&compose["services"]["qdrant"]["image"]),
        QDRANT_IMAGE,
        "the Qdrant server version the tests run against"
    );
    assert_qdrant_client_speaks_to(QDRANT_IMAGE);
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

/// The Qdrant server image compose and the GitLab test job run (`../shared/bin/qdrant` is the same
/// version, built from its tag).
const QDRANT_IMAGE: &str = "qdrant/qdrant:v1.18.3";

/// qdrant-client refuses a server more than one minor version away from its own.
fn assert_qdrant_client_speaks_to(image: &str) {
    let server: Vec<u32> = image
        .rsplit(":v")
        .next()
        .unwrap()
        .split('.')
        .map(|p| p.parse().unwrap())
        .collect();
    let manifest: toml::Table = read("Cargo.toml").parse().unwrap();
    let dep = &manifest["workspace"]["dependencies"]["qdrant-client"];
    let req = dep
        .get("version")
        .and_then(|v| v.as_str())
        .or(dep.as_str())
        .unwrap();
    let client: Vec<u32> = req
        .trim_start_matches(['~', '^', '='])
        .split('.')
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(
        client[0], server[0],
        "qdrant-client {req} vs server {image}"
    );
    assert!(
        client[1].abs_diff(server[1]) <= 1,
        "qdrant-client {req} is more than one minor version from the server {image}"
    );
}

/// Dockerfile lines grouped by stage (`FROM` starts one), continuations joined, comments dropped.
fn dockerfile_stages() -> Vec<Vec<String>> {
    let mut stages: Vec<Vec<String>> = Vec::new();
    let mut acc = String::new();
    for line in read("Dockerfile").lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && acc.is_empty()) {
            continue;
        }
        if let Some(cont) = line.trim_end().strip_suffix('\\') {
            acc.push_str(cont);
            continue;
        }
        acc.push_str(line);
        let full = std::mem::take(&mut acc).trim().to_string();
        if full.starts_with("FROM ") {
            stages.push(Vec::new());
        }
        stages.last_mut().expect("FROM first").push(full);
    }
    stages
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
        // Its source: the declared `path`, else cargo's default.
        let path = bench
            .get("path")
            .and_then(|p| p.as_str())
            .map_or_else(|| format!("benches/{name}.rs"), str::to_string);
        let stub = path.trim_start_matches("benches/");
        assert!(
            stubs
                .split_whitespace()
                .any(|w| w == stub || w == format!("{stub};")),
            "the dependency layer stubs {path}: {stubs}"
        );
    }
    for line in [
        "HEALTHCHECK",
        "EXPOSE 8080 8081",
        "ENTRYPOINT [\"lookalike\"]",
    ] {
        assert!(dockerfile.contains(line), "Dockerfile lacks `{line}`");
    }
    let stages = dockerfile_stages();
    let runtime = stages.last().unwrap();
    let user = runtime
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the runtime stage sets USER");
    assert!(
        !matches!(user.split(':').next(), Some("0" | "root")),
        "the image runs as root: USER {user}"
    );

    // The assets stage brings in every repository file scripts/setup.sh reads ($ROOT/...): without
    // scripts/convert_lite0.py it cannot make the cold-start model.
    let assets = stages
        .iter()
        .find(|s| s[0].ends_with(" AS assets"))
        .expect("an `assets` stage");
    let copied: Vec<String> = assets
        .iter()
        .filter_map(|l| l.strip_prefix("COPY "))
        .flat_map(|l| {
            let mut words: Vec<String> = l.split_whitespace().map(str::to_owned).collect();
            words.pop(); // destination
            words
        })
        .map(|w| w.trim_end_matches('/').to_string())
        .collect();
    let setup = read("scripts/setup.sh");
    let mut reads = BTreeSet::new();
    for marker in ["$ROOT/", "\"$ROOT\"/"] {
        for (pos, _) in setup.match_indices(marker) {
            let rest = &setup[pos + marker.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || "_./-".contains(c)))
                .unwrap_or(rest.len());
            let path = rest[..end].trim_end_matches('/');
            if !path.is_empty() && !path.starts_with(".lookalike") {
                reads.insert(path.to_string());
            }
        }
    }
    assert!(
        reads.contains("scripts/convert_lite0.py") && reads.contains("models"),
        "scripts/setup.sh's reads: {reads:?}"
    );
    for path in &reads {
        assert!(
            copied
                .iter()
                .any(|c| path == c || path.starts_with(&format!("{c}/"))),
            "scripts/setup.sh reads $ROOT/{path}, which the assets stage does not COPY ({copied:?})"
        );
    }
    let setup_run = assets
        .iter()
        .find(|l| l.starts_with("RUN ") && l.contains("scripts/setup.sh"))
        .expect("the assets stage runs scripts/setup.sh");
    for flag in ["--copy", "--strict"] {
        assert!(
            setup_run.contains(flag),
            "the image's assets are made with setup.sh {flag}: {setup_run}"
        );
    }
    assert!(
        !setup_run.contains("||"),
        "a failing setup.sh fails the image build: {setup_run}"
    );
    // config/ beside the binary: classify.prior_map and friends are relative to WORKDIR.
    let workdir = runtime
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("WORKDIR "))
        .expect("WORKDIR");
    assert!(
        runtime
            .iter()
            .any(|l| l == &format!("COPY config/ {workdir}/config/")),
        "the runtime image has config/ in {workdir}"
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

/// Every `#[test]` / `#[tokio::test]` function of the workspace's test targets, by file.
fn test_functions() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![root.join("tests")];
    for member in std::fs::read_dir(root.join("crates")).unwrap() {
        dirs.push(member.unwrap().path().join("tests"));
    }
    dirs.push(root.join("api/tests"));
    dirs.push(root.join("worker/tests"));
    let mut out = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let text = std::fs::read_to_string(&path).unwrap();
            let mut armed = false;
            for line in text.lines().map(str::trim) {
                if line.starts_with("#[test]") || line.starts_with("#[tokio::test") {
                    armed = true;
                } else if armed && let Some(pos) = line.find("fn ") {
                    let name: String = line[pos + 3..]
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    out.push((rel.clone(), name));
                    armed = false;
                }
            }
        }
    }
    out
}

#[test]
fn gitlab_ci_builds_tests_and_ships() {
    let ci = yaml(".gitlab-ci.yml");
    let ci_text = read(".gitlab-ci.yml");
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
    // The job builds with the image's toolchain.
    let dockerfile = read("Dockerfile");
    let rust_image = str_of(&test["image"]);
    assert!(
        dockerfile.contains(&format!("FROM {rust_image} AS build")),
        "the test job's {rust_image} is the Dockerfile's build image"
    );

    // What the test command needs, installed in the job: the Lite0 converter's venv, npm for the
    // Vendure photos, and Postgres and RabbitMQ local to the job, because tests/restart.rs stops and
    // starts them (pg_ctlcluster, rabbitmqctl), which it cannot do to a service container.
    let setup = [strings(&test["before_script"]), strings(&test["script"])]
        .concat()
        .join("\n");
    let installs: BTreeSet<&str> = setup
        .lines()
        .filter(|l| l.contains("apt-get install"))
        .flat_map(|l| l.split_whitespace())
        .filter(|w| !w.starts_with('-'))
        .collect();
    for package in [
        "python3-venv",
        "npm",
        "postgresql",
        "rabbitmq-server",
        "python3-pip",
    ] {
        assert!(
            installs.contains(package),
            "the test job installs {package}: {installs:?}"
        );
    }
    assert!(
        setup.contains("pg_hba.conf") && setup.contains("trust"),
        "the job's Postgres trusts local connections, as scripts/services.sh expects"
    );
    assert!(
        !setup.contains("socat"),
        "no port forwarding to service containers: the services are local to the job"
    );
    let services: Vec<(String, String)> = test["services"]
        .as_sequence()
        .expect("the test job has its Qdrant service")
        .iter()
        .map(|s| match s {
            Value::String(name) => (name.clone(), String::new()),
            _ => (str_of(&s["name"]), str_of(&s["alias"])),
        })
        .collect();
    for (name, _) in &services {
        assert!(
            !name.starts_with("postgres") && !name.starts_with("rabbitmq"),
            "{name} as a service container: tests/restart.rs must be able to stop and start it"
        );
    }
    let (qdrant_image, qdrant_alias) = services
        .iter()
        .find(|(n, _)| n.starts_with("qdrant/"))
        .expect("a Qdrant service container");
    assert_eq!(qdrant_image, QDRANT_IMAGE, "the same server as compose");
    let qdrant_url = str_of(&test["variables"]["QDRANT_URL"]);
    assert_eq!(
        host_of(&qdrant_url),
        *qdrant_alias,
        "QDRANT_URL names the service"
    );
    assert_eq!(port_of(&qdrant_url), 6334, "gRPC port");
    assert_eq!(
        compose_qdrant_image(),
        *qdrant_image,
        "compose and CI run one Qdrant version"
    );

    // Tests that start and stop a Qdrant binary of their own cannot run there: they are left out by
    // name, with the reason written beside the variable.
    let skip = str_of(&test["variables"]["LOOKALIKE_TEST_SKIP"]);
    let functions = test_functions();
    for word in skip.split_whitespace() {
        assert!(
            functions.iter().any(|(_, f)| f.contains(word)),
            "LOOKALIKE_TEST_SKIP `{word}` matches no test name (it is given to the harness as \
             --skip, which matches test names, not files)"
        );
    }
    let at = ci_text
        .find("LOOKALIKE_TEST_SKIP:")
        .expect("the variable in the file");
    let comment: String = ci_text[..at]
        .lines()
        .rev()
        .skip(1)
        .take_while(|l| l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join(" ");
    let file = comment
        .split_whitespace()
        .find(|w| w.starts_with("tests/") && w.contains(".rs"))
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric() && c != '/' && c != '_' && c != '.'))
        .unwrap_or_else(|| {
            panic!("the comment above LOOKALIKE_TEST_SKIP names the test file and why: {comment:?}")
        });
    let file = file.trim_end_matches('.');
    let in_file: Vec<&String> = functions
        .iter()
        .filter(|(f, _)| f == file)
        .map(|(_, n)| n)
        .collect();
    assert!(
        !in_file.is_empty(),
        "{file} (named beside LOOKALIKE_TEST_SKIP) has no tests"
    );
    for name in in_file {
        assert!(
            skip.split_whitespace().any(|w| name.contains(w)),
            "{file}::{name} needs its own Qdrant binary but LOOKALIKE_TEST_SKIP `{skip}` keeps it"
        );
    }

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
        let login = strings(&job_def["before_script"]).join("\n");
        assert!(
            login.contains("--password-stdin") && !login.contains(" -p "),
            "{job}: the registry password goes through stdin, not the command line"
        );
    }
    assert_eq!(str_of(&gitlab_job(&ci, "build")["stage"]), "build");
}

fn compose_qdrant_image() -> String {
    str_of(&yaml("docker-compose.yml")["services"]["qdrant"]["image"])
}

#[test]
fn deploy_runs_the_image_ci_pushed_over_ssh() {
    let ci = yaml(".gitlab-ci.yml");
    let deploy = gitlab_job(&ci, "deploy");
    assert_eq!(str_of(&deploy["stage"]), "deploy");
    // Manual: on the job (without rules) or in every rule that lets it run.
    let rules = deploy["rules"].as_sequence().cloned().unwrap_or_default();
    if rules.is_empty() {
        assert_eq!(
            str_of(&deploy["when"]),
            "manual",
            "deploying is a manual job"
        );
    } else {
        for rule in &rules {
            // A rule without `when` takes the job's.
            let when = rule
                .get("when")
                .or(deploy.get("when"))
                .map(str_of)
                .unwrap_or_default();
            assert!(
                when == "manual" || when == "never",
                "deploying is a manual job: rule {rule:?}"
            );
        }
    }
    let before = strings(&deploy["before_script"]).join("\n");
    let script = strings(&deploy["script"]).join("\n");
    let all = format!("{before}\n{script}");

    // SSH from CI variables: the key into an agent, the host checked against known hosts.
    assert!(
        all.contains("$SSH_PRIVATE_KEY") && all.contains("ssh-add"),
        "the deploy key (CI variable SSH_PRIVATE_KEY) is loaded into an ssh agent"
    );
    assert!(
        all.contains("$SSH_KNOWN_HOSTS") && all.contains("known_hosts"),
        "the host's identity comes from the CI variable SSH_KNOWN_HOSTS"
    );
    assert!(
        !all.contains("StrictHostKeyChecking=no"),
        "host keys are checked, not skipped"
    );
    for var in ["SSH_PRIVATE_KEY", "SSH_KNOWN_HOSTS", "DEPLOY_HOST"] {
        assert!(
            read(".gitlab-ci.yml").contains(&format!("#   {var}")),
            "the CI file's header documents the variable {var}"
        );
    }

    // It runs the image CI pushed: compose's api and worker take LOOKALIKE_IMAGE, deploy sets it to a
    // tag an image job it waits for pushes, and pulls before starting (never building on the host).
    let image = str_of(&deploy["variables"]["LOOKALIKE_IMAGE"]);
    let needs = strings(&deploy["needs"]);
    let pushed = needs.iter().any(|job| {
        strings(&gitlab_job(&ci, job)["script"])
            .iter()
            .any(|l| l.contains(&format!("docker push \"{image}\"")))
    });
    assert!(
        pushed,
        "deploy runs {image}, which no job it needs ({needs:?}) pushes"
    );
    assert!(
        script.contains("LOOKALIKE_IMAGE") && script.contains("$LOOKALIKE_IMAGE"),
        "the host's compose gets LOOKALIKE_IMAGE"
    );
    let pull = script
        .find("docker compose pull")
        .expect("docker compose pull");
    let up = script.find("docker compose up").expect("docker compose up");
    assert!(pull < up, "pull, then up");
    assert!(
        script[up..].contains("--no-build"),
        "the host never builds the image"
    );
    assert!(
        script.contains("scp docker-compose.yml"),
        "the host runs this commit's docker-compose.yml"
    );
    assert!(
        script.contains("--password-stdin"),
        "the host logs in to the registry to pull, password through stdin"
    );
}

#[test]
fn reference_images_live_in_the_repository() {
    // The images and embeddings the parity and end-to-end tests compare with are committed, so a
    // checkout (a GitLab job) without ../shared runs the tests.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let images = expected["images"].as_object().unwrap();
    assert!(images.len() >= 5);
    for name in images.keys() {
        assert!(dir.join(name).is_file(), "tests/fixtures/reference/{name}");
    }
    assert!(dir.join("allstar-sneakers.jpg").is_file());
    let gitignore = read(".gitignore");
    for line in gitignore.lines() {
        assert!(
            !(line.contains("fixtures")
                || line.trim_start_matches('*') == ".jpg"
                || line.trim_start_matches('*') == ".png"
                || line.trim_start_matches('*') == ".json"),
            ".gitignore `{line}` would keep the fixtures out of git"
        );
    }
    // Nothing the tests or benchmarks compile reads the shared folder's copy any more.
    let needle = ["shared", "models", "reference"].join("/");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut stack = vec![
        root.join("tests"),
        root.join("benches"),
        root.join("crates"),
    ];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                assert!(
                    !text.contains(&needle),
                    "{} reads ../{needle}; use tests/fixtures/reference",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn the_readme_says_how_to_run_the_image_and_what_the_pipeline_does() {
    let readme = read("README.md");
    for needle in [
        "docker build",
        "docker compose up",
        "LOOKALIKE_IMAGE",
        ".gitlab-ci.yml",
        "SSH_PRIVATE_KEY",
        "tests/fixtures/reference",
        "tests/dockerfile.rs",
    ] {
        assert!(readme.contains(needle), "the README mentions {needle}");
    }
}

#[test]
fn the_scanner_finds_variables() {
    let vars = lookalike_vars("a: LOOKALIKE_HTTP__LISTEN=1\nLOOKALIKE_NOPE__X: 2");
    assert_eq!(
        vars.into_iter().collect::<Vec<_>>(),
        vec!["LOOKALIKE_HTTP__LISTEN", "LOOKALIKE_NOPE__X"]
    );
}
