//! Live progress on stderr while checks run: a bar on a terminal, one line per change otherwise.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mdd_core::{State, format_duration};
use mdd_verify::Progress;
use tokio::sync::mpsc::UnboundedReceiver;

/// Shows progress until the run ends (the sender is dropped).
pub async fn show(
    mut rx: UnboundedReceiver<Progress>,
    names: Vec<String>,
    interactive: bool,
    waiting: bool,
) {
    let mut states = vec![State::Pending; names.len()];
    // Every check is red from the start until it turns green (verify never re-runs a green
    // check), so how long the rest have been red is how long the run has lasted.
    let mut latest = Duration::ZERO;
    let bar = interactive.then(|| {
        let bar = ProgressBar::with_draw_target(
            Some(names.len() as u64),
            ProgressDrawTarget::stderr_with_hz(10),
        );
        bar.set_style(
            // `wide_msg` takes what the terminal has left and is cut there: a line that wrapped
            // would be redrawn (and cleared at the end) one line short, leaving half a bar.
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:20} {pos}/{len} green  {wide_msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let mut changed_this_round = false;
    while let Some(event) = rx.recv().await {
        match event {
            Progress::RoundStarted { .. } => changed_this_round = false,
            Progress::CheckFinished {
                index,
                name,
                state,
                previous,
                summary,
                at,
                ..
            } => {
                states[index] = state;
                latest = latest.max(at);
                if state != previous {
                    changed_this_round = true;
                    if bar.is_none() && waiting {
                        let verb = if state == State::Passing {
                            "turned green"
                        } else {
                            state.as_str()
                        };
                        eprintln!(
                            "[{:>7}] {} {name} {verb}: {}",
                            format_duration(at),
                            state.mark(),
                            mdd_core::terminal::printable(&summary)
                        );
                    }
                }
            }
            Progress::RoundFinished {
                round,
                green,
                total,
                next_in,
            } => {
                if let Some(bar) = &bar {
                    bar.set_position(green as u64);
                    bar.set_message(still_red(&names, &states, latest, round, next_in));
                } else if waiting
                    && changed_this_round
                    && let Some(next) = next_in
                {
                    eprintln!(
                        "round {round}: {green}/{total} green, next round in {}",
                        format_duration(next)
                    );
                }
            }
        }
        if let Some(bar) = &bar {
            let green = states.iter().filter(|s| **s == State::Passing).count();
            bar.set_position(green as u64);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}

/// "round 3 · red for 2m10s: a ✗, b ⊘ +4 · next in 4s"
fn still_red(
    names: &[String],
    states: &[State],
    red_for: Duration,
    round: u32,
    next_in: Option<Duration>,
) -> String {
    let red: Vec<String> = names
        .iter()
        .zip(states)
        .filter(|(_, s)| **s != State::Passing)
        .map(|(n, s)| format!("{n} {}", s.mark()))
        .collect();
    let mut message = format!("round {round}");
    if !red.is_empty() {
        let shown = red.iter().take(4).cloned().collect::<Vec<_>>().join(", ");
        message.push_str(&format!(" · red for {}: {shown}", format_duration(red_for)));
        if red.len() > 4 {
            message.push_str(&format!(" +{}", red.len() - 4));
        }
    }
    if let Some(next) = next_in {
        message.push_str(&format!(" · next in {}", format_duration(next)));
    }
    message
}
