//! The SecureNN paper's theoretical costs per operation (Wagh, Gupta, Chandran, PETS 2019,
//! Tables 1 and 2, with ℓ = 64 and one byte per Z_67 element, as its code counts them), for
//! putting beside what a run measured.

/// Bytes and rounds the paper gives for one call of operation `name` with the shape it recorded
/// (see [`crate::channel::Ctx::shape`]); `None` where the paper has no figure for the operation.
///
/// | op | shape | rounds | bytes |
/// |---|---|---|---|
/// | `matmul`, `conv2d` (im2col) | m×n×v | 2 | 8(2mn + 2nv + mv) |
/// | `private_compare` | n | 1 | 128n |
/// | `share_convert` | n | 4 | 304n |
/// | `compute_msb` | n | 5 | 360n |
/// | `drelu` | n | 8 | 664n |
/// | `relu` (DReLU then the product) | n | 10 | 704n |
/// | `select_share` | n | 2 | 40n |
/// | `maxpool`, `argmax` over windows of k | outputs×k | 9(k−1) | 744(k−1)·outputs |
/// | `step`, `level` (one comparison of a maximum) | n | 9 | 744n |
/// | `dmaxpool` over windows of k | outputs×k | 2 | 16(k+1)·outputs |
/// | `division` of l_D bits | n×l_D | 10·l_D | 704·l_D·n |
pub fn paper_cost(name: &str, shape: &[u64]) -> Option<(u64, u64)> {
    let n: u64 = shape.iter().product();
    let per_elt = |bytes: u64, rounds: u64| Some((bytes * n, rounds));
    match (name, shape) {
        ("matmul" | "conv2d", &[m, k, v]) => Some((8 * (2 * m * k + 2 * k * v + m * v), 2)),
        ("private_compare", _) => per_elt(128, 1),
        ("share_convert", _) => per_elt(304, 4),
        ("compute_msb", _) => per_elt(360, 5),
        ("drelu", _) => per_elt(664, 8),
        ("relu", _) => per_elt(704, 10),
        ("select_share", _) => per_elt(40, 2),
        ("step" | "level", _) => per_elt(744, 9),
        ("maxpool" | "argmax", &[outputs, k]) if k > 0 => {
            Some((744 * (k - 1) * outputs, 9 * (k - 1)))
        }
        ("dmaxpool", &[outputs, k]) => Some((16 * (k + 1) * outputs, 2)),
        ("division", &[elements, bits]) => Some((704 * bits * elements, 10 * bits)),
        _ => None,
    }
}

/// `100x784x128` as numbers.
pub fn parse_shape(s: &str) -> Option<Vec<u64>> {
    s.split('x').map(|d| d.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_two_rows() {
        // FC 784×128 at batch 1 (the paper's network A, first layer): 1 619 200 B.
        assert_eq!(paper_cost("matmul", &[1, 784, 128]), Some((1_619_200, 2)));
        // ReLU over 128: 90 112 B; maxpool 2×2 to 2304 outputs: 5 142 528 B; argmax over 10.
        assert_eq!(paper_cost("relu", &[1, 128]), Some((90_112, 10)));
        assert_eq!(paper_cost("maxpool", &[2304, 4]), Some((5_142_528, 27)));
        assert_eq!(paper_cost("argmax", &[1, 10]), Some((6_696, 81)));
        assert_eq!(paper_cost("division", &[1, 13]), Some((9_152, 130)));
        assert_eq!(paper_cost("mask", &[3]), None);
        assert_eq!(parse_shape("100x784x128"), Some(vec![100, 784, 128]));
        assert_eq!(parse_shape("a"), None);
    }
}
