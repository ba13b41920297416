use clap::{Parser, Subcommand};
use lookalike_core::Config;

mod eval;
mod keys;

/// lookalike: finds visually similar products of the same category.
///
/// Settings come from config/default.toml, the file in $LOOKALIKE_CONFIG and LOOKALIKE_* variables.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API and the worker in one process (embedded vector index).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Print the effective configuration (secrets redacted) and exit.
    Config,
    /// Measure search quality on a labelled folder (FOLDER/<category>/<image>) against a running service.
    Eval(eval::EvalArgs),
    /// Re-predict the category of every item whose category was predicted, from today's labels
    /// (calls POST /v1/reclassify on a running service; provided categories are never changed).
    Reclassify {
        /// Base URL of the running service.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        api: String,
        /// API key with the `write` scope.
        #[arg(long, env = "LOOKALIKE_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
    },
    /// Manage API keys (README "API keys").
    #[command(subcommand)]
    Keys(keys::KeysCommand),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load()?;
    lookalike::init_logging(&config);
    match cli.command {
        Command::Serve => lookalike::serve(config, lookalike::shutdown_on_signals()).await,
        Command::Migrate => {
            let store = lookalike_store::Store::connect_lazy(
                &config.database.url,
                2,
                std::time::Duration::from_secs(5),
            )?;
            lookalike::migrate(&store, &config.database.url).await
        }
        Command::Config => {
            println!("{config:#?}");
            Ok(())
        }
        Command::Eval(args) => eval::run(args).await,
        Command::Keys(command) => keys::run(command),
        Command::Reclassify { api, api_key } => {
            let url = format!("{}/v1/reclassify", api.trim_end_matches('/'));
            let client = keys::client(api_key.as_deref())?.build()?;
            let response = client.post(&url).send().await?;
            let status = response.status();
            let body: serde_json::Value = response.json().await?;
            println!("{}", serde_json::to_string_pretty(&body)?);
            anyhow::ensure!(status.is_success(), "{url} answered {status}");
            Ok(())
        }
    }
}
