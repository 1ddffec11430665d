//! `mdd import`: reads the files (following main configs' includes), hands them to
//! `mdd-import`, reports what was not carried over on stderr, checks the spec it made
//! lints, and writes it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use mdd_import::from_nagios::{self, Include, NagiosInput, Settings};
use mdd_import::{Import, Options, OwnerFrom};

use crate::cli::{ImportArgs, ImportFormat, OwnerFromArg, exit};

/// No configuration file is this big; a bigger one is a mistake (a device, a log).
const MAX_FILE: u64 = 64 * 1024 * 1024;
/// Directories deeper than this are not followed (a symlink loop).
const MAX_DEPTH: usize = 32;

pub fn import(args: ImportArgs) -> Result<u8> {
    let options = Options {
        datacenter: args.datacenter.clone(),
        owner_from: match args.owner_from {
            OwnerFromArg::Contactgroups => OwnerFrom::ContactGroups,
            OwnerFromArg::Contacts => OwnerFrom::Contacts,
        },
    };
    if let Some(datacenter) = &args.datacenter
        && !mdd_core::spec::is_valid_entity_name(datacenter)
    {
        bail!("--datacenter `{datacenter}`: use 1 to 128 of A-Z a-z 0-9 . _ -");
    }
    let import = match args.format {
        ImportFormat::Nagios => nagios(&args.paths, &options)?,
        ImportFormat::SensuGo => {
            let files = read_all(&args.paths, &[".yaml", ".yml", ".json"])?;
            mdd_import::sensu_go(&files, &options)?
        }
        ImportFormat::SensuClassic => {
            let files = read_all(&args.paths, &[".json"])?;
            let subscription = args.subscription.as_deref().unwrap_or("standalone");
            mdd_import::sensu_classic(&files, &options, subscription)?
        }
        ImportFormat::Nrpe => {
            let files = nrpe_files(&args.paths)?;
            let subscription = args.subscription.as_deref().unwrap_or("nrpe");
            mdd_import::nrpe(&files, &options, subscription)
        }
        ImportFormat::Icinga2 => icinga2(&args, &options)?,
    };
    report(&import);
    let files: Vec<(String, String)> = match &args.output {
        Some(dir) if is_directory_target(dir) => mdd_import::write::per_group(&import)
            .into_iter()
            .map(|(name, text)| (dir.join(name).display().to_string(), text))
            .collect(),
        Some(file) => vec![(
            file.display().to_string(),
            mdd_import::write::one_file(&import),
        )],
        None => vec![("-".to_string(), mdd_import::write::one_file(&import))],
    };
    // What `mdd import` writes must lint: checked here, before anything is written.
    let sources: Vec<mdd_core::spec::SpecSource<'_>> = files
        .iter()
        .map(|(file, text)| mdd_core::spec::SpecSource { file, text })
        .collect();
    if let Err(errors) = mdd_core::spec::load(&sources) {
        bail!(
            "the spec made from these inputs does not lint (a bug in mdd import; please report it with the inputs):\n{errors}"
        );
    }
    for (file, text) in &files {
        if file == "-" {
            crate::print_all(text.as_bytes())?;
        } else {
            write_file(Path::new(file), text)?;
        }
    }
    if args.output.is_some() {
        let names: Vec<&str> = files.iter().map(|(f, _)| f.as_str()).collect();
        eprintln!("mdd import: wrote {}", names.join(", "));
    }
    Ok(exit::OK)
}

fn is_directory_target(path: &Path) -> bool {
    path.is_dir() || path.as_os_str().to_string_lossy().ends_with('/')
}

/// What was converted, then every note, one per line as `file:line: message`.
fn report(import: &Import) {
    let handlers = if import.handlers.is_empty() {
        String::new()
    } else {
        format!(
            ", {}",
            mdd_core::words::count(import.handlers.len(), "handler")
        )
    };
    eprintln!(
        "mdd import: {}{handlers} from {}; {} not carried over{}",
        mdd_core::words::count(import.checks.len(), "check"),
        mdd_core::words::count(import.inputs.len(), "file"),
        mdd_core::words::count(import.notes.len(), "thing"),
        if import.notes.is_empty() { "" } else { ":" }
    );
    for note in &import.notes {
        eprintln!("{}:{}: {}", note.file, note.line, note.message);
    }
    for (origin, argv) in &import.silences {
        eprintln!(
            "{}:{}: a silence, which is not spec: make it with `{}`",
            origin.file,
            origin.line,
            shlex::try_join(argv.iter().map(String::as_str)).unwrap_or_else(|_| argv.join(" "))
        );
    }
}

/// Written whole or not at all: a temporary file beside it, then renamed over it.
fn write_file(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let temporary = path.with_extension("yaml.partial");
    std::fs::write(&temporary, text)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// A file's text; a directory, a huge file or one that is not UTF-8 is an error naming it.
fn read(path: &Path) -> Result<String> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.len() > MAX_FILE {
        bail!(
            "{} is {} bytes: no configuration file is that big (at most {MAX_FILE})",
            path.display(),
            meta.len()
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{}: not UTF-8 text (byte {} is not valid)",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

/// Files under `dir` whose names end in `suffix`, sorted by path, so that the same tree is
/// always read in the same order.
fn files_under(dir: &Path, suffix: &str) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, suffix: &str, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
        if depth > MAX_DEPTH {
            bail!(
                "{}: directories nest deeper than {MAX_DEPTH} (a symlink loop?)",
                dir.display()
            );
        }
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
        for entry in entries {
            let path = entry
                .with_context(|| format!("cannot read {}", dir.display()))?
                .path();
            if path.is_dir() {
                walk(&path, suffix, depth + 1, out)?;
            } else if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(suffix))
            {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, suffix, 0, &mut out)?;
    out.sort();
    Ok(out)
}

/// Each path's text in order, a directory's files (ending in one of `suffixes`) in name
/// order, each file once.
fn read_all(paths: &[PathBuf], suffixes: &[&str]) -> Result<Vec<(String, String)>> {
    let mut seen = std::collections::HashSet::new();
    let mut files = Vec::new();
    for path in paths {
        let found = if path.is_dir() {
            let mut found = Vec::new();
            for suffix in suffixes {
                found.extend(files_under(path, suffix)?);
            }
            found.sort();
            found
        } else {
            vec![path.clone()]
        };
        for file in found {
            let canonical = std::fs::canonicalize(&file).unwrap_or_else(|_| file.clone());
            if seen.insert(canonical) {
                files.push((file.display().to_string(), read(&file)?));
            }
        }
    }
    Ok(files)
}

/// NRPE configs with the files their `include` and `include_dir` lines name, in the order
/// NRPE reads them.
fn nrpe_files(paths: &[PathBuf]) -> Result<Vec<(String, String)>> {
    fn add(
        path: &Path,
        depth: usize,
        seen: &mut std::collections::HashSet<PathBuf>,
        files: &mut Vec<(String, String)>,
    ) -> Result<()> {
        if depth > MAX_DEPTH {
            bail!(
                "{}: includes nest deeper than {MAX_DEPTH} (a loop?)",
                path.display()
            );
        }
        let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        if !seen.insert(canonical) {
            return Ok(());
        }
        let text = read(path)?;
        let includes = mdd_import::nrpe::includes(&text);
        files.push((path.display().to_string(), text));
        for include in includes {
            match include {
                Include::File(file) => {
                    let file = relative_to(path, &file);
                    // NRPE skips an include that is not there (Debian's nrpe_local.cfg).
                    if file.exists() {
                        add(&file, depth + 1, seen, files)?;
                    }
                }
                Include::Dir(dir) => {
                    let dir = relative_to(path, &dir);
                    if dir.is_dir() {
                        for file in files_under(&dir, ".cfg")? {
                            add(&file, depth + 1, seen, files)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
    let mut seen = std::collections::HashSet::new();
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            for file in files_under(path, ".cfg")? {
                add(&file, 0, &mut seen, &mut files)?;
            }
        } else {
            add(path, 0, &mut seen, &mut files)?;
        }
    }
    Ok(files)
}

/// Icinga 2 files with those their includes name (`include "file"`, patterns in its last part,
/// `include <itl>` from `--include-dir`, `include_recursive "dir"`), in the order Icinga reads
/// them.
fn icinga2(args: &ImportArgs, options: &Options) -> Result<Import> {
    use mdd_import::icinga2::{self, IncludeKind, ParsedFile};
    fn add(
        path: &Path,
        include_dir: &Path,
        depth: usize,
        seen: &mut std::collections::HashSet<PathBuf>,
        files: &mut Vec<ParsedFile>,
    ) -> Result<()> {
        if depth > MAX_DEPTH {
            bail!(
                "{}: includes nest deeper than {MAX_DEPTH} (a loop?)",
                path.display()
            );
        }
        let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        if !seen.insert(canonical) {
            return Ok(());
        }
        let parsed = icinga2::parse_file(&path.display().to_string(), &read(path)?)?;
        let includes = icinga2::includes(&parsed);
        files.push(parsed);
        for (kind, written) in includes {
            let targets: Vec<PathBuf> = match kind {
                IncludeKind::Recursive => files_under(&relative_to(path, &written), ".conf")?,
                IncludeKind::File => {
                    if let Some(name) = written.strip_prefix('<').and_then(|w| w.strip_suffix('>'))
                    {
                        vec![include_dir.join(name)]
                    } else if written.contains('*') {
                        let full = relative_to(path, &written);
                        let dir = full.parent().map(Path::to_path_buf).unwrap_or_default();
                        let pattern = full
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        let mut matched: Vec<PathBuf> = std::fs::read_dir(&dir)
                            .map(|entries| {
                                entries
                                    .filter_map(|e| e.ok().map(|e| e.path()))
                                    .filter(|p| {
                                        p.file_name().is_some_and(|n| {
                                            wildcard(&pattern, &n.to_string_lossy())
                                        })
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        matched.sort();
                        matched
                    } else {
                        vec![relative_to(path, &written)]
                    }
                }
            };
            for target in targets {
                add(&target, include_dir, depth + 1, seen, files)?;
            }
        }
        Ok(())
    }
    let mut seen = std::collections::HashSet::new();
    let mut files = Vec::new();
    for path in &args.paths {
        if path.is_dir() {
            for file in files_under(path, ".conf")? {
                add(&file, &args.include_dir, 0, &mut seen, &mut files)?;
            }
        } else {
            add(path, &args.include_dir, 0, &mut seen, &mut files)?;
        }
    }
    let mut defines: std::collections::BTreeMap<String, String> =
        args.defines.iter().cloned().collect();
    if !defines.contains_key("NodeName") {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        defines.insert("NodeName".into(), host);
    }
    let input = icinga2::Icinga2Input {
        files: &files,
        defines,
    };
    Ok(mdd_import::icinga2(&input, options))
}

/// `*` and `?` in a file name pattern.
fn wildcard(pattern: &str, name: &str) -> bool {
    let pattern = regex::escape(pattern)
        .replace("\\*", ".*")
        .replace("\\?", ".");
    regex::Regex::new(&format!("^{pattern}$")).is_ok_and(|re| re.is_match(name))
}

/// `path` as written in `config` (relative to the config's directory).
fn relative_to(config: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        config.parent().unwrap_or(Path::new(".")).join(path)
    }
}

fn nagios(paths: &[PathBuf], options: &Options) -> Result<Import> {
    let mut object_files: Vec<(String, String)> = Vec::new();
    let mut user_macros = std::collections::BTreeMap::new();
    let mut settings = Settings::default();
    let mut notes = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut add_object_file = |path: &Path, files: &mut Vec<(String, String)>| -> Result<()> {
        let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        if seen.insert(canonical) {
            files.push((path.display().to_string(), read(path)?));
        }
        Ok(())
    };
    for path in paths {
        if path.is_dir() {
            for file in files_under(path, ".cfg")? {
                add_object_file(&file, &mut object_files)?;
            }
            continue;
        }
        let text = read(path)?;
        let shown = path.display().to_string();
        if from_nagios::is_main_config(&text) {
            let (config, config_notes) = from_nagios::main_config(&shown, &text);
            notes.extend(config_notes);
            settings = config.settings;
            for resource in &config.resource_files {
                let resource = relative_to(path, resource);
                let text = read(&resource)?;
                notes.extend(from_nagios::resource_macros(
                    &resource.display().to_string(),
                    &text,
                    &mut user_macros,
                ));
            }
            for include in &config.includes {
                match include {
                    Include::File(file) => {
                        add_object_file(&relative_to(path, file), &mut object_files)?;
                    }
                    Include::Dir(dir) => {
                        for file in files_under(&relative_to(path, dir), ".cfg")? {
                            add_object_file(&file, &mut object_files)?;
                        }
                    }
                }
            }
        } else if from_nagios::is_resource_file(&text) {
            notes.extend(from_nagios::resource_macros(
                &shown,
                &text,
                &mut user_macros,
            ));
        } else {
            add_object_file(path, &mut object_files)?;
        }
    }
    let input = NagiosInput {
        object_files: &object_files,
        user_macros,
        settings,
    };
    let mut import = mdd_import::nagios(&input, options)?;
    import.notes.extend(notes);
    import.sort_notes();
    Ok(import)
}
