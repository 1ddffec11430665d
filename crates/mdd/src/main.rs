//! `mdd`: the one binary. Parses arguments and wires the libraries; holds little logic itself.

mod agent_config;
mod cli;
mod client;
mod demo;
mod deploy;
mod docs;
mod import;
mod progress;
mod report;
mod serve;
mod server_config;
mod silence;
mod spec_name;
mod verify;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc in place of glibc's malloc: a cluster server allocates for every result it folds
/// and every event it follows, and glibc's allocator took a third of its CPU (perf, `mdd-bench
/// cluster`), mostly in the free lists' consolidation.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        cli::Command::Import(args) => import::import(args),
        cli::Command::Completions { shell } => {
            // Into memory first: clap_complete panics on a closed pipe (`| head`).
            let mut command = <cli::Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "mdd", &mut script);
            print_all(&script)
        }
        cli::Command::Man => man(),
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("mdd: {error:#}");
            ExitCode::from(cli::exit::USAGE)
        }
    }
}

/// The manual page: every subcommand's flags in one page, as `man mdd` shows it.
fn man() -> anyhow::Result<u8> {
    use anyhow::Context;
    let command = <cli::Cli as clap::CommandFactory>::command();
    let mut page = Vec::new();
    let man = clap_mangen::Man::new(command.clone());
    man.render_title(&mut page)
        .and_then(|()| man.render_name_section(&mut page))
        .and_then(|()| man.render_synopsis_section(&mut page))
        .and_then(|()| man.render_description_section(&mut page))
        .context("cannot render the manual page")?;
    // One page for the whole tool: each subcommand's options under its own heading.
    for sub in command.get_subcommands() {
        man_section(&mut page, "mdd", sub)?;
    }
    man.render_extra_section(&mut page)
        .and_then(|()| man.render_version_section(&mut page))
        .context("cannot render the manual page")?;
    print_all(&page)
}

/// Writes `bytes` to standard output; a reader that went away (`| head`) is not an error.
fn print_all(bytes: &[u8]) -> anyhow::Result<u8> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(cli::exit::OK),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(cli::exit::OK),
        Err(e) => Err(anyhow::anyhow!("cannot write to standard output: {e}")),
    }
}

/// A subcommand's synopsis, description and options, then its own subcommands'.
fn man_section(page: &mut Vec<u8>, parent: &str, sub: &clap::Command) -> anyhow::Result<()> {
    use anyhow::Context;
    if sub.is_hide_set() {
        return Ok(());
    }
    let name = format!("{parent} {}", sub.get_name());
    let mut part = Vec::new();
    let man = clap_mangen::Man::new(sub.clone().name(name.clone()));
    man.render_synopsis_section(&mut part)
        .and_then(|()| man.render_description_section(&mut part))
        .and_then(|()| man.render_options_section(&mut part))
        .context("cannot render the manual page")?;
    let text = String::from_utf8_lossy(&part)
        .replace(".SH SYNOPSIS", &format!(".SH \"{}\"", name.to_uppercase()))
        .replace(".SH DESCRIPTION\n", "")
        .replace(".SH OPTIONS", ".SS Options");
    page.extend_from_slice(text.as_bytes());
    for nested in sub.get_subcommands() {
        man_section(page, &name, nested)?;
    }
    Ok(())
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
