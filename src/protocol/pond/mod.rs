//! Pond, tf-encrypted's SPDZ-style protocol (Dahl et al. 2018, `tf_encrypted/protocol/pond`):
//! two servers (P0, P1) hold additive shares over Z_{2^64}; a crypto producer (P2) deals Beaver
//! triples. Linear layers are exact, ReLU is a polynomial approximation, pooling is average
//! pooling; max pooling needs exact comparison, which Pond does not have.
//!
//! Costs (words of 8 bytes): masking a tensor x costs 2|x| (each server sends its masked share),
//! once per tensor (masks are memoised and reused); a product z costs |z| more (the producer's
//! dense triple share to server 1; server 0 derives its share from the P0-P2 seed). A matmul
//! m×n·n×v of two fresh tensors therefore moves (2mn + 2nv + mv)·8 bytes, in one round.
//! The shared-tensor machinery lives in [`super::shared`] and [`super::beaver`], shared with
//! SecureNN.

use super::costing::Costing;
use super::shared::{SharedProtocol, SharedTensor};
use super::{ProtocolError, TFE_RELU_9, check_pool, poly_eval};
use crate::channel::Ctx;
use crate::ring::Window;

/// Why Pond refuses a max pool (at the layer, and up front for a job whose model has one).
pub const NO_MAX_POOLING: &str = "Pond has no exact comparison, so no max pooling: use average \
                                  pooling (the -avg models), or --protocol securenn";

/// The Pond backend.
#[derive(Clone, Debug)]
pub struct Pond {
    /// ReLU polynomial, (power, coefficient); tf-encrypted's shipped [-9, 9] fit by default.
    pub relu: Vec<(u32, f64)>,
}

impl Default for Pond {
    fn default() -> Self {
        Self {
            relu: TFE_RELU_9.to_vec(),
        }
    }
}

impl SharedProtocol for Pond {
    fn name(&self) -> &'static str {
        "pond"
    }

    fn costing(&self) -> Costing {
        Costing::OPTIMISED
    }

    fn refresh_products(&self) -> bool {
        false
    }

    async fn relu(&self, ctx: &Ctx, x: &SharedTensor) -> Result<SharedTensor, ProtocolError> {
        poly_eval(self, &ctx.child("relu"), x, &self.relu).await
    }

    async fn maxpool(
        &self,
        ctx: &Ctx,
        x: &SharedTensor,
        window: &Window,
    ) -> Result<SharedTensor, ProtocolError> {
        check_pool(ctx, x.shape(), window)?;
        Err(ProtocolError::Unsupported {
            op: ctx.path().to_string(),
            reason: NO_MAX_POOLING.into(),
        })
    }

    async fn argmax(&self, ctx: &Ctx, _: &SharedTensor) -> Result<SharedTensor, ProtocolError> {
        Err(ProtocolError::Unsupported {
            op: ctx.path().to_string(),
            reason: "Pond has no exact comparison, so no secure argmax: reveal the logits to the \
                     data owner instead"
                .into(),
        })
    }
}
