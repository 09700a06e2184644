//! `securenn bench --train`: one SGD iteration of the SecureNN paper's trained networks (A, B, C;
//! Tables 3-5, batch 128) on the network simulator's virtual clock, beside the paper's time per
//! iteration and the public SecureNN code's measured bytes per iteration; and a closed-form model
//! of the public code's iteration ([`public_code_phases`]) that reproduces those measured bytes,
//! phase by phase against ours ([`explain_table`]).
//!
//! A cell is one (model, batch, network, layout): a training job of one epoch of one iteration
//! (the model's seeded initial weights, the first `batch` bundled training images, no test set).
//! The job's one-off costs (sharing the initial weights, revealing the trained ones) are reported
//! apart; every per-iteration figure covers the phases an iteration repeats: input (sharing the
//! batch and its labels), forward, asm (the approximate softmax: its Division), backward and
//! update. Its virtual seconds, CPU seconds and busiest link come from the metrics layer's
//! operation tree (the iteration's span), so the layer must be installed, as the binary does.

use super::{BenchError, Cell, RECV_TIMEOUT, layout_name, median, opt};
use crate::channel::{P0, P1};
use crate::data::{DataSource, Mnist, Split};
use crate::fixed::FixedPoint;
use crate::infer::{Layout, ProtocolKind};
use crate::metrics::SessionTrace;
use crate::nn::Layer;
use crate::party::{Network, PartyConfig};
use crate::training::{PhaseReport, TrainReport, TrainSpec, run_training};
use securenn_transports::sim::{Clock, Compute, LinkSpec, SimConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Models `--train` runs: the networks the paper trained (Tables 3-5).
pub const TRAIN_MODELS: &[&str] = &["a", "b", "c"];

/// The default batch: the paper's (Tables 3 and 5).
pub const DEFAULT_TRAIN_BATCHES: &[usize] = &[128];

/// `--train --quick` runs only these models (B's and C's iteration moves a gigabyte or more).
pub const TRAIN_QUICK_MODELS: &[&str] = &["a"];

/// Measured runs per cell: one. Bytes and rounds do not depend on the run and the virtual clock
/// advances by each party's CPU time, so a noisy neighbour moves it little; `--runs 3` gives
/// medians.
pub const DEFAULT_TRAIN_RUNS: usize = 1;

/// The phases an iteration repeats; the others (`weights`, `reveal`) are the job's one-off costs.
pub const ITERATION_PHASES: &[&str] = &["input", "forward", "asm", "backward", "update"];

/// Quotient bits of the public code's Division (`FLOAT_PRECISION`).
const PUBLIC_DIVISION_BITS: u64 = 13;

/// The paper's learning rate for a model: 2^-7 for network A (SecureML's), 2^-5 otherwise. The
/// cost of an iteration does not depend on it.
pub fn learning_rate(model: &str) -> f64 {
    if model == "a" {
        2f64.powi(-7)
    } else {
        2f64.powi(-5)
    }
}

/// The paper's training time for one network (Table 3 for A's 15 epochs and B's and C's 5 at
/// batch 128; Table 5 gives the same 1.03 / 7.83 h for A): hours on its LAN and WAN.
struct Table3Row {
    model: &'static str,
    name: &'static str,
    epochs: f64,
    lan_hours: f64,
    wan_hours: f64,
}

const TABLE_3: &[Table3Row] = &[
    Table3Row {
        model: "a",
        name: "A",
        epochs: 15.0,
        lan_hours: 1.03,
        wan_hours: 7.83,
    },
    Table3Row {
        model: "b",
        name: "B",
        epochs: 5.0,
        lan_hours: 5.8,
        wan_hours: 17.99,
    },
    Table3Row {
        model: "c",
        name: "C",
        epochs: 5.0,
        lan_hours: 9.98,
        wan_hours: 30.66,
    },
];

/// The paper's figure for one training cell.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PaperTrainCell {
    /// The paper's name of the network: `A`, `B` or `C`.
    pub network: &'static str,
    /// Seconds per iteration: the table's hours over its iterations (60,000 / 128 = 468.75 per
    /// epoch): A 0.527 / 4.009, B 8.909 / 27.63, C 15.33 / 47.09 (LAN / WAN).
    pub seconds: f64,
}

/// The paper's seconds per iteration for `model` at `batch` on `network` (`a`, `b`, `c`; batch
/// 128; `lan` or `wan`).
pub fn paper_train_cell(model: &str, batch: usize, network: &str) -> Option<PaperTrainCell> {
    let row = TABLE_3.iter().find(|r| r.model == model)?;
    if batch != 128 {
        return None;
    }
    let hours = match network {
        "lan" => row.lan_hours,
        "wan" => row.wan_hours,
        _ => return None,
    };
    Some(PaperTrainCell {
        network: row.name,
        seconds: hours * 3600.0 / (row.epochs * 60_000.0 / 128.0),
    })
}

/// The public SecureNN code's measured bytes per training iteration (reference §4.4, all
/// parties summed, MB = 10^6 B, as printed): batch 1 and 128.
pub fn public_code_measured_mb(model: &str, batch: usize) -> Option<f64> {
    Some(match (model, batch) {
        ("a", 1) => 3.45883,
        ("b", 1) => 11.5872,
        ("c", 1) => 33.5294,
        ("a", 128) => 47.1245,
        ("b", 128) => 1314.31,
        ("c", 128) => 2105.83,
        _ => return None,
    })
}

/// One line of the public code's iteration in the closed-form model, keyed like our
/// [`PhaseReport`]s (phase, and for forward and backward our layer name).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PublicPhase {
    pub phase: String,
    pub layer: String,
    pub bytes: u64,
    /// What the public code does there, and how ours differs.
    pub why: String,
}

/// 8(2mn + 2nv + mv): the public code's `funcMatMulMPC` of an m×n by an n×v matrix (PRF
/// triples: P2 sends only the product's share to P1).
fn matmul(m: u64, n: u64, v: u64) -> u64 {
    8 * (2 * m * n + 2 * n * v + m * v)
}

/// `funcDotProductMPC` / `funcSelectShares3PC`: 40 B per element.
const DOT: u64 = 40;
/// ReLU (DReLU 664 + SelectShare 40) per element.
const RELU: u64 = 704;
/// One comparison step of max pooling per output (DReLU 664 + two SelectShares).
const MAX_STEP: u64 = 744;
/// One iteration of the public code's Division per element: DReLU 664 and two products with
/// full triples (P2 sends A, B and C shares to both servers: 6 words, plus 4 exchanged), 160.
const PUBLIC_DIVISION_STEP: u64 = 824;

fn numel(s: &[usize]) -> u64 {
    s.iter().product::<usize>() as u64
}

/// The public SecureNN code's training iteration in closed form (reference §4.2, §4.4, §4.5;
/// `NeuralNetwork.cpp`, `FCLayer.cpp`, `CNNLayer.cpp`, `Functionalities.cpp` of
/// snwagh/securenn-public), laid over our model in the paper layout so that its lines carry our
/// layer names: the forward pass (Table 7's inference without the argmax), the ASM's Division
/// with full triples, and the backward pass as its layers do it:
/// - every layer but the first: δ ⊙ ReLU' of its own output (`funcSelectShares3PC` or
///   `funcDotProductMPC`, 40 B per element) and δ·Wᵀ: `funcMatMulMPC` for a dense layer, and for
///   a convolution DMaxpool's one-hot (one byte from each server, n words back: 2 + 16n per
///   pooled output), δ ⊙ one-hot over the pooling input (40 B per element) and the product of
///   the zero-padded im2col of δ ((h·w·B) × (f²·D)) with the flipped kernel;
/// - every layer: dW = Xᵀ·δ by `funcMatMulMPC` (for a convolution: im2col(X)ᵀ, (C·f²) ×
///   (h'·w'·B), by δ);
/// - the update itself is local (truncation and subtraction).
///
/// The first layer's `computeDelta` is never called (the loop stops at layer 1), so neither its
/// ReLU' nor its pooling's derivative is applied; the last layer's ReLU' (the ASM's ReLU) is.
/// The public code reads its pre-shared inputs from files: no input traffic.
///
/// At batch 1 and 128 the total equals the measured bytes to every printed digit (A 47,124,480,
/// B 1,314,308,544, C 2,105,834,080 at 128). `None` for models the public code cannot run (it
/// knows dense layers with a ReLU each, and valid stride-1 convolutions each followed by
/// max pooling and a ReLU).
pub fn public_code_phases(model: &str, batch: usize) -> Option<Vec<PublicPhase>> {
    if !TRAIN_MODELS.contains(&model) {
        return None;
    }
    let m = crate::models::by_name(model)?
        .paper_layout()
        .without_argmax();
    let infos = m.describe().ok()?;
    let layers: Vec<&Layer> = m.layers().collect();
    let b = batch as u64;
    let mut out = Vec::new();
    // Forward: Table 7's layers (§4.5), without the argmax.
    let mut forward = 0;
    for (l, info) in layers.iter().zip(&infos) {
        forward += match **l {
            Layer::Dense { .. } => matmul(b, numel(&info.input), numel(&info.output)),
            Layer::Conv2d {
                kernel,
                stride: 1,
                padding: crate::ring::Padding::Valid,
                ..
            } => {
                let (o, i) = (&info.output, &info.input);
                let (ohw, c, d, f2) = (
                    (o[0] * o[1]) as u64,
                    i[2] as u64,
                    o[2] as u64,
                    (kernel * kernel) as u64,
                );
                8 * (2 * b * ohw * f2 * c + 2 * f2 * c * d + b * ohw * d)
            }
            Layer::Relu => RELU * b * numel(&info.output),
            Layer::MaxPool { window } => {
                let k = window.as_square()? as u64;
                MAX_STEP * (k * k - 1) * b * numel(&info.output)
            }
            Layer::Flatten => 0,
            _ => return None,
        };
    }
    let pools = layers.iter().any(|l| l.is_max_pool());
    out.push(PublicPhase {
        phase: "forward".into(),
        layer: String::new(),
        bytes: forward,
        why: if pools {
            "Table 7's forward pass without the argmax; ours adds DMaxpool's one-hot (16(n+1) B \
             per pooled output), which the public code builds in backward"
        } else {
            "Table 7's forward pass without the argmax: the same protocols in both"
        }
        .into(),
    });
    let classes = numel(&infos.last()?.output);
    out.push(PublicPhase {
        phase: "asm".into(),
        layer: String::new(),
        bytes: PUBLIC_DIVISION_STEP * PUBLIC_DIVISION_BITS * b * classes,
        why: "Division: 13 x 824 B per logit (DReLU and two products with full triples, one by \
              a public 2^(13-i)); ours 13 x 704 (one product with PRF triples)"
            .into(),
    });
    // Backward, in our layer order; `owner[i]`: the weighted layer whose block step i is
    // (the public code's layer objects: dense + ReLU, conv + maxpool + ReLU).
    let weighted: Vec<usize> = layers
        .iter()
        .enumerate()
        .filter(|(_, l)| matches!(l, Layer::Dense { .. } | Layer::Conv2d { .. }))
        .map(|(i, _)| i)
        .collect();
    let first = *weighted.first()?;
    let owner = |i: usize| weighted.iter().rev().find(|&&w| w <= i).copied();
    let last = layers.len() - 1;
    let mut backward = Vec::new();
    for i in (first..layers.len()).rev() {
        let info = &infos[i];
        let in_n = b * numel(&info.input);
        let out_n = b * numel(&info.output);
        let not_first = owner(i) != Some(first);
        let (bytes, why): (u64, String) = match *layers[i] {
            Layer::Relu if i == last => (
                DOT * out_n,
                "the ASM's ReLU: the public code multiplies δ by its ReLU' (40 B per logit); ours \
                 passes δ through, as SecureML's gradient"
                    .into(),
            ),
            Layer::Relu if not_first => (DOT * out_n, "δ ⊙ ReLU': 40 B per element in both".into()),
            Layer::Relu => (
                0,
                "the public code never applies the first layer's ReLU' (its loop stops at layer \
                 1); ours does: 40 B per element"
                    .into(),
            ),
            Layer::MaxPool { window } if not_first => {
                let n = (window.as_square()? * window.as_square()?) as u64;
                (
                    (2 + 16 * n) * out_n + DOT * in_n,
                    format!(
                        "δ ⊙ one-hot: 40 B per input in both; the public code's one-hot is here \
                         ({} B per pooled output), ours in the forward pass",
                        2 + 16 * n
                    ),
                )
            }
            Layer::MaxPool { .. } => (
                0,
                "the public code skips the first layer's pooling derivative; ours routes δ \
                 through the one-hot: 40 B per input"
                    .into(),
            ),
            Layer::Dense { .. } => {
                let (mi, ni) = (numel(&info.input), numel(&info.output));
                let dw = matmul(mi, b, ni);
                let dx = if not_first { matmul(b, ni, mi) } else { 0 };
                (
                    dw + dx,
                    if not_first {
                        "dW = Xᵀ·δ and dX = δ·Wᵀ, every operand masked anew: the same in both"
                    } else {
                        "dW = Xᵀ·δ, every operand masked anew: the same in both"
                    }
                    .into(),
                )
            }
            Layer::Conv2d { kernel, .. } => {
                let (ih, iw, c) = (info.input[0], info.input[1], info.input[2] as u64);
                let (ohw, d) = (
                    (info.output[0] * info.output[1]) as u64,
                    info.output[2] as u64,
                );
                let f2 = (kernel * kernel) as u64;
                let dw = matmul(c * f2, ohw * b, d);
                let dx = if not_first {
                    matmul((ih * iw) as u64 * b, f2 * d, c)
                } else {
                    0
                };
                (
                    dw + dx,
                    if not_first {
                        "the public code masks im2col(X) for dW and the padded im2col of δ for dX \
                         (f² times larger); ours masks X, δ and W themselves"
                    } else {
                        "dW only; the public code masks im2col(X) (f² times larger), ours X and δ"
                    }
                    .into(),
                )
            }
            Layer::Flatten => (0, "a reshape".into()),
            _ => return None,
        };
        backward.push(PublicPhase {
            phase: "backward".into(),
            layer: info.name.clone(),
            bytes,
            why,
        });
    }
    out.extend(backward);
    out.push(PublicPhase {
        phase: "update".into(),
        layer: String::new(),
        bytes: 0,
        why: "local in both: truncation and subtraction (ours folds lr/batch into dW's \
              truncation)"
            .into(),
    });
    out.push(PublicPhase {
        phase: "input".into(),
        layer: String::new(),
        bytes: 0,
        why: "none in either: the public code reads pre-shared files; our data owner (P0) \
              shares the batch and its labels with P1 through their common seed"
            .into(),
    });
    Some(out)
}

/// The public code's bytes per iteration by the closed-form model ([`public_code_phases`]).
pub fn public_code_bytes(model: &str, batch: usize) -> Option<u64> {
    public_code_phases(model, batch).map(|p| p.iter().map(|p| p.bytes).sum())
}

/// What to run: [`TrainPlan::full`] or [`TrainPlan::quick`], then narrow the lists.
#[derive(Clone, Debug)]
pub struct TrainPlan {
    pub models: Vec<String>,
    pub batches: Vec<usize>,
    pub networks: Vec<String>,
    /// One row per layout, the paper's first.
    pub layouts: Vec<Layout>,
    /// Measured runs per cell; the row reports their median.
    pub runs: usize,
    /// Only [`TRAIN_QUICK_MODELS`].
    pub quick: bool,
    /// Session seed, the initial weights' seed and the data owner's shuffle.
    pub seed: u64,
    /// MNIST images; the training split's first images fill the batch.
    pub data: DataSource,
}

impl TrainPlan {
    /// Networks A, B and C at batch 128 on the LAN and the WAN, both layouts, one run each.
    pub fn full() -> Self {
        Self {
            models: TRAIN_MODELS.iter().map(|s| s.to_string()).collect(),
            batches: DEFAULT_TRAIN_BATCHES.to_vec(),
            networks: super::DEFAULT_NETWORKS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            layouts: vec![Layout::Paper, Layout::Default],
            runs: DEFAULT_TRAIN_RUNS,
            quick: false,
            seed: super::DEFAULT_SEED,
            data: DataSource::Bundled,
        }
    }

    /// Network A only.
    pub fn quick() -> Self {
        Self {
            quick: true,
            ..Self::full()
        }
    }

    /// The cells in run order (model, batch, network, layout), after checking every name.
    pub fn cells(&self) -> Result<Vec<Cell>, BenchError> {
        if let Some(name) = self
            .models
            .iter()
            .find(|m| !TRAIN_MODELS.contains(&m.as_str()))
        {
            return Err(BenchError::Config(format!(
                "--models: --train runs {} (the networks the paper trained), not {name:?}",
                TRAIN_MODELS.join(", ")
            )));
        }
        super::grid(
            [&self.models, &self.networks],
            &self.batches,
            &self.layouts,
            self.runs,
            |model, _| !self.quick || TRAIN_QUICK_MODELS.contains(&model),
            self.quick.then(|| {
                format!(
                    "--train --quick runs only model {}",
                    TRAIN_QUICK_MODELS.join(", ")
                )
            }),
        )
    }
}

/// Our traffic of one phase (and layer) in one iteration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhaseCost {
    pub phase: String,
    pub layer: String,
    pub bytes: u64,
    pub messages: u64,
    pub rounds: u64,
}

/// One row of the training bench. Field names are stable (`--train --json` writes an array of
/// these).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainRow {
    pub model: String,
    /// The paper's name for it (`A`-`C`).
    pub paper_network: Option<String>,
    pub batch: usize,
    /// The simulator preset.
    pub network: String,
    pub layout: Layout,
    pub protocol: ProtocolKind,
    pub learning_rate: f64,
    pub runs: usize,
    /// Median virtual seconds of one iteration (input, forward, asm, backward, update).
    pub seconds: f64,
    /// Every run's.
    pub seconds_all: Vec<f64>,
    /// Rounds x the link's one-way latency + the busiest directed link's bytes / its bandwidth:
    /// the iteration's time if computing were free and each round waited for the one before.
    pub network_bound_seconds: f64,
    /// The busiest party's CPU seconds in the iteration (median run).
    pub cpu_seconds: f64,
    /// Bytes of one iteration, all parties summed.
    pub bytes: u64,
    /// Bytes on the busiest directed link in the iteration.
    pub busiest_link_bytes: u64,
    /// Causal rounds of one iteration.
    pub rounds: u64,
    pub messages: u64,
    /// Per phase and layer, one iteration.
    pub phases: Vec<PhaseCost>,
    /// The job's one-off costs: sharing the initial weights and revealing the trained ones.
    pub oneoff_bytes: u64,
    pub oneoff_rounds: u64,
    /// Median virtual seconds of the whole job (one-off costs and the session setup included).
    pub job_seconds: f64,
    /// The paper's seconds per iteration (Tables 3 and 5 over their iterations; batch 128).
    pub paper_seconds: Option<f64>,
    /// `seconds / paper_seconds`: below 1 we are ahead.
    pub ratio_seconds: Option<f64>,
    /// The public code's bytes per iteration where they were measured (batch 1 and 128), by the
    /// closed-form model, which equals the measurement to every printed digit.
    pub public_bytes: Option<u64>,
    /// `bytes / public_bytes`.
    pub ratio_bytes: Option<f64>,
    /// Median wall-clock seconds of the whole job (all three parties on this machine).
    pub wall_seconds: f64,
    pub seed: u64,
}

/// Progress of [`run_train_bench`].
#[derive(Debug)]
pub enum TrainEvent<'a> {
    /// Measured run `run` of `runs` is about to start; `done` of `total` runs are finished.
    Run {
        cell: &'a Cell,
        run: usize,
        runs: usize,
        done: usize,
        total: usize,
    },
    Cell(&'a TrainRow),
}

/// What the trace says of the iteration.
struct IterationTrace {
    seconds: f64,
    cpu_seconds: f64,
    busiest_link_bytes: u64,
}

/// The operation path of the job's first iteration, `train/<epoch>/iter` (the epoch's name is
/// the training job's: `epoch1` or `epoch`), found in the trace.
fn iteration_path(trace: &SessionTrace) -> Option<&str> {
    trace
        .spans
        .iter()
        .map(|s| s.path.as_str())
        .filter(|p| {
            let parts: Vec<&str> = p.split('/').collect();
            matches!(parts.as_slice(), ["train", e, "iter"] if e.starts_with("epoch"))
        })
        .min()
}

fn iteration_trace(trace: &SessionTrace) -> Option<IterationTrace> {
    let path = iteration_path(trace)?;
    let cost = trace.cost(path, |_| false)?;
    let prefix = format!("{path}/");
    let under = |p: &str| p == path || p.starts_with(&prefix);
    let uids: std::collections::HashSet<u64> = trace
        .spans
        .iter()
        .filter(|s| under(&s.path))
        .map(|s| s.uid)
        .collect();
    let mut links: BTreeMap<(u8, u8), u64> = BTreeMap::new();
    for m in trace.sends.iter().filter(|m| uids.contains(&m.span)) {
        *links.entry((m.from, m.to)).or_default() += m.bytes;
    }
    let cpu = trace
        .spans
        .iter()
        .filter(|s| s.path == path)
        .map(|s| s.cpu_ns)
        .max()
        .unwrap_or(0);
    Some(IterationTrace {
        seconds: cost.seconds,
        cpu_seconds: cpu as f64 * 1e-9,
        busiest_link_bytes: links.values().copied().max().unwrap_or(0),
    })
}

fn spec(plan: &TrainPlan, cell: &Cell, data: &Mnist) -> Result<TrainSpec, BenchError> {
    let model = crate::models::by_name(&cell.model).expect("checked name");
    let weights = model
        .init_weights(plan.seed)
        .map_err(|e| BenchError::Config(format!("{}: {e}", cell.model)))?;
    let mut sim = SimConfig::uniform(3, LinkSpec::preset(&cell.network)?);
    sim.seed = plan.seed;
    sim.clock = Clock::Virtual;
    sim.compute = Compute::Measured;
    Ok(TrainSpec {
        protocol: ProtocolKind::SecureNn,
        model_name: cell.model.clone(),
        model,
        layout: cell.layout,
        weights,
        train: Mnist {
            images: data.images[..cell.batch].to_vec(),
            labels: data.labels[..cell.batch].to_vec(),
        },
        test: Mnist::default(),
        epochs: 1,
        batch: cell.batch,
        learning_rate: learning_rate(&cell.model),
        lr_halve_every: None,
        seed: plan.seed,
        iterations: Some(1),
        data_owner: P0,
        model_owner: P1,
        config: PartyConfig {
            recv_timeout: RECV_TIMEOUT,
            fixed: FixedPoint::default(),
        },
        network: Network::Sim(sim),
        network_name: cell.network.clone(),
        checkpoint_dir: None,
        resume: false,
    })
}

fn sum_phases<'a>(layers: impl Iterator<Item = &'a PhaseReport>) -> (u64, u64, u64) {
    layers.fold((0, 0, 0), |(b, m, r), l| {
        (b + l.bytes, m + l.messages, r + l.rounds)
    })
}

fn run_cell(
    plan: &TrainPlan,
    cell: &Cell,
    data: &Mnist,
    on_run: &mut dyn FnMut(usize),
) -> Result<TrainRow, BenchError> {
    let spec = spec(plan, cell, data)?;
    let link = LinkSpec::preset(&cell.network)?;
    let mut reports: Vec<(TrainReport, IterationTrace)> = Vec::with_capacity(plan.runs);
    for i in 0..plan.runs {
        on_run(i);
        let r = run_training(&spec, None).map_err(|error| BenchError::Train {
            cell: cell.to_string(),
            error,
        })?;
        let t = r
            .trace
            .as_deref()
            .and_then(iteration_trace)
            .ok_or_else(|| BenchError::Inconsistent {
                cell: cell.to_string(),
                reason: "no operation trace of the iteration: the training bench needs the \
                         metrics layer (securenn::metrics::layer) installed, as the binary does"
                    .into(),
            })?;
        reports.push((r, t));
    }
    let first = &reports[0].0;
    if let Some((r, _)) = reports
        .iter()
        .find(|(r, _)| (r.bytes_total, r.rounds) != (first.bytes_total, first.rounds))
    {
        return Err(BenchError::Inconsistent {
            cell: cell.to_string(),
            reason: format!(
                "runs with the same seed moved different traffic: {} bytes in {} rounds, then {} in {}",
                first.bytes_total, first.rounds, r.bytes_total, r.rounds
            ),
        });
    }
    if first.iterations != 1 {
        return Err(BenchError::Inconsistent {
            cell: cell.to_string(),
            reason: format!("{} iterations ran, not 1", first.iterations),
        });
    }
    let per_iteration = |l: &&PhaseReport| ITERATION_PHASES.contains(&l.phase.as_str());
    let (bytes, messages, rounds) = sum_phases(first.layers.iter().filter(per_iteration));
    let (oneoff_bytes, _, oneoff_rounds) =
        sum_phases(first.layers.iter().filter(|l| !per_iteration(l)));
    let seconds_all: Vec<f64> = reports.iter().map(|(_, t)| t.seconds).collect();
    let seconds = median(&seconds_all);
    // The run whose iteration time is the median (the lower middle for an even count).
    let mid = {
        let mut idx: Vec<usize> = (0..reports.len()).collect();
        idx.sort_by(|&a, &b| seconds_all[a].total_cmp(&seconds_all[b]));
        idx[(idx.len() - 1) / 2]
    };
    let busiest = reports[0].1.busiest_link_bytes;
    let bandwidth_seconds = if link.bandwidth > 0.0 {
        busiest as f64 / link.bandwidth
    } else {
        0.0
    };
    let paper = paper_train_cell(&cell.model, cell.batch, &cell.network);
    let public = public_code_measured_mb(&cell.model, cell.batch)
        .and_then(|_| public_code_bytes(&cell.model, cell.batch));
    Ok(TrainRow {
        model: cell.model.clone(),
        paper_network: TABLE_3
            .iter()
            .find(|r| r.model == cell.model)
            .map(|r| r.name.to_string()),
        batch: cell.batch,
        network: cell.network.clone(),
        layout: cell.layout,
        protocol: ProtocolKind::SecureNn,
        learning_rate: spec.learning_rate,
        runs: plan.runs,
        seconds,
        seconds_all,
        network_bound_seconds: rounds as f64 * link.latency.as_secs_f64() + bandwidth_seconds,
        cpu_seconds: reports[mid].1.cpu_seconds,
        bytes,
        busiest_link_bytes: busiest,
        rounds,
        messages,
        phases: first
            .layers
            .iter()
            .filter(per_iteration)
            .map(|l| PhaseCost {
                phase: l.phase.clone(),
                layer: l.layer.clone(),
                bytes: l.bytes,
                messages: l.messages,
                rounds: l.rounds,
            })
            .collect(),
        oneoff_bytes,
        oneoff_rounds,
        job_seconds: median(
            &reports
                .iter()
                .map(|(r, _)| r.virtual_seconds.unwrap_or(f64::NAN))
                .collect::<Vec<_>>(),
        ),
        paper_seconds: paper.map(|p| p.seconds),
        ratio_seconds: paper.map(|p| seconds / p.seconds),
        public_bytes: public,
        ratio_bytes: public.map(|p| bytes as f64 / p as f64),
        wall_seconds: median(
            &reports
                .iter()
                .map(|(r, _)| r.wall_seconds)
                .collect::<Vec<_>>(),
        ),
        seed: plan.seed,
    })
}

/// Run every cell of `plan` in order.
pub fn run_train_bench(
    plan: &TrainPlan,
    on_event: &mut dyn FnMut(TrainEvent<'_>),
) -> Result<Vec<TrainRow>, BenchError> {
    let cells = plan.cells()?;
    let most = cells.iter().map(|c| c.batch).max().unwrap_or(1);
    let data = Mnist::load(plan.data.clone(), Split::Train, 0, most)?;
    if data.images.len() < most {
        return Err(BenchError::Config(format!(
            "{} training images do not fill a batch of {most}",
            data.images.len()
        )));
    }
    let total = cells.len() * plan.runs;
    let mut rows = Vec::with_capacity(cells.len());
    for (k, cell) in cells.iter().enumerate() {
        let row = run_cell(plan, cell, &data, &mut |run| {
            on_event(TrainEvent::Run {
                cell,
                run,
                runs: plan.runs,
                done: k * plan.runs + run,
                total,
            })
        })?;
        on_event(TrainEvent::Cell(&row));
        rows.push(row);
    }
    Ok(rows)
}

/// The rows as a text table: per iteration, our virtual seconds beside the paper's and our MB
/// (10^6 B) beside the public code's, each with ours / theirs, the rounds, the network bound
/// and the busiest party's CPU seconds.
pub fn train_table(rows: &[TrainRow]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<5} {:>5} {:<8} {:<8} {:>9} {:>8} {:>6} {:>10} {:>10} {:>6} {:>6} {:>9} {:>8}",
        "net",
        "batch",
        "network",
        "layout",
        "s/iter",
        "paper s",
        "ratio",
        "MB/iter",
        "public MB",
        "ratio",
        "rounds",
        "net bound",
        "cpu s"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{:<5} {:>5} {:<8} {:<8} {:>9.3} {:>8} {:>6} {:>10.3} {:>10} {:>6} {:>6} {:>9.3} {:>8.3}",
            r.paper_network.as_deref().unwrap_or(&r.model),
            r.batch,
            r.network,
            layout_name(r.layout),
            r.seconds,
            opt(r.paper_seconds, 3),
            opt(r.ratio_seconds, 2),
            r.bytes as f64 / 1e6,
            opt(r.public_bytes.map(|b| b as f64 / 1e6), 2),
            opt(r.ratio_bytes, 3),
            r.rounds,
            r.network_bound_seconds,
            r.cpu_seconds
        );
    }
    s
}

/// Our bytes per iteration against the public code's closed-form model, phase by phase (and
/// layer by layer in backward), one table per (model, batch) of `rows`: the paper layout (whose
/// protocols are the paper's; the difference is explained line by line) and, where the grid ran
/// it, the default layout beside it.
pub fn explain_table(rows: &[TrainRow]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let mut seen: Vec<(String, usize)> = Vec::new();
    for r in rows {
        let key = (r.model.clone(), r.batch);
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let find = |layout| {
            rows.iter()
                .find(|x| x.model == r.model && x.batch == r.batch && x.layout == layout)
        };
        let (paper, default) = (find(Layout::Paper), find(Layout::Default));
        let Some(public) = public_code_phases(&r.model, r.batch) else {
            continue;
        };
        let _ = writeln!(
            s,
            "\nnetwork {} batch {}: bytes per iteration, ours against the public code's",
            r.paper_network.as_deref().unwrap_or(&r.model),
            r.batch,
        );
        let _ = writeln!(
            s,
            "{:<9} {:<12} {:>14} {:>14} {:>14} {:>14}  why (paper layout against the public code)",
            "phase", "layer", "paper layout", "public code", "paper - public", "default layout"
        );
        let ours = |row: Option<&TrainRow>, phase: &str, layer: Option<&str>| -> Option<u64> {
            row.map(|row| {
                row.phases
                    .iter()
                    .filter(|p| p.phase == phase && layer.is_none_or(|l| p.layer == l))
                    .map(|p| p.bytes)
                    .sum()
            })
        };
        let num = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        let diff = |a: Option<u64>, b: u64| {
            a.map_or("-".to_string(), |a| (a as i64 - b as i64).to_string())
        };
        let mut covered = (Some(0u64), Some(0u64));
        for p in &public {
            let layer = (p.phase == "backward").then_some(p.layer.as_str());
            let (o, d) = (ours(paper, &p.phase, layer), ours(default, &p.phase, layer));
            covered.0 = covered.0.zip(o).map(|(a, b)| a + b);
            covered.1 = covered.1.zip(d).map(|(a, b)| a + b);
            let _ = writeln!(
                s,
                "{:<9} {:<12} {:>14} {:>14} {:>14} {:>14}  {}",
                p.phase,
                p.layer,
                num(o),
                p.bytes,
                diff(o, p.bytes),
                num(d),
                p.why
            );
        }
        // Traffic the model has no line for (the default layout's ASM ReLU is in asm, so only
        // a phase or layer the public code lacks would land here).
        let rest = |row: Option<&TrainRow>, c: Option<u64>| row.zip(c).map(|(r, c)| r.bytes - c);
        let (ro, rd) = (rest(paper, covered.0), rest(default, covered.1));
        if ro.unwrap_or(0) + rd.unwrap_or(0) > 0 {
            let _ = writeln!(
                s,
                "{:<9} {:<12} {:>14} {:>14} {:>14} {:>14}  layers the public code does not have",
                "other",
                "",
                num(ro),
                0,
                diff(ro, 0),
                num(rd)
            );
        }
        let total: u64 = public.iter().map(|p| p.bytes).sum();
        let (to, td) = (paper.map(|r| r.bytes), default.map(|r| r.bytes));
        let _ = writeln!(
            s,
            "{:<9} {:<12} {:>14} {:>14} {:>14} {:>14}  {}",
            "total",
            "",
            num(to),
            total,
            diff(to, total),
            num(td),
            match public_code_measured_mb(&r.model, r.batch) {
                Some(mb) => format!("the public code measured {mb} MB"),
                None => "the public code was measured at batch 1 and 128 only".into(),
            }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{SendRecord, SpanRecord};

    fn span(party: u8, uid: u64, path: &str, t: (u64, u64), cpu_ns: u64) -> SpanRecord {
        SpanRecord {
            party,
            uid,
            parent: None,
            name: path.rsplit('/').next().unwrap_or("").into(),
            path: path.into(),
            fork: false,
            shape: None,
            depth_start: 0,
            depth_end: 1,
            wall_start: 0,
            wall_end: 0,
            virtual_start: Some(t.0),
            virtual_end: Some(t.1),
            cpu_ns,
        }
    }

    fn send(span: u64, from: u8, to: u8, bytes: u64) -> SendRecord {
        SendRecord {
            span,
            from,
            to,
            key: String::new(),
            bytes,
            depth: 1,
            wall: 0,
            virtual_time: None,
        }
    }

    /// The iteration's span is found whatever the epoch is called, and only its subtree counts.
    #[test]
    fn the_iteration_in_a_trace() {
        for epoch in ["epoch1", "epoch"] {
            let it = format!("train/{epoch}/iter");
            let trace = SessionTrace {
                spans: vec![
                    span(0, 1, "train/weights", (0, 100), 5),
                    span(0, 2, &it, (100, 1_100), 400),
                    span(1, 3, &it, (120, 1_300), 700),
                    span(0, 4, &format!("{it}/forward"), (100, 600), 300),
                    span(1, 5, "train/reveal", (1_300, 1_400), 5),
                ],
                sends: vec![
                    send(1, 1, 0, 1_000_000),
                    send(4, 0, 1, 30),
                    send(4, 0, 1, 20),
                    send(3, 1, 0, 40),
                    send(5, 1, 0, 9_000),
                ],
                recvs: vec![],
            };
            let t = iteration_trace(&trace).unwrap();
            assert_eq!(
                t.busiest_link_bytes, 50,
                "{epoch}: weights and reveal excluded"
            );
            assert!(
                (t.seconds - 1_180e-9).abs() < 1e-15,
                "{epoch}: {}",
                t.seconds
            );
            assert!((t.cpu_seconds - 700e-9).abs() < 1e-15);
        }
        assert!(iteration_trace(&SessionTrace::default()).is_none());
    }
}
