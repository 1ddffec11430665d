//! The pure core of mdd: what a spec says, what a result means.
//!
//! Owns the spec (parsing YAML into checks and validating them with file/line/column errors),
//! statuses and states, Nagios plugin output and perfdata, threshold ranges, durations, the
//! dependency graph between checks, the event state machine and deployments' progress.
//!
//! Invariant: this crate does no I/O. No files, no sockets, no clocks, no processes. It takes
//! text and values in and gives values out, so every rule here is unit-testable exhaustively.
//! Anything that touches the outside world lives in `mdd-probes`, `mdd-verify` or the binary.

pub mod deployment;
pub mod duration;
pub mod graph;
pub mod incident;
pub mod notification;
pub mod perfdata;
pub mod plugin_output;
pub mod result;
pub mod schedule;
pub mod silence;
pub mod spec;
pub mod status;
pub mod terminal;
pub mod threshold;
pub mod words;

pub use duration::{format_duration, parse_duration};
pub use perfdata::PerfDatum;
pub use plugin_output::PluginOutput;
pub use result::ProbeResult;
pub use spec::{Check, Probe, Spec, SpecError, SpecErrors};
pub use status::{State, Status};
pub use threshold::Range;
pub mod event;
