//! Secure training (SecureNN paper §4, Tables 3-5; reference §2.3, §9.6): the data owner's
//! images and labels enter as shares, the model owner's initial weights too; every iteration
//! runs the forward pass keeping DReLU bits and DMaxpool one-hot tensors, the approximate
//! softmax through Division ([`asm`]), the backward pass and the SGD step
//! ([`backprop::iteration`]); at every epoch end each party checkpoints its shares
//! ([`checkpoint`]) and, if asked, secure inference measures the test accuracy, which only the
//! model owner learns; at the end the weights are revealed to the model owner only.
//!
//! The same job on the plaintext backend is the fixed-point twin the secure run is held
//! against: same operations, same numbers, exact truncation.

pub mod asm;
pub mod backprop;
pub mod checkpoint;

use crate::channel::{Ctx, PartyId, ProtocolError};
use crate::data::Mnist;
use crate::fixed::FixedPoint;
use crate::infer::{Layout, ProtocolKind};
use crate::metrics::{OpReport, SessionTrace, op_reports};
use crate::nn::{Model, ModelError, Weights, forward, input_params};
use crate::party::{JobFn, LocalCluster, Network, PartyConfig, SeedSource};
use crate::protocol::{Plaintext, ReluKind, Trainable};
use crate::ring::RingTensor;
use backprop::{Net, Sgd};
use checkpoint::{Checkpoint, SavedTensor};
use ndarray::{ArrayD, IxDyn};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use securenn_transports::EnvelopeRecord;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Images per batch of the epoch-end test (bounds memory like inference's batches).
pub const TEST_BATCH: usize = 100;

/// A secure (or twin) training job.
#[derive(Clone)]
pub struct TrainSpec {
    pub protocol: ProtocolKind,
    pub model_name: String,
    /// The model as defined (a trailing argmax is ignored for training and used for the test).
    pub model: Model,
    pub layout: Layout,
    /// Initial weights, the model owner's.
    pub weights: Weights,
    pub train: Mnist,
    /// Held-out images for the epoch-end test accuracy (empty: no test).
    pub test: Mnist,
    pub epochs: usize,
    pub batch: usize,
    pub learning_rate: f64,
    /// Halve the learning rate every this many epochs (`None`: a constant rate). With a
    /// power-of-two rate each halving is one more bit of the update's truncation.
    pub lr_halve_every: Option<usize>,
    /// Seeds the session's randomness (with [`SeedSource::Fixed`]) and the data owner's
    /// per-epoch shuffle.
    pub seed: u64,
    /// Stop each epoch after this many iterations (`None`: every full batch of the epoch).
    pub iterations: Option<usize>,
    pub data_owner: PartyId,
    pub model_owner: PartyId,
    pub config: PartyConfig,
    pub network: Network,
    pub network_name: String,
    /// Each party checkpoints its shares here at every epoch end.
    pub checkpoint_dir: Option<PathBuf>,
    /// Continue from the latest checkpoint all parties have in `checkpoint_dir`.
    pub resume: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error("{0}")]
    Spec(String),
}

/// Where training is, for a progress display (at the model owner).
#[derive(Clone, Copy, Debug)]
pub enum TrainProgress {
    Iteration {
        epoch: usize,
        iteration: usize,
        of: usize,
    },
    Epoch {
        epoch: usize,
        test_accuracy: Option<f64>,
    },
}

pub type Progress = Arc<dyn Fn(TrainProgress) + Send + Sync>;

/// Traffic of one layer in one phase, all iterations summed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhaseReport {
    /// `weights`, `input`, `forward`, `asm`, `backward`, `update`, `test`, `checkpoint`,
    /// `reveal`.
    pub phase: String,
    /// The layer (forward and backward), else empty.
    pub layer: String,
    pub bytes: u64,
    pub messages: u64,
    pub rounds: u64,
}

/// One epoch's end.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochStat {
    pub epoch: usize,
    /// Measured by secure inference on the test images; `null` without a test set.
    pub test_accuracy: Option<f64>,
}

/// What a training run did and cost. Field names are stable: other tools read the JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainReport {
    pub protocol: ProtocolKind,
    pub model: String,
    pub layout: Layout,
    pub transport: String,
    pub network: String,
    pub epochs: usize,
    pub batch: usize,
    pub learning_rate: f64,
    pub lr_halve_every: Option<usize>,
    pub seed: u64,
    pub frac_bits: u32,
    pub train_images: usize,
    pub test_images: usize,
    /// Iterations run by this invocation (a resumed run counts only its own).
    pub iterations: usize,
    /// The epoch this invocation started from (0: from the initial weights).
    pub resumed_from: usize,
    pub epoch_stats: Vec<EpochStat>,
    pub bytes_total: u64,
    pub messages: u64,
    pub rounds: u64,
    /// Per phase and layer.
    pub layers: Vec<PhaseReport>,
    #[serde(default)]
    pub ops: Vec<OpReport>,
    pub wall_seconds: f64,
    pub virtual_seconds: Option<f64>,
    pub cpu_seconds: f64,
    /// Each party's peak of live heap bytes during the job (P0, P1, P2; one figure for the
    /// plaintext twin), as [`crate::infer::InferReport::peak_memory_bytes`].
    #[serde(default)]
    pub peak_memory_bytes: Vec<u64>,
    /// The trained weights (at the model owner); not serialised.
    #[serde(skip)]
    pub weights: Option<Weights>,
    #[serde(skip)]
    pub trace: Option<Arc<SessionTrace>>,
}

/// The public description of the job every party runs.
#[derive(Clone)]
struct Plan {
    net: Net,
    /// The model as it runs for the test (layout applied, argmax at the end).
    eval: Model,
    /// The model as it trains (layout applied, no argmax): parameter names and shapes.
    train_model: Model,
    input: Vec<usize>,
    epochs: usize,
    batch: usize,
    per_epoch: usize,
    sgd: Sgd,
    seed: u64,
    train_len: usize,
    test_len: usize,
    owners: (PartyId, PartyId),
    digest: String,
    checkpoint_dir: Option<PathBuf>,
    resume: bool,
}

/// The data owner's per-epoch order of the training images (a Fisher-Yates shuffle from the
/// job's seed and the epoch), so a resumed run sees the same batches.
pub fn epoch_order(seed: u64, epoch: usize, n: usize) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(1000 + epoch as u64);
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    order
}

impl TrainSpec {
    fn check(&self) -> Result<(), TrainError> {
        let job = self.job();
        job.check_protocol()?;
        self.model.validate(&self.weights)?;
        job.check()?;
        if self.resume && self.checkpoint_dir.is_none() {
            return Err(TrainError::Spec(
                "--resume needs the --checkpoint-dir of the run to continue".into(),
            ));
        }
        let net = Net::new(&job.run_model())?;
        let label = format!("model {}", self.model_name);
        check_images(&self.model, &label, net.classes, "training", &self.train)?;
        check_images(&self.model, &label, net.classes, "test", &self.test)?;
        Ok(())
    }

    /// The public job of this spec: its parameters, the counts of its images, and its seed
    /// (public: a spec's session seed is fixed).
    pub fn job(&self) -> TrainJob {
        TrainJob {
            protocol: self.protocol,
            model: self.model.clone(),
            layout: self.layout,
            epochs: self.epochs,
            batch: self.batch,
            learning_rate: self.learning_rate,
            lr_halve_every: self.lr_halve_every,
            iterations: self.iterations,
            train_images: self.train.images.len(),
            test_images: self.test.images.len(),
            data_owner: self.data_owner,
            model_owner: self.model_owner,
            resume: self.resume,
            seed: Some(self.seed),
            frac_bits: self.config.fixed.frac_bits,
        }
    }

    fn plan(&self) -> Result<Plan, TrainError> {
        self.job().plan(self.seed, self.checkpoint_dir.clone())
    }
}

/// Images and labels `d` (`what`: training or test) checked against `model` (`label` in
/// errors) of `classes` classes: one label per image, every image of the model's input size,
/// every label a class.
fn check_images(
    model: &Model,
    label: &str,
    classes: usize,
    what: &str,
    d: &Mnist,
) -> Result<(), TrainError> {
    let n = crate::ring::numel(&model.input);
    if d.images.len() != d.labels.len() {
        return Err(TrainError::Spec(format!(
            "{} {what} images but {} labels",
            d.images.len(),
            d.labels.len()
        )));
    }
    if let Some(i) = d.images.iter().position(|im| im.len() != n) {
        return Err(TrainError::Spec(format!(
            "{what} image {i} has {} values, {label} wants {n}",
            d.images[i].len(),
        )));
    }
    if let Some(i) = d.labels.iter().position(|&y| y as usize >= classes) {
        return Err(TrainError::Spec(format!(
            "{what} image {i} has label {}, the model has {classes} classes",
            d.labels[i]
        )));
    }
    Ok(())
}

/// The public parameters of a training job: what all three parties know and agree on before
/// it runs, never a weight, an image, a path or a secret seed. [`run_training`] makes one from
/// its [`TrainSpec`] ([`TrainSpec::job`]); in a deployment every party makes its own, with the
/// data owner's counts of images agreed at start-up, and runs [`party_train_job`].
#[derive(Clone, Debug)]
pub struct TrainJob {
    /// [`ProtocolKind::SecureNn`] (or the plaintext twin, in one process only).
    pub protocol: ProtocolKind,
    /// The model as defined (a trailing argmax is ignored for training and used for the test).
    pub model: Model,
    pub layout: Layout,
    pub epochs: usize,
    pub batch: usize,
    pub learning_rate: f64,
    /// Halve the learning rate every this many epochs (`None`: a constant rate).
    pub lr_halve_every: Option<usize>,
    /// Stop each epoch after this many iterations (`None`: every full batch of the epoch).
    pub iterations: Option<usize>,
    /// The data owner's number of training images.
    pub train_images: usize,
    /// The data owner's number of test images (0: no epoch-end test).
    pub test_images: usize,
    pub data_owner: PartyId,
    pub model_owner: PartyId,
    /// Continue from the latest checkpoint all three parties have (every party must agree:
    /// they exchange their latest epochs first).
    pub resume: bool,
    /// The session seed if it is public (an experiment's fixed seed), named in the checkpoints'
    /// job digest; `None` where every party draws fresh entropy (a deployment).
    pub seed: Option<u64>,
    /// Fractional bits of the fixed-point encoding the session runs with.
    pub frac_bits: u32,
}

impl TrainJob {
    /// Pond cannot train.
    fn check_protocol(&self) -> Result<(), TrainError> {
        if self.protocol == ProtocolKind::Pond {
            return Err(TrainError::Spec(
                "Pond cannot train: its ReLU is a polynomial with no exact derivative and it has \
                 no division; use --protocol securenn (or plaintext for the fixed-point twin)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Whether the parameters can run: a protocol that trains, counts of at least 1, a positive
    /// rate, enough training images for one batch, owners among the parties, and a model that
    /// secure training can run.
    pub fn check(&self) -> Result<(), TrainError> {
        self.check_protocol()?;
        if self.batch == 0 {
            return Err(TrainError::Spec("--batch must be at least 1".into()));
        }
        if self.epochs == 0 {
            return Err(TrainError::Spec("--epochs must be at least 1".into()));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(TrainError::Spec(format!(
                "--lr must be a positive number, got {}",
                self.learning_rate
            )));
        }
        if self.lr_halve_every == Some(0) {
            return Err(TrainError::Spec(
                "--lr-halve-every must be at least 1".into(),
            ));
        }
        if self.iterations == Some(0) {
            return Err(TrainError::Spec("--iterations must be at least 1".into()));
        }
        if self.train_images < self.batch {
            return Err(TrainError::Spec(format!(
                "{} training images do not fill one batch of {}",
                self.train_images, self.batch
            )));
        }
        if self.data_owner.0 > 2 || self.model_owner.0 > 2 {
            return Err(TrainError::Spec("owners must be parties 0, 1 or 2".into()));
        }
        Net::new(&self.run_model())?;
        Ok(())
    }

    /// The model as it runs: the layout applied, argmax kept (the test's prediction).
    pub fn run_model(&self) -> Model {
        self.layout.apply(&self.model)
    }

    /// Iterations in each epoch: `iterations`, at most the full batches of the training images.
    pub fn iterations_per_epoch(&self) -> usize {
        let full = self.train_images / self.batch.max(1);
        self.iterations.map_or(full, |i| i.min(full))
    }

    fn sgd(&self) -> Sgd {
        Sgd {
            learning_rate: self.learning_rate,
            batch: self.batch,
            halve_every: self.lr_halve_every,
        }
    }

    /// A digest of the public job parameters, naming checkpoints (the number of epochs is not
    /// in it: a resumed run may go on for more).
    pub fn digest(&self) -> String {
        let public = serde_json::json!({
            "protocol": self.protocol,
            "model": self.run_model(),
            "batch": self.batch,
            "learning_rate": self.learning_rate,
            "lr_halve_every": self.lr_halve_every,
            "seed": self.seed,
            "train_images": self.train_images,
            "iterations": self.iterations_per_epoch(),
            "owners": [self.data_owner.0, self.model_owner.0],
            "frac_bits": self.frac_bits,
        });
        blake3::hash(public.to_string().as_bytes()).to_hex()[..16].to_string()
    }

    /// The plan a party runs: the data owner shuffles with `shuffle_seed`; every party
    /// checkpoints into its own `checkpoint_dir`.
    fn plan(&self, shuffle_seed: u64, checkpoint_dir: Option<PathBuf>) -> Result<Plan, TrainError> {
        let eval = self.run_model();
        let train_model = eval.without_argmax();
        Ok(Plan {
            net: Net::new(&train_model)?,
            eval: if eval.nodes.last().map(|n| &n.layer) == Some(&crate::nn::Layer::Argmax) {
                eval
            } else {
                eval.argmax()
            },
            train_model,
            input: self.model.input.clone(),
            epochs: self.epochs,
            batch: self.batch,
            per_epoch: self.iterations_per_epoch(),
            sgd: self.sgd(),
            seed: shuffle_seed,
            train_len: self.train_images,
            test_len: self.test_images,
            owners: (self.data_owner, self.model_owner),
            digest: self.digest(),
            checkpoint_dir,
            resume: self.resume,
        })
    }
}

fn with_batch(b: usize, s: &[usize]) -> Vec<usize> {
    let mut v = vec![b];
    v.extend_from_slice(s);
    v
}

/// Images `idx` as a fixed-point batch and their one-hot labels.
fn encode_batch(
    fp: FixedPoint,
    data: &Mnist,
    idx: &[usize],
    input: &[usize],
    classes: usize,
) -> Result<(RingTensor, RingTensor, RingTensor), ProtocolError> {
    let bad = |e: crate::fixed::FixedError| ProtocolError::Input {
        op: "input".into(),
        reason: format!("an input image {}", crate::nn::unencodable(&e)),
    };
    let flat: Vec<f64> = idx
        .iter()
        .flat_map(|&i| data.images[i].iter().copied())
        .collect();
    let x = fp
        .encode_tensor(&with_batch(idx.len(), input), &flat)
        .map_err(bad)?;
    let one = fp.encode(1.0).expect("1 is encodable");
    let mut y = vec![0u64; idx.len() * classes];
    let mut labels = Vec::with_capacity(idx.len());
    for (r, &i) in idx.iter().enumerate() {
        y[r * classes + data.labels[i] as usize] = one;
        labels.push(u64::from(data.labels[i]));
    }
    Ok((
        x,
        RingTensor::from_vec(&[idx.len(), classes], y),
        RingTensor::from_vec(&[idx.len()], labels),
    ))
}

fn ckpt_err(e: checkpoint::CheckpointError) -> ProtocolError {
    ProtocolError::Input {
        op: "checkpoint".into(),
        reason: e.to_string(),
    }
}

/// The secure test: predictions by secure inference compared with the label shares; only the
/// number of correct predictions is opened, to the model owner.
async fn test_accuracy<P: Trainable>(
    p: &P,
    ctx: &Ctx,
    plan: &Plan,
    params: &[P::Tensor],
    data: Option<&(Mnist, Mnist)>,
) -> Result<Option<f64>, ProtocolError> {
    let ctx = ctx.child("test");
    let fp = ctx.fixed();
    let (data_owner, model_owner) = plan.owners;
    let idx: Vec<usize> = (0..plan.test_len).collect();
    let mut correct: Option<P::Tensor> = None;
    for chunk in idx.chunks(TEST_BATCH) {
        let bctx = ctx.child("batch");
        let mine = match data {
            Some((_, test)) => Some(encode_batch(
                fp,
                test,
                chunk,
                &plan.input,
                plan.net.classes,
            )?),
            None => None,
        };
        let b = chunk.len();
        let x = p
            .input(
                &bctx,
                data_owner,
                mine.as_ref().map(|m| &m.0),
                &with_batch(b, &plan.input),
                fp.frac_bits,
            )
            .await?;
        let labels = p
            .input(&bctx, data_owner, mine.as_ref().map(|m| &m.2), &[b], 0)
            .await?;
        let pred = forward(p, &bctx, &plan.eval, params, x).await?;
        // [pred = label] = DReLU(d)·DReLU(-d) for d = pred - label.
        let d = p.sub(&bctx, &pred, &labels)?;
        let zero = p.sub(&bctx, &d, &d)?;
        let neg = p.sub(&bctx, &zero, &d)?;
        let both = p.concat(&bctx, &[&p.reshape(&d, &[b, 1]), &p.reshape(&neg, &[b, 1])])?;
        let (_, bits) = p.relu_keep(&bctx, &both).await?;
        let half = |c: usize| crate::ring::Gather {
            shape: vec![b],
            index: (0..b).map(|i| 2 * i + c).collect(),
        };
        let (ge, le) = (p.gather(&bits, &half(0)), p.gather(&bits, &half(1)));
        let eq = p
            .products(
                &bctx,
                &[crate::protocol::TrainProduct {
                    x: &ge,
                    y: &le,
                    out: vec![b],
                    shift: 0,
                    op: Box::new(|a: &RingTensor, c: &RingTensor| a.mul(c)),
                }],
            )
            .await?
            .pop()
            .expect("one product");
        let n = backprop::sum_rows(p, &p.reshape(&eq, &[b, 1]));
        correct = Some(match correct {
            None => n,
            Some(c) => p.add(&bctx, &c, &n)?,
        });
    }
    let Some(correct) = correct else {
        return Ok(None);
    };
    let opened = p.reveal(&ctx, &correct, model_owner).await?;
    Ok(opened.map(|v| v.as_slice()[0] as f64 / plan.test_len as f64))
}

/// One party's training job; `progress` is told of every iteration and epoch end at this party.
async fn party_job<P: Trainable>(
    p: P,
    ctx: Ctx,
    plan: Arc<Plan>,
    weights: Option<Weights>,
    data: Option<Arc<(Mnist, Mnist)>>,
    progress: Option<Progress>,
    local: bool,
) -> Result<PartyTrainOutput, ProtocolError> {
    let fp = ctx.fixed();
    let me = ctx.me();
    let (data_owner, model_owner) = plan.owners;
    let shapes = plan
        .train_model
        .param_shapes()
        .map_err(|e| ProtocolError::Input {
            op: ctx.path().to_string(),
            reason: e.to_string(),
        })?;
    // Resume: agree on the latest epoch every party has a checkpoint of.
    let mut start = 0;
    let mut stats = Vec::new();
    let mut params: Option<Vec<P::Tensor>> = None;
    if let (true, Some(dir)) = (plan.resume, &plan.checkpoint_dir) {
        let rctx = ctx.child("resume");
        let have = checkpoint::epochs(dir, me.0)
            .map_err(ckpt_err)?
            .last()
            .map_or(0, |(e, _)| *e) as u64;
        let mut agreed = have;
        for peer in [PartyId(0), PartyId(1), PartyId(2)] {
            if peer != me && !local {
                rctx.send(peer, &RingTensor::from_vec(&[1], vec![have]))?;
            }
        }
        for peer in [PartyId(0), PartyId(1), PartyId(2)] {
            if peer != me && !local {
                let t: RingTensor = rctx.recv(peer, &vec![1]).await?;
                agreed = agreed.min(t.as_slice()[0]);
            }
        }
        if agreed > 0 {
            let c = checkpoint::load(dir, me.0, agreed as usize, &plan.digest).map_err(ckpt_err)?;
            if c.params.len() != shapes.len() {
                return Err(ckpt_err(checkpoint::CheckpointError::Corrupt {
                    path: dir.clone(),
                    reason: format!("{} tensors, the model has {}", c.params.len(), shapes.len()),
                }));
            }
            params = Some(
                c.params
                    .iter()
                    .map(|s| p.restore(&s.shape, s.frac, s.ring()))
                    .collect(),
            );
            stats = c
                .test_accuracy
                .iter()
                .enumerate()
                .map(|(i, a)| EpochStat {
                    epoch: i + 1,
                    test_accuracy: *a,
                })
                .collect();
            start = agreed as usize;
        }
    }
    let mut params = match params {
        Some(p) => p,
        None => input_params(&p, &ctx, &plan.train_model, model_owner, weights.as_ref()).await?,
    };
    let mut iterations = 0;
    for epoch in 1..=plan.epochs {
        // Epoch e's operations are at `epoch~(e-1)` whether or not the run resumed (the
        // skipped epochs' contexts are made, not used), so a resumed run draws the randomness
        // an uninterrupted one draws, and the operation tree merges the epochs.
        let ectx = ctx.child("epoch");
        if epoch <= start {
            continue;
        }
        let order = data
            .is_some()
            .then(|| epoch_order(plan.seed, epoch, plan.train_len));
        for it in 0..plan.per_epoch {
            let ictx = ectx.child("iter");
            let mine = match (&data, &order) {
                (Some(d), Some(order)) => Some(encode_batch(
                    fp,
                    &d.0,
                    &order[it * plan.batch..(it + 1) * plan.batch],
                    &plan.input,
                    plan.net.classes,
                )?),
                _ => None,
            };
            let ictx_in = ictx.child("input");
            let x = p
                .input(
                    &ictx_in,
                    data_owner,
                    mine.as_ref().map(|m| &m.0),
                    &with_batch(plan.batch, &plan.input),
                    fp.frac_bits,
                )
                .await?;
            let y = p
                .input(
                    &ictx_in,
                    data_owner,
                    mine.as_ref().map(|m| &m.1),
                    &[plan.batch, plan.net.classes],
                    fp.frac_bits,
                )
                .await?;
            backprop::iteration(&p, &ictx, &plan.net, &mut params, x, &y, plan.sgd.at(epoch))
                .await?;
            iterations += 1;
            if let Some(cb) = &progress {
                cb(TrainProgress::Iteration {
                    epoch,
                    iteration: it + 1,
                    of: plan.per_epoch,
                });
            }
        }
        let acc = match plan.test_len {
            0 => None,
            _ => test_accuracy(&p, &ectx, &plan, &params, data.as_deref()).await?,
        };
        stats.push(EpochStat {
            epoch,
            test_accuracy: acc,
        });
        if let Some(dir) = &plan.checkpoint_dir {
            let saved = params
                .iter()
                .map(|t| SavedTensor {
                    shape: p.shape(t).to_vec(),
                    frac: p.frac(t),
                    part: p.part(t).map(RingTensor::into_vec),
                })
                .collect();
            let accs = stats.iter().map(|s| s.test_accuracy).collect();
            checkpoint::save(
                dir,
                &Checkpoint::new(me.0, &plan.digest, epoch, saved, accs),
            )
            .map_err(ckpt_err)?;
        }
        // The next epoch starts from the parameters exactly as a checkpoint holds them: the
        // test's forward pass memoised Beaver masks on them, which the next iteration would
        // reuse where a resumed run masks afresh (at other paths, so with other randomness).
        params = params
            .iter()
            .map(|t| p.restore(p.shape(t), p.frac(t), p.part(t)))
            .collect();
        if let Some(cb) = &progress {
            cb(TrainProgress::Epoch {
                epoch,
                test_accuracy: acc,
            });
        }
    }
    // The trained weights, to the model owner only.
    let rctx = ctx.child("reveal");
    let mut tensors = Vec::with_capacity(shapes.len());
    for ((name, shape), t) in shapes.iter().zip(&params) {
        if let Some(v) = p.reveal(&rctx, t, model_owner).await? {
            let values = fp.decode_tensor(&v);
            tensors.push((
                name.clone(),
                ArrayD::from_shape_vec(IxDyn(shape), values).expect("parameter shape"),
            ));
        }
    }
    Ok(PartyTrainOutput {
        weights: (me == model_owner || local).then_some(Weights { tensors }),
        epoch_stats: stats,
        iterations,
        resumed_from: start,
    })
}

/// (epoch, iteration, phase index, layer).
type Cell = (usize, usize, usize, String);

/// Bytes, messages, and the smallest and largest causal depth of a cell's envelopes.
#[derive(Default)]
struct Tally {
    bytes: u64,
    messages: u64,
    first: u64,
    last: u64,
}

/// Attribute envelopes to (phase, layer) by their keys (`train/epoch~e/iter~k/<phase>/<layer>/…`,
/// `train/epoch~e/test/…`, `train/weights/…`, `train/reveal/…`); rounds are the causal depth
/// each cell adds over everything before it (the job started at depth `start`), the cells of an
/// iteration's phase taken in causal order (the backward pass walks the layers in reverse).
pub fn phase_costs(envelopes: &[EnvelopeRecord], start: u64) -> Vec<PhaseReport> {
    const PHASES: [&str; 9] = [
        "weights", "resume", "input", "forward", "asm", "backward", "update", "test", "reveal",
    ];
    let mut cells: BTreeMap<Cell, Tally> = BTreeMap::new();
    for e in envelopes {
        let key = e.key.split('#').next().unwrap_or("");
        let parts: Vec<&str> = key.split('/').skip(1).collect();
        let idx = |n: &str| {
            n.split_once('~')
                .and_then(|(_, k)| k.parse::<usize>().ok())
                .unwrap_or(0)
        };
        let epoch = |ep: &str| idx(ep) + 1;
        let phase = |name: &str| PHASES.iter().position(|p| *p == name);
        let cell = match parts.as_slice() {
            [first @ ("weights" | "resume"), ..] => {
                (0, 0, phase(first).unwrap_or(0), String::new())
            }
            ["reveal", ..] => (usize::MAX, 0, 8, String::new()),
            [ep, "test", ..] => (epoch(ep), usize::MAX, 7, String::new()),
            [ep, it, name, rest @ ..] => {
                let Some(pi) = phase(name) else {
                    continue;
                };
                let layer = match *name {
                    "forward" | "backward" => rest.first().copied().unwrap_or("").to_string(),
                    _ => String::new(),
                };
                (epoch(ep), idx(it) + 1, pi, layer)
            }
            _ => continue,
        };
        let c = cells.entry(cell).or_insert(Tally {
            first: u64::MAX,
            ..Tally::default()
        });
        c.bytes += e.bytes;
        c.messages += 1;
        c.first = c.first.min(e.depth);
        c.last = c.last.max(e.depth);
    }
    let mut ordered: Vec<(Cell, Tally)> = cells.into_iter().collect();
    ordered.sort_by_key(|((e, i, p, _), t)| (*e, *i, *p, t.first, t.last));
    let mut out: Vec<PhaseReport> = Vec::new();
    let mut reached = start;
    for ((_, _, pi, layer), t) in ordered {
        let rounds = t.last.saturating_sub(reached);
        reached = reached.max(t.last);
        match out
            .iter_mut()
            .find(|r| r.phase == PHASES[pi] && r.layer == layer)
        {
            Some(r) => {
                r.bytes += t.bytes;
                r.messages += t.messages;
                r.rounds += rounds;
            }
            None => out.push(PhaseReport {
                phase: PHASES[pi].to_string(),
                layer,
                bytes: t.bytes,
                messages: t.messages,
                rounds,
            }),
        }
    }
    out
}

/// One party's job for a party actor.
fn job<P: Trainable + Send + 'static>(
    p: P,
    plan: Arc<Plan>,
    weights: Option<Weights>,
    data: Option<Arc<(Mnist, Mnist)>>,
    progress: Option<Progress>,
) -> JobFn<PartyTrainOutput> {
    Box::new(move |ctx| Box::pin(party_job(p, ctx, plan, weights, data, progress, false)))
}

/// What one party of a training job holds of its own: nothing of it is public.
#[derive(Default)]
pub struct PartyTrainInputs {
    /// The initial weights: the model owner's, and only its.
    pub weights: Option<Weights>,
    /// The training and test images: the data owner's, and only its.
    pub data: Option<(Mnist, Mnist)>,
    /// The data owner's seed of its per-epoch shuffle ([`epoch_order`]); unused elsewhere.
    pub shuffle_seed: u64,
    /// Where this party checkpoints its shares at every epoch end (see [`checkpoint`]).
    pub checkpoint_dir: Option<PathBuf>,
    /// Told of every iteration and epoch end at this party (the test accuracy at the model
    /// owner only), from the party's thread.
    pub progress: Option<Progress>,
}

/// What one party's training job returns.
#[derive(Clone, Debug)]
pub struct PartyTrainOutput {
    /// The trained weights, at the model owner only.
    pub weights: Option<Weights>,
    /// One per epoch this run completed (and those a resumed run took over); the test accuracy
    /// at the model owner only.
    pub epoch_stats: Vec<EpochStat>,
    /// Iterations this run computed.
    pub iterations: usize,
    /// The epoch this run started from (0: from the initial weights).
    pub resumed_from: usize,
}

/// Party `me`'s secure training job when the other two parties run elsewhere (a deployment,
/// one party per process): what `me` holds is checked against the public `job` (the model
/// owner's weights against the model, the data owner's images against the model and the
/// agreed counts; nobody else may hold either) before anything runs. The job runs in a session
/// whose seeds are agreed, as [`LocalCluster::run`] runs jobs, under the name `train` (the keys
/// [`phase_costs`] reads); the other two parties run theirs with the same `job`.
pub fn party_train_job(
    job: &TrainJob,
    me: PartyId,
    inputs: PartyTrainInputs,
) -> Result<JobFn<PartyTrainOutput>, TrainError> {
    job.check()?;
    if job.protocol != ProtocolKind::SecureNn {
        return Err(TrainError::Spec(format!(
            "a party of a deployment trains with securenn, not {} (the plaintext twin runs in \
             one process: run_training)",
            job.protocol.name()
        )));
    }
    if me.0 > 2 {
        return Err(TrainError::Spec(format!(
            "party {}: the parties are 0, 1 and 2",
            me.0
        )));
    }
    let PartyTrainInputs {
        weights,
        data,
        shuffle_seed,
        checkpoint_dir,
        progress,
    } = inputs;
    match (&weights, me == job.model_owner) {
        (Some(w), true) => job.model.validate(w)?,
        (None, true) => {
            return Err(TrainError::Spec(format!(
                "{me} is the model owner: it brings the initial weights"
            )));
        }
        (Some(_), false) => {
            return Err(TrainError::Spec(format!(
                "{me} is not the model owner ({}): it holds no weights",
                job.model_owner
            )));
        }
        (None, false) => {}
    }
    let net = Net::new(&job.run_model())?;
    match (&data, me == job.data_owner) {
        (Some((train, test)), true) => {
            for (what, d, agreed) in [
                ("training", train, job.train_images),
                ("test", test, job.test_images),
            ] {
                check_images(&job.model, "the model", net.classes, what, d)?;
                if d.images.len() != agreed {
                    return Err(TrainError::Spec(format!(
                        "the data owner {me} holds {} {what} images, the job {agreed}",
                        d.images.len()
                    )));
                }
            }
        }
        (None, true) => {
            return Err(TrainError::Spec(format!(
                "{me} is the data owner: it brings the training images"
            )));
        }
        (Some(_), false) => {
            return Err(TrainError::Spec(format!(
                "{me} is not the data owner ({}): it holds no images",
                job.data_owner
            )));
        }
        (None, false) => {}
    }
    if job.resume && checkpoint_dir.is_none() {
        return Err(TrainError::Spec(
            "resuming needs this party's checkpoint directory".into(),
        ));
    }
    let plan = Arc::new(job.plan(shuffle_seed, checkpoint_dir)?);
    let frac_bits = job.frac_bits;
    let snn = job.layout.securenn();
    Ok(Box::new(move |ctx: Ctx| {
        Box::pin(async move {
            if ctx.fixed().frac_bits != frac_bits {
                return Err(ProtocolError::Input {
                    op: ctx.path().to_string(),
                    reason: format!(
                        "the session encodes with {} fractional bits, the job {frac_bits}",
                        ctx.fixed().frac_bits
                    ),
                });
            }
            party_job(snn, ctx, plan, weights, data.map(Arc::new), progress, false).await
        })
    }))
}

/// Run the training job (three parties, or the plaintext twin in this thread).
pub fn run_training(
    spec: &TrainSpec,
    progress: Option<Progress>,
) -> Result<TrainReport, TrainError> {
    spec.check()?;
    let plan = Arc::new(spec.plan()?);
    let data = Arc::new((spec.train.clone(), spec.test.clone()));
    let fp = spec.config.fixed;
    let t0 = std::time::Instant::now();
    let c0 = crate::party::process_cpu_time();
    let mut peak_memory = Vec::new();
    let (out, traffic, envelopes, start, virtual_time, trace, transport) = match spec.protocol {
        ProtocolKind::Pond => unreachable!("refused by TrainSpec::check"),
        ProtocolKind::Plaintext => {
            let weights = spec.weights.clone();
            let (out, peak) = crate::memory::measure(|| {
                futures::executor::block_on(party_job(
                    Plaintext {
                        relu: ReluKind::Exact,
                    },
                    Ctx::local(fp),
                    plan.clone(),
                    Some(weights),
                    Some(data.clone()),
                    progress,
                    true,
                ))
            });
            peak_memory.push(peak);
            (
                out?,
                Default::default(),
                Vec::new(),
                0,
                None,
                None,
                "none".to_string(),
            )
        }
        ProtocolKind::SecureNn => {
            let snn = spec.layout.securenn();
            let jobs = |party: PartyId| {
                let weights = (party == spec.model_owner).then(|| spec.weights.clone());
                let d = (party == spec.data_owner).then(|| data.clone());
                // Progress as the model owner sees it (its epochs carry the test accuracy).
                let cb = progress.clone().filter(|_| party == spec.model_owner);
                job(snn, plan.clone(), weights, d, cb)
            };
            let r = LocalCluster::run_once_on(
                &spec.network,
                spec.config,
                SeedSource::Fixed(spec.seed),
                "train",
                jobs,
            )?;
            let start = r.setup.rounds;
            peak_memory = r.peak_memory;
            let mut outs = r.outputs;
            let out = outs.swap_remove(spec.model_owner.index());
            (
                out,
                r.traffic,
                r.envelopes,
                start,
                r.virtual_time,
                r.trace,
                spec.network.transport_name().to_string(),
            )
        }
    };
    let traffic: securenn_transports::MeterSnapshot = traffic;
    Ok(TrainReport {
        protocol: spec.protocol,
        model: spec.model_name.clone(),
        layout: spec.layout,
        transport,
        network: spec.network_name.clone(),
        epochs: spec.epochs,
        batch: spec.batch,
        learning_rate: spec.learning_rate,
        lr_halve_every: spec.lr_halve_every,
        seed: spec.seed,
        frac_bits: fp.frac_bits,
        train_images: spec.train.images.len(),
        test_images: spec.test.images.len(),
        iterations: out.iterations,
        resumed_from: out.resumed_from,
        epoch_stats: out.epoch_stats,
        bytes_total: traffic.total_bytes(),
        messages: traffic.total_messages(),
        rounds: traffic.rounds,
        layers: phase_costs(&envelopes, start),
        ops: trace
            .as_ref()
            .map_or_else(Vec::new, |t| op_reports(t, true)),
        wall_seconds: t0.elapsed().as_secs_f64(),
        virtual_seconds: virtual_time.map(|d| d.as_secs_f64()),
        cpu_seconds: (crate::party::process_cpu_time() - c0).as_secs_f64(),
        peak_memory_bytes: peak_memory,
        weights: out.weights,
        trace: trace.map(Arc::new),
    })
}
