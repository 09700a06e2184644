//! The `securenn` command line: secure inference jobs, scenario files, deployment over QUIC,
//! benchmarks and figures. One module per subcommand under `cmd/`.

mod cmd;

use clap::{Parser, Subcommand};

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
    Infer(cmd::infer::InferArgs),
    /// Run a scenario file (scenarios/*.toml): a job, its network and faults, and the variants
    /// to compare, one row each.
    Run(cmd::run::RunArgs),
    /// Draw a figure (SVG).
    #[command(subcommand)]
    Plot(cmd::plot::PlotCommand),
    /// Train a model on the training split and write its weights as safetensors: by secure
    /// three-party computation (--protocol securenn: SGD with the approximate softmax, the
    /// images, labels and weights secret-shared, per-epoch checkpoints and secure test
    /// accuracy), by its plaintext fixed-point twin (--protocol plaintext), or in float (f64
    /// Adam, fixed seed; the default): how the bundled models/*.safetensors were made.
    Train(cmd::train::TrainArgs),
    /// Write a built-in model and its weights (default: the bundled trained ones) as a standard
    /// ONNX file: IR version 8, opset 13, input `input` [batch, C, H, W] (NCHW), output
    /// `logits` [batch, classes], float32 weights. The argmax is not exported: the file ends with
    /// the logits, as exporters write classifiers (`infer --onnx` adds the secure argmax back).
    Export(cmd::export::ExportArgs),
    /// List what an ONNX file is (producer, IR version, opset, input and output), what the
    /// importer makes of each node, the model's layers with their shapes and parameters, and
    /// each layer's SecureNN bytes and rounds for one input, from a dry run of the protocol. For
    /// a file that does not import: whether each node's op type is supported, then the
    /// importer's error (exit status 1).
    Inspect(cmd::inspect::InspectArgs),
    /// Write a self-signed certificate and key (readable by its owner only) for running the
    /// parties as separate processes over QUIC, and a deployment file template. With `--id N`,
    /// party N's only: what each operator runs on their own machine. Without it, all three keys
    /// on one machine: for local runs and tests only.
    Keygen(cmd::keygen::KeygenArgs),
    /// Run one party of a deployment over QUIC: connect to the others (mutual TLS, every party
    /// accepts exactly the others' certificates), agree seeds, run the deployment's job.
    Party(cmd::party::PartyArgs),
    /// The SecureNN paper's inference benchmark (Table 7) on the simulated LAN and WAN: our
    /// virtual time, bytes and rounds beside the paper's, with the network-only bound; with
    /// --train, one training iteration (Tables 3-5) beside the paper's and the public code's.
    Bench(cmd::bench::BenchArgs),
}

fn main() -> std::process::ExitCode {
    use tracing_subscriber::prelude::*;
    let cli = Cli::parse();
    // The metrics layer costs about 5% of a run's time; it is installed where its operation
    // tree is used: scenario runs, the bench (warm queries), `infer` with a report or trace and secure
    // `train` with a report.
    let metrics = match &cli.command {
        Command::Infer(a) => a.records_ops(),
        Command::Train(a) => a.records_ops(),
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
                .with_writer(|| cmd::LogWriter)
                .with_filter(filter),
        )
        .with(metrics.then(securenn::metrics::layer))
        .init();
    let result = match cli.command {
        Command::Infer(a) => cmd::infer::run(a),
        Command::Run(a) => cmd::run::run(a),
        Command::Plot(c) => cmd::plot::run(c),
        Command::Train(a) => cmd::train::run(a),
        Command::Export(a) => cmd::export::run(a),
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Keygen(a) => cmd::keygen::run(a),
        Command::Party(a) => cmd::party::run(a),
        Command::Bench(a) => cmd::bench::run(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            cmd::party::exit_code(&e).map_or(std::process::ExitCode::FAILURE, Into::into)
        }
    }
}
