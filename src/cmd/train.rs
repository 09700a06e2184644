//! `securenn train`: training a model by secure three-party computation (SecureNN), by its
//! plaintext fixed-point twin (the same SGD and approximate softmax in the clear), or in float
//! (f64 Adam: how the bundled weights were made, the default).

use super::*;
use securenn::channel::PartyId;
use securenn::data::{DataSource, LabelColumn, Mnist, Split};
use securenn::fixed::FixedPoint;
use securenn::infer::{Layout, ProtocolKind};
use securenn::nn::{Model, Weights, weights_file};
use securenn::party::{Network, PartyConfig};
use securenn::training::{
    PhaseReport, Progress, TrainError, TrainProgress, TrainReport, TrainSpec, run_training,
};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum TrainProtocolArg {
    /// Secure training: SecureNN's three parties (all in this process); the data owner's images
    /// and labels and the model owner's weights stay secret-shared until the weights are
    /// revealed to the model owner at the end.
    Securenn,
    /// The fixed-point twin: the same SGD, approximate softmax and truncations in the clear.
    Plaintext,
    /// Float (f64) Adam with softmax cross-entropy: how the bundled weights were made.
    Float,
    /// Refused with the reason (Pond cannot train).
    #[value(hide = true)]
    Pond,
}

/// Defaults of the secure kinds (`--protocol securenn` and `plaintext`), for every model.
///
/// The SecureNN paper trains with SGD at a constant rate of 2^-7 for network A and 2^-5
/// otherwise, batch 128, for 15 epochs of the 60,000 MNIST images: about 7,000 iterations. The
/// bundled sample has 4,000 training images: 31 full batches of 128 per epoch, 465 iterations in
/// 15 epochs. At the paper's small constant rates so few iterations leave the approximate
/// softmax (ASM) far from trained (network A plateaus near 84% test accuracy); a larger rate
/// halved in steps reaches 92% (A: 92.2% secure, 92.3% for the fixed-point twin). The rate and
/// the batch are powers of two, so each update's scaling lr/batch is a truncation by a whole
/// number of bits (2^-9 at first, one bit more per halving), folded into the product's own.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct SecureDefaults {
    /// Passes over the training images: the paper's 15.
    pub epochs: usize,
    /// Images per iteration: the paper's 128.
    pub batch: usize,
    /// SGD's rate at the start: 2^-2.
    pub learning_rate: f64,
    /// Halve the rate every this many epochs (three steps in 15 epochs: 0.25, 0.125, 0.0625).
    pub lr_halve_every: usize,
}

impl Default for SecureDefaults {
    /// `epochs: 15, batch: 128, learning_rate: 0.25, lr_halve_every: 5` (see the type's
    /// documentation for why).
    fn default() -> Self {
        Self {
            epochs: 15,
            batch: 128,
            learning_rate: 0.25,
            lr_halve_every: 5,
        }
    }
}

/// The party that owns the training images (and alone could read them).
const DATA_OWNER: PartyId = PartyId(0);
/// The party that owns the initial weights and alone learns the trained ones.
const MODEL_OWNER: PartyId = PartyId(1);

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["model", "onnx"])))]
pub(crate) struct TrainArgs {
    /// How to train: securenn (secure training by three parties), plaintext (its fixed-point
    /// twin in the clear) or float (f64 Adam, how the bundled weights were made) [default:
    /// float, so `securenn train --model a --seed 1` still makes the bundled weights].
    #[arg(long, value_enum)]
    protocol: Option<TrainProtocolArg>,
    /// Built-in model (give it or --onnx).
    #[arg(long, conflicts_with = "onnx", value_parser = clap::builder::PossibleValuesParser::new(securenn::models::BUILTIN))]
    model: Option<String>,
    /// A model of your own: its architecture and initial weights from an ONNX file (secure
    /// kinds only; a chain of dense, conv, ReLU, max or average pooling, flatten layers).
    #[arg(long, value_name = "MODEL.onnx")]
    onnx: Option<PathBuf>,
    /// Passes over the training images [default: 15 for the secure kinds, 8 for float].
    #[arg(long, value_parser = at_least_one)]
    epochs: Option<usize>,
    /// Images per iteration [default: 128 for the secure kinds, 32 for float].
    #[arg(long, value_parser = at_least_one)]
    batch: Option<usize>,
    /// Learning rate: SGD's for the secure kinds [default: 0.25, halved every 5 epochs], Adam's
    /// step size for float [default: 0.001].
    #[arg(long = "lr", visible_alias = "learning-rate", value_parser = positive_number)]
    lr: Option<f64>,
    /// Halve the learning rate every N epochs; 0 keeps it constant [default: 5] (secure kinds).
    #[arg(long, value_name = "N")]
    lr_halve_every: Option<usize>,
    /// Seed of the initial weights, the data owner's shuffles and (secure kinds) the session's
    /// randomness: the same seed gives the same weights, bit for bit.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Initial weights (safetensors), the model owner's [default: the model's seeded
    /// initialisation; with --onnx, the file's initialisers] (secure kinds).
    #[arg(long, value_name = "FILE.safetensors")]
    weights: Option<PathBuf>,
    /// Network layout: `paper` trains the paper's (maxpool before ReLU, a ReLU on the logits)
    /// [default: default] (secure kinds).
    #[arg(long, value_enum)]
    layout: Option<LayoutArg>,
    /// `memory` (no time on the wire), or a simulator preset whose virtual time is reported:
    /// lan, wan, wan-tfe, lossy-wan [default: memory] (--protocol securenn).
    #[arg(long)]
    network: Option<String>,
    /// Cores per party on the simulator's virtual clock [default: 1] (a --network preset; see
    /// `securenn infer --cores`).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    cores: Option<u32>,
    /// Stop each epoch after N iterations [default: every full batch] (secure kinds).
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    iterations: Option<usize>,
    /// Held-out images whose accuracy secure inference measures at every epoch end (the model
    /// owner learns it); 0: no test [default: the whole held-out split] (secure kinds).
    #[arg(long, value_name = "N")]
    test_samples: Option<usize>,
    /// MNIST CSV (gzipped if it ends in .gz; 785 comma-separated columns, a header row skipped);
    /// default: the bundled sample. Split as the bundled sample is: the last fifth of each
    /// digit's images is held out for the test accuracy, the rest trains.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Where the label is in each line of the --data file [default: last].
    #[arg(long, value_enum, requires = "data")]
    label_column: Option<LabelColumnArg>,
    /// The trained weights (safetensors, written by the model owner) [default: secure kinds
    /// trained-<model>.safetensors in the current directory; float models/<model>.safetensors in
    /// the source tree the binary was built from].
    #[arg(long, value_name = "FILE.safetensors")]
    out: Option<PathBuf>,
    /// Also write the trained model as an ONNX file.
    #[arg(long, value_name = "FILE.onnx")]
    onnx_out: Option<PathBuf>,
    /// Where every party checkpoints its shares at every epoch end [default:
    /// <out>.checkpoints] (secure kinds).
    #[arg(long, value_name = "DIR")]
    checkpoint_dir: Option<PathBuf>,
    /// Write no checkpoints (secure kinds).
    #[arg(long, conflicts_with_all = ["checkpoint_dir", "resume"])]
    no_checkpoints: bool,
    /// Continue from the latest epoch all three parties have a checkpoint of in the checkpoint
    /// directory (from the initial weights if it holds none) (secure kinds).
    #[arg(long)]
    resume: bool,
    /// Overwrite the output files; without --resume, also delete the checkpoints of an earlier
    /// run (party*-epoch*.ckpt) and start over.
    #[arg(long)]
    force: bool,
    /// `table` (or nothing): print the bytes, messages and rounds of every phase and layer,
    /// with per-iteration averages; `json FILE`: the same as --json FILE (secure kinds).
    #[arg(long, num_args = 0..=2, value_names = ["KIND", "FILE"])]
    report: Option<Vec<String>>,
    /// Write the training report as JSON (secure kinds).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// A learning rate's value: a positive number.
fn positive_number(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        Ok(_) => Err("must be a positive number".into()),
        Err(e) => Err(format!("{e} (expected a positive number)")),
    }
}

pub(crate) fn run(a: TrainArgs) -> Result<()> {
    match a.protocol.unwrap_or(TrainProtocolArg::Float) {
        TrainProtocolArg::Pond => bail!(
            "--protocol pond: Pond cannot train (its ReLU is a polynomial with no exact \
             derivative, and it has no division for the softmax); use --protocol securenn, or \
             plaintext for its fixed-point twin"
        ),
        TrainProtocolArg::Float => run_float(a),
        TrainProtocolArg::Securenn => run_secure(a, ProtocolKind::SecureNn),
        TrainProtocolArg::Plaintext => run_secure(a, ProtocolKind::Plaintext),
    }
}

/// The command line that made a file, for its metadata.
fn command_line() -> String {
    let quote = |s: String| {
        if !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+".contains(c))
        {
            s
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    };
    std::iter::once("securenn".to_string())
        .chain(std::env::args().skip(1).map(quote))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The training and held-out images of `--data` (or the bundled sample), split by the
/// bundled sample's rule.
fn load_splits(a: &TrainArgs) -> Result<(DataSource, Mnist, Mnist)> {
    let path = DataSource::file_or_bundled(a.data.as_deref());
    let column = a
        .label_column
        .map_or(LabelColumn::Last, LabelColumnArg::column);
    let file = Mnist::read_csv(path.clone(), column)?;
    if let Some(h) = &file.header {
        eprintln!("{path}: the first line is not numbers: skipped it as a header row ({h})");
    }
    let all = file.data;
    let pick = |split| {
        let idx = all.split_order(split);
        Mnist {
            images: idx.iter().map(|&i| all.images[i].clone()).collect(),
            labels: idx.iter().map(|&i| all.labels[i]).collect(),
        }
    };
    Ok((path, pick(Split::Train), pick(Split::Test)))
}

/// Write the trained model as ONNX (checked with [`check_output`] before training).
fn write_onnx(path: &Path, model: &Model, weights: &Weights, name: &str) -> Result<()> {
    let onnx = securenn::onnx::export(model, weights, name)
        .with_context(|| format!("--onnx-out {}", path.display()))?;
    onnx.write(path)?;
    eprintln!("ONNX model written to {}", path.display());
    Ok(())
}

fn run_float(a: TrainArgs) -> Result<()> {
    use securenn::nn::train::{TrainConfig, accuracy, train};
    let secure_only = [
        ("--onnx", a.onnx.is_some()),
        ("--weights", a.weights.is_some()),
        ("--lr-halve-every", a.lr_halve_every.is_some()),
        ("--layout", a.layout.is_some()),
        ("--network", a.network.is_some()),
        ("--iterations", a.iterations.is_some()),
        ("--test-samples", a.test_samples.is_some()),
        ("--checkpoint-dir", a.checkpoint_dir.is_some()),
        ("--no-checkpoints", a.no_checkpoints),
        ("--resume", a.resume),
        ("--report", a.report.is_some()),
        ("--json", a.json.is_some()),
    ];
    if let Some((flag, _)) = secure_only.iter().find(|(_, given)| *given) {
        bail!(
            "{flag} applies to secure training (--protocol securenn) and its fixed-point twin \
             (--protocol plaintext), not to the float trainer (--protocol float, the default); \
             add --protocol securenn or plaintext"
        );
    }
    let name = a.model.clone().expect("clap: --model or --onnx");
    let model = securenn::models::by_name(&name).expect("clap checked the name");
    let out = match a.out.clone() {
        Some(out) => out,
        None => securenn::models::source_weights_path(&name).with_context(|| {
            format!(
                "give --out FILE: the default, models/{name}.safetensors in the source tree this \
                 binary was built from, is not here (the bundled weights are built into the binary)"
            )
        })?,
    };
    if out.exists() && !a.force {
        bail!("{} exists; pass --force to overwrite it", out.display());
    }
    if let Some(o) = &a.onnx_out {
        check_output(o, a.force)?;
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
    if let Some(lr) = a.lr {
        cfg.learning_rate = lr;
    }
    let (path, train_set, test_set) = load_splits(&a)?;
    if train_set.images.is_empty() || test_set.images.is_empty() {
        bail!(
            "{path}: too few images to train on: {} in the training split, {} held out for the \
             test (the last fifth of each digit's images)",
            train_set.images.len(),
            test_set.images.len()
        );
    }
    eprintln!(
        "securenn train: float (f64 Adam) network {name} on {} training images of {path}, {} \
         epochs, batch {}, lr {}, seed {}",
        train_set.labels.len(),
        cfg.epochs,
        cfg.batch,
        cfg.learning_rate,
        cfg.seed
    );
    let t0 = Instant::now();
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
        ("model".to_string(), name.clone()),
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
            format!("securenn train --model {name} --seed {}", cfg.seed),
        ),
    ]);
    weights_file::save(&out, &weights, meta, a.force)?;
    eprintln!("weights written to {}", out.display());
    if let Some(o) = &a.onnx_out {
        write_onnx(o, &model, &weights, &name)?;
    }
    Ok(())
}

/// Where `p` points: the file itself if it exists (links resolved), else its resolved
/// directory and its name.
fn resolved(p: &Path) -> Option<PathBuf> {
    if let Ok(c) = p.canonicalize() {
        return Some(c);
    }
    let dir = p
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Some(dir.canonicalize().ok()?.join(p.file_name()?))
}

/// A checkpoint file name, `party<j>-epoch<e>.ckpt`.
fn is_checkpoint(name: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    name.strip_prefix("party")
        .and_then(|r| r.strip_suffix(".ckpt"))
        .and_then(|r| r.split_once("-epoch"))
        .is_some_and(|(j, e)| digits(j) && digits(e))
}

/// The checkpoint files in `dir` (none if it does not exist).
fn checkpoint_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("--checkpoint-dir {}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("--checkpoint-dir {}", dir.display()))?;
        if is_checkpoint(&entry.file_name().to_string_lossy()) {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// The epoch a resumed run starts from: the latest one every party has a checkpoint of.
fn resumable_epoch(dir: &Path, parties: &[u8]) -> Result<usize> {
    let mut agreed = usize::MAX;
    for &j in parties {
        let latest = securenn::training::checkpoint::epochs(dir, j)?
            .last()
            .map_or(0, |(e, _)| *e);
        agreed = agreed.min(latest);
    }
    Ok(if agreed == usize::MAX { 0 } else { agreed })
}

/// The network the flag names, and its name in the report.
fn network_of(name: Option<&str>, seed: u64, cores: Option<u32>) -> Result<(Network, String)> {
    use securenn_transports::sim::{LinkSpec, SimConfig};
    match name {
        None | Some("memory") if cores.is_some() => {
            bail!("--cores models cores on the simulator's virtual clock; give a --network preset")
        }
        None | Some("memory") => Ok((Network::Memory, "none".into())),
        Some(n) => {
            let link = LinkSpec::preset(n)
                .with_context(|| format!("--network {n}: expected memory or a simulator preset"))?;
            let mut cfg = SimConfig::uniform(3, link);
            cfg.seed = seed;
            cfg.cores = cores.unwrap_or(1);
            Ok((Network::Sim(cfg), n.to_string()))
        }
    }
}

/// What to print and write besides the weights.
struct SecureOutputs {
    table: bool,
    json: Option<PathBuf>,
}

fn secure_outputs(a: &TrainArgs) -> Result<SecureOutputs> {
    let (table, json) = match a.report.as_deref() {
        None => (false, a.json.clone()),
        Some(args) => match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            [] | ["table"] => (true, a.json.clone()),
            ["json", file] => {
                if let Some(j) = a.json.as_ref().filter(|j| *j != Path::new(file)) {
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
        },
    };
    Ok(SecureOutputs { table, json })
}

/// The model, its name and the model owner's initial weights.
fn secure_model(a: &TrainArgs, fixed: FixedPoint) -> Result<(String, Model, Weights, String)> {
    let (name, model, onnx_weights) = match (&a.onnx, &a.model) {
        (Some(path), _) => {
            let m = import_onnx(path)?;
            (m.name, m.model, Some(m.weights))
        }
        (None, Some(name)) => (
            name.clone(),
            securenn::models::by_name(name).expect("clap checked the name"),
            None,
        ),
        (None, None) => unreachable!("clap: --model or --onnx"),
    };
    // Refuse an untrainable model before anything is read or deleted, naming the layer.
    securenn::training::backprop::Net::new(&model).with_context(|| {
        format!(
            "{} cannot be trained",
            match &a.onnx {
                Some(p) => format!("--onnx {}", p.display()),
                None => format!("network {name}"),
            }
        )
    })?;
    let (weights, from) = match (&a.weights, onnx_weights) {
        (Some(path), _) => (
            weights_file::load(path, &model)?.0,
            path.display().to_string(),
        ),
        (None, Some(w)) => (
            w,
            format!(
                "the initialisers of {}",
                a.onnx.as_ref().expect("onnx").display()
            ),
        ),
        (None, None) => (
            model.init_weights(a.seed)?,
            format!("the seeded initialisation (seed {})", a.seed),
        ),
    };
    weights_file::check_fixed(&from, &weights, fixed)?;
    Ok((name, model, weights, from))
}

fn run_secure(a: TrainArgs, protocol: ProtocolKind) -> Result<()> {
    let plaintext = protocol == ProtocolKind::Plaintext;
    if plaintext && let Some(n) = a.network.as_deref().filter(|n| *n != "memory") {
        bail!(
            "--network {n}: the plaintext twin runs in one thread and sends no messages; \
             --network applies to --protocol securenn"
        );
    }
    let outputs = secure_outputs(&a)?;
    if plaintext && outputs.table {
        bail!(
            "--report table: the plaintext twin sends no messages, so there are no bytes or \
             rounds to show; --report applies to --protocol securenn (--json works for both)"
        );
    }
    let defaults = SecureDefaults::default();
    let config = PartyConfig::default();
    let fixed = config.fixed;
    let (name, model, weights, weights_from) = secure_model(&a, fixed)?;

    // Outputs: checked before anything runs; the bundled weights are never written.
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("trained-{name}.safetensors")));
    if let Some(target) = resolved(&out) {
        let bundled = securenn::models::BUILTIN.iter().any(|m| {
            securenn::models::source_weights_path(m).and_then(|p| resolved(&p))
                == Some(target.clone())
        });
        if bundled {
            bail!(
                "--out {}: that is a bundled weight file (models/*.safetensors, made by \
                 --protocol float and built into the binary); give another --out",
                out.display()
            );
        }
    }
    check_output(&out, a.force).context("--out")?;
    for (flag, path) in [("--json", &outputs.json), ("--onnx-out", &a.onnx_out)] {
        if let Some(p) = path {
            check_output(p, a.force).context(flag)?;
            if resolved(p).is_some() && resolved(p) == resolved(&out) {
                bail!("{flag} {} is the --out file; give another", p.display());
            }
        }
    }

    // The data: the training split, and the first --test-samples images of the held-out one.
    if let Some(why) = model.mnist_mismatch() {
        bail!("the {why}");
    }
    let (source, train, mut test) = load_splits(&a)?;
    let held_out = test.images.len();
    let test_n = a.test_samples.unwrap_or(held_out);
    if test_n > held_out {
        bail!(
            "--test-samples {test_n}: {source} holds out only {held_out} images (the last fifth \
             of each digit's images)"
        );
    }
    test.images.truncate(test_n);
    test.labels.truncate(test_n);
    let batch = a.batch.unwrap_or(defaults.batch);
    if batch > train.images.len() {
        bail!(
            "--batch {batch}: {source} has only {} training images",
            train.images.len()
        );
    }
    let epochs = a.epochs.unwrap_or(defaults.epochs);
    let learning_rate = a.lr.unwrap_or(defaults.learning_rate);
    let lr_halve_every = match a.lr_halve_every.unwrap_or(defaults.lr_halve_every) {
        0 => None,
        k => Some(k),
    };
    let per_epoch = a
        .iterations
        .unwrap_or(usize::MAX)
        .min(train.images.len() / batch);
    let layout = match a.layout.unwrap_or(LayoutArg::Default) {
        LayoutArg::Default => Layout::Default,
        LayoutArg::Paper => Layout::Paper,
    };
    let (network, network_name) = if plaintext {
        (Network::Memory, "none".to_string())
    } else {
        network_of(a.network.as_deref(), a.seed, a.cores)?
    };

    // Checkpoints: refuse an earlier run's unless resuming (or --force, which deletes them).
    let checkpoint_dir = (!a.no_checkpoints).then(|| {
        a.checkpoint_dir.clone().unwrap_or_else(|| {
            let mut s = out.clone().into_os_string();
            s.push(".checkpoints");
            PathBuf::from(s)
        })
    });
    let mut resume_from = 0;
    if let Some(dir) = &checkpoint_dir {
        if dir.exists() && !dir.is_dir() {
            bail!(
                "--checkpoint-dir {}: it is a file, not a directory",
                dir.display()
            );
        }
        let found = checkpoint_files(dir)?;
        if a.resume {
            let parties: &[u8] = if plaintext { &[0] } else { &[0, 1, 2] };
            resume_from = resumable_epoch(dir, parties)?;
            if resume_from > epochs {
                bail!(
                    "--epochs {epochs}: the checkpoints in {} have reached epoch {resume_from} \
                     already; give --epochs {resume_from} or more to resume",
                    dir.display()
                );
            }
            if resume_from == 0 {
                eprintln!(
                    "--resume: {} holds no checkpoint {}: training starts from the initial \
                     weights",
                    dir.display(),
                    if plaintext {
                        "of the plaintext twin"
                    } else {
                        "that all three parties have"
                    }
                );
            }
        } else if !found.is_empty() {
            if !a.force {
                bail!(
                    "--checkpoint-dir {} holds {} checkpoint files of an earlier run ({}); pass \
                     --resume to continue it, or --force to start over (deleting them)",
                    dir.display(),
                    found.len(),
                    found
                        .iter()
                        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            for f in &found {
                std::fs::remove_file(f).with_context(|| format!("deleting {}", f.display()))?;
            }
            eprintln!(
                "--force: deleted {} checkpoint files in {}",
                found.len(),
                dir.display()
            );
        }
    }

    let spec = TrainSpec {
        protocol,
        model_name: name.clone(),
        model: model.clone(),
        layout,
        weights,
        train,
        test,
        epochs,
        batch,
        learning_rate,
        lr_halve_every,
        seed: a.seed,
        iterations: a.iterations,
        data_owner: DATA_OWNER,
        model_owner: MODEL_OWNER,
        config,
        network,
        network_name,
        checkpoint_dir: checkpoint_dir.clone(),
        resume: a.resume,
    };
    let schedule = match lr_halve_every {
        Some(k) => format!("lr {learning_rate} halved every {k} epochs"),
        None => format!("lr {learning_rate} (constant)"),
    };
    eprintln!(
        "securenn train: {} {} ({} layout) on {} training images of {source}, {epochs} \
         epoch(s) of {per_epoch} iterations of batch {batch}, {schedule}, seed {}, initial \
         weights {}{}",
        if plaintext {
            "the plaintext fixed-point twin of secure training of"
        } else {
            "secure training (SecureNN) of"
        },
        match &a.onnx {
            Some(p) => format!("model {name} ({})", p.display()),
            None => format!("network {name}"),
        },
        match layout {
            Layout::Default => "default",
            Layout::Paper => "paper",
        },
        spec.train.images.len(),
        a.seed,
        weights_from,
        if resume_from > 0 {
            format!(", resuming after epoch {resume_from}")
        } else {
            String::new()
        }
    );

    let show = Arc::new(Mutex::new(Show::new(
        epochs,
        spec.test.images.len(),
        learning_rate,
        lr_halve_every,
    )));
    let s = show.clone();
    let progress: Progress = Arc::new(move |p| {
        s.lock().unwrap_or_else(|e| e.into_inner()).event(p);
    });
    let result = run_training(&spec, Some(progress));
    show.lock().unwrap_or_else(|e| e.into_inner()).finish();
    let report = match result {
        Ok(r) => r,
        Err(TrainError::Protocol(securenn::channel::ProtocolError::Input { op, reason }))
            if op == "checkpoint" =>
        {
            let dir = checkpoint_dir.as_deref().unwrap_or(Path::new("?"));
            bail!(
                "--checkpoint-dir {}: {reason}{}",
                dir.display(),
                if a.resume {
                    " (--force without --resume deletes its checkpoints and starts over)"
                } else {
                    ""
                }
            )
        }
        Err(e) => return Err(e.into()),
    };

    // The model owner's outputs.
    let trained = report
        .weights
        .clone()
        .context("the model owner received no weights")?;
    let last_acc = report
        .epoch_stats
        .last()
        .and_then(|s| s.test_accuracy)
        .map(|t| format!("{t:.4}"))
        .unwrap_or_else(|| "-".into());
    let meta = std::collections::HashMap::from([
        ("model".to_string(), name.clone()),
        ("protocol".to_string(), protocol.name().to_string()),
        (
            "layout".to_string(),
            match layout {
                Layout::Default => "default",
                Layout::Paper => "paper",
            }
            .to_string(),
        ),
        ("epochs".to_string(), epochs.to_string()),
        ("batch".to_string(), batch.to_string()),
        ("iterations_per_epoch".to_string(), per_epoch.to_string()),
        ("learning_rate".to_string(), learning_rate.to_string()),
        (
            "lr_halve_every".to_string(),
            lr_halve_every.map_or_else(|| "-".into(), |k| k.to_string()),
        ),
        ("seed".to_string(), a.seed.to_string()),
        ("frac_bits".to_string(), report.frac_bits.to_string()),
        ("train_images".to_string(), report.train_images.to_string()),
        ("test_images".to_string(), report.test_images.to_string()),
        ("test_accuracy".to_string(), last_acc),
        ("initial_weights".to_string(), weights_from.clone()),
        ("command".to_string(), command_line()),
    ]);
    weights_file::save(&out, &trained, meta, a.force)?;
    if let Some(o) = &a.onnx_out {
        write_onnx(o, &model, &trained, &name)?;
    }
    if let Some(path) = &outputs.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    print_summary(&report, per_epoch, Some(&out), checkpoint_dir.as_deref());
    if outputs.table {
        print_phase_table(&report);
    }
    Ok(())
}

/// The progress display: a bar per epoch on a terminal, periodic lines otherwise, and a line
/// with the test accuracy at every epoch end.
struct Show {
    terminal: bool,
    epochs: usize,
    test_images: usize,
    learning_rate: f64,
    halve_every: Option<usize>,
    bar: Option<indicatif::ProgressBar>,
    epoch_start: Instant,
    last_line: Instant,
    iterations: usize,
}

/// Seconds between progress lines when stderr is not a terminal.
const LINE_EVERY: f64 = 10.0;

impl Show {
    fn new(epochs: usize, test_images: usize, learning_rate: f64, halve: Option<usize>) -> Self {
        Self {
            terminal: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            epochs,
            test_images,
            learning_rate,
            halve_every: halve,
            bar: None,
            epoch_start: Instant::now(),
            last_line: Instant::now(),
            iterations: 0,
        }
    }

    fn lr(&self, epoch: usize) -> f64 {
        let halvings = self.halve_every.map_or(0, |k| (epoch.max(1) - 1) / k);
        self.learning_rate / 2f64.powi(halvings.min(60) as i32)
    }

    fn line(&self, s: String) {
        match &self.bar {
            Some(b) => b.println(s),
            None => BARS.suspend(|| eprintln!("{s}")),
        }
    }

    fn event(&mut self, p: TrainProgress) {
        match p {
            TrainProgress::Iteration {
                epoch,
                iteration,
                of,
            } => {
                if iteration == 1 {
                    self.epoch_start = Instant::now();
                    self.iterations = 0;
                    if self.terminal {
                        let bar = progress_bar(
                            of,
                            "  {prefix} {bar:40} {pos}/{len} iterations, {elapsed_precise} (eta {eta})",
                        );
                        bar.set_prefix(format!("epoch {epoch}/{}", self.epochs));
                        self.bar = Some(bar);
                    }
                }
                self.iterations += 1;
                match &self.bar {
                    Some(b) => b.set_position(iteration as u64),
                    None if self.last_line.elapsed().as_secs_f64() >= LINE_EVERY
                        && iteration < of =>
                    {
                        self.last_line = Instant::now();
                        self.line(format!(
                            "  epoch {epoch:>2}/{}: iteration {iteration}/{of} ({:.1} s)",
                            self.epochs,
                            self.epoch_start.elapsed().as_secs_f64()
                        ));
                    }
                    None => {}
                }
            }
            TrainProgress::Epoch {
                epoch,
                test_accuracy,
            } => {
                if let Some(b) = self.bar.take() {
                    b.finish_and_clear();
                }
                self.last_line = Instant::now();
                let acc = match test_accuracy {
                    Some(t) => format!(
                        "test accuracy {:.2}% on {} held-out images",
                        100.0 * t,
                        self.test_images
                    ),
                    None => "no test (--test-samples 0)".into(),
                };
                self.line(format!(
                    "  epoch {epoch:>2}/{}: {acc} (lr {}, {} iterations, {:.1} s)",
                    self.epochs,
                    self.lr(epoch),
                    self.iterations,
                    self.epoch_start.elapsed().as_secs_f64()
                ));
                self.epoch_start = Instant::now();
                self.iterations = 0;
            }
        }
    }

    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

/// Bytes in MB or GB (powers of ten).
fn human_bytes(b: f64) -> String {
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else {
        format!("{:.2} MB", b / 1e6)
    }
}

/// The summary of a local training run (`train`, and `run` of a training scenario); the line
/// on the weights when they were written to `out`.
pub(crate) fn print_summary(
    r: &TrainReport,
    per_epoch: usize,
    out: Option<&Path>,
    ckpt: Option<&Path>,
) {
    let secure = r.protocol == ProtocolKind::SecureNn;
    let epochs = match (r.resumed_from, r.epochs) {
        (0, 1) => "1 epoch".to_string(),
        (0, n) => format!("{n} epochs"),
        (s, n) if s >= n => format!("{n} epochs (all in the checkpoints: none run now)"),
        (s, n) if s + 1 == n => format!("epoch {n} (resumed after epoch {s})"),
        (s, n) => format!("epochs {}-{n} (resumed after epoch {s})", s + 1),
    };
    println!(
        "trained             {} by {} ({} layout): {epochs} of {per_epoch} iterations of batch {} \
         on {} images ({} iterations in this run)",
        r.model,
        if secure {
            "SecureNN"
        } else {
            "the plaintext fixed-point twin"
        },
        match r.layout {
            Layout::Default => "default",
            Layout::Paper => "paper",
        },
        r.batch,
        r.train_images,
        r.iterations
    );
    match r.epoch_stats.last() {
        Some(s) if s.test_accuracy.is_some() => println!(
            "test accuracy       {} on {} held-out images after epoch {} ({})",
            percent(s.test_accuracy),
            r.test_images,
            s.epoch,
            if secure {
                "secure inference; only the model owner learns it"
            } else {
                "the twin's inference"
            }
        ),
        _ => println!("test accuracy       not measured (no test images)"),
    }
    if r.protocol == ProtocolKind::SecureNn {
        println!(
            "communication       {} bytes ({}{}) in {} messages, {} rounds",
            r.bytes_total,
            human_bytes(r.bytes_total as f64),
            match r.iterations {
                0 => String::new(),
                n => format!(
                    ", {} per iteration",
                    human_bytes(r.bytes_total as f64 / n as f64)
                ),
            },
            r.messages,
            r.rounds
        );
    }
    if let Some(v) = r.virtual_seconds {
        println!(
            "virtual time        {v:.3} s on the simulated {} network (three machines, one party each)",
            r.network
        );
    }
    println!(
        "time                {:.3} s wall, {:.3} s CPU",
        r.wall_seconds, r.cpu_seconds
    );
    if let Some(line) = super::peak_memory_line(&r.peak_memory_bytes) {
        println!("peak memory         {line}");
    }
    match out {
        Some(out) if secure => println!(
            "weights             written to {} (by the model owner, P{}: the only party that \
             learns them)",
            out.display(),
            MODEL_OWNER.0
        ),
        Some(out) => println!("weights             written to {}", out.display()),
        None => {}
    }
    if let Some(d) = ckpt {
        println!(
            "checkpoints         {} (the two latest epochs of every party; --resume continues)",
            d.display()
        );
    }
}

/// Phases run once per iteration (the others once per run, or per epoch for the test).
const PER_ITERATION: [&str; 5] = ["input", "forward", "asm", "backward", "update"];

/// `--report table` of a training run: bytes, messages and rounds per phase and layer, with
/// per-iteration averages; the operation tree below it when the run was traced.
pub(crate) fn print_phase_table(r: &TrainReport) {
    let n = r.iterations.max(1) as f64;
    println!(
        "\nper phase and layer ({} iterations; per iteration: the average over them)",
        r.iterations
    );
    println!(
        "  {:<9} {:<14} {:>16} {:>10} {:>8} {:>14} {:>9}",
        "phase", "layer", "bytes", "messages", "rounds", "bytes/iter", "rounds/iter"
    );
    let row = |l: &PhaseReport, per: bool| {
        println!(
            "  {:<9} {:<14} {:>16} {:>10} {:>8} {:>14} {:>9}",
            l.phase,
            l.layer,
            l.bytes,
            l.messages,
            l.rounds,
            if per {
                format!("{:.0}", l.bytes as f64 / n)
            } else {
                "-".into()
            },
            if per {
                format!("{:.1}", l.rounds as f64 / n)
            } else {
                "-".into()
            }
        );
    };
    for l in &r.layers {
        row(l, PER_ITERATION.contains(&l.phase.as_str()));
    }
    let sum = |f: &dyn Fn(&&PhaseReport) -> bool| PhaseReport {
        phase: String::new(),
        layer: String::new(),
        bytes: r.layers.iter().filter(f).map(|l| l.bytes).sum(),
        messages: r.layers.iter().filter(f).map(|l| l.messages).sum(),
        rounds: r.layers.iter().filter(f).map(|l| l.rounds).sum(),
    };
    let step = sum(&|l| PER_ITERATION.contains(&l.phase.as_str()));
    row(
        &PhaseReport {
            phase: "iteration".into(),
            layer: "(the 5 phases)".into(),
            ..step
        },
        true,
    );
    let all = sum(&|_| true);
    println!(
        "  {:<9} {:<14} {:>16} {:>10} {:>8}",
        "total", "", all.bytes, all.messages, all.rounds
    );
    println!(
        "  session: {} bytes, {} messages, {} rounds (with the seed agreement)",
        r.bytes_total, r.messages, r.rounds
    );
    if !r.ops.is_empty() {
        let clock = if r.virtual_seconds.is_some() {
            "virtual"
        } else {
            "wall"
        };
        println!(
            "\noperations (all iterations; repeat counters merged: epoch/iter/forward/2.relu/...)"
        );
        println!(
            "{}",
            securenn::metrics::table::render(&r.ops, Some(7), clock)
        );
    }
}

impl TrainArgs {
    /// Whether the run records its operation tree (the metrics layer): a secure run with a
    /// report.
    pub(crate) fn records_ops(&self) -> bool {
        self.protocol == Some(TrainProtocolArg::Securenn)
            && (self.report.is_some() || self.json.is_some())
    }
}
