//! `railyard dev`: every service in one process over one NATS — the embedded one unless
//! `--nats-url` is given — on one HTTP listener. Ctrl-C (or SIGTERM) stops the services
//! first, then drains NATS, then stops the embedded server and reaps it.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use railyard_core::Catalog;

use crate::stack::health::Health;
use crate::stack::{Listener, NatsSource, StackConfig};

/// The catalog file `railyard dev` looks for in the current directory.
const DEFAULT_CATALOG: &str = "railyard.toml";

/// The example estate bundled in the binary (`deploy/examples/`), served by `railyard dev`
/// when there is no catalog to use.
const EXAMPLE_ESTATE: &[(&str, &str)] = &[
    (
        "railyard.toml",
        include_str!("../../../deploy/examples/railyard.toml"),
    ),
    (
        "inventory.json",
        include_str!("../../../deploy/examples/inventory.json"),
    ),
    (
        "release-orders-v3.toml",
        include_str!("../../../deploy/examples/release-orders-v3.toml"),
    ),
    (
        "release-orders-v4-unsafe.toml",
        include_str!("../../../deploy/examples/release-orders-v4-unsafe.toml"),
    ),
    (
        "release-pricing-6.toml",
        include_str!("../../../deploy/examples/release-pricing-6.toml"),
    ),
];

/// Flags of `railyard dev`.
#[derive(Debug, clap::Args)]
#[command(after_help = crate::env_help::DEV)]
pub struct DevArgs {
    /// Use this NATS server instead of starting one.
    #[arg(long, env = "RAILYARD_NATS_URL")]
    pub nats_url: Option<String>,
    /// The catalog every service uses [default: railyard.toml; when there is none, the
    /// bundled example estate, written to <data-dir>/example].
    #[arg(long, env = "RAILYARD_CATALOG")]
    pub catalog: Option<PathBuf>,
    /// A tokens file (TOML of SHA-256 hashes, INTERFACES §7) whose identities are admitted
    /// besides the printed dev-<role> tokens: make one with `railyard token create`.
    #[arg(long, env = "RAILYARD_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Where the embedded NATS and the read models keep their data.
    #[arg(long, default_value = ".railyard")]
    pub data_dir: PathBuf,
    /// HTTP listener for every route.
    #[arg(long, default_value = "127.0.0.1:7800")]
    pub listen: SocketAddr,
    /// Port of the embedded NATS (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    pub nats_port: u16,
    /// How many bytes of the end of a command's output the promoter keeps, secrets masked.
    #[arg(
        long,
        env = "RAILYARD_OUTPUT_TAIL_BYTES",
        default_value_t = crate::promoter_cmd::OUTPUT_TAIL_BYTES
    )]
    pub output_tail_bytes: usize,
    /// Slack: the notifier runs when one of these is set.
    #[command(flatten)]
    pub slack: crate::notify_cmd::SlackArgs,
}

/// Reads and checks the catalog file.
pub fn load_catalog(path: &std::path::Path) -> anyhow::Result<Catalog> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the catalog {}: pass --catalog or set RAILYARD_CATALOG",
            path.display()
        )
    })?;
    Catalog::from_toml(&text).with_context(|| path.display().to_string())
}

/// One token per role for the development stack (INTERFACES §6): identities `dev-<role>`,
/// printed once at start; only their hashes are kept.
pub fn dev_tokens() -> (
    railyard_http::Tokens,
    Vec<(railyard_http::Role, String, String)>,
) {
    let identities: Vec<(railyard_http::Role, String)> = railyard_http::Role::ALL
        .into_iter()
        .map(|role| (role, format!("dev-{}", role.as_str())))
        .collect();
    let roles: Vec<[railyard_http::Role; 1]> = identities.iter().map(|(role, _)| [*role]).collect();
    let asked: Vec<(&str, &[railyard_http::Role], &[&str])> = identities
        .iter()
        .zip(&roles)
        .map(|((_, identity), roles)| (identity.as_str(), &roles[..], &[][..]))
        .collect();
    let (table, tokens) = crate::stack::generate_tokens(&asked);
    let printed = identities
        .into_iter()
        .zip(tokens)
        .map(|((role, identity), token)| (role, identity, token))
        .collect();
    (table, printed)
}

/// The catalog `railyard dev` uses: `--catalog`, else `railyard.toml` here, else the bundled
/// example estate written to `<data_dir>/example` (saying so on stdout). The flag says whether
/// it is the example.
fn choose_catalog(args: &DevArgs) -> anyhow::Result<(PathBuf, bool)> {
    if let Some(path) = &args.catalog {
        return Ok((path.clone(), false));
    }
    let here = PathBuf::from(DEFAULT_CATALOG);
    if here.exists() {
        return Ok((here, false));
    }
    let dir = args.data_dir.join("example");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, text) in EXAMPLE_ESTATE {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!(
        "no {DEFAULT_CATALOG} here: serving the bundled example estate from {} (pass --catalog to use yours)",
        dir.display()
    );
    Ok((dir.join(DEFAULT_CATALOG), true))
}

/// Runs the development stack until Ctrl-C or SIGTERM.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    crate::authority_cmd::setup_in_process();
    let (catalog_path, example) = choose_catalog(&args)?;
    let catalog = load_catalog(&catalog_path)?;
    let file_tokens = crate::promoter_cmd::load_tokens(args.tokens_file.as_deref())?;
    let (tokens, printed) = dev_tokens();
    let mut config = StackConfig::new(
        catalog.clone(),
        args.data_dir.clone(),
        tokens.merged(&file_tokens),
    )?;
    if let Some(url) = &args.nats_url {
        config.nats = NatsSource::External(url.clone());
    } else {
        config.nats = NatsSource::Embedded {
            port: args.nats_port,
        };
    }
    config.listen = args.listen;
    for worker in &mut config.workers {
        worker.output_tail_bytes = args.output_tail_bytes;
    }
    config.intake = railyard_intake::IntakeConfig::from_env(&catalog_path)
        .with_context(|| catalog_path.display().to_string())?;
    config.optional.extend(crate::stack::feedback::from_env(
        &catalog,
        &args.data_dir,
        &format!("http://{}", args.listen),
    )?);
    config.notify = args.slack.transport()?.map(|transport| {
        args.slack
            .config(catalog, transport, args.data_dir.join("notify"))
    });
    if example {
        // The example's gates ask http://127.0.0.1:7801/health/<service>/<env>: serve them,
        // healthy, so releases of the example can complete.
        config.listeners.push(Listener {
            name: "the example's health endpoints (its gates will fail)".into(),
            addr: ([127, 0, 0, 1], 7801).into(),
            router: Health::default().router(),
            required: false,
        });
    }
    let running = config.start().await?;
    // One line a script can wait for.
    println!(
        "railyard dev ready: http://{} nats={}{}",
        running.addr,
        running.url,
        running
            .nats_pid()
            .map(|p| format!(" nats_pid={p}"))
            .unwrap_or_default()
    );
    for (role, identity, token) in printed {
        println!("  token for {identity} ({}): {token}", role.as_str());
    }
    if !file_tokens.is_empty() {
        println!(
            "  and the {} token(s) of {}",
            file_tokens.len(),
            args.tokens_file
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
    }
    if example {
        let dir = args.data_dir.join("example");
        println!(
            "  try: RAILYARD_TOKEN=<dev-publisher token> railyard release submit {}",
            dir.join("release-orders-v3.toml").display()
        );
    }
    running.run_until_signal().await
}
