//! What a probe reports for one execution of a check.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::perfdata::PerfDatum;
use crate::plugin_output::PluginOutput;
use crate::status::Status;

/// One execution of a check, as the probe saw it. Where and when it ran is added by whoever ran
/// it (verify, the server, an agent); this is only what the probe itself knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub status: Status,
    /// The first line of output, without perfdata.
    pub summary: String,
    /// Further lines of output, without perfdata.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub long_output: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub perfdata: Vec<PerfDatum>,
    /// How long the probe took, measured by the runner.
    #[serde(with = "duration_ms", rename = "duration_ms")]
    pub duration: Duration,
    /// The plugin's exit code, for `command` probes that exited normally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// What a `command` probe's plugin printed, as it printed it (capped), for those who pass
    /// output on whole (Sensu handlers read `check.output` so). Empty for built-in probes:
    /// [`ProbeResult::plugin_text`] writes theirs.
    #[serde(skip)]
    pub output: String,
}

impl ProbeResult {
    /// A result from a built-in probe.
    pub fn new(status: Status, summary: impl Into<String>, duration: Duration) -> ProbeResult {
        ProbeResult {
            status,
            summary: summary.into(),
            long_output: String::new(),
            perfdata: Vec::new(),
            duration,
            exit_code: None,
            output: String::new(),
        }
    }

    /// A result from plugin output. Malformed perfdata items are listed in the long output so
    /// that the plugin's author can see them, without changing the status.
    pub fn from_plugin_output(
        status: Status,
        output: &str,
        duration: Duration,
        exit_code: Option<i32>,
    ) -> ProbeResult {
        let parsed = PluginOutput::parse(output);
        let mut long_output = parsed.long_output;
        if let Some(note) = crate::plugin_output::perfdata_note(&parsed.perfdata_errors) {
            if !long_output.is_empty() {
                long_output.push('\n');
            }
            long_output.push_str(&note);
        }
        ProbeResult {
            status,
            summary: parsed.summary,
            long_output,
            perfdata: parsed.perfdata,
            duration,
            exit_code,
            output: output.to_string(),
        }
    }

    /// The result as plugin output: what the plugin printed, or for built-in probes the same
    /// shape written out (`SUMMARY | perfdata` then the long output).
    pub fn plugin_text(&self) -> String {
        if self.output.is_empty() {
            crate::plugin_output::compose(&self.summary, &self.long_output, &self.perfdata)
        } else {
            self.output.clone()
        }
    }

    pub fn with_perfdata(mut self, datum: PerfDatum) -> ProbeResult {
        self.perfdata.push(datum);
        self
    }

    pub fn with_long_output(mut self, text: impl Into<String>) -> ProbeResult {
        self.long_output = text.into();
        self
    }
}

/// Durations in JSON are whole milliseconds with a fractional part: easy for every language.
pub mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64((d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(d)?;
        Duration::try_from_secs_f64(ms / 1000.0).map_err(serde::de::Error::custom)
    }
}
