//! `mdd verify`: runs a spec's checks like a test suite and reports red and green.
//!
//! Owns the verification run (selection, dependency order, bounded concurrency, blocking, the
//! `--wait` retry loop, cancellation) and the reporters that turn its [`Report`] into text,
//! JSON, JUnit XML and TAP. Progress goes out as [`Progress`] messages for whoever draws it.
//!
//! Must not print or read files: the binary decides where reports and progress go.

pub mod report;
mod run;
mod select;

pub use report::{CheckReport, Format, Report, Totals};
pub use run::{Progress, VerifyOptions, verify};
pub use select::{Selected, Selection, select};
