//! How a shared-tensor protocol trades the SecureNN paper's byte-exact accounting for fewer bytes
//! and rounds: [`Costing::PAPER`] reproduces the paper's Tables 1-2; [`Costing::OPTIMISED`]
//! reuses masks, derives dealt shares from seeds, packs Z_67 values, compares by one masked
//! opening and keeps server inputs known to their owner (same results). The last two can be
//! turned off one at a time ([`Costing::with_narrow_comparisons`],
//! [`Costing::with_known_operands`]) to measure what each pays.

/// Which accounting products and comparisons follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Costing {
    /// Masks memoised, dealt shares derived, Z_67 packed: the optimisations that come as one.
    optimised: bool,
    narrow_comparisons: bool,
    known_operands: bool,
}

impl Costing {
    /// Ours (and Pond's): every optimisation below.
    pub const OPTIMISED: Self = Self {
        optimised: true,
        narrow_comparisons: true,
        known_operands: true,
    };

    /// Mask every operand of every product anew, send every dealt share, one byte per Z_67
    /// value, Algorithms 4-6 for DReLU, every input shared: the SecureNN paper's costs.
    pub const PAPER: Self = Self {
        optimised: false,
        narrow_comparisons: false,
        known_operands: false,
    };

    /// Whether a tensor's Beaver mask is memoised on it, so that it is opened once (x² in x⁴ and
    /// x⁶, a weight across batches, a comparison bit for both selections of a max step);
    /// otherwise every product masks its operands anew.
    pub fn reuse_masks(self) -> bool {
        self.optimised
    }

    /// Whether P2 derives P0's share of what it deals in ShareConvert and ComputeMSB (bit
    /// shares, wrap and LSB shares, the shares of β' and η') from the P0-P2 seed instead of
    /// sending it: the paper's PRF trick for triples (Table 2) applied to every deal. P1 still
    /// receives value - share, uniformly random to it since it does not know the P0-P2 seed.
    /// Saves 168 bytes of DReLU's 664 and changes no round.
    pub fn derive_dealt_shares(self) -> bool {
        self.optimised
    }

    /// Whether DReLU and ReLU run as one masked opening modulo 2^m and one PrivateCompare on
    /// m − 1 bits ([`crate::protocol::securenn::narrow_drelu`]: 3 rounds, about 175 bytes per
    /// element at m = 64 and fewer on narrower bounded values) instead of ShareConvert and
    /// ComputeMSB (Algorithms 4-6: 8 rounds, 419 bytes with the other optimisations).
    pub fn narrow_comparisons(self) -> bool {
        self.optimised && self.narrow_comparisons
    }

    /// Whether Z_67 values travel packed in base 67, ten per eight bytes
    /// ([`crate::channel::Z67Wire`]), instead of one byte each as the paper counts them: 20%
    /// fewer bytes for PrivateCompare and the dealt bit shares.
    pub fn pack_z67(self) -> bool {
        self.optimised
    }

    /// Whether a server's inputs stay known to it (value and zero) and products with them take
    /// [`crate::protocol::known_operand`]'s protocol instead of a Beaver triple (SecureNN; Pond
    /// shares every input).
    pub fn known_operands(self) -> bool {
        self.optimised && self.known_operands
    }

    /// This accounting with [`Costing::narrow_comparisons`] on or off (off: Algorithms 4-6 with
    /// the other optimisations). No effect on [`Costing::PAPER`].
    pub fn with_narrow_comparisons(self, on: bool) -> Self {
        Self {
            narrow_comparisons: on,
            ..self
        }
    }

    /// This accounting with [`Costing::known_operands`] on or off (off: every input shared,
    /// every product a Beaver product). No effect on [`Costing::PAPER`].
    pub fn with_known_operands(self, on: bool) -> Self {
        Self {
            known_operands: on,
            ..self
        }
    }
}
