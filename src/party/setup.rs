//! Session setup: every pair of parties agrees on a ChaCha seed (P0-P1, P0-P2, P1-P2), and every
//! party derives a local one. The lower party of each pair picks the pair seed and sends it to the
//! higher one: 3 messages of 32 bytes, one round. Over QUIC the channel is TLS-protected.

use crate::channel::{Ctx, P2, PartyId, ProtocolError};
use crate::share::{Seeds, derive_bytes};

/// Where a party's seed contributions come from.
#[derive(Clone, Copy, Debug)]
pub enum SeedSource {
    /// Derived from a scenario seed: reproducible runs and tests. Anyone who knows the scenario
    /// seed knows every pair seed, so this is for experiments, not deployments.
    Fixed(u64),
    /// Fresh operating-system entropy: what a deployment uses.
    Os,
}

impl SeedSource {
    fn bytes(&self, me: PartyId, label: &str) -> [u8; 32] {
        match self {
            Self::Fixed(seed) => derive_bytes(*seed, &format!("{me}/{label}")),
            Self::Os => {
                let mut b = [0u8; 32];
                getrandom::fill(&mut b).expect("operating system entropy is available");
                b
            }
        }
    }
}

/// Run the seed agreement on `ctx` (whose own seeds are not yet set).
pub async fn agree_seeds(ctx: &Ctx, source: SeedSource) -> Result<Seeds, ProtocolError> {
    let ctx = ctx.child("seeds");
    let me = ctx.me();
    let mut pair = [None; 3];
    for peer in 0..=P2.0 {
        let peer = PartyId(peer);
        if peer > me {
            let s = source.bytes(me, &format!("pair{}{}", me.0, peer.0));
            ctx.send(peer, &s)?;
            pair[peer.index()] = Some(s);
        }
    }
    for peer in 0..me.0 {
        let peer = PartyId(peer);
        pair[peer.index()] = Some(ctx.recv::<[u8; 32]>(peer, &()).await?);
    }
    Ok(Seeds::new(me, pair, source.bytes(me, "local")))
}
