//! `mdd`: the one binary. Parses arguments and wires the libraries; holds little logic itself.

mod agent_config;
mod cli;
mod client;
mod demo;
mod deploy;
mod docs;
mod progress;
mod report;
mod serve;
mod server_config;
mod silence;
mod spec_name;
mod verify;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_logging();
    let outcome = match cli.command {
        cli::Command::Verify(args) => verify::verify(args),
        cli::Command::Lint(args) => verify::lint(args),
        cli::Command::Example => {
            print!("{}", cli::EXAMPLE_SPEC);
            Ok(cli::exit::OK)
        }
        cli::Command::Server(args) => serve::server(args),
        cli::Command::Agent(args) => serve::agent(args),
        cli::Command::Apply(args) => serve::apply(args),
        cli::Command::Result(args) => serve::result(args),
        cli::Command::Status(args) => serve::status(args),
        cli::Command::Token(command) => serve::token(command),
        cli::Command::Entity(command) => serve::entity(command),
        cli::Command::Deploy(command) => deploy::deploy(command),
        cli::Command::Demo(args) => demo::demo(args),
        cli::Command::Docs(args) => docs::docs(args),
        cli::Command::Silence(command) => silence::silence(command),
        cli::Command::Report(args) => report::report(args),
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("mdd: {error:#}");
            ExitCode::from(cli::exit::USAGE)
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MDD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Colour only for a person at a terminal: a log file or journal gets plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .init();
}
