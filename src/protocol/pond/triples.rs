//! Pond's masked tensors and Beaver triples from the crypto producer
//! (tf-encrypted `_mask_private`, `_mul_masked_masked`, `OnlineTripleSource`).
//!
//! Masking x: the producer's mask a = a0 + a1 has a0 derived from the P0-P2 seed and a1 from the
//! P1-P2 seed, so no mask share travels; server j opens α = x - a by sending α_j = x_j - a_j to
//! the other server. The mask is memoised on the tensor, so a tensor used in several products
//! (x² in x⁴ and x⁶, a weight across batches) is masked once.
//!
//! A bilinear op B (elementwise product, matmul, conv2d) of x = α + a and y = β + b:
//! the producer computes c = B(a, b), derives c0 from the P0-P2 seed and sends c1 = c - c0 to
//! server 1; server j outputs z_j = B(α, [j = 0]β + b_j) + B(a_j, β) + c_j, whose sum is
//! B(α, β) + B(α, b) + B(a, β) + B(a, b) = B(x, y).

use super::PondTensor;
use crate::channel::{Ctx, P0, P1, P2, ProtocolError};
use crate::fixed::truncate_share;
use crate::protocol::product_frac;
use crate::ring::RingTensor;
use std::rc::Rc;

/// A memoised mask: on a server its mask share and the opened masked value; on the producer
/// the whole mask.
#[derive(Clone)]
pub(crate) enum Mask {
    Server {
        a: RingTensor,
        alpha: RingTensor,
    },
    Producer {
        a: RingTensor,
    },
    /// Being masked by an operation that has not finished: a concurrent branch that needs the
    /// same tensor must not mask it again (the parties could pick different branches).
    Pending,
}

/// Mask every tensor of `xs` that is not masked yet, all in one round.
async fn mask_all(ctx: &Ctx, xs: &[&PondTensor]) -> Result<(), ProtocolError> {
    let mut todo: Vec<&PondTensor> = Vec::new();
    if xs
        .iter()
        .any(|x| matches!(*x.mask.borrow(), Some(Mask::Pending)))
    {
        return Err(ProtocolError::Unsupported {
            op: ctx.path().to_string(),
            reason: "an operand is being masked by a concurrent branch: mask shared operands before forking".into(),
        });
    }
    for x in xs {
        if x.mask.borrow().is_none() && !todo.iter().any(|t| Rc::ptr_eq(&t.mask, &x.mask)) {
            todo.push(x);
        }
    }
    if todo.is_empty() {
        return Ok(());
    }
    let ctx = ctx.child("mask");
    let me = ctx.me();
    if me == P2 {
        for x in todo {
            let a0 = RingTensor::random(&x.shape, &mut ctx.prg_with(P0));
            let a1 = RingTensor::random(&x.shape, &mut ctx.prg_with(P1));
            *x.mask.borrow_mut() = Some(Mask::Producer { a: a0.add(&a1) });
        }
        return Ok(());
    }
    for x in &todo {
        *x.mask.borrow_mut() = Some(Mask::Pending);
    }
    let other = if me == P0 { P1 } else { P0 };
    let mut mine = Vec::with_capacity(todo.len());
    for x in &todo {
        let a = RingTensor::random(&x.shape, &mut ctx.prg_with(P2));
        let alpha = x.share.as_ref().expect("servers hold shares").sub(&a);
        ctx.send(other, &alpha)?;
        mine.push((a, alpha));
    }
    for (x, (a, mut alpha)) in todo.into_iter().zip(mine) {
        alpha.add_assign(&ctx.recv::<RingTensor>(other, &x.shape).await?);
        *x.mask.borrow_mut() = Some(Mask::Server { a, alpha });
    }
    Ok(())
}

/// B(x, y) by a Beaver triple, truncated if both operands are fractional.
pub(super) async fn beaver(
    ctx: &Ctx,
    x: &PondTensor,
    y: &PondTensor,
    out_shape: &[usize],
    op: impl Fn(&RingTensor, &RingTensor) -> RingTensor,
) -> Result<PondTensor, ProtocolError> {
    mask_all(ctx, &[x, y]).await?;
    let (frac, bits) = product_frac(x.frac, y.frac, ctx.fixed().frac_bits);
    let tctx = ctx.child("triple");
    let me = ctx.me();
    let mx = x.mask.borrow().clone().expect("masked");
    let my = y.mask.borrow().clone().expect("masked");
    let share = match (mx, my) {
        (Mask::Producer { a }, Mask::Producer { a: b }) => {
            let c = op(&a, &b);
            let c0 = RingTensor::random(out_shape, &mut tctx.prg_with(P0));
            tctx.send(P1, &c.sub(&c0))?;
            None
        }
        (Mask::Server { a, alpha }, Mask::Server { a: b, alpha: beta }) => {
            let c = if me == P0 {
                RingTensor::random(out_shape, &mut tctx.prg_with(P2))
            } else {
                tctx.recv(P2, &out_shape.to_vec()).await?
            };
            let right = if me == P0 { beta.add(&b) } else { b };
            let mut z = op(&alpha, &right);
            z.add_assign(&op(&a, &beta));
            z.add_assign(&c);
            Some(if bits > 0 {
                truncate_share(&z, bits, me.index())
            } else {
                z
            })
        }
        _ => unreachable!("masks are complete after mask_all and all of the party's own kind"),
    };
    Ok(PondTensor::new(out_shape, frac, share))
}
