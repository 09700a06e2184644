//! `securenn inspect`: what an ONNX file (or a built-in model) is, what the importer makes of
//! each node, and what each layer costs in SecureNN for one input, by a dry run of the protocol.

use super::*;
use securenn::data::Mnist;
use securenn::infer::{InferReport, InferSpec, Layout, ProtocolKind, run_inference};
use securenn::nn::{Model, Weights};
use securenn::onnx::{Dim, Fate, OnnxError, OnnxModel, import};
use serde::Serialize;
use std::io::Write as _;

#[derive(clap::Args)]
pub(crate) struct InspectArgs {
    /// The ONNX model to inspect.
    #[arg(
        value_name = "MODEL.onnx",
        required_unless_present = "model",
        conflicts_with = "model"
    )]
    file: Option<PathBuf>,
    /// A built-in model instead of a file.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(securenn::models::BUILTIN))]
    model: Option<String>,
    /// Network layout and cost accounting of the dry run, as `infer --layout`.
    #[arg(long, value_enum, default_value = "default")]
    layout: LayoutArg,
    /// Also write the listing as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Overwrite the JSON file if it exists.
    #[arg(long)]
    force: bool,
}

/// One ONNX node and what became of it.
#[derive(Serialize)]
struct NodeRow {
    name: String,
    op_type: String,
    /// The layer it became, the layer it was folded into, evaluated at import, removed (and
    /// why); for a file that does not import, whether its op type is supported.
    fate: String,
    supported: bool,
}

/// One layer of the model as run, with its SecureNN cost for one input.
#[derive(Serialize)]
struct LayerRow {
    name: String,
    /// Shape of the (first) input, NHWC without the batch.
    input: Vec<usize>,
    output: Vec<usize>,
    params: usize,
    bytes: u64,
    rounds: u64,
}

/// Traffic outside the layers: bringing in the weights and the input, revealing the result.
#[derive(Serialize)]
struct CostRow {
    name: String,
    bytes: u64,
    rounds: u64,
}

/// The listing; field names are stable (other tools read the JSON).
#[derive(Serialize)]
struct Listing {
    /// The ONNX file, `null` for a built-in model.
    file: Option<String>,
    model: String,
    producer: Option<String>,
    producer_version: Option<String>,
    ir_version: Option<i64>,
    opset: Option<i64>,
    /// Graph inputs and outputs: name and shape (`batch` for a symbolic axis).
    inputs: Vec<(String, Vec<String>)>,
    outputs: Vec<(String, Vec<String>)>,
    nodes: Vec<NodeRow>,
    layout: &'static str,
    /// The model's layers as they run in `layout`, with SecureNN's bytes and rounds for one
    /// input (batch 1).
    layers: Vec<LayerRow>,
    /// `weights`, `input` and `reveal`.
    other: Vec<CostRow>,
    bytes_total: u64,
    rounds: u64,
    params: usize,
    /// Why the file does not import (then `layers` is empty).
    error: Option<String>,
}

/// A shape as text: `[batch, 1, 28, 28]`.
pub(crate) fn shape_text(shape: Option<&[Dim]>) -> String {
    match shape {
        None => "(no shape)".into(),
        Some(d) => format!("[{}]", dims(d).join(", ")),
    }
}

fn dims(d: &[Dim]) -> Vec<String> {
    d.iter()
        .map(|d| match d {
            Dim::Fixed(n) => n.to_string(),
            Dim::Symbolic(s) => s.clone(),
            Dim::Unknown => "?".into(),
        })
        .collect()
}

/// Whether the importer computes `op` (and how), by op type alone.
fn support(op: &str, domain: &str) -> (String, bool) {
    use securenn::onnx::import::{CONSTANT_FOLDED, SUPPORTED};
    if !domain.is_empty() && domain != "ai.onnx" {
        return (format!("NOT SUPPORTED (domain {domain})"), false);
    }
    let computed = SUPPORTED.iter().find(|s| s.split(' ').next() == Some(op));
    match (computed, CONSTANT_FOLDED.contains(&op)) {
        (Some(s), _) if s.ends_with("(last)") => ("supported as the last node".into(), true),
        (Some(_), _) => ("supported".into(), true),
        (None, true) => ("supported on constants and static shapes only".into(), true),
        (None, false) => ("NOT SUPPORTED".into(), false),
    }
}

/// The label of the node an import error names, if it names one.
fn failed_node(e: &OnnxError) -> Option<String> {
    match e {
        OnnxError::Unsupported { node, .. }
        | OnnxError::Attribute { node, .. }
        | OnnxError::UnknownAttributes { node, .. } => Some(node.clone()),
        OnnxError::Import { what, .. } => what
            .strip_prefix("node '")
            .and_then(|r| r.rsplit_once("' ("))
            .map(|(n, _)| n.to_string()),
        _ => None,
    }
}

fn layout_of(a: &InspectArgs) -> (Layout, &'static str) {
    match a.layout {
        LayoutArg::Default => (Layout::Default, "default"),
        LayoutArg::Paper => (Layout::Paper, "paper"),
    }
}

pub(crate) fn run(a: InspectArgs) -> Result<()> {
    if let Some(j) = &a.json {
        check_output(j, a.force)?;
    }
    let (layout, layout_name) = layout_of(&a);
    let mut listing = Listing {
        file: None,
        model: String::new(),
        producer: None,
        producer_version: None,
        ir_version: None,
        opset: None,
        inputs: Vec::new(),
        outputs: Vec::new(),
        nodes: Vec::new(),
        layout: layout_name,
        layers: Vec::new(),
        other: Vec::new(),
        bytes_total: 0,
        rounds: 0,
        params: 0,
        error: None,
    };
    // The weights set the comparison widths (the range analysis' bounds), so the dry run uses
    // the model's own: the file's initialisers, or a built-in's bundled weights.
    let (model, weights) = match (&a.file, &a.model) {
        (Some(path), _) => {
            let m = OnnxModel::read(path)?;
            let name = path
                .file_stem()
                .map_or_else(|| "onnx".into(), |s| s.to_string_lossy().into_owned());
            listing.file = Some(path.display().to_string());
            listing.model = name.clone();
            listing.producer = Some(m.producer.clone());
            listing.producer_version = Some(m.producer_version.clone());
            listing.ir_version = Some(m.ir_version);
            listing.opset = m.opset_version("");
            let g = &m.graph;
            let io = |v: &securenn::onnx::ValueInfo| {
                (
                    v.name.clone(),
                    v.shape.as_deref().map(dims).unwrap_or_default(),
                )
            };
            listing.inputs = g.runtime_inputs().map(io).collect();
            listing.outputs = g.outputs.iter().map(io).collect();
            let producer = match (m.producer.as_str(), m.producer_version.as_str()) {
                ("", _) => "(none)".to_string(),
                (p, "") => p.to_string(),
                (p, v) => format!("{p} {v}"),
            };
            println!(
                "{}: producer {producer}, IR version {}, opset {}",
                path.display(),
                m.ir_version,
                m.opsets
                    .iter()
                    .map(|(d, v)| match d.as_str() {
                        "" => format!("{v}"),
                        d => format!("{v} ({d})"),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            for v in g.runtime_inputs() {
                println!(
                    "  input   {} {} {}",
                    v.name,
                    shape_text(v.shape.as_deref()),
                    v.elem_type
                );
            }
            for v in &g.outputs {
                println!(
                    "  output  {} {} {}",
                    v.name,
                    shape_text(v.shape.as_deref()),
                    v.elem_type
                );
            }
            println!(
                "  {} nodes, {} initializers ({} values)",
                g.nodes.len(),
                g.initializers.len(),
                g.initializers.iter().map(|(_, t)| t.numel()).sum::<usize>()
            );
            match import::import_model(&m, &name) {
                Ok(imp) => {
                    let layer = |i: usize| {
                        imp.model
                            .nodes
                            .get(i)
                            .map_or_else(|| format!("{i}"), |n| format!("{i}.{}", n.layer.kind()))
                    };
                    listing.nodes = imp
                        .nodes
                        .iter()
                        .map(|(label, op, fate)| NodeRow {
                            name: label.clone(),
                            op_type: op.clone(),
                            fate: match fate {
                                Fate::Layer(i) => format!("layer {}", layer(*i)),
                                Fate::FoldedInto(i) => format!("folded into {}", layer(*i)),
                                Fate::Constant => "evaluated at import".into(),
                                Fate::Removed(why) => format!("removed: {why}"),
                            },
                            supported: true,
                        })
                        .collect();
                    print_nodes(&listing.nodes, "fate (layers of the imported model)");
                    (imp.model, Some(imp.weights))
                }
                Err(e) => {
                    let stopped = failed_node(&e);
                    listing.nodes = g
                        .nodes
                        .iter()
                        .map(|n| {
                            let (mut fate, supported) = support(&n.op_type, &n.domain);
                            if stopped.as_deref() == Some(n.label().as_str()) {
                                fate += " <- the importer stopped here";
                            }
                            NodeRow {
                                name: n.label(),
                                op_type: n.op_type.clone(),
                                fate,
                                supported,
                            }
                        })
                        .collect();
                    print_nodes(&listing.nodes, "op type (the file does not import)");
                    let unsupported: Vec<&str> = listing
                        .nodes
                        .iter()
                        .filter(|n| !n.supported)
                        .map(|n| n.name.as_str())
                        .collect();
                    if !unsupported.is_empty() {
                        println!(
                            "{} node(s) of an unsupported op type: {}",
                            unsupported.len(),
                            unsupported.join(", ")
                        );
                    }
                    let err = format!("{}: cannot import: {e}", path.display());
                    listing.error = Some(err.clone());
                    write_json(&a, &listing)?;
                    bail!(err);
                }
            }
        }
        (None, Some(name)) => {
            listing.model = name.clone();
            listing.producer = Some("securenn (built-in)".into());
            println!(
                "built-in network {name} (no ONNX file: `securenn export --model {name} --out \
                 {name}.onnx` writes one)"
            );
            let model = securenn::models::by_name(name).expect("clap checked the name");
            let weights = securenn::nn::weights_file::load_bundled(name, &model)
                .ok()
                .map(|(w, _)| w);
            (model, weights)
        }
        (None, None) => bail!("give an ONNX file or --model NAME"),
    };
    let _ = std::io::stdout().flush();
    costs(&model, weights, layout, &mut listing)?;
    write_json(&a, &listing)
}

fn print_nodes(nodes: &[NodeRow], what: &str) {
    let w = nodes.iter().map(|n| n.name.len()).max().unwrap_or(4).max(4);
    let o = nodes
        .iter()
        .map(|n| n.op_type.len())
        .max()
        .unwrap_or(7)
        .max(7);
    println!("\n  {:<w$}  {:<o$}  {what}", "node", "op type");
    for n in nodes {
        println!("  {:<w$}  {:<o$}  {}", n.name, n.op_type, n.fate);
    }
}

/// The layers as the model runs in the chosen layout, and their SecureNN cost for one input.
fn costs(
    model: &Model,
    weights: Option<Weights>,
    layout: Layout,
    listing: &mut Listing,
) -> Result<()> {
    let run_model = layout.apply(model);
    let infos = run_model.describe()?;
    println!(
        "\nmodel {} as run in the {} layout{}: {} layers (shapes NHWC, without the batch)",
        listing.model,
        listing.layout,
        match layout {
            Layout::Default => ", max pooling before a ReLU that feeds it (the same function)",
            Layout::Paper =>
                ", the paper's: max pooling before ReLU, a ReLU after the last dense layer",
        },
        infos.len()
    );
    if run_model.nodes != model.nodes && !listing.nodes.is_empty() {
        println!(
            "(the layout moves or adds layers: the names below are of the model as run, those \
             above of the model as imported)"
        );
    }
    println!("SecureNN for one input (batch 1): dry run of the protocol in memory...");
    let _ = std::io::stdout().flush();
    let report = dry_run(&listing.model, model, weights, layout)?;
    let cost = |name: &str| {
        report
            .layers
            .iter()
            .find(|l| l.name == name)
            .map_or((0, 0), |l| (l.bytes, l.rounds))
    };
    let shape = |s: &[usize]| {
        format!(
            "[{}]",
            s.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    listing.layers = infos
        .iter()
        .map(|l| {
            let (bytes, rounds) = cost(&l.name);
            LayerRow {
                name: l.name.clone(),
                input: l.input.clone(),
                output: l.output.clone(),
                params: l
                    .params
                    .iter()
                    .map(|(_, s)| s.iter().product::<usize>())
                    .sum(),
                bytes,
                rounds,
            }
        })
        .collect();
    listing.other = ["weights", "input", "reveal"]
        .iter()
        .map(|&n| {
            let (bytes, rounds) = cost(n);
            CostRow {
                name: n.into(),
                bytes,
                rounds,
            }
        })
        .collect();
    listing.bytes_total = report.bytes_total;
    listing.rounds = report.rounds;
    listing.params = listing.layers.iter().map(|l| l.params).sum();
    let shapes: Vec<String> = infos
        .iter()
        .map(|l| {
            let ins: Vec<String> = l.inputs.iter().map(|s| shape(s)).collect();
            format!("{} -> {}", ins.join(" + "), shape(&l.output))
        })
        .collect();
    let nw = infos.iter().map(|l| l.name.len()).max().unwrap_or(5).max(7);
    let sw = shapes.iter().map(String::len).max().unwrap_or(5).max(14);
    println!(
        "  {:<nw$}  {:<sw$}  {:>10}  {:>14}  {:>6}",
        "layer", "input -> output", "params", "bytes", "rounds"
    );
    let row = |name: &str, s: &str, params: String, bytes: u64, rounds: u64| {
        println!("  {name:<nw$}  {s:<sw$}  {params:>10}  {bytes:>14}  {rounds:>6}");
    };
    let other = |n: usize| &listing.other[n];
    for n in 0..2 {
        row(
            &other(n).name,
            "",
            String::new(),
            other(n).bytes,
            other(n).rounds,
        );
    }
    for (l, s) in listing.layers.iter().zip(&shapes) {
        row(&l.name, s, l.params.to_string(), l.bytes, l.rounds);
    }
    row(
        &other(2).name,
        "",
        String::new(),
        other(2).bytes,
        other(2).rounds,
    );
    row(
        "total",
        "",
        listing.params.to_string(),
        listing.bytes_total,
        listing.rounds,
    );
    println!(
        "bytes: all links; rounds: causal rounds each adds. SecureNN's bytes and rounds do not \
         depend on the input, and on the weights only through the comparison widths their \
         bounds give: the model's weights (random ones where it has none) and a zero input ran \
         (`securenn infer` on one input in [0, 1] in batches of 1 sends the same)"
    );
    Ok(())
}

/// SecureNN on one zero input in memory, with the model's weights (random ones of its shapes
/// where it has none).
fn dry_run(
    name: &str,
    model: &Model,
    weights: Option<Weights>,
    layout: Layout,
) -> Result<InferReport> {
    let weights = match weights {
        Some(w) => w,
        None => model.init_weights(1)?,
    };
    let data = Mnist {
        images: vec![vec![0.0; securenn::ring::numel(&model.input)]],
        labels: Vec::new(),
    };
    let mut spec = InferSpec::new(
        ProtocolKind::SecureNn,
        name,
        model.clone(),
        weights,
        data,
        1,
    );
    spec.batch = 1;
    spec.layout = layout;
    // Random weights may have any range; the dry run counts bytes, whatever it computes.
    spec.allow_range_risk = true;
    run_inference(&spec, None).with_context(|| format!("the dry run of model {name}"))
}

fn write_json(a: &InspectArgs, listing: &Listing) -> Result<()> {
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(listing)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("listing written to {}", path.display());
    }
    Ok(())
}
