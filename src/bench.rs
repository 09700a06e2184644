//! `securenn bench`: the SecureNN paper's inference benchmark (Table 7: networks A-D, batch 1
//! and 128, its LAN and WAN) rerun on the network simulator's virtual clock, each cell beside the
//! paper's seconds and bytes, with the ratio and the network-only lower bound.
//!
//! A cell is one (model, batch, network, layout). It runs `runs` times with the simulator's
//! measured compute (each party's clock advances by its thread's CPU time) and reports the median
//! virtual time, then once more with [`Compute::Zero`] for the network bound: the time the same
//! messages take on that network if computing were free. The network part of the simulation is
//! deterministic for a seed, so one bound run is enough; bytes and rounds do not depend on the
//! run and are checked to be equal across the runs.
//!
//! `bytes` is the quantity the paper counts: one forward pass plus the secure argmax, all parties
//! summed, without revealing the class to the data owner (8 bytes per image, in `reveal_bytes`).
//! In the paper layout it equals the paper's Table 7 to the byte. `seconds`, `rounds` and
//! `messages` cover the whole job, reveal included.
//!
//! [`train`] is the training bench (`bench --train`): one SGD iteration of networks A, B and C
//! beside the paper's time per iteration and the public code's bytes. [`compare`] puts the rows
//! beside another engine's (`bench --compare FILE`).

pub mod compare;
pub mod train;

use crate::channel::PartyId;
use crate::data::{DataError, DataSource, Mnist, Split};
use crate::fixed::FixedPoint;
use crate::infer::{
    InferError, InferReport, InferSpec, Layout, Lever, ProtocolKind, run_inference,
};
use crate::nn::weights_file::{self, WeightFileError};
use crate::party::{Network, PartyConfig};
use crate::protocol::TFE_RELU_9;
use securenn_transports::sim::{Clock, Compute, LinkSpec, SimConfig, SimError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Models `--models` accepts: the paper's four networks, D being the variant the paper's code
/// timed (its bytes are the paper's to the byte), and D as the paper describes it (no paper
/// figures: the paper never timed it).
pub const MODELS: &[&str] = &["a", "b", "c", "d-as-benchmarked", "d"];

/// The default models: the four networks of the paper's Table 7.
pub const DEFAULT_MODELS: &[&str] = &["a", "b", "c", "d-as-benchmarked"];

/// The default batch sizes: Table 7's single image and batch of 128.
pub const DEFAULT_BATCHES: &[usize] = &[1, 128];

/// The default simulator presets: the paper's LAN (625 MB/s, 0.22 ms RTT) and WAN (40 MB/s,
/// 58 ms RTT).
pub const DEFAULT_NETWORKS: &[&str] = &["lan", "wan"];

/// Runs per cell in the full bench: the median of three damps a noisy neighbour on a shared
/// machine while keeping the full grid at a few minutes per run of every cell.
pub const DEFAULT_RUNS: usize = 3;

/// Runs per cell with `--quick`: one, so the quick grid stays under a minute.
pub const QUICK_RUNS: usize = 1;

/// With `--quick`, batches above 1 run only for these models (network A's batch 128 takes a
/// fraction of a second; B's and C's move a gigabyte or more each).
pub const QUICK_LARGE_BATCH_MODELS: &[&str] = &["a"];

/// The default session seed: fixed, so bytes, rounds and the network bound are reproducible.
pub const DEFAULT_SEED: u64 = 1;

/// How long a party waits for a peer: generous, since a batch-128 convolution of network C can
/// take tens of seconds of one party's CPU on a busy 2-core machine.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("--models: unknown model {name:?}; the bench runs {}", MODELS.join(", "))]
    UnknownModel { name: String },
    #[error("--networks: unknown network {name:?}; the simulator's presets are {known}")]
    UnknownNetwork { name: String, known: String },
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Weights(#[from] WeightFileError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Sim(#[from] SimError),
    /// The message holds the run's error (not chained as a `source`: `{e:#}` prints it once).
    #[error("{cell}: {error}")]
    Run { cell: String, error: InferError },
    #[error("{cell}: {reason}")]
    Inconsistent { cell: String, reason: String },
    /// A training cell's error (as [`BenchError::Run`]).
    #[error("{cell}: {error}")]
    Train {
        cell: String,
        error: crate::training::TrainError,
    },
}

/// The paper's figures for one cell (Table 7; MB there are 10^6 bytes).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PaperCell {
    /// The paper's name of the network: `A`, `B`, `C` or `D`.
    pub network: &'static str,
    pub seconds: f64,
    pub bytes: u64,
}

/// One network of the paper's Table 7: seconds on its LAN and WAN and MB (10^6 bytes), each at
/// batch 1 and 128.
struct Table7Row {
    model: &'static str,
    name: &'static str,
    lan: [f64; 2],
    wan: [f64; 2],
    mb: [f64; 2],
}

/// Table 7 of the SecureNN paper (reference §0).
const TABLE_7: &[Table7Row] = &[
    Table7Row {
        model: "a",
        name: "A",
        lan: [0.043, 0.38],
        wan: [2.43, 2.79],
        mb: [2.1, 29.0],
    },
    Table7Row {
        model: "b",
        name: "B",
        lan: [0.13, 7.18],
        wan: [3.93, 21.99],
        mb: [8.86, 1066.0],
    },
    Table7Row {
        model: "c",
        name: "C",
        lan: [0.23, 10.82],
        wan: [4.08, 30.45],
        mb: [18.94, 1550.0],
    },
    Table7Row {
        model: "d-as-benchmarked",
        name: "D",
        lan: [0.076, 2.6],
        wan: [3.06, 8.04],
        mb: [4.05, 317.7],
    },
];

/// The paper's seconds and bytes for `model` at `batch` on `network`, if it measured that cell
/// (models a, b, c and d-as-benchmarked; batch 1 or 128; `lan` or `wan`).
pub fn paper_cell(model: &str, batch: usize, network: &str) -> Option<PaperCell> {
    let row = TABLE_7.iter().find(|r| r.model == model)?;
    let i = match batch {
        1 => 0,
        128 => 1,
        _ => return None,
    };
    let seconds = match network {
        "lan" => row.lan[i],
        "wan" => row.wan[i],
        _ => return None,
    };
    Some(PaperCell {
        network: row.name,
        seconds,
        bytes: (row.mb[i] * 1e6).round() as u64,
    })
}

/// The layout as `--layout` spells it.
pub fn layout_name(l: Layout) -> &'static str {
    match l {
        Layout::Default => "default",
        Layout::Paper => "paper",
    }
}

/// One cell of the grid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cell {
    pub model: String,
    pub batch: usize,
    pub network: String,
    pub layout: Layout,
    /// Cores per party on the virtual clock ([`SimConfig::cores`]).
    pub cores: u32,
    /// A default-layout optimisation this cell runs without (`--ablate`).
    pub without: Option<Lever>,
}

impl std::fmt::Display for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} batch {} {} {} layout",
            self.model,
            self.batch,
            self.network,
            layout_name(self.layout)
        )?;
        if let Some(l) = self.without {
            write!(f, " without {l}")?;
        }
        match self.cores {
            1 => Ok(()),
            n => write!(f, ", {n} cores"),
        }
    }
}

/// What to run. [`BenchPlan::full`] and [`BenchPlan::quick`] give the defaults; the lists can be
/// narrowed or replaced before calling [`BenchPlan::cells`].
#[derive(Clone, Debug)]
pub struct BenchPlan {
    pub models: Vec<String>,
    pub batches: Vec<usize>,
    pub networks: Vec<String>,
    /// Each cell runs in every layout listed, one row each, so an optimisation's effect is the
    /// difference between adjacent rows. Default: the paper's layout, then ours.
    pub layouts: Vec<Layout>,
    /// Measured runs per cell; the row reports their median.
    pub runs: usize,
    /// Batches above 1 only for [`QUICK_LARGE_BATCH_MODELS`].
    pub quick: bool,
    /// Cores per party; every cell runs at each, one row each (default: 1).
    pub cores: Vec<u32>,
    /// Default-layout optimisations to measure: every default-layout cell also runs without
    /// each of these, one row each, beside the row with all of them (default: none).
    pub ablate: Vec<Lever>,
    pub seed: u64,
    /// MNIST images; the first `batch` images of the test split are a cell's input.
    pub data: DataSource,
}

impl BenchPlan {
    /// The whole grid: Table 7's four networks at batch 1 and 128 on the LAN and the WAN, in
    /// both layouts, [`DEFAULT_RUNS`] runs per cell.
    pub fn full() -> Self {
        Self {
            models: DEFAULT_MODELS.iter().map(|s| s.to_string()).collect(),
            batches: DEFAULT_BATCHES.to_vec(),
            networks: DEFAULT_NETWORKS.iter().map(|s| s.to_string()).collect(),
            layouts: vec![Layout::Paper, Layout::Default],
            runs: DEFAULT_RUNS,
            quick: false,
            cores: vec![1],
            ablate: Vec::new(),
            seed: DEFAULT_SEED,
            data: DataSource::Bundled,
        }
    }

    /// The quick grid: every network at batch 1 and network A at 128, LAN and WAN, both layouts,
    /// one run each (under a minute in a release build on a 2-core machine).
    pub fn quick() -> Self {
        Self {
            runs: QUICK_RUNS,
            quick: true,
            ..Self::full()
        }
    }

    /// The cells in run order (model, batch, network, then layout, so that the layouts of a cell
    /// sit side by side), after checking every name and number.
    pub fn cells(&self) -> Result<Vec<Cell>, BenchError> {
        if let Some(name) = self.models.iter().find(|m| !MODELS.contains(&m.as_str())) {
            return Err(BenchError::UnknownModel { name: name.clone() });
        }
        if self.cores.is_empty() || self.cores.contains(&0) {
            return Err(BenchError::Config(
                "--cores: a party has at least 1 core".into(),
            ));
        }
        let cells = grid(
            [&self.models, &self.networks],
            &self.batches,
            &self.layouts,
            self.runs,
            |model, batch| !(self.quick && batch > 1 && !QUICK_LARGE_BATCH_MODELS.contains(&model)),
            self.quick.then(|| {
                format!(
                    "--quick runs batches above 1 only for model {}",
                    QUICK_LARGE_BATCH_MODELS.join(", ")
                )
            }),
        )?;
        // A default-layout cell's ablations follow it, and its cores sit side by side, like
        // its layouts.
        let ablate = dedup(&self.ablate);
        let cores = dedup(&self.cores);
        Ok(cells
            .into_iter()
            .flat_map(|c| {
                let levers: Vec<Option<Lever>> = match c.layout {
                    Layout::Default => [None]
                        .into_iter()
                        .chain(ablate.iter().copied().map(Some))
                        .collect(),
                    Layout::Paper => vec![None],
                };
                levers.into_iter().map(move |without| Cell {
                    without,
                    ..c.clone()
                })
            })
            .flat_map(|c| {
                cores
                    .iter()
                    .map(move |&cores| Cell { cores, ..c.clone() })
                    .collect::<Vec<_>>()
            })
            .collect())
    }
}

/// The cells of a grid of `[models, networks]`, `batches` and `layouts` in run order (model,
/// batch, network, then layout, so that the layouts of a cell sit side by side), after checking
/// the networks, batches and runs (the caller checks the models: which it runs differs);
/// `keep(model, batch)` drops what a quick grid skips, and `quick` says what it runs when that
/// leaves nothing.
pub(crate) fn grid(
    [models, networks]: [&[String]; 2],
    batches: &[usize],
    layouts: &[Layout],
    runs: usize,
    keep: impl Fn(&str, usize) -> bool,
    quick: Option<String>,
) -> Result<Vec<Cell>, BenchError> {
    let known = LinkSpec::preset_names();
    if let Some(name) = networks.iter().find(|n| !known.contains(n)) {
        return Err(BenchError::UnknownNetwork {
            name: name.clone(),
            known: known.join(", "),
        });
    }
    if batches.contains(&0) {
        return Err(BenchError::Config(
            "--batches: a batch is at least 1".into(),
        ));
    }
    if runs == 0 {
        return Err(BenchError::Config("--runs must be at least 1".into()));
    }
    let mut cells = Vec::new();
    for model in dedup(models) {
        for &batch in &dedup(batches) {
            if !keep(&model, batch) {
                continue;
            }
            for network in dedup(networks) {
                for &layout in &dedup(layouts) {
                    cells.push(Cell {
                        model: model.clone(),
                        batch,
                        network: network.clone(),
                        layout,
                        cores: 1,
                        without: None,
                    });
                }
            }
        }
    }
    if cells.is_empty() {
        return Err(BenchError::Config(format!(
            "nothing to run{}",
            quick.map_or(String::new(), |q| format!(": {q}"))
        )));
    }
    Ok(cells)
}

fn dedup<T: Clone + PartialEq>(v: &[T]) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for x in v {
        if !out.contains(x) {
            out.push(x.clone());
        }
    }
    out
}

/// One row of the bench: a cell's measurements beside the paper's. Field names are stable
/// (`--json` writes an array of these).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchRow {
    /// The built-in model (`a`, `b`, `c`, `d-as-benchmarked`, `d`).
    pub model: String,
    /// The paper's name for it (`A`-`D`), if the paper measured it.
    pub paper_network: Option<String>,
    pub batch: usize,
    /// The simulator preset.
    pub network: String,
    pub layout: Layout,
    /// Cores per party on the virtual clock (parallel sections charged their makespan on this
    /// many cores); 1 in rows written before the field existed.
    #[serde(default = "one_core")]
    pub cores: u32,
    /// The default-layout optimisation this row ran without (`--ablate`); null: all on.
    #[serde(default)]
    pub without: Option<Lever>,
    pub protocol: ProtocolKind,
    /// Measured runs behind `seconds`.
    pub runs: usize,
    /// Median virtual seconds of the runs (what three machines on that network would take).
    pub seconds: f64,
    /// Every run's virtual seconds, in run order.
    pub seconds_all: Vec<f64>,
    /// Virtual seconds with free compute: the network's lower bound for these messages.
    pub network_bound_seconds: f64,
    /// One forward pass plus the secure argmax, all parties summed: the paper's quantity.
    pub bytes: u64,
    /// Revealing the class to the data owner (not counted by the paper).
    pub reveal_bytes: u64,
    /// Of `bytes`, the model owner's one-time weights stage: sharing the weights (paper
    /// layout) or the kernels' masked copies to the helper (default layout); 0 in rows written
    /// before the field existed.
    #[serde(default)]
    pub weights_bytes: u64,
    /// Causal rounds of the job (reveal included).
    pub rounds: u64,
    pub messages: u64,
    pub paper_seconds: Option<f64>,
    pub paper_bytes: Option<u64>,
    /// `seconds / paper_seconds`: below 1 we are ahead.
    pub ratio_seconds: Option<f64>,
    /// `bytes / paper_bytes`.
    pub ratio_bytes: Option<f64>,
    /// Median wall-clock seconds of the measured runs (all three parties on this machine).
    pub wall_seconds: f64,
    /// A second query of the same session, the model's masked weights cached from the first
    /// (Pond's trick; default layout only, and only when the metrics layer is installed, as in
    /// the binary): its virtual seconds, bytes (reveal excluded, like `bytes`) and rounds.
    pub warm_seconds: Option<f64>,
    pub warm_bytes: Option<u64>,
    pub warm_rounds: Option<u64>,
    pub seed: u64,
}

fn one_core() -> u32 {
    1
}

/// Progress of [`run_bench`], for a progress display.
#[derive(Debug)]
pub enum BenchEvent<'a> {
    /// A run is about to start: `run` of `runs` measured runs, or the network-bound run
    /// (`run == runs`); `done` runs of `total` in the whole bench are finished.
    Run {
        cell: &'a Cell,
        run: usize,
        runs: usize,
        done: usize,
        total: usize,
    },
    /// A cell is finished.
    Cell(&'a BenchRow),
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Everything a cell's runs share: the model's weights and the images.
struct Inputs {
    weights: BTreeMap<String, crate::nn::Weights>,
    data: Mnist,
}

impl Inputs {
    fn load(plan: &BenchPlan, cells: &[Cell]) -> Result<Self, BenchError> {
        let mut weights = BTreeMap::new();
        for c in cells {
            if weights.contains_key(&c.model) {
                continue;
            }
            let model = crate::models::by_name(&c.model).expect("checked name");
            let (w, _) = weights_file::load_bundled(&c.model, &model)?;
            weights.insert(c.model.clone(), w);
        }
        // Two queries for the warm measurement; where the test split holds fewer images than
        // that (batch 512 of the bundled 1,000), the second query repeats the first's images:
        // bytes and rounds do not depend on them.
        let batch = cells.iter().map(|c| c.batch).max().unwrap_or(1);
        let data = match Mnist::load(plan.data.clone(), Split::Test, 0, 2 * batch) {
            Ok(d) => d,
            Err(_) => Mnist::load(plan.data.clone(), Split::Test, 0, batch)?,
        };
        Ok(Self { weights, data })
    }

    /// `queries` batches of the cell's size, one after the other in one session.
    fn spec(
        &self,
        cell: &Cell,
        seed: u64,
        compute: Compute,
        queries: usize,
    ) -> Result<InferSpec, BenchError> {
        let mut sim = SimConfig::uniform(3, LinkSpec::preset(&cell.network)?);
        sim.seed = seed;
        sim.clock = Clock::Virtual;
        sim.compute = compute;
        sim.cores = cell.cores;
        Ok(InferSpec {
            protocol: ProtocolKind::SecureNn,
            model_name: cell.model.clone(),
            model: crate::models::by_name(&cell.model).expect("checked name"),
            weights: self.weights[&cell.model].clone(),
            data: Mnist {
                images: cycle(&self.data.images, cell.batch * queries),
                labels: cycle(&self.data.labels, cell.batch * queries),
            },
            batch: cell.batch,
            seed,
            data_owner: PartyId(0),
            model_owner: PartyId(1),
            config: PartyConfig {
                recv_timeout: RECV_TIMEOUT,
                fixed: FixedPoint::default(),
            },
            relu_poly: TFE_RELU_9.to_vec(),
            layout: cell.layout,
            reveal: None,
            network: Network::Sim(sim),
            network_name: cell.network.clone(),
            allow_range_risk: false,
            without: cell.without.into_iter().collect(),
        })
    }
}

/// The first `n` items of `v` repeated as often as it takes (`v` holds at least one query's).
fn cycle<T: Clone>(v: &[T], n: usize) -> Vec<T> {
    v.iter().cycle().take(n).cloned().collect()
}

/// Whether a cell gets the warm second query: the default layout caches masked weights across
/// queries of a session; the paper's masks everything anew, so a second query costs the same.
fn warm_run(cell: &Cell) -> bool {
    cell.layout == Layout::Default
}

/// Run one cell: `runs` measured runs, one network-bound run and, in the default layout, one
/// run of two queries for the warm one.
fn run_cell(
    inputs: &Inputs,
    cell: &Cell,
    runs: usize,
    seed: u64,
    on_run: &mut dyn FnMut(usize),
) -> Result<BenchRow, BenchError> {
    let run_queries = |compute, queries| -> Result<InferReport, BenchError> {
        run_inference(&inputs.spec(cell, seed, compute, queries)?, None).map_err(|error| {
            BenchError::Run {
                cell: cell.to_string(),
                error,
            }
        })
    };
    let run = |compute| run_queries(compute, 1);
    let virtual_seconds = |r: &InferReport| {
        r.virtual_seconds.ok_or_else(|| BenchError::Inconsistent {
            cell: cell.to_string(),
            reason: "the simulator reported no virtual time".into(),
        })
    };
    let mut reports = Vec::with_capacity(runs);
    for i in 0..runs {
        on_run(i);
        reports.push(run(Compute::Measured)?);
    }
    on_run(runs);
    let bound = run(Compute::Zero)?;
    let warm = if warm_run(cell) {
        on_run(runs + 1);
        let r = run_queries(Compute::Measured, 2)?;
        r.trace
            .as_ref()
            .and_then(|t| t.cost("infer/batch~1", |p| p.starts_with("infer/batch~1/reveal")))
    } else {
        None
    };
    let first = &reports[0];
    if let Some(r) = reports
        .iter()
        .chain([&bound])
        .find(|r| (r.bytes_total, r.rounds) != (first.bytes_total, first.rounds))
    {
        return Err(BenchError::Inconsistent {
            cell: cell.to_string(),
            reason: format!(
                "runs with the same seed moved different traffic: {} bytes in {} rounds, then {} in {}",
                first.bytes_total, first.rounds, r.bytes_total, r.rounds
            ),
        });
    }
    let seconds_all = reports
        .iter()
        .map(virtual_seconds)
        .collect::<Result<Vec<_>, _>>()?;
    let seconds = median(&seconds_all);
    let reveal_bytes: u64 = first
        .layers
        .iter()
        .filter(|l| l.name == "reveal")
        .map(|l| l.bytes)
        .sum();
    let bytes = first.bytes_total - reveal_bytes;
    let weights_bytes: u64 = first
        .layers
        .iter()
        .filter(|l| l.name == "weights")
        .map(|l| l.bytes)
        .sum();
    let paper = paper_cell(&cell.model, cell.batch, &cell.network);
    Ok(BenchRow {
        model: cell.model.clone(),
        paper_network: paper.map(|p| p.network.to_string()),
        batch: cell.batch,
        network: cell.network.clone(),
        layout: cell.layout,
        cores: cell.cores,
        without: cell.without,
        protocol: ProtocolKind::SecureNn,
        runs,
        seconds,
        seconds_all,
        network_bound_seconds: virtual_seconds(&bound)?,
        bytes,
        reveal_bytes,
        weights_bytes,
        rounds: first.rounds,
        messages: first.messages,
        paper_seconds: paper.map(|p| p.seconds),
        paper_bytes: paper.map(|p| p.bytes),
        ratio_seconds: paper.map(|p| seconds / p.seconds),
        ratio_bytes: paper.map(|p| bytes as f64 / p.bytes as f64),
        wall_seconds: median(&reports.iter().map(|r| r.wall_seconds).collect::<Vec<_>>()),
        warm_seconds: warm.map(|w| w.seconds),
        warm_bytes: warm.map(|w| w.bytes),
        warm_rounds: warm.map(|w| w.rounds),
        seed,
    })
}

/// Run every cell of `plan` in order, calling `on_event` before each run and after each cell.
pub fn run_bench(
    plan: &BenchPlan,
    on_event: &mut dyn FnMut(BenchEvent<'_>),
) -> Result<Vec<BenchRow>, BenchError> {
    let cells = plan.cells()?;
    let inputs = Inputs::load(plan, &cells)?;
    let per_cell = |c: &Cell| plan.runs + 1 + warm_run(c) as usize;
    let total = cells.iter().map(per_cell).sum();
    let mut done = 0;
    let mut rows = Vec::with_capacity(cells.len());
    for cell in &cells {
        let row = run_cell(&inputs, cell, plan.runs, plan.seed, &mut |run| {
            on_event(BenchEvent::Run {
                cell,
                run,
                runs: plan.runs,
                done: done + run,
                total,
            })
        })?;
        done += per_cell(cell);
        on_event(BenchEvent::Cell(&row));
        rows.push(row);
    }
    Ok(rows)
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

/// The rows as a text table: our virtual seconds and the network bound beside the paper's
/// seconds, our MB (10^6 bytes) beside the paper's, each with ours / paper.
pub fn table(rows: &[BenchRow]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    // A cores column only when some row has more than one, a without column only when some
    // row ran without a lever.
    let cores = rows.iter().any(|r| r.cores != 1);
    let without = rows.iter().any(|r| r.without.is_some());
    let _ = write!(
        s,
        "{:<17} {:>5} {:<8} {:<8} {:>9} {:>9} {:>8} {:>6} {:>10} {:>9} {:>6} {:>6} {:>8} {:>9}",
        "model",
        "batch",
        "network",
        "layout",
        "seconds",
        "net bound",
        "paper s",
        "ratio",
        "MB",
        "paper MB",
        "ratio",
        "rounds",
        "warm s",
        "warm MB"
    );
    let _ = writeln!(
        s,
        "{}{}",
        if cores { " cores" } else { "" },
        if without { " without" } else { "" }
    );
    for r in rows {
        let _ = write!(
            s,
            "{:<17} {:>5} {:<8} {:<8} {:>9.3} {:>9.3} {:>8} {:>6} {:>10.3} {:>9} {:>6} {:>6} {:>8} {:>9}",
            r.model,
            r.batch,
            r.network,
            layout_name(r.layout),
            r.seconds,
            r.network_bound_seconds,
            opt(r.paper_seconds, 3),
            opt(r.ratio_seconds, 2),
            r.bytes as f64 / 1e6,
            opt(r.paper_bytes.map(|b| b as f64 / 1e6), 2),
            opt(r.ratio_bytes, 3),
            r.rounds,
            opt(r.warm_seconds, 3),
            opt(r.warm_bytes.map(|b| b as f64 / 1e6), 3)
        );
        if cores {
            let _ = write!(s, " {:>5}", r.cores);
        }
        if without {
            let _ = write!(s, " {}", r.without.map_or("-", Lever::name));
        }
        let _ = writeln!(s);
    }
    s
}
