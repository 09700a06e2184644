//! Maxpool (SecureNN, Algorithm 9) with the index of the maximum, and its derivative DMaxpool:
//! the efficient one-hot protocol when the window size n divides 2^64 (Algorithm 10) and the
//! general one otherwise (Algorithm 12).
//!
//! Maxpool walks each window in order: w = x_t - max, β = DReLU(w), then max ← SS(β, max, x_t)
//! and ind ← SS(β, ind, t), the two selections in one flight. All windows of a layer advance
//! together, one DReLU per step. β = 1 when x_t ≥ max, so among equal values the later one wins.
//! Indices are integer shares 0..n-1 (window position dy·k + dx), never fixed point, so they
//! cannot drift.
//!
//! Cost per step per window: DReLU (664 B) and two SelectShares (2 × 40 B): 744 bytes, 9 rounds
//! (with reused masks the second selection reuses β's mask: 728 bytes).
//! DMaxpool, Algorithm 10: the servers send P2 the index blinded by a common r (2 words), P2
//! returns shares of the one-hot vector at (ind + r) mod n (2n words), and the servers rotate it
//! back by r mod n: 16(n + 1) bytes, 2 rounds.

use super::bits::common_prg;
use super::relu::drelu;
use super::select_share::select_shares;
use crate::channel::{Ctx, P0, P1, P2, ProtocolError};
use crate::protocol::beaver::MaskPolicy;
use crate::protocol::check_pool;
use crate::protocol::shared::{SharedTensor, public, refresh, sub, zero_share};
use crate::ring::RingTensor;

/// The maximum of each k×k window, its index, and (if asked) the one-hot vectors of Algorithm 12,
/// one tensor per window position.
pub struct MaxPooled {
    pub max: SharedTensor,
    pub index: SharedTensor,
    pub one_hot: Option<Vec<SharedTensor>>,
}

/// Maxpool with index over non-overlapping k×k windows of an NHWC tensor.
pub async fn maxpool_with_index(
    ctx: &Ctx,
    x: &SharedTensor,
    k: usize,
    policy: MaskPolicy,
    with_one_hot: bool,
) -> Result<MaxPooled, ProtocolError> {
    check_pool(ctx, x.shape(), k)?;
    let ctx = ctx.child("maxpool");
    let n = k * k;
    let s = x.shape();
    let out_shape = [s[0], s[1] / k, s[2] / k, s[3]];
    let parts: Vec<SharedTensor> = (0..n)
        .map(|t| x.map_share(&out_shape, x.frac(), |v| v.pool_window(k, t)))
        .collect();
    let constant = |v: u64| public(&ctx, &RingTensor::filled(&out_shape, v), 0);
    let mut max = parts[0].clone();
    let mut index = constant(0);
    let mut one_hot: Option<Vec<SharedTensor>> =
        with_one_hot.then(|| (0..n).map(|s| constant((s == 0) as u64)).collect());
    for (t, part) in parts.iter().enumerate().skip(1) {
        let step = ctx.child("step");
        let w = sub(&step, part, &max)?;
        let beta = drelu(&step, &w, policy).await?;
        let target = constant(t as u64);
        let units: Vec<SharedTensor> = match &one_hot {
            Some(_) => (0..n).map(|s| constant((s == t) as u64)).collect(),
            None => Vec::new(),
        };
        let mut selections = vec![(&beta, &max, part), (&beta, &index, &target)];
        if let Some(d) = &one_hot {
            selections.extend(d.iter().zip(&units).map(|(ds, us)| (&beta, ds, us)));
        }
        let mut picked = select_shares(&step, &selections, policy).await?.into_iter();
        max = picked.next().expect("max");
        index = picked.next().expect("index");
        if one_hot.is_some() {
            one_hot = Some(picked.collect());
        }
    }
    Ok(MaxPooled {
        max,
        index,
        one_hot,
    })
}

/// DMaxpool: integer shares of a 0/1 tensor shaped like `x` with a single 1 per window, at the
/// window's maximum (the later one among ties).
pub async fn dmaxpool(
    ctx: &Ctx,
    x: &SharedTensor,
    k: usize,
    policy: MaskPolicy,
) -> Result<SharedTensor, ProtocolError> {
    let ctx = ctx.child("dmaxpool");
    let n = k * k;
    let efficient = n.is_power_of_two();
    let pooled = maxpool_with_index(&ctx, x, k, policy, !efficient).await?;
    let parts = match pooled.one_hot {
        Some(parts) => parts,
        None => one_hot_from_index(&ctx, &pooled.index, n).await?,
    };
    let shape = x.shape();
    let share = (ctx.me() != P2).then(|| {
        let p: Vec<RingTensor> = parts
            .iter()
            .map(|t| t.share().expect("server").clone())
            .collect();
        RingTensor::unpool_windows(&p, k)
    });
    Ok(refresh(&ctx, &SharedTensor::new(shape, 0, share)))
}

/// Algorithm 10: one-hot vectors (one tensor per window position) from integer index shares,
/// for a window size n that divides 2^64.
async fn one_hot_from_index(
    ctx: &Ctx,
    index: &SharedTensor,
    n: usize,
) -> Result<Vec<SharedTensor>, ProtocolError> {
    assert!(n.is_power_of_two(), "Algorithm 10 needs n | 2^64");
    let ctx = ctx.child("one_hot");
    let shape = index.shape().to_vec();
    let m: usize = shape.iter().product();
    let n64 = n as u64;
    if ctx.me() == P2 {
        let t0: RingTensor = ctx.recv(P0, &vec![m]).await?;
        let t1: RingTensor = ctx.recv(P1, &vec![m]).await?;
        let mut e = vec![0u64; m * n];
        for (i, t) in t0.add(&t1).as_slice().iter().enumerate() {
            e[i * n + (t % n64) as usize] = 1;
        }
        let e = RingTensor::from_vec(&[m * n], e);
        let e0 = RingTensor::random(&[m * n], &mut ctx.prg_local());
        ctx.send(P0, &e0)?;
        ctx.send(P1, &e.sub(&e0))?;
        return Ok((0..n).map(|_| SharedTensor::new(&shape, 0, None)).collect());
    }
    let r = RingTensor::random(&[m], &mut common_prg(&ctx));
    let mine = index.share().expect("server").clone().reshape(&[m]);
    ctx.send(P2, &if ctx.me() == P0 { mine.add(&r) } else { mine })?;
    let e: RingTensor = ctx.recv(P2, &vec![m * n]).await?;
    let z = zero_share(&ctx, &[m * n]).expect("server");
    let e = e.as_slice();
    let z = z.as_slice();
    // D_i = E_{(i + g) mod n} with g = r mod n, plus zero shares.
    Ok((0..n)
        .map(|i| {
            let v: Vec<u64> = (0..m)
                .map(|o| {
                    let g = (r.as_slice()[o] % n64) as usize;
                    e[o * n + (i + g) % n].wrapping_add(z[o * n + i])
                })
                .collect();
            SharedTensor::new(&shape, 0, Some(RingTensor::from_vec(&shape, v)))
        })
        .collect())
}
