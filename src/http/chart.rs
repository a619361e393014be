//! Server-rendered SVG charts of two daily series: the first above the axis, the second below.
//! They style through classes (the dashboard's policy allows no inline style), and carry a
//! `<title>` and axis labels; the page puts the same figures in a table beside them.

use std::fmt::Write;

use crate::store::DayFigures;

const WIDTH: f64 = 480.0;
const HEIGHT: f64 = 200.0;
/// Room for the y-axis labels on the left and the dates below.
const LEFT: f64 = 44.0;
const RIGHT: f64 = 6.0;
const TOP: f64 = 8.0;
const BOTTOM: f64 = 24.0;

/// A chart and the figures it shows.
pub struct Chart {
    pub title: String,
    pub labels: [&'static str; 2],
    /// Newest first, for the table.
    pub days: Vec<DayFigures>,
    pub totals: (i64, i64),
    pub svg: String,
}

/// The smallest "round" number (1, 2 or 5 times a power of ten) at least `n`.
fn nice_ceiling(n: i64) -> i64 {
    let mut step = 1;
    loop {
        for m in [1, 2, 5] {
            if m * step >= n {
                return m * step;
            }
        }
        step *= 10;
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

pub fn daily(title: &str, labels: [&'static str; 2], days: &[DayFigures]) -> Chart {
    let max = days.iter().map(|d| d.a.max(d.b)).max().unwrap_or(0).max(1);
    let scale = nice_ceiling(max) as f64;
    let plot_w = WIDTH - LEFT - RIGHT;
    let half = (HEIGHT - TOP - BOTTOM) / 2.0;
    let zero = TOP + half;
    let slot = plot_w / days.len().max(1) as f64;
    let bar_w = (slot * 0.8).max(1.0);
    let id = title
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_lowercase();

    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="chart-{id}" xmlns="http://www.w3.org/2000/svg"><title id="chart-{id}">{}</title>"#,
        escape(title)
    );
    // The axes and their labels: the scale above the zero line, and below it (counted down, as
    // the second series is drawn), dates under it.
    let scale_label = scale as i64;
    let _ = write!(
        svg,
        r#"<g class="axis"><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{y}"/><line x1="{LEFT}" y1="{zero}" x2="{x}" y2="{zero}"/><text x="{tx}" y="{t1}" text-anchor="end">{scale_label}</text><text x="{tx}" y="{t2}" text-anchor="end">0</text><text x="{tx}" y="{t3}" text-anchor="end">−{scale_label}</text>"#,
        y = HEIGHT - BOTTOM,
        x = WIDTH - RIGHT,
        tx = LEFT - 6.0,
        t1 = TOP + 10.0,
        t2 = zero + 4.0,
        t3 = HEIGHT - BOTTOM,
    );
    if let (Some(first), Some(last)) = (days.first(), days.last()) {
        let _ = write!(
            svg,
            r#"<text x="{LEFT}" y="{y}" text-anchor="start">{}</text><text x="{x}" y="{y}" text-anchor="end">{}</text>"#,
            first.day.format("%-d %b"),
            last.day.format("%-d %b"),
            y = HEIGHT - 6.0,
            x = WIDTH - RIGHT,
        );
    }
    svg.push_str("</g>");
    for (i, d) in days.iter().enumerate() {
        let x = LEFT + i as f64 * slot + (slot - bar_w) / 2.0;
        for (value, class, label, up) in [(d.a, "a", labels[0], true), (d.b, "b", labels[1], false)] {
            if value == 0 {
                continue;
            }
            let h = (value as f64 / scale * half).max(1.0);
            let y = if up { zero - h } else { zero };
            let _ = write!(
                svg,
                r#"<rect class="series-{class}" x="{x:.1}" y="{y:.1}" width="{bar_w:.1}" height="{h:.1}"><title>{}: {value} {label}</title></rect>"#,
                d.day.format("%-d %b %Y"),
            );
        }
    }
    svg.push_str("</svg>");
    Chart {
        title: title.to_owned(),
        labels,
        days: days.iter().rev().copied().collect(),
        totals: days.iter().fold((0, 0), |(a, b), d| (a + d.a, b + d.b)),
        svg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_are_round() {
        assert_eq!(nice_ceiling(1), 1);
        assert_eq!(nice_ceiling(3), 5);
        assert_eq!(nice_ceiling(11), 20);
        assert_eq!(nice_ceiling(500), 500);
        assert_eq!(nice_ceiling(501), 1000);
    }

    #[test]
    fn a_chart_has_a_title_axes_and_one_bar_per_figure() {
        let day = |d: u32, a, b| DayFigures {
            day: chrono::NaiveDate::from_ymd_opt(2026, 12, d).unwrap(),
            a,
            b,
        };
        let chart = daily(
            "Subscriptions <per day>",
            ["confirmed", "left"],
            &[day(1, 3, 0), day(2, 0, 0), day(3, 8, 2)],
        );
        assert!(
            chart
                .svg
                .contains("<title id=\"chart-subscriptionsperday\">Subscriptions &lt;per day&gt;</title>")
        );
        assert_eq!(chart.svg.matches("<rect").count(), 3);
        assert!(chart.svg.contains(">10</text>"), "the scale rounds 8 up to 10");
        assert!(chart.svg.contains(">1 Dec</text>") && chart.svg.contains(">3 Dec</text>"));
        assert!(!chart.svg.contains("style="));
        assert_eq!(chart.totals, (11, 2));
        assert_eq!(
            chart.days[0].day.to_string(),
            "2026-12-03",
            "the table lists the newest first"
        );
    }
}
