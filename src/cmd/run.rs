//! `securenn run`: a scenario file's runs, one row each.

use super::*;
use securenn::infer::run_inference;
use std::sync::Arc;

/// Arguments of `securenn run`.
#[derive(clap::Args)]
pub(crate) struct RunArgs {
    /// The scenario file.
    file: PathBuf,
    /// Override every run's number of images (CI runs long scenarios short).
    #[arg(long, value_parser = at_least_one)]
    samples: Option<usize>,
    #[command(flatten)]
    outputs: ReportArgs,
}

pub(crate) fn run(a: RunArgs) -> Result<()> {
    let o = a.outputs.resolve()?;
    run_scenario(&a.file, a.samples, &o)
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
        let spec = run
            .spec()
            .with_context(|| format!("scenario {} run {:?}", file.display(), run.label))?;
        // The range analysis refuses inside the run; its warnings are said here, before it.
        let range = spec
            .range()
            .with_context(|| format!("scenario {} run {:?}", file.display(), run.label))?;
        for w in &range.warnings {
            eprintln!("warning: run {:?}: fixed-point range: {w}", run.label);
        }
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
                "{:<28} {:>9} {:>9.2}% {:>14} {:>7} {:>10} {:>9.3}",
                label,
                percent(r.accuracy),
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
