//! `securenn party`: one party of a deployment over QUIC.

use super::*;
use securenn::channel::PartyId;

/// Arguments of `securenn party`.
#[derive(clap::Args)]
pub(crate) struct PartyArgs {
    /// Deployment file (see `securenn keygen`).
    #[arg(long)]
    config: PathBuf,
    /// This party's id: 0, 1 or 2.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..3))]
    id: u8,
    /// This party's private key (default: party<ID>.key.der beside the deployment file).
    #[arg(long)]
    key: Option<PathBuf>,
    /// Write this party's report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run a deployment whose [job] has a `seed`: every pair seed, mask and share then
    /// derives from it, and everyone who has the file knows it, so the run has no privacy.
    /// For reproducing an experiment, never with real data.
    #[arg(long)]
    insecure_reproducible: bool,
}

pub(crate) fn run(a: PartyArgs) -> Result<()> {
    if let Some(json) = &a.json {
        // Its directory must exist before the job runs (an existing file is still replaced).
        check_output(json, true)?;
    }
    party(
        &a.config,
        a.id,
        a.key.as_deref(),
        a.json.as_deref(),
        a.insecure_reproducible,
    )
}

fn party(
    config: &std::path::Path,
    id: u8,
    key: Option<&std::path::Path>,
    json: Option<&std::path::Path>,
    insecure_reproducible: bool,
) -> Result<()> {
    use securenn::deploy::{Deployment, FixedSeed};
    eprintln!("securenn party {id}: deployment {}", config.display());
    let seed = if insecure_reproducible {
        if let Some(w) = Deployment::load(config)?.insecure_seed_warning(config) {
            eprintln!("warning: {w}");
        }
        FixedSeed::AllowInsecure
    } else {
        FixedSeed::Refuse
    };
    let r = securenn::deploy::run_party(config, PartyId(id), key, seed)?;
    if let (Some(p), Some(acc)) = (&r.predictions, r.accuracy) {
        println!("predictions         {p:?}");
        println!(
            "accuracy            {:.2}% on {} images",
            100.0 * acc,
            p.len()
        );
    }
    println!(
        "party {id} sent       {} bytes in {} messages ({} UDP bytes on the wire), {} rounds, {:.3} s",
        r.bytes_sent, r.messages_sent, r.quic_wire_bytes, r.rounds, r.wall_seconds
    );
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(&r)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
