//! A party's view of a secret-shared tensor (2-out-of-2 additive shares over Z_{2^64} on P0 and
//! P1, the shape only on P2) and the Beaver mask memoised on it (see [`super::beaver`]): the
//! type every protocol on shared tensors (Pond, SecureNN) computes with.

use crate::channel::PartyId;
use crate::ring::RingTensor;
use std::cell::RefCell;
use std::rc::Rc;

/// A mask: on a server its mask share and the opened masked value; on the helper the whole
/// mask.
#[derive(Clone)]
pub(crate) enum Mask {
    Server {
        a: RingTensor,
        alpha: RingTensor,
    },
    Helper {
        a: RingTensor,
    },
    /// Being masked by an operation that has not finished: a concurrent branch that needs the
    /// same tensor must not mask it again (the parties could pick different branches).
    Pending,
}

/// What a product with an operand known to one server memoises on that operand (see
/// [`super::known_operand`]): its owner has sent the helper F = W - B0 once, the other server
/// keeps B0 (from the P0-P1 seed), the helper keeps F.
#[derive(Clone)]
pub(crate) enum KnownMemo {
    /// On the owner: F went to the helper.
    Sent,
    /// On the other server: B0.
    Server(RingTensor),
    /// On the helper: F.
    Helper(RingTensor),
    /// On the helper, while F is on its way: a concurrent branch must not wait for it again.
    Pending,
    /// On the helper: F was sent ahead ([`super::known_operand::prefetch`]) under this
    /// operation; the first product receives it there.
    Incoming(crate::channel::Ctx),
}

/// A party's view of a private tensor: a share on P0 and P1, only the shape on P2; plus the
/// memoised Beaver mask (see [`super::beaver`]).
#[derive(Clone)]
pub struct SharedTensor {
    pub(super) shape: Vec<usize>,
    pub(super) frac: u32,
    pub(super) share: Option<RingTensor>,
    pub(crate) mask: Rc<RefCell<Option<Mask>>>,
    /// Public bound on the values, from the range analysis: every |value| < 2^(width − 1) in
    /// ring units, so comparisons need only `width` bits
    /// ([`crate::protocol::securenn::narrow_drelu`]). `None`: any ring element (64 bits).
    pub(super) width: Option<u32>,
    /// The server that knows the value in the clear, holding it as its share while the other
    /// server's share is zero (public metadata: every party knows it).
    pub(crate) known_by: Option<PartyId>,
    /// What products with this tensor as the known operand memoised.
    pub(crate) known_memo: Rc<RefCell<Option<KnownMemo>>>,
}

impl std::fmt::Debug for SharedTensor {
    // Shape and precision only: the share is secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedTensor{:?}/{}", self.shape, self.frac)
    }
}

impl SharedTensor {
    /// A tensor from this party's share (`None` on P2). The share must have `shape`.
    pub fn new(shape: &[usize], frac: u32, share: Option<RingTensor>) -> Self {
        if let Some(s) = &share {
            assert_eq!(s.shape(), shape, "share shape");
        }
        Self {
            shape: shape.to_vec(),
            frac,
            share,
            mask: Rc::default(),
            width: None,
            known_by: None,
            known_memo: Rc::default(),
        }
    }

    /// The bits a comparison of these values needs: the declared bound's or the ring's 64.
    pub fn compare_width(&self) -> u32 {
        self.width.unwrap_or(64)
    }

    /// The same tensor (and mask) declared bounded by |value| < 2^(width − 1) (2..=64).
    pub fn with_compare_width(&self, width: u32) -> Self {
        assert!((2..=64).contains(&width), "compare width {width}");
        Self {
            width: Some(width),
            ..self.clone()
        }
    }

    /// The server that knows this tensor in the clear (its share is the value, the other
    /// server's is zero), if any.
    pub fn known_by(&self) -> Option<PartyId> {
        self.known_by
    }

    /// The same tensor marked as known to `server` (the caller guarantees the shares are the
    /// value at `server` and zero at the other server).
    pub(crate) fn known_to(mut self, server: Option<PartyId>) -> Self {
        self.known_by = server;
        self
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Fractional bits (0 for integers such as comparison bits and indices).
    pub fn frac(&self) -> u32 {
        self.frac
    }

    /// This party's share (`None` on P2).
    pub fn share(&self) -> Option<&RingTensor> {
        self.share.as_ref()
    }

    /// The same share read with other fractional bits (no arithmetic; still known to whom it
    /// was).
    pub fn with_frac(&self, frac: u32) -> Self {
        Self::new(&self.shape, frac, self.share.clone()).known_to(self.known_by)
    }

    /// Apply a local data movement (reshape, gather, padding: zeros stay zeros) to the share;
    /// a tensor known to a server stays known to it.
    pub(crate) fn move_share(
        &self,
        shape: &[usize],
        f: impl FnOnce(&RingTensor) -> RingTensor,
    ) -> Self {
        self.map_share(shape, self.frac, f).known_to(self.known_by)
    }

    /// Apply a local linear map to the share (P2 holds none).
    pub(crate) fn map_share(
        &self,
        shape: &[usize],
        frac: u32,
        f: impl FnOnce(&RingTensor) -> RingTensor,
    ) -> Self {
        Self::new(shape, frac, self.share.as_ref().map(f))
    }

    pub(super) fn zip_share(
        &self,
        o: &Self,
        f: impl FnOnce(&RingTensor, &RingTensor) -> RingTensor,
    ) -> Self {
        Self::new(
            &self.shape,
            self.frac,
            self.share
                .as_ref()
                .zip(o.share.as_ref())
                .map(|(a, b)| f(a, b)),
        )
    }
}
