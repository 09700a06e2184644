//! Products with an operand one server knows in the clear (the model owner's weights, the data
//! owner's image): the other operand is opened masked to that server only, and the known operand
//! goes to the helper once per session, masked by the servers' common seed.
//!
//! Under [`Costing::OPTIMISED`](super::Costing) on SecureNN, a server's input is held "known to
//! its owner": the owner's share is the value, the other server's is zero, no randomness and no
//! message, and the tensor records `known_by` (public metadata). A bilinear product B(X, W)
//! (elementwise, matmul, conv2d) with W known to server K, O the other server and X any shared
//! tensor (X_K at K, X_O at O):
//!
//! 1. O draws A (X-shaped) from the O-P2 seed and sends E = X_O − A to K; K forms X_K + E.
//! 2. Once per W per session (memoised on W's tensor, like Beaver masks): B0 (W-shaped) from the
//!    P0-P1 seed; K sends F = W − B0 to P2. P2 keeps F, O keeps B0.
//! 3. P2 draws A and R (output-shaped) from the O-P2 seed and sends B(A, F) − R to K.
//! 4. O's share is B(A, B0) + R; K's is B(X_K + E, W) + B(A, F) − R. Their sum is
//!    B(X − A, W) + B(A, W) = B(X, W). Each server then truncates its share locally (SecureML's
//!    rule, as Beaver products do) and the protocol re-randomises the shares (zero shares).
//!
//! If X is also known to K, K computes the product alone (exact truncation, the output stays
//! known to K, nothing is sent). If X is known to O (the data owner's image times the model
//! owner's weights), the protocol runs as above with X_K = 0.
//!
//! Privacy (one semi-honest party, no collusion): K receives E = X_O − A, uniform since A comes
//! from the O-P2 seed K does not hold, and B(A, F) − R, uniform since R comes from the same seed.
//! P2 receives F = W − B0, uniform since B0 comes from the P0-P1 seed P2 does not hold; its own
//! A, R are fresh per product and it receives nothing else. O receives nothing. B0 is reused
//! across queries because F is sent once: every later product uses the same F, so P2 never sees
//! two maskings of W with one B0 (and never sees anything else masked by B0). Output shares are
//! refreshed with P0-P1 zero shares like every SecureNN product, so a later reveal hands out a
//! share that is uniform given the value.
//!
//! Cost per product: |X| + |out| ring elements per query, plus |W| once per session; a Beaver
//! product moves 2|X| + |out| per query plus 2|W| for the first. Rounds: one when F is
//! memoised or was sent ahead ([`prefetch`]: inference sends every kernel's F beside the
//! weights' input, so only the first layer, whose product starts at once, waits for its F);
//! otherwise the first product with a W takes two (P2 waits for F).

use super::shared_tensor::{KnownMemo, SharedTensor};
use super::{ProtocolError, product_frac};
use crate::channel::{Ctx, P2};
use crate::fixed::{truncate_exact, truncate_share};
use crate::protocol::shared::other_server;
use crate::ring::RingTensor;

/// B(x, y) when one operand is known to a server: `op` is B, taking x's value then y's.
/// Returns `None` when neither operand is known (the caller uses a Beaver triple). The known
/// operand is y if y is known, otherwise x. The output is truncated by the product rule; it is
/// known to K when both operands are (and then must not be refreshed: see
/// [`SharedTensor::known_by`]).
pub(crate) async fn product(
    ctx: &Ctx,
    x: &SharedTensor,
    y: &SharedTensor,
    out: &[usize],
    op: impl Fn(&RingTensor, &RingTensor) -> RingTensor,
) -> Result<Option<SharedTensor>, ProtocolError> {
    let z = if y.known_by.is_some() {
        known_product(ctx, x, y, out, &op).await?
    } else if x.known_by.is_some() {
        known_product(ctx, y, x, out, &|s, k| op(k, s)).await?
    } else {
        return Ok(None);
    };
    Ok(Some(z))
}

/// B(x, w) for `w` known to server K; `op(x value, w value)`.
async fn known_product(
    ctx: &Ctx,
    x: &SharedTensor,
    w: &SharedTensor,
    out: &[usize],
    op: &dyn Fn(&RingTensor, &RingTensor) -> RingTensor,
) -> Result<SharedTensor, ProtocolError> {
    let k = w.known_by.expect("w is the known operand");
    let o = other_server(k);
    let me = ctx.me();
    let (frac, bits) = product_frac(x.frac(), w.frac(), ctx.fixed().frac_bits);
    if x.known_by == Some(k) {
        let share = match me {
            P2 => None,
            m if m == k => {
                let z = op(x.share().expect("server"), w.share().expect("server"));
                Some(if bits > 0 {
                    truncate_exact(&z, bits)
                } else {
                    z
                })
            }
            _ => Some(RingTensor::zeros(out)),
        };
        return Ok(SharedTensor::new(out, frac, share).known_to(Some(k)));
    }
    let ctx = ctx.child("known");
    let f = weight_mask(&ctx.child("weight"), w, k).await?;
    let z = if me == P2 {
        let a = RingTensor::random(x.shape(), &mut ctx.prg_with(o));
        let r = RingTensor::random(out, &mut ctx.prg_with(o));
        let f = f.expect("the helper holds F");
        ctx.send(k, &op(&a, &f).sub(&r))?;
        None
    } else if me == o {
        let a = RingTensor::random(x.shape(), &mut ctx.prg_with(P2));
        ctx.send(k, &x.share().expect("server").sub(&a))?;
        let r = RingTensor::random(out, &mut ctx.prg_with(P2));
        let b0 = f.expect("the other server holds B0");
        let mut z = op(&a, &b0);
        z.add_assign(&r);
        Some(z)
    } else {
        let mut xk: RingTensor = ctx.recv(o, &x.shape().to_vec()).await?;
        if x.known_by != Some(o) {
            xk.add_assign(x.share().expect("server"));
        }
        let c: RingTensor = ctx.recv(P2, &out.to_vec()).await?;
        let mut z = op(&xk, w.share().expect("server"));
        z.add_assign(&c);
        Some(z)
    };
    let z = z.map(|z| {
        if bits > 0 {
            truncate_share(&z, bits, me.index())
        } else {
            z
        }
    });
    Ok(SharedTensor::new(out, frac, z))
}

/// Step 2 ahead of time: the owner of `w` (a known operand of products to come, such as a model
/// owner's kernel) sends F = W − B0 to the helper now, under `ctx`, and the other server keeps B0;
/// the helper receives F when its first product needs it. The same bytes as sending F at the
/// first product, without the round in which the helper waits for it. No effect on a tensor
/// not known to a server, or whose F has gone already.
pub(crate) fn prefetch(ctx: &Ctx, w: &SharedTensor) -> Result<(), ProtocolError> {
    match w.known_by {
        Some(k) if w.known_memo.borrow().is_none() => announce(&ctx.child("known"), w, k),
        _ => Ok(()),
    }
}

/// The owner `k` sends F = W − B0 to the helper under `ctx`; each party records its part in
/// `w`'s memo (the owner: sent; the other server: B0; the helper: where F will arrive).
fn announce(ctx: &Ctx, w: &SharedTensor, k: crate::channel::PartyId) -> Result<(), ProtocolError> {
    let memo = match ctx.me() {
        P2 => KnownMemo::Incoming(ctx.clone()),
        m if m == k => {
            let b0 = RingTensor::random(w.shape(), &mut ctx.prg_with(other_server(k)));
            ctx.send(P2, &w.share().expect("server").sub(&b0))?;
            KnownMemo::Sent
        }
        _ => KnownMemo::Server(RingTensor::random(w.shape(), &mut ctx.prg_with(k))),
    };
    *w.known_memo.borrow_mut() = Some(memo);
    Ok(())
}

/// Step 2, memoised on `w`: the owner `k` sends F = W − B0 to the helper the first time (unless
/// [`prefetch`] did). Returns B0 on the other server, F on the helper, `None` on the owner.
async fn weight_mask(
    ctx: &Ctx,
    w: &SharedTensor,
    k: crate::channel::PartyId,
) -> Result<Option<RingTensor>, ProtocolError> {
    if w.known_memo.borrow().is_none() {
        announce(ctx, w, k)?;
    }
    let memo = w.known_memo.borrow().clone().expect("announced");
    match memo {
        KnownMemo::Pending => Err(ProtocolError::Unsupported {
            op: ctx.path().to_string(),
            reason: "a known operand is being sent to the helper by a concurrent branch: use it \
                     once before forking"
                .into(),
        }),
        KnownMemo::Sent => Ok(None),
        KnownMemo::Server(b0) | KnownMemo::Helper(b0) => Ok(Some(b0)),
        KnownMemo::Incoming(from) => {
            *w.known_memo.borrow_mut() = Some(KnownMemo::Pending);
            let f: RingTensor = from.recv(k, &w.shape().to_vec()).await?;
            *w.known_memo.borrow_mut() = Some(KnownMemo::Helper(f.clone()));
            Ok(Some(f))
        }
    }
}
