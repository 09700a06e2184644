//! The `securenn` command line: secure inference jobs (and, as the project grows, scenarios,
//! deployment over QUIC, benchmarks and figures).

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use securenn::channel::PartyId;
use securenn::data::{Mnist, Split, default_mnist_path};
use securenn::fixed::FixedPoint;
use securenn::infer::{InferReport, InferSpec, ProtocolKind, run_inference};
use securenn::party::PartyConfig;
use securenn::protocol::{TFE_RELU_3, TFE_RELU_9};
use std::io::Write;
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

#[derive(clap::Args)]
struct InferArgs {
    /// Protocol to run.
    #[arg(long, value_enum, default_value = "pond")]
    protocol: ProtocolArg,
    /// Built-in model.
    #[arg(long, default_value = "small", value_parser = clap::builder::PossibleValuesParser::new(securenn::models::BUILTIN))]
    model: String,
    /// Number of images to classify.
    #[arg(long, default_value_t = 20)]
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
    /// Seed of the session's randomness and of the untrained demo weights; a random one is
    /// drawn (and printed) if absent. The same seed gives the same shares, bytes and results.
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
    /// Write the report as JSON to this file (refuses to overwrite without --force).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Overwrite the --json file if it exists.
    #[arg(long)]
    force: bool,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Command::Infer(args) => infer(args),
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
    if let Some(path) = a.json.as_ref().filter(|p| p.exists() && !a.force) {
        bail!("{} exists; pass --force to overwrite it", path.display());
    }
    let seed = a.seed.unwrap_or_else(rand::random);
    let fixed = FixedPoint::new(a.frac_bits).context("--frac-bits")?;
    let model = securenn::models::by_name(&a.model).expect("clap checked the name");
    let weights = model.init_weights(seed)?;
    let path = a.data.clone().unwrap_or_else(default_mnist_path);
    let split = match a.split {
        SplitArg::Test => Split::Test,
        SplitArg::Train => Split::Train,
        SplitArg::All => Split::All,
    };
    let data = Mnist::load(&path, split, a.offset, a.samples)?;
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
    };
    eprintln!(
        "securenn infer: {} on model {} ({} images of the {:?} split of {} from {}, batch {}), seed {seed}",
        spec.protocol.name(),
        a.model,
        a.samples,
        a.split,
        path.display(),
        a.offset,
        a.batch
    );
    eprintln!(
        "note: the built-in models carry untrained weights (seeded); predictions are meaningful only as agreement with the references"
    );
    let progress: securenn::infer::Progress = Arc::new(|done, all| {
        eprint!("\r  batch {done}/{all}");
        if done == all {
            eprintln!();
        }
        let _ = std::io::stderr().flush();
    });
    let report = run_inference(&spec, Some(progress))?;
    print_report(&report);
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    Ok(())
}

fn print_report(r: &InferReport) {
    let show = r.samples.min(20);
    println!("sample  label  secure  plaintext  float");
    for i in 0..show {
        println!(
            "{i:>6}  {:>5}  {:>6}  {:>9}  {:>5}",
            r.labels[i], r.predictions[i], r.plaintext_predictions[i], r.float_predictions[i]
        );
    }
    if show < r.samples {
        println!("   ... ({} more)", r.samples - show);
    }
    println!();
    println!(
        "accuracy            {:.2}% (plaintext fixed-point {:.2}%, float {:.2}%)",
        100.0 * r.accuracy,
        100.0 * r.plaintext_accuracy,
        100.0 * r.float_accuracy
    );
    println!(
        "agreement           {:.2}% with plaintext fixed-point, {:.2}% with float",
        100.0 * r.plaintext_agreement,
        100.0 * r.float_agreement
    );
    println!(
        "max logit error     {:.6} vs plaintext fixed-point ({} fractional bits: 1 ulp = {:.6})",
        r.max_logit_error,
        r.frac_bits,
        1.0 / f64::from(1u32 << r.frac_bits)
    );
    println!(
        "communication       {} bytes in {} messages, {} rounds (setup: {} bytes)",
        r.bytes_total, r.messages, r.rounds, r.setup_bytes
    );
    for l in &r.links {
        println!(
            "  P{} -> P{}  {:>12} bytes  {:>6} messages",
            l.from, l.to, l.bytes, l.messages
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
