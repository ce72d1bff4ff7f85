//! The latency plot: p50 and p99 of `POST /v1/payments` against offered load, one pair of
//! lines per backend, to a PNG (plotters' bitmap backend; text in a TrueType font read
//! from the system, DejaVu Sans from Debian's fonts-dejavu-core).

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;

use crate::http_bench::SweepPoint;

const FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

fn register_font() -> Result<()> {
    let bytes = FONTS
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .context("no TrueType font found (Debian: apt-get install fonts-dejavu-core)")?;
    // plotters keeps fonts for the life of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("the font file is not a usable TrueType font"))
}

/// Draws the sweeps to `path`.
pub fn latency_vs_load(path: &Path, sweeps: &[(&str, Vec<SweepPoint>)], conns: usize) -> Result<()> {
    register_font()?;
    let points = sweeps.iter().flat_map(|(_, s)| s.iter());
    let x_max = points.clone().map(|p| p.offered).fold(1.0, f64::max) * 1.08;
    let y_min = points.clone().map(|p| p.p50_ms).fold(f64::INFINITY, f64::min).clamp(0.01, 1.0) * 0.7;
    let y_max = points.map(|p| p.p99_ms).fold(10.0, f64::max) * 1.6;

    let root = BitMapBackend::new(path, (1100, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Kartu POST /v1/payments (tap verified): latency against offered load, {conns} connections"),
            ("sans-serif", 22),
        )
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, (y_min..y_max).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("offered load, payments/s (open loop)")
        .y_desc("latency, ms (log scale)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| if *y >= 1.0 { format!("{y:.0}") } else { format!("{y:.2}") })
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()?;
    // The goal: p99 under 10 ms.
    let goal = RGBColor(200, 0, 0);
    chart
        .draw_series(LineSeries::new([(0.0, 10.0), (x_max, 10.0)], goal.stroke_width(1)))?
        .label("goal: p99 under 10 ms")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], goal.stroke_width(1)));
    let colours = [RGBColor(31, 119, 180), RGBColor(44, 160, 44), RGBColor(148, 103, 189)];
    for (i, (backend, sweep)) in sweeps.iter().enumerate() {
        let colour = colours[i % colours.len()];
        for (quantile, width, pick) in
            [("p50", 1, (|p: &SweepPoint| p.p50_ms) as fn(&SweepPoint) -> f64), ("p99", 3, |p: &SweepPoint| p.p99_ms)]
        {
            let line: Vec<(f64, f64)> = sweep.iter().map(|p| (p.offered, pick(p).max(y_min))).collect();
            chart
                .draw_series(LineSeries::new(line.clone(), colour.stroke_width(width)))?
                .label(format!("{backend} {quantile}"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(width)));
            chart.draw_series(line.into_iter().map(|xy| Circle::new(xy, 3 + width, colour.filled())))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
