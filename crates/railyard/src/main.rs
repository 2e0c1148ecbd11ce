//! The one Railyard binary: `railyard <service>` runs a service, `railyard dev` runs every
//! service in one process with an embedded NATS, and the rest is the operator CLI. Thin by
//! design: parse arguments, set up logging, call the library, map errors to exit codes.
#![forbid(unsafe_code)]

mod audit_cmd;
mod authority_cmd;
mod cli;
mod demo;
mod dev;
mod dlq_cmd;
mod embedded_nats;
mod env_help;
mod intake_cmd;
mod inventory_cmd;
mod logging;
mod notify_cmd;
mod plan_cmd;
mod planner_cmd;
mod promoter_cmd;
mod services;
mod stack;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let (service, default_filter) = service_of(&cli.command);
    let telemetry = match logging::init(cli.log_format, default_filter, service) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("error: cannot set up logging: {error:#}");
            return std::process::ExitCode::from(1);
        }
    };
    let code = run(cli);
    telemetry.shutdown();
    code
}

/// The name a command's traces are exported under, and its log filter when `RUST_LOG` is
/// not set (`railyard audit serve` is a service; the other `audit` commands are tools).
fn service_of(command: &cli::Command) -> (&'static str, &'static str) {
    let service = match command {
        cli::Command::Dev(_) => "railyard-dev",
        cli::Command::Demo(_) => "railyard-demo",
        cli::Command::Intake(_) => "railyard-intake",
        cli::Command::Planner(_) => "railyard-planner",
        cli::Command::Promoter(_) => "railyard-promoter",
        cli::Command::Notify(_) => "railyard-notify",
        cli::Command::Audit(audit_cmd::AuditCmd::Serve(_)) => {
            return ("railyard-audit", "info");
        }
        _ => "railyard-cli",
    };
    (service, command.default_log_filter())
}

fn run(cli: cli::Cli) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("railyard")
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return std::process::ExitCode::from(1);
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(error) => {
            // Through the redaction layer: an error may quote a URL or a command's output.
            eprintln!(
                "error: {}",
                railyard_core::redact::redact(&format!("{error:#}"))
            );
            std::process::ExitCode::from(1)
        }
    }
}
