//! Curves from `securenn bench --json` rows: bytes and time against the batch size for one model,
//! and against the model's size (parameters) at one batch size, one line per layout and network,
//! log scales. The rows are read as JSON (only the fields drawn), so a file from any version of
//! the bench that has them will do.

use super::PlotError;
use crate::bench::compare::kind;
use plotters::prelude::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Problems reading a bench file or drawing its figures, naming the file (and the row and
/// field).
#[derive(Debug, thiserror::Error)]
pub enum BenchPlotError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not a bench file (the JSON array `securenn bench --json FILE` writes): {reason}"
    )]
    NotRows { path: String, reason: String },
    /// Rows count from 1, in file order.
    #[error("{path}: row {row}: field `{field}`: {reason}")]
    Field {
        path: String,
        row: usize,
        field: &'static str,
        reason: String,
    },
    #[error("{path}: {reason}")]
    Nothing { path: String, reason: String },
    #[error(transparent)]
    Draw(#[from] PlotError),
}

/// What a figure needs of one bench row.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchPoint {
    pub model: String,
    pub batch: usize,
    /// The simulator preset (`lan`, `wan`, ...).
    pub network: String,
    /// `default` or `paper`, followed by ` without LEVER` and `, N cores` for rows that ran so.
    pub layout: String,
    /// Median virtual seconds.
    pub seconds: f64,
    /// The paper's quantity: one forward pass and the secure argmax, all parties.
    pub bytes: u64,
    /// Virtual seconds with free compute, when the row has it.
    pub network_bound_seconds: Option<f64>,
}

/// The rows of a `securenn bench --json` file.
pub fn load_bench(path: &Path) -> Result<Vec<BenchPoint>, BenchPlotError> {
    let p = || path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|source| BenchPlotError::Read { path: p(), source })?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| BenchPlotError::NotRows {
        path: p(),
        reason: e.to_string(),
    })?;
    let Value::Array(rows) = doc else {
        return Err(BenchPlotError::NotRows {
            path: p(),
            reason: format!("the top level is {}, not an array of rows", kind(&doc)),
        });
    };
    if rows.is_empty() {
        return Err(BenchPlotError::Nothing {
            path: p(),
            reason: "no rows (an empty array)".into(),
        });
    }
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            let field = |field: &'static str, reason: String| BenchPlotError::Field {
                path: p(),
                row: i + 1,
                field,
                reason,
            };
            if !row.is_object() {
                return Err(BenchPlotError::NotRows {
                    path: p(),
                    reason: format!("row {} is {}, not an object", i + 1, kind(row)),
                });
            }
            let get = |name: &'static str| {
                row.get(name)
                    .filter(|v| !v.is_null())
                    .ok_or_else(|| field(name, "missing".into()))
            };
            let string = |name: &'static str| {
                let v = get(name)?;
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| field(name, format!("expected a string, found {}", kind(v))))
            };
            let count = |name: &'static str| {
                let v = get(name)?;
                v.as_u64().ok_or_else(|| {
                    field(
                        name,
                        format!("expected a non-negative integer, found {}", kind(v)),
                    )
                })
            };
            let seconds = |name: &'static str, v: &Value| {
                v.as_f64()
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .ok_or_else(|| {
                        field(
                            name,
                            format!("expected a non-negative number, found {}", kind(v)),
                        )
                    })
            };
            let batch = count("batch")?;
            if batch == 0 {
                return Err(field("batch", "must be at least 1".into()));
            }
            Ok(BenchPoint {
                model: string("model")?,
                batch: batch as usize,
                network: string("network")?,
                layout: variant(string("layout")?, row),
                seconds: seconds("seconds", get("seconds")?)?,
                bytes: count("bytes")?,
                network_bound_seconds: match row.get("network_bound_seconds") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(seconds("network_bound_seconds", v)?),
                },
            })
        })
        .collect()
}

/// A row's layout with what else makes it a variant of it (a lever it ran without, cores per
/// party other than 1), so that variants draw as lines of their own.
fn variant(layout: String, row: &Value) -> String {
    let mut out = layout;
    if let Some(l) = row.get("without").and_then(Value::as_str) {
        out += &format!(" without {l}");
    }
    if let Some(c) = row.get("cores").and_then(Value::as_u64).filter(|&c| c != 1) {
        out += &format!(", {c} cores");
    }
    out
}

/// Which curves to draw; `None`s are chosen from the rows.
#[derive(Clone, Debug, Default)]
pub struct BenchFigures {
    /// The model of the batch-size figures (default: the model with the most batch sizes).
    pub model: Option<String>,
    /// The batch size of the model-size figures (default: the one most models share, the
    /// smallest among equals).
    pub batch: Option<usize>,
    /// The models of the model-size figures (default: every model of the rows).
    pub models: Vec<String>,
}

/// Parameters of a built-in model (its size in the model-size figures).
pub fn model_parameters(name: &str) -> Option<u64> {
    let layers = crate::models::by_name(name)?.describe().ok()?;
    Some(
        layers
            .iter()
            .flat_map(|l| &l.params)
            .map(|(_, shape)| shape.iter().product::<usize>() as u64)
            .sum(),
    )
}

/// One line of a figure.
struct Series {
    label: String,
    points: Vec<(f64, f64)>,
    /// Drawn thin and pale (the network bound beside its time).
    faint: bool,
}

/// One figure to draw: its file name and what goes in it.
pub struct BenchFigure {
    /// `bytes-vs-batch-a.svg` and so on.
    pub file: String,
    title: String,
    x_desc: &'static str,
    y_desc: &'static str,
    series: Vec<Series>,
    labels: Vec<(f64, String)>,
}

impl BenchFigure {
    /// The labels of its lines (as in the legend).
    pub fn series(&self) -> Vec<&str> {
        self.series.iter().map(|s| s.label.as_str()).collect()
    }

    /// Draw it into `dir`; returns the file's path.
    pub fn draw(&self, dir: &Path) -> Result<PathBuf, PlotError> {
        let out = dir.join(&self.file);
        draw(
            &out,
            &self.title,
            self.x_desc,
            self.y_desc,
            &self.series,
            &self.labels,
        )?;
        Ok(out)
    }
}

/// The four figures of `rows` (read from `source`, named in errors): `bytes-vs-batch-MODEL.svg`,
/// `time-vs-batch-MODEL.svg`, `bytes-vs-model-batchN.svg` and `time-vs-model-batchN.svg`.
pub fn bench_figures(
    rows: &[BenchPoint],
    source: &Path,
    want: &BenchFigures,
) -> Result<Vec<BenchFigure>, BenchPlotError> {
    let nothing = |reason: String| BenchPlotError::Nothing {
        path: source.display().to_string(),
        reason,
    };
    let models: Vec<&str> = first_seen(rows.iter().map(|r| r.model.as_str()));
    // The batch figures' model: asked for, or the one with the most batch sizes.
    let model = match &want.model {
        Some(m) if models.contains(&m.as_str()) => m.clone(),
        Some(m) => {
            return Err(nothing(format!(
                "--model {m}: no rows of that model (the file has {})",
                models.join(", ")
            )));
        }
        None => models
            .iter()
            .copied()
            .max_by_key(|m| {
                // Most batch sizes; the first model in the file among equals.
                let n = first_seen(rows.iter().filter(|r| r.model == *m).map(|r| r.batch)).len();
                (n, std::cmp::Reverse(models.iter().position(|x| x == m)))
            })
            .expect("rows")
            .to_string(),
    };
    // The model figures' models and batch size.
    let chosen: Vec<String> = if want.models.is_empty() {
        models.iter().map(|m| m.to_string()).collect()
    } else {
        for m in &want.models {
            if !models.contains(&m.as_str()) {
                return Err(nothing(format!(
                    "--models: no rows of model {m} (the file has {})",
                    models.join(", ")
                )));
            }
        }
        want.models.clone()
    };
    let mut sizes = Vec::new();
    for m in &chosen {
        let Some(p) = model_parameters(m) else {
            let row = rows.iter().position(|r| &r.model == m).expect("a row") + 1;
            return Err(BenchPlotError::Field {
                path: source.display().to_string(),
                row,
                field: "model",
                reason: format!(
                    "{m:?} is not a built-in model, so its size is unknown (the built-in ones: {})",
                    crate::models::BUILTIN.join(", ")
                ),
            });
        };
        sizes.push((m.clone(), p));
    }
    let batch = match want.batch {
        Some(b) => b,
        None => {
            let batches = first_seen(rows.iter().map(|r| r.batch));
            let shared = |b: usize| {
                chosen
                    .iter()
                    .filter(|m| rows.iter().any(|r| &r.model == *m && r.batch == b))
                    .count()
            };
            batches
                .into_iter()
                .max_by_key(|&b| (shared(b), std::cmp::Reverse(b)))
                .expect("rows")
        }
    };
    if !rows
        .iter()
        .any(|r| r.batch == batch && chosen.contains(&r.model))
    {
        return Err(nothing(format!(
            "--batch {batch}: no rows of the models {} at that batch size",
            chosen.join(", ")
        )));
    }

    let at_batch: Vec<&BenchPoint> = rows.iter().filter(|r| r.model == model).collect();
    let by_batch = |r: &BenchPoint| r.batch as f64;
    let by_size = |r: &BenchPoint| {
        sizes
            .iter()
            .find(|(m, _)| *m == r.model)
            .map(|(_, p)| *p as f64)
    };
    let at_size: Vec<&BenchPoint> = rows
        .iter()
        .filter(|r| r.batch == batch && chosen.contains(&r.model))
        .collect();
    let size_labels: Vec<(f64, String)> = sizes
        .iter()
        .map(|(m, p)| (*p as f64, format!("{m} ({})", short(*p))))
        .collect();
    let batch_axis = "batch size (images per query, log scale)";
    let size_axis = "model size (parameters, log scale)";
    let figures = [
        (
            format!("bytes-vs-batch-{}.svg", file_part(&model)),
            format!("Communication of network {model} against the batch size"),
            batch_axis,
            bytes_series(&at_batch, &|r| Some(by_batch(r))),
            "MB sent, all parties (10^6 bytes, log scale)",
            Vec::new(),
        ),
        (
            format!("time-vs-batch-{}.svg", file_part(&model)),
            format!("Time of network {model} against the batch size"),
            batch_axis,
            time_series(&at_batch, &|r| Some(by_batch(r))),
            "seconds, virtual clock of the simulated network (log scale)",
            Vec::new(),
        ),
        (
            format!("bytes-vs-model-batch{batch}.svg"),
            format!("Communication against the model's size, batch {batch}"),
            size_axis,
            bytes_series(&at_size, &by_size),
            "MB sent, all parties (10^6 bytes, log scale)",
            size_labels.clone(),
        ),
        (
            format!("time-vs-model-batch{batch}.svg"),
            format!("Time against the model's size, batch {batch}"),
            size_axis,
            time_series(&at_size, &by_size),
            "seconds, virtual clock of the simulated network (log scale)",
            size_labels,
        ),
    ];
    figures
        .into_iter()
        .map(|(file, title, x_desc, series, y_desc, labels)| {
            if series.iter().all(|s| s.points.is_empty()) {
                return Err(nothing(format!("{file}: no positive values to draw")));
            }
            Ok(BenchFigure {
                file,
                title,
                x_desc,
                y_desc,
                series,
                labels,
            })
        })
        .collect()
}

/// Distinct items in order of first appearance.
fn first_seen<T: PartialEq>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for x in items {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

/// A model name as part of a file name.
fn file_part(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// 118282 as `118k`, 1234567 as `1.2M`.
fn short(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.0}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

/// (layout, network) -> points (x, y), sorted by x, positive values only (log scales).
fn grouped(
    rows: &[&BenchPoint],
    x: &dyn Fn(&BenchPoint) -> Option<f64>,
    y: &dyn Fn(&BenchPoint) -> Option<f64>,
) -> BTreeMap<(String, String), Vec<(f64, f64)>> {
    let mut groups: BTreeMap<(String, String), Vec<(f64, f64)>> = BTreeMap::new();
    for r in rows {
        if let (Some(x), Some(y)) = (x(r), y(r))
            && x > 0.0
            && y > 0.0
        {
            groups
                .entry((r.layout.clone(), r.network.clone()))
                .or_default()
                .push((x, y));
        }
    }
    for points in groups.values_mut() {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        // Several rows at one x (runs of two bench files): the first.
        points.dedup_by(|a, b| a.0 == b.0);
    }
    groups
}

/// Bytes per layout; a layout's networks share a line when their bytes agree (they do: the
/// bytes do not depend on the network).
fn bytes_series(rows: &[&BenchPoint], x: &dyn Fn(&BenchPoint) -> Option<f64>) -> Vec<Series> {
    // (layout, its networks, the points they share)
    type Line = (String, Vec<String>, Vec<(f64, f64)>);
    let mut out: Vec<Line> = Vec::new();
    for ((layout, network), points) in grouped(rows, x, &|r| Some(r.bytes as f64 / 1e6)) {
        match out
            .iter_mut()
            .find(|(l, _, p)| *l == layout && *p == points)
        {
            Some((_, nets, _)) => nets.push(network),
            None => out.push((layout, vec![network], points)),
        }
    }
    out.into_iter()
        .map(|(layout, nets, points)| Series {
            label: format!("{layout} layout ({})", nets.join(", ")),
            points,
            faint: false,
        })
        .collect()
}

/// Seconds per layout and network, each with its network bound (free compute) beside it.
fn time_series(rows: &[&BenchPoint], x: &dyn Fn(&BenchPoint) -> Option<f64>) -> Vec<Series> {
    let time = grouped(rows, x, &|r| Some(r.seconds));
    let bound = grouped(rows, x, &|r| r.network_bound_seconds);
    let mut out = Vec::new();
    for ((layout, network), points) in time {
        let b = bound.get(&(layout.clone(), network.clone())).cloned();
        out.push(Series {
            label: format!("{layout} layout, {network}"),
            points,
            faint: false,
        });
        if let Some(points) = b {
            out.push(Series {
                label: format!("{layout} layout, {network}: network bound"),
                points,
                faint: true,
            });
        }
    }
    out
}

const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

/// One log-log figure: the series as lines with points, a legend, and `labels` (x, text) written
/// at the foot of the plot (model names on the model-size axis).
fn draw(
    out: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    labels: &[(f64, String)],
) -> Result<(), PlotError> {
    let err = |e: &dyn std::fmt::Display| PlotError {
        path: out.display().to_string(),
        reason: e.to_string(),
    };
    let all = series.iter().flat_map(|s| &s.points);
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    let (x0, x1) = (x0 / 1.5, x1 * 1.5);
    let (y0, y1) = (y0 / 2.0, y1 * 2.0);
    let root = SVGBackend::new(out, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .y_label_formatter(&|v| format!("{v}"))
        .x_label_formatter(&|v| {
            if *v >= 1e3 {
                short(*v as u64)
            } else {
                format!("{v}")
            }
        })
        .draw()
        .map_err(|e| err(&e))?;
    let mut colour: usize = 0;
    for s in series {
        // A network bound takes its time line's colour.
        let c = COLOURS[(if s.faint {
            colour.saturating_sub(1)
        } else {
            colour
        }) % COLOURS.len()];
        let style = if s.faint {
            c.mix(0.45).stroke_width(1)
        } else {
            colour += 1;
            c.stroke_width(2)
        };
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), style).point_size(3))
            .map_err(|e| err(&e))?
            .label(&s.label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    for (x, text) in labels {
        chart
            .draw_series([Text::new(
                text.clone(),
                (*x, y0 * 1.15),
                ("sans-serif", 14).into_font().color(&BLACK),
            )])
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(model: &str, batch: usize, network: &str, layout: &str, bytes: u64) -> BenchPoint {
        BenchPoint {
            model: model.into(),
            batch,
            network: network.into(),
            layout: layout.into(),
            seconds: batch as f64 * if network == "wan" { 2.0 } else { 0.1 },
            bytes,
            network_bound_seconds: Some(0.01),
        }
    }

    #[test]
    fn the_bytes_of_a_layout_share_one_line_across_networks() {
        let rows = [
            row("a", 1, "lan", "paper", 10),
            row("a", 8, "lan", "paper", 80),
            row("a", 1, "wan", "paper", 10),
            row("a", 8, "wan", "paper", 80),
            row("a", 1, "lan", "default", 7),
        ];
        let refs: Vec<&BenchPoint> = rows.iter().collect();
        let s = bytes_series(&refs, &|r| Some(r.batch as f64));
        let labels: Vec<&str> = s.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["default layout (lan)", "paper layout (lan, wan)"]);
        let t = time_series(&refs, &|r| Some(r.batch as f64));
        assert_eq!(t.len(), 6, "three time lines, each with its bound");
    }

    #[test]
    fn sizes_are_the_models_parameters() {
        // Network A: 784*128 + 128 + 128*128 + 128 + 128*10 + 10.
        assert_eq!(model_parameters("a"), Some(118_282));
        assert!(model_parameters("c") > model_parameters("a"));
        assert_eq!(model_parameters("nope"), None);
        assert_eq!(short(118_282), "118k");
        assert_eq!(short(431_080), "431k");
    }
}
