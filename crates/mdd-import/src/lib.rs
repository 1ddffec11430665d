//! Reading the monitoring configurations teams already have, for `mdd import`: Nagios/Naemon
//! objects, NRPE configs, Icinga 2 objects, Sensu Go resources and Sensu Classic JSON, each
//! converted into one [`Import`] (checks, handlers, silences, and notes on what could not be
//! carried over, each with file and line) and written as spec YAML by [`write`].
//!
//! It owns reading those formats and what maps to what; it does no I/O (the binary reads the
//! files, follows `cfg_file`/`cfg_dir`/`include`, and writes the output) and knows nothing of
//! the server.

pub mod command;
pub mod expand;
pub mod from_nagios;
pub mod icinga2;
pub mod model;
pub mod nagios;
pub mod nrpe;
pub mod sensu;
pub mod write;

pub use model::{Import, ImportedCheck, ImportedHandler, Note, Origin};
pub use nagios::ParseError;

/// Where a check's owner comes from in Nagios objects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OwnerFrom {
    #[default]
    ContactGroups,
    Contacts,
}

/// What the user chose on the command line.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Every check gets `datacenter: NAME` and the spec a deployment of that name.
    pub datacenter: Option<String>,
    pub owner_from: OwnerFrom,
}

/// Nagios/Naemon object files (with the resource macros and settings of their main config)
/// as checks.
pub fn nagios(
    input: &from_nagios::NagiosInput<'_>,
    options: &Options,
) -> Result<Import, ParseError> {
    let mut import = from_nagios::convert(input, options)?;
    import.finish();
    Ok(import)
}

/// Sensu Go resources (`sensuctl dump` YAML documents or JSON) from every file, in order.
pub fn sensu_go(files: &[(String, String)], options: &Options) -> Result<Import, ParseError> {
    let mut import = sensu::sensu_go(files, options)?;
    import.finish();
    Ok(import)
}

/// Sensu Classic JSON files, deep-merged in the order given; standalone checks run on agents
/// with `standalone_subscription`.
pub fn sensu_classic(
    files: &[(String, String)],
    options: &Options,
    standalone_subscription: &str,
) -> Result<Import, ParseError> {
    let mut import = sensu::sensu_classic(files, options, standalone_subscription)?;
    import.finish();
    Ok(import)
}

/// NRPE configs' commands as checks for the agents of `subscription`.
pub fn nrpe(files: &[(String, String)], options: &Options, subscription: &str) -> Import {
    let mut import = nrpe::convert(files, options, subscription);
    import.finish();
    import
}

/// Icinga 2 objects, templates and apply rules from every parsed file (the binary follows the
/// includes), with the constants given on the command line (`NodeName`).
pub fn icinga2(input: &icinga2::Icinga2Input<'_>, options: &Options) -> Import {
    let mut import = icinga2::convert(input, options);
    import.finish();
    import
}
