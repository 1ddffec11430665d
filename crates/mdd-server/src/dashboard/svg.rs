//! Charts drawn on the server as SVG: no script, no library, nothing fetched. Numbers only
//! go into attributes, text is escaped, and colours come from CSS classes (`s-<state>`), so
//! the page's stylesheet decides them and a strict content security policy holds.

use std::fmt::Write as _;

pub use mdd_docs::escape;

/// A step chart of green checks over time (a burn-up), with the total as a dashed line.
/// `points` are (ms since the epoch, green count), in time order.
pub fn burn_up(points: &[(i64, usize)], total: usize, from: i64, to: i64) -> String {
    let (width, height, pad) = (640.0, 160.0, 28.0);
    let span = (to - from).max(1) as f64;
    let top = total.max(1) as f64;
    let x = |t: i64| pad + (t - from).max(0) as f64 / span * (width - 2.0 * pad);
    let y = |n: usize| height - pad - n as f64 / top * (height - 2.0 * pad);
    let mut path = format!("M{:.1},{:.1}", x(from), y(0));
    let mut last = 0;
    for &(at, green) in points {
        let _ = write!(path, " H{:.1} V{:.1}", x(at), y(green));
        last = green;
    }
    let _ = write!(path, " H{:.1}", x(to));
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"green checks over time: {last} of {total} now\">"
    );
    let _ = write!(
        svg,
        "<line class=\"total\" x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"/>",
        x(from),
        y(total),
        x(to),
        y(total)
    );
    let _ = write!(svg, "<path class=\"s-passing line\" d=\"{path}\"/>");
    let _ = write!(
        svg,
        "<text x=\"{pad}\" y=\"{:.1}\">{total}</text><text x=\"{pad}\" y=\"{:.1}\">0</text>",
        y(total) - 4.0,
        height - pad + 14.0
    );
    let _ = write!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{} → {}</text>",
        width - pad,
        height - 6.0,
        escape(&short_time(from)),
        escape(&short_time(to))
    );
    svg.push_str("</svg>");
    svg
}

/// A line chart of one perfdata series: (ms since the epoch, value), in time order.
pub fn series(label: &str, unit: &str, points: &[(i64, f64)]) -> String {
    let (width, height, pad) = (640.0, 120.0, 28.0);
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return String::new();
    };
    let (from, to) = (first.0, last.0.max(first.0 + 1));
    let low = points
        .iter()
        .map(|p| p.1)
        .fold(f64::INFINITY, f64::min)
        .min(0.0);
    let high = points
        .iter()
        .map(|p| p.1)
        .fold(f64::NEG_INFINITY, f64::max)
        .max(low + f64::EPSILON);
    let x = |t: i64| pad + (t - from) as f64 / (to - from) as f64 * (width - 2.0 * pad);
    let y = |v: f64| height - pad - (v - low) / (high - low) * (height - 2.0 * pad);
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
    format!(
        "<svg class=\"chart\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"{label} over time\">\
         <path class=\"line series\" d=\"{line}\"/>\
         <text x=\"{pad}\" y=\"14\">{label} (max {high}{unit})</text>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{} → {}</text></svg>",
        width - pad,
        height - 6.0,
        escape(&short_time(from)),
        escape(&short_time(to)),
        label = escape(label),
        unit = escape(unit),
        high = trim_number(high),
    )
}

fn trim_number(v: f64) -> String {
    let text = format!("{v:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
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
        let chart = series("<b>", "s", &[(0, 1.0), (1000, 2.0)]);
        assert!(
            chart.contains("&lt;b&gt;") && !chart.contains("<b>"),
            "{chart}"
        );
    }

    #[test]
    fn the_burn_up_steps_to_each_count() {
        let chart = burn_up(&[(500, 1), (750, 2)], 2, 0, 1000);
        assert!(chart.contains("2 of 2 now"), "{chart}");
        // Three horizontal moves and two vertical steps up to the top line.
        assert_eq!(chart.matches(" H").count(), 3, "{chart}");
        assert_eq!(chart.matches(" V").count(), 2, "{chart}");
    }

    #[test]
    fn an_empty_series_draws_nothing() {
        assert_eq!(series("time", "s", &[]), "");
    }
}
