//! `mdd import` of 10,000 services over 1,000 hosts with templates, against the real tools
//! reading the same configuration in the same run:
//!
//! 1. Nagios objects (three levels of templates, services on host groups): `mdd import nagios`
//!    against `nagios4 -v` (which only parses and checks them).
//! 2. The same in Icinga 2 (templates, `apply Service … assign where`, the ITL): `mdd import
//!    icinga2` against `icinga2 daemon -C`.
//!
//! Each reports the median time of three runs as a ratio to its baseline, and the import's
//! peak RSS. Nothing is started on the network.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The mdd binary to measure (a release build).
    #[arg(long, default_value = "target/release/mdd")]
    mdd: PathBuf,
    #[arg(long, default_value_t = 1000)]
    hosts: usize,
    /// Services per host.
    #[arg(long, default_value_t = 10)]
    services: usize,
    /// Runs of each measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Write the configurations to this directory and stop (to profile an import by hand).
    #[arg(long)]
    write_only: Option<PathBuf>,
    /// Internal: run mdd with these arguments and print its peak RSS in KiB.
    #[arg(long, hide = true, num_args = 1.., allow_hyphen_values = true)]
    rss_of: Option<Vec<String>>,
}

pub fn run(args: ImportArgs) -> Result<()> {
    if let Some(mdd_args) = &args.rss_of {
        run_quiet(Command::new(&args.mdd).args(mdd_args))?;
        let kib =
            nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)?.max_rss();
        println!("{kib}");
        return Ok(());
    }
    if let Some(dir) = &args.write_only {
        let nagios = write_nagios(dir, args.hosts, args.services)?;
        let icinga = write_icinga(dir, args.hosts, args.services)?;
        println!("{}\n{}", nagios.display(), icinga.display());
        return Ok(());
    }
    crate::ensure_built(&args.mdd)?;
    for tool in ["nagios4", "icinga2"] {
        if Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            bail!("{tool} is missing: install nagios4-core and icinga2-bin (./scripts/test does)");
        }
    }
    let dir = tempfile::tempdir()?;
    let total = args.hosts * args.services;
    println!(
        "mdd import: {total} services over {} hosts, median of {}",
        args.hosts, args.repeat
    );

    let nagios_cfg = write_nagios(dir.path(), args.hosts, args.services)?;
    let nagios_cfg_arg = nagios_cfg.display().to_string();
    let out = dir.path().join("nagios.yaml").display().to_string();
    let import = median(args.repeat, || {
        run_quiet(Command::new(&args.mdd).args(["import", "nagios", &nagios_cfg_arg, "-o", &out]))
    })?;
    let checks = std::fs::read_to_string(&out)?
        .lines()
        .filter(|l| l.starts_with("  - name: "))
        .count();
    if checks != total + args.hosts {
        bail!(
            "mdd import nagios made {checks} checks, not {}",
            total + args.hosts
        );
    }
    // nagios4 -v reads and checks everything, then complains about what it cannot write
    // here (the check result path, as its own user): its exit code says nothing of the
    // objects, its counts do.
    let nagios = median(args.repeat, || {
        let started = Instant::now();
        let output = Command::new("nagios4")
            .arg("-v")
            .arg(&nagios_cfg)
            .output()?;
        let took = started.elapsed();
        let said = String::from_utf8_lossy(&output.stdout);
        if !said.contains(&format!("Checked {total} services.")) {
            bail!("nagios4 -v did not read the {total} services:\n{said}");
        }
        Ok(took)
    })?;
    let rss = peak_rss(
        &args.mdd,
        &["import", "nagios", &nagios_cfg_arg, "-o", &out],
    )?;
    // Of which: checking that the spec made lints (the same work as `mdd lint` on it).
    let lint = median(args.repeat, || {
        run_quiet(Command::new(&args.mdd).args(["lint", &out]))
    })?;
    println!(
        "  nagios:  mdd import {:.3}s (of which {:.3}s is linting what it made), nagios4 -v {:.3}s: ratio {:.2}; peak RSS {:.1} MiB",
        import.as_secs_f64(),
        lint.as_secs_f64(),
        nagios.as_secs_f64(),
        import.as_secs_f64() / nagios.as_secs_f64(),
        rss as f64 / 1024.0
    );

    let icinga_conf = write_icinga(dir.path(), args.hosts, args.services)?;
    let icinga_arg = icinga_conf.display().to_string();
    let out = dir.path().join("icinga.yaml").display().to_string();
    let import = median(args.repeat, || {
        run_quiet(Command::new(&args.mdd).args([
            "import",
            "icinga2",
            &icinga_arg,
            "-o",
            &out,
            "-D",
            "NodeName=bench",
        ]))
    })?;
    let checks = std::fs::read_to_string(&out)?
        .lines()
        .filter(|l| l.starts_with("  - name: "))
        .count();
    if checks != total + args.hosts {
        bail!(
            "mdd import icinga2 made {checks} checks, not {}",
            total + args.hosts
        );
    }
    let defines = icinga_defines(dir.path())?;
    let icinga = median(args.repeat, || {
        run_quiet(
            Command::new("icinga2")
                .args(["daemon", "-C", "-c", &icinga_arg])
                .args(&defines),
        )
    })?;
    let rss = peak_rss(
        &args.mdd,
        &[
            "import",
            "icinga2",
            &icinga_arg,
            "-o",
            &out,
            "-D",
            "NodeName=bench",
        ],
    )?;
    println!(
        "  icinga2: mdd import {:.3}s, icinga2 daemon -C {:.3}s: ratio {:.2}; peak RSS {:.1} MiB",
        import.as_secs_f64(),
        icinga.as_secs_f64(),
        import.as_secs_f64() / icinga.as_secs_f64(),
        rss as f64 / 1024.0
    );
    Ok(())
}

fn run_quiet(command: &mut Command) -> Result<Duration> {
    let started = Instant::now();
    let output = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("start")?;
    if !output.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    Ok(started.elapsed())
}

fn median(repeat: usize, mut run: impl FnMut() -> Result<Duration>) -> Result<Duration> {
    let mut samples = (0..repeat.max(1))
        .map(|_| run())
        .collect::<Result<Vec<_>>>()?;
    samples.sort();
    Ok(samples[samples.len() / 2])
}

/// The import's peak RSS, measured in a child of a child so that nothing else counts.
fn peak_rss(mdd: &Path, mdd_args: &[&str]) -> Result<i64> {
    let me = std::env::current_exe()?;
    let output = Command::new(me)
        .args(["import", "--mdd"])
        .arg(mdd)
        .arg("--rss-of")
        .args(mdd_args)
        .output()?;
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .with_context(|| format!("peak RSS: {}", String::from_utf8_lossy(&output.stderr)))
}

fn write_nagios(dir: &Path, hosts: usize, services: usize) -> Result<PathBuf> {
    let etc = dir.join("nagios");
    std::fs::create_dir_all(etc.join("objects"))?;
    std::fs::create_dir_all(etc.join("spool"))?;
    std::fs::write(
        etc.join("resource.cfg"),
        "$USER1$=/usr/lib/nagios/plugins\n",
    )?;
    let mut objects = String::from(
        "define timeperiod {\n timeperiod_name always\n alias always\n monday 00:00-24:00\n}\n\
         define command {\n command_name notify\n command_line /bin/true\n}\n\
         define contact {\n contact_name ops\n host_notification_period always\n service_notification_period always\n host_notification_options n\n service_notification_options n\n host_notification_commands notify\n service_notification_commands notify\n}\n\
         define contactgroup {\n contactgroup_name admins\n members ops\n}\n\
         define command {\n command_name check-host\n command_line $USER1$/check_ping -H $HOSTADDRESS$ -w 100,20% -c 500,60%\n}\n\
         define command {\n command_name check_tcp\n command_line $USER1$/check_tcp -H $HOSTADDRESS$ -p $ARG1$ -w $ARG2$\n}\n\
         define host {\n name base-host\n check_command check-host\n max_check_attempts 3\n check_period always\n notification_interval 0\n notification_period always\n contact_groups admins\n register 0\n}\n\
         define host {\n name linux-host\n use base-host\n check_interval 5\n register 0\n}\n\
         define host {\n name rack-host\n use linux-host\n _RACK r1\n register 0\n}\n\
         define service {\n name base-service\n max_check_attempts 3\n check_interval 5\n check_period always\n notification_interval 0\n notification_period always\n contact_groups admins\n register 0\n}\n\
         define service {\n name tcp-service\n use base-service\n check_command check_tcp!22!1\n register 0\n}\n",
    );
    let groups = 20.min(hosts.max(1));
    for g in 0..groups {
        let _ = writeln!(objects, "define hostgroup {{\n hostgroup_name group{g}\n}}");
    }
    for h in 0..hosts {
        let _ = writeln!(
            objects,
            "define host {{\n use rack-host\n host_name host{h}\n address 10.{}.{}.{}\n hostgroups group{}\n}}",
            h / 65536 % 256,
            h / 256 % 256,
            h % 256,
            h % groups
        );
    }
    for g in 0..groups {
        for s in 0..services {
            let _ = writeln!(
                objects,
                "define service {{\n use tcp-service\n hostgroup_name group{g}\n service_description port {s}\n check_command check_tcp!{}!{}\n}}",
                8000 + s,
                s % 5 + 1
            );
        }
    }
    std::fs::write(etc.join("objects/all.cfg"), objects)?;
    let main = etc.join("nagios.cfg");
    std::fs::write(
        &main,
        format!(
            "cfg_dir=objects\nresource_file=resource.cfg\ncheck_result_path={}\n",
            etc.join("spool").display()
        ),
    )?;
    Ok(main)
}

fn write_icinga(dir: &Path, hosts: usize, services: usize) -> Result<PathBuf> {
    let etc = dir.join("icinga");
    std::fs::create_dir_all(&etc)?;
    let mut conf = String::from(
        "const PluginDir = \"/usr/lib/nagios/plugins\"\ninclude <itl>\ninclude <plugins>\n\
         template Host \"base-host\" {\n  check_command = \"hostalive\"\n  max_check_attempts = 3\n  check_interval = 1m\n}\n\
         template Host \"linux-host\" {\n  import \"base-host\"\n  vars.os = \"Linux\"\n}\n\
         template Service \"base-service\" {\n  check_interval = 1m\n  max_check_attempts = 3\n}\n",
    );
    for h in 0..hosts {
        let _ = writeln!(
            conf,
            "object Host \"host{h}\" {{\n  import \"linux-host\"\n  address = \"10.{}.{}.{}\"\n  vars.role = \"role{}\"\n}}",
            h / 65536 % 256,
            h / 256 % 256,
            h % 256,
            h % 20
        );
    }
    for s in 0..services {
        let _ = writeln!(
            conf,
            "apply Service \"port {s}\" {{\n  import \"base-service\"\n  check_command = \"tcp\"\n  vars.tcp_port = {}\n  assign where host.vars.os == \"Linux\" && match(\"role*\", host.vars.role)\n}}",
            8000 + s
        );
    }
    let path = etc.join("icinga2.conf");
    std::fs::write(&path, conf)?;
    Ok(path)
}

fn icinga_defines(dir: &Path) -> Result<Vec<String>> {
    let id = |flag: &str| -> Result<String> {
        Ok(
            String::from_utf8_lossy(&Command::new("id").arg(flag).output()?.stdout)
                .trim()
                .to_string(),
        )
    };
    let mut defines = vec![
        format!("-DRunAsUser={}", id("-un")?),
        format!("-DRunAsGroup={}", id("-gn")?),
    ];
    for (name, sub) in [
        ("InitRunDir", "run"),
        ("DataDir", "data"),
        ("CacheDir", "cache"),
        ("LogDir", "log"),
        ("SpoolDir", "spool"),
    ] {
        let path = dir.join("icinga-state").join(sub);
        std::fs::create_dir_all(&path)?;
        defines.push(format!("-D{name}={}", path.display()));
    }
    Ok(defines)
}
