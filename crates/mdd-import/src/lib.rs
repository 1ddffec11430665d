//! Reading the monitoring configurations teams already have, for `mdd import` (issue 15).
//!
//! So far: Nagios/Naemon object definitions (`nagios::parse`) and template inheritance as
//! Nagios resolves it (`nagios::resolve`). It owns reading those formats; it does no I/O (the
//! binary reads files and follows `cfg_file`/`cfg_dir`) and knows nothing of the server.

pub mod command;
pub mod expand;
pub mod nagios;
