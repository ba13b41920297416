//! The Dockerfile, replayed on this machine as far as it can be without a Docker engine (none runs where
//! the tests run):
//!
//! - every `COPY` source exists and reaches the build context (`.dockerignore` does not drop it), and
//!   every file git tracks reaches it while build output and fetched assets stay out;
//! - the build stage's dependency layer is rebuilt from exactly what its `COPY` lines bring in and the
//!   stub `RUN` really runs; Cargo then reads that stub workspace (`cargo metadata`), so a crate or a
//!   benchmark the stubs miss fails here, not in `docker build`. The `cargo build` lines are checked by
//!   parsing (flags, binary name, the files they must `touch`), not run;
//! - the assets stage's `RUN` lines run for real in a scratch root holding exactly what its `COPY`
//!   lines bring in, with the models and ONNX Runtime this test run already has instead of downloads
//!   (`LOOKALIKE_MODELS_FROM` / `LOOKALIKE_ORT_FROM`, pip cut off from the network);
//! - the final image's file tree is assembled from its `COPY` / `COPY --from` lines and its own
//!   `mkdir`/`chown`; no link in it may dangle or point outside it;
//! - the binary this test build made is started from that tree the way the image starts it (`ENTRYPOINT`
//!   through the image's `PATH`, its `ENV`, its `WORKDIR`): `serve --help`, `worker --help`, and `config`,
//!   every path of which must exist in the tree; the libraries it and ONNX Runtime link against must be
//!   ones the runtime base image has; the `HEALTHCHECK` command is run against a listener on each role's
//!   port.
//!
//! Anything missing is a failure with instructions (`scripts/setup.sh`), never a skip; the few host
//! tools a check needs (git, readelf, curl) are only optional off CI (`CI` unset).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn on_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// A host tool a check needs: present, or (off CI only) the check is skipped with a note.
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            !on_ci(),
            "`{name}` is needed by this test and missing on CI: install it"
        );
        eprintln!("note: `{name}` not installed here; that part of the replay is skipped");
    }
    found
}

// ----------------------------------------------------------------------------------------------
// Dockerfile
// ----------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Instr {
    line: usize,
    cmd: String,
    args: String,
}

#[derive(Debug)]
struct Stage {
    name: Option<String>,
    image: String,
    instrs: Vec<Instr>,
}

/// Instructions as Docker reads them: `#` lines are comments (also inside a continuation), a trailing
/// backslash continues the instruction on the next line.
fn parse_dockerfile(text: &str) -> Vec<Instr> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim_start();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_none()) {
            continue;
        }
        let (start, mut acc) = current.take().unwrap_or((i + 1, String::new()));
        let body = raw.trim_end();
        if let Some(cont) = body.strip_suffix('\\') {
            acc.push_str(cont);
            current = Some((start, acc));
            continue;
        }
        acc.push_str(body);
        let acc = acc.trim().to_string();
        let (cmd, args) = acc.split_once(char::is_whitespace).unwrap_or((&acc, ""));
        out.push(Instr {
            line: start,
            cmd: cmd.to_ascii_uppercase(),
            args: args.trim().to_string(),
        });
    }
    assert!(
        current.is_none(),
        "the Dockerfile ends inside a continued line"
    );
    out
}

fn stages(instrs: &[Instr]) -> Vec<Stage> {
    let mut stages: Vec<Stage> = Vec::new();
    for instr in instrs {
        if instr.cmd == "FROM" {
            let words: Vec<&str> = instr.args.split_whitespace().collect();
            let name = match words.as_slice() {
                [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => Some(name.to_string()),
                [_] => None,
                other => panic!("line {}: FROM {other:?}", instr.line),
            };
            stages.push(Stage {
                name,
                image: words[0].to_string(),
                instrs: Vec::new(),
            });
        } else {
            let stage = stages.last_mut().unwrap_or_else(|| {
                assert!(
                    instr.cmd == "ARG",
                    "line {}: {} before FROM",
                    instr.line,
                    instr.cmd
                );
                panic!("ARG before FROM is not replayed")
            });
            stage.instrs.push(instr.clone());
        }
    }
    stages
}

fn dockerfile() -> (Vec<Instr>, Vec<Stage>) {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).expect("reading Dockerfile");
    let instrs = parse_dockerfile(&text);
    let stages = stages(&instrs);
    (instrs, stages)
}

fn stage<'a>(stages: &'a [Stage], name: &str) -> &'a Stage {
    stages
        .iter()
        .find(|s| s.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("the Dockerfile has no stage `{name}`"))
}

#[derive(Debug)]
struct Copy {
    line: usize,
    from: Option<String>,
    srcs: Vec<String>,
    dest: String,
}

fn parse_copy(instr: &Instr) -> Copy {
    let mut from = None;
    let mut words: Vec<String> = Vec::new();
    let rest = instr.args.trim();
    let tokens: Vec<String> = if rest.starts_with('[') {
        serde_json::from_str(rest).expect("COPY in JSON form")
    } else {
        rest.split_whitespace().map(str::to_owned).collect()
    };
    for token in tokens {
        if let Some(flag) = token.strip_prefix("--") {
            let (name, value) = flag
                .split_once('=')
                .map_or((flag, None), |(n, v)| (n, Some(v)));
            match (name, value) {
                ("from", Some(v)) => from = Some(v.to_string()),
                ("chown" | "chmod", Some(_)) | ("link", None) => {}
                _ => panic!("line {}: COPY flag --{flag} is not replayed", instr.line),
            }
        } else {
            words.push(token);
        }
    }
    assert!(
        words.len() >= 2,
        "line {}: COPY needs a source and a destination",
        instr.line
    );
    for w in &words {
        assert!(
            !w.contains('$') && !w.contains(['*', '?', '[']),
            "line {}: `{w}`: variables and wildcards in COPY are not replayed; name the files",
            instr.line
        );
    }
    let dest = words.pop().unwrap();
    Copy {
        line: instr.line,
        from,
        srcs: words,
        dest,
    }
}

/// `ENV a=b c="d e"` (or the old `ENV a b`) as pairs.
fn parse_env(args: &str) -> Vec<(String, String)> {
    let first = args.split_whitespace().next().unwrap_or_default();
    if !first.contains('=') {
        let (k, v) = args.split_once(char::is_whitespace).expect("ENV key value");
        return vec![(k.to_string(), v.trim().to_string())];
    }
    let mut pairs = Vec::new();
    let mut chars = args.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        let mut value = String::new();
        let mut quote = None;
        while let Some(&c) = chars.peek() {
            match (quote, c) {
                (None, c) if c.is_whitespace() => break,
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (_, '\\') => {
                    chars.next();
                    if let Some(n) = chars.peek() {
                        value.push(*n);
                    }
                }
                (_, c) => value.push(c),
            }
            chars.next();
        }
        assert!(
            !value.contains('$'),
            "ENV {key}: variables in ENV are not replayed"
        );
        pairs.push((key.trim().to_string(), value));
    }
    pairs
}

fn stage_env(stage: &Stage) -> Vec<(String, String)> {
    stage
        .instrs
        .iter()
        .filter(|i| i.cmd == "ENV")
        .flat_map(|i| parse_env(&i.args))
        .collect()
}

fn workdir(stage: &Stage, upto_line: usize) -> String {
    // Every WORKDIR up to that line is checked; the last one holds.
    let mut dir = "/".to_string();
    for i in stage.instrs.iter() {
        if i.cmd == "WORKDIR" && i.line < upto_line {
            assert!(
                i.args.starts_with('/') && !i.args.contains('$'),
                "line {}: WORKDIR {} (absolute, no variables)",
                i.line,
                i.args
            );
            dir = i.args.clone();
        }
    }
    dir
}

/// A path inside a stage (absolute, or relative to the stage's WORKDIR at that point).
fn in_stage(workdir: &str, path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{}/{}", workdir.trim_end_matches('/'), path)
    }
}

/// The scratch directory standing for `path` in a stage whose file-system root is `root`.
fn rebase(root: &Path, path: &str) -> PathBuf {
    let mut out = root.to_path_buf();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    assert!(out.starts_with(root), "{path} leaves the stage's root");
    out
}

/// Replaces the stage paths `prefixes` in `text` (where a path starts and as whole path prefixes) with
/// their rebased form, in one pass so that a rebased path is never rebased again.
fn rebase_text(text: &str, root: &Path, prefixes: &BTreeSet<String>) -> String {
    let mut sorted: Vec<&String> = prefixes.iter().collect();
    sorted.sort_by_key(|p| std::cmp::Reverse(p.len()));
    let mut out = String::new();
    let mut i = 0;
    while i < text.len() {
        let before_ok = text[..i]
            .chars()
            .last()
            .is_none_or(|c| c.is_whitespace() || "=:'\"(".contains(c));
        if before_ok {
            let hit = sorted.iter().find(|p| {
                text[i..].starts_with(p.as_str())
                    && text[i + p.len()..]
                        .chars()
                        .next()
                        .is_none_or(|c| c == '/' || c.is_whitespace() || "'\";)&|:".contains(c))
            });
            if let Some(prefix) = hit {
                out.push_str(&rebase(root, prefix).display().to_string());
                i += prefix.len();
                continue;
            }
        }
        let c = text[i..].chars().next().unwrap();
        out.push(c);
        i += c.len_utf8();
    }
    out
}

// ----------------------------------------------------------------------------------------------
// .dockerignore and the build context
// ----------------------------------------------------------------------------------------------

struct Ignore {
    /// (excludes?, pattern segments), in file order; the last rule matching a path or one of its
    /// parents decides, as in Docker's pattern matcher.
    rules: Vec<(bool, Vec<String>)>,
}

impl Ignore {
    fn load() -> Ignore {
        let path = repo().join(".dockerignore");
        let text = std::fs::read_to_string(&path)
            .expect(".dockerignore is missing: without it target/ and .lookalike/ (gigabytes) go into every build context");
        let rules = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (exclude, pattern) = match l.strip_prefix('!') {
                    Some(p) => (false, p.trim()),
                    None => (true, l),
                };
                let pattern = pattern
                    .trim_start_matches("./")
                    .trim_start_matches('/')
                    .trim_end_matches('/');
                assert!(
                    !pattern.contains('['),
                    ".dockerignore `{l}`: character classes are not replayed"
                );
                (exclude, pattern.split('/').map(str::to_owned).collect())
            })
            .collect();
        Ignore { rules }
    }

    fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|(exclude, _)| !exclude)
    }

    /// Whether `rel` (a path relative to the context, `/`-separated) stays out of the context.
    fn excluded(&self, rel: &str) -> bool {
        let parts: Vec<&str> = rel
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        let mut excluded = false;
        for (exclude, pattern) in &self.rules {
            let hit = (1..=parts.len()).any(|n| match_segments(pattern, &parts[..n]));
            if hit {
                excluded = *exclude;
            }
        }
        excluded
    }
}

fn match_segments(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((p, rest)) if p == "**" => {
            (0..=path.len()).any(|skip| match_segments(rest, &path[skip..]))
        }
        Some((p, rest)) => {
            !path.is_empty()
                && glob(p.as_bytes(), path[0].as_bytes())
                && match_segments(rest, &path[1..])
        }
    }
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&p[1..], s) || (!s.is_empty() && glob(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob(&p[1..], &s[1..]),
        _ => false,
    }
}

/// Every file and link of the build context under `rel` (a file or directory of the repository), as
/// paths relative to the repository.
fn context_files(ignore: &Ignore, rel: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![rel.trim_end_matches('/').to_string()];
    while let Some(rel) = stack.pop() {
        let path = if rel.is_empty() || rel == "." {
            repo()
        } else {
            repo().join(&rel)
        };
        let meta =
            std::fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let is_root = rel.is_empty() || rel == ".";
        if !is_root && ignore.excluded(&rel) && (!meta.is_dir() || !ignore.has_exceptions()) {
            continue;
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                let name = entry.unwrap().file_name().to_string_lossy().into_owned();
                stack.push(if is_root {
                    name
                } else {
                    format!("{rel}/{name}")
                });
            }
        } else if !ignore.excluded(&rel) {
            out.push(rel);
        }
    }
    out.sort();
    out
}

/// Files git tracks (and that are on disk), or `None` outside a git checkout.
fn tracked_files() -> Option<Vec<String>> {
    tool("git")?;
    let out = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(repo())
        .output()
        .ok()?;
    if !out.status.success() {
        assert!(!on_ci(), "git ls-files failed on CI: {out:?}");
        return None;
    }
    Some(
        String::from_utf8(out.stdout)
            .unwrap()
            .split('\0')
            .filter(|f| !f.is_empty() && repo().join(f).exists())
            .map(str::to_owned)
            .collect(),
    )
}

// ----------------------------------------------------------------------------------------------
// Scratch file trees
// ----------------------------------------------------------------------------------------------

/// Copies a file, directory or link the way COPY does: links stay links, modes are kept. `share` hard
/// links big files that nothing in the replay writes to (models, the binary) instead of copying them;
/// files a replayed RUN line may write to are always copied, so the repository is never touched.
fn copy_tree(src: &Path, dest: &Path, share: bool) {
    let meta = std::fs::symlink_metadata(src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(src).unwrap();
        let _ = std::fs::remove_file(dest);
        std::os::unix::fs::symlink(target, dest).unwrap();
    } else if meta.is_dir() {
        std::fs::create_dir_all(dest).unwrap();
        for entry in std::fs::read_dir(src).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &dest.join(entry.file_name()), share);
        }
    } else {
        let _ = std::fs::remove_file(dest);
        if !share || std::fs::hard_link(src, dest).is_err() {
            std::fs::copy(src, dest).unwrap();
        }
    }
}

/// Applies a COPY from the build context into a stage rooted at `root`.
fn copy_from_context(ignore: &Ignore, copy: &Copy, root: &Path, workdir: &str) {
    let dest = in_stage(workdir, &copy.dest);
    let into_dir = copy.dest.ends_with('/') || copy.srcs.len() > 1;
    for src in &copy.srcs {
        let rel = src.trim_start_matches("./").trim_end_matches('/');
        let rel = if rel.is_empty() { "." } else { rel };
        let path = repo().join(rel);
        assert!(
            path.exists(),
            "Dockerfile line {}: COPY {src}: no such file in the repository",
            copy.line
        );
        assert!(
            rel == "." || !Ignore::excluded(ignore, rel),
            "Dockerfile line {}: COPY {src}: .dockerignore keeps it out of the build context",
            copy.line
        );
        let files = context_files(ignore, rel);
        assert!(
            !files.is_empty(),
            "Dockerfile line {}: COPY {src} brings in nothing",
            copy.line
        );
        if path.is_dir() {
            // A directory's contents go into the destination.
            for file in files {
                let inner = if rel == "." {
                    file.as_str()
                } else {
                    file.strip_prefix(&format!("{rel}/")).unwrap()
                };
                copy_tree(
                    &repo().join(&file),
                    &rebase(root, &format!("{dest}/{inner}")),
                    false,
                );
            }
        } else {
            let target = if into_dir {
                format!(
                    "{}/{}",
                    dest.trim_end_matches('/'),
                    path.file_name().unwrap().to_string_lossy()
                )
            } else {
                dest.clone()
            };
            copy_tree(&path, &rebase(root, &target), false);
        }
    }
}

/// Where a link leads inside an image rooted at `root` (absolute targets are read in the image's root),
/// or the reason it does not.
fn resolve_in_root(root: &Path, link: &Path) -> Result<PathBuf, String> {
    let mut path = link.to_path_buf();
    for _ in 0..40 {
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(_) => return Err(format!("{} does not exist", path.display())),
        };
        if !meta.file_type().is_symlink() {
            return Ok(path);
        }
        let target = std::fs::read_link(&path).unwrap();
        let rel_in_root = path
            .parent()
            .unwrap()
            .strip_prefix(root)
            .unwrap()
            .to_path_buf();
        let joined = if target.is_absolute() {
            target.clone()
        } else {
            Path::new("/").join(rel_in_root).join(&target)
        };
        // Normalise inside the root: `..` at the top stays at the top, as in a container.
        let mut normal = PathBuf::from("/");
        for c in joined.components() {
            match c {
                Component::Normal(n) => normal.push(n),
                Component::ParentDir => {
                    normal.pop();
                }
                _ => {}
            }
        }
        path = rebase(root, &normal.display().to_string());
    }
    Err("a loop of links".to_string())
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        out.push(path.clone());
        if meta.is_dir() {
            walk(&path, out);
        }
    }
}

fn run_checked(mut cmd: Command, what: &str) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

// ----------------------------------------------------------------------------------------------
// The checks
// ----------------------------------------------------------------------------------------------

#[test]
fn the_build_context_holds_the_sources_and_nothing_built_or_fetched() {
    let ignore = Ignore::load();
    for inside in [
        "target/release/lookalike",
        ".lookalike/models/clip_vitb16_visual_int8.onnx",
        ".lookalike/data/index/segments/0",
        ".git/HEAD",
        "node_modules/x/index.js",
        "web/node_modules/x/index.js",
        ".cargo-home/registry/cache/x.crate",
        ".cache/lookalike/wheels/x.whl",
    ] {
        assert!(
            ignore.excluded(inside),
            ".dockerignore lets {inside} into the build context"
        );
    }
    match tracked_files() {
        Some(files) => {
            assert!(files.len() > 50, "git ls-files lists only {files:?}");
            let dropped: Vec<_> = files.iter().filter(|f| ignore.excluded(f)).collect();
            assert!(
                dropped.is_empty(),
                ".dockerignore drops tracked files from the build context (`COPY . .` would build \
                 without them): {dropped:?}"
            );
        }
        None => eprintln!("note: not a git checkout; tracked files not compared with the context"),
    }
    // Files the compiler reads besides the crates' sources (include_str!, migrate!).
    let mut sources = Vec::new();
    for dir in ["src", "api/src", "worker/src", "crates"] {
        walk(&repo().join(dir), &mut sources);
    }
    let mut included = 0;
    for file in sources
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
    {
        if file.components().any(|c| c.as_os_str() == "tests") {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        for (pos, _) in text
            .match_indices("include_str!(\"")
            .chain(text.match_indices("include_bytes!(\""))
            .chain(text.match_indices("migrate!(\""))
        {
            let rest = &text[pos..];
            let start = rest.find('"').unwrap() + 1;
            let end = start + rest[start..].find('"').unwrap();
            // include_str! is relative to the file, sqlx's migrate! to the crate's manifest.
            let base = if rest.starts_with("migrate!") {
                file.ancestors()
                    .find(|d| d.join("Cargo.toml").is_file())
                    .unwrap()
                    .to_path_buf()
            } else {
                file.parent().unwrap().to_path_buf()
            };
            let target = base.join(&rest[start..end]);
            let target = std::fs::canonicalize(&target)
                .unwrap_or_else(|e| panic!("{}: {} ({e})", file.display(), target.display()));
            let rel = target
                .strip_prefix(std::fs::canonicalize(repo()).unwrap())
                .unwrap_or_else(|_| {
                    panic!(
                        "{} reads {} outside the repository",
                        file.display(),
                        target.display()
                    )
                })
                .to_string_lossy()
                .into_owned();
            assert!(
                !ignore.excluded(&rel),
                "{} reads {rel}, which .dockerignore keeps out of the image build",
                file.display()
            );
            included += 1;
        }
    }
    assert!(
        included >= 5,
        "found only {included} include_str!/migrate! paths"
    );
}

#[test]
fn every_copy_source_is_in_the_build_context() {
    let ignore = Ignore::load();
    let (instrs, stages) = dockerfile();
    let names: BTreeSet<String> = stages.iter().filter_map(|s| s.name.clone()).collect();
    let mut copies = 0;
    for instr in instrs.iter().filter(|i| i.cmd == "COPY" || i.cmd == "ADD") {
        assert_eq!(
            instr.cmd, "COPY",
            "line {}: ADD fetches and unpacks; use COPY",
            instr.line
        );
        let copy = parse_copy(instr);
        match &copy.from {
            Some(from) => assert!(
                names.contains(from),
                "line {}: COPY --from={from}: no such stage ({names:?})",
                copy.line
            ),
            None => {
                let scratch = tempfile::tempdir().unwrap();
                copy_from_context(&ignore, &copy, scratch.path(), "/ctx");
                copies += 1;
            }
        }
    }
    assert!(copies >= 10, "only {copies} COPY lines from the context");
}

#[test]
fn the_build_stage_compiles_every_crate_from_its_dependency_layer() {
    let ignore = Ignore::load();
    let (_, stages) = dockerfile();
    let build = stage(&stages, "build");
    let manifest: toml::Table = std::fs::read_to_string(repo().join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();

    // The toolchain of the image is at least the workspace's rust-version.
    let want = manifest["workspace"]["package"]["rust-version"]
        .as_str()
        .unwrap();
    let tag = build
        .image
        .strip_prefix("rust:")
        .expect("the build stage is FROM rust:<version>");
    let version = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().unwrap()).collect() };
    let have = tag.split('-').next().unwrap();
    assert!(
        version(have) >= version(want),
        "FROM {}: older than rust-version {want}",
        build.image
    );

    // Replay: the COPY lines before the first `COPY . .`, the RUN lines without cargo for real, and
    // Cargo reading what they made in place of each dependency-layer `cargo build`.
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path();
    let mut replayed_cargo = 0;
    let mut stub_files: BTreeSet<String> = BTreeSet::new();
    let mut final_build: Option<&Instr> = None;
    let mut whole_tree_copied = false;
    for instr in &build.instrs {
        let wd = workdir(build, instr.line + 1);
        std::fs::create_dir_all(rebase(root, &wd)).unwrap();
        match instr.cmd.as_str() {
            "COPY" if !whole_tree_copied => {
                let copy = parse_copy(instr);
                assert!(
                    copy.from.is_none(),
                    "line {}: COPY --from in the build stage",
                    copy.line
                );
                if copy.srcs == ["."] {
                    whole_tree_copied = true;
                } else {
                    copy_from_context(&ignore, &copy, root, &wd);
                }
            }
            "RUN" if !whole_tree_copied && !instr.args.contains("cargo") => {
                let mut before = Vec::new();
                walk(root, &mut before);
                let mut cmd = Command::new("/bin/sh");
                cmd.arg("-c")
                    .arg(&instr.args)
                    .current_dir(rebase(root, &wd));
                run_checked(
                    cmd,
                    &format!("Dockerfile line {} (build stage RUN)", instr.line),
                );
                let mut after = Vec::new();
                walk(root, &mut after);
                let base = rebase(root, &wd);
                for path in after
                    .into_iter()
                    .filter(|p| !before.contains(p) && p.is_file())
                {
                    stub_files.insert(path.strip_prefix(&base).unwrap().display().to_string());
                }
            }
            "RUN" if !whole_tree_copied => {
                assert!(
                    instr.args.trim().starts_with("cargo build") && !instr.args.contains("&&"),
                    "line {}: the dependency layer's cargo step stands alone: {}",
                    instr.line,
                    instr.args
                );
                for flag in ["--release", "--locked"] {
                    assert!(
                        instr.args.contains(flag),
                        "line {}: cargo build without {flag}",
                        instr.line
                    );
                }
                assert!(
                    !instr.args.contains("|| true"),
                    "line {}: a failing dependency build must fail the image build",
                    instr.line
                );
                // Cargo reads every manifest of the stub workspace and discovers its targets here.
                let mut cmd =
                    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
                cmd.args([
                    "metadata",
                    "--no-deps",
                    "--format-version",
                    "1",
                    "--offline",
                ])
                .env("CARGO_TARGET_DIR", root.join("cargo-target"))
                .current_dir(rebase(root, &wd));
                let out = run_checked(
                    cmd,
                    &format!(
                        "cargo metadata on the stub workspace of line {}",
                        instr.line
                    ),
                );
                let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                let packages = meta["packages"].as_array().unwrap();
                let members = manifest["workspace"]["members"].as_array().unwrap();
                assert_eq!(
                    packages.len(),
                    members.len() + 1,
                    "the stub workspace has every member and the root package"
                );
                // Cargo leaves out a declared target whose file is missing (the build then fails):
                // every member has its library, the root its binary and every benchmark.
                for p in packages {
                    let name = p["name"].as_str().unwrap();
                    let targets = p["targets"].as_array().unwrap();
                    assert!(
                        targets
                            .iter()
                            .any(|t| t["kind"][0] == "lib" || t["kind"][0] == "bin"),
                        "{name} has no stub source in the dependency layer"
                    );
                    for t in targets {
                        let src = Path::new(t["src_path"].as_str().unwrap());
                        assert!(
                            src.exists(),
                            "{name}: {} is not in the stub workspace",
                            src.display()
                        );
                    }
                }
                let benches: BTreeSet<String> = packages
                    .iter()
                    .flat_map(|p| p["targets"].as_array().unwrap())
                    .filter(|t| t["kind"][0] == "bench")
                    .map(|t| t["name"].as_str().unwrap().to_string())
                    .collect();
                for bench in manifest["bench"].as_array().unwrap() {
                    assert!(
                        benches.contains(bench["name"].as_str().unwrap()),
                        "bench {bench} stubbed"
                    );
                }
                replayed_cargo += 1;
            }
            "RUN" => {
                assert!(
                    final_build.is_none(),
                    "line {}: one build step after `COPY . .`",
                    instr.line
                );
                final_build = Some(instr);
            }
            "COPY" => panic!(
                "line {}: COPY after `COPY . .` in the build stage",
                instr.line
            ),
            "WORKDIR" | "ENV" | "ARG" => {}
            other => panic!(
                "line {}: {other} in the build stage is not replayed",
                instr.line
            ),
        }
    }
    assert!(
        whole_tree_copied,
        "the build stage copies the sources (`COPY . .`)"
    );
    assert_eq!(replayed_cargo, 1, "one dependency-layer cargo build");
    for (key, _) in stage_env(build) {
        assert!(
            !key.starts_with("CARGO_TARGET_DIR") && !key.starts_with("CARGO_BUILD_TARGET"),
            "ENV {key} moves the binary away from target/release"
        );
    }

    // The real build: touch what the stubs wrote, then build the binary the runtime stage copies.
    let run = final_build
        .expect("a cargo build after `COPY . .`")
        .args
        .clone();
    let (touch, cargo) = run.split_once("&&").expect("touch ... && cargo build ...");
    let touched: BTreeSet<String> = touch
        .split_whitespace()
        .skip(1)
        .flat_map(|arg| {
            // Expand the shell's wildcard against the sources (`crates/*/src/lib.rs`).
            let parts: Vec<&str> = arg.split('/').collect();
            let mut found = vec![String::new()];
            for part in parts {
                let mut next = Vec::new();
                for prefix in &found {
                    let dir = repo().join(prefix);
                    if part.contains('*') {
                        for e in std::fs::read_dir(&dir).into_iter().flatten() {
                            let name = e.unwrap().file_name().to_string_lossy().into_owned();
                            if glob(part.as_bytes(), name.as_bytes()) {
                                next.push(format!("{prefix}{name}/"));
                            }
                        }
                    } else {
                        next.push(format!("{prefix}{part}/"));
                    }
                }
                found = next;
            }
            found
                .into_iter()
                .map(|f| f.trim_end_matches('/').to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    for file in &touched {
        assert!(
            repo().join(file).is_file(),
            "the build touches {file}, which is not a source file (touch would create an empty one)"
        );
    }
    let sources: BTreeSet<&String> = stub_files
        .iter()
        .filter(|f| f.ends_with(".rs") && !f.starts_with("benches/") && repo().join(f).is_file())
        .collect();
    assert!(sources.len() >= 9, "stub sources found: {sources:?}");
    for file in sources {
        assert!(
            touched.contains(file),
            "{file} was a stub in the dependency layer: the real build must touch it, or cargo keeps \
             the stub's empty build (touched: {touched:?})"
        );
    }
    let cargo: Vec<&str> = cargo.split_whitespace().collect();
    assert_eq!(&cargo[..2], ["cargo", "build"]);
    for flag in ["--release", "--locked"] {
        assert!(
            cargo.contains(&flag),
            "the image build uses {flag}: {cargo:?}"
        );
    }
    let bin = cargo[cargo.iter().position(|w| *w == "--bin").expect("--bin") + 1];
    assert_eq!(bin, manifest["package"]["name"].as_str().unwrap());
    let (_, stages_again) = dockerfile();
    let final_stage = stages_again.last().unwrap();
    let copied = final_stage
        .instrs
        .iter()
        .filter(|i| i.cmd == "COPY")
        .map(parse_copy)
        .find(|c| c.from.as_deref() == Some("build"))
        .expect("the runtime stage copies the binary from the build stage");
    let build_wd = workdir(build, usize::MAX);
    assert_eq!(
        copied.srcs,
        [format!("{build_wd}/target/release/{bin}")],
        "the runtime stage copies what `cargo build --release --bin {bin}` makes"
    );
}

/// The runtime base image's own libraries (debian:bookworm-slim: libc6, libgcc-s1, zlib1g, and
/// libstdc++6 for apt) — what the binary and ONNX Runtime may link against.
const BASE_LIBS: &[&str] = &[
    "libc.so.6",
    "libm.so.6",
    "libdl.so.2",
    "librt.so.1",
    "libpthread.so.0",
    "libgcc_s.so.1",
    "libstdc++.so.6",
    "libz.so.1",
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
];

fn needed_libs(file: &Path) -> Option<Vec<String>> {
    let readelf = tool("readelf")?;
    let out = run_checked(
        {
            let mut c = Command::new(readelf);
            c.args(["-d", "-W"]).arg(file);
            c
        },
        "readelf -d",
    );
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("(NEEDED)"))
            .filter_map(|l| l.split('[').nth(1).and_then(|s| s.split(']').next()))
            .map(str::to_owned)
            .collect(),
    )
}

/// Where this test run's models and ONNX Runtime are: they stand in for the assets stage's downloads.
fn local_assets() -> (PathBuf, PathBuf) {
    let assets = std::env::var_os("LOOKALIKE_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".lookalike"));
    // The assets the test command's set-up just made: they hold CLIP's uint8 twin already
    // (scripts/exact_int8.py), which the replays, cut off from the package registry, could not make.
    let models = assets.join("models");
    let ort = assets.join("lib/libonnxruntime.so.1.31.1");
    for (path, what) in [(&models, "models"), (&ort, "ONNX Runtime library")] {
        assert!(
            path.exists(),
            "{what} not found at {}: run scripts/setup.sh (or scripts/test.sh) first",
            path.display()
        );
    }
    (models, ort)
}

#[test]
fn the_image_assembles_and_starts_from_its_own_layout() {
    let ignore = Ignore::load();
    let (_, stages) = dockerfile();
    let scratch = tempfile::tempdir().unwrap();
    let (models_from, ort_from) = local_assets();

    // Paths other stages take from each stage: rebased wherever that stage's RUN lines name them.
    let mut exported: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in &stages {
        for c in s.instrs.iter().filter(|i| i.cmd == "COPY").map(parse_copy) {
            if let Some(from) = c.from {
                exported.entry(from).or_default().extend(c.srcs);
            }
        }
    }

    // 1. The assets stage, for real.
    let assets = stage(&stages, "assets");
    let a_root = scratch.path().join("assets");
    let mut prefixes: BTreeSet<String> = exported.get("assets").cloned().unwrap_or_default();
    let env: Vec<(String, String)> = stage_env(assets);
    for (_, v) in &env {
        if v.starts_with('/') && !v.contains(':') {
            prefixes.insert(v.clone());
        }
    }
    let mut ran = 0;
    for instr in &assets.instrs {
        let wd = workdir(assets, instr.line + 1);
        prefixes.insert(wd.clone());
        std::fs::create_dir_all(rebase(&a_root, &wd)).unwrap();
        match instr.cmd.as_str() {
            "COPY" => {
                let copy = parse_copy(instr);
                assert!(
                    copy.from.is_none(),
                    "line {}: the assets stage copies from the context",
                    copy.line
                );
                copy_from_context(&ignore, &copy, &a_root, &wd);
            }
            "RUN" => {
                let home = rebase(&a_root, "/root");
                std::fs::create_dir_all(&home).unwrap();
                let mut cmd = Command::new("/bin/sh");
                cmd.arg("-c")
                    .arg(rebase_text(&instr.args, &a_root, &prefixes))
                    .current_dir(rebase(&a_root, &wd))
                    .env_clear()
                    .env("PATH", std::env::var("PATH").unwrap_or_default())
                    .env("HOME", &home)
                    .envs(
                        env.iter()
                            .map(|(k, v)| (k.clone(), rebase_text(v, &a_root, &prefixes))),
                    )
                    // In place of the downloads: this run's verified models and library, and a pip that
                    // cannot reach the network (anything still fetched fails the replay).
                    .env("LOOKALIKE_MODELS_FROM", &models_from)
                    .env("LOOKALIKE_ORT_FROM", &ort_from)
                    .env("PIP_NO_INDEX", "1")
                    .env("PIP_DISABLE_PIP_VERSION_CHECK", "1");
                run_checked(
                    cmd,
                    &format!("Dockerfile line {} (assets stage RUN)", instr.line),
                );
                ran += 1;
            }
            "WORKDIR" | "ENV" | "ARG" => {}
            other => panic!(
                "line {}: {other} in the assets stage is not replayed",
                instr.line
            ),
        }
    }
    assert!(ran >= 1, "the assets stage runs scripts/setup.sh");

    // 2. The runtime stage's file tree.
    let runtime = stages.last().unwrap();
    assert!(
        runtime.image.starts_with("debian:bookworm"),
        "FROM {}: BASE_LIBS describe debian:bookworm-slim",
        runtime.image
    );
    let root = scratch.path().join("image");
    let mut users: BTreeMap<u32, String> = BTreeMap::new();
    let mut installed: Vec<String> = Vec::new();
    let mut user: Option<String> = None;
    let mut chowned: Vec<(PathBuf, u32)> = Vec::new();
    let mut bin_paths = Vec::new();
    for instr in &runtime.instrs {
        let wd = workdir(runtime, instr.line + 1);
        std::fs::create_dir_all(rebase(&root, &wd)).unwrap();
        match instr.cmd.as_str() {
            "COPY" => {
                let copy = parse_copy(instr);
                let dest = in_stage(&wd, &copy.dest);
                match copy.from.as_deref() {
                    None => copy_from_context(&ignore, &copy, &root, &wd),
                    Some("build") => {
                        // The binary this test build made stands in for the build stage's.
                        assert_eq!(copy.srcs.len(), 1);
                        let target = rebase(&root, &dest);
                        copy_tree(Path::new(env!("CARGO_BIN_EXE_lookalike")), &target, true);
                        bin_paths.push(dest.clone());
                    }
                    Some(from) => {
                        let from_root = match from {
                            "assets" => &a_root,
                            other => {
                                panic!("line {}: COPY --from={other} is not replayed", copy.line)
                            }
                        };
                        for src in &copy.srcs {
                            let src_path = rebase(from_root, src);
                            assert!(
                                src_path.exists(),
                                "line {}: COPY --from={from} {src}: the stage did not make it",
                                copy.line
                            );
                            copy_tree(&src_path, &rebase(&root, &dest), true);
                        }
                    }
                }
            }
            "RUN" => {
                for part in instr.args.split("&&").map(str::trim) {
                    let words: Vec<&str> = part.split_whitespace().collect();
                    match words[0] {
                        "apt-get" if words.get(1) == Some(&"install") => installed.extend(
                            words[2..]
                                .iter()
                                .filter(|w| !w.starts_with('-'))
                                .map(|w| w.to_string()),
                        ),
                        "apt-get" => {}
                        "rm" if part.contains("/var/lib/apt/lists") => {}
                        "groupadd" => {}
                        "useradd" => {
                            let uid = words
                                .iter()
                                .position(|w| *w == "--uid" || *w == "-u")
                                .map(|i| words[i + 1].parse::<u32>().unwrap())
                                .expect("useradd --uid N (a fixed uid the USER line can name)");
                            users.insert(uid, words.last().unwrap().to_string());
                        }
                        "mkdir" => {
                            for dir in words[1..].iter().filter(|w| !w.starts_with('-')) {
                                std::fs::create_dir_all(rebase(&root, &in_stage(&wd, dir)))
                                    .unwrap();
                            }
                        }
                        "chown" => {
                            let owner = words[1..].iter().find(|w| !w.starts_with('-')).unwrap();
                            let uid = uid_of(owner, &users);
                            for path in words[1..].iter().filter(|w| !w.starts_with('-')).skip(1) {
                                let p = rebase(&root, &in_stage(&wd, path));
                                assert!(
                                    p.exists(),
                                    "line {}: chown {path}: no such path",
                                    instr.line
                                );
                                chowned.push((p, uid));
                            }
                        }
                        other => panic!(
                            "line {}: `{other}` in the runtime stage's RUN is not replayed: teach \
                             tests/dockerfile.rs what it does to the file tree",
                            instr.line
                        ),
                    }
                }
            }
            "USER" => user = Some(instr.args.clone()),
            "WORKDIR" | "ENV" | "EXPOSE" | "HEALTHCHECK" | "ENTRYPOINT" | "CMD" | "LABEL"
            | "ARG" => {}
            other => panic!(
                "line {}: {other} in the runtime stage is not replayed",
                instr.line
            ),
        }
    }

    // No link may dangle or leave the image.
    let mut all = Vec::new();
    walk(&root, &mut all);
    for path in &all {
        if std::fs::symlink_metadata(path)
            .unwrap()
            .file_type()
            .is_symlink()
        {
            let target = std::fs::read_link(path).unwrap();
            match resolve_in_root(&root, path) {
                Ok(to) => assert!(
                    to.starts_with(&root),
                    "{} -> {}: leaves the image",
                    path.display(),
                    target.display()
                ),
                Err(why) => panic!(
                    "{} -> {}: dangles in the image ({why})",
                    path.strip_prefix(&root).unwrap().display(),
                    target.display()
                ),
            }
        }
    }

    // Unprivileged, with a home for the data.
    let user = user.expect("the image sets USER");
    let uid = uid_of(&user, &users);
    assert_ne!(uid, 0, "the image runs as root (USER {user})");
    assert!(
        users.contains_key(&uid),
        "USER {uid} is not a user the image creates ({users:?})"
    );
    assert!(
        installed.iter().any(|p| p == "curl"),
        "the HEALTHCHECK needs curl in the image"
    );
    assert!(
        installed.iter().any(|p| p == "ca-certificates"),
        "HTTPS downloads need ca-certificates"
    );

    // 3. The binary, started the way the image starts it.
    let image_env: Vec<(String, String)> = stage_env(runtime);
    let wd = workdir(runtime, usize::MAX);
    let entrypoint: Vec<String> = serde_json::from_str(
        &runtime
            .instrs
            .iter()
            .rev()
            .find(|i| i.cmd == "ENTRYPOINT")
            .expect("ENTRYPOINT")
            .args,
    )
    .expect("ENTRYPOINT in JSON form (signals reach the process)");
    let default_cmd: Vec<String> = serde_json::from_str(
        &runtime
            .instrs
            .iter()
            .rev()
            .find(|i| i.cmd == "CMD")
            .expect("CMD")
            .args,
    )
    .expect("CMD in JSON form");
    // debian:bookworm-slim's PATH, unless the image sets its own.
    let path_var = image_env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    let program = path_var
        .split(':')
        .map(|d| rebase(&root, &format!("{d}/{}", entrypoint[0])))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("ENTRYPOINT {} is not on the image's PATH", entrypoint[0]));
    assert!(
        bin_paths.iter().any(|b| rebase(&root, b) == program),
        "ENTRYPOINT runs {}, not the binary the build stage made",
        program.display()
    );
    assert!(std::fs::metadata(&program).unwrap().permissions().mode() & 0o111 != 0);
    let workdir_path = rebase(&root, &wd);
    let lookalike = |args: &[&str]| -> Output {
        let mut cmd = Command::new(&program);
        cmd.args(&entrypoint[1..])
            .args(args)
            .current_dir(&workdir_path)
            .env_clear()
            .env("PATH", &path_var)
            .envs(image_env.iter().cloned());
        run_checked(cmd, &format!("lookalike {}", args.join(" ")))
    };
    let help = String::from_utf8(lookalike(&["--help"]).stdout).unwrap();
    let commands: BTreeSet<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for role in ["serve", "api", "worker"] {
        assert!(
            commands.contains(role),
            "`{role}` is a subcommand ({commands:?})"
        );
        lookalike(&[role, "--help"]);
    }
    assert!(
        commands.contains(default_cmd[0].as_str()),
        "CMD {default_cmd:?} is not a subcommand ({commands:?})"
    );
    let config = String::from_utf8(lookalike(&["config"]).stdout).unwrap();
    // `lookalike config` prints the configuration as TOML: each section's path settings.
    let printed: toml::Table = config.parse().expect("`lookalike config` prints TOML");
    let mut paths: BTreeMap<String, String> = BTreeMap::new();
    for fields in printed.values().filter_map(toml::Value::as_table) {
        for (key, value) in fields {
            let is_path_key = ["path", "_dir", "_library", "_model", "_map", "_file"]
                .iter()
                .any(|s| key.ends_with(s));
            if let (true, Some(value)) = (is_path_key, value.as_str()) {
                paths.insert(key.to_string(), value.to_string());
            }
        }
    }
    for key in [
        "ort_library",
        "path",
        "data_dir",
        "prior_model",
        "prior_map",
    ] {
        assert!(
            paths.contains_key(key),
            "`lookalike config` names no {key}:\n{config}"
        );
    }
    let data_dirs: Vec<&PathBuf> = chowned
        .iter()
        .filter(|(_, u)| *u == uid)
        .map(|(p, _)| p)
        .collect();
    for (key, value) in &paths {
        let resolved = rebase(&root, &in_stage(&wd, value));
        if key.ends_with("_dir") {
            // Made at run time, by the image's user, under a directory that user owns.
            assert!(
                data_dirs.iter().any(|d| resolved.starts_with(d)),
                "{key} = {value}: not under a directory the image gives its user ({data_dirs:?})"
            );
        } else {
            match resolve_in_root(&root, &resolved) {
                Ok(p) => assert!(p.is_file(), "{key} = {value}: not a file in the image"),
                Err(why) => panic!("{key} = {value}: missing from the image ({why})"),
            }
        }
    }
    if running_as_root() {
        for (path, owner) in &chowned {
            // Only the (empty) directories the image makes for its user: the replay's other files may
            // be hard links to models and the test binary.
            assert!(path.is_dir() && std::fs::read_dir(path).unwrap().next().is_none());
            std::os::unix::fs::chown(path, Some(*owner), Some(*owner)).unwrap();
            assert_eq!(std::fs::metadata(path).unwrap().uid(), *owner);
        }
    }

    // 4. What the binary and ONNX Runtime link against is in the runtime base image.
    let ort =
        resolve_in_root(&root, &rebase(&root, &in_stage(&wd, &paths["ort_library"]))).unwrap();
    for file in [program.clone(), ort] {
        if let Some(libs) = needed_libs(&file) {
            assert!(!libs.is_empty(), "{}: no NEEDED entries?", file.display());
            for lib in libs {
                assert!(
                    BASE_LIBS.contains(&lib.as_str()),
                    "{} needs {lib}, which debian:bookworm-slim does not have: install its package \
                     in the runtime stage (and add it here)",
                    file.display()
                );
            }
        }
    }
}

/// The uid of `user[:group]`: a number, `root`, or a user the image's `useradd` made.
fn uid_of(spec: &str, users: &BTreeMap<u32, String>) -> u32 {
    let user = spec.split(':').next().unwrap();
    user.parse().unwrap_or_else(|_| match user {
        "root" => 0,
        name => {
            *users
                .iter()
                .find(|(_, n)| *n == name)
                .unwrap_or_else(|| panic!("`{name}` is not a user the image creates ({users:?})"))
                .0
        }
    })
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// A listener that answers every request with 200, on a free port.
fn answering_listener() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    port
}

fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_healthcheck_probes_the_port_of_whichever_role_runs() {
    let (_, stages) = dockerfile();
    let runtime = stages.last().unwrap();
    let health: Vec<&Instr> = runtime
        .instrs
        .iter()
        .filter(|i| i.cmd == "HEALTHCHECK")
        .collect();
    assert_eq!(health.len(), 1, "one HEALTHCHECK");
    let args = &health[0].args;
    let command = args
        .split_once("CMD ")
        .map(|(_, c)| c.trim().to_string())
        .expect("HEALTHCHECK ... CMD <shell command>");
    assert!(
        !command.starts_with('['),
        "the shell form, so the port variables are expanded"
    );
    let env = stage_env(runtime);
    let exposed: BTreeSet<u16> = runtime
        .instrs
        .iter()
        .filter(|i| i.cmd == "EXPOSE")
        .flat_map(|i| {
            i.args
                .split_whitespace()
                .map(|p| p.split('/').next().unwrap().parse::<u16>().unwrap())
        })
        .collect();
    for var in ["LOOKALIKE_HTTP__LISTEN", "LOOKALIKE_WORKER__LISTEN"] {
        let value = &env
            .iter()
            .find(|(k, _)| k == var)
            .unwrap_or_else(|| panic!("the image sets {var}"))
            .1;
        assert!(
            value.starts_with("0.0.0.0:"),
            "{var}={value}: reachable from outside the container"
        );
        let port: u16 = value.rsplit(':').next().unwrap().parse().unwrap();
        assert!(exposed.contains(&port), "EXPOSE {port} ({var})");
        assert!(
            command.contains(var),
            "the HEALTHCHECK reads {var}: {command}"
        );
        assert!(
            !command.contains(&format!(":{port}/")),
            "the HEALTHCHECK hard-codes port {port} instead of reading {var}: {command}"
        );
    }
    // Run it: as the API (http.listen answers), as a worker (worker.listen answers), and with nothing.
    if tool("curl").is_none() {
        return;
    }
    let up = answering_listener();
    let run = |http: u16, worker: u16| -> bool {
        Command::new("/bin/sh")
            .arg("-c")
            .arg(&command)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().cloned())
            .env("LOOKALIKE_HTTP__LISTEN", format!("0.0.0.0:{http}"))
            .env("LOOKALIKE_WORKER__LISTEN", format!("0.0.0.0:{worker}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    assert!(
        run(up, closed_port()),
        "healthy as `serve`/`api` (http.listen answers)"
    );
    assert!(
        run(closed_port(), up),
        "healthy as `worker` (worker.listen answers)"
    );
    assert!(
        !run(closed_port(), closed_port()),
        "unhealthy when nothing answers"
    );
}

#[test]
fn setup_stops_an_image_build_on_an_unsupported_architecture() {
    let (_, stages) = dockerfile();
    let assets = stage(&stages, "assets");
    assert!(
        assets
            .instrs
            .iter()
            .any(|i| i.cmd == "RUN" && i.args.contains("scripts/setup.sh")),
        "the assets stage runs scripts/setup.sh"
    );
    let fake = tempfile::tempdir().unwrap();
    let uname = fake.path().join("uname");
    std::fs::write(&uname, "#!/bin/sh\necho riscv64\n").unwrap();
    std::fs::set_permissions(&uname, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(repo().join("scripts/setup.sh"))
        .env(
            "PATH",
            format!(
                "{}:{}",
                fake.path().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("LOOKALIKE_ASSETS", fake.path().join("assets"))
        .env("LOOKALIKE_CACHE", fake.path().join("cache"))
        .env("PIP_NO_INDEX", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "setup.sh went on on riscv64: {stderr}"
    );
    assert!(
        stderr.contains("unsupported CPU architecture 'riscv64'") && stderr.contains("x86_64"),
        "setup.sh says why: {stderr}"
    );
    assert!(
        !fake.path().join("assets").exists(),
        "nothing is fetched before the check"
    );
}

/// Runs a copy of scripts/setup.sh alone (no converter beside it) with local models and library.
fn setup_alone(dir: &Path, models_from: &Path, args: &[&str]) -> Output {
    let (_, ort) = local_assets();
    let scripts = dir.join("repo/scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    std::fs::create_dir_all(dir.join("repo/models")).unwrap();
    std::fs::copy(repo().join("scripts/setup.sh"), scripts.join("setup.sh")).unwrap();
    Command::new(scripts.join("setup.sh"))
        .args(["--models-from".as_ref(), models_from.as_os_str()])
        .args(["--ort-from".as_ref(), ort.as_os_str()])
        .args(args)
        .env("LOOKALIKE_ASSETS", dir.join("assets"))
        .env("LOOKALIKE_CACHE", dir.join("cache"))
        .env("PIP_NO_INDEX", "1")
        .env_remove("LOOKALIKE_MODELS_FROM")
        .env_remove("LOOKALIKE_ORT_FROM")
        .output()
        .unwrap()
}

#[test]
fn setup_treats_a_bad_cold_start_model_as_optional_unless_strict() {
    let (models, _) = local_assets();
    let dir = tempfile::tempdir().unwrap();
    let from = dir.path().join("models-from");
    std::fs::create_dir(&from).unwrap();
    let clip = "clip_vitb16_visual_int8.onnx";
    for file in [clip, "clip_vitb16_visual_int8.u8.onnx"] {
        std::os::unix::fs::symlink(
            std::fs::canonicalize(models.join(file)).unwrap(),
            from.join(file),
        )
        .unwrap();
    }
    std::fs::write(
        from.join("efficientnet_lite0_imagenet.onnx"),
        b"not the model",
    )
    .unwrap();

    // A checksum mismatch on the optional model is a warning (it used to exit from inside the step
    // that `|| echo warning` was meant to guard)...
    let out = setup_alone(&dir.path().join("lenient"), &from, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "setup.sh stopped on the optional model: {stderr}"
    );
    assert!(
        stderr.contains("checksum mismatch") && stderr.contains("warning"),
        "{stderr}"
    );
    assert!(dir.path().join("lenient/assets/models").join(clip).exists());
    assert!(
        !dir.path()
            .join("lenient/assets/models/efficientnet_lite0_imagenet.onnx")
            .exists()
    );

    // ... and with --strict (the image build) it stops everything.
    let out = setup_alone(&dir.path().join("strict"), &from, &["--strict", "--copy"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "setup.sh --strict went on without the Lite0 model: {stderr}"
    );
    assert!(stderr.contains("--strict"), "{stderr}");
}

#[test]
fn the_replay_reads_dockerfiles_and_ignore_files_as_docker_does() {
    let instrs = parse_dockerfile(
        "FROM a AS b\n# c\nRUN x \\\n  # inside\n  && y\nENV A=1 B=\"two words\" \\\n    C=/c\nCOPY --from=b /x /y\n",
    );
    assert_eq!(instrs.len(), 4);
    assert_eq!(instrs[1].args, "x   && y");
    assert_eq!(
        parse_env(&instrs[2].args),
        [("A", "1"), ("B", "two words"), ("C", "/c")].map(|(k, v)| (k.to_string(), v.to_string()))
    );
    let copy = parse_copy(&instrs[3]);
    assert_eq!(
        (
            copy.from.as_deref(),
            copy.srcs.as_slice(),
            copy.dest.as_str()
        ),
        (Some("b"), &["/x".to_string()][..], "/y")
    );
    let ignore = Ignore {
        rules: ["target", "**/node_modules", "*.log", "!keep.log"]
            .iter()
            .map(|p| match p.strip_prefix('!') {
                Some(p) => (false, p.split('/').map(str::to_owned).collect()),
                None => (true, p.split('/').map(str::to_owned).collect()),
            })
            .collect(),
    };
    assert!(ignore.excluded("target/debug/x"));
    assert!(ignore.excluded("a/b/node_modules/c"));
    assert!(ignore.excluded("node_modules"));
    assert!(ignore.excluded("x.log"));
    assert!(!ignore.excluded("keep.log"));
    assert!(
        !ignore.excluded("a/x.log"),
        "`*.log` is for the context's top only"
    );
    assert!(!ignore.excluded("src/target.rs"));
    let root = Path::new("/tmp/r");
    let prefixes: BTreeSet<String> = ["/assets".to_string(), "/src".to_string()].into();
    assert_eq!(
        rebase_text(
            "LOOKALIKE_ASSETS=/assets x /src/a /srcx /usr/bin",
            root,
            &prefixes
        ),
        "LOOKALIKE_ASSETS=/tmp/r/assets x /tmp/r/src/a /srcx /usr/bin"
    );
}
