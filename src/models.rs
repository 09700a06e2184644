//! Built-in model architectures: the SecureNN paper's networks A-D (reference §2.2 and
//! Appendix A) and the variant of D the paper's code timed, in their default layout (ReLU before
//! pooling, as the models define them, no ReLU after the last layer; see
//! [`crate::nn::Model::paper_layout`] for the paper's cost layout).

use crate::nn::Model;
use crate::ring::Padding;

/// Names accepted by `--model`.
pub const BUILTIN: &[&str] = &[
    "a",
    "b",
    "c",
    "d",
    "d-as-benchmarked",
    "b-avg",
    "c-avg",
    "d-as-benchmarked-avg",
];

/// Network A (SecureML): FC 784→128, ReLU, FC 128→128, ReLU, FC 128→10, argmax.
pub fn network_a() -> Model {
    Model::new(&[28, 28, 1])
        .flatten()
        .dense(128)
        .relu()
        .dense(128)
        .relu()
        .dense(10)
        .argmax()
}

/// Network B (MiniONN): conv 16 5×5 → ReLU → maxpool 2 → conv 16 5×5 → ReLU → maxpool 2 →
/// FC 256→100 → ReLU → FC 100→10 (stride 1, no padding: 28→24→12→8→4), argmax.
pub fn network_b() -> Model {
    Model::new(&[28, 28, 1])
        .conv2d(16, 5, 1, Padding::Valid)
        .relu()
        .maxpool(2)
        .conv2d(16, 5, 1, Padding::Valid)
        .relu()
        .maxpool(2)
        .flatten()
        .dense(100)
        .relu()
        .dense(10)
        .argmax()
}

/// Network C (LeNet): conv 20 5×5 → ReLU → maxpool 2 → conv 50 5×5 → ReLU → maxpool 2 →
/// FC 800→500 → ReLU → FC 500→10, argmax.
pub fn network_c() -> Model {
    Model::new(&[28, 28, 1])
        .conv2d(20, 5, 1, Padding::Valid)
        .relu()
        .maxpool(2)
        .conv2d(50, 5, 1, Padding::Valid)
        .relu()
        .maxpool(2)
        .flatten()
        .dense(500)
        .relu()
        .dense(10)
        .argmax()
}

/// Network D (Chameleon) as the paper describes it: conv 5 filters 5×5 stride 2 SAME (14×14×5 =
/// 980) → ReLU → FC 980→100 → ReLU → FC 100→10, argmax.
pub fn network_d() -> Model {
    Model::new(&[28, 28, 1])
        .conv2d(5, 5, 2, Padding::Same)
        .relu()
        .flatten()
        .dense(100)
        .relu()
        .dense(10)
        .argmax()
}

/// Network D as the paper's code timed it (reference §2.2): conv 5 filters 5×5 stride 1 VALID →
/// ReLU → 2×2 maxpool (24→12: 720 values) → FC "980"→100 (the code reads past the 720; here
/// the 260 extra inputs are zeros) → ReLU → FC 100→10, argmax.
pub fn network_d_as_benchmarked() -> Model {
    Model::new(&[28, 28, 1])
        .conv2d(5, 5, 1, Padding::Valid)
        .relu()
        .maxpool(2)
        .flatten()
        .pad_to(980)
        .dense(100)
        .relu()
        .dense(10)
        .argmax()
}

/// The built-in model called `name` (a `-avg` suffix swaps max pooling for average pooling, for
/// Pond).
pub fn by_name(name: &str) -> Option<Model> {
    let (base, avg) = match name.strip_suffix("-avg") {
        Some(b) => (b, true),
        None => (name, false),
    };
    let m = match base {
        "a" => network_a(),
        "b" => network_b(),
        "c" => network_c(),
        "d" => network_d(),
        "d-as-benchmarked" => network_d_as_benchmarked(),
        _ => return None,
    };
    if avg {
        m.layers()
            .any(|l| l.is_max_pool())
            .then(|| m.with_avg_pooling())
    } else {
        Some(m)
    }
}

/// The bundled trained weights of a built-in model (safetensors), built into the binary from
/// `models/<name>.safetensors` in the repository, so that a copied binary needs no source tree.
/// Cargo rebuilds the binary when a file changes (`securenn train --force` rewrites them).
pub fn bundled_weights(name: &str) -> Option<&'static [u8]> {
    Some(match name {
        "a" => include_bytes!("../models/a.safetensors"),
        "b" => include_bytes!("../models/b.safetensors"),
        "b-avg" => include_bytes!("../models/b-avg.safetensors"),
        "c" => include_bytes!("../models/c.safetensors"),
        "c-avg" => include_bytes!("../models/c-avg.safetensors"),
        "d" => include_bytes!("../models/d.safetensors"),
        "d-as-benchmarked" => include_bytes!("../models/d-as-benchmarked.safetensors"),
        "d-as-benchmarked-avg" => include_bytes!("../models/d-as-benchmarked-avg.safetensors"),
        _ => return None,
    })
}

/// Where `securenn train` writes a built-in model's weights by default: `models/<name>.safetensors`
/// in the source tree the binary was built from, if that tree is still there (a copied binary has
/// none, and must be given `--out`).
pub fn source_weights_path(name: &str) -> Option<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    dir.is_dir()
        .then(|| dir.join(format!("{name}.safetensors")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_parameter_counts_match_the_paper() {
        // Weights only (Appendix A): A 118,016; B 33,400; C 430,500; D 99,125.
        let weights = |m: Model| -> usize {
            m.param_shapes()
                .unwrap()
                .iter()
                .filter(|(n, _)| n.ends_with("kernel"))
                .map(|(_, s)| s.iter().product::<usize>())
                .sum()
        };
        assert_eq!(weights(network_a()), 118_016);
        assert_eq!(weights(network_b()), 33_400);
        assert_eq!(weights(network_c()), 430_500);
        assert_eq!(weights(network_d()), 99_125);
        for m in BUILTIN {
            let model = by_name(m).unwrap();
            assert_eq!(
                model.without_argmax().output_shape().unwrap(),
                vec![10],
                "{m}"
            );
        }
        assert!(by_name("a-avg").is_none() && by_name("z").is_none());
        // Every built-in model has bundled weights that fit it.
        for m in BUILTIN {
            let (w, meta) = crate::nn::weights_file::load_bundled(m, &by_name(m).unwrap())
                .unwrap_or_else(|e| panic!("{m}: {e}"));
            assert!(!w.tensors.is_empty() && meta.contains_key("model"), "{m}");
        }
        assert!(bundled_weights("z").is_none());
        // The paper's layout: maxpool before ReLU, a ReLU after the last dense layer.
        let p = network_b().paper_layout();
        use crate::nn::Layer::*;
        let layers: Vec<_> = p.layers().cloned().collect();
        assert!(matches!(layers[1], MaxPool { .. }) && layers[2] == Relu);
        assert_eq!(&layers[layers.len() - 2..], &[Relu, Argmax]);
        assert!(p.is_chain(), "the swaps keep a chain");
    }
}
