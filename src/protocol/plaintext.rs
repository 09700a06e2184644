//! The plaintext reference backend: the same model code on the same fixed-point numbers, with no
//! secrecy. Truncation is exact (floor), so a secure backend may differ from it by the ±1 ulp of
//! local truncation per product, and by nothing else.

use super::{
    Protocol, ProtocolError, check_concat, check_conv, check_matmul, check_pool, encode_public,
    poly_eval, product_frac, same_frac, same_shape,
};
use crate::channel::{Ctx, PartyId};
use crate::fixed::{FixedError, truncate_exact};
use crate::ring::{Gather, PadCell, Padding, RingTensor, Window};

/// Which ReLU the reference computes: the exact one (what SecureNN computes) or a polynomial
/// (what Pond computes).
#[derive(Clone, Debug, PartialEq)]
pub enum ReluKind {
    Exact,
    Polynomial(Vec<(u32, f64)>),
}

/// The plaintext reference backend.
#[derive(Clone, Debug)]
pub struct Plaintext {
    pub relu: ReluKind,
}

/// A plaintext fixed-point tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct PlainTensor {
    pub value: RingTensor,
    pub frac: u32,
}

fn plan_error(ctx: &Ctx, e: FixedError) -> ProtocolError {
    ProtocolError::Input {
        op: ctx.path().to_string(),
        reason: e.to_string(),
    }
}

/// Signed comparison of two ring elements (two's complement).
fn signed_max(a: u64, b: u64) -> u64 {
    if (a as i64) >= (b as i64) { a } else { b }
}

impl Plaintext {
    fn product(&self, ctx: &Ctx, x: &PlainTensor, y: &PlainTensor, v: RingTensor) -> PlainTensor {
        let (frac, bits) = product_frac(x.frac, y.frac, ctx.fixed().frac_bits);
        PlainTensor {
            value: if bits > 0 {
                truncate_exact(&v, bits)
            } else {
                v
            },
            frac,
        }
    }
}

impl Protocol for Plaintext {
    type Tensor = PlainTensor;

    fn name(&self) -> &'static str {
        "plaintext"
    }

    fn shape<'a>(&self, x: &'a PlainTensor) -> &'a [usize] {
        x.value.shape()
    }

    fn frac(&self, x: &PlainTensor) -> u32 {
        x.frac
    }

    async fn input(
        &self,
        ctx: &Ctx,
        owner: PartyId,
        value: Option<&RingTensor>,
        shape: &[usize],
        frac: u32,
    ) -> Result<PlainTensor, ProtocolError> {
        let v = value.ok_or_else(|| ProtocolError::Input {
            op: ctx.path().to_string(),
            reason: format!("the plaintext backend needs the value owned by {owner}"),
        })?;
        same_shape(ctx, v.shape(), shape)?;
        Ok(PlainTensor {
            value: v.clone(),
            frac,
        })
    }

    async fn reveal(
        &self,
        _: &Ctx,
        x: &PlainTensor,
        _: PartyId,
    ) -> Result<Option<RingTensor>, ProtocolError> {
        Ok(Some(x.value.clone()))
    }

    fn add(
        &self,
        ctx: &Ctx,
        x: &PlainTensor,
        y: &PlainTensor,
    ) -> Result<PlainTensor, ProtocolError> {
        same_frac(ctx, x.frac, y.frac)?;
        same_shape(ctx, x.value.shape(), y.value.shape())?;
        Ok(PlainTensor {
            value: x.value.add(&y.value),
            frac: x.frac,
        })
    }

    fn sub(
        &self,
        ctx: &Ctx,
        x: &PlainTensor,
        y: &PlainTensor,
    ) -> Result<PlainTensor, ProtocolError> {
        same_frac(ctx, x.frac, y.frac)?;
        same_shape(ctx, x.value.shape(), y.value.shape())?;
        Ok(PlainTensor {
            value: x.value.sub(&y.value),
            frac: x.frac,
        })
    }

    fn add_bias(
        &self,
        ctx: &Ctx,
        x: &PlainTensor,
        b: &PlainTensor,
    ) -> Result<PlainTensor, ProtocolError> {
        same_frac(ctx, x.frac, b.frac)?;
        check_bias(ctx, x.value.shape(), b.value.shape())?;
        Ok(PlainTensor {
            value: x.value.add_rows(&b.value),
            frac: x.frac,
        })
    }

    fn add_public(&self, ctx: &Ctx, x: &PlainTensor, c: f64) -> Result<PlainTensor, ProtocolError> {
        let e = encode_public(ctx, c, x.frac)?;
        Ok(PlainTensor {
            value: x.value.map(|v| v.wrapping_add(e)),
            frac: x.frac,
        })
    }

    fn mul_public(&self, ctx: &Ctx, x: &PlainTensor, c: f64) -> Result<PlainTensor, ProtocolError> {
        let plan = ctx
            .fixed()
            .constant_plan(c)
            .map_err(|e| plan_error(ctx, e))?;
        let v = truncate_exact(&x.value, plan.pre_shift).scale(plan.factor);
        Ok(PlainTensor {
            value: truncate_exact(&v, plan.post_shift),
            frac: x.frac,
        })
    }

    fn reshape(&self, x: &PlainTensor, shape: &[usize]) -> PlainTensor {
        PlainTensor {
            value: x.value.clone().reshape(shape),
            frac: x.frac,
        }
    }

    fn pad_last(&self, x: &PlainTensor, to: usize) -> PlainTensor {
        PlainTensor {
            value: super::pad_ring(&x.value, to),
            frac: x.frac,
        }
    }

    fn sum_pool(&self, x: &PlainTensor, window: &Window) -> PlainTensor {
        PlainTensor {
            value: x.value.sum_window(window),
            frac: x.frac,
        }
    }

    fn gather(&self, x: &PlainTensor, g: &Gather) -> PlainTensor {
        PlainTensor {
            value: x.value.gather(g),
            frac: x.frac,
        }
    }

    fn concat(&self, ctx: &Ctx, xs: &[&PlainTensor]) -> Result<PlainTensor, ProtocolError> {
        let shapes: Vec<&[usize]> = xs.iter().map(|x| x.value.shape()).collect();
        let fracs: Vec<u32> = xs.iter().map(|x| x.frac).collect();
        check_concat(ctx, &shapes, &fracs)?;
        Ok(PlainTensor {
            value: RingTensor::concat_last(&xs.iter().map(|x| &x.value).collect::<Vec<_>>()),
            frac: fracs[0],
        })
    }

    async fn mul(
        &self,
        ctx: &Ctx,
        x: &PlainTensor,
        y: &PlainTensor,
    ) -> Result<PlainTensor, ProtocolError> {
        same_shape(ctx, x.value.shape(), y.value.shape())?;
        Ok(self.product(ctx, x, y, x.value.mul(&y.value)))
    }

    async fn matmul(
        &self,
        ctx: &Ctx,
        x: &PlainTensor,
        y: &PlainTensor,
    ) -> Result<PlainTensor, ProtocolError> {
        check_matmul(ctx, x.value.shape(), y.value.shape())?;
        Ok(self.product(ctx, x, y, x.value.matmul(&y.value)))
    }

    async fn conv2d(
        &self,
        ctx: &Ctx,
        x: &PlainTensor,
        f: &PlainTensor,
        stride: usize,
        padding: Padding,
    ) -> Result<PlainTensor, ProtocolError> {
        check_conv(ctx, x.value.shape(), f.value.shape(), stride, padding)?;
        Ok(self.product(ctx, x, f, x.value.conv2d(&f.value, stride, padding)))
    }

    async fn relu(&self, ctx: &Ctx, x: &PlainTensor) -> Result<PlainTensor, ProtocolError> {
        match &self.relu {
            ReluKind::Exact => Ok(PlainTensor {
                value: x.value.map(|v| signed_max(v, 0)),
                frac: x.frac,
            }),
            ReluKind::Polynomial(terms) => poly_eval(self, &ctx.child("relu"), x, terms).await,
        }
    }

    async fn maxpool(
        &self,
        ctx: &Ctx,
        x: &PlainTensor,
        window: &Window,
    ) -> Result<PlainTensor, ProtocolError> {
        check_pool(ctx, x.value.shape(), window)?;
        let mut max: Option<RingTensor> = None;
        for t in 0..window.cells() {
            let part = x
                .value
                .gather(&window.part(x.value.shape(), t, PadCell::Repeat));
            max = Some(match max {
                None => part,
                Some(m) => m.zip_map(&part, signed_max),
            });
        }
        Ok(PlainTensor {
            value: max.expect("a window has cells"),
            frac: x.frac,
        })
    }

    fn bounded(
        &self,
        ctx: &Ctx,
        x: &PlainTensor,
        width: u32,
    ) -> Result<PlainTensor, ProtocolError> {
        let limit = if width >= 64 {
            u64::MAX
        } else {
            1u64 << (width - 1)
        };
        match x
            .value
            .as_slice()
            .iter()
            .position(|&v| (v as i64).unsigned_abs() >= limit && width < 64)
        {
            None => Ok(x.clone()),
            Some(i) => Err(ProtocolError::Input {
                op: ctx.path().to_string(),
                reason: format!(
                    "element {i} leaves the declared comparison bound |x| < 2^{} (ring units): \
                     the range analysis that declared it is unsound",
                    width - 1
                ),
            }),
        }
    }

    async fn argmax(&self, ctx: &Ctx, x: &PlainTensor) -> Result<PlainTensor, ProtocolError> {
        let s = x.value.shape();
        if s.len() != 2 || s[1] == 0 {
            return Err(ProtocolError::Input {
                op: ctx.path().to_string(),
                reason: format!("argmax wants [batch, n] with n > 0, got {s:?}"),
            });
        }
        let idx = Self::argmax_rows(&x.value);
        Ok(PlainTensor {
            value: RingTensor::from_vec(&[s[0]], idx),
            frac: 0,
        })
    }
}

impl Plaintext {
    /// Argmax of each row, the later index among equal values (as the secure protocols).
    pub fn argmax_rows(x: &RingTensor) -> Vec<u64> {
        let n = x.shape()[1];
        x.as_slice()
            .chunks_exact(n)
            .map(|row| {
                let mut best = 0;
                for (i, &v) in row.iter().enumerate() {
                    if v as i64 >= row[best] as i64 {
                        best = i;
                    }
                }
                best as u64
            })
            .collect()
    }
}

pub(crate) fn check_bias(ctx: &Ctx, x: &[usize], b: &[usize]) -> Result<(), ProtocolError> {
    if b.len() != 1 || x.last() != b.first() {
        return Err(ProtocolError::Input {
            op: ctx.path().to_string(),
            reason: format!("a bias of shape {b:?} does not fit the last axis of {x:?}"),
        });
    }
    Ok(())
}
