//! `securenn plot`: figures as SVG.

use super::*;
use clap::Subcommand;

#[derive(Subcommand)]
pub(crate) enum PlotCommand {
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
        /// The report: JSON written by `securenn infer --json` (one report), or by `securenn run
        /// --json` (an array, one report per run: choose one with --run unless there is one).
        report: PathBuf,
        /// Which run of a `securenn run --json` array to draw: 1 for the first (the order of
        /// `run`'s table).
        #[arg(long, value_parser = at_least_one)]
        run: Option<usize>,
        /// The SVG file to write (refused if it exists, unless --force).
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        force: bool,
    },
    /// Bytes and time against the batch size and against the model's size, from `securenn
    /// bench --json` rows (four SVGs).
    ///
    /// One SVG per figure: bytes and time against the batch size for one model
    /// (bytes-vs-batch-MODEL.svg, time-vs-batch-MODEL.svg), and against the model's size in
    /// parameters at one batch size (bytes-vs-model-batchN.svg, time-vs-model-batchN.svg); log
    /// scales, one line per layout and network (bytes: per layout, the networks' bytes being
    /// equal), each time line with its network bound (free compute) in a paler line. Make the
    /// rows with, e.g., `securenn bench --models a,b,c --batches 1,8,64,256 --json bench.json`
    /// (batch 512 needs more than the bundled 1,000 test images: the bench takes twice the
    /// batch).
    Bench {
        /// The rows: the JSON array `securenn bench --json FILE` writes (fields read: model,
        /// batch, network, layout, seconds, bytes, and network_bound_seconds if present).
        rows: PathBuf,
        /// The directory to write the figures into (made if missing; existing figures are
        /// refused unless --force).
        #[arg(long)]
        out_dir: PathBuf,
        /// The model of the batch-size figures (default: the one with the most batch sizes).
        #[arg(long)]
        model: Option<String>,
        /// The models of the model-size figures, comma-separated (default: all in the file;
        /// built-in models only: their size is their parameter count).
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        /// The batch size of the model-size figures (default: the one most models were run
        /// at, the smallest among equals).
        #[arg(long, value_parser = at_least_one)]
        batch: Option<usize>,
        /// Overwrite existing figures (without it, all four are checked before any is drawn).
        #[arg(long)]
        force: bool,
    },
}

pub(crate) fn run(c: PlotCommand) -> Result<()> {
    match c {
        PlotCommand::Costs {
            report,
            run,
            out,
            force,
        } => plot_costs(&report, run, &out, force),
        PlotCommand::Bench {
            rows,
            out_dir,
            model,
            models,
            batch,
            force,
        } => {
            let points = securenn::plot::load_bench(&rows)?;
            let want = securenn::plot::BenchFigures {
                model,
                batch,
                models,
            };
            let figures = securenn::plot::bench_figures(&points, &rows, &want)?;
            std::fs::create_dir_all(&out_dir)
                .with_context(|| format!("creating {}", out_dir.display()))?;
            // Every file is checked before any is drawn.
            for f in &figures {
                check_output(&out_dir.join(&f.file), force)?;
            }
            for f in &figures {
                let path = f.draw(&out_dir)?;
                eprintln!(
                    "figure written to {} ({})",
                    path.display(),
                    f.series().join("; ")
                );
            }
            Ok(())
        }
        PlotCommand::Relu { out, force } => {
            check_output(&out, force)?;
            securenn::plot::relu_figure(&out)?;
            eprintln!("figure written to {}", out.display());
            Ok(())
        }
    }
}

fn plot_costs(
    report: &std::path::Path,
    run: Option<usize>,
    out: &std::path::Path,
    force: bool,
) -> Result<()> {
    check_output(out, force)?;
    let text =
        std::fs::read_to_string(report).with_context(|| format!("reading {}", report.display()))?;
    let not_a_report = || {
        format!(
            "{} is not a report: expected the JSON of `securenn infer --json` (one report) or of \
             `securenn run --json` (an array of reports)",
            report.display()
        )
    };
    let doc: serde_json::Value = serde_json::from_str(&text).with_context(not_a_report)?;
    let doc = match (doc, run) {
        (serde_json::Value::Array(mut runs), run) => {
            let n = runs.len();
            let k = match run {
                Some(k) if k <= n => k,
                None if n == 1 => 1,
                _ if n == 0 => bail!("{} holds an empty array of runs", report.display()),
                Some(k) => bail!(
                    "--run {k}: {} holds {n} run{}",
                    report.display(),
                    if n == 1 { "" } else { "s" }
                ),
                None => bail!(
                    "{} holds {n} runs (from `securenn run --json`); choose one with --run 1..{n}",
                    report.display()
                ),
            };
            runs.swap_remove(k - 1)
        }
        (_, Some(_)) => bail!(
            "--run picks a run of a `securenn run --json` array; {} holds one report",
            report.display()
        ),
        (doc, None) => doc,
    };
    let r: InferReport = serde_json::from_value(doc).with_context(not_a_report)?;
    securenn::plot::costs_figure(&r, out)?;
    eprintln!("figure written to {}", out.display());
    Ok(())
}
