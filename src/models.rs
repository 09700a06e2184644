//! Built-in model architectures.

use crate::nn::Sequential;
use crate::ring::Padding;

/// Names accepted by `--model`.
pub const BUILTIN: &[&str] = &["small"];

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

/// The built-in model called `name`.
pub fn by_name(name: &str) -> Option<Sequential> {
    match name {
        "small" => Some(small()),
        _ => None,
    }
}
