//! `railyard dlq list` and `railyard dlq replay <seq>`: the dead-lettered messages with why
//! they died, and putting one back where it came from. These talk to NATS directly, so they
//! need the NATS credentials of an operator (the `admin` user of `deploy/nats/`).

use anyhow::Context;
use clap::Subcommand;
use railyard_bus::Bus;

/// `railyard dlq ...`.
#[derive(Debug, Subcommand)]
pub enum DlqCmd {
    /// List dead letters: sequence, source, consumer, deliveries and the reason.
    List(DlqArgs),
    /// Republish dead letter <SEQ> to its original subject (work items only: an event put back
    /// on its aggregate would be applied twice — fix the consumer and rebuild its projection).
    Replay {
        /// The dead letter's sequence in RAILYARD_DLQ.
        sequence: u64,
        #[command(flatten)]
        args: DlqArgs,
    },
}

/// Where the dead letters are.
#[derive(Debug, clap::Args)]
pub struct DlqArgs {
    /// The NATS server or cluster.
    #[arg(
        long,
        env = "RAILYARD_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
}

/// Connects as the NATS user in the environment (`RAILYARD_NATS_USER`,
/// `RAILYARD_NATS_PASSWORD[_FILE]`), like every other command.
async fn connect(args: &DlqArgs) -> anyhow::Result<Bus> {
    Bus::connect(&args.nats_url, crate::stack::bus_config(false)?)
        .await
        .with_context(|| format!("cannot connect to NATS at {}", args.nats_url))
}

/// Runs `railyard dlq ...`.
pub async fn run(command: DlqCmd) -> anyhow::Result<()> {
    match command {
        DlqCmd::List(args) => {
            let bus = connect(&args).await?;
            let letters = bus.dead_letters().await?;
            if letters.is_empty() {
                println!("no dead letters");
            }
            for letter in letters {
                println!(
                    "{:>6}  {}#{} ({})  consumer {}  {} deliveries  {}\n        {}",
                    letter.sequence,
                    letter.source_stream,
                    letter.source_sequence,
                    letter.source_subject,
                    letter.consumer,
                    letter.deliveries,
                    letter.dead_at,
                    letter.reason
                );
            }
            bus.close().await?;
        }
        DlqCmd::Replay { sequence, args } => {
            let bus = connect(&args).await?;
            let republished = bus.replay_dead_letter(sequence).await?;
            println!("dead letter {sequence} republished as stream sequence {republished}");
            bus.close().await?;
        }
    }
    Ok(())
}
