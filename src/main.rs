use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lookalike::Role;
use lookalike_core::Config;

mod cli;

use cli::{client, dedupe, eval, import, jobs, keys, reclassify, reindex, status};

/// lookalike: finds visually similar products of the same category.
///
/// Settings come from config/default.toml, the file in $LOOKALIKE_CONFIG and LOOKALIKE_* variables.
#[derive(Parser)]
#[command(version, about, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API and the worker in one process (embedded vector index).
    #[command(after_help = SERVE_HELP)]
    Serve,
    /// Run the HTTP API alone (needs index.backend = "qdrant"; workers run as `lookalike worker`).
    #[command(after_help = API_HELP)]
    Api,
    /// Run a worker alone: consume the job queue (needs index.backend = "qdrant"). Start as many as
    /// the queue needs; each serves /healthz, /readyz and /metrics on worker.listen.
    #[command(after_help = WORKER_HELP)]
    Worker,
    /// Apply database migrations and exit.
    #[command(after_help = "Example:\n  LOOKALIKE_DATABASE__URL=postgres://… lookalike migrate")]
    Migrate,
    /// Print the effective configuration as TOML (every setting; passwords and keys as ***) and exit;
    /// the output is a valid $LOOKALIKE_CONFIG file.
    #[command(after_help = "Example:\n  LOOKALIKE_WORKER__CONCURRENCY=8 lookalike config")]
    Config,
    /// Import images in bulk from a labelled folder, a CSV or a JSON-lines file, through a running
    /// service; resumable, with progress and a failures file.
    #[command(after_help = import::AFTER_HELP)]
    Import(import::ImportArgs),
    /// Show a running service's queue, jobs by status, items by category and model.
    #[command(after_help = status::AFTER_HELP)]
    Status(status::StatusArgs),
    /// List recent, failed or named jobs of a running service.
    #[command(after_help = jobs::AFTER_HELP)]
    Jobs(jobs::JobsArgs),
    /// Measure search quality on a labelled folder (FOLDER/<category>/<image>) against a running service.
    #[command(after_help = eval::AFTER_HELP)]
    Eval(eval::EvalArgs),
    /// Re-predict the category of every item whose category was predicted, from today's labels
    /// (calls POST /v1/reclassify on a running service; provided categories are never changed).
    #[command(after_help = reclassify::AFTER_HELP)]
    Reclassify(reclassify::ReclassifyArgs),
    /// Embed every item with the configured (new) model into the configured (new) index location,
    /// while the service keeps serving the old one; restartable, with progress.
    #[command(after_help = reindex::AFTER_HELP)]
    Reindex(reindex::ReindexArgs),
    /// Group the near-duplicates of the stored catalogue by the ingest rule (`dedupe.threshold`);
    /// restartable, with progress.
    Dedupe(dedupe::DedupeArgs),
    /// Manage API keys (README "API keys").
    #[command(subcommand, after_help = keys::AFTER_HELP)]
    Keys(keys::KeysCommand),
}

const AFTER_HELP: &str = "\
Getting started:
  lookalike serve                                   # the service, on http://127.0.0.1:8080
  lookalike import .lookalike/datasets/vendure      # a folder of <category>/<image> files
  lookalike status

The client commands (import, status, jobs, eval, reclassify) take --api URL (LOOKALIKE_API) and
--api-key KEY (LOOKALIKE_API_KEY). Exit codes: 0 all good; 1 some jobs failed; 2 usage error, or the
service could not be reached or refused the request.";

const SERVE_HELP: &str = "\
Examples:
  LOOKALIKE_AUTH__ENABLED=false lookalike serve       # local development, no API keys
  LOOKALIKE_CONFIG=prod.toml lookalike serve";

const API_HELP: &str = "\
Example (a Qdrant server, API and workers apart; README \"Scaling out\"):
  LOOKALIKE_INDEX__BACKEND=qdrant LOOKALIKE_INDEX__URL=http://qdrant:6334 lookalike api";

const WORKER_HELP: &str = "\
Example:
  LOOKALIKE_INDEX__BACKEND=qdrant LOOKALIKE_INDEX__URL=http://qdrant:6334 lookalike worker";

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve => service(|config| run(config, Role::All)).await,
        Command::Api => service(|config| run(config, Role::Api)).await,
        Command::Worker => service(|config| run(config, Role::Worker)).await,
        Command::Migrate => service(migrate).await,
        Command::Reindex(args) => bulk(|config| reindex::run(config, args)).await,
        Command::Dedupe(args) => bulk(|config| dedupe::run(config, args)).await,
        Command::Config => {
            service(|config| async move {
                print!("{}", config.to_toml());
                Ok(())
            })
            .await
        }
        // The commands below need no configuration of their own: a broken $LOOKALIKE_CONFIG must
        // not stop them.
        Command::Keys(command) => client::exit(keys::run(command).map(|()| client::EXIT_OK)),
        Command::Import(args) => client::exit(import::run(args).await),
        Command::Status(args) => client::exit(status::run(args).await),
        Command::Jobs(args) => client::exit(jobs::run(args).await),
        Command::Eval(args) => client::exit(eval::run(args).await),
        Command::Reclassify(args) => client::exit(reclassify::run(args).await),
    }
}

/// Runs a command of the service itself, with its configuration loaded and logging started.
/// A bulk command on the service's stores (`reindex`, `dedupe`): as the other bulk commands (and
/// their help) say, its own exit code (1 when some items failed), or 2 when it could not run.
async fn bulk<F, Fut>(command: F) -> ExitCode
where
    F: FnOnce(Config) -> Fut,
    Fut: Future<Output = anyhow::Result<u8>>,
{
    let mut code = client::EXIT_OK;
    let status = service(|config| async {
        code = command(config).await?;
        Ok(())
    })
    .await;
    if status == ExitCode::SUCCESS {
        ExitCode::from(code)
    } else {
        ExitCode::from(client::EXIT_ERROR)
    }
}

async fn service<F, Fut>(command: F) -> ExitCode
where
    F: FnOnce(Config) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let result = async {
        let config = Config::load()?;
        lookalike::init_logging(&config);
        command(config).await
    };
    match result.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:?}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config, role: Role) -> anyhow::Result<()> {
    lookalike::run(config, role, lookalike::shutdown_on_signals()).await
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    let store = lookalike::open_store(&config)?;
    lookalike::migrate(&store, config.database.url.expose()).await
}
