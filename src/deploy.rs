//! Real deployment: one party per process over QUIC. A deployment file (TOML) names every
//! party's address and certificate and the job; `securenn keygen` writes the identities and a
//! template, `securenn party --config FILE --id N` runs party N.

use crate::channel::PartyId;
use crate::data::{Mnist, Split, default_mnist_path};
use crate::fixed::FixedPoint;
use crate::infer::{Outputs, accuracy, infer_job};
use crate::nn::weights_file;
use crate::party::{LocalCluster, PartyConfig, SeedSource};
use crate::protocol::{Pond, SecureNn, TFE_RELU_9};
use securenn_transports::quic::{Identity, QuicConfig, QuicNode, generate_identity, server_name};
use securenn_transports::{Meter, MeterSnapshot};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A deployment file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    pub party: Vec<PartyEntry>,
    pub job: JobEntry,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartyEntry {
    pub id: u8,
    pub address: SocketAddr,
    /// DER certificate, relative to the deployment file.
    pub certificate: PathBuf,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobEntry {
    /// `securenn` or `pond`.
    pub protocol: String,
    /// A built-in model name.
    pub model: String,
    /// Weight file (model owner only; default: the bundled one).
    pub weights: Option<PathBuf>,
    /// MNIST CSV (data owner only; default: the bundled one).
    pub data: Option<PathBuf>,
    pub samples: usize,
    pub batch: usize,
    pub offset: Option<usize>,
    pub data_owner: u8,
    pub model_owner: u8,
    /// A fixed seed makes the run reproducible (and its pair seeds known to whoever knows it);
    /// without one every party draws fresh entropy, as a deployment should.
    pub seed: Option<u64>,
    /// Seconds to wait for every peer at start-up.
    pub connect_timeout: Option<u64>,
    /// Seconds a party waits for a peer's message.
    pub timeout: Option<u64>,
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
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error("{path} exists; pass --force to overwrite it")]
    Exists { path: String },
}

fn file_err(path: &Path, reason: impl std::fmt::Display) -> DeployError {
    DeployError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

impl Deployment {
    /// Read and check a deployment file: three parties with ids 0, 1, 2, a known model and
    /// protocol, owners among the parties.
    pub fn load(path: &Path) -> Result<Self, DeployError> {
        let text = std::fs::read_to_string(path).map_err(|e| file_err(path, e))?;
        let d: Deployment = toml::from_str(&text).map_err(|e| file_err(path, e))?;
        let mut ids: Vec<u8> = d.party.iter().map(|p| p.id).collect();
        ids.sort_unstable();
        if ids != [0, 1, 2] {
            return Err(file_err(
                path,
                format!("[[party]] ids must be 0, 1 and 2, got {ids:?}"),
            ));
        }
        if crate::models::by_name(&d.job.model).is_none() {
            return Err(file_err(
                path,
                format!(
                    "job.model: unknown model {:?}; known: {}",
                    d.job.model,
                    crate::models::BUILTIN.join(", ")
                ),
            ));
        }
        if !["securenn", "pond"].contains(&d.job.protocol.as_str()) {
            return Err(file_err(
                path,
                format!("job.protocol: {:?} is not securenn or pond", d.job.protocol),
            ));
        }
        if d.job.data_owner > 2 || d.job.model_owner > 2 {
            return Err(file_err(
                path,
                "job.data_owner and job.model_owner must be 0, 1 or 2",
            ));
        }
        if d.job.samples == 0 || d.job.batch == 0 {
            return Err(file_err(
                path,
                "job.samples and job.batch must be at least 1",
            ));
        }
        Ok(d)
    }

    fn entry(&self, id: u8) -> &PartyEntry {
        self.party.iter().find(|p| p.id == id).expect("ids checked")
    }
}

/// Write a certificate and key per party (keys with mode 0600) and a deployment template into
/// `dir`; existing files are kept unless `force`.
pub fn keygen(dir: &Path, force: bool) -> Result<Vec<PathBuf>, DeployError> {
    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    let config = dir.join("deploy.toml");
    let mut files = vec![config.clone()];
    for i in 0..3u8 {
        files.push(dir.join(format!("party{i}.cert.der")));
        files.push(dir.join(format!("party{i}.key.der")));
    }
    if let Some(f) = files.iter().find(|f| f.exists()).filter(|_| !force) {
        return Err(DeployError::Exists {
            path: f.display().to_string(),
        });
    }
    for i in 0..3u8 {
        let id: Identity = generate_identity(PartyId(i))?;
        let cert = dir.join(format!("party{i}.cert.der"));
        std::fs::write(&cert, &id.cert).map_err(|e| file_err(&cert, e))?;
        write_secret(&dir.join(format!("party{i}.key.der")), &id.key)?;
    }
    let template = "# securenn deployment: every party runs `securenn party --config deploy.toml --id N`\n\
# with its own key (party<N>.key.der beside this file, or --key FILE). Certificates are public;\n\
# copy this file and all three certificates to every machine, each key only to its party.\n\n"
        .to_string()
        + &(0..3)
            .map(|i| format!("[[party]]\nid = {i}\naddress = \"127.0.0.1:{}\"\ncertificate = \"party{i}.cert.der\"\n", 7100 + i))
            .collect::<Vec<_>>()
            .join("\n")
        + "\n[job]\nprotocol = \"securenn\"\nmodel = \"a\"\nsamples = 20\nbatch = 10\ndata_owner = 0\nmodel_owner = 1\n\
# seed = 1             # reproducible runs only: a known seed makes the pair seeds known\n\
connect_timeout = 30   # seconds to wait for every peer at start-up\n\
timeout = 120          # seconds to wait for a peer's message\n";
    std::fs::write(&config, template).map_err(|e| file_err(&config, e))?;
    Ok(files)
}

/// Create `path` readable by its owner only, then write `bytes`.
fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), DeployError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| file_err(path, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| file_err(path, e))?;
    }
    f.write_all(bytes).map_err(|e| file_err(path, e))
}

/// What one party saw of a deployed run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PartyReport {
    pub party: u8,
    /// At the data owner: predictions and accuracy against the labels.
    pub predictions: Option<Vec<usize>>,
    pub accuracy: Option<f64>,
    /// Payload bytes this party sent (its own meter), and its rounds.
    pub bytes_sent: u64,
    pub messages_sent: u64,
    pub rounds: u64,
    /// UDP bytes this party's QUIC endpoint sent.
    pub quic_wire_bytes: u64,
    pub wall_seconds: f64,
}

/// Run party `id` of the deployment at `config` with its identity's key at `key`.
pub fn run_party(
    config: &Path,
    id: PartyId,
    key: Option<&Path>,
) -> Result<PartyReport, DeployError> {
    let dep = Deployment::load(config)?;
    if id.0 > 2 {
        return Err(file_err(
            config,
            format!("--id {id}: the parties are 0, 1 and 2"),
        ));
    }
    let dir = config.parent().unwrap_or(Path::new("."));
    let resolve = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            dir.join(p)
        }
    };
    let mut certs = Vec::new();
    for i in 0..3u8 {
        let path = resolve(&dep.entry(i).certificate);
        certs.push(
            std::fs::read(&path)
                .map_err(|e| file_err(&path, format!("certificate of party {i}: {e}")))?,
        );
    }
    let key_path = key
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dir.join(format!("party{}.key.der", id.0)));
    let key =
        std::fs::read(&key_path).map_err(|e| file_err(&key_path, format!("key of {id}: {e}")))?;
    let job = &dep.job;
    let model = crate::models::by_name(&job.model).expect("checked");
    let (data_owner, model_owner) = (PartyId(job.data_owner), PartyId(job.model_owner));
    // What this party owns.
    let weights = if id == model_owner {
        let path = job
            .weights
            .as_ref()
            .map(|p| resolve(p))
            .unwrap_or_else(|| crate::models::default_weights_path(&job.model));
        Some(weights_file::load(&path, &model)?.0)
    } else {
        None
    };
    let fp = FixedPoint::default();
    let data = if id == data_owner {
        let path = job
            .data
            .as_ref()
            .map(|p| resolve(p))
            .unwrap_or_else(default_mnist_path);
        Some(Mnist::load(
            &path,
            Split::Test,
            job.offset.unwrap_or(0),
            job.samples,
        )?)
    } else {
        None
    };
    let mut shapes = Vec::new();
    for start in (0..job.samples).step_by(job.batch) {
        let mut s = vec![job.batch.min(job.samples - start)];
        s.extend(&model.input);
        shapes.push(s);
    }
    let batches = match &data {
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
    let meter = Meter::new(3);
    let quic_cfg = QuicConfig {
        me: id,
        addrs: (0..3).map(|i| dep.entry(i).address).collect(),
        identity: Identity {
            cert: certs[id.index()].clone(),
            key,
        },
        certs,
        connect_timeout: Duration::from_secs(job.connect_timeout.unwrap_or(30)),
    };
    tracing::info!(party = %id, name = %server_name(id), "connecting to the other parties");
    let (endpoint, node) = QuicNode::start(quic_cfg, &meter)?;
    let config_p = PartyConfig {
        recv_timeout: Duration::from_secs(job.timeout.unwrap_or(120)),
        fixed: fp,
    };
    let source = job.seed.map_or(SeedSource::Os, SeedSource::Fixed);
    let model_run = match job.protocol.as_str() {
        "pond" => model.pool_before_relu().without_argmax(),
        _ => model.pool_before_relu(),
    };
    let protocol = job.protocol.clone();
    let t0 = Instant::now();
    let result: Result<(Outputs, MeterSnapshot), DeployError> =
        actix::System::new().block_on(async move {
            let cluster = LocalCluster::with_endpoints(vec![endpoint], meter.clone(), config_p);
            let out = async {
                cluster.setup(1, source).await?;
                let owners = (data_owner, model_owner);
                let job = match protocol.as_str() {
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
                let mut outs = cluster.run("infer", vec![job]).await?;
                Ok::<_, DeployError>((outs.remove(0).value, meter.snapshot()))
            }
            .await;
            cluster.stop();
            out
        });
    let wire = node.wire_bytes().iter().map(|(_, b)| b).sum();
    node.shutdown();
    let (outputs, traffic) = result?;
    let predictions: Option<Vec<usize>> =
        data.as_ref().map(|_| outputs.iter().map(|o| o.1).collect());
    Ok(PartyReport {
        party: id.0,
        accuracy: predictions
            .as_ref()
            .zip(data.as_ref())
            .map(|(p, d)| accuracy(p, &d.labels)),
        predictions,
        bytes_sent: traffic.total_bytes(),
        messages_sent: traffic.total_messages(),
        rounds: traffic.rounds,
        quic_wire_bytes: wire,
        wall_seconds: t0.elapsed().as_secs_f64(),
    })
}
