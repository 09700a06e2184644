//! Real deployment: one party per process over QUIC. A deployment file (TOML) names every
//! party's address and certificate and the job; `securenn keygen --id N` writes party N's
//! identity (on its operator's machine) and a template, `securenn party --config FILE --id N`
//! runs party N.
//!
//! At start-up the parties connect (each peer reported as it connects), check that all three
//! run the same public job ([`JobParams`]: a mismatch fails every party at once, naming the
//! fields), agree their seeds and run the job, secure inference or (`[job] kind = "train"`,
//! [`train`]) secure training, reporting progress ([`PartyEvent`]). A peer that
//! falls silent is declared dead after `[limits] dead_peer_timeout`; a party that is stopped
//! ([`Watch::stop`], SIGINT or SIGTERM in the binary) tells its peers who stopped before it
//! closes its connections.

pub mod train;

pub use train::{PartyTraining, TrainJobEntry};

use crate::channel::{Ctx, PartyId, ProtocolError, Wire};
use crate::data::{DataSource, Mnist};
use crate::fixed::FixedPoint;
use crate::infer::{Outputs, accuracy, infer_job};
use crate::nn::weights_file;
use crate::party::{JobFn, LocalCluster, PartyConfig, SeedSource, send_abort};
use crate::protocol::{Pond, SecureNn, TFE_RELU_9};
use futures::future::LocalBoxFuture;
use securenn_transports::quic::{
    Identity, OnConnect, QuicConfig, QuicLimits, QuicNode, check_identity, generate_identity,
    server_name,
};
use securenn_transports::{
    Envelope, EnvelopeRecord, Meter, MeterSnapshot, Transport, TransportError,
};
use serde::Deserialize;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// A deployment file: the parties, the job (`[job] kind`: inference, the default, or
/// `train`) and the limits.
#[derive(Clone, Debug)]
pub struct Deployment {
    pub party: Vec<PartyEntry>,
    pub job: DeploymentJob,
    pub limits: LimitsEntry,
}

/// A deployment's job, by its `[job] kind`.
#[derive(Clone, Debug)]
pub enum DeploymentJob {
    /// Secure inference (no `kind`, or `kind = "inference"`).
    Inference(JobEntry),
    /// Secure training (`kind = "train"`).
    Train(TrainJobEntry),
}

impl DeploymentJob {
    /// `[job] seed`.
    pub fn seed(&self) -> Option<u64> {
        match self {
            Self::Inference(j) => j.seed,
            Self::Train(j) => j.seed,
        }
    }
}

/// A deployment file as written, with the job of the kind its `[job] kind` names.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeploymentFile<J> {
    party: Vec<PartyEntry>,
    job: J,
    #[serde(default)]
    limits: LimitsEntry,
}

/// `[limits]`: what a peer may make this party hold or wait for. Every key is optional; the
/// defaults are [`QuicLimits::default`]'s (documented there and in the README's Threat model).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsEntry {
    /// Largest message accepted from a peer, in MiB (1 to 4095: frames have a 32-bit length).
    pub max_frame_mib: Option<u64>,
    /// Most bytes a peer may have delivered that this party has not consumed yet, in MiB.
    pub max_queued_mib: Option<u64>,
    /// Seconds one QUIC handshake may take.
    pub handshake_timeout: Option<u64>,
    /// Seconds a connected peer may stay silent before it is declared dead (keep-alives go out
    /// five times as often).
    pub dead_peer_timeout: Option<u64>,
}

impl LimitsEntry {
    /// Why these limits cannot be used, naming the key, if they cannot.
    fn check(&self) -> Option<String> {
        let bad = |key: &str, v: u64, lo: u64, hi: u64| {
            (v < lo || v > hi).then(|| format!("limits.{key} = {v}: must be {lo} to {hi}"))
        };
        self.max_frame_mib
            .and_then(|v| bad("max_frame_mib", v, 1, 4095))
            .or_else(|| {
                self.max_queued_mib
                    .and_then(|v| bad("max_queued_mib", v, 1, 1 << 20))
            })
            .or_else(|| {
                self.handshake_timeout
                    .and_then(|v| bad("handshake_timeout", v, 1, 600))
            })
            .or_else(|| {
                self.dead_peer_timeout
                    .and_then(|v| bad("dead_peer_timeout", v, 1, 600))
            })
    }

    /// The transport's limits: the defaults, with what the file sets.
    pub fn quic(&self) -> QuicLimits {
        let d = QuicLimits::default();
        QuicLimits {
            max_frame_bytes: self.max_frame_mib.map_or(d.max_frame_bytes, |m| m << 20),
            max_queued_bytes: self.max_queued_mib.map_or(d.max_queued_bytes, |m| m << 20),
            handshake_timeout: self
                .handshake_timeout
                .map_or(d.handshake_timeout, Duration::from_secs),
            dead_peer_timeout: self
                .dead_peer_timeout
                .map_or(d.dead_peer_timeout, Duration::from_secs),
            ..d
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartyEntry {
    pub id: u8,
    /// Where the other parties dial this one: `host:port`, a host name or an IP address,
    /// resolved at start-up.
    pub address: String,
    /// Where this party listens, if not at `address` (say `0.0.0.0:7100` behind a NAT).
    pub listen: Option<String>,
    /// DER certificate, relative to the deployment file.
    pub certificate: PathBuf,
}

/// `text` (`host:port`) resolved, the first IPv4 address preferred (all parties then agree on
/// one for a name with both); the error names `what` (the party and the key).
fn resolve_addr(text: &str, what: &str) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("{what} = {text:?} does not resolve: {e} (expected host:port)"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{what} = {text:?} resolves to no address"))
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobEntry {
    /// `inference` (or absent); a training job is a [`TrainJobEntry`].
    #[serde(default)]
    pub kind: crate::scenario::JobKind,
    /// `securenn` or `pond`.
    pub protocol: String,
    /// A built-in model name (exactly one of `model` and `onnx` is given).
    pub model: Option<String>,
    /// An ONNX file with the architecture and the weights (model owner only, relative to the
    /// deployment file; the others need not have it): the model owner sends the architecture,
    /// never a weight, to the others at start-up ([`Architecture`]).
    pub onnx: Option<PathBuf>,
    /// Weight file of a built-in model (model owner only; default: the bundled one).
    pub weights: Option<PathBuf>,
    /// MNIST CSV (data owner only; default: the bundled one's test split). A file is read
    /// whole, in file order, from `offset`.
    pub data: Option<PathBuf>,
    /// Where the label is in each line of `data`: `last` (default, as the bundled file) or
    /// `first`.
    #[serde(default)]
    pub label_column: crate::data::LabelColumn,
    /// Instead of `data`: the data owner's inputs as a float32 `.npy` of N × the model's input
    /// shape (as `securenn infer --input` reads them), for a model whose inputs are not MNIST
    /// images; read from `offset` in file order.
    pub input: Option<PathBuf>,
    /// Labels of `input` (data owner only): a `.npy` vector of N integers; optional.
    pub labels: Option<PathBuf>,
    /// The range every input value lies in, public: the model owner's range analysis bounds
    /// the activations from it (SecureNN's comparison widths too), and the data owner refuses
    /// an input outside it. Default [0, 1], MNIST pixels / 255.
    pub input_range: Option<[f64; 2]>,
    pub samples: usize,
    pub batch: usize,
    pub offset: Option<usize>,
    pub data_owner: u8,
    pub model_owner: u8,
    /// A fixed seed makes the run reproducible, and its pair seeds, masks and shares known to
    /// whoever knows it (everyone who has this file): refused unless the caller allows it with
    /// [`FixedSeed::AllowInsecure`]. Without one every party draws fresh entropy, as a
    /// deployment should.
    pub seed: Option<u64>,
    /// Seconds to wait for every peer at start-up.
    pub connect_timeout: Option<u64>,
    /// Seconds a party waits for a peer's message.
    pub timeout: Option<u64>,
}

/// What `job.model` reads in the parameters and reports of a job with `onnx = "FILE"`: the path
/// is the model owner's, local to its machine (the others need not have the file), so it is not
/// part of the public job; the architecture is, through `model.input` and `model.architecture`.
pub const ONNX_MODEL: &str = "onnx";

impl JobEntry {
    /// The model as the parties agree on it and reports name it: the built-in model's name, or
    /// [`ONNX_MODEL`].
    pub fn model_name(&self) -> &str {
        self.model.as_deref().unwrap_or(ONNX_MODEL)
    }
}

/// The public parameters of a job, as `field = value` pairs: what every party must agree on
/// before it computes (never weights, data, paths or seeds). They travel as JSON in a
/// fixed-size message, so the receiver knows its length, as every message of the protocols.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobParams(pub Vec<(String, String)>);

/// Bytes of a [`JobParams`] message: a dozen short fields take a few hundred.
const JOB_PARAMS_BYTES: usize = 4096;

/// Longest peer-chosen field name or value quoted in an error.
const MAX_PARAM_TEXT: usize = 80;

impl Wire for JobParams {
    type Shape = ();
    fn wire_len(_: &()) -> usize {
        JOB_PARAMS_BYTES
    }
    fn write(&self, out: &mut Vec<u8>) {
        let json = serde_json::to_vec(self).expect("strings serialise");
        assert!(json.len() <= JOB_PARAMS_BYTES, "job parameters fit");
        let start = out.len();
        out.extend_from_slice(&json);
        out.resize(start + JOB_PARAMS_BYTES, 0);
    }
    fn read(bytes: &[u8], _: &()) -> Result<Self, String> {
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        serde_json::from_slice(&bytes[..end]).map_err(|e| format!("job parameters: {e}"))
    }
}

impl JobParams {
    /// The public parameters of `job` running `model` (as run: layout applied) with `fp`;
    /// without `model.input` and `model.architecture` if `model` is `None` (an ONNX job before
    /// the model owner has sent the architecture).
    fn new(job: &JobEntry, model: Option<&crate::nn::Model>, fp: FixedPoint) -> Self {
        let relu = match job.protocol.as_str() {
            "pond" => format!("polynomial {:?}", TFE_RELU_9),
            _ => "exact".to_string(),
        };
        let relu = blake3::hash(relu.as_bytes()).to_hex();
        let model = model.map(architecture_fields);
        let fields = [
            (
                "securenn.version",
                Some(env!("CARGO_PKG_VERSION").to_string()),
            ),
            ("job.kind", Some("inference".to_string())),
            ("job.protocol", Some(job.protocol.clone())),
            ("job.model", Some(job.model_name().to_string())),
            ("model.input", model.as_ref().map(|m| m.0.clone())),
            ("model.architecture", model.map(|m| m.1)),
            ("relu", Some(relu[..16].to_string())),
            ("job.samples", Some(job.samples.to_string())),
            ("job.batch", Some(job.batch.to_string())),
            (
                "job.input",
                Some(
                    if job.input.is_some() {
                        "npy"
                    } else {
                        "mnist csv"
                    }
                    .to_string(),
                ),
            ),
            ("job.input_range", Some(format!("{:?}", job.input_range()))),
            ("job.data_owner", Some(job.data_owner.to_string())),
            ("job.model_owner", Some(job.model_owner.to_string())),
            ("fixed.frac_bits", Some(fp.frac_bits.to_string())),
        ];
        Self(
            fields
                .into_iter()
                .filter_map(|(k, v)| Some((k.to_string(), v?)))
                .collect(),
        )
    }

    fn get(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == field)
            .map(|(_, v)| v.as_str())
    }
}

/// `model.input` and `model.architecture` of the job parameters: the input shape, and a digest
/// of the model as run.
fn architecture_fields(m: &crate::nn::Model) -> (String, String) {
    let architecture = blake3::hash(format!("{m:?}").as_bytes()).to_hex();
    (format!("{:?}", m.input), architecture[..16].to_string())
}

/// The fields on which the parties' parameters (`all[i]` is party i's) differ, each with every
/// party's value: `job.samples differs: party 0 has 20, party 1 has 10, party 2 has 20`.
/// Peer-sent names and values are escaped and capped.
pub fn job_differences(all: &[JobParams]) -> Vec<String> {
    let mut fields: Vec<&str> = Vec::new();
    for p in all {
        for (k, _) in &p.0 {
            if !fields.contains(&k.as_str()) {
                fields.push(k);
            }
        }
    }
    fields
        .into_iter()
        .filter(|f| all.iter().any(|p| p.get(f) != all[0].get(f)))
        .map(|f| {
            let values: Vec<String> = all
                .iter()
                .enumerate()
                .map(|(i, p)| match p.get(f) {
                    Some(v) => format!(
                        "party {i} has {}",
                        securenn_transports::printable(v, MAX_PARAM_TEXT)
                    ),
                    None => format!("party {i} has none"),
                })
                .collect();
            format!(
                "{} differs: {}",
                securenn_transports::printable(f, MAX_PARAM_TEXT),
                values.join(", ")
            )
        })
        .collect()
}

/// Largest model architecture a party accepts from the model owner of an ONNX job: 1 MiB. An
/// architecture (layers, shapes and attributes, no weight) takes tens of bytes: 36 for the ONNX
/// fixtures' MLP, 156 for their residual network, 67 for network C.
pub const MAX_ARCHITECTURE_BYTES: usize = 1 << 20;

/// The length of the [`Architecture`] message that follows: 8 bytes, a little-endian u64, read
/// only if 1 to [`MAX_ARCHITECTURE_BYTES`], so that a peer cannot make this party wait for (or
/// hold) more.
struct ArchitectureLen(u64);

impl Wire for ArchitectureLen {
    type Shape = ();
    fn wire_len(_: &()) -> usize {
        8
    }
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.to_le_bytes());
    }
    fn read(bytes: &[u8], _: &()) -> Result<Self, String> {
        let n = u64::from_le_bytes(bytes.try_into().expect("length checked"));
        if n == 0 || n > MAX_ARCHITECTURE_BYTES as u64 {
            return Err(format!(
                "the architecture would take {n} bytes; a party accepts 1 to \
                 {MAX_ARCHITECTURE_BYTES} (1 MiB)"
            ));
        }
        Ok(Self(n))
    }
}

/// An ONNX job's model as the model owner sends it to the others at start-up, after an
/// [`ArchitectureLen`]: the [`Model`](crate::nn::Model) (layers, shapes, attributes, input
/// layout: the public architecture, no weight) encoded with bincode's standard configuration.
/// The receiver decodes it within [`MAX_ARCHITECTURE_BYTES`] and checks that it holds together
/// ([`Model::describe`](crate::nn::Model::describe)); an error names the sender.
pub struct Architecture(pub crate::nn::Model);

fn architecture_codec() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_ARCHITECTURE_BYTES>()
}

/// `model`'s architecture as it travels.
pub fn encode_architecture(model: &crate::nn::Model) -> Vec<u8> {
    bincode::serde::encode_to_vec(model, architecture_codec()).expect("a model encodes")
}

/// Longest text quoted from a peer's architecture in an error.
const MAX_ARCHITECTURE_TEXT: usize = 400;

/// The architecture in `bytes`, checked; the error says what is wrong without quoting more than
/// a few hundred characters of it.
pub fn decode_architecture(bytes: &[u8]) -> Result<crate::nn::Model, String> {
    // A model holds no text, so what is quoted is numbers and shapes, but maybe many.
    let short = |t: String| match t.char_indices().nth(MAX_ARCHITECTURE_TEXT) {
        Some((cut, _)) => format!("{} ... ({} more bytes)", &t[..cut], t.len() - cut),
        None => t,
    };
    let (model, used): (crate::nn::Model, usize) =
        bincode::serde::decode_from_slice(bytes, architecture_codec())
            .map_err(|e| short(format!("not a model architecture: {e}")))?;
    if used != bytes.len() {
        return Err(format!(
            "not a model architecture: {} byte(s) after its end",
            bytes.len() - used
        ));
    }
    model
        .describe()
        .map_err(|e| short(format!("the architecture does not hold together: {e}")))?;
    if model.nodes.is_empty() {
        return Err("the architecture has no layer".into());
    }
    Ok(model)
}

impl Wire for Architecture {
    /// The encoded length, from the [`ArchitectureLen`] before it.
    type Shape = usize;
    fn wire_len(n: &usize) -> usize {
        *n
    }
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&encode_architecture(&self.0));
    }
    fn read(bytes: &[u8], _: &usize) -> Result<Self, String> {
        decode_architecture(bytes).map(Self)
    }
}

/// Send `model`'s architecture to both peers (the model owner of an ONNX job).
fn send_architecture(ctx: &Ctx, model: &crate::nn::Model) -> Result<(), ProtocolError> {
    let ctx = ctx.child("architecture");
    let n = encode_architecture(model).len() as u64;
    for p in (0..3).map(PartyId).filter(|p| *p != ctx.me()) {
        ctx.send(p, &ArchitectureLen(n))?;
        ctx.send(p, &Architecture(model.clone()))?;
    }
    Ok(())
}

/// Receive the architecture of an ONNX job from its model owner `from`, checked: a message
/// over [`MAX_ARCHITECTURE_BYTES`] or one that is not a model fails naming `from`.
async fn recv_architecture(ctx: &Ctx, from: PartyId) -> Result<crate::nn::Model, ProtocolError> {
    let ctx = ctx.child("architecture");
    let ArchitectureLen(n) = ctx.recv(from, &()).await?;
    let Architecture(model) = ctx.recv(from, &(n as usize)).await?;
    Ok(model)
}

/// The architecture job of an ONNX job: the model owner (who passes its `model`) sends the
/// architecture to both peers, who receive it; every party returns the model.
fn architecture_job(model: Option<crate::nn::Model>, owner: PartyId) -> JobFn<crate::nn::Model> {
    Box::new(move |ctx: Ctx| {
        Box::pin(async move {
            match model {
                Some(m) => {
                    send_architecture(&ctx, &m)?;
                    Ok(m)
                }
                None => recv_architecture(&ctx, owner).await,
            }
        })
    })
}

/// The job-agreement job: send this party's parameters to both peers, and return all three
/// (in party order).
fn agree_job(mine: JobParams) -> JobFn<Vec<JobParams>> {
    Box::new(move |ctx: Ctx| {
        Box::pin(async move {
            let me = ctx.me();
            let peers: Vec<PartyId> = (0..3).map(PartyId).filter(|p| *p != me).collect();
            for p in &peers {
                ctx.send(*p, &mine)?;
            }
            let mut all = Vec::new();
            for i in 0..3u8 {
                let p = PartyId(i);
                all.push(if p == me {
                    mine.clone()
                } else {
                    ctx.recv::<JobParams>(p, &()).await?
                });
            }
            Ok::<_, ProtocolError>(all)
        })
    })
}

/// What a running party reports as it goes (see [`Watch`]).
#[derive(Clone, Debug)]
pub enum PartyEvent {
    /// Connected to `peer`, at `addr`.
    Connected { peer: PartyId, addr: SocketAddr },
    /// All three parties run the same job, of `batches` batches: it starts.
    Started { batches: usize },
    /// `done` of `total` batches are done at this party.
    Progress { done: usize, total: usize },
    /// All three parties run the same training job, of `epochs` epochs of `iterations`
    /// iterations each, on the data owner's `train_images` (and `test_images` for the test at
    /// every epoch end): it starts.
    TrainingStarted {
        epochs: usize,
        iterations: usize,
        train_images: usize,
        test_images: usize,
    },
    /// Iteration `iteration` of `of` of epoch `epoch` is done at this party.
    Iteration {
        epoch: usize,
        iteration: usize,
        of: usize,
    },
    /// Epoch `epoch` of `epochs` is done at this party: its shares are checkpointed (into
    /// `checkpoint_dir`, if it has one) and, at the model owner, the test accuracy is known.
    Epoch {
        epoch: usize,
        epochs: usize,
        test_accuracy: Option<f64>,
        checkpoint_dir: Option<PathBuf>,
    },
}

/// Who watches a running party: told of its [`PartyEvent`]s, and able to stop it.
#[derive(Default)]
pub struct Watch {
    /// Called with each event, from whichever thread it happens on.
    pub events: Option<Arc<dyn Fn(PartyEvent) + Send + Sync>>,
    /// When this resolves (with what stopped it, e.g. `SIGTERM`), the party stops its job and
    /// tells its peers, who fail naming it: "P2 stopped (SIGTERM)". Only heeded once the job
    /// has started ([`PartyEvent::Started`]); before then the caller may just exit.
    pub stop: Option<futures::channel::oneshot::Receiver<String>>,
}

/// The party's transport, watched: the batch each envelope it sends belongs to (its key's
/// `infer/batch~k/...`) is its progress through the job.
struct Watched {
    inner: Arc<dyn Transport>,
    /// Batches begun at this party (1 once the first batch's messages go out).
    begun: AtomicUsize,
    total: usize,
    events: Option<Arc<dyn Fn(PartyEvent) + Send + Sync>>,
}

/// The batch (1-based) of an envelope of the inference job, from its key.
fn batch_of(key: &str) -> Option<usize> {
    let mut parts = key.split('#').next()?.split('/');
    if parts.next()? != "infer" {
        return None;
    }
    match parts.next()?.split_once('~') {
        None if key.starts_with("infer/batch/") => Some(1),
        Some(("batch", k)) => k.parse::<usize>().ok().map(|k| k + 1),
        _ => None,
    }
}

impl Transport for Watched {
    fn party(&self) -> PartyId {
        self.inner.party()
    }
    fn parties(&self) -> usize {
        self.inner.parties()
    }
    fn send(&self, env: Envelope) -> Result<(), TransportError> {
        if let Some(b) = batch_of(&env.key)
            && self.begun.fetch_max(b, Ordering::Relaxed) < b
            && let Some(f) = &self.events
        {
            f(PartyEvent::Progress {
                done: b - 1,
                total: self.total,
            });
        }
        self.inner.send(env)
    }
    fn on_receive(&self, env: &Envelope) {
        self.inner.on_receive(env)
    }
    fn virtual_now(&self) -> Option<Duration> {
        self.inner.virtual_now()
    }
    fn cut_off(&self, peer: PartyId, reason: &str) {
        self.inner.cut_off(peer, reason)
    }
}

/// Problems with a deployment, naming the file, the field or the peer.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error(transparent)]
    Transport(#[from] securenn_transports::TransportError),
    #[error(transparent)]
    Protocol(#[from] crate::channel::ProtocolError),
    #[error(transparent)]
    Weights(#[from] weights_file::WeightFileError),
    #[error("the model owner's weights: {0}")]
    Range(#[from] crate::nn::range::RangeError),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error("{path} exists; pass --force to overwrite it")]
    Exists { path: String },
    /// `[job] seed` in a deployment run without [`FixedSeed::AllowInsecure`].
    #[error(
        "{path}: [job] has a `seed`: every pair seed, and so every mask and share of the \
         run, would derive from this one number, which everyone who has this file knows, so the \
         run would keep nothing private from them; remove `seed` from [job] for a deployment, or \
         pass --insecure-reproducible to reproduce an experiment (never with real data)"
    )]
    FixedSeed { path: String, seed: u64 },
    /// A private key file that group or others can read (Unix): refused, as ssh does, since a
    /// key others could read identifies nobody.
    #[error(
        "{path}: the key of {party} can be read by group or others (mode {mode:04o}); \
         run `chmod 600 {path}` so that only its owner can read it"
    )]
    KeyPermissions {
        path: String,
        party: PartyId,
        mode: u32,
    },
    /// A symbolic link where keygen would write: never followed, even with `--force`, since a
    /// link planted at a key path would send the key (or the truncation) wherever it points.
    #[error(
        "{path} is a symbolic link; keygen never writes through one: remove it (and check who made it)"
    )]
    Symlink { path: String },
    /// The parties' public job parameters differ: every party fails with the same list.
    #[error(
        "the parties do not run the same job: {}; every party must run the same [job] of \
         deploy.toml with the same securenn version",
        differences.join("; ")
    )]
    JobMismatch { differences: Vec<String> },
    /// The data owner's images do not fit the model the model owner sent (an ONNX job).
    #[error(
        "the model {owner} sent takes inputs of shape {shape:?} ({values} values), but the data \
         owner's images are MNIST images of {pixels} pixels: run an ONNX model of 784 inputs \
         (1 × 28 × 28 or 784)"
    )]
    ModelInput {
        owner: PartyId,
        shape: Vec<usize>,
        values: usize,
        pixels: usize,
    },
    /// A training job that cannot run, or a party's part of it.
    #[error(transparent)]
    Train(#[from] crate::training::TrainError),
    /// This party was stopped (by a signal) while its job ran; its peers were told.
    #[error("{party} stopped ({signal}); the job was aborted and the other parties told")]
    Stopped { party: PartyId, signal: String },
}

impl DeployError {
    /// The signal that stopped the party, if it was stopped.
    pub fn stopped_by(&self) -> Option<&str> {
        match self {
            Self::Stopped { signal, .. } => Some(signal),
            _ => None,
        }
    }
}

/// Whether a deployment may fix the session seed (`[job] seed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FixedSeed {
    /// Refuse a job with a seed ([`DeployError::FixedSeed`]): what a real deployment wants.
    Refuse,
    /// Run it, to reproduce an experiment. Every pair seed, and so every mask and share, derives
    /// from the seed, which everyone who has the deployment file knows: the run keeps nothing
    /// private from them. The caller tells its user so ([`Deployment::insecure_seed_warning`]).
    AllowInsecure,
}

fn file_err(path: &Path, reason: impl std::fmt::Display) -> DeployError {
    DeployError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// `[job] model`, `onnx` and `weights` of a job of either kind: exactly one of `model` (a
/// built-in model) and `onnx`, and no `weights` with `onnx`.
fn check_model_keys(
    model: Option<&str>,
    onnx: Option<&Path>,
    weights: Option<&Path>,
    path: &Path,
) -> Result<(), DeployError> {
    match (model, onnx) {
        (None, None) => {
            return Err(file_err(
                path,
                format!(
                    "[job] names no model: give `model` (a built-in model: {}) or `onnx` (an \
                     ONNX file, read by the model owner only)",
                    crate::models::BUILTIN.join(", ")
                ),
            ));
        }
        (Some(_), Some(_)) => {
            return Err(file_err(
                path,
                "job.model and job.onnx: give one of them, not both",
            ));
        }
        (Some(m), None) if crate::models::by_name(m).is_none() => {
            return Err(file_err(
                path,
                format!(
                    "job.model: unknown model {m:?}; known: {} (or give `onnx` = an ONNX file)",
                    crate::models::BUILTIN.join(", ")
                ),
            ));
        }
        (None, Some(_)) if weights.is_some() => {
            return Err(file_err(
                path,
                "job.weights: an ONNX model (job.onnx) carries its own weights",
            ));
        }
        _ => {}
    }
    Ok(())
}

/// The checks of an inference job that need no file but the deployment, naming the key.
fn check_job(job: &JobEntry, path: &Path) -> Result<(), DeployError> {
    check_model_keys(
        job.model.as_deref(),
        job.onnx.as_deref(),
        job.weights.as_deref(),
        path,
    )?;
    if !["securenn", "pond"].contains(&job.protocol.as_str()) {
        return Err(file_err(
            path,
            format!("job.protocol: {:?} is not securenn or pond", job.protocol),
        ));
    }
    if job.data_owner > 2 || job.model_owner > 2 {
        return Err(file_err(
            path,
            "job.data_owner and job.model_owner must be 0, 1 or 2",
        ));
    }
    if job.samples == 0 || job.batch == 0 {
        return Err(file_err(
            path,
            "job.samples and job.batch must be at least 1",
        ));
    }
    if job.input.is_some() && job.data.is_some() {
        return Err(file_err(
            path,
            "job.input and job.data: give one of them, not both (input is a .npy tensor, data \
             an MNIST CSV)",
        ));
    }
    if job.labels.is_some() && job.input.is_none() {
        return Err(file_err(
            path,
            "job.labels: labels go with job.input (a .npy of inputs)",
        ));
    }
    if let Some([lo, hi]) = job.input_range
        && !(lo.is_finite() && hi.is_finite() && lo < hi)
    {
        return Err(file_err(
            path,
            format!("job.input_range: [{lo}, {hi}] is not an interval [low, high] of numbers"),
        ));
    }
    Ok(())
}

impl JobEntry {
    /// The public range of the inputs ([`JobEntry::input_range`]).
    fn input_range(&self) -> (f64, f64) {
        self.input_range
            .map_or(crate::nn::range::MNIST_INPUT_RANGE, |[lo, hi]| (lo, hi))
    }
}

impl Deployment {
    /// Read and check a deployment file: three parties with ids 0, 1, 2, a known model and
    /// protocol, owners among the parties.
    pub fn load(path: &Path) -> Result<Self, DeployError> {
        let text = std::fs::read_to_string(path).map_err(|e| file_err(path, e))?;
        Self::parse(&text, path)
    }

    /// [`Deployment::load`] of `text`, the text of the file at `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, DeployError> {
        use crate::scenario::{JobKind, job_kind};
        let d = match job_kind(text).map_err(|e| file_err(path, e))? {
            JobKind::Inference => {
                let f: DeploymentFile<JobEntry> =
                    toml::from_str(text).map_err(|e| file_err(path, e))?;
                check_job(&f.job, path)?;
                Deployment {
                    party: f.party,
                    job: DeploymentJob::Inference(f.job),
                    limits: f.limits,
                }
            }
            JobKind::Train => {
                let f: DeploymentFile<TrainJobEntry> =
                    toml::from_str(text).map_err(|e| file_err(path, e))?;
                f.job.check(path)?;
                Deployment {
                    party: f.party,
                    job: DeploymentJob::Train(f.job),
                    limits: f.limits,
                }
            }
        };
        let mut ids: Vec<u8> = d.party.iter().map(|p| p.id).collect();
        ids.sort_unstable();
        if ids != [0, 1, 2] {
            return Err(file_err(
                path,
                format!("[[party]] ids must be 0, 1 and 2, got {ids:?}"),
            ));
        }
        if let Some(reason) = d.limits.check() {
            return Err(file_err(path, reason));
        }
        Ok(d)
    }

    /// Where the parties' seeds come from: fresh operating-system entropy, or the job's fixed
    /// seed if `permission` allows it. `path` (the deployment file) names the file in the error.
    pub fn seed_source(
        &self,
        path: &Path,
        permission: FixedSeed,
    ) -> Result<SeedSource, DeployError> {
        match (self.job.seed(), permission) {
            (None, _) => Ok(SeedSource::Os),
            (Some(seed), FixedSeed::AllowInsecure) => Ok(SeedSource::Fixed(seed)),
            (Some(seed), FixedSeed::Refuse) => Err(DeployError::FixedSeed {
                path: path.display().to_string(),
                seed,
            }),
        }
    }

    /// What a user running this deployment (read from `path`) with
    /// [`FixedSeed::AllowInsecure`] must be told, if its job has a seed.
    pub fn insecure_seed_warning(&self, path: &Path) -> Option<String> {
        self.job.seed().map(|_| {
            format!(
                "{}: [job] seed with --insecure-reproducible: anyone who knows the seed \
                 (everyone who has this file) can derive every pair seed, and thus every mask and \
                 share of this run, so the run has no privacy against them. It is for reproducing \
                 a run, never for real data.",
                path.display()
            )
        })
    }

    fn entry(&self, id: u8) -> &PartyEntry {
        self.party.iter().find(|p| p.id == id).expect("ids checked")
    }
}

/// The key file of party `i` in `dir`.
fn key_path(dir: &Path, i: u8) -> PathBuf {
    dir.join(format!("party{i}.key.der"))
}

/// The certificate file of party `i` in `dir`.
fn cert_path(dir: &Path, i: u8) -> PathBuf {
    dir.join(format!("party{i}.cert.der"))
}

/// Whether anything (a file, a directory, a symbolic link even if dangling) is at `path`.
fn occupied(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// Before anything is written: refuse a symbolic link at any of `files` (even with `force`:
/// [`write_file`] would refuse it anyway, but only after writing the files before it), and any
/// existing file unless `force`.
fn refuse_existing(files: &[PathBuf], force: bool) -> Result<(), DeployError> {
    for f in files {
        match std::fs::symlink_metadata(f) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(DeployError::Symlink {
                    path: f.display().to_string(),
                });
            }
            Ok(_) if !force => {
                return Err(DeployError::Exists {
                    path: f.display().to_string(),
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// Generate party `i`'s identity and write its key (mode 0600) then its certificate, so that a
/// failure leaves no certificate without its key.
fn write_identity(dir: &Path, i: u8, force: bool) -> Result<[PathBuf; 2], DeployError> {
    // The key is zeroised when `id` drops.
    let id: Identity = generate_identity(PartyId(i))?;
    let (key_file, cert_file) = (key_path(dir, i), cert_path(dir, i));
    write_file(&key_file, &id.key, Access::Owner, force)?;
    write_file(&cert_file, &id.cert, Access::Public, force)?;
    Ok([key_file, cert_file])
}

/// Write all three parties' certificates and keys (keys with mode 0600) and a deployment
/// template into `dir`, for **local runs and tests only**: whoever holds the three keys can
/// impersonate any party, so a real deployment has each operator run [`keygen_party`] on their
/// own machine. Existing files are kept unless `force`; returns the files written.
pub fn keygen(dir: &Path, force: bool) -> Result<Vec<PathBuf>, DeployError> {
    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    let config = dir.join("deploy.toml");
    let mut files = vec![config.clone()];
    for i in 0..3u8 {
        files.push(cert_path(dir, i));
        files.push(key_path(dir, i));
    }
    refuse_existing(&files, force)?;
    let mut written = Vec::new();
    for i in 0..3u8 {
        written.extend(write_identity(dir, i, force)?);
    }
    write_file(&config, TEMPLATE.as_bytes(), Access::Public, force)?;
    written.push(config);
    Ok(written)
}

/// Write party `id`'s certificate and key (mode 0600) into `dir`, and the deployment template
/// if `dir` has no deploy.toml (an existing one is never overwritten, even with `force`): what
/// each operator runs on their own machine, so that a key is made where it is used and never
/// travels; the operators exchange only the certificates. An existing key or certificate is
/// kept unless `force`; returns the files written.
pub fn keygen_party(dir: &Path, id: PartyId, force: bool) -> Result<Vec<PathBuf>, DeployError> {
    if id.0 > 2 {
        return Err(file_err(
            dir,
            format!("party id {}: the parties are 0, 1 and 2", id.0),
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    refuse_existing(&[key_path(dir, id.0), cert_path(dir, id.0)], force)?;
    let mut written = write_identity(dir, id.0, force)?.to_vec();
    let config = dir.join("deploy.toml");
    if !occupied(&config) {
        write_file(&config, TEMPLATE.as_bytes(), Access::Public, false)?;
        written.push(config);
    }
    Ok(written)
}

/// The deployment template keygen writes.
const TEMPLATE: &str = r#"# securenn deployment. Every operator runs one party on their own machine:
#   securenn keygen --id N --out DIR    # writes partyN.key.der (mode 0600) and partyN.cert.der
# then sends partyN.cert.der (public) to the other two operators and never sends the key.
# Put the three certificates beside this file, agree on this file (addresses, job) and copy it
# to every machine; each party then runs
#   securenn party --config deploy.toml --id N
# with its own key (partyN.key.der beside this file, or --key FILE).
# (`securenn keygen --out DIR` without --id writes all three keys on one machine: for local runs
# and tests only, since whoever holds them can impersonate any party.)

# `address` is where the other parties dial a party: host:port, with a host name
# ("party1.example.org:7100") or an IP address, resolved at start-up. A party may listen
# elsewhere than where it is dialled (behind a NAT, on every interface) with `listen`:
# listen = "0.0.0.0:7100"   # optional; default: its address

[[party]]
id = 0
address = "127.0.0.1:7100"
certificate = "party0.cert.der"

[[party]]
id = 1
address = "127.0.0.1:7101"
certificate = "party1.cert.der"

[[party]]
id = 2
address = "127.0.0.1:7102"
certificate = "party2.cert.der"

[job]
protocol = "securenn"
model = "a"
# A model of your own instead of `model`: an ONNX file (opset 13 or later, 784 inputs: MNIST
# images as 1 x 28 x 28 or 784), read by the model owner only; the others need not have it.
# At start-up the model owner sends them its architecture (layers and shapes, never a weight,
# at most 1 MiB); they check it, and all three agree on it as on the rest of the job.
# onnx = "model.onnx"         # instead of model = ...; job.model then reads "onnx" in the check
# Relative paths are relative to this file. Both default to what is built into the binary, so a
# copied binary needs no source tree.
# weights = "a.safetensors"   # model owner only: its weight file (default: model a's trained weights)
# data = "mnist.csv.gz"       # data owner only: MNIST CSV, 784 pixels 0-255 then the label, read whole in
#                             # file order from `offset` (default: the bundled sample's test split)
# label_column = "last"       # where `data` has the label: "last" (default) or "first"
# input = "x.npy"              # data owner only, instead of data: float32 .npy of N x the model's
#                             # input shape, for a model whose inputs are not MNIST images
# labels = "y.npy"             # data owner only, optional: N integer labels of `input`
# input_range = [0.0, 1.0]     # public, agreed: every input value lies in it (default [0, 1]); the
#                             # model owner's range analysis assumes it, the data owner checks it
samples = 20
batch = 10
data_owner = 0
model_owner = 1
# Never set `seed` in a deployment: every pair seed, mask and share would derive from it, and
# everyone with this file knows it. `securenn party` refuses it without --insecure-reproducible
# (for reproducing an experiment, never with real data).
# seed = 1
connect_timeout = 30   # seconds to wait for every peer at start-up
timeout = 120          # seconds to wait for a peer's message

# At start-up the parties check that all three run this same [job] (protocol, model and its
# architecture, samples, batch, owners, fixed-point precision, securenn version) and fail at
# once, naming the fields that differ; weights, data, paths and seeds are never sent.

# Secure training instead of inference: the data owner's images train the model owner's model,
# and only the model owner learns the trained weights. In [job] set kind = "train", remove
# samples and offset, and add the keys below; model or onnx, data, label_column, the owners, seed
# and the timeouts mean what they mean above, weights are the initial weights (default: a
# seeded initialisation from fresh entropy at the model owner, known to no one else), and data
# is split as the bundled sample is (the last fifth of each digit's images tests, the rest
# trains).
# kind = "train"
# layout = "default"           # default | paper
# epochs = 1
# lr = 0.03125                 # the SGD learning rate (2^-5)
# lr_halve_every = 10          # optional: halve lr every this many epochs
# iterations = 100             # optional: at most this many iterations an epoch (default: every full batch)
# test_samples = 50            # test images tested by secure inference at every epoch end (accuracy: model owner only)
# out = "trained.safetensors"  # model owner only: the trained weights, never overwritten unless force = true
# force = false
# checkpoint_dir = "checkpoints"  # each party's own shares at every epoch end (files of mode 0600)
# resume = false               # true: continue from the latest epoch all three parties checkpointed
# The parties then also agree on these keys and on the data owner's numbers of training and
# test images, which it sends them at start-up (never an image).

# What a peer may make this party hold or wait for (the defaults; see the README's Threat model).
[limits]
max_frame_mib = 256      # largest message accepted from a peer
max_queued_mib = 512     # most bytes a peer may have delivered that this party has not used yet
handshake_timeout = 5    # seconds one QUIC handshake may take
dead_peer_timeout = 5    # seconds a peer may stay silent before it is declared dead (keep-alives
                         # every fifth of it keep a busy but live peer from being declared dead)
"#;

/// Who may read a file keygen writes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Mode 0600 (a private key), also when an existing file is overwritten.
    Owner,
    /// The process's default mode (certificates and the template are public).
    Public,
}

/// Every keygen write: a new file, or with `overwrite` an existing one truncated, and never
/// through a symbolic link (`O_NOFOLLOW` on Unix: a link planted at a key path would otherwise
/// receive the key, or the truncation, wherever it points).
fn write_file(
    path: &Path,
    bytes: &[u8],
    access: Access,
    overwrite: bool,
) -> Result<(), DeployError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true);
    if overwrite {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NOFOLLOW);
        if access == Access::Owner {
            opts.mode(0o600);
        }
    }
    let mut f = opts.open(path).map_err(|e| {
        // ELOOP on Linux, but not everywhere: ask the file system what is there instead.
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
            DeployError::Symlink {
                path: path.display().to_string(),
            }
        } else if e.kind() == std::io::ErrorKind::AlreadyExists {
            DeployError::Exists {
                path: path.display().to_string(),
            }
        } else {
            file_err(path, e)
        }
    })?;
    #[cfg(unix)]
    if access == Access::Owner {
        // The mode given at creation does not apply to a file that already existed.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| file_err(path, e))?;
    }
    f.write_all(bytes).map_err(|e| file_err(path, e))
}

/// Largest key file read: a PKCS#8 key is a few hundred bytes; this bounds what a wrong `--key`
/// path makes us allocate.
const MAX_KEY_BYTES: u64 = 1 << 16;

/// Read party `id`'s private key from `path`, held zeroised. On Unix a key file that group or
/// others can read is refused, as ssh does ([`DeployError::KeyPermissions`]).
fn read_key(path: &Path, id: PartyId) -> Result<Zeroizing<Vec<u8>>, DeployError> {
    use std::io::Read;
    let err = |e: std::io::Error| file_err(path, format!("key of {id}: {e}"));
    let f = std::fs::File::open(path).map_err(err)?;
    // The mode of the file opened, not of whatever is at the path a moment later.
    let meta = f.metadata().map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(DeployError::KeyPermissions {
                path: path.display().to_string(),
                party: id,
                mode,
            });
        }
    }
    if meta.len() > MAX_KEY_BYTES {
        return Err(file_err(
            path,
            format!(
                "key of {id}: {} bytes is too large for a private key (at most {MAX_KEY_BYTES})",
                meta.len()
            ),
        ));
    }
    // Sized up front so that reading never reallocates and leaves a stray copy of the key.
    let mut key = Zeroizing::new(Vec::with_capacity(MAX_KEY_BYTES as usize + 1));
    f.take(MAX_KEY_BYTES + 1)
        .read_to_end(&mut key)
        .map_err(err)?;
    if key.len() as u64 > MAX_KEY_BYTES {
        return Err(file_err(
            path,
            format!("key of {id}: larger than {MAX_KEY_BYTES} bytes"),
        ));
    }
    Ok(key)
}

/// What one party saw of a deployed run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PartyReport {
    pub party: u8,
    /// The public job: protocol, model, images and batch size.
    pub protocol: String,
    pub model: String,
    pub samples: usize,
    pub batch: usize,
    /// The peers, as connected: (party id, address).
    pub peers: Vec<(u8, String)>,
    /// At the data owner: predictions and accuracy against the labels.
    pub predictions: Option<Vec<usize>>,
    pub accuracy: Option<f64>,
    /// Payload bytes this party sent in the session (seed and job agreement included), its
    /// messages, and the session's causal rounds.
    pub bytes_sent: u64,
    pub messages_sent: u64,
    pub rounds: u64,
    /// UDP bytes this party's QUIC endpoint sent.
    pub quic_wire_bytes: u64,
    /// From the seed agreement to the end of the QUIC shutdown (teardown included).
    pub wall_seconds: f64,
    /// This party's peak of live heap bytes in the session (seed and job agreement included;
    /// see [`crate::memory`]): what its party thread allocated and had not freed. The QUIC
    /// endpoint's threads, and what was read before the session (weights, images), count
    /// nowhere.
    pub peak_memory_bytes: u64,
    /// The bits each node's comparisons ran on (null: 64, or no comparison): the model owner's
    /// range analysis, sent to the others at start-up (SecureNN inference; empty otherwise).
    #[serde(default)]
    pub comparison_widths: Vec<Option<u32>>,
    /// An inference job's traffic per layer as this party sent it (`weights`, `input`, the
    /// model's layers, `reveal`: bytes and messages this party sent, and the causal rounds its
    /// own messages added); empty for training, whose `training.layers` has it per phase.
    #[serde(default)]
    pub layers: Vec<crate::infer::LayerReport>,
    /// What a training job did at this party (`samples` then counts the training images).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub training: Option<PartyTraining>,
}

impl Deployment {
    /// Every party's address, resolved (a host name through the system's resolver), and where
    /// party `me` listens; errors name the party and the key.
    pub fn addresses(
        &self,
        path: &Path,
        me: PartyId,
    ) -> Result<(Vec<SocketAddr>, Option<SocketAddr>), DeployError> {
        let mut addrs = Vec::new();
        for i in 0..3u8 {
            let e = self.entry(i);
            addrs.push(
                resolve_addr(&e.address, "address")
                    .map_err(|r| file_err(path, format!("[[party]] id = {i}: {r}")))?,
            );
        }
        let listen = match &self.entry(me.0).listen {
            Some(l) => Some(
                resolve_addr(l, "listen")
                    .map_err(|r| file_err(path, format!("[[party]] id = {}: {r}", me.0)))?,
            ),
            None => None,
        };
        Ok((addrs, listen))
    }
}

/// The model owner's fixed-point range check, before any peer is contacted: the worst case
/// from the weights alone and the public range of the inputs (`input`; the model owner has no
/// images here), its warnings logged, a bound
/// beyond the ring refused unless `allow`. For Pond the check is of the model with an exact
/// ReLU: its polynomial ReLU has a worst case beyond the ring for every trained model and can
/// only be judged on images (`securenn infer` does), which a deployment's model owner does not
/// have, but where the linear layers alone already overflow (weights at the wrong scale), Pond
/// gives wrong answers too, and is refused. Returns SecureNN's comparison widths from the same
/// analysis (see [`widths_job`]; empty for Pond).
fn check_range(
    protocol: &str,
    model: &crate::nn::Model,
    weights: &crate::nn::Weights,
    fp: FixedPoint,
    samples: usize,
    input: (f64, f64),
    allow: bool,
) -> Result<Vec<Option<u32>>, DeployError> {
    use crate::nn::range::analyse;
    let pond = protocol == "pond";
    if pond {
        tracing::warn!(
            "fixed-point range: Pond's polynomial ReLU is judged on images (securenn infer \
             --protocol pond), which the model owner does not have here; checking the model \
             with an exact ReLU only"
        );
    }
    let run = if pond {
        model.clone()
    } else {
        model.pool_before_relu()
    };
    let range = analyse(
        &run,
        weights,
        fp,
        input,
        &crate::protocol::ReluKind::Exact,
        samples,
        None,
    )?;
    for w in &range.warnings {
        tracing::warn!("fixed-point range: {w}");
    }
    tracing::info!("fixed-point range: {}", range.summary());
    if !allow {
        range.check()?;
    }
    if pond {
        return Ok(Vec::new());
    }
    Ok(range.compare_widths(&run))
}

/// The comparison widths of a SecureNN job, one per node of the model as it runs (`None`: 64
/// bits, or no comparison; [`crate::nn::range::RangeReport::compare_widths`]). Public, but
/// computed from the weights, which only the model owner has: it sends them to both peers at
/// start-up (one word per node, 0 for none) and every party runs the model on them, as `securenn
/// infer` does. A width outside 2-64 bits fails naming the model owner.
fn widths_job(
    widths: Option<Vec<Option<u32>>>,
    owner: PartyId,
    nodes: usize,
) -> JobFn<Vec<Option<u32>>> {
    Box::new(move |ctx: Ctx| {
        Box::pin(async move {
            let ctx = ctx.child("widths");
            match widths {
                Some(w) => {
                    let words = w.iter().map(|w| w.map_or(0, u64::from)).collect();
                    let t = crate::ring::RingTensor::from_vec(&[nodes], words);
                    for p in (0..3).map(PartyId).filter(|p| *p != ctx.me()) {
                        ctx.send(p, &t)?;
                    }
                    Ok(w)
                }
                None => {
                    let t: crate::ring::RingTensor = ctx.recv(owner, &vec![nodes]).await?;
                    t.as_slice()
                        .iter()
                        .map(|&v| match v {
                            0 => Ok(None),
                            2..=64 => Ok(Some(v as u32)),
                            v => Err(ProtocolError::Input {
                                op: ctx.path().to_string(),
                                reason: format!(
                                    "the model owner {owner} sent a comparison width of {v} \
                                     bits; a width is 2 to 64 bits"
                                ),
                            }),
                        })
                        .collect()
                }
            }
        })
    })
}

/// What the model owner's range check of an inference job needs ([`check_range`]).
struct RangeCheck<'a> {
    protocol: &'a str,
    samples: usize,
    /// The public range of the inputs.
    input: (f64, f64),
    /// Run even if the worst case exceeds the ring (`--allow-range-risk`).
    allow: bool,
}

/// The model owner's ONNX file at `path`, imported and checked before any peer is contacted,
/// every error naming the file: the weights encode in fixed point `fp` and, for inference
/// (`range`) pass the range check ([`check_range`]), the input takes an MNIST image (unless
/// the job's inputs are a `.npy`: `mnist` false), and the architecture is what the others
/// accept ([`decode_architecture`]). With `range`, also returns [`check_range`]'s widths.
fn load_onnx(
    path: &Path,
    fp: FixedPoint,
    range: Option<RangeCheck>,
    mnist: bool,
) -> Result<(crate::nn::Model, crate::nn::Weights, Vec<Option<u32>>), DeployError> {
    let err = |e: &dyn std::fmt::Display| file_err(path, format!("job.onnx: {e}"));
    let m = crate::onnx::import(path).map_err(|e| err(&e))?;
    weights_file::check_fixed(&path.display().to_string(), &m.weights, fp)?;
    let values = crate::ring::numel(&m.model.input);
    if mnist && m.model.mnist_mismatch().is_some() {
        return Err(err(&format!(
            "the model takes inputs of shape {:?} ({values} values); this job's data are \
             MNIST images of {} pixels (give other inputs as job.input, a .npy)",
            m.model.given_input_shape(),
            crate::data::PIXELS
        )));
    }
    let bytes = encode_architecture(&m.model);
    if bytes.len() > MAX_ARCHITECTURE_BYTES {
        return Err(err(&format!(
            "the architecture takes {} bytes, more than the {MAX_ARCHITECTURE_BYTES} (1 MiB) \
             the other parties accept",
            bytes.len()
        )));
    }
    decode_architecture(&bytes).map_err(|e| err(&e))?;
    let widths = match range {
        Some(r) => check_range(
            r.protocol, &m.model, &m.weights, fp, r.samples, r.input, r.allow,
        )
        .map_err(|e| err(&e))?,
        None => Vec::new(),
    };
    tracing::info!(
        "{}: {} layers, input {:?}; its architecture ({} bytes) goes to the other parties, its \
         weights to no one",
        path.display(),
        m.model.nodes.len(),
        m.model.given_input_shape(),
        bytes.len()
    );
    Ok((m.model, m.weights, widths))
}

/// The data owner's inputs, read before any peer is contacted: MNIST images (`data`, or the
/// bundled sample), or a `.npy` (`input`) as given, fitted to the model once it is known.
enum OwnedInputs {
    Images(Mnist),
    Npy(crate::data::NpyInputs),
}

impl OwnedInputs {
    /// Read `job`'s inputs (paths relative to the deployment file `config`).
    fn read(job: &JobEntry, config: &Path) -> Result<Self, DeployError> {
        if let Some(npy) = &job.input {
            let labels = job.labels.as_ref().map(|p| beside(config, p));
            return Ok(Self::Npy(Mnist::read_npy_inputs(
                &beside(config, npy),
                labels.as_deref(),
            )?));
        }
        let path = job.data.as_ref().map(|p| beside(config, p));
        let source = DataSource::file_or_bundled(path.as_deref());
        let file = Mnist::select(
            &source,
            None,
            job.label_column,
            job.offset.unwrap_or(0),
            Some(job.samples),
        )?;
        Ok(Self::Images(file.data))
    }

    /// The inputs for `model` (the model owner `owner`'s, for an ONNX job), every value within
    /// the job's public `input_range`, which the model owner's range analysis assumed.
    fn fit(
        self,
        model: &crate::nn::Model,
        owner: PartyId,
        job: &JobEntry,
        fp: FixedPoint,
        config: &Path,
    ) -> Result<Mnist, DeployError> {
        let data = match self {
            Self::Images(d) => {
                check_input(model, owner, &d)?;
                d
            }
            Self::Npy(n) => crate::infer::npy_inputs_for(
                model,
                &n,
                job.offset.unwrap_or(0),
                Some(job.samples),
                fp,
            )?,
        };
        let (lo, hi) = job.input_range();
        // The value itself is never printed: it is the data owner's.
        if let Some(k) = data
            .images
            .iter()
            .position(|im| im.iter().any(|&v| !(lo..=hi).contains(&v)))
        {
            return Err(file_err(
                config,
                format!(
                    "job.input_range: input {} holds a value outside [{lo}, {hi}], the range \
                     the model owner's analysis assumes: widen it (public; the same in every \
                     party's file)",
                    job.offset.unwrap_or(0) + k,
                ),
            ));
        }
        Ok(data)
    }
}

/// At the data owner: whether its MNIST images fit the model (`owner`'s, for an ONNX job).
fn check_input(model: &crate::nn::Model, owner: PartyId, data: &Mnist) -> Result<(), DeployError> {
    let values = crate::ring::numel(&model.input);
    let pixels = data.images.first().map_or(crate::data::PIXELS, Vec::len);
    if values != pixels || model.mnist_mismatch().is_some() {
        return Err(DeployError::ModelInput {
            owner,
            shape: model.given_input_shape(),
            values,
            pixels,
        });
    }
    Ok(())
}

/// The job's batch shapes for `model`, and at the data owner (who passes its `data`) the
/// batches, encoded in fixed point `fp`; `config` names the deployment in errors.
#[allow(clippy::type_complexity)]
fn batches_of(
    model: &crate::nn::Model,
    job: &JobEntry,
    data: Option<&Mnist>,
    fp: FixedPoint,
    config: &Path,
) -> Result<(Vec<Vec<usize>>, Option<Vec<crate::ring::RingTensor>>), DeployError> {
    let mut shapes = Vec::new();
    for start in (0..job.samples).step_by(job.batch) {
        let mut s = vec![job.batch.min(job.samples - start)];
        s.extend(&model.input);
        shapes.push(s);
    }
    let batches = match data {
        Some(d) => Some(
            d.images
                .chunks(job.batch)
                .zip(&shapes)
                .map(|(chunk, shape)| {
                    let flat: Vec<f64> = chunk.iter().flatten().copied().collect();
                    fp.encode_tensor(shape, &flat)
                        .map_err(|e| file_err(config, format!("input image: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        None => None,
    };
    Ok((shapes, batches))
}

/// Agree the job's public parameters (`mine`, this party's) in a job called `name`: every
/// party fails at once, naming each field that differs, if they differ.
async fn agree(cluster: &LocalCluster, name: &str, mine: JobParams) -> Result<(), DeployError> {
    let mut agreed = cluster.run(name, vec![agree_job(mine)]).await?;
    let differences = job_differences(&agreed.remove(0).value);
    if !differences.is_empty() {
        return Err(DeployError::JobMismatch { differences });
    }
    Ok(())
}

/// Run party `id` of the deployment at `config` with its identity's key at `key` (default:
/// `party<ID>.key.der` beside `config`), telling `watch` what it does: the inference or the
/// training job (see [`train`]) its `[job]` says. A job with a fixed seed is refused unless
/// `seed` is [`FixedSeed::AllowInsecure`]; like every other check of the deployment and the key
/// (addresses resolved, the key matching this party's certificate), before any peer is
/// contacted.
pub fn run_party(
    config: &Path,
    id: PartyId,
    key: Option<&Path>,
    seed: FixedSeed,
    watch: Watch,
    allow_range_risk: bool,
) -> Result<PartyReport, DeployError> {
    let dep = Deployment::load(config)?;
    if id.0 > 2 {
        return Err(file_err(
            config,
            format!("--id {id}: the parties are 0, 1 and 2"),
        ));
    }
    let source = dep.seed_source(config, seed)?;
    let net = PartyNet::new(&dep, config, id, key)?;
    match &dep.job {
        DeploymentJob::Inference(job) => {
            infer_party(&dep, job, config, net, source, watch, allow_range_risk)
        }
        DeploymentJob::Train(job) => train::train_party(&dep, job, config, net, source, watch),
    }
}

/// `p` as written in the deployment file `config`: relative paths are relative to its
/// directory.
fn beside(config: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        config.parent().unwrap_or(Path::new(".")).join(p)
    }
}

/// Party `id`'s side of the network, checked before any peer is contacted: every party's
/// address resolved, the three certificates read, and this party's key, which must be the key
/// of its certificate.
struct PartyNet {
    id: PartyId,
    addrs: Vec<SocketAddr>,
    listen: Option<SocketAddr>,
    identity: Identity,
    certs: Vec<Vec<u8>>,
}

impl PartyNet {
    fn new(
        dep: &Deployment,
        config: &Path,
        id: PartyId,
        key: Option<&Path>,
    ) -> Result<Self, DeployError> {
        let (addrs, listen) = dep.addresses(config, id)?;
        let dir = config.parent().unwrap_or(Path::new("."));
        let mut certs = Vec::new();
        for i in 0..3u8 {
            let path = beside(config, &dep.entry(i).certificate);
            certs.push(
                std::fs::read(&path)
                    .map_err(|e| file_err(&path, format!("certificate of party {i}: {e}")))?,
            );
        }
        let key_path = key
            .map(Path::to_path_buf)
            .unwrap_or_else(|| key_path(dir, id.0));
        let identity = Identity {
            cert: certs[id.index()].clone(),
            key: read_key(&key_path, id)?,
        };
        if let Err(why) = check_identity(&identity) {
            return Err(file_err(
                &key_path,
                format!(
                    "key of {id}: {why} {} (the deployment's certificate for {id}): run with \
                     {id}'s own key (--key), or put the certificate made with this key in the \
                     deployment",
                    beside(config, &dep.entry(id.0).certificate).display()
                ),
            ));
        }
        Ok(Self {
            id,
            addrs,
            listen,
            identity,
            certs,
        })
    }
}

/// How a party's session runs: its transport's timeouts and limits, its seeds, its watcher.
struct SessionSetup {
    connect_timeout: Duration,
    limits: QuicLimits,
    config: PartyConfig,
    source: SeedSource,
    watch: Watch,
}

/// Called with each [`PartyEvent`] of a running party (a no-op without a watcher).
type Tell = Arc<dyn Fn(PartyEvent) + Send + Sync>;

/// How a session ended at this party: what the job returned, the traffic, the peers as
/// connected and the time.
struct SessionEnd<R> {
    value: R,
    traffic: MeterSnapshot,
    /// Every envelope this party sent, in order: what [`own_costs`] attributes.
    envelopes: Vec<EnvelopeRecord>,
    quic_wire_bytes: u64,
    peers: Vec<(u8, String)>,
    wall_seconds: f64,
    peak_memory_bytes: u64,
}

/// The envelopes of job `root` among the ones this party sent (`envelopes`), and the causal
/// depth the job started at: the deepest of this party's envelopes of the jobs before it (seed
/// and job agreement, the architecture, the widths, the data owner's counts), which all precede
/// it. Per-layer costs from one party's envelopes are what that party sent; its rounds, the
/// causal depth its own messages added.
fn own_costs(envelopes: &[EnvelopeRecord], root: &str) -> (Vec<EnvelopeRecord>, u64) {
    let in_job = |e: &EnvelopeRecord| e.key.split(['/', '#']).next() == Some(root);
    let start = envelopes
        .iter()
        .filter(|e| !in_job(e))
        .map(|e| e.depth)
        .max()
        .unwrap_or(0);
    (
        envelopes.iter().filter(|e| in_job(e)).cloned().collect(),
        start,
    )
}

/// Connect party `net.id` to its peers over QUIC, agree the session's seeds and run `work` on
/// the party's cluster (its transport wrapped by `wrap`, given the events' callback); a
/// `setup.watch.stop` that resolves meanwhile stops the work and tells the peers who stopped.
/// The connections close, with the error if there is one, before this returns.
fn run_session<R: 'static>(
    net: PartyNet,
    setup: SessionSetup,
    wrap: impl FnOnce(Arc<dyn Transport>, Tell) -> Arc<dyn Transport>,
    work: impl for<'c> FnOnce(&'c LocalCluster, Tell) -> LocalBoxFuture<'c, Result<R, DeployError>>,
) -> Result<SessionEnd<R>, DeployError> {
    let id = net.id;
    let SessionSetup {
        connect_timeout,
        limits,
        config,
        source,
        watch,
    } = setup;
    let Watch { events, stop } = watch;
    let tell: Tell = Arc::new(move |e| {
        if let Some(f) = &events {
            f(e);
        }
    });
    let meter = Meter::new(3);
    let peers = Arc::new(std::sync::Mutex::new(Vec::new()));
    let on_connect = {
        let (peers, tell) = (peers.clone(), tell.clone());
        OnConnect(Arc::new(move |peer: PartyId, addr: SocketAddr| {
            if let Ok(mut p) = peers.lock() {
                p.push((peer.0, addr.to_string()));
            }
            tell(PartyEvent::Connected { peer, addr });
        }))
    };
    let quic_cfg = QuicConfig {
        me: id,
        addrs: net.addrs,
        listen: net.listen,
        identity: net.identity,
        certs: net.certs,
        connect_timeout,
        limits,
        on_connect: Some(on_connect),
    };
    tracing::info!(party = %id, name = %server_name(id), "connecting to the other parties");
    let (mut endpoint, node) = QuicNode::start(quic_cfg, &meter)?;
    let watched = wrap(endpoint.transport.clone(), tell.clone());
    endpoint.transport = watched.clone();
    let t0 = Instant::now();
    let result: Result<(R, MeterSnapshot, Vec<EnvelopeRecord>, u64), DeployError> =
        actix::System::new().block_on(async move {
            let cluster = LocalCluster::with_endpoints(vec![endpoint], meter.clone(), config);
            let session = 1;
            let work = async {
                cluster.setup(session, source).await?;
                let value = work(&cluster, tell).await?;
                let peak = cluster.peak_memory().into_iter().max().unwrap_or(0);
                Ok::<_, DeployError>((value, meter.snapshot(), meter.records(), peak))
            };
            let out = match stop {
                None => work.await,
                Some(stop) => {
                    futures::pin_mut!(work);
                    match futures::future::select(work, stop).await {
                        futures::future::Either::Left((out, _)) => out,
                        futures::future::Either::Right((Ok(signal), _)) => {
                            let reason = format!("{id} stopped ({signal})");
                            tracing::warn!(party = %id, "{reason}: telling the other parties");
                            send_abort(&*watched, id, session, &reason);
                            Err(DeployError::Stopped { party: id, signal })
                        }
                        // Nobody can stop it any more: run to the end.
                        futures::future::Either::Right((Err(_), work)) => work.await,
                    }
                }
            };
            drop(watched);
            cluster.stop();
            out
        });
    let wire = node.wire_bytes().iter().map(|(_, b)| b).sum();
    match &result {
        // Said in the close too, in case a peer has not read the abort notice yet.
        Err(e) => node.shutdown_with(&e.to_string()),
        Ok(_) => node.shutdown(),
    }
    let (value, traffic, envelopes, peak_memory_bytes) = result?;
    let mut peers = peers.lock().map(|p| p.clone()).unwrap_or_default();
    peers.sort();
    Ok(SessionEnd {
        value,
        traffic,
        envelopes,
        quic_wire_bytes: wire,
        peers,
        wall_seconds: t0.elapsed().as_secs_f64(),
        peak_memory_bytes,
    })
}

/// Party `net.id`'s inference job of the deployment `dep` (read from `config`).
fn infer_party(
    dep: &Deployment,
    job: &JobEntry,
    config: &Path,
    net: PartyNet,
    source: SeedSource,
    watch: Watch,
    allow_range_risk: bool,
) -> Result<PartyReport, DeployError> {
    let id = net.id;
    let (data_owner, model_owner) = (PartyId(job.data_owner), PartyId(job.model_owner));
    let fp = FixedPoint::default();
    // The model: built in (every party has it), or the model owner's ONNX file, which it alone
    // reads, here, before contacting anyone; the others receive its architecture at start-up.
    let mut model = job
        .model
        .as_deref()
        .map(|m| crate::models::by_name(m).expect("checked"));
    let onnx = job.onnx.is_some();
    // What this party owns; the model owner also SecureNN's comparison widths from the range
    // check, which it sends the others at start-up.
    let (weights, widths) = if id == model_owner {
        match &job.onnx {
            Some(p) => {
                let range = RangeCheck {
                    protocol: job.protocol.as_str(),
                    samples: job.samples,
                    input: job.input_range(),
                    allow: allow_range_risk,
                };
                let (m, w, widths) =
                    load_onnx(&beside(config, p), fp, Some(range), job.input.is_none())?;
                model = Some(m);
                (Some(w), Some(widths))
            }
            None => {
                let model = model.as_ref().expect("a built-in model");
                let path = job.weights.as_ref().map(|p| beside(config, p));
                let (w, _) =
                    weights_file::load_or_bundled(path.as_deref(), job.model_name(), model)?;
                let widths = check_range(
                    &job.protocol,
                    model,
                    &w,
                    fp,
                    job.samples,
                    job.input_range(),
                    allow_range_risk,
                )?;
                (Some(w), Some(widths))
            }
        }
    } else {
        (None, None)
    };
    let securenn = job.protocol != "pond";
    // The data owner reads its inputs before contacting anyone; it fits them to the model
    // here for a built-in model, once the architecture has come for an ONNX job.
    let mut owned = if id == data_owner {
        Some(OwnedInputs::read(job, config)?)
    } else {
        None
    };
    let data = match (onnx, &model) {
        (false, Some(m)) => owned
            .take()
            .map(|o| o.fit(m, model_owner, job, fp, config))
            .transpose()?,
        _ => None,
    };
    let pond = job.protocol == "pond";
    let run_model = move |m: &crate::nn::Model| match pond {
        true => m.pool_before_relu().without_argmax(),
        false => m.pool_before_relu(),
    };
    // The job as every party knows it before the session: for an ONNX job without the
    // architecture, which all but the model owner learn only once connected.
    let params = JobParams::new(
        job,
        model.as_ref().filter(|_| !onnx).map(run_model).as_ref(),
        fp,
    );
    let total = job.samples.div_ceil(job.batch);
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
    // The party's transport, watched: its progress through the batches.
    let wrap = move |inner: Arc<dyn Transport>, tell: Tell| -> Arc<dyn Transport> {
        Arc::new(Watched {
            inner,
            begun: AtomicUsize::new(0),
            total,
            events: Some(tell),
        })
    };
    let (job_c, config_c) = (job.clone(), config.to_path_buf());
    let end = run_session(net, setup, wrap, move |cluster, tell| {
        Box::pin(async move {
            let (job, config) = (&job_c, &config_c);
            agree(cluster, "agree", params).await?;
            let (model, data) = match model {
                Some(m) if !onnx => (m, data),
                // An ONNX job: the model owner sends the architecture, the others check it,
                // and all three agree on it as on the rest of the job.
                mine => {
                    let m = receive_model(cluster, mine, id, model_owner).await?;
                    let data = match owned {
                        Some(o) => Some(o.fit(&m, model_owner, job, fp, config)?),
                        None => None,
                    };
                    let mine = JobParams::new(job, Some(&run_model(&m)), fp);
                    agree(cluster, "agree-model", mine).await?;
                    (m, data)
                }
            };
            let (shapes, batches) = batches_of(&model, job, data.as_ref(), fp, config)?;
            let mut model_run = run_model(&model);
            if securenn {
                let nodes = model_run.nodes.len();
                let mut got = cluster
                    .run("widths", vec![widths_job(widths, model_owner, nodes)])
                    .await?;
                model_run.compare_widths = got.remove(0).value;
            }
            let widths = model_run.compare_widths.clone();
            let model_ran = model_run.clone();
            tell(PartyEvent::Started { batches: total });
            let owners = (data_owner, model_owner);
            let infer = match job.protocol.as_str() {
                "pond" => {
                    let pond = Pond {
                        relu: TFE_RELU_9.to_vec(),
                    };
                    infer_job(pond, model_run, weights, batches, shapes, owners, None)
                }
                _ => infer_job(
                    SecureNn::optimised(),
                    model_run,
                    weights,
                    batches,
                    shapes,
                    owners,
                    None,
                ),
            };
            let mut outs = cluster.run("infer", vec![infer]).await?;
            tell(PartyEvent::Progress { done: total, total });
            Ok((outs.remove(0).value, widths, model_ran, data))
        })
    })?;
    let (outputs, comparison_widths, model_ran, data): (
        Outputs,
        Vec<Option<u32>>,
        crate::nn::Model,
        Option<Mnist>,
    ) = end.value;
    let (mine, start) = own_costs(&end.envelopes, "infer");
    let layers = crate::infer::layer_costs(&model_ran, &mine, start);
    let predictions: Option<Vec<usize>> =
        data.as_ref().map(|_| outputs.iter().map(|o| o.1).collect());
    Ok(PartyReport {
        party: id.0,
        protocol: job.protocol.clone(),
        model: job.model_name().to_string(),
        samples: job.samples,
        batch: job.batch,
        peers: end.peers,
        accuracy: predictions
            .as_ref()
            .zip(data.as_ref().filter(|d| !d.labels.is_empty()))
            .map(|(p, d)| accuracy(p, &d.labels)),
        predictions,
        bytes_sent: end.traffic.total_bytes(),
        messages_sent: end.traffic.total_messages(),
        rounds: end.traffic.rounds,
        quic_wire_bytes: end.quic_wire_bytes,
        wall_seconds: end.wall_seconds,
        peak_memory_bytes: end.peak_memory_bytes,
        comparison_widths,
        layers,
        training: None,
    })
}

/// The model of an ONNX job at party `id`: the model owner (which passes its `owned` model)
/// sends the architecture to both peers, who receive and check it.
async fn receive_model(
    cluster: &LocalCluster,
    owned: Option<crate::nn::Model>,
    id: PartyId,
    model_owner: PartyId,
) -> Result<crate::nn::Model, DeployError> {
    let mut got = cluster
        .run("model", vec![architecture_job(owned, model_owner)])
        .await?;
    let m = got.remove(0).value;
    if id != model_owner {
        tracing::info!(
            party = %id,
            "the model owner {model_owner} sent the architecture: {} layers, input {:?}",
            m.nodes.len(),
            m.given_input_shape()
        );
    }
    Ok(m)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// The last line of defence, below keygen's own check: a symbolic link at the path (planted
    /// after that check, say) is refused, even when overwriting, and its target is untouched.
    #[test]
    fn write_file_never_follows_a_symlink() {
        let dir = std::env::temp_dir().join(format!("securenn-write-file-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("target");
        std::fs::write(&target, "untouched").unwrap();
        let link = dir.join("party0.key.der");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        for overwrite in [true, false] {
            for access in [Access::Owner, Access::Public] {
                let e = write_file(&link, b"key", access, overwrite).unwrap_err();
                assert!(
                    matches!(&e, DeployError::Symlink { path } if *path == link.display().to_string()),
                    "{e}"
                );
            }
        }
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
        // A dangling link is not followed to create its target either.
        std::fs::remove_file(&target).unwrap();
        assert!(write_file(&link, b"key", Access::Owner, true).is_err());
        assert!(!target.exists());
        std::fs::remove_dir_all(&dir).ok();
    }
}

#[cfg(test)]
mod limits_tests {
    use super::*;

    #[test]
    fn limits_default_and_refuse_what_cannot_work() {
        let none = LimitsEntry::default();
        assert_eq!(none.quic(), QuicLimits::default());
        assert!(none.check().is_none());
        let set = LimitsEntry {
            max_frame_mib: Some(64),
            max_queued_mib: Some(128),
            handshake_timeout: Some(2),
            dead_peer_timeout: Some(3),
        };
        assert!(set.check().is_none());
        let q = set.quic();
        assert_eq!(q.max_frame_bytes, 64 << 20);
        assert_eq!(q.max_queued_bytes, 128 << 20);
        assert_eq!(q.handshake_timeout, Duration::from_secs(2));
        assert_eq!(q.dead_peer_timeout, Duration::from_secs(3));
        let bad = [
            (
                LimitsEntry {
                    max_frame_mib: Some(4096),
                    ..LimitsEntry::default()
                },
                "max_frame_mib",
            ),
            (
                LimitsEntry {
                    max_queued_mib: Some(0),
                    ..LimitsEntry::default()
                },
                "max_queued_mib",
            ),
            (
                LimitsEntry {
                    handshake_timeout: Some(0),
                    ..LimitsEntry::default()
                },
                "handshake_timeout",
            ),
        ];
        for (entry, key) in bad {
            assert!(entry.check().is_some_and(|r| r.contains(key)), "{key}");
        }
    }
}

#[cfg(test)]
mod job_tests {
    use super::*;

    fn params(fields: &[(&str, &str)]) -> JobParams {
        JobParams(
            fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// Every differing field is named with every party's value; peer text is escaped; equal
    /// parameters give nothing; and they survive the fixed-size wire format.
    #[test]
    fn differences_name_fields_and_values() {
        let a = params(&[("job.samples", "20"), ("job.protocol", "securenn")]);
        let b = params(&[("job.samples", "10"), ("job.protocol", "securenn")]);
        let c = params(&[("job.samples", "20"), ("x\u{1b}", "1")]);
        assert!(job_differences(&[a.clone(), a.clone(), a.clone()]).is_empty());
        assert_eq!(
            job_differences(&[a.clone(), b.clone(), a.clone()]),
            ["job.samples differs: party 0 has 20, party 1 has 10, party 2 has 20"]
        );
        let d = job_differences(&[a.clone(), a.clone(), c]);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].contains("job.protocol differs") && d[0].contains("party 2 has none"));
        assert!(d[1].starts_with("x\\u{1b} differs"), "{}", d[1]);
        let mut bytes = Vec::new();
        b.write(&mut bytes);
        assert_eq!(bytes.len(), JobParams::wire_len(&()));
        assert_eq!(JobParams::read(&bytes, &()).unwrap(), b);
        assert!(JobParams::read(b"{not json", &()).is_err());
    }

    #[test]
    fn batches_are_read_from_keys() {
        assert_eq!(batch_of("infer/batch/0.dense/matmul#3"), Some(1));
        assert_eq!(batch_of("infer/batch~4/reveal#0"), Some(5));
        assert_eq!(batch_of("infer/weights/0.dense#0"), None);
        assert_eq!(batch_of("agree#0"), None);
        assert_eq!(batch_of("setup/seeds#0"), None);
    }
}

#[cfg(test)]
mod architecture_tests {
    use super::*;
    use crate::nn::{Layer, Model};

    /// Raw bytes on the wire, to forge the model owner's messages.
    struct Raw(Vec<u8>);

    impl Wire for Raw {
        type Shape = usize;
        fn wire_len(n: &usize) -> usize {
            *n
        }
        fn write(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(&self.0);
        }
        fn read(bytes: &[u8], _: &usize) -> Result<Self, String> {
            Ok(Self(bytes.to_vec()))
        }
    }

    /// P1, the model owner, sends `forged` (each a raw message) to P0 and P2 on the
    /// architecture's path; what P0 and P2 make of it.
    fn received(forged: &[Vec<u8>]) -> Vec<Result<Model, String>> {
        let config = PartyConfig {
            recv_timeout: Duration::from_secs(10),
            ..PartyConfig::default()
        };
        let report = LocalCluster::run_once(config, SeedSource::Fixed(1), "model", |p| {
            let forged = forged.to_vec();
            let job: JobFn<Option<Result<Model, String>>> = Box::new(move |ctx: Ctx| {
                Box::pin(async move {
                    if p == PartyId(1) {
                        let ctx = ctx.child("architecture");
                        for peer in [PartyId(0), PartyId(2)] {
                            for m in &forged {
                                ctx.send(peer, &Raw(m.clone()))?;
                            }
                        }
                        return Ok(None);
                    }
                    let got = recv_architecture(&ctx, PartyId(1)).await;
                    Ok(Some(got.map_err(|e| e.to_string())))
                })
            });
            job
        })
        .unwrap();
        report.outputs.into_iter().flatten().collect()
    }

    fn len(n: u64) -> Vec<u8> {
        n.to_le_bytes().to_vec()
    }

    /// What the model owner sends arrives whole: every built-in model and the ONNX fixtures,
    /// a few hundred bytes each; the size is documented at [`MAX_ARCHITECTURE_BYTES`].
    /// The ONNX fixtures of `tests/fixtures/onnx`, imported, by name.
    fn onnx_fixtures() -> Vec<(&'static str, crate::onnx::Imported)> {
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/onnx");
        [
            "mlp",
            "lenet_bn",
            "matmul_reshape",
            "allconv",
            "resnet_cifar",
        ]
        .into_iter()
        .map(|f| {
            let path = format!("{fixtures}/{f}.onnx");
            (f, crate::onnx::import(Path::new(&path)).unwrap())
        })
        .collect()
    }

    #[test]
    fn architectures_round_trip() {
        let mut models: Vec<(String, Model)> = crate::models::BUILTIN
            .iter()
            .map(|n| (n.to_string(), crate::models::by_name(n).unwrap()))
            .collect();
        for (f, m) in onnx_fixtures() {
            models.push((f.to_string(), m.model));
        }
        for (name, m) in models {
            let bytes = encode_architecture(&m);
            eprintln!("{name}: {} bytes", bytes.len());
            assert!(bytes.len() < 2048, "{name}: {} bytes", bytes.len());
            assert_eq!(decode_architecture(&bytes).unwrap(), m, "{name}");
            let got = received(&[len(bytes.len() as u64), bytes]);
            assert_eq!(got.len(), 2);
            for g in got {
                assert_eq!(g.unwrap(), m, "{name}");
            }
        }
    }

    /// The architecture the model owner sends carries no weight: for each ONNX fixture, no
    /// weight's f32, f64 or fixed-point bytes occur anywhere in it (the weights whose bytes
    /// could be a shape or an attribute by chance, small dyadic values and fixed-point words
    /// below 2^16, aside).
    #[test]
    fn architectures_carry_no_weight() {
        let fp = FixedPoint::default();
        for (f, m) in onnx_fixtures() {
            let bytes = encode_architecture(&m.model);
            let occurs = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
            let mut checked = 0;
            for (name, t) in &m.weights.tensors {
                for &w in t.iter() {
                    if (w * 256.0).fract() == 0.0 {
                        continue;
                    }
                    checked += 1;
                    assert!(!occurs(&(w as f32).to_le_bytes()), "{f}: {name} as f32");
                    assert!(!occurs(&w.to_le_bytes()), "{f}: {name} as f64");
                    let word = fp.encode(w).unwrap();
                    if (word as i64).unsigned_abs() >= 1 << 16 {
                        assert!(!occurs(&word.to_le_bytes()), "{f}: {name} in fixed point");
                    }
                }
            }
            assert!(checked > 1000, "{f}: {checked} weights checked");
        }
    }

    /// A model owner that sends an architecture over the cap, of length zero, of another length
    /// than announced, garbage, a claimed length of 2^64 - 1 elements, bytes after a model, or a
    /// model that does not hold together: both peers fail naming it and the reason, without
    /// waiting for or allocating what was claimed.
    #[test]
    fn oversized_or_garbage_architecture_is_refused_naming_the_sender() {
        let mlp = Model::new(&[784]).dense(10).argmax();
        let good = encode_architecture(&mlp);
        let mut trailing = good.clone();
        trailing.push(0);
        let bad_model = encode_architecture(&Model::new(&[28, 28, 1]).dense(10));
        // `input`, then `nodes` claiming 2^64 - 1 elements (bincode's varint: 253 and a u64) in
        // place of the empty model's 0 and its layout.
        let mut nodes_without_end = encode_architecture(&Model::new(&[784]));
        assert_eq!(nodes_without_end[nodes_without_end.len() - 2..], [0, 0]);
        nodes_without_end.truncate(nodes_without_end.len() - 2);
        nodes_without_end.push(253);
        nodes_without_end.extend(u64::MAX.to_le_bytes());
        let cases: Vec<(Vec<Vec<u8>>, &str)> = vec![
            (
                vec![len(2 << 20)],
                "would take 2097152 bytes; a party accepts 1 to 1048576 (1 MiB)",
            ),
            (vec![len(u64::MAX)], "would take 18446744073709551615 bytes"),
            (vec![len(0)], "would take 0 bytes"),
            (vec![len(10), vec![7; 20]], "expected 10 bytes, got 20"),
            (vec![len(64), vec![0xff; 64]], "not a model architecture"),
            (
                vec![
                    len(nodes_without_end.len() as u64),
                    nodes_without_end.clone(),
                ],
                "not a model architecture",
            ),
            (
                vec![len(trailing.len() as u64), trailing],
                "not a model architecture: 1 byte(s) after its end",
            ),
            (
                vec![len(bad_model.len() as u64), bad_model],
                "the architecture does not hold together: layer 0.dense",
            ),
        ];
        for (forged, want) in cases {
            let got = received(&forged);
            assert_eq!(got.len(), 2);
            for g in got {
                let e = g.unwrap_err();
                eprintln!("{e}");
                assert!(
                    e.starts_with("malformed message from P1 at model/architecture#"),
                    "{e}"
                );
                assert!(e.contains(want), "no {want:?} in {e}");
                assert!(e.len() < 1000, "{e}");
            }
        }
        // A model with no layer holds together but computes nothing.
        let empty = encode_architecture(&Model::new(&[784]));
        assert!(
            decode_architecture(&empty)
                .unwrap_err()
                .contains("no layer")
        );
        // The same checks without the cluster: a well-formed but absurd model is refused by
        // `describe`, which bounds every shape.
        let huge = encode_architecture(&Model::new(&[784]).dense(1 << 40).then(Layer::Argmax));
        let e = decode_architecture(&huge).unwrap_err();
        assert!(e.contains("does not hold together"), "{e}");
    }

    /// The data owner refuses a model whose input is not an MNIST image, naming who sent it.
    #[test]
    fn data_owner_checks_the_model_input() {
        let data = Mnist {
            images: vec![vec![0.0; crate::data::PIXELS]; 2],
            labels: vec![1, 2],
        };
        let mut cifar = Model::new(&[32, 32, 3]).flatten().dense(10).argmax();
        cifar.input_layout = crate::nn::InputLayout::ChannelsFirst;
        let e = check_input(&cifar, PartyId(1), &data)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("the model P1 sent takes inputs of shape [3, 32, 32] (3072 values)")
                && e.contains("784 pixels"),
            "{e}"
        );
        let mnist = Model::new(&[28, 28, 1]).flatten().dense(10).argmax();
        assert!(check_input(&mnist, PartyId(1), &data).is_ok());
    }

    /// Before the architecture arrives the parties of an ONNX job agree on the job without it;
    /// after, with it, as a built-in job always does.
    #[test]
    fn job_parameters_name_onnx_jobs_onnx() {
        let text = TEMPLATE.replace("model = \"a\"", "onnx = \"/only/on/the/owner.onnx\"");
        let d = Deployment::parse(&text, Path::new("deploy.toml")).unwrap();
        let DeploymentJob::Inference(job) = &d.job else {
            panic!("an inference job")
        };
        let fp = FixedPoint::default();
        let before = JobParams::new(job, None, fp);
        assert_eq!(before.get("job.model"), Some(ONNX_MODEL));
        assert_eq!(before.get("model.architecture"), None);
        assert!(!format!("{before:?}").contains("owner.onnx"));
        let m = Model::new(&[784]).dense(10).argmax();
        let after = JobParams::new(job, Some(&m), fp);
        assert_eq!(after.get("model.input"), Some("[784]"));
        assert_eq!(after.get("model.architecture").map(str::len), Some(16));
    }
}
