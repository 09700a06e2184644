//! The subcommands of the `securenn` binary, one module each (as cargo and ripgrep do), and what
//! they share: the flag enums, report outputs, progress bars and the printed summary.

pub(crate) mod bench;
pub(crate) mod export;
pub(crate) mod infer;
pub(crate) mod inspect;
pub(crate) mod keygen;
pub(crate) mod party;
pub(crate) mod plot;
pub(crate) mod run;
pub(crate) mod train;

use anyhow::{Context as _, Result, bail};
use clap::ValueEnum;
use securenn::infer::InferReport;
use std::path::PathBuf;

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum ProtocolArg {
    /// tf-encrypted's Pond: Beaver triples from a crypto producer, polynomial ReLU.
    Pond,
    /// SecureNN: exact ReLU and max pooling by secret-shared comparison with a helper party.
    Securenn,
    /// No secrecy: the reference computation on the same fixed-point numbers.
    Plaintext,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum SplitArg {
    /// The bundled sample's test split.
    Test,
    /// The bundled sample's training split.
    Train,
    /// Every image, in file order.
    All,
}

impl SplitArg {
    pub(crate) fn split(self) -> securenn::data::Split {
        use securenn::data::Split;
        match self {
            Self::Test => Split::Test,
            Self::Train => Split::Train,
            Self::All => Split::All,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum LabelColumnArg {
    /// The label, then the 784 pixels.
    First,
    /// The 784 pixels, then the label (the bundled sample's layout).
    Last,
}

impl LabelColumnArg {
    pub(crate) fn column(self) -> securenn::data::LabelColumn {
        match self {
            Self::First => securenn::data::LabelColumn::First,
            Self::Last => securenn::data::LabelColumn::Last,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum ReluFit {
    /// tf-encrypted's shipped polynomial, fitted on [-9, 9].
    #[value(name = "9")]
    Nine,
    /// The [-3, 3] fit tf-encrypted briefly shipped.
    #[value(name = "3")]
    Three,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum LayoutArg {
    /// The model as defined (ReLU before pooling, no ReLU on the logits), with our
    /// optimisations: reused masks, tree maxima and argmax, masked images.
    Default,
    /// The paper's cost layout and accounting: maxpool before ReLU, ReLU after the last layer,
    /// sequential maxima, fresh masks, masked im2col matrices. Reproduces the paper's bytes.
    Paper,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum RevealArg {
    /// Only the predicted class (secure argmax; SecureNN and plaintext).
    Class,
    /// The logits; the data owner takes the argmax (the only choice for Pond).
    Logits,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum TransportArg {
    /// In-memory channels: no time on the wire.
    Memory,
    /// The network simulator (see --network, --clock, --compute).
    Sim,
    /// Real QUIC connections on 127.0.0.1 with fresh certificates (all three parties in this
    /// process; `securenn party` runs one party per process).
    Quic,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum ClockArg {
    /// Per-party virtual clocks: nothing sleeps; reports what three machines would take.
    Virtual,
    /// Also hold every message until its arrival in wall time.
    Real,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum ComputeArg {
    /// Each party's clock advances by its thread's CPU time.
    Measured,
    /// Only the network counts: the network-bound time.
    Zero,
}

/// What `infer` and `run` write besides their summary.
#[derive(clap::Args)]
pub(crate) struct ReportArgs {
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

/// A count flag's value: a whole number of at least 1 (clap's own range message would print
/// `1..18446744073709551615`).
pub(crate) fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e} (expected a whole number of at least 1)")),
    }
}

/// [`ReportArgs`] checked: `--report table`, or `--report json FILE` (the same as `--json FILE`).
pub(crate) struct Outputs {
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
    /// Before anything runs: nothing a user wrote is overwritten without `--force`, and every
    /// output can be written (see [`check_output`]): the JSON file `json` (resolved by the
    /// caller) and the trace.
    fn refuse_overwrite(&self, json: Option<&std::path::Path>) -> Result<()> {
        for path in json.into_iter().chain(self.trace.as_deref()) {
            check_output(path, self.force)?;
        }
        Ok(())
    }
}

/// The ONNX model at `path`, every error naming the file (reading and decoding errors already
/// do; a graph's, such as a missing initializer, gets it in front).
pub(crate) fn import_onnx(path: &std::path::Path) -> Result<securenn::onnx::Imported> {
    securenn::onnx::import(path).map_err(|e| {
        let file = path.display().to_string();
        if e.to_string().contains(&file) {
            anyhow::Error::new(e)
        } else {
            anyhow::Error::new(e).context(file)
        }
    })
}

/// An output file, checked before the job runs (so a typo does not cost the whole run): it is
/// refused if it exists (unless `force`) or is a directory, or if its directory does not exist
/// or is read-only.
pub(crate) fn check_output(path: &std::path::Path, force: bool) -> Result<()> {
    if path.is_dir() {
        bail!(
            "{} is a directory; give a file name to write",
            path.display()
        );
    }
    if path.exists() && !force {
        bail!("{} exists; pass --force to overwrite it", path.display());
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => {
            bail!(
                "cannot write {}: {} is not a directory",
                path.display(),
                dir.display()
            )
        }
        Ok(m) if m.permissions().readonly() => {
            bail!(
                "cannot write {}: directory {} is read-only",
                path.display(),
                dir.display()
            )
        }
        Ok(_) => Ok(()),
        Err(_) => bail!(
            "cannot write {}: directory {} does not exist",
            path.display(),
            dir.display()
        ),
    }
}

/// Every progress bar of the process, so log lines can be written between their redraws.
pub(crate) static BARS: std::sync::LazyLock<indicatif::MultiProgress> =
    std::sync::LazyLock::new(indicatif::MultiProgress::new);

/// A progress bar on stderr that log output does not garble.
pub(crate) fn progress_bar(len: usize, template: &str) -> indicatif::ProgressBar {
    let bar = BARS.add(indicatif::ProgressBar::new(len as u64));
    bar.set_style(indicatif::ProgressStyle::with_template(template).expect("valid template"));
    bar
}

/// Log lines go to stderr with the progress bars hidden while they are written.
pub(crate) struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        BARS.suspend(|| std::io::Write::write_all(&mut std::io::stderr(), buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::Write::flush(&mut std::io::stderr())
    }
}

/// The Chrome trace of labelled runs (those that were traced).
pub(crate) fn write_trace(
    path: &std::path::Path,
    reports: &[(String, &InferReport)],
) -> Result<()> {
    let traces: Vec<(String, &securenn::metrics::SessionTrace)> = reports
        .iter()
        .filter_map(|(l, r)| r.trace.as_deref().map(|t| (l.clone(), t)))
        .collect();
    write_traces(path, traces)
}

/// The Chrome trace of labelled session traces.
pub(crate) fn write_traces(
    path: &std::path::Path,
    traces: Vec<(String, &securenn::metrics::SessionTrace)>,
) -> Result<()> {
    let doc = securenn::metrics::chrome::chrome_trace(&traces);
    std::fs::write(path, serde_json::to_string(&doc)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "Chrome trace written to {} (open it in ui.perfetto.dev or chrome://tracing)",
        path.display()
    );
    Ok(())
}

/// The per-operation table of one run, with what the sums mean.
pub(crate) fn print_op_table(label: &str, r: &InferReport, depth: Option<usize>) {
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

/// A fraction as a percentage, `-` if absent (no labels).
pub(crate) fn percent(f: Option<f64>) -> String {
    f.map_or_else(|| "-".into(), |f| format!("{:.2}%", 100.0 * f))
}

pub(crate) fn print_report(r: &InferReport) {
    if r.samples <= 20 {
        println!("sample  label  secure  plaintext  float");
        for i in 0..r.samples {
            println!(
                "{i:>6}  {:>5}  {:>6}  {:>9}  {:>5}",
                r.labels.get(i).map_or("-".into(), u8::to_string),
                r.predictions[i],
                r.plaintext_predictions[i],
                r.float_predictions[i]
            );
        }
        println!();
    }
    if r.accuracy.is_some() {
        println!(
            "accuracy            {} on {} images (plaintext fixed-point {}, float {})",
            percent(r.accuracy),
            r.samples,
            percent(r.plaintext_accuracy),
            percent(r.float_accuracy)
        );
    } else {
        println!(
            "accuracy            not measured: no labels were given ({} images)",
            r.samples
        );
    }
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
    if let Some(line) = peak_memory_line(&r.peak_memory_bytes) {
        println!("peak memory         {line}");
    }
}

/// `P0 12.35 MB, P1 12.36 MB, P2 3.10 MB`: each party's peak of live heap bytes (one figure,
/// unlabelled, for a plaintext run); `None` when the report has none.
pub(crate) fn peak_memory_line(peaks: &[u64]) -> Option<String> {
    let mb = |b: u64| format!("{:.2} MB", b as f64 / 1e6);
    match peaks {
        [] => None,
        [one] => Some(format!("{} (one thread, plaintext)", mb(*one))),
        all => Some(
            all.iter()
                .enumerate()
                .map(|(i, &b)| format!("P{i} {}", mb(b)))
                .collect::<Vec<_>>()
                .join(", ")
                + " (heap live at once, per party's thread)",
        ),
    }
}
