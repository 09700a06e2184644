//! How a shared-tensor protocol trades the SecureNN paper's byte-exact accounting for fewer bytes
//! and rounds: [`Costing::Paper`] reproduces the paper's Tables 1-2; [`Costing::Optimised`]
//! reuses masks, derives dealt shares from seeds and packs Z_67 values (same results).

/// Which accounting products and comparisons follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Costing {
    /// Ours (and Pond's): masks memoised on tensors, dealt shares derived from seeds, Z_67
    /// values packed. Each is a method below.
    Optimised,
    /// Mask every operand of every product anew, send every dealt share, one byte per Z_67
    /// value: the SecureNN paper's costs.
    Paper,
}

impl Costing {
    /// Whether a tensor's Beaver mask is memoised on it, so that it is opened once (x² in x⁴ and
    /// x⁶, a weight across batches, a comparison bit for both selections of a max step);
    /// otherwise every product masks its operands anew.
    pub fn reuse_masks(self) -> bool {
        self == Self::Optimised
    }

    /// Whether P2 derives P0's share of what it deals in ShareConvert and ComputeMSB (bit
    /// shares, wrap and LSB shares, the shares of β' and η') from the P0-P2 seed instead of
    /// sending it: the paper's PRF trick for triples (Table 2) applied to every deal. P1 still
    /// receives value - share, uniformly random to it since it does not know the P0-P2 seed.
    /// Saves 168 bytes of DReLU's 664 and changes no round.
    pub fn derive_dealt_shares(self) -> bool {
        self == Self::Optimised
    }

    /// Whether DReLU and ReLU run as one masked opening modulo 2^m and one PrivateCompare on
    /// m − 1 bits ([`crate::protocol::securenn::narrow_drelu`]: 3 rounds, about 175 bytes per
    /// element at m = 64 and fewer on narrower bounded values) instead of ShareConvert and
    /// ComputeMSB (Algorithms 4-6: 8 rounds, 419 bytes with the other optimisations).
    pub fn narrow_comparisons(self) -> bool {
        self == Self::Optimised
    }

    /// Whether Z_67 values travel packed in base 67, ten per eight bytes
    /// ([`crate::channel::Z67Wire`]), instead of one byte each as the paper counts them: 20%
    /// fewer bytes for PrivateCompare and the dealt bit shares.
    pub fn pack_z67(self) -> bool {
        self == Self::Optimised
    }
}
