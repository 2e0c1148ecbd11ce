//! Command-line surface: subcommands, their flags and their exit codes.

use std::io::Write;

use clap::{Parser, Subcommand};

use crate::logging::LogFormat;

/// Railyard: derives the order of a release from its contracts and carries it out safely.
#[derive(Debug, Parser)]
#[command(name = "railyard", version, about)]
pub struct Cli {
    /// Log format on stderr (`RUST_LOG` sets the filter).
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// What to run.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every service in one process, with an embedded NATS unless --nats-url is given.
    Dev(crate::dev::DevArgs),
    /// Play the example estate through what Railyard does today, then exit.
    Demo(crate::demo::DemoArgs),
    /// Dry run: print the plan of a release, or why it is refused (exit 2). No NATS.
    Plan(crate::plan_cmd::PlanArgs),
    /// Run the planner service against a NATS server or cluster.
    Planner(crate::planner_cmd::PlannerArgs),
    /// Run the Slack notifier against a NATS server or cluster.
    Notify(crate::notify_cmd::NotifyArgs),
    /// Run the GitHub write-back (deployments, statuses) against a NATS server or cluster.
    Github(crate::feedback_cmd::GithubArgs),
    /// Run CDEvents out (CloudEvents HTTP sink and NATS) against a NATS server or cluster.
    Cdevents(crate::feedback_cmd::CdeventsArgs),
    /// Run one promotion worker against a NATS server or cluster.
    Promoter(crate::promoter_cmd::PromoterArgs),
    /// Run trigger intake (HTTP and NATS) against a NATS server or cluster.
    Intake(crate::intake_cmd::IntakeArgs),
    /// Create API tokens.
    Token(crate::intake_cli::TokenArgs),
    /// Submit a release, see where it is, follow it live.
    #[command(subcommand)]
    Release(crate::audit_cmd::ReleaseCmd),
    /// The audit record: serve it, query it, verify it, rebuild it.
    #[command(subcommand)]
    Audit(crate::audit_cmd::AuditCmd),
    /// Dead-lettered messages: list them with why they died, replay one.
    #[command(subcommand)]
    Dlq(crate::dlq_cmd::DlqCmd),
    /// Signing keys of the planner and the promoter: only what they seal counts as a plan,
    /// a step or an operator's decision.
    #[command(subcommand)]
    Authority(crate::authority_cmd::AuthorityCmd),
    /// Set up a NATS server or cluster for Railyard: `admin init` creates the streams and buckets.
    #[command(subcommand)]
    Admin(crate::stack::AdminCmd),
    /// Record what runs now, from an inventory file, as events.
    #[command(subcommand)]
    Inventory(InventoryCommand),
    #[command(flatten)]
    Operator(crate::operator_cli::OperatorCommand),
}

/// `railyard inventory ...`.
#[derive(Debug, Subcommand)]
pub enum InventoryCommand {
    /// Record an inventory file (INTERFACES §5) as `service.deployed` events.
    Import(crate::inventory_cmd::ImportArgs),
}

impl Command {
    /// The log filter when `RUST_LOG` is not set: commands whose output is the point log
    /// only warnings.
    pub fn default_log_filter(&self) -> &'static str {
        match self {
            Command::Dev(_)
            | Command::Intake(_)
            | Command::Planner(_)
            | Command::Notify(_)
            | Command::Github(_)
            | Command::Cdevents(_)
            | Command::Promoter(_) => "info",
            // The demo narrates what happens (a failed gate, the rollback) on stdout; the
            // services' own warnings would interleave with the story (RUST_LOG=warn shows them).
            Command::Demo(_) => "error",
            Command::Plan(_)
            | Command::Token(_)
            | Command::Authority(_)
            | Command::Dlq(_)
            | Command::Admin(_)
            | Command::Release(_)
            | Command::Audit(_)
            | Command::Operator(_)
            | Command::Inventory(_) => "warn",
        }
    }
}

/// Runs the chosen subcommand and returns the process exit code. The operator, release,
/// token and audit commands print to `out`; the services, `dev`, `demo` and the rest to
/// stdout.
pub async fn run(cli: Cli, out: &mut (dyn Write + Send)) -> anyhow::Result<u8> {
    let ok = |()| 0;
    match cli.command {
        Command::Dev(args) => crate::dev::run(args).await.map(ok),
        Command::Demo(args) => crate::demo::run(args).await.map(ok),
        Command::Plan(args) => crate::plan_cmd::run(args),
        Command::Planner(args) => crate::planner_cmd::run(args).await.map(ok),
        Command::Notify(args) => crate::notify_cmd::run(args).await.map(ok),
        Command::Github(args) => crate::feedback_cmd::run_github(args).await.map(ok),
        Command::Cdevents(args) => crate::feedback_cmd::run_cdevents(args).await.map(ok),
        Command::Promoter(args) => crate::promoter_cmd::run(args).await.map(ok),
        Command::Intake(args) => crate::intake_cmd::run(args).await.map(ok),
        Command::Token(args) => match &args.command {
            crate::intake_cli::TokenCommand::Create(create) => {
                write!(out, "{}", create.run()?)?;
                Ok(0)
            }
        },
        Command::Release(command) => crate::audit_cmd::run_release(command, out).await,
        Command::Audit(command) => crate::audit_cmd::run_audit(command, out).await,
        Command::Authority(command) => crate::authority_cmd::run(command).map(ok),
        Command::Dlq(command) => crate::dlq_cmd::run(command).await.map(ok),
        Command::Admin(command) => crate::stack::run_admin(command).await.map(ok),
        Command::Inventory(InventoryCommand::Import(args)) => {
            crate::inventory_cmd::run(args).await.map(ok)
        }
        Command::Operator(command) => crate::promoter_cmd::operator(command, out).await,
    }
}
