//! `securenn bench`: the SecureNN paper's inference benchmark (Table 7), ours beside it; with
//! `--train`, one training iteration of networks A, B and C beside the paper's Tables 3-5 and the
//! public code's bytes.

use super::*;
use securenn::infer::Layout;

#[derive(clap::Args)]
pub(crate) struct BenchArgs {
    /// One training iteration of networks A, B and C at batch 128 (the paper's Tables 3-5)
    /// instead of inference: seconds, bytes and rounds per iteration beside the paper's time
    /// per iteration and the public SecureNN code's bytes.
    #[arg(long)]
    train: bool,
    /// With --train: our bytes per iteration against the closed-form model of the public code's
    /// iteration, phase by phase and layer by layer, each difference explained.
    #[arg(long, requires = "train")]
    explain: bool,
    /// A subset that runs in under a minute: batch 1 for every network and batch 128 for A
    /// only, one run per cell (with --train: network A only; flags below narrow it further).
    #[arg(long)]
    quick: bool,
    /// Only this layout (default: both, as separate rows: the paper's, then ours).
    #[arg(long, value_enum, alias = "layouts")]
    layout: Option<LayoutArg>,
    /// Models, comma-separated (default: a,b,c,d-as-benchmarked: Table 7's networks; with
    /// --train a,b,c).
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
    /// Batch sizes, comma-separated (default: 1,128; with --train 128).
    #[arg(long, value_delimiter = ',')]
    batches: Vec<usize>,
    /// Simulator presets, comma-separated (default: lan,wan: the paper's networks).
    #[arg(long, value_delimiter = ',')]
    networks: Vec<String>,
    /// Cores per party, comma-separated (default: 1): every cell runs at each, one row each.
    /// The virtual clock charges a party's parallel sections (matrix products, convolutions,
    /// Z_67 packing, large elementwise ops) their makespan on this many cores; 1 charges all
    /// of its CPU time, as the paper's servers (one process each) spent it. The parties share
    /// this machine's rayon pool, so wall time does not scale with it; virtual time does.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=4096))]
    cores: Vec<u32>,
    /// Default-layout optimisations to measure, comma-separated: every default-layout cell
    /// also runs without each (one row each, beside the row with all of them), so what each
    /// pays in bytes, rounds and time, cold and warm, is the difference between the rows.
    /// `narrow-comparisons`, `bounded-widths`, `known-operands` (see `infer --without`).
    #[arg(long, value_enum, value_delimiter = ',', conflicts_with = "train")]
    ablate: Vec<securenn::infer::Lever>,
    /// Measured runs per cell; the median is reported (default: 3, or 1 with --quick or
    /// --train).
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
    /// Put our rows beside another engine's, read from FILE: a JSON array of rows in this
    /// bench's schema (scripts/spu_bench.py writes SecretFlow SPU's so), matched on model and
    /// batch, with ours / theirs for seconds, wall seconds, bytes and rounds. Without --models or
    /// --batches, runs the file's models and batches.
    #[arg(long, value_name = "FILE", conflicts_with = "train")]
    compare: Option<PathBuf>,
    /// With --compare: read our rows from FILE (as --json wrote them) instead of running the
    /// bench.
    #[arg(
        long,
        value_name = "FILE",
        requires = "compare",
        conflicts_with_all = ["json", "quick", "models", "batches", "networks", "layout", "runs"]
    )]
    ours: Option<PathBuf>,
}

pub(crate) fn run(a: BenchArgs) -> Result<()> {
    use securenn::bench::compare::{CompareRow, compare_table, narrow_plan, read_rows};
    use securenn::bench::{BenchEvent, BenchPlan, run_bench, table};
    if let Some(path) = &a.json {
        check_output(path, a.force)?;
    }
    if a.train {
        if a.cores.iter().any(|&c| c != 1) {
            bail!("--cores: the training bench runs at 1 core per party only");
        }
        return run_train(a);
    }
    // Read the file to compare with before running anything: a bad one fails at once.
    let theirs = match &a.compare {
        Some(path) => Some((path.display().to_string(), read_rows(path)?)),
        None => None,
    };
    if let (Some(ours), Some((path, theirs))) = (&a.ours, &theirs) {
        let ours: Vec<CompareRow> = read_rows(ours)?;
        print!("{}", compare_table(&ours, theirs, path)?);
        return Ok(());
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
    if let Some((path, theirs)) = &theirs {
        narrow_plan(
            &mut plan,
            theirs,
            path,
            !a.models.is_empty(),
            !a.batches.is_empty(),
        )?;
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
    if !a.cores.is_empty() {
        plan.cores = a.cores;
    }
    plan.ablate = a.ablate;
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
                "  {} batch {} {} {}{}{}: {:.3} s (paper {}), {} bytes",
                r.model,
                r.batch,
                r.network,
                securenn::bench::layout_name(r.layout),
                r.without.map_or(String::new(), |l| format!(" without {l}")),
                match r.cores {
                    1 => String::new(),
                    n => format!(", {n} cores"),
                },
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
    if let Some((path, theirs)) = &theirs {
        let ours: Vec<CompareRow> = rows.iter().map(CompareRow::from_bench).collect();
        println!();
        print!("{}", compare_table(&ours, theirs, path)?);
    }
    Ok(())
}

fn run_train(a: BenchArgs) -> Result<()> {
    use securenn::bench::train::{
        TrainEvent, TrainPlan, explain_table, run_train_bench, train_table,
    };
    let mut plan = if a.quick {
        TrainPlan::quick()
    } else {
        TrainPlan::full()
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
        "securenn bench --train: {cells} cells, each {} measured run{} of one training iteration; SecureNN, virtual clock, seed {}",
        plan.runs,
        if plan.runs == 1 { "" } else { "s" },
        plan.seed
    );
    let bar = progress_bar(
        cells * plan.runs,
        "  {bar:30} {pos}/{len} runs, {elapsed_precise}: {msg}",
    );
    let rows = run_train_bench(&plan, &mut |e| match e {
        TrainEvent::Run {
            cell,
            run,
            runs,
            done,
            total,
        } => {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            bar.set_message(format!("{cell}, run {}/{runs}", run + 1));
        }
        TrainEvent::Cell(r) => {
            let line = format!(
                "  {} batch {} {} {}: {:.3} s per iteration (paper {}), {} bytes, {} rounds",
                r.model,
                r.batch,
                r.network,
                securenn::bench::layout_name(r.layout),
                r.seconds,
                r.paper_seconds.map_or("-".into(), |p| format!("{p:.3} s")),
                r.bytes,
                r.rounds
            );
            if bar.is_hidden() {
                eprintln!("{line}");
            } else {
                bar.println(line);
            }
        }
    });
    bar.finish_and_clear();
    let rows = rows?;
    print!("{}", train_table(&rows));
    if a.explain {
        print!("{}", explain_table(&rows));
    }
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("rows written to {}", path.display());
    }
    Ok(())
}
