//! A bar chart drawn on the server as SVG (no chart library, no script): one bar per day,
//! its height proportional to the day's value, each with a `<title>` a screen reader and a
//! hovering pointer read; the first and last day are written under it in HTML, so the text
//! keeps its size when the chart stretches to the screen's width.

use maud::{html, Markup};

/// Drawing area, in SVG user units.
const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 160.0;
/// Room under the bars.
const AXIS: f64 = 4.0;

/// One bar: its label (a day) and value (minor units), and the text of its `<title>`.
pub struct Bar {
    /// Under the first and last bar.
    pub label: String,
    /// The value the height is proportional to (negative values draw no bar).
    pub value: i64,
    /// What the bar's title says.
    pub title: String,
}

/// The chart; `description` is its accessible name.
pub fn bars(bars: &[Bar], description: &str) -> Markup {
    let max = bars.iter().map(|b| b.value).max().unwrap_or(0).max(1) as f64;
    let n = bars.len().max(1) as f64;
    let slot = WIDTH / n;
    let area = HEIGHT - AXIS;
    html! {
        svg #chart .chart role="img" aria-label=(description) viewBox={ "0 0 " (WIDTH) " " (HEIGHT) }
            xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="none" {
            title { (description) }
            line x1="0" y1=(area) x2=(WIDTH) y2=(area) class="axis" {}
            @for (i, b) in bars.iter().enumerate() {
                @let h = (b.value.max(0) as f64 / max * (area - 4.0)).round();
                rect class="bar" x=(format!("{:.1}", i as f64 * slot + 1.0)) y=(format!("{:.1}", area - h))
                    width=(format!("{:.1}", (slot - 2.0).max(1.0))) height=(format!("{h:.1}"))
                    data-day=(b.label) data-value=(b.value) {
                    title { (b.title) }
                }
            }
        }
        @if let (Some(first), Some(last)) = (bars.first(), bars.last()) {
            p.ticks aria-hidden="true" { span { (first.label) } span { (last.label) } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The heights are proportional: the largest bar fills the area, half of it half.
    #[test]
    fn bars_are_proportional() {
        let b = |value| Bar { label: "d".into(), value, title: format!("{value}") };
        let svg = bars(&[b(100), b(50), b(0), b(-5)], "chart").into_string();
        let heights: Vec<f64> =
            svg.split("height=\"").skip(1).map(|s| s.split('"').next().unwrap_or("").parse().unwrap_or(-1.0)).collect();
        let full = HEIGHT - AXIS - 4.0;
        assert_eq!(heights, vec![full, (full / 2.0).round(), 0.0, 0.0]);
        assert!(svg.contains("<title>chart</title>"));
    }
}
