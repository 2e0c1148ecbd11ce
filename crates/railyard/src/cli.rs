//! Command-line surface: subcommands, their flags and their exit codes.

use std::process::ExitCode;

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
}

impl Command {
    /// The log filter when `RUST_LOG` is not set: commands whose output is the point log
    /// only warnings.
    pub fn default_log_filter(&self) -> &'static str {
        match self {
            Command::Dev(_) | Command::Planner(_) | Command::Notify(_) => "info",
            Command::Demo(_) | Command::Plan(_) => "warn",
        }
    }
}

/// Runs the chosen subcommand and returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Dev(args) => crate::dev::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::Demo(args) => crate::demo::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::Plan(args) => crate::plan_cmd::run(args),
        Command::Planner(args) => crate::planner_cmd::run(args)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Notify(args) => crate::notify_cmd::run(args)
            .await
            .map(|()| ExitCode::SUCCESS),
    }
}
