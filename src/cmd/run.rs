//! `securenn run`: a scenario file's runs, one row each.

use super::*;
use securenn::infer::run_inference;
use securenn::training::{TrainProgress, run_training};
use std::sync::Arc;

/// Arguments of `securenn run`.
#[derive(clap::Args)]
pub(crate) struct RunArgs {
    /// The scenario file.
    file: PathBuf,
    /// Override every run's number of images (CI runs long scenarios short).
    #[arg(long, value_parser = at_least_one)]
    samples: Option<usize>,
    /// Override every run's cores per party on the simulator's virtual clock (the scenario's
    /// `[network] cores`, default 1; see `securenn infer --cores`).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    cores: Option<u32>,
    #[command(flatten)]
    outputs: ReportArgs,
}

pub(crate) fn run(a: RunArgs) -> Result<()> {
    let o = a.outputs.resolve()?;
    run_scenario(&a.file, a.samples, a.cores, &o)
}

fn run_scenario(
    file: &std::path::Path,
    samples: Option<usize>,
    cores: Option<u32>,
    outputs: &Outputs,
) -> Result<()> {
    let cores = cores.map(i64::from);
    let mut scenario = match securenn::scenario::ScenarioFile::load(file)? {
        securenn::scenario::ScenarioFile::Inference(s) => s,
        securenn::scenario::ScenarioFile::Train(mut s) => {
            s.network.cores = cores.or(s.network.cores);
            if samples.is_some() {
                bail!(
                    "--samples: {} is a training scenario; its size is [job] epochs, iterations \
                     and test_samples",
                    file.display()
                );
            }
            return run_train_scenario(file, &s, outputs);
        }
    };
    scenario.network.cores = cores.or(scenario.network.cores);
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

/// A training scenario: its progress, summary, per-phase table (`--report table`), JSON report
/// (an array of one, as inference writes one per run), trace, and the model owner's trained
/// weights in `job.out`.
fn run_train_scenario(
    file: &std::path::Path,
    scenario: &securenn::scenario::TrainScenario,
    outputs: &Outputs,
) -> Result<()> {
    let out = outputs.json.clone().or_else(|| {
        scenario
            .output
            .json
            .as_ref()
            .map(|p| file.parent().unwrap_or(std::path::Path::new(".")).join(p))
    });
    outputs.refuse_overwrite(out.as_deref())?;
    let run = scenario
        .run(file)
        .with_context(|| format!("scenario {}", file.display()))?;
    // Before the run, so that a file in the way does not cost it.
    if let Some(w) = &run.out {
        if w.is_dir() {
            bail!(
                "{}: job.out: {} is a directory; give a file name to write",
                file.display(),
                w.display()
            );
        }
        if w.exists() && !run.force {
            bail!(
                "{}: job.out: {} exists; set `force = true` in [job] to overwrite it",
                file.display(),
                w.display()
            );
        }
    }
    let spec = &run.spec;
    let job = spec.job();
    eprintln!(
        "securenn run {}: {} (training {} on {} images, {} test images)",
        file.display(),
        scenario.description,
        spec.model_name,
        job.train_images,
        job.test_images
    );
    let per_epoch = job.iterations_per_epoch();
    let bar = progress_bar(
        spec.epochs * per_epoch,
        "  {msg} {bar:30} {pos}/{len} iterations, {elapsed_precise}",
    );
    bar.set_message(format!("train {}", spec.model_name));
    let b = bar.clone();
    let epochs = spec.epochs;
    let progress: securenn::training::Progress = Arc::new(move |p| match p {
        TrainProgress::Iteration {
            epoch,
            iteration,
            of,
        } => b.set_position(((epoch - 1) * of + iteration) as u64),
        TrainProgress::Epoch {
            epoch,
            test_accuracy,
        } => b.suspend(|| {
            eprintln!(
                "  epoch {epoch}/{epochs} done{}",
                test_accuracy.map_or(String::new(), |a| format!(
                    ": test accuracy {:.2}%",
                    100.0 * a
                ))
            )
        }),
    });
    let report = run_training(spec, Some(progress));
    bar.finish_and_clear();
    let report = report.with_context(|| format!("scenario {}", file.display()))?;
    super::train::print_summary(&report, per_epoch, None, spec.checkpoint_dir.as_deref());
    if outputs.table {
        super::train::print_phase_table(&report);
    }
    if let (Some(path), Some(w)) = (&run.out, &report.weights) {
        let meta = std::collections::HashMap::from([
            ("model".to_string(), report.model.clone()),
            ("trained".to_string(), "secure training".to_string()),
            ("protocol".to_string(), report.protocol.name().to_string()),
            ("epochs".to_string(), report.epochs.to_string()),
            ("batch".to_string(), report.batch.to_string()),
            (
                "learning_rate".to_string(),
                report.learning_rate.to_string(),
            ),
            ("iterations".to_string(), report.iterations.to_string()),
            ("train_images".to_string(), report.train_images.to_string()),
            ("scenario".to_string(), file.display().to_string()),
        ]);
        securenn::nn::weights_file::save(path, w, meta, run.force)?;
        println!("weights             written to {}", path.display());
    }
    if let Some(path) = out {
        std::fs::write(
            path.clone(),
            serde_json::to_string_pretty(&[&report])? + "\n",
        )
        .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    if let Some(path) = &outputs.trace {
        let label = format!("train {}", report.model);
        write_traces(
            path,
            report
                .trace
                .as_deref()
                .map(|t| (label, t))
                .into_iter()
                .collect(),
        )?;
    }
    Ok(())
}
