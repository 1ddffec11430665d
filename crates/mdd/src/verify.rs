//! `mdd verify` and `mdd lint`: load specs, run, report, choose the exit code.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use mdd_core::spec::{self, Spec, SpecSource};
use mdd_verify::report::TextStyle;
use mdd_verify::{Format, Selection, VerifyOptions};
use tokio_util::sync::CancellationToken;

use crate::cli::{self, ColorArg, LintArgs, SpecArgs, VerifyArgs, exit};
use crate::progress;

/// Reads and validates the specs. Invalid specs print every error and yield `Err(exit::USAGE)`.
fn load(args: &SpecArgs) -> Result<Result<Spec, u8>> {
    let mut texts = Vec::new();
    if args.example {
        texts.push(("example.yaml".to_string(), cli::EXAMPLE_SPEC.to_string()));
    }
    for path in &args.specs {
        texts.push(read_spec(path)?);
    }
    let sources: Vec<SpecSource<'_>> = texts
        .iter()
        .map(|(file, text)| SpecSource { file, text })
        .collect();
    match spec::load(&sources) {
        Ok(spec) => Ok(Ok(spec)),
        Err(errors) => {
            let count = errors.0.len();
            eprintln!("{errors}");
            eprintln!(
                "mdd: {count} {} in the spec; nothing was run",
                if count == 1 { "error" } else { "errors" }
            );
            Ok(Err(exit::USAGE))
        }
    }
}

pub(crate) fn read_spec(path: &Path) -> Result<(String, String)> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the spec from standard input")?;
        return Ok(("(stdin)".to_string(), text));
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read spec {}", path.display()))?;
    Ok((path.display().to_string(), text))
}

pub fn lint(args: LintArgs) -> Result<u8> {
    Ok(match load(&args.spec)? {
        Ok(spec) => {
            println!(
                "ok: {}, {}",
                mdd_core::words::count(spec.checks.len(), "check"),
                mdd_core::words::count(spec.deployments.len(), "deployment")
            );
            exit::OK
        }
        Err(code) => code,
    })
}

pub fn verify(args: VerifyArgs) -> Result<u8> {
    let spec = match load(&args.spec)? {
        Ok(spec) => spec,
        Err(code) => return Ok(code),
    };
    let selection = Selection {
        names: args.checks.clone(),
        labels: args.labels.iter().cloned().collect(),
    };
    let selected = mdd_verify::select(&spec.checks, &selection);
    if !selected.unknown.is_empty() {
        anyhow::bail!("no check named {} in the spec", selected.unknown.join(", "));
    }
    if !selected.push_only.is_empty() {
        eprintln!(
            "mdd: not running {} push-only {} (results come from outside): {}",
            selected.push_only.len(),
            if selected.push_only.len() == 1 {
                "check"
            } else {
                "checks"
            },
            selected.push_only.join(", ")
        );
    }
    let checks = selected.checks;
    if checks.is_empty() {
        anyhow::bail!("no checks to run: the spec has none, or none match the --label filter");
    }
    let options = VerifyOptions {
        concurrency: usize::from(args.concurrency),
        wait: args.wait,
        every: args.every,
        allow_warning: args.allow_warning,
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(async {
        let cancel = CancellationToken::new();
        tokio::spawn(stop_on_signal(cancel.clone()));
        let interactive = std::io::stderr().is_terminal();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let names: Vec<String> = checks.iter().map(|c| c.name.clone()).collect();
        let display = tokio::spawn(progress::show(
            rx,
            names,
            interactive,
            options.wait.is_some(),
        ));
        let ctx = Arc::new(mdd_probes::ProbeContext::new(args.output_limit));
        let report = mdd_verify::verify(checks, &options, ctx, Some(tx), cancel).await;
        let _ = display.await;
        report
    });

    let stdout_is_terminal = std::io::stdout().is_terminal();
    let style = TextStyle {
        color: match args.color {
            ColorArg::Always => true,
            ColorArg::Never => false,
            ColorArg::Auto => stdout_is_terminal && console::colors_enabled(),
        },
        ascii: args.ascii,
    };
    let format: Format = args.format.into();
    let mut stdout = std::io::stdout().lock();
    match &args.output {
        Some(path) => {
            write_file(path, &format.render(&report, TextStyle::default()))?;
            stdout.write_all(Format::Text.render(&report, style).as_bytes())?;
            writeln!(stdout, "report written to {}", path.display())?;
        }
        None => stdout.write_all(format.render(&report, style).as_bytes())?,
    }
    stdout.flush()?;
    Ok(if report.interrupted {
        exit::INTERRUPTED
    } else if report.passed() {
        exit::OK
    } else {
        exit::NOT_GREEN
    })
}

/// Writes a report to `path` as users expect of `--output FILE`:
/// - a symlink is followed: its target is what gets written;
/// - a regular file (or a new one) is replaced atomically — written next to it and renamed,
///   so a reader never sees half a report — keeping an existing file's mode, and giving a new
///   one the mode the umask allows (0666 masked), as any program writing a file would;
/// - anything else (`/dev/null`, a FIFO, a terminal) is written in place: renaming over a
///   device would replace it with a regular file.
pub(crate) fn write_file(path: &Path, contents: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let target = resolve_links(path);
    let existing = std::fs::metadata(&target).ok();
    if let Some(meta) = &existing
        && !meta.is_file()
    {
        if meta.is_dir() {
            anyhow::bail!(
                "cannot write the report to {}: it is a directory",
                path.display()
            );
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(&target)
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
        file.write_all(contents.as_bytes())
            .and_then(|()| file.flush())
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
        return Ok(());
    }
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut temp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write the report in {}", dir.display()))?;
    let mode = match &existing {
        Some(meta) => meta.permissions().mode() & 0o7777,
        None => 0o666 & !umask(),
    };
    temp.write_all(contents.as_bytes())
        .and_then(|()| {
            temp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(mode))
        })
        .and_then(|()| temp.as_file().sync_all())
        .with_context(|| format!("cannot write the report to {}", path.display()))?;
    temp.persist(&target)
        .with_context(|| format!("cannot write the report to {}", path.display()))?;
    Ok(())
}

/// Where `path` leads through symlinks, also to a target that does not exist yet (a link to
/// a report not written before); `path` itself when it is no link.
fn resolve_links(path: &Path) -> std::path::PathBuf {
    if let Ok(real) = std::fs::canonicalize(path) {
        return real;
    }
    let mut at = path.to_path_buf();
    // A bound on a chain of links, as the kernel has (40).
    for _ in 0..40 {
        let Ok(next) = std::fs::read_link(&at) else {
            break;
        };
        at = match at.parent() {
            Some(parent) if next.is_relative() => parent.join(next),
            _ => next,
        };
    }
    at
}

/// This process' umask, read without changing it (the umask call both sets and reads it,
/// which would race with other threads creating files); 022 where /proc cannot tell.
fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
            u32::from_str_radix(line.trim(), 8).ok()
        })
        .unwrap_or(0o022)
}

/// Ctrl-C or SIGTERM (what CI and service managers send) cancels `cancel`: verify writes a
/// partial report, the agent spools what it has.
pub(crate) async fn stop_on_signal(cancel: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    cancel.cancel();
}
