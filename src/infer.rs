//! A secure inference job: the data owner's images and the model owner's weights go in, logits
//! come out at the data owner only. Beside them run the plaintext fixed-point reference (same
//! numbers, no secrecy) and the float model, and the report says how far apart they are and what
//! the secure run cost.

use crate::channel::{Ctx, P0, PartyId, ProtocolError};
use crate::data::Mnist;
use crate::fixed::FixedPoint;
use crate::nn::{ModelError, Sequential, Weights, forward, forward_float, input_params};
use crate::party::{JobFn, LocalCluster, PartyConfig, SeedSource};
use crate::protocol::{Plaintext, Pond, Protocol, ReluKind, SecureNn};
use crate::ring::RingTensor;
use ndarray::{ArrayD, IxDyn};
use securenn_transports::MeterSnapshot;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// Which backend computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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

/// Everything a secure inference needs. Only the model owner's job sees `weights`, only the
/// data owner's job sees the images.
#[derive(Clone)]
pub struct InferSpec {
    pub protocol: ProtocolKind,
    pub model_name: String,
    pub model: Sequential,
    pub weights: Weights,
    pub data: Mnist,
    pub batch: usize,
    pub seed: u64,
    pub data_owner: PartyId,
    pub model_owner: PartyId,
    pub config: PartyConfig,
    /// Pond's ReLU polynomial (power, coefficient).
    pub relu_poly: Vec<(u32, f64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{0}")]
    Spec(String),
}

/// Traffic on one directed link.
#[derive(Clone, Debug, Serialize)]
pub struct LinkReport {
    pub from: u8,
    pub to: u8,
    pub bytes: u64,
    pub messages: u64,
}

/// What a run predicted and cost. Field names are stable: other tools read the JSON.
#[derive(Clone, Debug, Serialize)]
pub struct InferReport {
    pub protocol: ProtocolKind,
    pub model: String,
    pub samples: usize,
    pub batch: usize,
    pub seed: u64,
    pub frac_bits: u32,
    /// Accuracy of the secure predictions against the labels.
    pub accuracy: f64,
    /// Fraction of samples where the secure prediction equals the plaintext fixed-point one.
    pub plaintext_agreement: f64,
    /// Fraction of samples where the secure prediction equals the float model's (exact ReLU).
    pub float_agreement: f64,
    pub plaintext_accuracy: f64,
    pub float_accuracy: f64,
    /// Largest |secure logit - plaintext logit| over all outputs.
    pub max_logit_error: f64,
    /// Payload bytes of the job, all links summed (session setup excluded).
    pub bytes_total: u64,
    pub messages: u64,
    /// Causal rounds of the job.
    pub rounds: u64,
    pub setup_bytes: u64,
    pub links: Vec<LinkReport>,
    pub wall_seconds: f64,
    /// CPU time of the whole process during the run (all parties and threads).
    pub cpu_seconds: f64,
    /// CPU time of each party's thread (P0, P1, P2).
    pub party_cpu_seconds: Vec<f64>,
    pub predictions: Vec<usize>,
    pub plaintext_predictions: Vec<usize>,
    pub float_predictions: Vec<usize>,
    pub labels: Vec<u8>,
}

/// Called with (batches done, batches in all) at the data owner.
pub type Progress = Arc<dyn Fn(usize, usize) + Send + Sync>;

fn argmax(v: &[f64]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |(bi, bv), (i, &x)| {
            if x > bv { (i, x) } else { (bi, bv) }
        })
        .0
}

fn agreement(a: &[usize], b: &[usize]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len().max(1) as f64
}

fn accuracy(p: &[usize], labels: &[u8]) -> f64 {
    p.iter()
        .zip(labels)
        .filter(|(x, y)| **x == **y as usize)
        .count() as f64
        / p.len().max(1) as f64
}

impl InferSpec {
    fn check(&self) -> Result<(), InferError> {
        self.model.validate(&self.weights)?;
        if self.batch == 0 {
            return Err(InferError::Spec("--batch must be at least 1".into()));
        }
        if self.data.images.is_empty() {
            return Err(InferError::Spec("--samples must be at least 1".into()));
        }
        if self
            .data
            .images
            .iter()
            .any(|im| im.len() != crate::ring::numel(&self.model.input))
        {
            return Err(InferError::Spec(format!(
                "model {} wants inputs of shape {:?}",
                self.model_name, self.model.input
            )));
        }
        if self.data_owner.0 > 2 || self.model_owner.0 > 2 {
            return Err(InferError::Spec("owners must be parties 0, 1 or 2".into()));
        }
        Ok(())
    }

    /// The images as fixed-point batches of shape [b, ...input].
    fn batches(&self, fp: FixedPoint) -> Result<Vec<RingTensor>, InferError> {
        self.data
            .images
            .chunks(self.batch)
            .map(|chunk| {
                let flat: Vec<f64> = chunk.iter().flatten().copied().collect();
                fp.encode_tensor(&self.batch_shape(chunk.len()), &flat)
                    .map_err(|e| InferError::Spec(format!("input image: {e}")))
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

/// One party's part of the job: input the weights, then per batch input the images, run the
/// model and reveal the logits to the data owner. Returns the decoded logits at the data owner.
#[allow(clippy::too_many_arguments)]
async fn party_job<P: Protocol>(
    p: P,
    ctx: Ctx,
    model: Sequential,
    weights: Option<Weights>,
    batches: Option<Vec<RingTensor>>,
    shapes: Vec<Vec<usize>>,
    owners: (PartyId, PartyId),
    progress: Option<Progress>,
) -> Result<Vec<Vec<f64>>, ProtocolError> {
    let (data_owner, model_owner) = owners;
    let fp = ctx.fixed();
    let params = input_params(&p, &ctx, &model, model_owner, weights.as_ref()).await?;
    let mut logits = Vec::new();
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
        if let Some(out) = p.reveal(&bctx, &y, data_owner).await? {
            let classes = *out.shape().last().expect("logits have a class axis");
            logits.extend(fp.decode_tensor(&out).chunks(classes).map(<[f64]>::to_vec));
            if let Some(cb) = &progress {
                cb(i + 1, shapes.len());
            }
        }
    }
    Ok(logits)
}

type Outcome = (
    Vec<Vec<f64>>,
    MeterSnapshot,
    MeterSnapshot,
    Duration,
    Duration,
    Vec<Duration>,
);

/// The secure job at three parties: the model owner's job gets the weights, the data owner's
/// job the images, every job the public shapes.
fn run_parties<P: Protocol + Send + 'static>(
    spec: &InferSpec,
    batches: &[RingTensor],
    shapes: &[Vec<usize>],
    progress: Option<Progress>,
    backend: impl Fn() -> P,
) -> Result<Outcome, InferError> {
    let jobs = |party: PartyId| -> JobFn<Vec<Vec<f64>>> {
        let model = spec.model.clone();
        let weights = (party == spec.model_owner).then(|| spec.weights.clone());
        let data = (party == spec.data_owner).then(|| batches.to_vec());
        let (shapes, owners) = (shapes.to_vec(), (spec.data_owner, spec.model_owner));
        let (p, progress) = (backend(), progress.clone());
        Box::new(move |ctx| {
            Box::pin(party_job(
                p, ctx, model, weights, data, shapes, owners, progress,
            ))
        })
    };
    let r = LocalCluster::run_once(spec.config, SeedSource::Fixed(spec.seed), "infer", jobs)?;
    let logits = r
        .outputs
        .into_iter()
        .nth(spec.data_owner.index())
        .expect("three outputs");
    Ok((logits, r.traffic, r.setup, r.wall, r.cpu, r.party_cpu))
}

/// Run the job and its references; see [`InferReport`].
pub fn run_inference(
    spec: &InferSpec,
    progress: Option<Progress>,
) -> Result<InferReport, InferError> {
    spec.check()?;
    let fp = spec.config.fixed;
    let batches = spec.batches(fp)?;
    let shapes: Vec<Vec<usize>> = batches.iter().map(|b| b.shape().to_vec()).collect();

    // References, outside the timed run: the plaintext fixed-point model with the protocol's ReLU,
    // and the float model with the exact ReLU.
    let plain = Plaintext {
        relu: spec.relu_kind(),
    };
    let plain_logits = futures::executor::block_on(party_job(
        plain,
        Ctx::local(fp),
        spec.model.clone(),
        Some(spec.weights.clone()),
        Some(batches.clone()),
        shapes.clone(),
        (P0, P0),
        None,
    ))?;
    let mut float_logits = Vec::new();
    for chunk in spec.data.images.chunks(spec.batch) {
        let flat: Vec<f64> = chunk.iter().flatten().copied().collect();
        let x = ArrayD::from_shape_vec(IxDyn(&spec.batch_shape(chunk.len())), flat)
            .expect("batch shape");
        let y = forward_float(&spec.model, &spec.weights, &x, &ReluKind::Exact)?;
        float_logits.extend(
            y.outer_iter()
                .map(|r| r.iter().copied().collect::<Vec<f64>>()),
        );
    }

    let (logits, traffic, setup, wall, cpu, party_cpu) = match spec.protocol {
        ProtocolKind::Plaintext => {
            let t0 = std::time::Instant::now();
            let c0 = crate::party::process_cpu_time();
            let l = futures::executor::block_on(party_job(
                Plaintext {
                    relu: ReluKind::Exact,
                },
                Ctx::local(fp),
                spec.model.clone(),
                Some(spec.weights.clone()),
                Some(batches.clone()),
                shapes.clone(),
                (P0, P0),
                progress,
            ))?;
            let cpu = crate::party::process_cpu_time() - c0;
            (
                l,
                Default::default(),
                Default::default(),
                t0.elapsed(),
                cpu,
                vec![cpu],
            )
        }
        ProtocolKind::Pond => {
            let pond = Pond {
                relu: spec.relu_poly.clone(),
            };
            run_parties(spec, &batches, &shapes, progress, move || pond.clone())?
        }
        ProtocolKind::SecureNn => {
            run_parties(spec, &batches, &shapes, progress, SecureNn::default)?
        }
    };

    let predictions: Vec<usize> = logits.iter().map(|l| argmax(l)).collect();
    let plaintext_predictions: Vec<usize> = plain_logits.iter().map(|l| argmax(l)).collect();
    let float_predictions: Vec<usize> = float_logits.iter().map(|l| argmax(l)).collect();
    let max_logit_error = logits
        .iter()
        .flatten()
        .zip(plain_logits.iter().flatten())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let labels = spec.data.labels.clone();
    Ok(InferReport {
        protocol: spec.protocol,
        model: spec.model_name.clone(),
        samples: predictions.len(),
        batch: spec.batch,
        seed: spec.seed,
        frac_bits: fp.frac_bits,
        accuracy: accuracy(&predictions, &labels),
        plaintext_agreement: agreement(&predictions, &plaintext_predictions),
        float_agreement: agreement(&predictions, &float_predictions),
        plaintext_accuracy: accuracy(&plaintext_predictions, &labels),
        float_accuracy: accuracy(&float_predictions, &labels),
        max_logit_error,
        bytes_total: traffic.total_bytes(),
        messages: traffic.total_messages(),
        rounds: traffic.rounds,
        setup_bytes: setup.total_bytes(),
        links: traffic
            .links
            .iter()
            .map(|l| LinkReport {
                from: l.from,
                to: l.to,
                bytes: l.bytes,
                messages: l.messages,
            })
            .collect(),
        wall_seconds: wall.as_secs_f64(),
        cpu_seconds: cpu.as_secs_f64(),
        party_cpu_seconds: party_cpu.iter().map(|d| d.as_secs_f64()).collect(),
        predictions,
        plaintext_predictions,
        float_predictions,
        labels,
    })
}
