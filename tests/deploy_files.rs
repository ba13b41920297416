//! The deployment files must not drift from the code: every LOOKALIKE_* variable they set is a setting
//! the binary really reads (an unknown one would stop the service at startup).

use std::collections::BTreeSet;

use lookalike_core::Config;

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

fn check(file: &str) {
    let text = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file))
        .unwrap();
    let known: BTreeSet<String> = Config::env_names().into_iter().collect();
    let used = lookalike_vars(&text);
    let unknown: Vec<_> = used
        .iter()
        .filter(|v| v.contains("__") && !known.contains(*v))
        .collect();
    assert!(
        unknown.is_empty(),
        "{file} sets settings the binary does not have: {unknown:?}"
    );
}

#[test]
fn docker_compose_sets_only_real_settings() {
    check("docker-compose.yml");
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docker-compose.yml"),
    )
    .unwrap();
    for service in [
        "postgres:",
        "rabbitmq:",
        "lookalike:",
        "healthcheck:",
        "condition: service_healthy",
    ] {
        assert!(
            text.contains(service),
            "docker-compose.yml lacks `{service}`"
        );
    }
}

#[test]
fn dockerfile_sets_only_real_settings() {
    check("Dockerfile");
}

#[test]
fn the_scanner_finds_variables() {
    let vars = lookalike_vars("a: LOOKALIKE_HTTP__LISTEN=1\nLOOKALIKE_NOPE__X: 2");
    assert_eq!(
        vars.into_iter().collect::<Vec<_>>(),
        vec!["LOOKALIKE_HTTP__LISTEN", "LOOKALIKE_NOPE__X"]
    );
}
