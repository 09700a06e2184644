//! Weight files: safetensors (F32), validated on load against the model's tensor names and
//! shapes, with the training facts in the header's metadata.

use super::model::{Model, ModelError, Weights};
use crate::fixed::FixedPoint;
use ndarray::{ArrayD, IxDyn};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::Path;

/// Problems with a weight file, naming the file and the tensor. Each message holds its cause:
/// none is chained as a `source` too (that would print it twice in `{e:#}`).
#[derive(Debug, thiserror::Error)]
pub enum WeightFileError {
    #[error("cannot read weights from {path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    #[error("{path} is not a safetensors file: {reason}")]
    Format { path: String, reason: String },
    #[error("{path}: tensor {tensor} has dtype {dtype}, expected F32")]
    Dtype {
        path: String,
        tensor: String,
        dtype: String,
    },
    #[error("{path}: {error}")]
    Model { path: String, error: ModelError },
    /// A weight too large for the fixed-point encoding (the value itself is not shown).
    #[error(
        "{path}: tensor {tensor} holds a value outside the fixed-point range ±{max} at \
         {frac_bits} fractional bits"
    )]
    Range {
        path: String,
        tensor: String,
        max: f64,
        frac_bits: u32,
    },
    #[error("{path} exists; pass --force to overwrite it")]
    Exists { path: String },
}

/// Write `weights` as F32 safetensors with `metadata` (refuses to overwrite unless `force`).
pub fn save(
    path: &Path,
    weights: &Weights,
    metadata: HashMap<String, String>,
    force: bool,
) -> Result<(), WeightFileError> {
    let p = path.display().to_string();
    if path.exists() && !force {
        return Err(WeightFileError::Exists { path: p });
    }
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = weights
        .tensors
        .iter()
        .map(|(name, t)| {
            let data = t.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect();
            (name.clone(), t.shape().to_vec(), data)
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(n, s, d)| Ok((n.clone(), TensorView::new(Dtype::F32, s.clone(), d)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(|e| WeightFileError::Format {
            path: p.clone(),
            reason: e.to_string(),
        })?;
    let buf =
        safetensors::serialize(views, Some(metadata)).map_err(|e| WeightFileError::Format {
            path: p.clone(),
            reason: e.to_string(),
        })?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|cause| WeightFileError::Io {
            path: p.clone(),
            cause,
        })?;
    }
    std::fs::write(path, buf).map_err(|cause| WeightFileError::Io { path: p, cause })
}

/// Read a weight file and check it against `model`: every tensor the model needs, with its shape,
/// F32, finite, and nothing else. Returns the weights and the file's metadata.
pub fn load(
    path: &Path,
    model: &Model,
) -> Result<(Weights, HashMap<String, String>), WeightFileError> {
    let p = path.display().to_string();
    if path.is_dir() {
        return Err(WeightFileError::Format {
            path: p,
            reason: "it is a directory".into(),
        });
    }
    let buf = std::fs::read(path).map_err(|cause| WeightFileError::Io {
        path: p.clone(),
        cause,
    })?;
    parse(p, &buf, model)
}

/// The bundled trained weights of built-in model `name` (built into the binary), checked as
/// [`load`] checks a file.
pub fn load_bundled(
    name: &str,
    model: &Model,
) -> Result<(Weights, HashMap<String, String>), WeightFileError> {
    let label = label(None, name);
    let buf = crate::models::bundled_weights(name).ok_or_else(|| WeightFileError::Format {
        path: label.clone(),
        reason: format!("model {name} has no bundled weights; give a weight file"),
    })?;
    parse(label, buf, model)
}

/// The weight file at `path`, or built-in model `name`'s bundled weights if there is none.
pub fn load_or_bundled(
    path: Option<&Path>,
    name: &str,
    model: &Model,
) -> Result<(Weights, HashMap<String, String>), WeightFileError> {
    match path {
        Some(p) => load(p, model),
        None => load_bundled(name, model),
    }
}

/// Parse and check safetensors bytes; `p` names them in errors.
fn parse(
    p: String,
    buf: &[u8],
    model: &Model,
) -> Result<(Weights, HashMap<String, String>), WeightFileError> {
    let st = SafeTensors::deserialize(buf).map_err(|e| WeightFileError::Format {
        path: p.clone(),
        reason: diagnose(buf, &e),
    })?;
    let (_, meta) = SafeTensors::read_metadata(buf).map_err(|e| WeightFileError::Format {
        path: p.clone(),
        reason: e.to_string(),
    })?;
    let mut tensors = Vec::new();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    for name in names {
        let t = st.tensor(&name).map_err(|e| WeightFileError::Format {
            path: p.clone(),
            reason: e.to_string(),
        })?;
        if t.dtype() != Dtype::F32 {
            return Err(WeightFileError::Dtype {
                path: p,
                tensor: name,
                dtype: t.dtype().to_string(),
            });
        }
        let data: Vec<f64> = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")) as f64)
            .collect();
        let a = ArrayD::from_shape_vec(IxDyn(t.shape()), data).map_err(|e| {
            WeightFileError::Format {
                path: p.clone(),
                reason: e.to_string(),
            }
        })?;
        tensors.push((name, a));
    }
    let mut weights = Weights { tensors };
    let model_err = |error| WeightFileError::Model {
        path: p.clone(),
        error,
    };
    model.validate(&weights).map_err(model_err)?;
    // The model's order (kernel, bias, layer by layer), whatever the file's.
    let order = model.param_shapes().map_err(model_err)?;
    weights
        .tensors
        .sort_by_key(|(n, _)| order.iter().position(|(o, _)| o == n));
    Ok((weights, meta.metadata().clone().unwrap_or_default()))
}

/// Why safetensors refused `buf`, in words where its own error is vague: the file's length
/// against its header's length and the tensors' data offsets (trailing bytes are reported by the
/// safetensors crate as "incomplete metadata").
fn diagnose(buf: &[u8], e: &safetensors::SafeTensorError) -> String {
    let Some(len) = buf.get(..8) else {
        return format!("{} bytes, shorter than the 8-byte header length", buf.len());
    };
    let n = u64::from_le_bytes(len.try_into().expect("8 bytes"));
    let rest = (buf.len() - 8) as u64;
    if n > rest {
        return format!("the header length says {n} bytes but only {rest} bytes follow it");
    }
    let Ok(serde_json::Value::Object(header)) = serde_json::from_slice(&buf[8..8 + n as usize])
    else {
        return format!("the {n}-byte header is not a JSON object ({e})");
    };
    let end = header
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .filter_map(|(_, t)| t.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    let data = rest - n;
    if data > end {
        format!("{} trailing bytes after the last tensor", data - end)
    } else if data < end {
        format!("truncated: the tensors need {end} bytes of data, the file has {data}")
    } else {
        e.to_string()
    }
}

/// Check that every weight encodes in `fixed` (|value| below 2^(63 - frac_bits)); `label` names
/// the file (or the bundled weights) in the error, which names the tensor, not the value.
pub fn check_fixed(
    label: &str,
    weights: &Weights,
    fixed: FixedPoint,
) -> Result<(), WeightFileError> {
    for (name, t) in &weights.tensors {
        if t.iter().any(|&v| fixed.encode(v).is_err()) {
            return Err(WeightFileError::Range {
                path: label.to_string(),
                tensor: name.clone(),
                max: fixed.max_value(),
                frac_bits: fixed.frac_bits,
            });
        }
    }
    Ok(())
}

/// What names weights in messages: the file, or the bundled weights of model `name`.
pub fn label(path: Option<&Path>, name: &str) -> String {
    path.map_or_else(
        || format!("the bundled weights of model {name}"),
        |p| p.display().to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models;

    #[test]
    fn round_trip_and_validation_errors_name_the_tensor() {
        let dir = std::env::temp_dir().join(format!("securenn-wf-{}", std::process::id()));
        let path = dir.join("a.safetensors");
        let a = models::network_a();
        let w = a.init_weights(1).unwrap();
        save(
            &path,
            &w,
            HashMap::from([("model".into(), "a".into())]),
            true,
        )
        .unwrap();
        assert!(matches!(
            save(&path, &w, HashMap::new(), false),
            Err(WeightFileError::Exists { .. })
        ));
        let (back, meta) = load(&path, &a).unwrap();
        assert_eq!(meta["model"], "a");
        for ((n1, t1), (n2, t2)) in w.tensors.iter().zip(&back.tensors) {
            assert_eq!(n1, n2);
            assert!(t1.iter().zip(t2.iter()).all(|(x, y)| (x - y).abs() < 1e-6));
        }
        // A file for another model: the error names the first tensor that does not fit.
        let e = load(&path, &models::network_d()).unwrap_err().to_string();
        assert!(e.contains("kernel") && e.contains("expected shape"), "{e}");
        // The right names and shapes in the wrong dtype.
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = w
            .tensors
            .iter()
            .map(|(n, t)| {
                (
                    n.clone(),
                    t.shape().to_vec(),
                    t.iter().flat_map(|v| v.to_le_bytes()).collect(),
                )
            })
            .collect();
        let views: Vec<(String, TensorView)> = bytes
            .iter()
            .map(|(n, s, d)| {
                (
                    n.clone(),
                    TensorView::new(Dtype::F64, s.clone(), d).unwrap(),
                )
            })
            .collect();
        std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
        let e = load(&path, &a).unwrap_err().to_string();
        assert!(e.contains("dtype F64") && e.contains(".dense."), "{e}");
        // Trailing bytes after a valid file.
        let mut good = std::fs::read(&path).unwrap();
        good.extend([0u8; 7]);
        std::fs::write(&path, &good).unwrap();
        let e = load(&path, &a).unwrap_err().to_string();
        assert!(e.contains("7 trailing bytes after the last tensor"), "{e}");
        // Not a safetensors file at all.
        std::fs::write(&path, b"hello").unwrap();
        assert!(matches!(
            load(&path, &a),
            Err(WeightFileError::Format { .. })
        ));
        std::fs::remove_dir_all(&dir).ok();
    }
}
