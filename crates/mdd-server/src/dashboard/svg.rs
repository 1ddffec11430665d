//! Charts drawn on the server as SVG: no script, no library, nothing fetched. Numbers only
//! go into attributes, text is escaped, and colours come from CSS classes (`s-<state>`), so
//! the page's stylesheet decides them and a strict content security policy holds.

use std::fmt::Write as _;

pub use mdd_docs::escape;

/// What happened to a deployment, drawn over its burn-up.
#[derive(Debug, Default, Clone)]
pub struct Moments {
    /// When it became done, and the settle window that ended then.
    pub done_at: Option<i64>,
    pub settle_ms: i64,
    /// When a check stopped passing after done.
    pub regressions: Vec<i64>,
}

/// A step chart of green checks over time (a burn-up), with the total as a dashed line, a
/// time axis with ticks, the settle window and the moment it was done, and regressions.
/// `points` are (ms since the epoch, green count), in time order.
pub fn burn_up(
    points: &[(i64, usize)],
    total: usize,
    from: i64,
    to: i64,
    moments: &Moments,
) -> String {
    let (width, height, pad, bottom) = (640.0, 180.0, 28.0, 40.0);
    let span = (to - from).max(1) as f64;
    let top = total.max(1) as f64;
    let x = |t: i64| pad + (t.clamp(from, to) - from) as f64 / span * (width - 2.0 * pad);
    let y = |n: usize| height - bottom - n as f64 / top * (height - bottom - pad);
    let mut path = format!("M{:.1},{:.1}", x(from), y(0));
    let mut last = 0;
    for &(at, green) in points {
        let _ = write!(path, " H{:.1} V{:.1}", x(at), y(green));
        last = green;
    }
    let _ = write!(path, " H{:.1}", x(to));
    let mut svg = format!(
        "<svg class=\"chart burn-up\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"green checks over time: {last} of {total} now\">"
    );
    if let Some(done) = moments.done_at {
        let settle_from = done - moments.settle_ms.max(0);
        let _ = write!(
            svg,
            "<rect class=\"settle\" x=\"{:.1}\" y=\"{pad}\" width=\"{:.1}\" height=\"{:.1}\"><title>settle: all green from {} to {} UTC</title></rect>\
             <line class=\"done\" x1=\"{:.1}\" y1=\"{pad}\" x2=\"{:.1}\" y2=\"{:.1}\"/>\
             <text class=\"done\" x=\"{:.1}\" y=\"{:.1}\">done</text>",
            x(settle_from),
            (x(done) - x(settle_from)).max(1.0),
            height - bottom - pad,
            escape(&exact_time(settle_from)),
            escape(&exact_time(done)),
            x(done),
            x(done),
            height - bottom,
            x(done) + 3.0,
            pad + 10.0
        );
    }
    let _ = write!(
        svg,
        "<line class=\"total\" x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"/>",
        x(from),
        y(total),
        x(to),
        y(total)
    );
    let _ = write!(svg, "<path class=\"s-passing line\" d=\"{path}\"/>");
    for &at in &moments.regressions {
        let _ = write!(
            svg,
            "<path class=\"regression\" d=\"M{:.1},{:.1} l-5,-9 h10 z\"><title>regression at {} UTC</title></path>",
            x(at),
            pad,
            escape(&exact_time(at))
        );
    }
    let _ = write!(
        svg,
        "<text x=\"4\" y=\"{:.1}\">{total}</text><text x=\"4\" y=\"{:.1}\">0</text>",
        y(total) + 4.0,
        y(0) + 4.0
    );
    time_axis(&mut svg, from, to, height - bottom, &x);
    svg.push_str("</svg>");
    svg
}

/// Ticks along the bottom at a round step (so that at most six fit), labelled in UTC to the
/// minute, or to the second when the span is short.
fn time_axis(svg: &mut String, from: i64, to: i64, base: f64, x: &dyn Fn(i64) -> f64) {
    const STEPS: [i64; 16] = [
        1_000,
        5_000,
        10_000,
        30_000,
        60_000,
        300_000,
        600_000,
        900_000,
        1_800_000,
        3_600_000,
        10_800_000,
        21_600_000,
        43_200_000,
        86_400_000,
        604_800_000,
        2_592_000_000,
    ];
    let span = (to - from).max(1);
    let step = STEPS
        .iter()
        .copied()
        .find(|s| span / s <= 6)
        .unwrap_or(2_592_000_000);
    let format = if step < 60_000 {
        "%H:%M:%S"
    } else if step < 86_400_000 {
        "%H:%M"
    } else {
        "%m-%d"
    };
    let _ = write!(
        svg,
        "<line class=\"axis\" x1=\"{:.1}\" y1=\"{base:.1}\" x2=\"{:.1}\" y2=\"{base:.1}\"/>",
        x(from),
        x(to)
    );
    let mut tick = (from / step + 1) * step;
    while tick <= to {
        let label = jiff::Timestamp::from_millisecond(tick)
            .map(|t| t.strftime(format).to_string())
            .unwrap_or_default();
        let _ = write!(
            svg,
            "<line class=\"tick\" x1=\"{0:.1}\" y1=\"{base:.1}\" x2=\"{0:.1}\" y2=\"{1:.1}\"/><text class=\"tick\" x=\"{0:.1}\" y=\"{2:.1}\" text-anchor=\"middle\">{3}</text>",
            x(tick),
            base + 4.0,
            base + 16.0,
            escape(&label)
        );
        tick += step;
    }
    let _ = write!(
        svg,
        "<text class=\"axis-note\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">UTC, {} → {}</text>",
        x(to),
        base + 32.0,
        escape(&short_time(from)),
        escape(&short_time(to))
    );
}

/// A line chart of one perfdata series: (ms since the epoch, value), in time order, with a y
/// axis in its unit, the warning and critical thresholds when the plugin gave them, and a time
/// axis. Nothing at all (not an empty frame) without a point.
pub fn series(
    label: &str,
    unit: &str,
    points: &[(i64, f64)],
    warn: Option<f64>,
    crit: Option<f64>,
) -> String {
    let (width, height, left, pad, bottom) = (640.0, 150.0, 56.0, 20.0, 40.0);
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return String::new();
    };
    let (from, to) = (first.0, last.0.max(first.0 + 1));
    let values = points.iter().map(|p| p.1).chain(warn).chain(crit);
    let low = values.clone().fold(f64::INFINITY, f64::min).min(0.0);
    let high = values
        .fold(f64::NEG_INFINITY, f64::max)
        .max(low + f64::EPSILON);
    let x = |t: i64| left + (t - from) as f64 / (to - from) as f64 * (width - left - pad);
    let y = |v: f64| height - bottom - (v - low) / (high - low) * (height - bottom - pad);
    let mut line = String::new();
    for (i, &(t, v)) in points.iter().enumerate() {
        let _ = write!(
            line,
            "{}{:.1},{:.1}",
            if i == 0 { "M" } else { " L" },
            x(t),
            y(v)
        );
    }
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"{label} over time\">\
         <text class=\"title\" x=\"{left}\" y=\"13\">{label}{}</text>",
        if unit.is_empty() {
            String::new()
        } else {
            format!(" ({})", escape(unit))
        },
        label = escape(label),
    );
    // The y axis: its bottom, middle and top, in the series' unit.
    let _ = write!(
        svg,
        "<line class=\"axis\" x1=\"{left}\" y1=\"{pad}\" x2=\"{left}\" y2=\"{:.1}\"/>",
        height - bottom
    );
    for v in [low, (low + high) / 2.0, high] {
        let _ = write!(
            svg,
            "<line class=\"grid\" x1=\"{left}\" y1=\"{0:.1}\" x2=\"{1:.1}\" y2=\"{0:.1}\"/><text class=\"tick\" x=\"{2:.1}\" y=\"{3:.1}\" text-anchor=\"end\">{4}{5}</text>",
            y(v),
            width - pad,
            left - 4.0,
            y(v) + 4.0,
            trim_number(v),
            escape(unit)
        );
    }
    for (class, threshold) in [("warn", warn), ("crit", crit)] {
        if let Some(t) = threshold {
            let _ = write!(
                svg,
                "<line class=\"threshold {class}\" x1=\"{left}\" y1=\"{0:.1}\" x2=\"{1:.1}\" y2=\"{0:.1}\"><title>{class} at {2}{3}</title></line><text class=\"threshold {class}\" x=\"{1:.1}\" y=\"{4:.1}\" text-anchor=\"end\">{class} {2}{3}</text>",
                y(t),
                width - pad,
                trim_number(t),
                escape(unit),
                y(t) - 3.0
            );
        }
    }
    let _ = write!(svg, "<path class=\"line series\" d=\"{line}\"/>");
    time_axis(&mut svg, from, to, height - bottom, &x);
    svg.push_str("</svg>");
    svg
}

fn trim_number(v: f64) -> String {
    let text = format!("{v:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// `2026-11-26 19:00:05` (UTC), for hovers.
fn exact_time(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// `2026-11-26 19:00` (UTC) for a time in ms since the epoch.
pub fn short_time(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
        let chart = series("<b>", "s", &[(0, 1.0), (1000, 2.0)], None, None);
        assert!(
            chart.contains("&lt;b&gt;") && !chart.contains("<b>"),
            "{chart}"
        );
    }

    #[test]
    fn the_burn_up_steps_to_each_count() {
        let chart = burn_up(&[(500, 1), (750, 2)], 2, 0, 1000, &Moments::default());
        assert!(chart.contains("2 of 2 now"), "{chart}");
        // Three horizontal moves and two vertical steps up to the top line.
        let line = chart
            .split("class=\"s-passing line\" d=\"")
            .nth(1)
            .and_then(|d| d.split('"').next())
            .expect("line");
        assert_eq!(line.matches(" H").count(), 3, "{chart}");
        assert_eq!(line.matches(" V").count(), 2, "{chart}");
    }

    #[test]
    fn an_empty_series_draws_nothing() {
        assert_eq!(series("time", "s", &[], Some(1.0), Some(2.0)), "");
    }

    #[test]
    fn the_burn_up_has_a_time_axis_the_done_moment_its_settle_and_regressions() {
        // 10:00 to 10:30 UTC on 2026-12-01: ticks every 5 minutes, to the minute.
        let from = 1_796_119_200_000;
        let minute = 60_000;
        let moments = Moments {
            done_at: Some(from + 20 * minute),
            settle_ms: 5 * minute,
            regressions: vec![from + 25 * minute],
        };
        let chart = burn_up(&[(from + 60_000, 1)], 1, from, from + 30 * minute, &moments);
        let ticks: Vec<&str> = chart
            .split("<text class=\"tick\"")
            .skip(1)
            .filter_map(|t| t.split('>').nth(1)?.split('<').next())
            .collect();
        assert_eq!(
            ticks,
            ["10:05", "10:10", "10:15", "10:20", "10:25", "10:30"]
        );
        assert!(chart.contains("<rect class=\"settle\""), "{chart}");
        assert!(
            chart.contains("settle: all green from 2026-12-01 10:15:00 to 2026-12-01 10:20:00 UTC"),
            "{chart}"
        );
        assert!(chart.contains(">done</text>"), "{chart}");
        assert!(
            chart.contains("regression at 2026-12-01 10:25:00 UTC"),
            "{chart}"
        );
        // Short spans are labelled to the second.
        let chart = burn_up(&[], 1, from, from + 20_000, &Moments::default());
        assert!(chart.contains(">10:00:05<"), "{chart}");
    }

    #[test]
    fn a_perfdata_chart_has_a_y_axis_in_its_unit_and_its_thresholds() {
        let chart = series("time", "s", &[(0, 0.2), (1000, 0.4)], Some(0.5), Some(1.0));
        assert!(chart.contains(">time (s)<"), "{chart}");
        assert!(
            chart.contains(">1s<") && chart.contains(">0s<"),
            "the axis in seconds: {chart}"
        );
        assert!(
            chart.contains("class=\"threshold warn\"") && chart.contains("warn at 0.5s"),
            "{chart}"
        );
        assert!(
            chart.contains("class=\"threshold crit\"") && chart.contains("crit at 1s"),
            "{chart}"
        );
    }
}
