//! SecureNN (Wagh, Gupta, Chandran, PETS 2019): P0 and P1 hold additive shares over Z_{2^64},
//! P2 assists. Linear layers are Beaver products with PRF-derived triples (Algorithm 1, shared
//! with Pond in [`super::beaver`]); non-linear layers are exact, from secret-shared comparison:
//! PrivateCompare over Z_67 ([`private_compare`], Alg. 3), ShareConvert to the odd ring
//! ([`share_convert`], Alg. 4), ComputeMSB ([`compute_msb`], Alg. 5), DReLU and ReLU
//! ([`relu`], Alg. 6-7), SelectShare ([`select_share`], Alg. 2), Maxpool and its derivative
//! ([`maxpool`], Alg. 9, 10, 12) and Division ([`division`], Alg. 8).
//!
//! Comparison bits and max indices are integer shares (0/1, 0..n-1), so selections need no
//! truncation and can never drift by an ulp. Every operation ends with freshly re-randomised
//! shares (the paper's zero shares u_j), which costs no communication. Inputs, reveal and the
//! linear layers are the shared-tensor machinery of [`super::shared`].

pub mod bits;
pub mod compute_msb;
pub mod division;
pub mod maxpool;
pub mod narrow_drelu;
pub mod private_compare;
pub mod relu;
pub mod select_share;
pub mod share_convert;

use super::ProtocolError;
use super::costing::Costing;
use super::shared::{SharedProtocol, SharedTensor};
use crate::channel::Ctx;
use crate::ring::Window;
pub use maxpool::MaxStrategy;

/// What a convolution masks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvMasking {
    /// The im2col matrix, as the paper (Conv2d = MatMul after im2col: the f² blow-up of the
    /// input travels).
    Im2col,
    /// The image itself (convolution is bilinear, so the blow-up stays local).
    Image,
}

/// The SecureNN backend.
#[derive(Clone, Copy, Debug)]
pub struct SecureNn {
    /// [`Costing::PAPER`] masks every operand of every product anew, as the paper counts;
    /// [`Costing::OPTIMISED`] memoises masks (a weight is opened once per job, a comparison bit
    /// once for both selections of a max step).
    pub costing: Costing,
    /// Sequential maxima (the paper) or a balanced tree, over pooling windows.
    pub max: MaxStrategy,
    /// The same for the prediction's argmax, where all pairs at once also fit.
    pub argmax: MaxStrategy,
    pub conv: ConvMasking,
    /// Quotient digits per iteration of Division (training's approximate softmax).
    pub division: division::Radix,
}

impl SecureNn {
    /// The paper's accounting: fresh masks, sequential maxima, masked im2col matrices, one
    /// quotient bit per division step. Every operation moves exactly the bytes of the paper's
    /// Tables 1-2.
    pub fn paper() -> Self {
        Self {
            costing: Costing::PAPER,
            max: MaxStrategy::Sequential,
            argmax: MaxStrategy::Sequential,
            conv: ConvMasking::Im2col,
            division: division::Radix::Two,
        }
    }

    /// Ours: reused masks, tree maxima over windows, all-pairs argmax, masked images, radix-4
    /// division. Same results, fewer bytes (but for the argmax's few hundred and the
    /// division's extra comparisons) and fewer rounds.
    pub fn optimised() -> Self {
        Self {
            costing: Costing::OPTIMISED,
            max: MaxStrategy::Tree,
            argmax: MaxStrategy::AllPairs,
            conv: ConvMasking::Image,
            division: division::Radix::Four,
        }
    }
}

impl Default for SecureNn {
    /// [`SecureNn::optimised`].
    fn default() -> Self {
        Self::optimised()
    }
}

impl SharedProtocol for SecureNn {
    fn name(&self) -> &'static str {
        "securenn"
    }

    fn costing(&self) -> Costing {
        self.costing
    }

    fn refresh_products(&self) -> bool {
        true
    }

    fn conv_masks_im2col(&self) -> bool {
        self.conv == ConvMasking::Im2col
    }

    /// [`Costing::known_operands`]: servers' inputs stay known to them and products with them
    /// take [`crate::protocol::known_operand`]'s protocol. The paper's accounting shares every
    /// input and Beaver-multiplies every product.
    fn known_operands(&self) -> bool {
        self.costing.known_operands()
    }

    async fn relu(&self, ctx: &Ctx, x: &SharedTensor) -> Result<SharedTensor, ProtocolError> {
        relu::relu(ctx, x, self.costing).await
    }

    async fn maxpool(
        &self,
        ctx: &Ctx,
        x: &SharedTensor,
        window: &Window,
    ) -> Result<SharedTensor, ProtocolError> {
        maxpool::pool_max(ctx, x, window, self.costing, self.max).await
    }

    async fn argmax(&self, ctx: &Ctx, x: &SharedTensor) -> Result<SharedTensor, ProtocolError> {
        maxpool::argmax(ctx, x, self.costing, self.argmax).await
    }
}
