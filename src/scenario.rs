//! Scenario files: a secure inference job, its network and faults, and the variants to sweep, as
//! TOML; or, with `[job] kind = "train"`, a secure training job and its network
//! ([`TrainScenario`]). `securenn run FILE` runs one ([`ScenarioFile::load`]). Unknown keys and
//! bad values are errors naming the key, the line and what is allowed (serde's
//! `deny_unknown_fields` and typed enums, with toml's positions).

use crate::channel::PartyId;
use crate::data::{DataSource, LabelColumn, Mnist};
use crate::fixed::FixedPoint;
use crate::infer::{InferSpec, Layout, ProtocolKind};
use crate::nn::weights_file;
use crate::party::{Network, PartyConfig};
use crate::protocol::{TFE_RELU_3, TFE_RELU_9};
use securenn_transports::sim::{Clock, Compute, Fault, LinkSpec, SimConfig};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A scenario file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// One line on what the scenario shows.
    pub description: String,
    #[serde(default)]
    pub job: Job,
    #[serde(default)]
    pub network: NetworkEntry,
    #[serde(default, rename = "fault")]
    pub faults: Vec<FaultEntry>,
    /// Variants to run one after the other, each overriding the job or the network.
    #[serde(default, rename = "variant")]
    pub variants: Vec<Variant>,
    #[serde(default)]
    pub output: Output,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolName {
    Securenn,
    Pond,
    Plaintext,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LayoutName {
    #[default]
    Default,
    Paper,
}

/// What a job does: `[job] kind` in scenario and deployment files (a file without it runs
/// inference, as every file did before training).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// Secure inference (the default).
    #[default]
    Inference,
    /// Secure training.
    Train,
}

/// The job; every field has a default (see [`Job::default`]).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Job {
    /// `inference` (the default); a training file is a [`TrainScenario`].
    pub kind: JobKind,
    pub protocol: ProtocolName,
    /// A built-in model (`a`, `b`, `c`, `d`, `d-as-benchmarked`, `-avg` variants); `a` if
    /// neither `model` nor `onnx` is given.
    pub model: Option<String>,
    /// Instead of `model`: an ONNX file (relative to the scenario file) with the architecture
    /// and the weights, run as `securenn infer --onnx` runs it.
    pub onnx: Option<PathBuf>,
    /// Weight file of a built-in `model`; default: its bundled trained weights.
    pub weights: Option<PathBuf>,
    pub layout: LayoutName,
    pub samples: usize,
    pub batch: usize,
    /// First image: of the bundled sample's test split, or of the `data` file in file order.
    pub offset: usize,
    /// MNIST CSV of one's own (relative to the scenario file), read whole in file order;
    /// default: the bundled sample's test split.
    pub data: Option<PathBuf>,
    /// Where the label is in each line of `data`.
    pub label_column: LabelColumn,
    /// Instead of `data`: inputs as a float32 `.npy` of N × the model's input shape (relative
    /// to the scenario file), as `securenn infer --input` reads them: for a model whose inputs
    /// are not MNIST images.
    pub input: Option<PathBuf>,
    /// Labels of `input`: a `.npy` vector of N integers (optional).
    pub labels: Option<PathBuf>,
    /// Session seed: the same seed gives the same shares, bytes, rounds and virtual network time.
    pub seed: u64,
    /// Pond's ReLU fit: 9 (tf-encrypted's shipped [-9, 9]) or 3.
    pub relu_fit: u32,
    /// Seconds a party waits for a peer's message.
    pub timeout: u64,
}

impl Default for Job {
    fn default() -> Self {
        Self {
            kind: JobKind::Inference,
            protocol: ProtocolName::Securenn,
            model: None,
            onnx: None,
            weights: None,
            data: None,
            label_column: LabelColumn::Last,
            input: None,
            labels: None,
            layout: LayoutName::Default,
            samples: 10,
            batch: 10,
            offset: 0,
            seed: 1,
            relu_fit: 9,
            timeout: 120,
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TransportName {
    Memory,
    Sim,
    Quic,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkEntry {
    /// `memory` (default), `sim` or `quic` (three parties on 127.0.0.1 in this process).
    pub transport: Option<TransportName>,
    /// A preset of `transports/presets.toml`; `lan` by default on the simulator.
    pub preset: Option<String>,
    /// `virtual` (default) or `real`.
    pub clock: Option<String>,
    /// `measured` (default) or `zero`.
    pub compute: Option<String>,
    /// Cores of each party's machine on the simulator's virtual clock (default 1): a parallel
    /// section is charged its chunks' makespan on this many cores ([`crate::par`]).
    pub cores: Option<i64>,
    /// Link parameters overriding the preset on every link.
    #[serde(default)]
    pub link: LinkOverride,
    /// Per directed link, keyed `"0->2"`.
    #[serde(default)]
    pub links: std::collections::BTreeMap<String, LinkOverride>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkOverride {
    pub latency_ms: Option<f64>,
    pub jitter_ms: Option<f64>,
    /// Bytes per second.
    pub bandwidth: Option<f64>,
    pub loss: Option<f64>,
    pub rto_ms: Option<f64>,
    pub queue_limit: Option<u64>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
pub enum FaultEntry {
    /// Cut `from -> to` at `at_ms` (virtual) or after `after_messages`.
    Cut {
        from: u8,
        to: u8,
        at_ms: Option<f64>,
        after_messages: Option<u64>,
    },
    /// Cut every link of `party` at `at_ms`.
    Partition { party: u8, at_ms: f64 },
    /// Delay messages on `from -> to` sent in [at_ms, at_ms + length_ms) by `extra_ms`.
    Delay {
        from: u8,
        to: u8,
        at_ms: f64,
        length_ms: f64,
        extra_ms: f64,
    },
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// Row label; default: what the variant changes.
    pub name: Option<String>,
    pub protocol: Option<ProtocolName>,
    pub model: Option<String>,
    pub layout: Option<LayoutName>,
    pub batch: Option<usize>,
    pub samples: Option<usize>,
    pub preset: Option<String>,
    pub transport: Option<TransportName>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// Write the reports (one per variant) as a JSON array here, relative to the scenario file.
    pub json: Option<PathBuf>,
}

/// A scenario that cannot be read or run, naming the file, the key and the reason.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
    #[error(transparent)]
    Weights(#[from] weights_file::WeightFileError),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// The job's ONNX file cannot be imported.
    #[error("job.onnx = {path:?}: {error}")]
    Onnx {
        path: String,
        error: Box<crate::onnx::OnnxError>,
    },
}

fn invalid(path: &Path, reason: impl std::fmt::Display) -> ScenarioError {
    ScenarioError::Invalid {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn ms(v: f64, key: &str, path: &Path) -> Result<Duration, ScenarioError> {
    if v.is_finite() && v >= 0.0 {
        Ok(Duration::from_secs_f64(v / 1e3))
    } else {
        Err(invalid(
            path,
            format!("{key}: {v} is not a non-negative number of milliseconds"),
        ))
    }
}

fn party(v: u8, key: &str, path: &Path) -> Result<PartyId, ScenarioError> {
    if v < 3 {
        Ok(PartyId(v))
    } else {
        Err(invalid(
            path,
            format!("{key}: {v} is not a party (0, 1 or 2)"),
        ))
    }
}

/// `[job] kind` of a file, read before the file is parsed as the job it names (other keys are
/// left to that parse, which refuses unknown ones).
#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    job: Option<ProbeJob>,
}

#[derive(Deserialize)]
struct ProbeJob {
    #[serde(default)]
    kind: JobKind,
}

/// The kind of the job in TOML `text` (scenario and deployment files): `[job] kind`,
/// inference if absent.
pub(crate) fn job_kind(text: &str) -> Result<JobKind, toml::de::Error> {
    let probe: Probe = toml::from_str(text)?;
    Ok(probe.job.map_or(JobKind::Inference, |j| j.kind))
}

/// A scenario file of either kind.
#[derive(Clone, Debug)]
pub enum ScenarioFile {
    Inference(Scenario),
    Train(TrainScenario),
}

impl ScenarioFile {
    /// Read and check a scenario file: `[job] kind` says which (inference if absent).
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|e| invalid(path, e))?;
        Ok(match job_kind(&text).map_err(|e| invalid(path, e))? {
            JobKind::Inference => Self::Inference(Scenario::parse(&text, path)?),
            JobKind::Train => Self::Train(TrainScenario::parse(&text, path)?),
        })
    }
}

impl Scenario {
    /// Read and check an inference scenario file (a training one is refused: see
    /// [`ScenarioFile::load`]).
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|e| invalid(path, e))?;
        if job_kind(&text).map_err(|e| invalid(path, e))? == JobKind::Train {
            return Err(invalid(
                path,
                "[job] kind = \"train\": a training scenario, not an inference one",
            ));
        }
        Self::parse(&text, path)
    }

    fn parse(text: &str, path: &Path) -> Result<Self, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|e| invalid(path, e))?;
        s.runs(path, None)?; // validate every variant up front
        Ok(s)
    }

    /// The runs of the scenario: one per variant (or one), with `samples` overriding every run's
    /// sample count (CI runs long scenarios short).
    pub fn runs(&self, path: &Path, samples: Option<usize>) -> Result<Vec<Run>, ScenarioError> {
        let base = Variant::default();
        let variants: Vec<&Variant> = if self.variants.is_empty() {
            vec![&base]
        } else {
            self.variants.iter().collect()
        };
        variants
            .into_iter()
            .map(|v| self.run(path, v, samples))
            .collect()
    }

    fn run(&self, path: &Path, v: &Variant, samples: Option<usize>) -> Result<Run, ScenarioError> {
        let j = &self.job;
        if j.kind != JobKind::Inference {
            return Err(invalid(
                path,
                "[job] kind = \"train\": a training scenario, not an inference one",
            ));
        }
        if let Some(onnx) = &j.onnx {
            if j.model.is_some() {
                return Err(invalid(
                    path,
                    format!(
                        "job.model and job.onnx: give one of them, not both (the ONNX file {:?} \
                         holds the architecture and the weights)",
                        onnx.display().to_string()
                    ),
                ));
            }
            if j.weights.is_some() {
                return Err(invalid(
                    path,
                    "job.weights: an ONNX model (job.onnx) carries its own weights",
                ));
            }
            if v.model.is_some() {
                return Err(invalid(
                    path,
                    "variant.model: the job's model is an ONNX file (job.onnx); a variant \
                     cannot change it",
                ));
            }
        }
        if j.input.is_some() && j.data.is_some() {
            return Err(invalid(
                path,
                "job.input and job.data: give one of them, not both (input is a .npy tensor, \
                 data an MNIST CSV)",
            ));
        }
        if j.labels.is_some() && j.input.is_none() {
            return Err(invalid(
                path,
                "job.labels: labels go with job.input (a .npy of inputs)",
            ));
        }
        // For an ONNX job, the file's stem names it in labels and reports.
        let model = match &j.onnx {
            Some(onnx) => onnx
                .file_stem()
                .map_or_else(|| "onnx".into(), |s| s.to_string_lossy().into_owned()),
            None => v
                .model
                .clone()
                .or_else(|| j.model.clone())
                .unwrap_or_else(|| "a".into()),
        };
        if j.onnx.is_none() && crate::models::by_name(&model).is_none() {
            return Err(invalid(
                path,
                format!(
                    "model: {model:?} is not one of {}",
                    crate::models::BUILTIN.join(", ")
                ),
            ));
        }
        let protocol = v.protocol.unwrap_or(j.protocol);
        let batch = v.batch.unwrap_or(j.batch);
        let samples = samples.or(v.samples).unwrap_or(j.samples);
        if batch == 0 || samples == 0 {
            return Err(invalid(
                path,
                "job.batch and job.samples must be at least 1",
            ));
        }
        if ![3, 9].contains(&j.relu_fit) {
            return Err(invalid(
                path,
                format!("job.relu_fit: {} is not 9 or 3", j.relu_fit),
            ));
        }
        let (network, network_name) = network_of(
            &self.network,
            &self.faults,
            path,
            j.seed,
            v.transport,
            v.preset.clone(),
        )?;
        let label = v.name.clone().unwrap_or_else(|| {
            let mut parts = Vec::new();
            if v.protocol.is_some() || v.model.is_some() {
                parts.push(format!("{protocol:?} {model}").to_lowercase());
            }
            if let Some(b) = v.batch {
                parts.push(format!("batch {b}"));
            }
            if let Some(p) = &v.preset {
                parts.push(p.clone());
            }
            if let Some(l) = v.layout {
                parts.push(format!("{l:?} layout").to_lowercase());
            }
            if parts.is_empty() {
                model.clone()
            } else {
                parts.join(", ")
            }
        });
        Ok(Run {
            label,
            job: Job {
                protocol,
                model: Some(model),
                onnx: j.onnx.as_ref().map(|m| beside(path, m)),
                weights: j.weights.as_ref().map(|w| beside(path, w)),
                data: j.data.as_ref().map(|d| beside(path, d)),
                input: j.input.as_ref().map(|d| beside(path, d)),
                labels: j.labels.as_ref().map(|d| beside(path, d)),
                layout: v.layout.unwrap_or(j.layout),
                samples,
                batch,
                ..j.clone()
            },
            network,
            network_name,
        })
    }
}

/// The network of a scenario's `[network]` and `[[fault]]`s (a variant may override the
/// transport and the preset), and its name in reports.
fn network_of(
    entry: &NetworkEntry,
    faults: &[FaultEntry],
    path: &Path,
    seed: u64,
    transport: Option<TransportName>,
    preset: Option<String>,
) -> Result<(Network, String), ScenarioError> {
    let transport =
        transport
            .or(entry.transport)
            .unwrap_or(if preset.is_some() || entry.preset.is_some() {
                TransportName::Sim
            } else {
                TransportName::Memory
            });
    let preset = preset
        .or(entry.preset.clone())
        .unwrap_or_else(|| "lan".into());
    cores(entry, path)?;
    let network = match transport {
        TransportName::Memory => Network::Memory,
        TransportName::Quic => Network::QuicLocalhost,
        TransportName::Sim => Network::Sim(sim_config(entry, faults, path, &preset, seed)?),
    };
    if !faults.is_empty() && transport != TransportName::Sim {
        return Err(invalid(
            path,
            "fault: faults need network.transport = \"sim\"",
        ));
    }
    let name = match transport {
        TransportName::Memory => "none".into(),
        TransportName::Quic => "localhost".into(),
        TransportName::Sim => preset,
    };
    Ok((network, name))
}

/// Most cores per party a scenario may give (a sanity bound, far above any real server's).
pub const MAX_CORES: u32 = 4096;

/// The `[network]`'s `cores`, 1 by default, checked.
fn cores(network: &NetworkEntry, path: &Path) -> Result<u32, ScenarioError> {
    match network.cores {
        None => Ok(1),
        Some(n) if (1..=MAX_CORES as i64).contains(&n) => Ok(n as u32),
        Some(n) => Err(invalid(
            path,
            format!("network.cores: {n} is not a number of cores per party (1 to {MAX_CORES})"),
        )),
    }
}

/// The simulator's configuration of a scenario's `[network]` and `[[fault]]`s.
fn sim_config(
    network: &NetworkEntry,
    faults: &[FaultEntry],
    path: &Path,
    preset: &str,
    seed: u64,
) -> Result<SimConfig, ScenarioError> {
    let base =
        LinkSpec::preset(preset).map_err(|e| invalid(path, format!("network.preset: {e}")))?;
    let apply = |l: &mut LinkSpec, o: &LinkOverride, key: &str| -> Result<(), ScenarioError> {
        if let Some(v) = o.latency_ms {
            l.latency = ms(v, &format!("{key}.latency_ms"), path)?;
        }
        if let Some(v) = o.jitter_ms {
            l.jitter = ms(v, &format!("{key}.jitter_ms"), path)?;
        }
        if let Some(v) = o.rto_ms {
            l.rto = ms(v, &format!("{key}.rto_ms"), path)?;
        }
        if let Some(v) = o.bandwidth {
            l.bandwidth = v;
        }
        if let Some(v) = o.loss {
            l.loss = v;
        }
        if o.queue_limit.is_some() {
            l.queue_limit = o.queue_limit;
        }
        l.validate()
            .map_err(|e| invalid(path, format!("{key}: {e}")))
    };
    let mut link = base;
    apply(&mut link, &network.link, "network.link")?;
    let mut cfg = SimConfig::uniform(3, link);
    for (name, o) in &network.links {
        let key = format!("network.links.\"{name}\"");
        let (a, b) = name
            .split_once("->")
            .and_then(|(a, b)| Some((a.trim().parse::<u8>().ok()?, b.trim().parse::<u8>().ok()?)))
            .filter(|(a, b)| a != b && *a < 3 && *b < 3)
            .ok_or_else(|| {
                invalid(
                    path,
                    format!("{key}: name a directed link between two parties, like \"0->2\""),
                )
            })?;
        apply(&mut cfg.links[a as usize][b as usize], o, &key)?;
    }
    cfg.seed = seed;
    cfg.cores = cores(network, path)?;
    cfg.clock = match network.clock.as_deref() {
        None | Some("virtual") => Clock::Virtual,
        Some("real") => Clock::Real,
        Some(o) => {
            return Err(invalid(
                path,
                format!("network.clock: {o:?} is not \"virtual\" or \"real\""),
            ));
        }
    };
    cfg.compute = match network.compute.as_deref() {
        None | Some("measured") => Compute::Measured,
        Some("zero") => Compute::Zero,
        Some(o) => {
            return Err(invalid(
                path,
                format!("network.compute: {o:?} is not \"measured\" or \"zero\""),
            ));
        }
    };
    for (i, f) in faults.iter().enumerate() {
        let key = |k: &str| format!("fault[{i}].{k}");
        cfg.faults.push(match *f {
            FaultEntry::Cut {
                from,
                to,
                at_ms,
                after_messages,
            } => {
                let (from, to) = (
                    party(from, &key("from"), path)?,
                    party(to, &key("to"), path)?,
                );
                match (at_ms, after_messages) {
                    (Some(t), None) => Fault::CutAfterTime {
                        from,
                        to,
                        at: ms(t, &key("at_ms"), path)?,
                    },
                    (None, Some(count)) => Fault::CutAfterMessages { from, to, count },
                    _ => {
                        return Err(invalid(
                            path,
                            format!(
                                "{}: give exactly one of at_ms and after_messages",
                                key("kind")
                            ),
                        ));
                    }
                }
            }
            FaultEntry::Partition { party: p, at_ms } => Fault::Partition {
                party: party(p, &key("party"), path)?,
                at: ms(at_ms, &key("at_ms"), path)?,
            },
            FaultEntry::Delay {
                from,
                to,
                at_ms,
                length_ms,
                extra_ms,
            } => Fault::DelaySpike {
                from: party(from, &key("from"), path)?,
                to: party(to, &key("to"), path)?,
                at: ms(at_ms, &key("at_ms"), path)?,
                length: ms(length_ms, &key("length_ms"), path)?,
                extra: ms(extra_ms, &key("extra_ms"), path)?,
            },
        });
    }
    Ok(cfg)
}

/// One concrete run of a scenario: the job with the variant's overrides applied, and its network.
#[derive(Clone, Debug)]
pub struct Run {
    pub label: String,
    pub job: Job,
    pub network: Network,
    pub network_name: String,
}

/// `p` as written in the scenario file `file`: relative paths are relative to the file.
fn beside(file: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        file.parent().unwrap_or(Path::new(".")).join(p)
    }
}

impl Run {
    /// The inference job of this run, with the model owner's weights (of a built-in model, or
    /// the ONNX file's) and the data owner's images loaded.
    pub fn spec(&self) -> Result<InferSpec, ScenarioError> {
        let j = &self.job;
        let name = j.model.clone().expect("resolved by Scenario::runs");
        let (model, weights, label) = match &j.onnx {
            Some(path) => {
                let m = crate::onnx::import(path).map_err(|e| ScenarioError::Onnx {
                    path: path.display().to_string(),
                    error: Box::new(e),
                })?;
                if let (Some(why), None) = (m.model.mnist_mismatch(), &j.input) {
                    return Err(invalid(
                        path,
                        format!("job.onnx: the {why}; give them as job.input"),
                    ));
                }
                (m.model, m.weights, path.display().to_string())
            }
            None => {
                let model = crate::models::by_name(&name).expect("validated");
                let (weights, _) =
                    weights_file::load_or_bundled(j.weights.as_deref(), &name, &model)?;
                (
                    model,
                    weights,
                    weights_file::label(j.weights.as_deref(), &name),
                )
            }
        };
        weights_file::check_fixed(&label, &weights, FixedPoint::default())?;
        let data = match &j.input {
            Some(npy) => {
                let all = Mnist::read_npy_inputs(npy, j.labels.as_deref())?;
                crate::infer::npy_inputs_for(
                    &model,
                    &all,
                    j.offset,
                    Some(j.samples),
                    FixedPoint::default(),
                )?
            }
            None => {
                let source = DataSource::file_or_bundled(j.data.as_deref());
                Mnist::select(&source, None, j.label_column, j.offset, Some(j.samples))?.data
            }
        };
        Ok(InferSpec {
            protocol: match j.protocol {
                ProtocolName::Securenn => ProtocolKind::SecureNn,
                ProtocolName::Pond => ProtocolKind::Pond,
                ProtocolName::Plaintext => ProtocolKind::Plaintext,
            },
            model_name: name,
            model,
            weights,
            data,
            batch: j.batch,
            seed: j.seed,
            data_owner: PartyId(0),
            model_owner: PartyId(1),
            config: PartyConfig {
                recv_timeout: Duration::from_secs(j.timeout),
                fixed: FixedPoint::default(),
            },
            relu_poly: if j.relu_fit == 3 {
                TFE_RELU_3.to_vec()
            } else {
                TFE_RELU_9.to_vec()
            },
            layout: match j.layout {
                LayoutName::Default => Layout::Default,
                LayoutName::Paper => Layout::Paper,
            },
            reveal: None,
            network: self.network.clone(),
            network_name: self.network_name.clone(),
            allow_range_risk: false,
            without: Vec::new(),
        })
    }
}

/// A training scenario: `[job] kind = "train"`, its network and faults (as an inference
/// scenario's), and where the report goes. It has no variants.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainScenario {
    /// One line on what the scenario shows.
    pub description: String,
    pub job: TrainJobEntry,
    #[serde(default)]
    pub network: NetworkEntry,
    #[serde(default, rename = "fault")]
    pub faults: Vec<FaultEntry>,
    #[serde(default)]
    pub output: Output,
}

/// A training job (`[job] kind = "train"`); every field but `kind` has a default (see
/// [`TrainJobEntry::default`]).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainJobEntry {
    /// `train`.
    pub kind: JobKind,
    /// `securenn`, or `plaintext` for the fixed-point twin; Pond cannot train.
    pub protocol: ProtocolName,
    /// A built-in model; `a` if neither `model` nor `onnx` is given.
    pub model: Option<String>,
    /// Instead of `model`: an ONNX file (relative to the scenario file), its weights the initial
    /// ones.
    pub onnx: Option<PathBuf>,
    /// Initial weights of a built-in `model` (relative to the scenario file); default: a seeded
    /// initialisation from `seed`.
    pub weights: Option<PathBuf>,
    pub layout: LayoutName,
    pub epochs: usize,
    pub batch: usize,
    /// The SGD learning rate.
    pub lr: f64,
    /// Halve `lr` every this many epochs.
    pub lr_halve_every: Option<usize>,
    /// Stop each epoch after this many iterations (default: every full batch).
    pub iterations: Option<usize>,
    /// Images of the test split tested by secure inference at every epoch end (0: none).
    pub test_samples: usize,
    /// MNIST CSV of one's own (relative to the scenario file), split as the bundled sample is:
    /// the last fifth of each digit's images is the test split, the rest trains; default: the
    /// bundled sample.
    pub data: Option<PathBuf>,
    /// Where the label is in each line of `data`.
    pub label_column: LabelColumn,
    /// Session seed, initial weights (without `weights`) and the data owner's shuffle.
    pub seed: u64,
    pub data_owner: u8,
    pub model_owner: u8,
    /// Seconds a party waits for a peer's message.
    pub timeout: u64,
    /// Where the model owner writes the trained weights (safetensors, relative to the scenario
    /// file); an existing file is refused unless `force`.
    pub out: Option<PathBuf>,
    /// Overwrite `out` if it exists.
    pub force: bool,
    /// Each party checkpoints its shares here at every epoch end (relative to the scenario
    /// file).
    pub checkpoint_dir: Option<PathBuf>,
    /// Continue from the latest checkpoint every party has in `checkpoint_dir`.
    pub resume: bool,
}

impl Default for TrainJobEntry {
    fn default() -> Self {
        Self {
            kind: JobKind::Train,
            protocol: ProtocolName::Securenn,
            model: None,
            onnx: None,
            weights: None,
            layout: LayoutName::Default,
            epochs: 1,
            batch: 128,
            lr: 1.0 / 32.0,
            lr_halve_every: None,
            iterations: None,
            test_samples: 0,
            data: None,
            label_column: LabelColumn::Last,
            seed: 1,
            data_owner: 0,
            model_owner: 1,
            timeout: 120,
            out: None,
            force: false,
            checkpoint_dir: None,
            resume: false,
        }
    }
}

/// A training scenario ready to run: the job, and where the model owner writes the trained
/// weights.
pub struct TrainRun {
    pub spec: crate::training::TrainSpec,
    /// `job.out`, relative to the scenario file resolved.
    pub out: Option<PathBuf>,
    pub force: bool,
}

/// The training and test images of a training job: the training split of `source` (by the
/// bundled sample's rule, which `securenn train` applies to a file of one's own too) and the
/// first `test` images of its test split.
pub fn train_and_test(
    source: &DataSource,
    label_column: LabelColumn,
    test: usize,
) -> Result<(Mnist, Mnist, Option<String>), crate::data::DataError> {
    let file = Mnist::read_csv(source.clone(), label_column)?;
    let all = file.data;
    let pick = |idx: &[usize]| Mnist {
        images: idx.iter().map(|&i| all.images[i].clone()).collect(),
        labels: idx.iter().map(|&i| all.labels[i]).collect(),
    };
    let train = pick(&all.split_order(crate::data::Split::Train));
    let test_order = all.split_order(crate::data::Split::Test);
    if test_order.len() < test {
        return Err(crate::data::DataError::Range {
            path: source.clone(),
            what: "the test split (the last fifth of each digit's images)".into(),
            from: 0,
            count: test,
            have: test_order.len(),
        });
    }
    Ok((train, pick(&test_order[..test]), file.header))
}

impl TrainScenario {
    fn parse(text: &str, path: &Path) -> Result<Self, ScenarioError> {
        let s: TrainScenario = toml::from_str(text).map_err(|e| invalid(path, e))?;
        s.check(path)?;
        Ok(s)
    }

    /// The checks that need no file but the scenario: every value named by its key.
    fn check(&self, path: &Path) -> Result<(), ScenarioError> {
        let j = &self.job;
        if j.kind != JobKind::Train {
            return Err(invalid(path, "[job] kind: not a training job"));
        }
        if j.protocol == ProtocolName::Pond {
            return Err(invalid(
                path,
                "job.protocol: pond cannot train (its ReLU is a polynomial with no exact \
                 derivative, and it has no division); use securenn, or plaintext for the \
                 fixed-point twin",
            ));
        }
        match (&j.model, &j.onnx) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    path,
                    "job.model and job.onnx: give one of them, not both",
                ));
            }
            (None, Some(_)) if j.weights.is_some() => {
                return Err(invalid(
                    path,
                    "job.weights: an ONNX model (job.onnx) carries its own initial weights",
                ));
            }
            (Some(m), None) if crate::models::by_name(m).is_none() => {
                return Err(invalid(
                    path,
                    format!(
                        "model: {m:?} is not one of {}",
                        crate::models::BUILTIN.join(", ")
                    ),
                ));
            }
            _ => {}
        }
        for (key, v) in [
            ("epochs", Some(j.epochs)),
            ("batch", Some(j.batch)),
            ("iterations", j.iterations),
            ("lr_halve_every", j.lr_halve_every),
        ] {
            if v == Some(0) {
                return Err(invalid(path, format!("job.{key} must be at least 1")));
            }
        }
        if !(j.lr.is_finite() && j.lr > 0.0) {
            return Err(invalid(
                path,
                format!("job.lr: {} is not a positive number", j.lr),
            ));
        }
        party(j.data_owner, "job.data_owner", path)?;
        party(j.model_owner, "job.model_owner", path)?;
        if j.resume && j.checkpoint_dir.is_none() {
            return Err(invalid(
                path,
                "job.resume: resuming needs job.checkpoint_dir, where the run to continue \
                 checkpointed",
            ));
        }
        network_of(&self.network, &self.faults, path, j.seed, None, None)?;
        Ok(())
    }

    /// The model's name in reports: the built-in model's, or the ONNX file's stem.
    pub fn model_name(&self) -> String {
        match &self.job.onnx {
            Some(onnx) => onnx
                .file_stem()
                .map_or_else(|| "onnx".into(), |s| s.to_string_lossy().into_owned()),
            None => self.job.model.clone().unwrap_or_else(|| "a".into()),
        }
    }

    /// The training job with the model owner's initial weights and the data owner's images
    /// loaded; `path` is the scenario file's (relative paths are relative to it).
    pub fn run(&self, path: &Path) -> Result<TrainRun, ScenarioError> {
        use crate::training::TrainSpec;
        self.check(path)?;
        let j = &self.job;
        let name = self.model_name();
        let (model, weights, label) = match &j.onnx {
            Some(onnx) => {
                let onnx = beside(path, onnx);
                let m = crate::onnx::import(&onnx).map_err(|e| ScenarioError::Onnx {
                    path: onnx.display().to_string(),
                    error: Box::new(e),
                })?;
                if let Some(why) = m.model.mnist_mismatch() {
                    return Err(invalid(
                        &onnx,
                        format!("job.onnx: the {why}; scenario jobs read MNIST images"),
                    ));
                }
                (m.model, m.weights, onnx.display().to_string())
            }
            None => {
                let model = crate::models::by_name(&name).expect("checked");
                match &j.weights {
                    Some(w) => {
                        let w = beside(path, w);
                        let (weights, _) = weights_file::load(&w, &model)?;
                        (model, weights, w.display().to_string())
                    }
                    None => {
                        let weights = model.init_weights(j.seed).map_err(|e| invalid(path, e))?;
                        (
                            model,
                            weights,
                            format!("model {name} initialised from seed {}", j.seed),
                        )
                    }
                }
            }
        };
        weights_file::check_fixed(&label, &weights, FixedPoint::default())?;
        let source =
            DataSource::file_or_bundled(j.data.as_ref().map(|d| beside(path, d)).as_deref());
        let (train, test, _) = train_and_test(&source, j.label_column, j.test_samples)?;
        let (network, network_name) =
            network_of(&self.network, &self.faults, path, j.seed, None, None)?;
        Ok(TrainRun {
            spec: TrainSpec {
                protocol: match j.protocol {
                    ProtocolName::Securenn => ProtocolKind::SecureNn,
                    ProtocolName::Pond => ProtocolKind::Pond,
                    ProtocolName::Plaintext => ProtocolKind::Plaintext,
                },
                model_name: name,
                model,
                layout: match j.layout {
                    LayoutName::Default => Layout::Default,
                    LayoutName::Paper => Layout::Paper,
                },
                weights,
                train,
                test,
                epochs: j.epochs,
                batch: j.batch,
                learning_rate: j.lr,
                lr_halve_every: j.lr_halve_every,
                seed: j.seed,
                iterations: j.iterations,
                data_owner: PartyId(j.data_owner),
                model_owner: PartyId(j.model_owner),
                config: PartyConfig {
                    recv_timeout: Duration::from_secs(j.timeout),
                    fixed: FixedPoint::default(),
                },
                network,
                network_name,
                checkpoint_dir: j.checkpoint_dir.as_ref().map(|d| beside(path, d)),
                resume: j.resume,
            },
            out: j.out.as_ref().map(|o| beside(path, o)),
            force: j.force,
        })
    }
}
