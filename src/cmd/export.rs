//! `securenn export`: a built-in model and its weights as a standard ONNX file.

use super::*;
use securenn::nn::weights_file;
use std::path::Path;

#[derive(clap::Args)]
pub(crate) struct ExportArgs {
    /// Built-in model to export.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(securenn::models::BUILTIN))]
    model: String,
    /// The ONNX file to write.
    #[arg(long, value_name = "FILE.onnx")]
    out: PathBuf,
    /// Weights (safetensors, as `securenn train` writes them); default: the model's trained
    /// weights, built into the binary.
    #[arg(long, value_name = "FILE.safetensors")]
    weights: Option<PathBuf>,
    /// Overwrite --out if it exists.
    #[arg(long)]
    force: bool,
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

/// The bundled weights in the source tree (`models/*.safetensors`, built into the binary) are
/// never written, `--force` or not; nor is the `--weights` file being read.
fn refuse_protected(out: &Path, weights: Option<&Path>) -> Result<()> {
    let Some(target) = resolved(out) else {
        return Ok(());
    };
    if let Some(w) = weights
        && resolved(w).as_ref() == Some(&target)
    {
        bail!(
            "--out {} is the --weights file being exported; give another --out",
            out.display()
        );
    }
    let models_dir = securenn::models::source_weights_path("a")
        .and_then(|p| p.parent().and_then(|d| d.canonicalize().ok()));
    let in_models = models_dir.is_some_and(|d| target.parent() == Some(d.as_path()));
    let bundled = securenn::models::BUILTIN.iter().any(|name| {
        securenn::models::source_weights_path(name).and_then(|p| resolved(&p))
            == Some(target.clone())
    });
    if bundled || (in_models && target.extension().is_some_and(|e| e == "safetensors")) {
        bail!(
            "{} is among the bundled weights of the source tree (models/*.safetensors, built \
             into the binary); export writes an ONNX file: give another --out",
            out.display()
        );
    }
    Ok(())
}

pub(crate) fn run(a: ExportArgs) -> Result<()> {
    refuse_protected(&a.out, a.weights.as_deref())?;
    check_output(&a.out, a.force)?;
    let model = securenn::models::by_name(&a.model).expect("clap checked the name");
    let (weights, _) = weights_file::load_or_bundled(a.weights.as_deref(), &a.model, &model)?;
    let weights_name = a.weights.as_ref().map_or_else(
        || "its bundled weights".to_string(),
        |p| p.display().to_string(),
    );
    let onnx = securenn::onnx::export(&model, &weights, &a.model)
        .with_context(|| format!("network {} with {weights_name}", a.model))?;
    // Read back as `infer --onnx` will: the same layers and weights, or say what differs.
    let back = securenn::onnx::import_model(&onnx, &a.model)
        .with_context(|| format!("re-importing the export of network {}", a.model))?;
    let same_layers = back.model.nodes == model.nodes;
    let same_weights = back.weights.tensors.len() == weights.tensors.len()
        && weights.tensors.iter().all(|(n, t)| {
            back.weights.get(n).is_some_and(|u| {
                u.shape() == t.shape()
                    && t.iter()
                        .zip(u)
                        .all(|(x, y)| (x - y).abs() <= x.abs() * f64::from(f32::EPSILON))
            })
        });
    onnx.write(&a.out)?;
    let size = std::fs::metadata(&a.out).map(|m| m.len()).unwrap_or(0);
    let g = &onnx.graph;
    let dims = |v: &securenn::onnx::ValueInfo| super::inspect::shape_text(v.shape.as_deref());
    let params: usize = g.initializers.iter().map(|(_, t)| t.numel()).sum();
    println!(
        "wrote {} ({size} bytes): network {} with {weights_name}, ONNX IR version {}, opset {}, \
         producer {} {}",
        a.out.display(),
        a.model,
        onnx.ir_version,
        securenn::onnx::export::OPSET,
        onnx.producer,
        onnx.producer_version
    );
    println!(
        "  input   {} {} (NCHW, float32)",
        g.inputs[0].name,
        dims(&g.inputs[0])
    );
    println!(
        "  output  {} {}: the logits; the argmax is not exported (importing adds it back)",
        g.outputs[0].name,
        dims(&g.outputs[0])
    );
    println!(
        "  nodes   {} ({})",
        g.nodes
            .iter()
            .map(|n| n.op_type.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        g.nodes.len()
    );
    println!(
        "  weights {params} values in {} initializers (float32)",
        g.initializers.len()
    );
    if same_layers && same_weights {
        println!(
            "re-imported: the same {} layers and weights (`securenn infer --onnx {}` runs it)",
            back.model.nodes.len(),
            a.out.display()
        );
    } else {
        eprintln!(
            "warning: re-imported, the file gives {}{}",
            if same_layers {
                "the same layers"
            } else {
                "other layers (the same function)"
            },
            if same_weights {
                " and the same weights"
            } else {
                " and other weights"
            }
        );
    }
    Ok(())
}
