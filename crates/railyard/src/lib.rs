//! Railyard as a library: the command line (`railyard <command>`, every subcommand and its
//! flags), the one wiring that starts Railyard ([`stack`]: NATS, every service, routes,
//! tokens, shutdown), which `railyard dev`, `railyard demo` and the scenario tests share, and
//! the logging set-up. The binary (`main.rs`) only calls [`main`]; tests drive the same command
//! line through [`parse`] and [`run`].
#![forbid(unsafe_code)]

pub mod audit_cli;
pub mod audit_cmd;
pub mod authority_cmd;
pub mod cli;
pub mod demo;
pub mod dev;
pub mod dlq_cmd;
mod env_help;
pub mod feedback_cmd;
pub mod intake_cli;
pub mod intake_cmd;
pub mod inventory_cmd;
mod logging;
pub mod notify_cmd;
pub mod operator_cli;
pub mod plan_cmd;
pub mod planner_cmd;
pub mod promoter_cmd;
pub mod replica;
pub mod stack;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

pub use cli::{Cli, Command};

/// Parses a command line (`argv[0]` first) as the binary does; the error is clap's message
/// (usage, what is wrong).
pub fn parse<I, T>(args: I) -> anyhow::Result<Cli>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    Cli::try_parse_from(args).map_err(|error| anyhow::anyhow!("{}", error.render()))
}

/// Runs a parsed command line on the current runtime; the operator, release and audit
/// commands print to `out`, the rest to stdout. Returns the exit code; an error is exit 1
/// with [`error_line`] on stderr.
pub async fn run(cli: Cli, out: &mut (dyn Write + Send)) -> anyhow::Result<u8> {
    cli::run(cli, out).await
}

/// The line the binary prints on stderr for a failed command: `error: <message and causes>`,
/// through the redaction layer (an error may quote a URL or a command's output).
pub fn error_line(error: &anyhow::Error) -> String {
    format!(
        "error: {}",
        railyard_core::redact::redact(&format!("{error:#}"))
    )
}

/// The binary: parses the command line, sets up logging, runs the command on a
/// multi-threaded runtime and maps the outcome to the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let (service, default_filter) = service_of(&cli.command);
    let telemetry = match logging::init(cli.log_format, default_filter, service) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("error: cannot set up logging: {error:#}");
            return ExitCode::from(1);
        }
    };
    let code = run_blocking(cli);
    telemetry.shutdown();
    code
}

/// The name a command's traces are exported under, and its log filter when `RUST_LOG` is
/// not set (`railyard audit serve` is a service; the other `audit` commands are tools).
fn service_of(command: &Command) -> (&'static str, &'static str) {
    let service = match command {
        Command::Dev(_) => "railyard-dev",
        Command::Demo(_) => "railyard-demo",
        Command::Intake(_) => "railyard-intake",
        Command::Planner(_) => "railyard-planner",
        Command::Promoter(_) => "railyard-promoter",
        Command::Notify(_) => "railyard-notify",
        Command::Github(_) => "railyard-github",
        Command::Cdevents(_) => "railyard-cdevents",
        Command::Audit(audit_cmd::AuditCmd::Serve(_)) => {
            return ("railyard-audit", "info");
        }
        _ => "railyard-cli",
    };
    (service, command.default_log_filter())
}

fn run_blocking(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("railyard")
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    let mut out = std::io::stdout();
    match runtime.block_on(run(cli, &mut out)) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("{}", error_line(&error));
            ExitCode::from(1)
        }
    }
}
