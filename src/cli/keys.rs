//! API keys on the command line: `lookalike keys new` (the client commands send a key with
//! `--api-key`, see `client.rs`).

use anyhow::Context;
use lookalike_core::config::{ApiKey, parse_scopes};
use rand::RngCore;

pub const AFTER_HELP: &str = "\
Example:
  lookalike keys new --name shop-feed --scopes read,write";

#[derive(clap::Subcommand, Debug)]
pub enum KeysCommand {
    /// Make a new random API key; prints the key once and the configuration line that holds its hash.
    #[command(
        after_help = "Examples:\n  lookalike keys new --name shop-feed --scopes read,write\n  \
                            lookalike keys new --name catalogue-page   # read only"
    )]
    New {
        /// Shown in the service's logs instead of the key: who or what uses it.
        #[arg(long)]
        name: String,
        /// `read`, `write` or both (`read,write`). They are independent: write does not include read.
        #[arg(long, default_value = "read")]
        scopes: String,
    },
}

pub fn run(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::New { name, scopes } => {
            let (key, entry) = new_key(&name, &scopes)?;
            print!("{}", instructions(&key, &entry));
            Ok(())
        }
    }
}

/// A fresh key (`lk_` and 256 random bits in hex) and its configuration entry.
pub fn new_key(name: &str, scopes: &str) -> anyhow::Result<(String, ApiKey)> {
    let scopes = parse_scopes(scopes).context("--scopes")?;
    let mut bytes = [0u8; 32];
    // The thread generator is a CSPRNG seeded from the operating system.
    rand::rng().fill_bytes(&mut bytes);
    let key = format!("lk_{}", hex::encode(bytes));
    let entry = ApiKey {
        name: name.to_string(),
        sha256: lookalike_api::auth::key_sha256(&key),
        scopes,
    };
    entry.check()?;
    Ok((key, entry))
}

fn instructions(key: &str, entry: &ApiKey) -> String {
    let scopes: Vec<String> = entry.scopes.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "New API key `{name}` with the scopes {plus}. It is shown only now: the service keeps only its SHA-256.\n\
         \n    {key}\n\n\
         Give the service its hash, in the environment (join several keys with commas):\n\
         \n    LOOKALIKE_AUTH__KEYS={compact}\n\n\
         or in the $LOOKALIKE_CONFIG file:\n\
         \n    [[auth.keys]]\n    name = \"{name}\"\n    sha256 = \"{sha}\"\n    scopes = [{list}]\n\n\
         Clients send it as `Authorization: Bearer <key>`; the lookalike commands that call the service \
         (import, status, jobs, eval, reclassify) take --api-key or LOOKALIKE_API_KEY.\n",
        name = entry.name,
        plus = entry.compact().rsplit(':').next().unwrap_or_default(),
        compact = entry.compact(),
        sha = entry.sha256,
        list = scopes.join(", "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_is_random_and_its_printed_lines_configure_it() {
        let (key, entry) = new_key("shop", "write,read").unwrap();
        let (other, _) = new_key("shop", "read").unwrap();
        assert_ne!(key, other);
        assert!(key.starts_with("lk_") && key.len() == 3 + 64, "{key}");
        assert_eq!(entry.sha256, lookalike_api::auth::key_sha256(&key));

        let text = instructions(&key, &entry);
        assert!(text.contains(&format!("\n    {key}\n")), "{text}");
        let line = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("LOOKALIKE_AUTH__KEYS="))
            .unwrap();
        let config = lookalike_core::Config::load_from(
            None,
            [("LOOKALIKE_AUTH__KEYS".to_string(), line.to_string())],
        )
        .unwrap();
        assert_eq!(config.auth.keys, vec![entry.clone()]);

        let file = tempfile::NamedTempFile::new().unwrap();
        let table = &text[text.find("[[auth.keys]]").unwrap()..text.find("\n\nClients").unwrap()];
        std::fs::write(file.path(), table).unwrap();
        let config = lookalike_core::Config::load_from(Some(file.path()), []).unwrap();
        assert_eq!(config.auth.keys, vec![entry.clone()]);
        assert!(
            !text.contains(&format!("{key}:")),
            "the key is never part of the configuration"
        );
    }

    #[test]
    fn bad_names_and_scopes_are_refused_before_a_key_is_made() {
        assert!(new_key("two words", "read").is_err());
        assert!(new_key("shop", "admin").is_err());
        assert!(new_key("shop", "").is_err());
    }
}
