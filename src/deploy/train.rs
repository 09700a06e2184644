//! Secure training in a deployment (`[job] kind = "train"`), one party per process.
//!
//! Before contacting anyone each party reads only what is its own: the model owner its initial
//! weights (a weight file, an ONNX file, or a seeded initialisation from fresh entropy that no
//! one else learns) and where it will write the trained ones (`out`, never overwritten without
//! `force = true`), the data owner its images (the training split of its MNIST CSV and the first
//! `test_samples` images of the test split). Once connected the parties agree on the public job
//! ([`JobParams::train`]); the model owner of an ONNX job sends the architecture; the data owner
//! sends its counts of images ([`DataCounts`]), which only it knew; and all three agree again,
//! counts included, so that a data owner telling the two others different counts is caught.
//! Then every party runs [`party_train_job`]: each checkpoints its own shares into its own
//! `checkpoint_dir` at every epoch end (`resume = true` continues from the latest epoch all
//! three have), and at the end the model owner alone learns the trained weights and writes them.

use super::*;
use crate::data::LabelColumn;
use crate::infer::{Layout, ProtocolKind};
use crate::scenario::{JobKind, LayoutName};
use crate::training::{
    EpochStat, PartyTrainInputs, Progress, TrainJob, TrainProgress, party_train_job,
};

/// A deployment's training job: `[job] kind = "train"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainJobEntry {
    /// `train`.
    pub kind: JobKind,
    /// `securenn` (Pond cannot train).
    pub protocol: String,
    /// A built-in model name (exactly one of `model` and `onnx` is given).
    pub model: Option<String>,
    /// An ONNX file with the architecture and the initial weights (model owner only, relative
    /// to the deployment file): the model owner sends the architecture, never a weight.
    pub onnx: Option<PathBuf>,
    /// Initial weights of a built-in model (model owner only); default: a seeded
    /// initialisation from fresh entropy at the model owner, which no one else learns.
    pub weights: Option<PathBuf>,
    /// `default` or `paper`.
    #[serde(default)]
    pub layout: LayoutName,
    pub epochs: usize,
    pub batch: usize,
    /// The SGD learning rate.
    pub lr: f64,
    /// Halve `lr` every this many epochs.
    pub lr_halve_every: Option<usize>,
    /// Stop each epoch after this many iterations (default: every full batch).
    pub iterations: Option<usize>,
    /// Test images (the data owner's) of the secure test at every epoch end; 0: no test.
    #[serde(default)]
    pub test_samples: usize,
    /// MNIST CSV (data owner only; default: the bundled sample), split as the bundled sample
    /// is: the last fifth of each digit's images is the test split, the rest trains.
    pub data: Option<PathBuf>,
    /// Where the label is in each line of `data`: `last` (default) or `first`.
    #[serde(default)]
    pub label_column: LabelColumn,
    pub data_owner: u8,
    pub model_owner: u8,
    /// Where the model owner writes the trained weights (safetensors, relative to the
    /// deployment file; the others ignore it).
    pub out: PathBuf,
    /// Overwrite `out` if it exists.
    #[serde(default)]
    pub force: bool,
    /// Each party checkpoints its shares here (its own directory, relative to its deployment
    /// file) at every epoch end, files of mode 0600.
    pub checkpoint_dir: Option<PathBuf>,
    /// Continue from the latest checkpoint all three parties have (every party must say so).
    #[serde(default)]
    pub resume: bool,
    /// Refused without [`FixedSeed::AllowInsecure`], as for inference; with it, it seeds the
    /// session and the data owner's shuffle (never the initial weights).
    pub seed: Option<u64>,
    /// Seconds to wait for every peer at start-up.
    pub connect_timeout: Option<u64>,
    /// Seconds a party waits for a peer's message.
    pub timeout: Option<u64>,
}

impl TrainJobEntry {
    /// The model as the parties agree on it and reports name it: the built-in model's name, or
    /// [`ONNX_MODEL`].
    pub fn model_name(&self) -> &str {
        self.model.as_deref().unwrap_or(ONNX_MODEL)
    }

    fn layout(&self) -> Layout {
        match self.layout {
            LayoutName::Default => Layout::Default,
            LayoutName::Paper => Layout::Paper,
        }
    }

    /// The checks that need no file but the deployment, naming the key.
    pub(super) fn check(&self, path: &Path) -> Result<(), DeployError> {
        if self.protocol != "securenn" {
            return Err(file_err(
                path,
                format!(
                    "job.protocol: {:?}: a deployment trains with securenn (Pond cannot train: \
                     its ReLU is a polynomial with no exact derivative, and it has no division)",
                    self.protocol
                ),
            ));
        }
        check_model_keys(
            self.model.as_deref(),
            self.onnx.as_deref(),
            self.weights.as_deref(),
            path,
        )?;
        if self.data_owner > 2 || self.model_owner > 2 {
            return Err(file_err(
                path,
                "job.data_owner and job.model_owner must be 0, 1 or 2",
            ));
        }
        for (key, v) in [
            ("epochs", Some(self.epochs)),
            ("batch", Some(self.batch)),
            ("iterations", self.iterations),
            ("lr_halve_every", self.lr_halve_every),
        ] {
            if v == Some(0) {
                return Err(file_err(path, format!("job.{key} must be at least 1")));
            }
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(file_err(
                path,
                format!("job.lr: {} is not a positive number", self.lr),
            ));
        }
        if self.resume && self.checkpoint_dir.is_none() {
            return Err(file_err(
                path,
                "job.resume: resuming needs job.checkpoint_dir, where the run to continue \
                 checkpointed",
            ));
        }
        Ok(())
    }
}

/// The data owner's numbers of training and test images: only it knows them before the
/// session. It sends them to both peers once the public job is agreed (16 bytes: two
/// little-endian u64), and all three then agree on them with the rest of the job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataCounts {
    pub train: u64,
    pub test: u64,
}

impl Wire for DataCounts {
    type Shape = ();
    fn wire_len(_: &()) -> usize {
        16
    }
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.train.to_le_bytes());
        out.extend_from_slice(&self.test.to_le_bytes());
    }
    fn read(bytes: &[u8], _: &()) -> Result<Self, String> {
        let word = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("16 bytes"));
        Ok(Self {
            train: word(0),
            test: word(8),
        })
    }
}

/// The counts job: the data owner (which passes its `mine`) sends its counts to both peers,
/// who receive them from `owner`; every party returns them.
fn counts_job(mine: Option<DataCounts>, owner: PartyId) -> JobFn<DataCounts> {
    Box::new(move |ctx: Ctx| {
        Box::pin(async move {
            match mine {
                Some(c) => {
                    for p in (0..3).map(PartyId).filter(|p| *p != ctx.me()) {
                        ctx.send(p, &c)?;
                    }
                    Ok(c)
                }
                None => ctx.recv(owner, &()).await,
            }
        })
    })
}

impl JobParams {
    /// The public parameters of training job `job` on `model` (as run: layout applied) with
    /// `fp`; without the model's input and architecture if `model` is `None` (an ONNX job
    /// before the model owner has sent it), and without the images' counts if `counts` is
    /// `None` (before the data owner has sent them).
    pub fn train(
        job: &TrainJobEntry,
        model: Option<&crate::nn::Model>,
        counts: Option<DataCounts>,
        fp: FixedPoint,
    ) -> Self {
        let model = model.map(architecture_fields);
        let opt = |v: Option<usize>| v.map_or_else(|| "none".to_string(), |v| v.to_string());
        let fields = [
            (
                "securenn.version",
                Some(env!("CARGO_PKG_VERSION").to_string()),
            ),
            ("job.kind", Some("train".to_string())),
            ("job.protocol", Some(job.protocol.clone())),
            ("job.model", Some(job.model_name().to_string())),
            ("model.input", model.as_ref().map(|m| m.0.clone())),
            ("model.architecture", model.map(|m| m.1)),
            (
                "job.layout",
                Some(format!("{:?}", job.layout()).to_lowercase()),
            ),
            ("job.epochs", Some(job.epochs.to_string())),
            ("job.batch", Some(job.batch.to_string())),
            ("job.lr", Some(job.lr.to_string())),
            ("job.lr_halve_every", Some(opt(job.lr_halve_every))),
            ("job.iterations", Some(opt(job.iterations))),
            ("job.test_samples", Some(job.test_samples.to_string())),
            ("job.data_owner", Some(job.data_owner.to_string())),
            ("job.model_owner", Some(job.model_owner.to_string())),
            ("job.resume", Some(job.resume.to_string())),
            ("fixed.frac_bits", Some(fp.frac_bits.to_string())),
            ("data.train_images", counts.map(|c| c.train.to_string())),
            ("data.test_images", counts.map(|c| c.test.to_string())),
        ];
        Self(
            fields
                .into_iter()
                .filter_map(|(k, v)| Some((k.to_string(), v?)))
                .collect(),
        )
    }
}

/// What a training job did at one party (in its [`PartyReport`]).
#[derive(Clone, Debug, serde::Serialize)]
pub struct PartyTraining {
    pub layout: Layout,
    pub epochs: usize,
    pub learning_rate: f64,
    pub lr_halve_every: Option<usize>,
    pub iterations_per_epoch: usize,
    /// Iterations this run computed (a resumed run counts only its own).
    pub iterations: usize,
    /// The epoch this run started from (0: from the initial weights).
    pub resumed_from: usize,
    /// The data owner's counts, as agreed.
    pub train_images: usize,
    pub test_images: usize,
    /// One per epoch; the test accuracy at the model owner only.
    pub epoch_stats: Vec<EpochStat>,
    /// At the model owner: where the initial weights came from.
    pub initial_weights: Option<String>,
    /// At the model owner: the file it wrote the trained weights to.
    pub weights_written: Option<String>,
    /// This party's checkpoint directory.
    pub checkpoint_dir: Option<String>,
    /// Traffic per phase and layer as this party sent it (`weights`, `input`, `forward` and
    /// `backward` per layer, `asm`, `update`, `test`, `reveal`; summed over epochs and
    /// iterations), as `securenn train`'s `layers` counts all three parties'.
    pub layers: Vec<crate::training::PhaseReport>,
}

/// A fresh seed from the operating system.
fn fresh_seed() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("operating system entropy is available");
    u64::from_le_bytes(b)
}

/// Before the run: the model owner's `out` can be written (not a directory; an existing file
/// only with `force`).
fn check_out(out: &Path, force: bool) -> Result<(), DeployError> {
    if out.is_dir() {
        return Err(file_err(
            out,
            "job.out is a directory; give the file the model owner writes the trained weights to",
        ));
    }
    if out.exists() && !force {
        return Err(file_err(
            out,
            "job.out exists; the model owner never overwrites it unless [job] says force = true",
        ));
    }
    Ok(())
}

/// This party's checkpoint directory, made (mode 0700 on Unix) if it is not there.
fn private_dir(dir: &Path) -> Result<(), DeployError> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
        .map_err(|e| file_err(dir, format!("job.checkpoint_dir: {e}")))
}

/// Party `net.id`'s training job of the deployment `dep` (read from `config`).
pub(super) fn train_party(
    dep: &Deployment,
    job: &TrainJobEntry,
    config: &Path,
    net: PartyNet,
    source: SeedSource,
    watch: Watch,
) -> Result<PartyReport, DeployError> {
    let id = net.id;
    let (data_owner, model_owner) = (PartyId(job.data_owner), PartyId(job.model_owner));
    let fp = FixedPoint::default();
    let layout = job.layout();
    let run_model = move |m: &crate::nn::Model| layout.apply(m);
    let fixed_seed = match source {
        SeedSource::Fixed(s) => Some(s),
        SeedSource::Os => None,
    };
    let mut model = job
        .model
        .as_deref()
        .map(|m| crate::models::by_name(m).expect("checked"));
    let onnx = job.onnx.is_some();
    // The model owner's initial weights and the file for the trained ones, before contacting
    // anyone.
    let out = (id == model_owner).then(|| beside(config, &job.out));
    if let Some(out) = &out {
        check_out(out, job.force)?;
    }
    let (weights, initial) = if id == model_owner {
        let (w, from) = match (&job.onnx, &job.weights) {
            (Some(p), _) => {
                let path = beside(config, p);
                let (m, w, _) = load_onnx(&path, fp, None, true)?;
                model = Some(m);
                (w, format!("{} (ONNX)", path.display()))
            }
            (None, Some(p)) => {
                let path = beside(config, p);
                let m = model.as_ref().expect("a built-in model");
                let (w, _) = weights_file::load(&path, m)?;
                weights_file::check_fixed(&path.display().to_string(), &w, fp)?;
                (w, path.display().to_string())
            }
            (None, None) => {
                // Never from the job's seed, which everyone who has the file knows.
                let m = model.as_ref().expect("a built-in model");
                let w = m
                    .init_weights(fresh_seed())
                    .map_err(crate::training::TrainError::from)?;
                (
                    w,
                    "a seeded initialisation from fresh entropy, at the model owner (its seed known to no one)".to_string(),
                )
            }
        };
        let m = model.as_ref().expect("the model owner has the model");
        crate::training::backprop::Net::new(&run_model(m))
            .map_err(crate::training::TrainError::from)?;
        (Some(w), Some(from))
    } else {
        (None, None)
    };
    // The data owner's images.
    let data = if id == data_owner {
        let path = job.data.as_ref().map(|p| beside(config, p));
        let source = DataSource::file_or_bundled(path.as_deref());
        let (train, test, header) =
            crate::scenario::train_and_test(&source, job.label_column, job.test_samples)?;
        if let Some(h) = header {
            tracing::info!(
                "{source}: the first line is not numbers: skipped it as a header row ({h})"
            );
        }
        if train.images.len() < job.batch {
            return Err(file_err(
                config,
                format!(
                    "the data owner's {source} has {} training images (its training split), \
                     fewer than one batch of job.batch = {}",
                    train.images.len(),
                    job.batch
                ),
            ));
        }
        tracing::info!(
            "{source}: {} training images, {} test images; their counts go to the other \
             parties, the images to no one",
            train.images.len(),
            test.images.len()
        );
        Some((train, test))
    } else {
        None
    };
    let counts = data.as_ref().map(|(train, test)| DataCounts {
        train: train.images.len() as u64,
        test: test.images.len() as u64,
    });
    let checkpoint_dir = job.checkpoint_dir.as_ref().map(|d| beside(config, d));
    if let Some(d) = &checkpoint_dir {
        private_dir(d)?;
    }
    // The job as every party knows it before the session.
    let params = JobParams::train(
        job,
        model.as_ref().filter(|_| !onnx).map(run_model).as_ref(),
        None,
        fp,
    );
    let setup = SessionSetup {
        connect_timeout: Duration::from_secs(job.connect_timeout.unwrap_or(30)),
        limits: dep.limits.quic(),
        config: PartyConfig {
            recv_timeout: Duration::from_secs(job.timeout.unwrap_or(120)),
            fixed: fp,
        },
        source,
        watch,
    };
    let job_c = job.clone();
    let dir_c = checkpoint_dir.clone();
    let end = run_session(
        net,
        setup,
        |t, _| t,
        move |cluster, tell| {
            Box::pin(async move {
                let job = &job_c;
                agree(cluster, "agree", params).await?;
                let model = match model {
                    Some(m) if !onnx => m,
                    owned => {
                        let m = receive_model(cluster, owned, id, model_owner).await?;
                        if let Some((train, _)) = &data {
                            check_input(&m, model_owner, train)?;
                        }
                        m
                    }
                };
                let mut got = cluster
                    .run("counts", vec![counts_job(counts, data_owner)])
                    .await?;
                let counts = got.remove(0).value;
                let mine = JobParams::train(job, Some(&run_model(&model)), Some(counts), fp);
                agree(cluster, "agree-data", mine).await?;
                if counts.test != job.test_samples as u64 {
                    return Err(DeployError::Train(crate::training::TrainError::Spec(
                        format!(
                            "the data owner {data_owner} has {} test images; job.test_samples is \
                             {}",
                            counts.test, job.test_samples
                        ),
                    )));
                }
                let train_job = TrainJob {
                    protocol: ProtocolKind::SecureNn,
                    model,
                    layout,
                    epochs: job.epochs,
                    batch: job.batch,
                    learning_rate: job.lr,
                    lr_halve_every: job.lr_halve_every,
                    iterations: job.iterations,
                    train_images: usize::try_from(counts.train).unwrap_or(usize::MAX),
                    test_images: job.test_samples,
                    data_owner,
                    model_owner,
                    resume: job.resume,
                    seed: fixed_seed,
                    frac_bits: fp.frac_bits,
                };
                train_job.check()?;
                let epochs = job.epochs;
                let progress: Progress = {
                    let (tell, dir) = (tell.clone(), dir_c.clone());
                    Arc::new(move |p| match p {
                        TrainProgress::Iteration {
                            epoch,
                            iteration,
                            of,
                        } => tell(PartyEvent::Iteration {
                            epoch,
                            iteration,
                            of,
                        }),
                        TrainProgress::Epoch {
                            epoch,
                            test_accuracy,
                        } => tell(PartyEvent::Epoch {
                            epoch,
                            epochs,
                            test_accuracy,
                            checkpoint_dir: dir.clone(),
                        }),
                    })
                };
                let inputs = PartyTrainInputs {
                    weights,
                    data,
                    // The data owner's shuffle: reproducible only where the whole run is.
                    shuffle_seed: fixed_seed.unwrap_or_else(fresh_seed),
                    checkpoint_dir: dir_c,
                    progress: Some(progress),
                };
                let party = party_train_job(&train_job, id, inputs)?;
                tell(PartyEvent::TrainingStarted {
                    epochs,
                    iterations: train_job.iterations_per_epoch(),
                    train_images: train_job.train_images,
                    test_images: train_job.test_images,
                });
                let mut outs = cluster.run("train", vec![party]).await?;
                Ok((outs.remove(0).value, train_job))
            })
        },
    )?;
    let (out_job, train_job) = end.value;
    // The model owner writes the trained weights, which only it learned.
    let written = match (&out, &out_job.weights) {
        (Some(path), Some(w)) => {
            check_out(path, job.force)?;
            let last = out_job.epoch_stats.last().and_then(|e| e.test_accuracy);
            let meta = std::collections::HashMap::from([
                ("model".to_string(), job.model_name().to_string()),
                (
                    "trained".to_string(),
                    "securenn party: secure training".to_string(),
                ),
                ("epochs".to_string(), job.epochs.to_string()),
                ("batch".to_string(), job.batch.to_string()),
                ("learning_rate".to_string(), job.lr.to_string()),
                ("iterations".to_string(), out_job.iterations.to_string()),
                (
                    "train_images".to_string(),
                    train_job.train_images.to_string(),
                ),
                (
                    "test_accuracy".to_string(),
                    last.map_or_else(|| "none".into(), |a| format!("{a:.4}")),
                ),
            ]);
            weights_file::save(path, w, meta, true)?;
            Some(path.display().to_string())
        }
        (Some(_), None) => {
            return Err(DeployError::Train(crate::training::TrainError::Spec(
                "the model owner received no trained weights".into(),
            )));
        }
        _ => None,
    };
    let (mine, start) = own_costs(&end.envelopes, "train");
    Ok(PartyReport {
        party: id.0,
        protocol: job.protocol.clone(),
        model: job.model_name().to_string(),
        samples: train_job.train_images,
        batch: job.batch,
        peers: end.peers,
        predictions: None,
        accuracy: None,
        bytes_sent: end.traffic.total_bytes(),
        messages_sent: end.traffic.total_messages(),
        rounds: end.traffic.rounds,
        quic_wire_bytes: end.quic_wire_bytes,
        wall_seconds: end.wall_seconds,
        peak_memory_bytes: end.peak_memory_bytes,
        comparison_widths: Vec::new(),
        layers: Vec::new(),
        training: Some(PartyTraining {
            layout,
            epochs: job.epochs,
            learning_rate: job.lr,
            lr_halve_every: job.lr_halve_every,
            iterations_per_epoch: train_job.iterations_per_epoch(),
            iterations: out_job.iterations,
            resumed_from: out_job.resumed_from,
            train_images: train_job.train_images,
            test_images: train_job.test_images,
            epoch_stats: out_job.epoch_stats,
            initial_weights: initial,
            weights_written: written,
            checkpoint_dir: checkpoint_dir.map(|d| d.display().to_string()),
            layers: crate::training::phase_costs(&mine, start),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The template's training job, as its comment says to make it: kind = "train", samples
    /// removed, the commented training keys uncommented.
    fn template_training() -> String {
        let mut out = Vec::new();
        let mut in_block = false;
        for line in TEMPLATE.lines() {
            if line.starts_with("samples = ") {
                continue;
            }
            if line.starts_with("# kind = \"train\"") {
                in_block = true;
            }
            if in_block && line.starts_with("# The parties then also agree") {
                in_block = false;
            }
            match line.strip_prefix("# ") {
                Some(key) if in_block => out.push(key.to_string()),
                _ => out.push(line.to_string()),
            }
        }
        // The keys go into [job], before [limits].
        let text = out.join("\n");
        let (head, limits) = text.split_once("\n[limits]").unwrap();
        let (before, job) = head.split_once("[job]\n").unwrap();
        let (job, training) = job.split_once("# Secure training instead").unwrap();
        format!("{before}[job]\n{job}\n# Secure training instead{training}\n[limits]{limits}")
    }

    #[test]
    fn the_template_says_how_to_train() {
        let text = template_training();
        let d = Deployment::parse(&text, Path::new("deploy.toml")).unwrap_or_else(|e| {
            panic!("{e}\n{text}");
        });
        let DeploymentJob::Train(job) = &d.job else {
            panic!("not a training job: {text}")
        };
        assert_eq!((job.epochs, job.batch, job.lr), (1, 10, 0.03125));
        assert_eq!(job.out, Path::new("trained.safetensors"));
        assert_eq!(job.test_samples, 50);
        // An inference key in a training job is refused, naming it.
        let bad = text.replace("batch = 10", "batch = 10\nsamples = 3");
        let e = Deployment::parse(&bad, Path::new("deploy.toml")).unwrap_err();
        assert!(e.to_string().contains("unknown field `samples`"), "{e}");
    }

    /// The parameters name every training field; the counts appear once the data owner has
    /// sent them; the counts survive the wire.
    #[test]
    fn training_parameters_and_counts() {
        let d = Deployment::parse(&template_training(), Path::new("deploy.toml")).unwrap();
        let DeploymentJob::Train(job) = &d.job else {
            panic!()
        };
        let fp = FixedPoint::default();
        let before = JobParams::train(job, None, None, fp);
        for (k, v) in [
            ("job.kind", "train"),
            ("job.lr", "0.03125"),
            ("job.lr_halve_every", "10"),
            ("job.iterations", "100"),
            ("job.test_samples", "50"),
            ("job.layout", "default"),
            ("job.resume", "false"),
        ] {
            assert_eq!(before.get(k), Some(v), "{k}");
        }
        assert_eq!(before.get("data.train_images"), None);
        assert_eq!(before.get("model.architecture"), None);
        let counts = DataCounts {
            train: 4000,
            test: 50,
        };
        let m = crate::models::network_a();
        let after = JobParams::train(job, Some(&m), Some(counts), fp);
        assert_eq!(after.get("data.train_images"), Some("4000"));
        assert_eq!(after.get("data.test_images"), Some("50"));
        assert!(after.get("model.architecture").is_some());
        let mut bytes = Vec::new();
        counts.write(&mut bytes);
        assert_eq!(bytes.len(), DataCounts::wire_len(&()));
        assert_eq!(DataCounts::read(&bytes, &()).unwrap(), counts);
    }
}
