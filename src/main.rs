//! The `securenn` command line: secure inference jobs (and, as the project grows, scenarios,
//! deployment over QUIC, benchmarks and figures).

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use securenn::channel::PartyId;
use securenn::data::{Mnist, Split, default_mnist_path};
use securenn::fixed::FixedPoint;
use securenn::infer::{InferReport, InferSpec, Layout, ProtocolKind, Reveal, run_inference};
use securenn::nn::weights_file;
use securenn::party::{Network, PartyConfig};
use securenn::protocol::{TFE_RELU_3, TFE_RELU_9};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "securenn",
    version,
    about = "Private machine learning by secure three-party computation (SecureNN and Pond)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a secure inference on MNIST images: three parties in this process over the
    /// in-memory transport, beside the plaintext fixed-point and float references.
    Infer(InferArgs),
    /// Run a scenario file (scenarios/*.toml): a job, its network and faults, and the variants
    /// to compare, one row each.
    Run {
        /// The scenario file.
        file: PathBuf,
        /// Override every run's number of images (CI runs long scenarios short).
        #[arg(long)]
        samples: Option<usize>,
        #[command(flatten)]
        outputs: ReportArgs,
    },
    /// Draw a figure (SVG).
    #[command(subcommand)]
    Plot(PlotCommand),
    /// Train a built-in model in plaintext (f64, Adam, fixed seed) on the training split and write
    /// its weights as safetensors: how the bundled models/*.safetensors were made.
    Train(TrainArgs),
    /// Write a self-signed certificate and key (readable by its owner only) for running the
    /// parties as separate processes over QUIC, and a deployment file template. With `--id N`,
    /// party N's only: what each operator runs on their own machine. Without it, all three keys
    /// on one machine: for local runs and tests only.
    Keygen {
        /// Directory to write into: partyN.key.der, partyN.cert.der and (if it has none)
        /// deploy.toml with `--id N`; party{0,1,2}.{key,cert}.der and deploy.toml without.
        #[arg(long)]
        out: PathBuf,
        /// Write this party's key and certificate only (0, 1 or 2).
        #[arg(long, value_parser = clap::value_parser!(u8).range(0..3))]
        id: Option<u8>,
        /// Overwrite existing keys and certificates (never deploy.toml with `--id`).
        #[arg(long)]
        force: bool,
    },
    /// Run one party of a deployment over QUIC: connect to the others (mutual TLS, every party
    /// accepts exactly the others' certificates), agree seeds, run the deployment's job.
    Party {
        /// Deployment file (see `securenn keygen`).
        #[arg(long)]
        config: PathBuf,
        /// This party's id: 0, 1 or 2.
        #[arg(long, value_parser = clap::value_parser!(u8).range(0..3))]
        id: u8,
        /// This party's private key (default: party<ID>.key.der beside the deployment file).
        #[arg(long)]
        key: Option<PathBuf>,
        /// Write this party's report as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Run a deployment whose [job] has a `seed`: every pair seed, mask and share then
        /// derives from it, and everyone who has the file knows it, so the run has no privacy.
        /// For reproducing an experiment, never with real data.
        #[arg(long)]
        insecure_reproducible: bool,
    },
    /// The SecureNN paper's inference benchmark (Table 7) on the simulated LAN and WAN: our
    /// virtual time, bytes and rounds beside the paper's, with the network-only bound.
    Bench(BenchArgs),
}

#[derive(Subcommand)]
enum PlotCommand {
    /// Exact ReLU beside Pond's polynomial approximations (the [-9, 9] fit tf-encrypted ships and
    /// its [-3, 3] fit) and their error, over [-15, 15].
    Relu {
        /// The SVG file to write (refused if it exists, unless --force).
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        force: bool,
    },
    /// Bytes and rounds per layer of an `infer --json` report, and its time split into compute
    /// and network.
    Costs {
        /// The report (JSON written by `securenn infer --json`).
        report: PathBuf,
        /// The SVG file to write (refused if it exists, unless --force).
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        force: bool,
    },
}

#[derive(clap::Args)]
struct BenchArgs {
    /// A subset that runs in under a minute: batch 1 for every network and batch 128 for A
    /// only, one run per cell (flags below narrow it further).
    #[arg(long)]
    quick: bool,
    /// Only this layout (default: both, as separate rows: the paper's, then ours).
    #[arg(long, value_enum)]
    layout: Option<LayoutArg>,
    /// Models, comma-separated (default: a,b,c,d-as-benchmarked: Table 7's networks).
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
    /// Batch sizes, comma-separated (default: 1,128).
    #[arg(long, value_delimiter = ',')]
    batches: Vec<usize>,
    /// Simulator presets, comma-separated (default: lan,wan: the paper's networks).
    #[arg(long, value_delimiter = ',')]
    networks: Vec<String>,
    /// Measured runs per cell; the median is reported (default: 3, or 1 with --quick).
    #[arg(long)]
    runs: Option<usize>,
    /// Session seed (fixed by default, so bytes, rounds and the network bound are reproducible).
    #[arg(long, default_value_t = securenn::bench::DEFAULT_SEED)]
    seed: u64,
    /// Write the rows as a JSON array to this file (refuses to overwrite without --force).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Overwrite the --json file if it exists.
    #[arg(long)]
    force: bool,
}

#[derive(clap::Args)]
struct TrainArgs {
    /// Built-in model.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(securenn::models::BUILTIN))]
    model: String,
    /// Passes over the training split (default: the trainer's).
    #[arg(long)]
    epochs: Option<usize>,
    /// Minibatch size (default: the trainer's).
    #[arg(long)]
    batch: Option<usize>,
    /// Adam learning rate (default: the trainer's).
    #[arg(long)]
    learning_rate: Option<f64>,
    /// Seed of the initial weights and the shuffling.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// MNIST CSV (gzipped or plain); default: the bundled sample.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Output file; default: the bundled models/<model>.safetensors.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Overwrite the output file if it exists.
    #[arg(long)]
    force: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum ProtocolArg {
    /// tf-encrypted's Pond: Beaver triples from a crypto producer, polynomial ReLU.
    Pond,
    /// SecureNN: exact ReLU and max pooling by secret-shared comparison with a helper party.
    Securenn,
    /// No secrecy: the reference computation on the same fixed-point numbers.
    Plaintext,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SplitArg {
    Test,
    Train,
    All,
}

#[derive(Clone, Copy, ValueEnum)]
enum ReluFit {
    /// tf-encrypted's shipped polynomial, fitted on [-9, 9].
    #[value(name = "9")]
    Nine,
    /// The [-3, 3] fit tf-encrypted briefly shipped.
    #[value(name = "3")]
    Three,
}

#[derive(Clone, Copy, ValueEnum)]
enum LayoutArg {
    /// The model as defined (ReLU before pooling, no ReLU on the logits), with our
    /// optimisations: reused masks, tree maxima and argmax, masked images.
    Default,
    /// The paper's cost layout and accounting: maxpool before ReLU, ReLU after the last layer,
    /// sequential maxima, fresh masks, masked im2col matrices. Reproduces the paper's bytes.
    Paper,
}

#[derive(Clone, Copy, ValueEnum)]
enum RevealArg {
    /// Only the predicted class (secure argmax; SecureNN and plaintext).
    Class,
    /// The logits; the data owner takes the argmax (the only choice for Pond).
    Logits,
}

#[derive(Clone, Copy, ValueEnum)]
enum TransportArg {
    /// In-memory channels: no time on the wire.
    Memory,
    /// The network simulator (see --network, --clock, --compute).
    Sim,
    /// Real QUIC connections on 127.0.0.1 with fresh certificates (all three parties in this
    /// process; `securenn party` runs one party per process).
    Quic,
}

#[derive(Clone, Copy, ValueEnum)]
enum ClockArg {
    /// Per-party virtual clocks: nothing sleeps; reports what three machines would take.
    Virtual,
    /// Also hold every message until its arrival in wall time.
    Real,
}

#[derive(Clone, Copy, ValueEnum)]
enum ComputeArg {
    /// Each party's clock advances by its thread's CPU time.
    Measured,
    /// Only the network counts: the network-bound time.
    Zero,
}

#[derive(clap::Args)]
struct InferArgs {
    /// Protocol to run.
    #[arg(long, value_enum, default_value = "securenn")]
    protocol: ProtocolArg,
    /// Built-in model: the SecureNN paper's networks a-d, d-as-benchmarked (the variant the
    /// paper's code timed), and -avg variants with average pooling for Pond.
    #[arg(long, default_value = "a", value_parser = clap::builder::PossibleValuesParser::new(securenn::models::BUILTIN))]
    model: String,
    /// Weight file (safetensors); default: the bundled trained weights models/<model>.safetensors.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Network layout and cost accounting.
    #[arg(long, value_enum, default_value = "default")]
    layout: LayoutArg,
    /// What the data owner learns; default: the class where the protocol has a secure argmax.
    #[arg(long, value_enum)]
    reveal: Option<RevealArg>,
    /// Number of images to classify.
    #[arg(long, default_value_t = 100)]
    samples: usize,
    /// Images per secure forward pass.
    #[arg(long, default_value_t = 10)]
    batch: usize,
    /// Which images: the test split (the last fifth of each digit, ordered round-robin over the
    /// digits), the training split, or the whole file in file order.
    #[arg(long, value_enum, default_value = "test")]
    split: SplitArg,
    /// First image within the split.
    #[arg(long, default_value_t = 0)]
    offset: usize,
    /// MNIST CSV (gzipped or plain): 784 pixel columns 0-255, then the label.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Seed of the session's randomness; a random one is drawn (and printed) if absent. The same
    /// seed gives the same shares, bytes and results.
    #[arg(long)]
    seed: Option<u64>,
    /// Fractional bits of the fixed-point encoding.
    #[arg(long, default_value_t = securenn::fixed::DEFAULT_FRAC_BITS)]
    frac_bits: u32,
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
    #[command(flatten)]
    outputs: ReportArgs,
}

/// What `infer` and `run` write besides their summary.
#[derive(clap::Args)]
struct ReportArgs {
    /// Write the report as JSON to this file (`run`: an array, one per run; default: the
    /// scenario's `[output] json`); the same as `--report json FILE`.
    #[arg(long)]
    json: Option<PathBuf>,
    /// `table`: print the per-layer, per-operation costs beside the SecureNN paper's; `json
    /// FILE`: write the report, operation tree included, to FILE (the format
    /// `schemas/report.schema.json` describes).
    #[arg(long, num_args = 1..=2, value_names = ["KIND", "FILE"])]
    report: Option<Vec<String>>,
    /// Deepest operation level the table shows (0 is the job, 2 the layers; default: all).
    #[arg(long)]
    depth: Option<usize>,
    /// Write a Chrome trace (chrome://tracing, ui.perfetto.dev) of every party's operations on
    /// one timeline, messages as arrows.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Overwrite the JSON and trace files if they exist.
    #[arg(long)]
    force: bool,
}

/// The transport the flags ask for, and its name in reports.
fn network_of(a: &InferArgs, seed: u64) -> Result<(Network, String)> {
    use securenn_transports::sim::{Clock, Compute, LinkSpec, SimConfig};
    match (a.transport, &a.network) {
        (TransportArg::Quic, Some(_)) => {
            bail!("--network chooses a simulated network; it does not apply to --transport quic")
        }
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
    Ok((Network::Sim(cfg), name))
}

/// Every progress bar of the process, so log lines can be written between their redraws.
static BARS: std::sync::LazyLock<indicatif::MultiProgress> =
    std::sync::LazyLock::new(indicatif::MultiProgress::new);

/// A progress bar on stderr that log output does not garble.
fn progress_bar(len: usize, template: &str) -> indicatif::ProgressBar {
    let bar = BARS.add(indicatif::ProgressBar::new(len as u64));
    bar.set_style(indicatif::ProgressStyle::with_template(template).expect("valid template"));
    bar
}

/// Log lines go to stderr with the progress bars hidden while they are written.
struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        BARS.suspend(|| std::io::Write::write_all(&mut std::io::stderr(), buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::Write::flush(&mut std::io::stderr())
    }
}

fn main() -> std::process::ExitCode {
    use tracing_subscriber::prelude::*;
    let cli = Cli::parse();
    // The metrics layer costs about 5% of a run's time; it is installed where its operation
    // tree is used: scenario runs, the bench (warm queries) and `infer` with a report or trace.
    let metrics = match &cli.command {
        Command::Infer(a) => {
            let o = &a.outputs;
            o.report.is_some() || o.trace.is_some() || o.json.is_some()
        }
        Command::Run { .. } | Command::Bench(_) => true,
        _ => false,
    };
    // RUST_LOG filters the log lines only (default: warnings); the metrics layer sees the
    // operation spans whatever it says.
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_writer(|| LogWriter)
                .with_filter(filter),
        )
        .with(metrics.then(securenn::metrics::layer))
        .init();
    let result = match cli.command {
        Command::Infer(args) => infer(args),
        Command::Train(args) => train(args),
        Command::Bench(args) => bench(args),
        Command::Plot(PlotCommand::Costs { report, out, force }) => {
            plot_costs(&report, &out, force)
        }
        Command::Plot(PlotCommand::Relu { out, force }) => {
            if out.exists() && !force {
                Err(anyhow::anyhow!(
                    "{} exists; pass --force to overwrite it",
                    out.display()
                ))
            } else {
                securenn::plot::relu_figure(&out)
                    .map_err(Into::into)
                    .map(|()| eprintln!("figure written to {}", out.display()))
            }
        }
        Command::Run {
            file,
            samples,
            outputs,
        } => outputs
            .resolve()
            .and_then(|o| run_scenario(&file, samples, &o)),
        Command::Keygen { out, id, force } => keygen(&out, id, force),
        Command::Party {
            config,
            id,
            key,
            json,
            insecure_reproducible,
        } => party(
            &config,
            id,
            key.as_deref(),
            json.as_deref(),
            insecure_reproducible,
        ),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn infer(a: InferArgs) -> Result<()> {
    let outputs = a.outputs.resolve()?;
    outputs.refuse_overwrite(outputs.json.as_deref())?;
    let seed = a.seed.unwrap_or_else(rand::random);
    let fixed = FixedPoint::new(a.frac_bits).context("--frac-bits")?;
    let model = securenn::models::by_name(&a.model).expect("clap checked the name");
    let weights_path = a
        .weights
        .clone()
        .unwrap_or_else(|| securenn::models::default_weights_path(&a.model));
    if !weights_path.exists() && a.weights.is_none() {
        bail!(
            "no trained weights for model {} at {}: train them with `securenn train --model {}`",
            a.model,
            weights_path.display(),
            a.model
        );
    }
    let (weights, _) = weights_file::load(&weights_path, &model)?;
    let path = a.data.clone().unwrap_or_else(default_mnist_path);
    let split = match a.split {
        SplitArg::Test => Split::Test,
        SplitArg::Train => Split::Train,
        SplitArg::All => Split::All,
    };
    let data = Mnist::load(&path, split, a.offset, a.samples)?;
    let (network, network_name) = network_of(&a, seed)?;
    let spec = InferSpec {
        protocol: match a.protocol {
            ProtocolArg::Pond => ProtocolKind::Pond,
            ProtocolArg::Securenn => ProtocolKind::SecureNn,
            ProtocolArg::Plaintext => ProtocolKind::Plaintext,
        },
        model_name: a.model.clone(),
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
    };
    eprintln!(
        "securenn infer: {} on network {} ({} layout, weights {}), {} images of the {:?} split from offset {}, batch {}, seed {seed}",
        spec.protocol.name(),
        a.model,
        match a.layout {
            LayoutArg::Default => "default",
            LayoutArg::Paper => "paper",
        },
        weights_path.display(),
        a.samples,
        a.split,
        a.offset,
        a.batch
    );
    let bar = progress_bar(
        a.samples.div_ceil(a.batch.max(1)),
        "  {bar:40} {pos}/{len} batches, {elapsed_precise} (eta {eta})",
    );
    let b = bar.clone();
    let progress: securenn::infer::Progress = Arc::new(move |done, _| b.set_position(done as u64));
    let report = run_inference(&spec, Some(progress));
    bar.finish_and_clear();
    let report = report?;
    print_report(&report);
    if outputs.table {
        print_op_table("infer", &report, outputs.depth);
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

/// The Chrome trace of labelled runs (those that were traced).
fn write_trace(path: &std::path::Path, reports: &[(String, &InferReport)]) -> Result<()> {
    let traces: Vec<(String, &securenn::metrics::SessionTrace)> = reports
        .iter()
        .filter_map(|(l, r)| r.trace.as_deref().map(|t| (l.clone(), t)))
        .collect();
    let doc = securenn::metrics::chrome::chrome_trace(&traces);
    std::fs::write(path, serde_json::to_string(&doc)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "Chrome trace written to {} (open it in ui.perfetto.dev or chrome://tracing)",
        path.display()
    );
    Ok(())
}

/// `securenn keygen`: party `id`'s identity, or all three for a local run, and what to do next.
fn keygen(out: &std::path::Path, id: Option<u8>, force: bool) -> Result<()> {
    let Some(id) = id else {
        let files = securenn::deploy::keygen(out, force)?;
        println!(
            "all three keys on one machine: for local runs and tests only; for a real deployment \
             each operator runs `securenn keygen --id N`"
        );
        for f in files {
            println!("wrote {}", f.display());
        }
        return Ok(());
    };
    let files = securenn::deploy::keygen_party(out, PartyId(id), force)?;
    for f in &files {
        println!("wrote {}", f.display());
    }
    let config = out.join("deploy.toml");
    if !files.contains(&config) {
        println!("kept {} (never overwritten)", config.display());
    }
    let others: Vec<String> = (0..3u8)
        .filter(|&i| i != id)
        .map(|i| format!("party{i}.cert.der"))
        .collect();
    println!(
        "next: send party{id}.cert.der (public) to the other two operators and put theirs \
         ({}) beside deploy.toml; agree on one deploy.toml (addresses, job) for all three; then \
         run `securenn party --config {} --id {id}`. Never send party{id}.key.der to anyone: \
         whoever has it can act as party {id}.",
        others.join(", "),
        config.display()
    );
    Ok(())
}

fn party(
    config: &std::path::Path,
    id: u8,
    key: Option<&std::path::Path>,
    json: Option<&std::path::Path>,
    insecure_reproducible: bool,
) -> Result<()> {
    use securenn::deploy::{Deployment, FixedSeed};
    eprintln!("securenn party {id}: deployment {}", config.display());
    let seed = if insecure_reproducible {
        if let Some(w) = Deployment::load(config)?.insecure_seed_warning(config) {
            eprintln!("warning: {w}");
        }
        FixedSeed::AllowInsecure
    } else {
        FixedSeed::Refuse
    };
    let r = securenn::deploy::run_party(config, PartyId(id), key, seed)?;
    if let (Some(p), Some(acc)) = (&r.predictions, r.accuracy) {
        println!("predictions         {p:?}");
        println!(
            "accuracy            {:.2}% on {} images",
            100.0 * acc,
            p.len()
        );
    }
    println!(
        "party {id} sent       {} bytes in {} messages ({} UDP bytes on the wire), {} rounds, {:.3} s",
        r.bytes_sent, r.messages_sent, r.quic_wire_bytes, r.rounds, r.wall_seconds
    );
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(&r)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// [`ReportArgs`] checked: `--report table`, or `--report json FILE` (the same as `--json FILE`).
struct Outputs {
    json: Option<PathBuf>,
    table: bool,
    depth: Option<usize>,
    trace: Option<PathBuf>,
    force: bool,
}

impl ReportArgs {
    fn resolve(&self) -> Result<Outputs> {
        let (table, json) = match self.report.as_deref() {
            None => (false, self.json.clone()),
            Some(args) => match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
                ["table"] => (true, self.json.clone()),
                ["json", file] => {
                    if let Some(j) = self
                        .json
                        .as_ref()
                        .filter(|j| *j != std::path::Path::new(file))
                    {
                        bail!(
                            "--report json {file} and --json {} disagree; give one",
                            j.display()
                        );
                    }
                    (false, Some(PathBuf::from(file)))
                }
                ["json"] => bail!("--report json needs a FILE: --report json report.json"),
                ["table", _] => bail!("--report table takes no FILE (it prints to stdout)"),
                [kind, ..] => bail!("--report {kind}: expected `table` or `json FILE`"),
                [] => bail!("--report needs `table` or `json FILE`"),
            },
        };
        Ok(Outputs {
            json,
            table,
            depth: self.depth,
            trace: self.trace.clone(),
            force: self.force,
        })
    }
}

impl Outputs {
    /// Nothing a user wrote is overwritten without `--force`: the JSON file `json` (resolved
    /// by the caller) and the trace.
    fn refuse_overwrite(&self, json: Option<&std::path::Path>) -> Result<()> {
        for path in json.into_iter().chain(self.trace.as_deref()) {
            if path.exists() && !self.force {
                bail!("{} exists; pass --force to overwrite it", path.display());
            }
        }
        Ok(())
    }
}

fn run_scenario(file: &std::path::Path, samples: Option<usize>, outputs: &Outputs) -> Result<()> {
    let scenario = securenn::scenario::Scenario::load(file)?;
    let runs = scenario.runs(file, samples)?;
    let out = outputs.json.clone().or_else(|| {
        scenario
            .output
            .json
            .as_ref()
            .map(|p| file.parent().unwrap_or(std::path::Path::new(".")).join(p))
    });
    outputs.refuse_overwrite(out.as_deref())?;
    eprintln!(
        "securenn run {}: {} ({} run{})",
        file.display(),
        scenario.description,
        runs.len(),
        if runs.len() == 1 { "" } else { "s" }
    );
    let mut reports = Vec::new();
    for run in &runs {
        let spec = run.spec()?;
        let bar = progress_bar(
            run.job.samples.div_ceil(run.job.batch),
            "  {msg} {bar:30} {pos}/{len} batches, {elapsed_precise}",
        );
        bar.set_message(run.label.clone());
        let b = bar.clone();
        let progress: securenn::infer::Progress =
            Arc::new(move |done, _| b.set_position(done as u64));
        let report = run_inference(&spec, Some(progress));
        bar.finish_and_clear();
        let report =
            report.with_context(|| format!("scenario {} run {:?}", file.display(), run.label))?;
        if runs.len() == 1 {
            print_report(&report);
        }
        if outputs.table {
            print_op_table(&run.label, &report, outputs.depth);
        }
        reports.push((run.label.clone(), report));
    }
    if runs.len() > 1 {
        println!(
            "{:<28} {:>9} {:>10} {:>14} {:>7} {:>10} {:>9}",
            "run", "accuracy", "agreement", "bytes", "rounds", "virtual s", "wall s"
        );
        for (label, r) in &reports {
            println!(
                "{:<28} {:>8.2}% {:>9.2}% {:>14} {:>7} {:>10} {:>9.3}",
                label,
                100.0 * r.accuracy,
                100.0 * r.plaintext_agreement,
                r.bytes_total,
                r.rounds,
                r.virtual_seconds.map_or("-".into(), |v| format!("{v:.3}")),
                r.wall_seconds
            );
        }
    }
    if let Some(path) = out {
        let all: Vec<&InferReport> = reports.iter().map(|(_, r)| r).collect();
        std::fs::write(&path, serde_json::to_string_pretty(&all)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("reports written to {}", path.display());
    }
    if let Some(path) = &outputs.trace {
        let labelled: Vec<(String, &InferReport)> =
            reports.iter().map(|(l, r)| (l.clone(), r)).collect();
        write_trace(path, &labelled)?;
    }
    Ok(())
}

/// The per-operation table of one run, with what the sums mean.
fn print_op_table(label: &str, r: &InferReport, depth: Option<usize>) {
    if r.ops.is_empty() {
        println!("{label}: no operation spans were recorded");
        return;
    }
    let clock = if r.virtual_seconds.is_some() {
        "virtual"
    } else {
        "wall"
    };
    println!(
        "\n{label}: {} on {} ({}), {} images in batches of {}: {} B, {} rounds",
        r.protocol.name(),
        r.model,
        r.network,
        r.samples,
        r.batch,
        r.bytes_total,
        r.rounds
    );
    println!("{}", securenn::metrics::table::render(&r.ops, depth, clock));
    println!(
        "bytes: all calls, all links (sub-operations included); rounds: causal rounds one call adds; \
         paper: SecureNN Tables 1-2 for the recorded shape; time: per call, latest end minus latest start, summed"
    );
}

fn plot_costs(report: &std::path::Path, out: &std::path::Path, force: bool) -> Result<()> {
    if out.exists() && !force {
        bail!("{} exists; pass --force to overwrite it", out.display());
    }
    let text =
        std::fs::read_to_string(report).with_context(|| format!("reading {}", report.display()))?;
    let r: InferReport = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a report written by `securenn infer --json`",
            report.display()
        )
    })?;
    securenn::plot::costs_figure(&r, out)?;
    eprintln!("figure written to {}", out.display());
    Ok(())
}

fn bench(a: BenchArgs) -> Result<()> {
    use securenn::bench::{BenchEvent, BenchPlan, run_bench, table};
    if let Some(path) = a.json.as_ref().filter(|p| p.exists() && !a.force) {
        bail!("{} exists; pass --force to overwrite it", path.display());
    }
    let mut plan = if a.quick {
        BenchPlan::quick()
    } else {
        BenchPlan::full()
    };
    if let Some(l) = a.layout {
        plan.layouts = vec![match l {
            LayoutArg::Default => Layout::Default,
            LayoutArg::Paper => Layout::Paper,
        }];
    }
    if !a.models.is_empty() {
        plan.models = a.models;
    }
    if !a.batches.is_empty() {
        plan.batches = a.batches;
    }
    if !a.networks.is_empty() {
        plan.networks = a.networks;
    }
    plan.runs = a.runs.unwrap_or(plan.runs);
    plan.seed = a.seed;
    let cells = plan.cells()?.len();
    eprintln!(
        "securenn bench: {cells} cells, each {} measured run{}, one network-bound run and (default layout) a warm two-query run; SecureNN, virtual clock, seed {}",
        plan.runs,
        if plan.runs == 1 { "" } else { "s" },
        plan.seed
    );
    let bar = progress_bar(
        cells * (plan.runs + 1),
        "  {bar:30} {pos}/{len} runs, {elapsed_precise}: {msg}",
    );
    let rows = run_bench(&plan, &mut |e| match e {
        BenchEvent::Run {
            cell,
            run,
            runs,
            done,
            total,
        } => {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            bar.set_message(if run < runs {
                format!("{cell}, run {}/{runs}", run + 1)
            } else if run == runs {
                format!("{cell}, network bound")
            } else {
                format!("{cell}, warm second query")
            });
        }
        BenchEvent::Cell(r) => {
            let line = format!(
                "  {} batch {} {} {}: {:.3} s (paper {}), {} bytes",
                r.model,
                r.batch,
                r.network,
                securenn::bench::layout_name(r.layout),
                r.seconds,
                r.paper_seconds.map_or("-".into(), |p| format!("{p} s")),
                r.bytes
            );
            // A hidden bar (stderr not a terminal) prints nothing: keep logs informative.
            if bar.is_hidden() {
                eprintln!("{line}");
            } else {
                bar.println(line);
            }
        }
    });
    bar.finish_and_clear();
    let rows = rows?;
    print!("{}", table(&rows));
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("rows written to {}", path.display());
    }
    Ok(())
}

fn train(a: TrainArgs) -> Result<()> {
    use securenn::nn::train::{TrainConfig, accuracy, train};
    let model = securenn::models::by_name(&a.model).expect("clap checked the name");
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| securenn::models::default_weights_path(&a.model));
    if out.exists() && !a.force {
        bail!("{} exists; pass --force to overwrite it", out.display());
    }
    let mut cfg = TrainConfig {
        seed: a.seed,
        ..TrainConfig::default()
    };
    if let Some(e) = a.epochs {
        cfg.epochs = e;
    }
    if let Some(b) = a.batch {
        cfg.batch = b;
    }
    if let Some(lr) = a.learning_rate {
        cfg.learning_rate = lr;
    }
    let path = a.data.clone().unwrap_or_else(default_mnist_path);
    let all = Mnist::read(&path)?;
    let pick = |split| {
        let idx = all.split_order(split);
        Mnist {
            images: idx.iter().map(|&i| all.images[i].clone()).collect(),
            labels: idx.iter().map(|&i| all.labels[i]).collect(),
        }
    };
    let (train_set, test_set) = (pick(Split::Train), pick(Split::Test));
    eprintln!(
        "securenn train: network {} on {} training images of {}, {} epochs, batch {}, Adam lr {}, seed {}",
        a.model,
        train_set.labels.len(),
        path.display(),
        cfg.epochs,
        cfg.batch,
        cfg.learning_rate,
        cfg.seed
    );
    let t0 = std::time::Instant::now();
    let weights = train(&model, &train_set, &cfg, &mut |e| {
        eprintln!(
            "  epoch {:>2}: loss {:.4}, training accuracy {:.2}% ({:.1} s)",
            e.epoch,
            e.loss,
            100.0 * e.train_accuracy,
            t0.elapsed().as_secs_f64()
        )
    })?;
    let test = accuracy(&model, &weights, &test_set)?;
    println!(
        "test accuracy {:.2}% on {} images (float model)",
        100.0 * test,
        test_set.labels.len()
    );
    let meta = std::collections::HashMap::from([
        ("model".to_string(), a.model.clone()),
        ("epochs".to_string(), cfg.epochs.to_string()),
        ("batch".to_string(), cfg.batch.to_string()),
        ("learning_rate".to_string(), cfg.learning_rate.to_string()),
        ("seed".to_string(), cfg.seed.to_string()),
        (
            "train_images".to_string(),
            train_set.labels.len().to_string(),
        ),
        ("test_accuracy".to_string(), format!("{test:.4}")),
        (
            "command".to_string(),
            format!("securenn train --model {} --seed {}", a.model, cfg.seed),
        ),
    ]);
    weights_file::save(&out, &weights, meta, a.force)?;
    eprintln!("weights written to {}", out.display());
    Ok(())
}

fn print_report(r: &InferReport) {
    if r.samples <= 20 {
        println!("sample  label  secure  plaintext  float");
        for i in 0..r.samples {
            println!(
                "{i:>6}  {:>5}  {:>6}  {:>9}  {:>5}",
                r.labels[i], r.predictions[i], r.plaintext_predictions[i], r.float_predictions[i]
            );
        }
        println!();
    }
    println!(
        "accuracy            {:.2}% on {} images (plaintext fixed-point {:.2}%, float {:.2}%)",
        100.0 * r.accuracy,
        r.samples,
        100.0 * r.plaintext_accuracy,
        100.0 * r.float_accuracy
    );
    println!(
        "agreement           {:.2}% with plaintext fixed-point, {:.2}% with float",
        100.0 * r.plaintext_agreement,
        100.0 * r.float_agreement
    );
    if let Some(e) = r.max_logit_error {
        println!(
            "max logit error     {e:.6} vs plaintext fixed-point ({} fractional bits: 1 ulp = {:.6})",
            r.frac_bits,
            1.0 / f64::from(1u32 << r.frac_bits)
        );
    }
    println!(
        "communication       {} bytes ({:.2} MB, {:.3} MB per image) in {} messages, {} rounds (setup: {} bytes)",
        r.bytes_total,
        r.bytes_total as f64 / 1e6,
        r.bytes_total as f64 / 1e6 / r.samples.max(1) as f64,
        r.messages,
        r.rounds,
        r.setup_bytes
    );
    for l in &r.links {
        println!(
            "  P{} -> P{}  {:>14} bytes  {:>6} messages",
            l.from, l.to, l.bytes, l.messages
        );
    }
    if r.bytes_total > 0 {
        println!(
            "per layer           {:>14}  {:>8}  {:>6}",
            "bytes", "messages", "rounds"
        );
        for l in r.layers.iter().filter(|l| l.messages > 0) {
            println!(
                "  {:<17} {:>14}  {:>8}  {:>6}",
                l.name, l.bytes, l.messages, l.rounds
            );
        }
    }
    if let Some(w) = r.quic_wire_bytes {
        println!(
            "QUIC on the wire    {w} bytes of UDP payload for {} bytes of envelopes ({:+.1}%)",
            r.bytes_total,
            100.0 * (w as f64 / r.bytes_total.max(1) as f64 - 1.0)
        );
    }
    if let Some(v) = r.virtual_seconds {
        println!(
            "virtual time        {v:.3} s on the simulated {} network (three machines, one party each)",
            r.network
        );
    }
    println!(
        "time                {:.3} s wall, {:.3} s CPU ({:.2} cores busy on average)",
        r.wall_seconds,
        r.cpu_seconds,
        r.cpu_seconds / r.wall_seconds.max(1e-9)
    );
    if r.party_cpu_seconds.len() == 3 {
        let p = &r.party_cpu_seconds;
        println!(
            "party CPU           P0 {:.3} s, P1 {:.3} s, P2 {:.3} s",
            p[0], p[1], p[2]
        );
    }
}
