//! `securenn keygen`: a party's key and certificate (or all three, for local runs) and a
//! deployment file template.

use super::*;
use securenn::channel::PartyId;

/// Arguments of `securenn keygen`.
#[derive(clap::Args)]
pub(crate) struct KeygenArgs {
    /// Directory to write into: partyN.key.der, partyN.cert.der and (if it has none)
    /// deploy.toml with `--id N`; party{0,1,2}.{key,cert}.der and deploy.toml without.
    #[arg(long)]
    out: PathBuf,
    /// Write this party's key and certificate only (0, 1 or 2).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..3))]
    id: Option<u8>,
    /// Overwrite existing keys and certificates (never deploy.toml with `--id`).
    #[arg(long)]
    force: bool,
}

pub(crate) fn run(a: KeygenArgs) -> Result<()> {
    keygen(&a.out, a.id, a.force)
}

/// `securenn keygen`: party `id`'s identity, or all three for a local run, and what to do next.
fn keygen(out: &std::path::Path, id: Option<u8>, force: bool) -> Result<()> {
    let Some(id) = id else {
        let files = securenn::deploy::keygen(out, force)?;
        println!(
            "all three keys on one machine: for local runs and tests only; for a real deployment \
             each operator runs `securenn keygen --id N`"
        );
        for f in files {
            println!("wrote {}", f.display());
        }
        return Ok(());
    };
    let files = securenn::deploy::keygen_party(out, PartyId(id), force)?;
    for f in &files {
        println!("wrote {}", f.display());
    }
    let config = out.join("deploy.toml");
    if !files.contains(&config) {
        println!("kept {} (never overwritten)", config.display());
    }
    let others: Vec<String> = (0..3u8)
        .filter(|&i| i != id)
        .map(|i| format!("party{i}.cert.der"))
        .collect();
    println!(
        "next: send party{id}.cert.der (public) to the other two operators and put theirs \
         ({}) beside deploy.toml; agree on one deploy.toml (addresses, job) for all three (a \
         model of your own, `onnx = \"FILE\"` in [job], is needed on the model owner's machine \
         only); then run `securenn party --config {} --id {id}`. Never send party{id}.key.der \
         to anyone: whoever has it can act as party {id}.",
        others.join(", "),
        config.display()
    );
    Ok(())
}
