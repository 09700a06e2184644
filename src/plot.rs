//! Figures (plotters, SVG): the exact ReLU beside Pond's polynomial approximations and their
//! error (the seed's Figure 1), a run's costs per layer from its JSON report, and the bench's
//! bytes and time against the batch size and the model's size ([`bench`]).

pub mod bench;

pub use bench::{BenchFigure, BenchFigures, BenchPlotError, BenchPoint, bench_figures, load_bench};

use crate::protocol::{TFE_RELU_3, TFE_RELU_9};
use plotters::prelude::*;
use std::path::Path;

/// Problems drawing a figure, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw {path}: {reason}")]
pub struct PlotError {
    pub path: String,
    pub reason: String,
}

/// A fitted polynomial to draw: label, (power, coefficient) terms, colour.
type Curve<'a> = (&'a str, &'a [(u32, f64)], RGBColor);

fn poly(terms: &[(u32, f64)], x: f64) -> f64 {
    terms.iter().map(|&(k, c)| c * x.powi(k as i32)).sum()
}

/// Exact ReLU, tf-encrypted's shipped [-9, 9] fit and its [-3, 3] fit over [-15, 15] (top), and
/// each fit's error (bottom, within ±3: the [-3, 3] fit leaves the plot beyond |x| ≈ 5).
pub fn relu_figure(out: &Path) -> Result<(), PlotError> {
    let err = |e: &dyn std::fmt::Display| PlotError {
        path: out.display().to_string(),
        reason: e.to_string(),
    };
    let root = SVGBackend::new(out, (900, 800)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (top, bottom) = root.split_vertically(480);
    let xs: Vec<f64> = (0..=600).map(|i| -15.0 + i as f64 * 0.05).collect();
    let curves: [Curve; 2] = [
        (
            "Pond ReLU, fit on [-9, 9] (tf-encrypted's shipped)",
            &TFE_RELU_9,
            BLUE,
        ),
        ("Pond ReLU, fit on [-3, 3]", &TFE_RELU_3, RED),
    ];
    let mut chart = ChartBuilder::on(&top)
        .caption(
            "Exact ReLU (SecureNN) and Pond's polynomial approximations",
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(45)
        .build_cartesian_2d(-15.0..15.0, -5.0..16.0)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("x")
        .y_desc("relu(x)")
        .draw()
        .map_err(|e| err(&e))?;
    chart
        .draw_series(LineSeries::new(
            xs.iter().map(|&x| (x, x.max(0.0))),
            BLACK.stroke_width(2),
        ))
        .map_err(|e| err(&e))?
        .label("exact ReLU (SecureNN)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    for (name, terms, color) in curves {
        chart
            .draw_series(LineSeries::new(
                xs.iter()
                    .map(|&x| (x, poly(terms, x)))
                    .filter(|(_, y)| (-5.0..16.0).contains(y)),
                color,
            ))
            .map_err(|e| err(&e))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&bottom)
        .caption(
            "Error of the approximations: polynomial(x) - relu(x)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(45)
        .build_cartesian_2d(-15.0..15.0, -3.0..3.0)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("x")
        .y_desc("error")
        .draw()
        .map_err(|e| err(&e))?;
    chart
        .draw_series(LineSeries::new(
            xs.iter().map(|&x| (x, 0.0)),
            BLACK.mix(0.5),
        ))
        .map_err(|e| err(&e))?;
    for (_, terms, color) in curves {
        chart
            .draw_series(LineSeries::new(
                xs.iter()
                    .map(|&x| (x, poly(terms, x) - x.max(0.0)))
                    .filter(|(_, e)| e.abs() <= 3.0),
                color,
            ))
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))
}

/// Bytes and rounds per layer of an `infer --json` report as bars, and its time split into
/// compute (the busiest party's CPU time) and the rest (network and waiting) when the report has
/// a virtual time.
pub fn costs_figure(report: &crate::infer::InferReport, out: &Path) -> Result<(), PlotError> {
    let err = |e: &dyn std::fmt::Display| PlotError {
        path: out.display().to_string(),
        reason: e.to_string(),
    };
    let layers: Vec<&crate::infer::LayerReport> =
        report.layers.iter().filter(|l| l.messages > 0).collect();
    if layers.is_empty() {
        return Err(err(&"the report has no traffic (a plaintext run?)"));
    }
    let root = SVGBackend::new(out, (1000, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let parts = root.split_evenly((3, 1));
    let n = layers.len();
    let names: Vec<String> = layers.iter().map(|l| l.name.clone()).collect();
    let label = |i: &f64| names.get(i.round() as usize).cloned().unwrap_or_default();
    let title = format!(
        "{} on network {} ({} layout, {} images, batch {}): {:.2} MB, {} rounds",
        report.protocol.name(),
        report.model,
        format!("{:?}", report.layout).to_lowercase(),
        report.samples,
        report.batch,
        report.bytes_total as f64 / 1e6,
        report.rounds
    );
    for (area, (what, values)) in parts.iter().zip([
        (
            "MB per layer",
            layers
                .iter()
                .map(|l| l.bytes as f64 / 1e6)
                .collect::<Vec<_>>(),
        ),
        (
            "causal rounds per layer",
            layers.iter().map(|l| l.rounds as f64).collect(),
        ),
    ]) {
        let top = values.iter().cloned().fold(0.0, f64::max).max(1e-9) * 1.1;
        let mut chart = ChartBuilder::on(area)
            .caption(
                if what.starts_with("MB") {
                    title.as_str()
                } else {
                    what
                },
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5..(n as f64 - 0.5), 0.0..top)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_labels(n)
            .x_label_formatter(&label)
            .y_desc(what)
            .disable_x_mesh()
            .draw()
            .map_err(|e| err(&e))?;
        chart
            .draw_series(values.iter().enumerate().map(|(i, &v)| {
                Rectangle::new(
                    [(i as f64 - 0.35, 0.0), (i as f64 + 0.35, v)],
                    BLUE.mix(0.6).filled(),
                )
            }))
            .map_err(|e| err(&e))?;
    }
    let compute = report.party_cpu_seconds.iter().cloned().fold(0.0, f64::max);
    let (total, kind) = match report.virtual_seconds {
        Some(v) => (
            v,
            format!("virtual time on the simulated {} network", report.network),
        ),
        None => (
            report.wall_seconds,
            "wall time (in memory: no network time)".to_string(),
        ),
    };
    let compute = compute.min(total);
    let mut chart = ChartBuilder::on(&parts[2])
        .caption(format!("{kind}: {total:.3} s"), ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..total.max(1e-9) * 1.05, -0.5..0.5)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .disable_y_mesh()
        .y_labels(0)
        .draw()
        .map_err(|e| err(&e))?;
    chart
        .draw_series([
            Rectangle::new([(0.0, -0.3), (compute, 0.3)], RED.mix(0.6).filled()),
            Rectangle::new([(compute, -0.3), (total, 0.3)], GREEN.mix(0.6).filled()),
        ])
        .map_err(|e| err(&e))?;
    chart
        .draw_series([
            Text::new(
                format!("compute (busiest party's CPU) {compute:.3} s"),
                (0.0, 0.38),
                ("sans-serif", 14),
            ),
            Text::new(
                format!("network and waiting {:.3} s", total - compute),
                (compute, -0.45),
                ("sans-serif", 14),
            ),
        ])
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relu_figure_is_an_svg_with_three_curves() {
        let path = std::env::temp_dir().join(format!("securenn-relu-{}.svg", std::process::id()));
        relu_figure(&path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("exact ReLU"));
        assert!(
            svg.matches("<polyline").count() >= 5,
            "three curves on top, two errors and an axis below"
        );
        std::fs::remove_file(&path).ok();
        // The errors the reference quotes: +0.44 at 0, diverging beyond |x| ≈ 14.
        assert!((poly(&TFE_RELU_9, 0.0) - 0.4401537).abs() < 1e-6);
        assert!(poly(&TFE_RELU_9, 15.0) - 15.0 < -2.0);
    }
}
