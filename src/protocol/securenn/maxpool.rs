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
//! (with reused masks the second selection reuses β's mask: 728 bytes). The same n - 1
//! comparisons arranged as a balanced tree ([`MaxStrategy::Tree`]) take ⌈log2 n⌉ steps instead
//! of n - 1; argmax over the last axis (the networks' prediction) works the same way.
//! DMaxpool, Algorithm 10: the servers send P2 the index blinded by a common r (2 words), P2
//! returns shares of the one-hot vector at (ind + r) mod n (2n words), and the servers rotate it
//! back by r mod n: 16(n + 1) bytes, 2 rounds.

use super::bits::common_prg;
use super::relu::drelu;
use super::select_share::select_shares;
use crate::channel::{Ctx, P0, P1, P2, ProtocolError};
use crate::protocol::beaver::{Product, beaver_many};
use crate::protocol::check_pool;
use crate::protocol::costing::Costing;
use crate::protocol::shared::{SharedTensor, gather, public, refresh, sub, zero_share};
use crate::ring::{Gather, PadCell, RingTensor, Window};

/// How maxima are found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxStrategy {
    /// The paper's Algorithm 9: n - 1 comparison steps in sequence, 9 rounds each.
    Sequential,
    /// A balanced tree of pairwise comparisons: ⌈log2 n⌉ steps (the same n - 1 comparisons,
    /// fewer rounds). Among equal values the later one still wins.
    Tree,
    /// Argmax only: all n(n-1)/2 comparisons in one DReLU, then each candidate's wins
    /// multiplied together in a tree (⌈log2(n-1)⌉ one-round products of bits), the index being
    /// Σ i·[i won them all]. For n = 10: 8 + 4 = 12 rounds instead of the tree's 36, for 45
    /// comparisons instead of 9. Pooling windows use [`MaxStrategy::Tree`] with it, since
    /// there the bytes (which dominate networks B and C) would grow.
    AllPairs,
}

/// The maximum of each k×k window, its index, and (if asked) the one-hot vectors of Algorithm 12,
/// one tensor per window position.
pub struct MaxPooled {
    pub max: SharedTensor,
    pub index: SharedTensor,
    pub one_hot: Option<Vec<SharedTensor>>,
}

/// Maxpool with index over non-overlapping k×k windows of an NHWC tensor (sequential, as the
/// paper; see [`maxpool`] for the tree).
pub async fn maxpool_with_index(
    ctx: &Ctx,
    x: &SharedTensor,
    k: usize,
    costing: Costing,
    with_one_hot: bool,
) -> Result<MaxPooled, ProtocolError> {
    let window = Window::square(k);
    check_pool(ctx, x.shape(), &window)?;
    let ctx = ctx.child("maxpool");
    let parts = windows(x, &window);
    ctx.shape(&pool_shape(&parts));
    max_sequential(&ctx, &parts, costing, with_one_hot, difference_width(x)).await
}

/// Max over the windows of an NHWC tensor with the given strategy (a padded cell repeats one of
/// its window's cells, so padding never wins).
pub async fn maxpool(
    ctx: &Ctx,
    x: &SharedTensor,
    window: &Window,
    costing: Costing,
    strategy: MaxStrategy,
) -> Result<MaxPooled, ProtocolError> {
    check_pool(ctx, x.shape(), window)?;
    let ctx = ctx.child("maxpool");
    let parts = windows(x, window);
    ctx.shape(&pool_shape(&parts));
    match strategy {
        MaxStrategy::Sequential => {
            max_sequential(&ctx, &parts, costing, false, difference_width(x)).await
        }
        MaxStrategy::Tree | MaxStrategy::AllPairs => {
            max_tree(&ctx, &parts, costing, difference_width(x), true).await
        }
    }
}

/// The max of each window only ([`maxpool`] without the index: a tree's levels select the
/// larger value and not its position, half the selections). What inference needs.
pub async fn pool_max(
    ctx: &Ctx,
    x: &SharedTensor,
    window: &Window,
    costing: Costing,
    strategy: MaxStrategy,
) -> Result<SharedTensor, ProtocolError> {
    match strategy {
        MaxStrategy::Sequential => Ok(maxpool(ctx, x, window, costing, strategy).await?.max),
        MaxStrategy::Tree | MaxStrategy::AllPairs => {
            check_pool(ctx, x.shape(), window)?;
            let ctx = ctx.child("maxpool");
            let parts = windows(x, window);
            ctx.shape(&pool_shape(&parts));
            Ok(max_tree(&ctx, &parts, costing, difference_width(x), false)
                .await?
                .max)
        }
    }
}

/// Argmax over the last axis of a [batch, n] tensor: integer shares of the index (later wins
/// among ties), shape [batch].
pub async fn argmax(
    ctx: &Ctx,
    x: &SharedTensor,
    costing: Costing,
    strategy: MaxStrategy,
) -> Result<SharedTensor, ProtocolError> {
    let ctx = ctx.child("argmax");
    let s = x.shape();
    if s.len() != 2 || s[1] == 0 {
        return Err(ProtocolError::Input {
            op: ctx.path().to_string(),
            reason: format!("argmax wants [batch, n] with n > 0, got {s:?}"),
        });
    }
    let (b, n) = (s[0], s[1]);
    ctx.shape(&[b, n]);
    let parts: Vec<SharedTensor> = (0..n)
        .map(|t| {
            x.map_share(&[b], x.frac(), |v| {
                RingTensor::from_vec(
                    &[b],
                    v.as_slice().iter().skip(t).step_by(n).copied().collect(),
                )
            })
        })
        .collect();
    Ok(match strategy {
        MaxStrategy::Sequential => {
            max_sequential(&ctx, &parts, costing, false, difference_width(x))
                .await?
                .index
        }
        MaxStrategy::Tree => {
            max_tree(&ctx, &parts, costing, difference_width(x), true)
                .await?
                .index
        }
        MaxStrategy::AllPairs => {
            index_all_pairs(&ctx, &parts, costing, difference_width(x)).await?
        }
    })
}

/// The index of the largest of `parts` (later wins among ties) from all pairwise comparisons
/// at once; see [`MaxStrategy::AllPairs`].
async fn index_all_pairs(
    ctx: &Ctx,
    parts: &[SharedTensor],
    costing: Costing,
    width: u32,
) -> Result<SharedTensor, ProtocolError> {
    let n = parts.len();
    let shape = parts[0].shape().to_vec();
    if n == 1 {
        return Ok(public(ctx, &RingTensor::zeros(&shape), 0));
    }
    let pairs: Vec<(usize, usize)> = (0..n)
        .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
        .collect();
    let step = ctx.child("all_pairs");
    step.shape(&[pairs.len() * shape.iter().product::<usize>()]);
    // later[(i, j)] = [x_j ≥ x_i]: j beats i (ties go to the later one).
    let diff = concat(
        &step,
        &pairs
            .iter()
            .map(|&(i, j)| sub(&step, &parts[j], &parts[i]))
            .collect::<Result<Vec<_>, _>>()?,
    );
    let diff = diff.with_compare_width(width);
    let later = split(&drelu(&step, &diff, costing).await?, pairs.len(), &shape);
    let one = public(ctx, &RingTensor::filled(&shape, 1), 0);
    // Candidate i's wins: over every earlier j, [x_i ≥ x_j]; over every later j, 1 - [x_j ≥ x_i].
    let mut wins: Vec<Vec<SharedTensor>> = vec![Vec::with_capacity(n - 1); n];
    for (&(i, j), b) in pairs.iter().zip(&later) {
        wins[j].push(b.clone());
        wins[i].push(sub(ctx, &one, b)?);
    }
    // Multiply each candidate's n - 1 bits in a tree, all candidates in one flight per level.
    while wins[0].len() > 1 {
        let level = ctx.child("all_won");
        let products: Vec<Product> = wins
            .iter()
            .flat_map(|w| {
                w.chunks_exact(2)
                    .map(|p| Product::elementwise(&p[0], &p[1]))
            })
            .collect();
        let out = beaver_many(&level, &products, costing).await?;
        drop(products);
        let mut out = out.into_iter();
        wins = wins
            .iter()
            .map(|w| {
                let mut next: Vec<SharedTensor> = (0..w.len() / 2)
                    .map(|_| out.next().expect("product"))
                    .collect();
                if w.len() % 2 == 1 {
                    next.push(w[w.len() - 1].clone());
                }
                next
            })
            .collect();
    }
    // Exactly one candidate won every comparison: Σ i·[i won] is its index.
    let mut index = public(ctx, &RingTensor::zeros(&shape), 0);
    for (i, w) in wins.iter().enumerate().skip(1) {
        let scaled = w[0].map_share(&shape, 0, |s| s.scale(i as u64));
        index = crate::protocol::shared::add(ctx, &index, &scaled)?;
    }
    Ok(refresh(ctx, &index))
}

/// [outputs, window size]: the shape a maximum's span records (what its cost depends on).
fn pool_shape(parts: &[SharedTensor]) -> [usize; 2] {
    [parts[0].shape().iter().product(), parts.len()]
}

/// The comparison width of differences of `x`'s values: one bit more than `x`'s (every max
/// and every value compared is one of `x`'s, so |a - b| < 2·2^(w-1)).
fn difference_width(x: &SharedTensor) -> u32 {
    (x.compare_width() + 1).min(64)
}

/// Cell t (= dy·kw + dx) of every window, as one tensor of the pooled shape per cell.
fn windows(x: &SharedTensor, window: &Window) -> Vec<SharedTensor> {
    (0..window.cells())
        .map(|t| gather(x, &window.part(x.shape(), t, PadCell::Repeat)))
        .collect()
}

/// Algorithm 9 over `parts` (all the same shape): one DReLU and the selections per step.
async fn max_sequential(
    ctx: &Ctx,
    parts: &[SharedTensor],
    costing: Costing,
    with_one_hot: bool,
    width: u32,
) -> Result<MaxPooled, ProtocolError> {
    let n = parts.len();
    let out_shape = parts[0].shape().to_vec();
    let constant = |v: u64| public(ctx, &RingTensor::filled(&out_shape, v), 0);
    let mut max = parts[0].clone();
    let mut index = constant(0);
    let mut one_hot: Option<Vec<SharedTensor>> =
        with_one_hot.then(|| (0..n).map(|s| constant((s == 0) as u64)).collect());
    for (t, part) in parts.iter().enumerate().skip(1) {
        let step = ctx.child("step");
        step.shape(&[out_shape.iter().product()]);
        let w = sub(&step, part, &max)?.with_compare_width(width);
        let beta = drelu(&step, &w, costing).await?;
        let target = constant(t as u64);
        let units: Vec<SharedTensor> = match &one_hot {
            Some(_) => (0..n).map(|s| constant((s == t) as u64)).collect(),
            None => Vec::new(),
        };
        let mut selections = vec![(&beta, &max, part), (&beta, &index, &target)];
        if let Some(d) = &one_hot {
            selections.extend(d.iter().zip(&units).map(|(ds, us)| (&beta, ds, us)));
        }
        let mut picked = select_shares(&step, &selections, costing)
            .await?
            .into_iter();
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

/// A balanced tree over `parts`: each level compares neighbours (all pairs of the level in one
/// DReLU) and keeps the larger with its index; an odd one out waits for the next level.
async fn max_tree(
    ctx: &Ctx,
    parts: &[SharedTensor],
    costing: Costing,
    width: u32,
    with_index: bool,
) -> Result<MaxPooled, ProtocolError> {
    let shape = parts[0].shape().to_vec();
    let constant = |v: u64| public(ctx, &RingTensor::filled(&shape, v), 0);
    let mut level: Vec<(SharedTensor, SharedTensor)> = parts
        .iter()
        .enumerate()
        .map(|(t, p)| (p.clone(), constant(t as u64)))
        .collect();
    while level.len() > 1 {
        let step = ctx.child("level");
        let pairs = level.len() / 2;
        step.shape(&[pairs * shape.iter().product::<usize>()]);
        // All comparisons of the level as one tensor: later - earlier, pair after pair.
        let diff = concat(
            &step,
            &(0..pairs)
                .map(|i| sub(&step, &level[2 * i + 1].0, &level[2 * i].0))
                .collect::<Result<Vec<_>, _>>()?,
        );
        let beta = drelu(&step, &diff.with_compare_width(width), costing).await?;
        let betas = split(&beta, pairs, &shape);
        let mut selections = Vec::with_capacity(2 * pairs);
        for (i, b) in betas.iter().enumerate() {
            let (a, c) = (&level[2 * i], &level[2 * i + 1]);
            selections.push((b, &a.0, &c.0));
            if with_index {
                selections.push((b, &a.1, &c.1));
            }
        }
        let mut picked = select_shares(&step, &selections, costing)
            .await?
            .into_iter();
        let mut next = Vec::with_capacity(pairs + 1);
        for i in 0..pairs {
            let max = picked.next().expect("max");
            // Without the index, the pair's first index stands in (never read).
            let index = match with_index {
                true => picked.next().expect("index"),
                false => level[2 * i].1.clone(),
            };
            next.push((max, index));
        }
        if level.len() % 2 == 1 {
            next.push(level.pop().expect("odd one out"));
        }
        level = next;
    }
    let (max, index) = level.pop().expect("at least one part");
    Ok(MaxPooled {
        max,
        index,
        one_hot: None,
    })
}

/// Tensors of one shape side by side as one flat tensor.
fn concat(ctx: &Ctx, xs: &[SharedTensor]) -> SharedTensor {
    let n: usize = xs.iter().map(|x| x.shape().iter().product::<usize>()).sum();
    let share = (ctx.me() != P2).then(|| {
        RingTensor::from_vec(
            &[n],
            xs.iter()
                .flat_map(|x| x.share().expect("server").as_slice().to_vec())
                .collect(),
        )
    });
    SharedTensor::new(&[n], xs[0].frac(), share)
}

/// The inverse of [`concat`]: `count` tensors of `shape`.
fn split(x: &SharedTensor, count: usize, shape: &[usize]) -> Vec<SharedTensor> {
    let m: usize = shape.iter().product();
    (0..count)
        .map(|i| {
            x.map_share(shape, x.frac(), |s| {
                RingTensor::from_vec(shape, s.as_slice()[i * m..(i + 1) * m].to_vec())
            })
        })
        .collect()
}

/// DMaxpool: integer shares of a 0/1 tensor shaped like `x` with a single 1 per window, at the
/// window's maximum (the later one among ties).
pub async fn dmaxpool(
    ctx: &Ctx,
    x: &SharedTensor,
    k: usize,
    costing: Costing,
) -> Result<SharedTensor, ProtocolError> {
    let ctx = ctx.child("dmaxpool");
    ctx.shape(&[x.shape().iter().product::<usize>() / (k * k), k * k]);
    Ok(
        maxpool_one_hot(&ctx, x, k, costing, MaxStrategy::Sequential)
            .await?
            .1,
    )
}

/// Max pooling over non-overlapping k×k windows that also keeps, for backpropagation, the
/// one-hot tensor of DMaxpool (shaped like `x`, integer shares, a single 1 per window at its
/// maximum, the later one among ties; zeros where no window covers the input). The maxima come
/// from `strategy` (the paper's sequential Algorithm 9 or the tree); the one-hot vectors from
/// the index by Algorithm 10 when k² divides 2^64, else carried through the sequential maxima
/// (Algorithm 12).
pub async fn maxpool_one_hot(
    ctx: &Ctx,
    x: &SharedTensor,
    k: usize,
    costing: Costing,
    strategy: MaxStrategy,
) -> Result<(SharedTensor, SharedTensor), ProtocolError> {
    let window = Window::square(k);
    check_pool(ctx, x.shape(), &window)?;
    let n = k * k;
    let efficient = n.is_power_of_two();
    let pooled = {
        let ctx = ctx.child("maxpool");
        let parts = windows(x, &window);
        ctx.shape(&pool_shape(&parts));
        match strategy {
            MaxStrategy::Tree | MaxStrategy::AllPairs if efficient => {
                max_tree(&ctx, &parts, costing, difference_width(x), true).await?
            }
            _ => max_sequential(&ctx, &parts, costing, !efficient, difference_width(x)).await?,
        }
    };
    let parts = match pooled.one_hot {
        Some(parts) => parts,
        None => one_hot_from_index(ctx, &pooled.index, n).await?,
    };
    let shape = x.shape();
    let share = (ctx.me() != P2).then(|| {
        let p: Vec<RingTensor> = parts
            .iter()
            .map(|t| t.share().expect("server").clone())
            .collect();
        // Rows and columns that no window covers (k does not divide the input) get zeros.
        let full = RingTensor::unpool_windows(&p, k);
        let f = full.shape();
        full.gather(&Gather::pad2d(f, [0, 0, shape[1] - f[1], shape[2] - f[2]]))
    });
    Ok((
        pooled.max,
        refresh(ctx, &SharedTensor::new(shape, 0, share)),
    ))
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
