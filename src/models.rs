//! Built-in model architectures: a small demo model and the SecureNN paper's networks A-D
//! (reference §2.2 and Appendix A), in their default layout (ReLU before pooling, as the models
//! define them, no ReLU after the last layer).

use crate::nn::Sequential;
use crate::ring::Padding;

/// Names accepted by `--model`.
pub const BUILTIN: &[&str] = &["small", "a", "b", "c", "d"];

/// A small dense + conv model for 28×28×1 images: conv 5 filters 5×5 stride 2 → ReLU → 2×2
/// average pool → dense 32 → ReLU → dense 10. Runs on every backend (no max pooling).
pub fn small() -> Sequential {
    Sequential::new(&[28, 28, 1])
        .conv2d(5, 5, 2, Padding::Valid)
        .relu()
        .avgpool(2)
        .flatten()
        .dense(32)
        .relu()
        .dense(10)
}

/// Network A (SecureML): FC 784→128, ReLU, FC 128→128, ReLU, FC 128→10.
pub fn network_a() -> Sequential {
    Sequential::new(&[28, 28, 1])
        .flatten()
        .dense(128)
        .relu()
        .dense(128)
        .relu()
        .dense(10)
}

/// Network B (MiniONN): conv 16 5×5 → ReLU → maxpool 2 → conv 16 5×5 → ReLU → maxpool 2 →
/// FC 256→100 → ReLU → FC 100→10 (stride 1, no padding: 28→24→12→8→4).
pub fn network_b() -> Sequential {
    Sequential::new(&[28, 28, 1])
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
}

/// Network C (LeNet): conv 20 5×5 → ReLU → maxpool 2 → conv 50 5×5 → ReLU → maxpool 2 →
/// FC 800→500 → ReLU → FC 500→10.
pub fn network_c() -> Sequential {
    Sequential::new(&[28, 28, 1])
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
}

/// Network D (Chameleon) as the paper describes it: conv 5 filters 5×5 stride 2 SAME (14×14×5 =
/// 980) → ReLU → FC 980→100 → ReLU → FC 100→10.
pub fn network_d() -> Sequential {
    Sequential::new(&[28, 28, 1])
        .conv2d(5, 5, 2, Padding::Same)
        .relu()
        .flatten()
        .dense(100)
        .relu()
        .dense(10)
}

/// The built-in model called `name`.
pub fn by_name(name: &str) -> Option<Sequential> {
    match name {
        "small" => Some(small()),
        "a" => Some(network_a()),
        "b" => Some(network_b()),
        "c" => Some(network_c()),
        "d" => Some(network_d()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_parameter_counts_match_the_paper() {
        // Weights only (Appendix A): A 118,016; B 33,400; C 430,500; D 99,125.
        let weights = |m: Sequential| -> usize {
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
            assert_eq!(by_name(m).unwrap().output_shape().unwrap(), vec![10]);
        }
    }
}
