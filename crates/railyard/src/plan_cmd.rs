//! `railyard plan`: the dry run of INTERFACES §11 — catalog, release and inventory files in,
//! the plan (or every refusal with its remedy) out; no NATS. Exit 0 planned, 2 refused,
//! 1 when an input cannot be read.

use std::path::{Path, PathBuf};

use anyhow::Context;
use railyard_core::event::ReleaseRequested;
use railyard_core::{Catalog, Inventory, ReleaseFile};
use railyard_plan::{Format, PlanInput};

/// Flags of `railyard plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// The catalog (`railyard.toml`).
    #[arg(long)]
    pub catalog: PathBuf,
    /// The release (`release.toml`).
    #[arg(long)]
    pub release: PathBuf,
    /// What runs where now (JSON, INTERFACES §5); empty when omitted.
    #[arg(long)]
    pub inventory: Option<PathBuf>,
    /// Output format: text, json, mermaid or dot.
    #[arg(long, default_value = "text")]
    pub format: String,
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The three inputs of a plan, read and checked.
pub struct Inputs {
    /// The catalog.
    pub catalog: Catalog,
    /// The release file.
    pub release: ReleaseFile,
    /// The inventory.
    pub inventory: Inventory,
}

/// Reads and checks the three input files; errors name the file and the key path.
pub fn load(catalog: &Path, release: &Path, inventory: Option<&Path>) -> anyhow::Result<Inputs> {
    let catalog =
        Catalog::from_toml(&read(catalog)?).with_context(|| format!("{}", catalog.display()))?;
    let release = ReleaseFile::from_toml(&read(release)?)
        .with_context(|| format!("{}", release.display()))?;
    let inventory = match inventory {
        Some(path) => {
            Inventory::from_json(&read(path)?).with_context(|| format!("{}", path.display()))?
        }
        None => Inventory::default(),
    };
    Ok(Inputs {
        catalog,
        release,
        inventory,
    })
}

/// Runs the dry run and prints the result on stdout.
pub fn run(args: PlanArgs) -> anyhow::Result<u8> {
    let format: Format = args
        .format
        .parse()
        .map_err(|error| anyhow::anyhow!("--format: {error}"))?;
    let inputs = load(&args.catalog, &args.release, args.inventory.as_deref())?;
    let request = ReleaseRequested {
        release: inputs.release.id.clone(),
        requested_by: "railyard plan (dry run)".to_owned(),
        changes: inputs.release.changes.clone(),
    };
    let input = PlanInput {
        catalog: &inputs.catalog,
        release: &request,
        inventory: &inputs.inventory,
        in_flight: &[],
    };
    match railyard_plan::plan(&input) {
        Ok(plan) => {
            print!("{}", railyard_plan::render(&plan, format));
            Ok(0)
        }
        Err(refusals) => {
            print!("{}", railyard_plan::render_refusals(&refusals, format));
            Ok(2)
        }
    }
}
