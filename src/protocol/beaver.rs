//! Beaver products with triples from the helper: SecureNN's MatMul with PRF-derived triples
//! (Alg. 1 and its PRF optimisation, §3.2 of the reference) and Pond's masked tensors
//! (tf-encrypted `_mask_private`, `_mul_masked_masked`, `OnlineTripleSource`) are the same
//! protocol.
//!
//! Masking x: the helper's mask a = a0 + a1 has a0 derived from the P0-P2 seed and a1 from the
//! P1-P2 seed (two separate keys: the public SecureNN code's single key lets P0 derive P1's
//! shares), so no mask share travels; server j opens α = x - a by sending α_j = x_j - a_j to the
//! other server. With [`Costing::OPTIMISED`] the mask is memoised on the tensor, so a tensor used
//! in several products (x² in x⁴ and x⁶, a weight across batches) is masked once; with
//! [`Costing::PAPER`] every product masks its operands anew, as the SecureNN paper counts.
//!
//! A bilinear op B (elementwise product, matmul, conv2d) of x = α + a and y = β + b:
//! the producer computes c = B(a, b), derives c0 from the P0-P2 seed and sends c1 = c - c0 to
//! server 1; server j outputs z_j = B(α, [j = 0]β + b_j) + B(a_j, β) + c_j, whose sum is
//! B(α, β) + B(α, b) + B(a, β) + B(a, b) = B(x, y).

use super::costing::Costing;
use super::shared_tensor::{Mask, SharedTensor};
use crate::channel::{Ctx, P0, P1, P2, ProtocolError};
use crate::fixed::truncate_share;
use crate::protocol::product_frac;
use crate::ring::RingTensor;
use std::rc::Rc;

/// The masks of `xs`, masking what is not masked yet in one round. Each operand comes with a
/// group: under [`Costing::PAPER`] one tensor appearing twice in a group (x·x) gets one mask
/// but every group masks anew; under [`Costing::OPTIMISED`] masks are shared across groups and
/// memoised on the tensors.
async fn masks(
    ctx: &Ctx,
    xs: &[(usize, &SharedTensor)],
    costing: Costing,
) -> Result<Vec<Mask>, ProtocolError> {
    let reuse = costing.reuse_masks();
    if reuse
        && xs
            .iter()
            .any(|(_, x)| matches!(*x.mask.borrow(), Some(Mask::Pending)))
    {
        return Err(ProtocolError::Unsupported {
            op: ctx.path().to_string(),
            reason: "an operand is being masked by a concurrent branch: mask shared operands before forking".into(),
        });
    }
    // slot[i]: index into `todo` of the mask operand i gets, or None if memoised.
    let mut todo: Vec<(usize, &SharedTensor)> = Vec::new();
    let mut slot = Vec::with_capacity(xs.len());
    for &(g, x) in xs {
        if reuse && x.mask.borrow().is_some() {
            slot.push(None);
        } else if let Some(i) = todo
            .iter()
            .position(|(tg, t)| (reuse || *tg == g) && Rc::ptr_eq(&t.mask, &x.mask))
        {
            slot.push(Some(i));
        } else {
            todo.push((g, x));
            slot.push(Some(todo.len() - 1));
        }
    }
    let mut fresh = Vec::with_capacity(todo.len());
    if !todo.is_empty() {
        let ctx = ctx.child("mask");
        let me = ctx.me();
        if me == P2 {
            for (_, x) in &todo {
                let a0 = RingTensor::random(x.shape(), &mut ctx.prg_with(P0));
                let a1 = RingTensor::random(x.shape(), &mut ctx.prg_with(P1));
                fresh.push(Mask::Helper { a: a0.add(&a1) });
            }
        } else {
            if reuse {
                for (_, x) in &todo {
                    *x.mask.borrow_mut() = Some(Mask::Pending);
                }
            }
            let other = if me == P0 { P1 } else { P0 };
            let mut mine = Vec::with_capacity(todo.len());
            for (_, x) in &todo {
                let a = RingTensor::random(x.shape(), &mut ctx.prg_with(P2));
                let alpha = x.share().expect("servers hold shares").sub(&a);
                ctx.send(other, &alpha)?;
                mine.push((a, alpha));
            }
            for ((_, x), (a, mut alpha)) in todo.iter().zip(mine) {
                alpha.add_assign(&ctx.recv::<RingTensor>(other, &x.shape().to_vec()).await?);
                fresh.push(Mask::Server { a, alpha });
            }
        }
        if reuse {
            for ((_, x), m) in todo.iter().zip(&fresh) {
                *x.mask.borrow_mut() = Some(m.clone());
            }
        }
    }
    Ok(xs
        .iter()
        .zip(slot)
        .map(|((_, x), s)| match s {
            Some(i) => fresh[i].clone(),
            None => x.mask.borrow().clone().expect("memoised"),
        })
        .collect())
}

/// A bilinear map over Z_{2^64} (elementwise product, matmul, conv2d with its geometry).
pub(crate) type Bilinear<'a> = Box<dyn Fn(&RingTensor, &RingTensor) -> RingTensor + 'a>;

/// One product of a batch: B(x, y) with output shape `out`.
pub(crate) struct Product<'a> {
    pub x: &'a SharedTensor,
    pub y: &'a SharedTensor,
    pub out: Vec<usize>,
    pub op: Bilinear<'a>,
}

impl<'a> Product<'a> {
    /// The elementwise product x ⊙ y.
    pub fn elementwise(x: &'a SharedTensor, y: &'a SharedTensor) -> Self {
        Self {
            x,
            y,
            out: x.shape().to_vec(),
            op: Box::new(|a, b| a.mul(b)),
        }
    }
}

/// Several products whose operands are all masked in one round (one flight of messages),
/// each with its own triple; results in order.
pub(crate) async fn beaver_many(
    ctx: &Ctx,
    products: &[Product<'_>],
    costing: Costing,
) -> Result<Vec<SharedTensor>, ProtocolError> {
    let operands: Vec<(usize, &SharedTensor)> = products
        .iter()
        .enumerate()
        .flat_map(|(g, p)| [(g, p.x), (g, p.y)])
        .collect();
    let m = masks(ctx, &operands, costing).await?;
    let tctx = ctx.child("triple");
    let me = ctx.me();
    let mut out = Vec::with_capacity(products.len());
    for (i, p) in products.iter().enumerate() {
        let (frac, bits) = product_frac(p.x.frac(), p.y.frac(), ctx.fixed().frac_bits);
        let share = match (&m[2 * i], &m[2 * i + 1]) {
            (Mask::Helper { a }, Mask::Helper { a: b }) => {
                let c = (p.op)(a, b);
                let c0 = RingTensor::random(&p.out, &mut tctx.prg_with(P0));
                tctx.send(P1, &c.sub(&c0))?;
                None
            }
            (Mask::Server { a, alpha }, Mask::Server { a: b, alpha: beta }) => {
                let c = if me == P0 {
                    RingTensor::random(&p.out, &mut tctx.prg_with(P2))
                } else {
                    tctx.recv(P2, &p.out).await?
                };
                let right = if me == P0 { beta.add(b) } else { b.clone() };
                let mut z = (p.op)(alpha, &right);
                z.add_assign(&(p.op)(a, beta));
                z.add_assign(&c);
                Some(if bits > 0 {
                    truncate_share(&z, bits, me.index())
                } else {
                    z
                })
            }
            _ => unreachable!("masks are complete after masking and all of the party's own kind"),
        };
        out.push(SharedTensor::new(&p.out, frac, share));
    }
    Ok(out)
}

/// B(x, y) by a Beaver triple, truncated if both operands are fractional.
/// The helper's dense triple share always goes to P1; P0 derives its own from the P0-P2 seed.
pub(crate) async fn beaver(
    ctx: &Ctx,
    x: &SharedTensor,
    y: &SharedTensor,
    out_shape: &[usize],
    costing: Costing,
    op: impl Fn(&RingTensor, &RingTensor) -> RingTensor,
) -> Result<SharedTensor, ProtocolError> {
    let p = Product {
        x,
        y,
        out: out_shape.to_vec(),
        op: Box::new(op),
    };
    Ok(beaver_many(ctx, &[p], costing)
        .await?
        .pop()
        .expect("one product"))
}
