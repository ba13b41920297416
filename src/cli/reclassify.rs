//! `lookalike reclassify`: asks a running service to re-predict its predicted categories.

use std::time::Duration;

use anyhow::{Context, Result};
use lookalike_api_types::Reclassified;

use crate::cli::client::{Api, ApiArgs, EXIT_ERROR, EXIT_OK};

pub const AFTER_HELP: &str = "\
Example:
  lookalike reclassify --api http://127.0.0.1:8080 --api-key lk_…

Exit codes: 0 done; 2 the service could not be reached or refused (the key needs the write scope).";

#[derive(clap::Args, Debug)]
pub struct ReclassifyArgs {
    /// The running service; the key needs the `write` scope.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Prints the service's answer, whatever it is (a refusal says why in its body), and answers the
/// exit code.
pub async fn run(args: ReclassifyArgs) -> Result<u8> {
    // Re-predicting a large catalogue takes a while; the service answers when it is done.
    let api = Api::new(&args.api, Duration::from_secs(3600), "write")?;
    let (status, body) = api.send(api.http().post(api.url("/v1/reclassify"))).await?;
    if status.is_success() {
        let answer: Reclassified = serde_json::from_value(body).with_context(|| {
            format!(
                "{} answered in an unexpected shape (another version?)",
                api.url("/v1/reclassify")
            )
        })?;
        crate::cli::client::print_json(&serde_json::to_value(&answer)?)?;
        Ok(EXIT_OK)
    } else {
        // A refusal's body as it came (the API's error, or whatever a proxy said).
        crate::cli::client::print_json(&body)?;
        eprintln!("error: {} answered {status}", api.url("/v1/reclassify"));
        Ok(EXIT_ERROR)
    }
}
