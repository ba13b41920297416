use clap::{Parser, Subcommand};
use lookalike_core::Config;

mod eval;

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
            lookalike::migrate(&store).await
        }
        Command::Config => {
            println!("{config:#?}");
            Ok(())
        }
        Command::Eval(args) => eval::run(args).await,
    }
}
