//! The approximate softmax of SecureML and SecureNN (reference §2.2, §3.9): ASM(u)_i =
//! ReLU(u_i) / Σ_j ReLU(u_j), the division by Algorithm 8, and the error it sends back.
//!
//! The error of the logits is δ = ASM(u) − y for one-hot labels y: the gradient of the
//! cross-entropy with softmax replaced by ASM, as SecureML's training and the public SecureNN
//! code compute it (neither multiplies by ReLU'(u) at the output). Where every ReLU(u_j) of an
//! image is 0, Algorithm 8 divides 0 by 0 and returns its largest quotient, 1 − 2^-f, for every
//! class; the plaintext twin does the same, bit for bit.

use super::backprop::sum_rows;
use crate::channel::{Ctx, ProtocolError};
use crate::protocol::Trainable;
use crate::ring::Gather;

/// ASM(u) for logits `u` [batch, classes]; `is_relu` says `u` is already ReLU'd (the model
/// ends with the ASM's ReLU, as in the paper's layout).
pub async fn asm<P: Trainable>(
    p: &P,
    ctx: &Ctx,
    u: &P::Tensor,
    is_relu: bool,
) -> Result<P::Tensor, ProtocolError> {
    let s = p.shape(u).to_vec();
    ctx.shape(&s);
    let r = match is_relu {
        true => u.clone(),
        false => p.relu(ctx, u).await?,
    };
    let (b, c) = (s[0], s[1]);
    let total = sum_rows(p, &p.reshape(&p.gather(&r, &transpose(b, c)), &[c, b]));
    // One ulp more in the denominator: Algorithm 8 needs x < y (a single positive class has
    // x = y), and an image whose every ReLU(u_j) is 0 gets ASM = 0 (so δ = −y lifts its label)
    // instead of Algorithm 8's 0/0 = 1 − 2^-f for every class (δ = 1 − y, which pushes the
    // other classes further below 0 and keeps the image dead).
    let total = p.add_public(ctx, &total, ctx.fixed().ulp())?;
    let per_class = p.gather(
        &total,
        &Gather {
            shape: s.clone(),
            index: (0..b * c).map(|i| i / c).collect(),
        },
    );
    p.divide(ctx, &r, &per_class).await
}

/// A [b, c] tensor transposed to [c, b] by a gather.
fn transpose(b: usize, c: usize) -> Gather {
    Gather {
        shape: vec![c, b],
        index: (0..b * c).map(|i| (i % b) * c + i / b).collect(),
    }
}

/// δ = ASM(u) − y.
pub async fn asm_error<P: Trainable>(
    p: &P,
    ctx: &Ctx,
    u: &P::Tensor,
    y: &P::Tensor,
    is_relu: bool,
) -> Result<P::Tensor, ProtocolError> {
    let a = asm(p, ctx, u, is_relu).await?;
    p.sub(ctx, &a, y)
}
