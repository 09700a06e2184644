//! Per-party training checkpoints: at every epoch end each party writes its own part of the
//! weights (its shares on P0 and P1; nothing secret on P2, which holds no shares) to
//! `<dir>/party<j>-epoch<e>.ckpt`, mode 0600, written to a temporary file and renamed, so a
//! party killed while writing leaves the previous checkpoint intact. The two latest are kept:
//! parties killed at different moments can differ by one epoch, and on `--resume` they agree on
//! the latest epoch all of them have.
//!
//! A checkpoint names the job it belongs to (a digest of the public job parameters), so a
//! directory of another job is refused rather than resumed.

use crate::ring::RingTensor;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Format version, checked on load.
const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("checkpoint {path} is not a checkpoint of this version: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "checkpoint {path} belongs to another training job ({reason}); use another --checkpoint-dir or start without --resume"
    )]
    OtherJob { path: PathBuf, reason: String },
}

/// One tensor as a party holds it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SavedTensor {
    pub shape: Vec<usize>,
    pub frac: u32,
    pub part: Option<Vec<u64>>,
}

impl SavedTensor {
    pub fn ring(&self) -> Option<RingTensor> {
        self.part
            .as_ref()
            .map(|v| RingTensor::from_vec(&self.shape, v.clone()))
    }
}

/// What a party saves at an epoch end.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Checkpoint {
    pub version: u32,
    pub party: u8,
    /// Digest of the job's public parameters.
    pub job: String,
    /// Epochs completed.
    pub epoch: usize,
    pub params: Vec<SavedTensor>,
    /// Test accuracy after each completed epoch, where measured.
    pub test_accuracy: Vec<Option<f64>>,
}

impl Checkpoint {
    pub fn new(
        party: u8,
        job: &str,
        epoch: usize,
        params: Vec<SavedTensor>,
        test_accuracy: Vec<Option<f64>>,
    ) -> Self {
        Self {
            version: VERSION,
            party,
            job: job.to_string(),
            epoch,
            params,
            test_accuracy,
        }
    }
}

fn file(dir: &Path, party: u8, epoch: usize) -> PathBuf {
    dir.join(format!("party{party}-epoch{epoch}.ckpt"))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write `c` (mode 0600, atomically) and drop this party's checkpoints older than the previous
/// one.
pub fn save(dir: &Path, c: &Checkpoint) -> Result<PathBuf, CheckpointError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = file(dir, c.party, c.epoch);
    let tmp = path.with_extension("ckpt.tmp");
    let bytes = bincode::serde::encode_to_vec(c, bincode::config::standard()).map_err(|e| {
        CheckpointError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        }
    })?;
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp).map_err(io(&tmp))?;
        f.write_all(&bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    for (e, old) in epochs(dir, c.party)? {
        if e + 1 < c.epoch {
            std::fs::remove_file(&old).map_err(io(&old))?;
        }
    }
    Ok(path)
}

/// This party's checkpoints in `dir`: (epoch, path), oldest first.
pub fn epochs(dir: &Path, party: u8) -> Result<Vec<(usize, PathBuf)>, CheckpointError> {
    let prefix = format!("party{party}-epoch");
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(e) = name
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(".ckpt"))
            .and_then(|e| e.parse::<usize>().ok())
        {
            out.push((e, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Read this party's checkpoint of `epoch` for job `job`.
pub fn load(dir: &Path, party: u8, epoch: usize, job: &str) -> Result<Checkpoint, CheckpointError> {
    let path = file(dir, party, epoch);
    let bytes = std::fs::read(&path).map_err(io(&path))?;
    let corrupt = |reason: String| CheckpointError::Corrupt {
        path: path.clone(),
        reason,
    };
    let (c, _): (Checkpoint, usize) =
        bincode::serde::decode_from_slice(&bytes, bincode::config::standard())
            .map_err(|e| corrupt(e.to_string()))?;
    if c.version != VERSION {
        return Err(corrupt(format!(
            "version {}, expected {VERSION}",
            c.version
        )));
    }
    if c.party != party || c.epoch != epoch {
        return Err(corrupt(format!(
            "it says party {} epoch {}",
            c.party, c.epoch
        )));
    }
    if c.job != job {
        return Err(CheckpointError::OtherJob {
            path,
            reason: format!("job digest {} is not this job's {job}", c.job),
        });
    }
    Ok(c)
}
