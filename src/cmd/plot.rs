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
        /// The report (JSON written by `securenn infer --json`).
        report: PathBuf,
        /// The SVG file to write (refused if it exists, unless --force).
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        force: bool,
    },
}

pub(crate) fn run(c: PlotCommand) -> Result<()> {
    match c {
        PlotCommand::Costs { report, out, force } => plot_costs(&report, &out, force),
        PlotCommand::Relu { out, force } => {
            if out.exists() && !force {
                bail!("{} exists; pass --force to overwrite it", out.display());
            }
            securenn::plot::relu_figure(&out)?;
            eprintln!("figure written to {}", out.display());
            Ok(())
        }
    }
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
