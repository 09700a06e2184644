//! Polynomial activations as in Pond (tf-encrypted `pond.py`): ReLU approximated by an even
//! polynomial plus x/2, evaluated with x², x⁴ = x²·x², x⁶ = x²·x⁴ and x⁸ = x⁴·x⁴ so that every
//! operand is masked once (x⁸ reuses the mask of x⁴: three rounds in all).

use super::Protocol;
use crate::channel::{Ctx, ProtocolError};

/// tf-encrypted's shipped ReLU coefficients, fitted on [-9, 9] (PR #68, restored in #91):
/// (power, coefficient).
pub const TFE_RELU_9: [(u32, f64); 6] = [
    (0, 0.44015372000819103),
    (1, 0.5),
    (2, 0.11217537671414643),
    (4, -0.0013660836712429923),
    (6, 9.009136367360004e-06),
    (8, -2.1097433984e-08),
];

/// The [-3, 3] set tf-encrypted briefly shipped (commit 9a4f5d29): closer near 0, useless beyond 4.
pub const TFE_RELU_3: [(u32, f64); 6] = [
    (0, 0.146717906),
    (1, 0.5),
    (2, 0.336526130),
    (4, -0.036884259),
    (6, 0.002189220),
    (8, -0.000046140),
];

/// Evaluate Σ c·x^k for powers k in {0, 1, 2, 4, 6, 8}.
pub async fn poly_eval<P: Protocol>(
    p: &P,
    ctx: &Ctx,
    x: &P::Tensor,
    terms: &[(u32, f64)],
) -> Result<P::Tensor, ProtocolError> {
    if let Some(&(k, _)) = terms.iter().find(|(k, _)| ![0, 1, 2, 4, 6, 8].contains(k)) {
        return Err(ProtocolError::Unsupported {
            op: ctx.path().to_string(),
            reason: format!("power {k}: polynomials use powers 0, 1, 2, 4, 6 and 8"),
        });
    }
    ctx.shape(p.shape(x));
    let max = terms.iter().map(|t| t.0).max().unwrap_or(0);
    let mut powers: Vec<(u32, P::Tensor)> = vec![(1, x.clone())];
    if max >= 2 {
        let x2 = p.mul(&ctx.child("x2"), x, x).await?;
        powers.push((2, x2));
    }
    if max >= 4 {
        let x2 = powers[1].1.clone();
        let x4 = p.mul(&ctx.child("x4"), &x2, &x2).await?;
        powers.push((4, x4));
    }
    if max >= 6 {
        // x⁶ masks x⁴; x⁸ = x⁴·x⁴ then reuses that mask and needs only the producer's triple
        // share, so running them one after the other adds no round.
        let (x2, x4) = (powers[1].1.clone(), powers[2].1.clone());
        let x6 = p.mul(&ctx.child("x6"), &x2, &x4).await?;
        powers.push((6, x6));
        if max >= 8 {
            let x8 = p.mul(&ctx.child("x8"), &x4, &x4).await?;
            powers.push((8, x8));
        }
    }
    let mut acc: Option<P::Tensor> = None;
    let mut constant = 0.0;
    for &(k, c) in terms {
        if k == 0 {
            constant += c;
            continue;
        }
        let xk = &powers
            .iter()
            .find(|(j, _)| *j == k)
            .expect("power computed")
            .1;
        let term = p.mul_public(ctx, xk, c)?;
        acc = Some(match acc {
            None => term,
            Some(a) => p.add(ctx, &a, &term)?,
        });
    }
    let acc = match acc {
        Some(a) => a,
        None => p.mul_public(ctx, x, 0.0)?,
    };
    p.add_public(ctx, &acc, constant)
}
