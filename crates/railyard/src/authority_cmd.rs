//! Who may write which release event (`railyard_core::authority`): each service's start reads
//! its signing key and the keys it trusts from the environment, and `railyard authority`
//! makes keys.
//!
//! - `RAILYARD_AUTHORITY_KEY_FILE`: the planner's or the promoter's signing key (a file only
//!   that service can read; `railyard authority key` writes it).
//! - `RAILYARD_AUTHORITY_TRUST`: the public keys every service trusts, `planner:<hex>,
//!   promoter:<hex>` (several per writer while keys are rotated). Once set, an approval, step,
//!   hold or plan that no trusted key sealed does not count anywhere.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use railyard_core::authority::{self, AuthorityKey, Writer};

/// The signing key file of the planner or the promoter.
pub const KEY_FILE_ENV: &str = "RAILYARD_AUTHORITY_KEY_FILE";
/// The public keys every service trusts.
pub const TRUST_ENV: &str = "RAILYARD_AUTHORITY_TRUST";

/// Sets up this process's authority from the environment: `writer` is the service's own
/// (`None` for services that write no authority event).
pub fn setup(service: &str, writer: Option<Writer>) -> anyhow::Result<()> {
    if let Some(path) = std::env::var_os(KEY_FILE_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        let key = AuthorityKey::read(&path)?;
        match writer {
            Some(writer) if key.writer() == writer => authority::hold(key),
            Some(writer) => anyhow::bail!(
                "{KEY_FILE_ENV}={} holds the {}'s key, but this is the {writer}: give each service its own key",
                path.display(),
                key.writer()
            ),
            None => anyhow::bail!(
                "{KEY_FILE_ENV} is set, but the {service} writes no sealed event: only the planner and the promoter hold a key (unset it here)"
            ),
        }
    }
    match std::env::var(TRUST_ENV) {
        Ok(text) if !text.trim().is_empty() => {
            let keys = authority::parse_trust(&text).with_context(|| TRUST_ENV.to_owned())?;
            for writer in [Writer::Planner, Writer::Promoter] {
                anyhow::ensure!(
                    keys.iter().any(|key| key.writer == writer),
                    "{TRUST_ENV} trusts no {writer} key: list the public key of every writer (railyard authority public KEYFILE prints it)"
                );
            }
            authority::trust(keys);
        }
        _ => tracing::warn!(
            service,
            "{TRUST_ENV} is not set: an approval, step or plan appended by any NATS user counts (set it in production; see SECURITY.md)"
        ),
    }
    Ok(())
}

/// For `railyard dev` and the demo, whose services share one process: fresh planner and
/// promoter keys, held and trusted, so what they run enforces what production does.
pub fn setup_in_process() {
    for writer in [Writer::Planner, Writer::Promoter] {
        let key = AuthorityKey::generate(writer);
        authority::trust([key.public()]);
        authority::hold(key);
    }
}

/// `railyard authority ...`.
#[derive(Debug, clap::Subcommand)]
pub enum AuthorityCmd {
    /// Write a new signing key for the planner or the promoter, and print the public key
    /// every service must trust (RAILYARD_AUTHORITY_TRUST).
    Key {
        /// Whose key.
        #[arg(long, value_parser = parse_writer)]
        writer: Writer,
        /// The key file to write (not overwritten; readable by its owner only).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the public key of a key file, as RAILYARD_AUTHORITY_TRUST lists it.
    Public {
        /// The key file.
        file: PathBuf,
    },
}

fn parse_writer(text: &str) -> Result<Writer, String> {
    text.parse()
        .map_err(|error: authority::AuthorityError| error.to_string())
}

/// Runs `railyard authority ...`.
pub fn run(command: AuthorityCmd) -> anyhow::Result<()> {
    match command {
        AuthorityCmd::Key { writer, out } => {
            let key = AuthorityKey::generate(writer);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode_owner_only()
                .open(&out)
                .with_context(|| {
                    format!(
                        "cannot create {} (an existing key is never overwritten)",
                        out.display()
                    )
                })?;
            file.write_all(key.to_file_text().as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!("{}", key.public());
            eprintln!(
                "wrote the {writer}'s key to {}: give it to the {writer} as {KEY_FILE_ENV}, and the line above to every service in {TRUST_ENV}",
                out.display()
            );
        }
        AuthorityCmd::Public { file } => println!("{}", AuthorityKey::read(&file)?.public()),
    }
    Ok(())
}

/// Files only their owner may read and write.
trait OwnerOnly {
    fn mode_owner_only(&mut self) -> &mut Self;
}

impl OwnerOnly for std::fs::OpenOptions {
    fn mode_owner_only(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}
