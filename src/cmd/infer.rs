//! `securenn infer`: one secure inference job, three parties in this process.

use super::*;
use securenn::channel::PartyId;
use securenn::data::{DataSource, LabelColumn, Mnist};
use securenn::fixed::FixedPoint;
use securenn::infer::{InferSpec, Layout, Lever, ProtocolKind, Reveal, run_inference};
use securenn::nn::weights_file;
use securenn::party::{Network, PartyConfig};
use securenn::protocol::{TFE_RELU_3, TFE_RELU_9};
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args)]
pub(crate) struct InferArgs {
    /// Protocol to run.
    #[arg(long, value_enum, default_value = "securenn")]
    protocol: ProtocolArg,
    /// Built-in model: the SecureNN paper's networks a-d, d-as-benchmarked (the variant the
    /// paper's code timed), and -avg variants with average pooling for Pond.
    #[arg(long, default_value = "a", value_parser = clap::builder::PossibleValuesParser::new(securenn::models::BUILTIN))]
    model: String,
    /// Weight file (safetensors); default: the trained weights of the model, built into the binary.
    #[arg(long, conflicts_with = "onnx")]
    weights: Option<PathBuf>,
    /// A model of your own: architecture and weights from one ONNX file (opset 13 or later, as
    /// torch.onnx.export, tf2onnx and skl2onnx write them), instead of --model. Inputs: MNIST
    /// CSV images (pixels / 255) for a model of 784 inputs, or --input with N × the model's
    /// input shape as ONNX gives it (NCHW). `securenn inspect FILE` lists what is supported.
    #[arg(long, value_name = "MODEL.onnx", conflicts_with = "model")]
    onnx: Option<PathBuf>,
    /// Network layout and cost accounting.
    #[arg(long, value_enum, default_value = "default")]
    layout: LayoutArg,
    /// What the data owner learns; default: the class where the protocol has a secure argmax.
    #[arg(long, value_enum)]
    reveal: Option<RevealArg>,
    /// Number of images to classify; default: 100 of the bundled sample, every image of a
    /// --data or --input file from --offset on.
    #[arg(long, value_parser = at_least_one)]
    samples: Option<usize>,
    /// Images per secure forward pass.
    #[arg(long, default_value_t = 10, value_parser = at_least_one)]
    batch: usize,
    /// Which images of the bundled sample: its test split (the default: the last fifth of each
    /// digit, ordered round-robin over the digits), its training split, or all in file order. A
    /// --data file is always read whole, in file order (test and train are refused for it).
    #[arg(long, value_enum, conflicts_with = "input")]
    split: Option<SplitArg>,
    /// First image (within the split of the bundled sample; within a file, in file order).
    #[arg(long, default_value_t = 0)]
    offset: usize,
    /// MNIST CSV of your own (gzipped if it ends in .gz): 785 comma-separated columns per line,
    /// 784 pixels 0-255 and the label (see --label-column); a header row is skipped. A file of 10
    /// or more images all labelled alike is refused (its label is likely in the other column).
    #[arg(long, conflicts_with = "input")]
    data: Option<PathBuf>,
    /// Where the label is in each line of the --data file [default: last, as in the bundled
    /// sample].
    #[arg(long, value_enum, requires = "data")]
    label_column: Option<LabelColumnArg>,
    /// Inputs as a float32 .npy tensor of shape N × the model's input shape (or N × its number
    /// of elements), used as given: no scaling.
    #[arg(long, value_name = "FILE.npy")]
    input: Option<PathBuf>,
    /// Labels of the --input tensor: a .npy vector of N integers 0-9 (int64, int32 or uint8);
    /// without it no accuracy is reported.
    #[arg(long, value_name = "FILE.npy", requires = "input")]
    labels: Option<PathBuf>,
    /// Seed of the session's randomness; a random one is drawn (and printed) if absent. The same
    /// seed gives the same shares, bytes and results.
    #[arg(long)]
    seed: Option<u64>,
    /// Fractional bits of the fixed-point encoding, 1 to 18. A product carries twice as many
    /// before it is truncated, and the local truncation of a shared product x fails with
    /// probability about |x|/2^64: from 20 bits the trained networks start to disagree with the
    /// plaintext reference (network C: 99.9% agreement at 20 bits; A: 62% at 28). The run also
    /// checks the model's own range at this precision (see --allow-range-risk).
    #[arg(long, default_value_t = securenn::fixed::DEFAULT_FRAC_BITS)]
    frac_bits: u32,
    /// Run even if the fixed-point range analysis finds that a worst-case product, value or
    /// compared difference reaches 2^63 in the ring (products would wrap, comparisons read the
    /// wrong sign). Without it such a run is refused. The bounds come from the weights and the
    /// input range [0, 1] and are worst cases; warnings (likely truncation failures, weights that
    /// round to zero) are printed either way.
    #[arg(long)]
    allow_range_risk: bool,
    /// Run SecureNN's default layout without these optimisations (comma-separated), to see
    /// what each pays: `narrow-comparisons` (DReLU by ShareConvert and ComputeMSB, 8 rounds,
    /// instead of one masked opening and one PrivateCompare, 3), `bounded-widths` (every
    /// comparison on 64 bits instead of the fewest that hold its input's worst-case bound from
    /// the range analysis), `known-operands` (every input shared and every product a Beaver
    /// product, instead of weights and images staying known to their owner). Same results.
    #[arg(long, value_enum, value_delimiter = ',')]
    without: Vec<Lever>,
    /// Pond's ReLU polynomial.
    #[arg(long, value_enum, default_value = "9")]
    relu_fit: ReluFit,
    /// Party that owns the images and alone learns the predictions.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..3))]
    data_owner: u8,
    /// Party that owns the model weights.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..3))]
    model_owner: u8,
    /// Seconds a party waits for a peer's message before failing.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Transport between the three parties (all in this process).
    #[arg(long, value_enum, default_value = "memory")]
    transport: TransportArg,
    /// Network preset of the simulator: lan (625 MB/s, 0.22 ms RTT: the SecureNN paper's LAN),
    /// wan (40 MB/s, 58 ms RTT: the paper's WAN), wan-tfe (352 Mbit/s, 40 ms RTT), lossy-wan
    /// (the paper's WAN with 1% packet loss). Implies --transport sim.
    #[arg(long)]
    network: Option<String>,
    /// The simulator's clock.
    #[arg(long, value_enum, default_value = "virtual")]
    clock: ClockArg,
    /// What advances a party's virtual clock besides messages.
    #[arg(long, value_enum, default_value = "measured")]
    compute: ComputeArg,
    /// Cores per party on the simulator's virtual clock (default 1, as the paper's servers ran
    /// one process each): a party's parallel sections (matrix products, convolutions, Z_67
    /// packing, large elementwise ops) are charged their makespan on this many cores. The
    /// parties share this machine's rayon pool, so the wall time does not scale with it; the
    /// virtual time does. Needs the simulator (--network or --transport sim).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    cores: Option<u32>,
    #[command(flatten)]
    outputs: ReportArgs,
}

impl InferArgs {
    /// Whether the run writes its operation tree (a report, a trace or JSON).
    pub(crate) fn records_ops(&self) -> bool {
        let o = &self.outputs;
        o.report.is_some() || o.trace.is_some() || o.json.is_some()
    }
}

/// The transport the flags ask for, and its name in reports.
pub(crate) fn network_of(a: &InferArgs, seed: u64) -> Result<(Network, String)> {
    use securenn_transports::sim::{Clock, Compute, LinkSpec, SimConfig};
    match (a.transport, &a.network) {
        (TransportArg::Quic, Some(_)) => {
            bail!("--network chooses a simulated network; it does not apply to --transport quic")
        }
        (TransportArg::Quic | TransportArg::Memory, None) if a.cores.is_some() => bail!(
            "--cores models cores on the simulator's virtual clock; give --network or --transport sim"
        ),
        (TransportArg::Quic, None) => return Ok((Network::QuicLocalhost, "localhost".into())),
        (TransportArg::Memory, None) => return Ok((Network::Memory, "none".into())),
        _ => {}
    }
    let name = a.network.clone().unwrap_or_else(|| "lan".into());
    let link = LinkSpec::preset(&name).context("--network")?;
    let mut cfg = SimConfig::uniform(3, link);
    cfg.seed = seed;
    cfg.clock = match a.clock {
        ClockArg::Virtual => Clock::Virtual,
        ClockArg::Real => Clock::Real,
    };
    cfg.compute = match a.compute {
        ComputeArg::Measured => Compute::Measured,
        ComputeArg::Zero => Compute::Zero,
    };
    cfg.cores = a.cores.unwrap_or(1);
    Ok((Network::Sim(cfg), name))
}

pub(crate) fn run(a: InferArgs) -> Result<()> {
    let outputs = a.outputs.resolve()?;
    outputs.refuse_overwrite(outputs.json.as_deref())?;
    let seed = a.seed.unwrap_or_else(rand::random);
    let fixed = FixedPoint::new(a.frac_bits).context("--frac-bits")?;
    let (model_name, model, weights, weights_name) = match &a.onnx {
        Some(path) => {
            let m = import_onnx(path)?;
            weights_file::check_fixed(&path.display().to_string(), &m.weights, fixed)?;
            (m.name, m.model, m.weights, path.display().to_string())
        }
        None => {
            let model = securenn::models::by_name(&a.model).expect("clap checked the name");
            let (weights, _) =
                weights_file::load_or_bundled(a.weights.as_deref(), &a.model, &model)?;
            weights_file::check_fixed(
                &weights_file::label(a.weights.as_deref(), &a.model),
                &weights,
                fixed,
            )?;
            let name = a
                .weights
                .as_ref()
                .map_or_else(|| "bundled".to_string(), |p| p.display().to_string());
            (a.model.clone(), model, weights, name)
        }
    };
    let (data, images) = load_data(&a, &model, fixed)?;
    let (network, network_name) = network_of(&a, seed)?;
    let spec = InferSpec {
        protocol: match a.protocol {
            ProtocolArg::Pond => ProtocolKind::Pond,
            ProtocolArg::Securenn => ProtocolKind::SecureNn,
            ProtocolArg::Plaintext => ProtocolKind::Plaintext,
        },
        model_name: model_name.clone(),
        model,
        weights,
        data,
        batch: a.batch,
        seed,
        data_owner: PartyId(a.data_owner),
        model_owner: PartyId(a.model_owner),
        config: PartyConfig {
            recv_timeout: Duration::from_secs(a.timeout),
            fixed,
        },
        relu_poly: match a.relu_fit {
            ReluFit::Nine => TFE_RELU_9.to_vec(),
            ReluFit::Three => TFE_RELU_3.to_vec(),
        },
        layout: match a.layout {
            LayoutArg::Default => Layout::Default,
            LayoutArg::Paper => Layout::Paper,
        },
        reveal: a.reveal.map(|r| match r {
            RevealArg::Class => Reveal::Class,
            RevealArg::Logits => Reveal::Logits,
        }),
        network,
        network_name,
        allow_range_risk: a.allow_range_risk,
        without: a.without,
    };
    // The range analysis needs the weights: here every party is in this process.
    let range = spec.range()?;
    for w in &range.warnings {
        eprintln!("warning: fixed-point range: {w}");
    }
    if !a.allow_range_risk {
        range.check()?;
    }
    eprintln!(
        "securenn infer: {} on {} ({} layout, weights {}), {images}, batch {}, seed {seed}",
        spec.protocol.name(),
        match a.onnx {
            Some(_) => format!("model {model_name}"),
            None => format!("network {model_name}"),
        },
        match a.layout {
            LayoutArg::Default => "default",
            LayoutArg::Paper => "paper",
        },
        weights_name,
        a.batch
    );
    let bar = progress_bar(
        spec.data.images.len().div_ceil(a.batch.max(1)),
        "  {bar:40} {pos}/{len} batches, {elapsed_precise} (eta {eta})",
    );
    let b = bar.clone();
    let progress: securenn::infer::Progress = Arc::new(move |done, _| b.set_position(done as u64));
    let report = run_inference(&spec, Some(progress));
    bar.finish_and_clear();
    let report = report?;
    print_report(&report);
    println!("fixed-point range   {}", report.range.summary());
    if outputs.table {
        print_op_table("infer", &report, outputs.depth);
        print!("{}", report.range.table());
    }
    if let Some(path) = &outputs.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    if let Some(path) = &outputs.trace {
        write_trace(path, &[("infer".to_string(), &report)])?;
    }
    Ok(())
}

/// The images the flags choose (`--input`, `--data` or the bundled sample; `--split`,
/// `--offset`, `--samples`), and how to describe them.
fn load_data(
    a: &InferArgs,
    model: &securenn::nn::Model,
    fixed: FixedPoint,
) -> Result<(Mnist, String)> {
    if let Some(npy) = &a.input {
        let all = Mnist::read_npy_inputs(npy, a.labels.as_deref())?;
        let data = securenn::infer::npy_inputs_for(model, &all, a.offset, a.samples, fixed)?;
        let what = format!(
            "{} inputs of {} from offset {}{}",
            data.images.len(),
            npy.display(),
            a.offset,
            if data.labels.is_empty() {
                " (no labels: no accuracy)"
            } else {
                ""
            }
        );
        return Ok((data, what));
    }
    if let Some(why) = model.mnist_mismatch() {
        bail!("the {why}");
    }
    let source = DataSource::file_or_bundled(a.data.as_deref());
    let column = a
        .label_column
        .map_or(LabelColumn::Last, LabelColumnArg::column);
    let count = match source {
        DataSource::Bundled => Some(a.samples.unwrap_or(100)),
        DataSource::File(_) => a.samples,
    };
    let file = Mnist::select(
        &source,
        a.split.map(SplitArg::split),
        column,
        a.offset,
        count,
    )?;
    if let Some(h) = &file.header {
        eprintln!("{source}: the first line is not numbers: skipped it as a header row ({h})");
    }
    let n = file.data.images.len();
    let what = match &source {
        DataSource::Bundled => format!(
            "{n} images of the {} of the bundled sample from offset {}",
            match a.split.unwrap_or(SplitArg::Test) {
                SplitArg::Test => "test split",
                SplitArg::Train => "training split",
                SplitArg::All => "whole file",
            },
            a.offset
        ),
        DataSource::File(p) => format!(
            "{n} images of {} (label {}) from offset {} in file order",
            p.display(),
            if column == LabelColumn::First {
                "first"
            } else {
                "last"
            },
            a.offset
        ),
    };
    Ok((file.data, what))
}
