//! A secure inference job: the data owner's images and the model owner's weights go in, the
//! prediction (or the logits) comes out at the data owner only. Beside it run the plaintext
//! fixed-point reference (same numbers, no secrecy) and the float model, and the report says how
//! far apart they are and what the secure run cost, layer by layer.

use crate::channel::{Ctx, P0, PartyId, ProtocolError};
use crate::data::Mnist;
use crate::fixed::FixedPoint;
use crate::metrics::{OpReport, SessionTrace, op_reports};
use crate::nn::range::{MNIST_INPUT_RANGE, RangeError, RangeReport, analyse, observe};
use crate::nn::{Layer, Model, ModelError, Weights, forward, forward_float, input_params};
use crate::party::{JobFn, LocalCluster, Network, PartyConfig, SeedSource};
use crate::protocol::{Plaintext, Pond, Protocol, ReluKind, SecureNn};
use crate::ring::RingTensor;
use ndarray::{ArrayD, IxDyn};
use securenn_transports::{EnvelopeRecord, MeterSnapshot};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Which backend computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolKind {
    Plaintext,
    Pond,
    #[serde(rename = "securenn")]
    SecureNn,
}

impl ProtocolKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Pond => "pond",
            Self::SecureNn => "securenn",
        }
    }
}

/// How the network is laid out and accounted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// The model as defined, run with max pooling before ReLU where one follows the other (the
    /// same function: [`Model::pool_before_relu`]); SecureNN with reused masks, tree maxima
    /// and masked images.
    Default,
    /// The paper's cost layout ([`Model::paper_layout`]) and accounting
    /// ([`SecureNn::paper`]): reproduces the paper's communication to the byte.
    Paper,
}

impl Layout {
    /// `model` as this layout runs it.
    pub fn apply(self, model: &Model) -> Model {
        match self {
            Self::Default => model.pool_before_relu(),
            Self::Paper => model.paper_layout(),
        }
    }

    /// The SecureNN backend this layout accounts with.
    pub fn securenn(self) -> SecureNn {
        match self {
            Self::Default => SecureNn::optimised(),
            Self::Paper => SecureNn::paper(),
        }
    }
}

/// What the data owner learns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reveal {
    /// Only the predicted class: the argmax is computed securely (SecureNN).
    Class,
    /// The logits; the data owner takes the argmax itself (Pond has no secure argmax).
    Logits,
}

/// Everything a secure inference needs. Only the model owner's job sees `weights`, only the
/// data owner's job sees the images.
#[derive(Clone)]
pub struct InferSpec {
    pub protocol: ProtocolKind,
    pub model_name: String,
    /// The model in its default layout, ending with argmax.
    pub model: Model,
    pub weights: Weights,
    pub data: Mnist,
    pub batch: usize,
    pub seed: u64,
    pub data_owner: PartyId,
    pub model_owner: PartyId,
    pub config: PartyConfig,
    /// Pond's ReLU polynomial (power, coefficient).
    pub relu_poly: Vec<(u32, f64)>,
    pub layout: Layout,
    /// `None`: the class where the protocol has a secure argmax, the logits otherwise.
    pub reveal: Option<Reveal>,
    /// The transport between the parties.
    pub network: Network,
    /// How the network is described in reports (`memory`, or the simulator's preset).
    pub network_name: String,
    /// Run even when the fixed-point range analysis ([`crate::nn::range`]) finds a worst-case
    /// product or comparison beyond the ring; otherwise such a job is refused with
    /// [`InferError::Range`].
    pub allow_range_risk: bool,
    /// SecureNN's default-layout optimisations turned off (empty: all on), to measure what
    /// each pays; only SecureNN's default layout has them.
    pub without: Vec<Lever>,
}

/// An optimisation of SecureNN's default layout that a job can run without (`--without`), so
/// that what it pays is the difference between two runs. The paper layout has none of them.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Lever {
    /// DReLU and ReLU by one masked opening and one PrivateCompare
    /// ([`crate::protocol::securenn::narrow_drelu`], 3 rounds); without it, ShareConvert and
    /// ComputeMSB (Algorithms 4-6, 8 rounds) with the layout's other optimisations.
    NarrowComparisons,
    /// Each comparing layer on the fewest bits that hold its input's worst-case bound from the
    /// range analysis ([`crate::nn::range::RangeReport::compare_widths`]: public, derived from
    /// the weights and the input range, exact for every input in that range); without it, every
    /// comparison on all 64 bits.
    BoundedWidths,
    /// A server's inputs (the model owner's weights, the data owner's images) stay known to it
    /// and its products take [`crate::protocol::known_operand`]'s protocol; without it, every
    /// input is shared and every product is a Beaver product.
    KnownOperands,
}

impl Lever {
    /// The name `--without` and the JSON use.
    pub fn name(self) -> &'static str {
        match self {
            Self::NarrowComparisons => "narrow-comparisons",
            Self::BoundedWidths => "bounded-widths",
            Self::KnownOperands => "known-operands",
        }
    }
}

impl std::fmt::Display for Lever {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Boxed: the refusal carries the layer and its figures.
    #[error(transparent)]
    Range(Box<RangeError>),
    #[error("{0}")]
    Spec(String),
}

impl From<RangeError> for InferError {
    fn from(e: RangeError) -> Self {
        Self::Range(Box::new(e))
    }
}

/// Traffic on one directed link.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LinkReport {
    pub from: u8,
    pub to: u8,
    pub bytes: u64,
    pub messages: u64,
}

/// Traffic of one layer (or of the weights, inputs and reveal), all batches summed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerReport {
    pub name: String,
    pub bytes: u64,
    pub messages: u64,
    /// Causal rounds the layer added, summed over batches.
    pub rounds: u64,
}

/// What a run predicted and cost. Field names are stable: other tools read the JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InferReport {
    pub protocol: ProtocolKind,
    pub model: String,
    pub layout: Layout,
    pub reveal: Reveal,
    /// `memory`, `sim` or `quic`.
    pub transport: String,
    /// The network preset (`none` in memory).
    pub network: String,
    pub samples: usize,
    pub batch: usize,
    pub seed: u64,
    pub frac_bits: u32,
    /// The fixed-point range analysis: worst-case bounds per layer from the weights, the
    /// plaintext reference's observed maxima, headroom, expected truncation failures, vanished
    /// weights and warnings.
    #[serde(default)]
    pub range: RangeReport,
    /// The bits each node's comparisons ran on (null: 64, or the node does not compare), in
    /// node order of the model as run ([`Lever::BoundedWidths`]).
    #[serde(default)]
    pub comparison_widths: Vec<Option<u32>>,
    /// The default layout's optimisations this run went without (`--without`; empty: none).
    #[serde(default)]
    pub without: Vec<Lever>,
    /// Accuracy of the secure predictions against the labels; `null` when the inputs came
    /// without labels (`labels` is then empty).
    pub accuracy: Option<f64>,
    /// Fraction of samples where the secure prediction equals the plaintext fixed-point one.
    pub plaintext_agreement: f64,
    /// Fraction of samples where the secure prediction equals the float model's (exact ReLU).
    pub float_agreement: f64,
    /// As `accuracy`, for the plaintext fixed-point and the float predictions.
    pub plaintext_accuracy: Option<f64>,
    pub float_accuracy: Option<f64>,
    /// Largest |secure logit - plaintext logit| (only when the logits are revealed).
    pub max_logit_error: Option<f64>,
    /// Payload bytes of the job, all links summed (session setup excluded).
    pub bytes_total: u64,
    pub messages: u64,
    /// Causal rounds of the job.
    pub rounds: u64,
    pub setup_bytes: u64,
    pub links: Vec<LinkReport>,
    /// Per layer, in order: `weights`, `input`, the model's layers, `reveal`.
    pub layers: Vec<LayerReport>,
    /// The operation tree (`layers` refined down to PrivateCompare), with the SecureNN paper's
    /// bytes and rounds beside each operation it has figures for; empty unless the run was
    /// traced (a [`crate::metrics`] layer installed: the binary installs it for `run`, `bench`
    /// and `infer` with `--report`, `--trace` or `--json`).
    #[serde(default)]
    pub ops: Vec<OpReport>,
    pub wall_seconds: f64,
    /// On the simulator: the run's time on the parties' virtual clocks (what three machines on
    /// that network would take); `null` in memory.
    pub virtual_seconds: Option<f64>,
    /// Over QUIC: UDP bytes on the wire (QUIC's own overhead included), beside `bytes_total`.
    pub quic_wire_bytes: Option<u64>,
    /// CPU time of the whole process during the run (all parties and threads).
    pub cpu_seconds: f64,
    /// CPU time of each party's thread (P0, P1, P2).
    pub party_cpu_seconds: Vec<f64>,
    /// Each party's peak of live heap bytes during the job (P0, P1, P2; one figure for a
    /// plaintext run): what the party's thread allocated and had not yet freed, wherever the
    /// blocks went ([`crate::memory`]). The inputs handed to the job (the weights and images)
    /// count at no party; the shares, masks and messages the party makes of them do. Empty in
    /// reports written before it was measured.
    #[serde(default)]
    pub peak_memory_bytes: Vec<u64>,
    pub predictions: Vec<usize>,
    /// The logits the data owner learnt, one row per sample, with `--reveal logits` (absent from
    /// the JSON, and empty, when only the class is revealed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logits: Vec<Vec<f64>>,
    pub plaintext_predictions: Vec<usize>,
    pub float_predictions: Vec<usize>,
    pub labels: Vec<u8>,
    /// Every span and message of the run (for `--trace`); not serialised.
    #[serde(skip)]
    pub trace: Option<Arc<SessionTrace>>,
}

/// Called with (batches done, batches in all) at the data owner.
pub type Progress = Arc<dyn Fn(usize, usize) + Send + Sync>;

/// Argmax with the protocols' tie rule: the later index among equal values.
fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x >= v[best] {
            best = i;
        }
    }
    best
}

fn agreement(a: &[usize], b: &[usize]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len().max(1) as f64
}

pub(crate) fn accuracy(p: &[usize], labels: &[u8]) -> f64 {
    p.iter()
        .zip(labels)
        .filter(|(x, y)| **x == **y as usize)
        .count() as f64
        / p.len().max(1) as f64
}

impl InferSpec {
    /// A job on `data` with `model_name`'s `model` and `weights` and the session seed `seed`
    /// (it decides every share, so it is never defaulted), and otherwise `securenn infer`'s
    /// defaults: batch 10, P0 owns the images and P1 the weights, the default party
    /// configuration (13 fractional bits), tf-encrypted's shipped [-9, 9] ReLU polynomial for
    /// Pond, the default layout, the protocol's default reveal, the in-memory transport, and
    /// the range check on. Change any field with struct update syntax.
    pub fn new(
        protocol: ProtocolKind,
        model_name: &str,
        model: Model,
        weights: Weights,
        data: Mnist,
        seed: u64,
    ) -> Self {
        Self {
            protocol,
            model_name: model_name.to_string(),
            model,
            weights,
            data,
            batch: 10,
            seed,
            data_owner: PartyId(0),
            model_owner: PartyId(1),
            config: PartyConfig::default(),
            relu_poly: crate::protocol::TFE_RELU_9.to_vec(),
            layout: Layout::Default,
            reveal: None,
            network: Network::Memory,
            network_name: "none".into(),
            allow_range_risk: false,
            without: Vec::new(),
        }
    }

    fn check(&self) -> Result<(), InferError> {
        self.model.validate(&self.weights)?;
        if self.batch == 0 {
            return Err(InferError::Spec("--batch must be at least 1".into()));
        }
        if self.data.images.is_empty() {
            return Err(InferError::Spec("--samples must be at least 1".into()));
        }
        let (images, labels) = (self.data.images.len(), self.data.labels.len());
        if labels != 0 && labels != images {
            return Err(InferError::Spec(format!(
                "{images} images but {labels} labels"
            )));
        }
        if self
            .data
            .images
            .iter()
            .any(|im| im.len() != crate::ring::numel(&self.model.input))
        {
            return Err(InferError::Spec(format!(
                "model {} wants inputs of shape {:?} ({} values); MNIST images have 784",
                self.model_name,
                self.model.given_input_shape(),
                crate::ring::numel(&self.model.input)
            )));
        }
        if self.data_owner.0 > 2 || self.model_owner.0 > 2 {
            return Err(InferError::Spec("owners must be parties 0, 1 or 2".into()));
        }
        // Refused here, before the range analysis: Pond's polynomial ReLU may also put the
        // model out of range, and accepting that risk would not make the job run.
        if self.protocol == ProtocolKind::Pond
            && let Some(i) = self.model.layers().position(Layer::is_max_pool)
        {
            let name = self.model.describe()?.swap_remove(i).name;
            return Err(ProtocolError::Unsupported {
                op: format!("layer {name}"),
                reason: crate::protocol::pond::NO_MAX_POOLING.into(),
            }
            .into());
        }
        if !self.without.is_empty()
            && (self.protocol != ProtocolKind::SecureNn || self.layout != Layout::Default)
        {
            return Err(InferError::Spec(format!(
                "--without {}: only SecureNN's default layout has these optimisations",
                self.without
                    .iter()
                    .map(|l| l.name())
                    .collect::<Vec<_>>()
                    .join(",")
            )));
        }
        if self.protocol == ProtocolKind::Pond && self.reveal == Some(Reveal::Class) {
            return Err(InferError::Spec(
                "Pond has no secure argmax: it can only reveal the logits (--reveal logits)".into(),
            ));
        }
        Ok(())
    }

    /// The SecureNN backend this job runs: its layout's, less the levers in `without`.
    pub fn securenn(&self) -> SecureNn {
        let mut snn = self.layout.securenn();
        snn.costing = snn
            .costing
            .with_narrow_comparisons(!self.without.contains(&Lever::NarrowComparisons))
            .with_known_operands(!self.without.contains(&Lever::KnownOperands));
        snn
    }

    /// The fixed-point range analysis of this job ([`crate::nn::range`]): the model as it runs,
    /// the model owner's weights, the inputs' range (MNIST's [0, 1], widened to the job's
    /// images where they leave it, as `--input` tensors may) and the protocol's ReLU, with the
    /// values the plaintext reference sees on the job's images beside the worst case. It needs
    /// the weights (and, for the observed figures, the images), which meet only here, where all
    /// parties share a process; in a deployment only the model owner can compute the worst case.
    pub fn range(&self) -> Result<RangeReport, InferError> {
        self.check()?;
        let fp = self.config.fixed;
        let model = self.run_model();
        let relu = self.relu_kind();
        let observed = observe(&model, &self.weights, fp, &relu, &self.batches(fp)?)?;
        let input = self
            .data
            .images
            .iter()
            .flatten()
            .fold(MNIST_INPUT_RANGE, |(lo, hi), &v| (lo.min(v), hi.max(v)));
        Ok(analyse(
            &model,
            &self.weights,
            fp,
            input,
            &relu,
            self.data.images.len(),
            Some(&observed),
        )?)
    }

    fn reveal(&self) -> Reveal {
        self.reveal.unwrap_or(match self.protocol {
            ProtocolKind::Pond => Reveal::Logits,
            _ => Reveal::Class,
        })
    }

    /// The model as run: layout applied; without the argmax when the logits are revealed.
    fn run_model(&self) -> Model {
        let m = self.layout.apply(&self.model);
        match self.reveal() {
            Reveal::Class => m,
            Reveal::Logits => m.without_argmax(),
        }
    }

    /// The images as fixed-point batches of shape [b, ...input].
    fn batches(&self, fp: FixedPoint) -> Result<Vec<RingTensor>, InferError> {
        self.data
            .images
            .chunks(self.batch)
            .map(|chunk| {
                let flat: Vec<f64> = chunk.iter().flatten().copied().collect();
                fp.encode_tensor(&self.batch_shape(chunk.len()), &flat)
                    .map_err(|e| {
                        InferError::Spec(format!("an input image {}", crate::nn::unencodable(&e)))
                    })
            })
            .collect()
    }

    fn batch_shape(&self, b: usize) -> Vec<usize> {
        let mut s = vec![b];
        s.extend(&self.model.input);
        s
    }

    fn relu_kind(&self) -> ReluKind {
        match self.protocol {
            ProtocolKind::Pond => ReluKind::Polynomial(self.relu_poly.clone()),
            _ => ReluKind::Exact,
        }
    }
}

/// What the data owner gets per image: the logits if revealed, and the prediction.
pub(crate) type Outputs = Vec<(Option<Vec<f64>>, usize)>;

/// One party's part of the job: input the weights, then per batch input the images, run the
/// model and reveal its output to the data owner.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn party_job<P: Protocol>(
    p: P,
    ctx: Ctx,
    model: Model,
    weights: Option<Weights>,
    batches: Option<Vec<RingTensor>>,
    shapes: Vec<Vec<usize>>,
    owners: (PartyId, PartyId),
    progress: Option<Progress>,
) -> Result<Outputs, ProtocolError> {
    let (data_owner, model_owner) = owners;
    let fp = ctx.fixed();
    let params = input_params(&p, &ctx, &model, model_owner, weights.as_ref()).await?;
    let mut out = Vec::new();
    for (i, shape) in shapes.iter().enumerate() {
        let bctx = ctx.child("batch");
        let x = p
            .input(
                &bctx,
                data_owner,
                batches.as_ref().map(|b| &b[i]),
                shape,
                fp.frac_bits,
            )
            .await?;
        let y = forward(&p, &bctx, &model, &params, x).await?;
        if let Some(v) = p.reveal(&bctx, &y, data_owner).await? {
            if v.shape().len() == 1 {
                out.extend(v.as_slice().iter().map(|&c| (None, c as usize)));
            } else {
                let classes = v.shape()[1];
                out.extend(
                    fp.decode_tensor(&v)
                        .chunks(classes)
                        .map(|l| (Some(l.to_vec()), argmax(l))),
                );
            }
            if let Some(cb) = &progress {
                cb(i + 1, shapes.len());
            }
        }
    }
    Ok(out)
}

/// One party's inference job (see [`party_job`]) as a job for a party actor.
pub(crate) fn infer_job<P: Protocol + Send + 'static>(
    p: P,
    model: Model,
    weights: Option<Weights>,
    batches: Option<Vec<RingTensor>>,
    shapes: Vec<Vec<usize>>,
    owners: (PartyId, PartyId),
    progress: Option<Progress>,
) -> JobFn<Outputs> {
    Box::new(move |ctx| {
        Box::pin(party_job(
            p, ctx, model, weights, batches, shapes, owners, progress,
        ))
    })
}

struct Secure {
    virtual_time: Option<Duration>,
    quic_wire_bytes: Option<u64>,
    outputs: Outputs,
    traffic: MeterSnapshot,
    setup: MeterSnapshot,
    envelopes: Vec<EnvelopeRecord>,
    wall: Duration,
    cpu: Duration,
    party_cpu: Vec<Duration>,
    trace: Option<SessionTrace>,
    peak_memory: Vec<u64>,
}

/// The secure job at three parties: the model owner's job gets the weights, the data owner's
/// job the images, every job the public shapes.
fn run_parties<P: Protocol + Send + 'static>(
    spec: &InferSpec,
    model: &Model,
    batches: &[RingTensor],
    progress: Option<Progress>,
    backend: impl Fn() -> P,
) -> Result<Secure, InferError> {
    let shapes: Vec<Vec<usize>> = batches.iter().map(|b| b.shape().to_vec()).collect();
    let jobs = |party: PartyId| -> JobFn<Outputs> {
        let weights = (party == spec.model_owner).then(|| spec.weights.clone());
        let data = (party == spec.data_owner).then(|| batches.to_vec());
        let owners = (spec.data_owner, spec.model_owner);
        infer_job(
            backend(),
            model.clone(),
            weights,
            data,
            shapes.clone(),
            owners,
            progress.clone(),
        )
    };
    let r = LocalCluster::run_once_on(
        &spec.network,
        spec.config,
        SeedSource::Fixed(spec.seed),
        "infer",
        jobs,
    )?;
    Ok(Secure {
        virtual_time: r.virtual_time,
        quic_wire_bytes: r.quic_wire_bytes,
        outputs: r
            .outputs
            .into_iter()
            .nth(spec.data_owner.index())
            .expect("three outputs"),
        traffic: r.traffic,
        setup: r.setup,
        envelopes: r.envelopes,
        wall: r.wall,
        cpu: r.cpu,
        party_cpu: r.party_cpu,
        trace: r.trace,
        peak_memory: r.peak_memory,
    })
}

/// The `.npy` inputs `npy` ([`Mnist::read_npy_inputs`]) for `model`: `count` of them (`None`:
/// all) from `offset` in file order, their shape checked against the model's input as ONNX
/// gives it, reordered to the model's NHWC, and every value checked to encode at `fixed`. The
/// one way `infer --input`, scenario jobs and deployments' data owners read `.npy` inputs;
/// errors name the file.
pub fn npy_inputs_for(
    model: &Model,
    npy: &crate::data::NpyInputs,
    offset: usize,
    count: Option<usize>,
    fixed: FixedPoint,
) -> Result<Mnist, crate::data::DataError> {
    npy.check_shape(&model.given_input_shape())?;
    let mut data = npy.data.take(&npy.source, offset, count)?;
    for im in &mut data.images {
        *im = model.input_to_nhwc(im);
    }
    if let Some(k) = data
        .images
        .iter()
        .position(|im| im.iter().any(|&v| fixed.encode(v).is_err()))
    {
        return Err(crate::data::DataError::File {
            path: npy.source.clone(),
            reason: format!(
                "input {} holds a value outside the fixed-point range ±{} at {} fractional bits",
                offset + k,
                fixed.max_value(),
                fixed.frac_bits
            ),
        });
    }
    Ok(data)
}

/// Attribute the job's envelopes to `weights`, `input`, each layer and `reveal` by their
/// rendezvous keys (`infer/batch~k/<layer>/...`); a layer's rounds are the depth it adds over
/// everything before it (the job started at causal depth `start`).
pub fn layer_costs(model: &Model, envelopes: &[EnvelopeRecord], start: u64) -> Vec<LayerReport> {
    let mut order = vec!["weights".to_string(), "input".to_string()];
    order.extend(
        model
            .describe()
            .map(|d| d.into_iter().map(|l| l.name).collect::<Vec<_>>())
            .unwrap_or_default(),
    );
    order.push("reveal".into());
    // (batch, op) -> (bytes, messages, max depth)
    let mut cells: BTreeMap<(usize, usize), (u64, u64, u64)> = BTreeMap::new();
    for e in envelopes {
        let mut parts = e.key.split('#').next().unwrap_or("").split('/').skip(1);
        let (batch, op) = match parts.next() {
            Some("weights") => (0, "weights"),
            Some(b) if b.starts_with("batch") => {
                let k = b
                    .split_once('~')
                    .and_then(|(_, k)| k.parse::<usize>().ok())
                    .unwrap_or(0);
                (k + 1, parts.next().unwrap_or(""))
            }
            _ => continue,
        };
        let Some(i) = order.iter().position(|o| o == op) else {
            continue;
        };
        let c = cells.entry((batch, i)).or_default();
        c.0 += e.bytes;
        c.1 += 1;
        c.2 = c.2.max(e.depth);
    }
    let mut layers: Vec<LayerReport> = order
        .iter()
        .map(|n| LayerReport {
            name: n.clone(),
            bytes: 0,
            messages: 0,
            rounds: 0,
        })
        .collect();
    let mut reached = start;
    for ((_, i), (bytes, messages, depth)) in cells {
        let l = &mut layers[i];
        l.bytes += bytes;
        l.messages += messages;
        l.rounds += depth.saturating_sub(reached);
        reached = reached.max(depth);
    }
    layers
}

/// Run the job and its references; see [`InferReport`].
pub fn run_inference(
    spec: &InferSpec,
    progress: Option<Progress>,
) -> Result<InferReport, InferError> {
    let range = spec.range()?; // checks the spec first
    if !spec.allow_range_risk {
        range.check()?;
    }
    let fp = spec.config.fixed;
    let batches = spec.batches(fp)?;
    let mut model = spec.run_model();
    if spec.protocol == ProtocolKind::SecureNn
        && spec.layout == Layout::Default
        && !spec.without.contains(&Lever::BoundedWidths)
    {
        model.compare_widths = range.compare_widths(&model);
    }
    let logits_model = model.without_argmax();

    // References, outside the timed run: the plaintext fixed-point model with the protocol's ReLU
    // and layout, and the float model (exact ReLU, same layout), both on the logits.
    let plain_logits: Vec<Vec<f64>> = futures::executor::block_on(party_job(
        Plaintext {
            relu: spec.relu_kind(),
        },
        Ctx::local(fp),
        logits_model.clone(),
        Some(spec.weights.clone()),
        Some(batches.clone()),
        batches.iter().map(|b| b.shape().to_vec()).collect(),
        (P0, P0),
        None,
    ))?
    .into_iter()
    .map(|(l, _)| l.expect("logits"))
    .collect();
    let mut float_logits = Vec::new();
    for chunk in spec.data.images.chunks(spec.batch) {
        let flat: Vec<f64> = chunk.iter().flatten().copied().collect();
        let x = ArrayD::from_shape_vec(IxDyn(&spec.batch_shape(chunk.len())), flat)
            .expect("batch shape");
        let y = forward_float(&logits_model, &spec.weights, &x, &ReluKind::Exact)?;
        float_logits.extend(
            y.outer_iter()
                .map(|r| r.iter().copied().collect::<Vec<f64>>()),
        );
    }

    let secure = match spec.protocol {
        ProtocolKind::Plaintext => {
            let t0 = std::time::Instant::now();
            let c0 = crate::party::process_cpu_time();
            let (weights, images) = (spec.weights.clone(), batches.clone());
            let shapes = batches.iter().map(|b| b.shape().to_vec()).collect();
            let (outputs, peak) = crate::memory::measure(|| {
                futures::executor::block_on(party_job(
                    Plaintext {
                        relu: ReluKind::Exact,
                    },
                    Ctx::local(fp),
                    model.clone(),
                    Some(weights),
                    Some(images),
                    shapes,
                    (P0, P0),
                    progress,
                ))
            });
            let outputs = outputs?;
            let cpu = crate::party::process_cpu_time() - c0;
            Secure {
                virtual_time: None,
                quic_wire_bytes: None,
                outputs,
                traffic: MeterSnapshot::default(),
                setup: MeterSnapshot::default(),
                envelopes: Vec::new(),
                wall: t0.elapsed(),
                cpu,
                party_cpu: vec![cpu],
                trace: None,
                peak_memory: vec![peak],
            }
        }
        ProtocolKind::Pond => {
            let pond = Pond {
                relu: spec.relu_poly.clone(),
            };
            run_parties(spec, &model, &batches, progress, move || pond.clone())?
        }
        ProtocolKind::SecureNn => {
            let snn = spec.securenn();
            run_parties(spec, &model, &batches, progress, move || snn)?
        }
    };

    let predictions: Vec<usize> = secure.outputs.iter().map(|o| o.1).collect();
    let plaintext_predictions: Vec<usize> = plain_logits.iter().map(|l| argmax(l)).collect();
    let float_predictions: Vec<usize> = float_logits.iter().map(|l| argmax(l)).collect();
    let max_logit_error = (spec.reveal() == Reveal::Logits).then(|| {
        secure
            .outputs
            .iter()
            .filter_map(|o| o.0.as_ref())
            .flatten()
            .zip(plain_logits.iter().flatten())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max)
    });
    let labels = spec.data.labels.clone();
    // No labels, no accuracy (rather than a made-up 0%).
    let scored = |p: &[usize]| (!labels.is_empty()).then(|| accuracy(p, &labels));
    Ok(InferReport {
        protocol: spec.protocol,
        model: spec.model_name.clone(),
        layout: spec.layout,
        reveal: spec.reveal(),
        transport: spec.network.transport_name().into(),
        network: spec.network_name.clone(),
        samples: predictions.len(),
        batch: spec.batch,
        seed: spec.seed,
        frac_bits: fp.frac_bits,
        range,
        comparison_widths: model.compare_widths.clone(),
        without: spec.without.clone(),
        accuracy: scored(&predictions),
        plaintext_agreement: agreement(&predictions, &plaintext_predictions),
        float_agreement: agreement(&predictions, &float_predictions),
        plaintext_accuracy: scored(&plaintext_predictions),
        float_accuracy: scored(&float_predictions),
        max_logit_error,
        bytes_total: secure.traffic.total_bytes(),
        messages: secure.traffic.total_messages(),
        rounds: secure.traffic.rounds,
        setup_bytes: secure.setup.total_bytes(),
        links: secure
            .traffic
            .links
            .iter()
            .map(|l| LinkReport {
                from: l.from,
                to: l.to,
                bytes: l.bytes,
                messages: l.messages,
            })
            .collect(),
        layers: layer_costs(&model, &secure.envelopes, secure.setup.rounds),
        ops: secure.trace.as_ref().map_or_else(Vec::new, |t| {
            op_reports(t, spec.protocol == ProtocolKind::SecureNn)
        }),
        wall_seconds: secure.wall.as_secs_f64(),
        virtual_seconds: secure.virtual_time.map(|d| d.as_secs_f64()),
        quic_wire_bytes: secure.quic_wire_bytes,
        cpu_seconds: secure.cpu.as_secs_f64(),
        party_cpu_seconds: secure.party_cpu.iter().map(|d| d.as_secs_f64()).collect(),
        peak_memory_bytes: secure.peak_memory,
        predictions,
        logits: secure.outputs.iter().filter_map(|o| o.0.clone()).collect(),
        plaintext_predictions,
        float_predictions,
        labels,
        trace: secure.trace.map(Arc::new),
    })
}
