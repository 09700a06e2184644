//! `securenn party`: one party of a deployment over QUIC, showing its peers as they connect,
//! its progress (a bar on a terminal, a line every few seconds otherwise) and a summary; SIGINT
//! or SIGTERM aborts the job at every party, naming this one.

use super::*;
use securenn::channel::PartyId;
use securenn::deploy::{PartyEvent, Watch};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// Write this party's report as JSON to this file (refuses to overwrite it without
    /// --force; its directory must exist: both checked before any peer is contacted).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Overwrite the --json file if it exists.
    #[arg(long, requires = "json")]
    force: bool,
    /// Run a deployment whose [job] has a `seed`: every pair seed, mask and share then
    /// derives from it, and everyone who has the file knows it, so the run has no privacy.
    /// For reproducing an experiment, never with real data.
    #[arg(long)]
    insecure_reproducible: bool,
    /// As the model owner, run even if the fixed-point range analysis of the weights finds a
    /// worst-case value, product or compared difference beyond 2^63 (refused otherwise, before
    /// any peer is contacted); its warnings are logged either way.
    #[arg(long)]
    allow_range_risk: bool,
    /// `table`: after the summary, what this party sent per layer (inference: `weights`,
    /// `input`, each layer, `reveal`) or per phase and layer (training), with the causal
    /// rounds its own messages added; the same rows are in --json (`layers`,
    /// `training.layers`) either way.
    #[arg(long, value_enum)]
    report: Option<PartyReportKind>,
}

/// What `party --report` prints.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum PartyReportKind {
    Table,
}

pub(crate) fn run(a: PartyArgs) -> Result<()> {
    if let Some(path) = &a.json {
        check_output(path, a.force)?;
    }
    party(
        &a.config,
        a.id,
        a.key.as_deref(),
        a.json.as_deref(),
        a.insecure_reproducible,
        a.allow_range_risk,
        a.report.is_some(),
    )
}

/// The exit status of a party stopped by a signal: 128 + its number, as shells report it
/// (130 for SIGINT, 143 for SIGTERM). Every other failure exits with 1.
pub(crate) fn exit_code(e: &anyhow::Error) -> Option<u8> {
    match e
        .downcast_ref::<securenn::deploy::DeployError>()?
        .stopped_by()?
    {
        "SIGINT" => Some(130),
        "SIGTERM" => Some(143),
        _ => Some(1),
    }
}

/// Seconds between progress lines when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// What the party shows as it goes: peers as they connect, then progress.
struct Display {
    id: u8,
    started: Arc<AtomicBool>,
    terminal: bool,
    t0: Instant,
    state: Mutex<(Option<indicatif::ProgressBar>, Instant)>,
}

impl Display {
    fn show(&self, e: PartyEvent) {
        let id = self.id;
        let line = |s: String| BARS.suspend(|| eprintln!("party {id}: {s}"));
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match e {
            PartyEvent::Connected { peer, addr } => line(format!("connected to {peer} at {addr}")),
            PartyEvent::Started { batches } => {
                self.started.store(true, Ordering::SeqCst);
                line(format!(
                    "both peers run the same job; {batches} batches to go"
                ));
                if self.terminal {
                    st.0 = Some(progress_bar(
                        batches,
                        "{prefix} [{bar:40}] {pos}/{len} batches {elapsed_precise} (eta {eta})",
                    ));
                    if let Some(b) = &st.0 {
                        b.set_prefix(format!("party {id}"));
                    }
                }
                st.1 = Instant::now();
            }
            PartyEvent::TrainingStarted {
                epochs,
                iterations,
                train_images,
                test_images,
            } => {
                self.started.store(true, Ordering::SeqCst);
                line(format!(
                    "both peers run the same training job; {epochs} epoch{} of {iterations} \
                     iterations on the data owner's {train_images} training images ({test_images} \
                     test images)",
                    if epochs == 1 { "" } else { "s" }
                ));
                if self.terminal {
                    st.0 = Some(progress_bar(
                        epochs * iterations,
                        "{prefix} [{bar:40}] {pos}/{len} iterations {elapsed_precise} (eta {eta})",
                    ));
                    if let Some(b) = &st.0 {
                        b.set_prefix(format!("party {id}"));
                    }
                }
                st.1 = Instant::now();
            }
            PartyEvent::Iteration {
                epoch,
                iteration,
                of,
            } => {
                if let Some(b) = &st.0 {
                    b.set_position(((epoch - 1) * of + iteration) as u64);
                } else if st.1.elapsed() >= LINE_EVERY {
                    st.1 = Instant::now();
                    line(format!(
                        "epoch {epoch}: {iteration}/{of} iterations done ({:.1} s)",
                        self.t0.elapsed().as_secs_f64()
                    ));
                }
            }
            PartyEvent::Epoch {
                epoch,
                epochs,
                test_accuracy,
                checkpoint_dir,
            } => {
                if epoch == epochs
                    && let Some(b) = &st.0
                {
                    b.finish_and_clear();
                }
                st.1 = Instant::now();
                line(format!(
                    "epoch {epoch}/{epochs} done ({:.1} s){}{}",
                    self.t0.elapsed().as_secs_f64(),
                    test_accuracy.map_or(String::new(), |a| format!(
                        ": test accuracy {:.2}%",
                        100.0 * a
                    )),
                    checkpoint_dir.map_or(String::new(), |d| format!(
                        "; shares checkpointed in {}",
                        d.display()
                    ))
                ));
            }
            PartyEvent::Progress { done, total } => {
                if let Some(b) = &st.0 {
                    b.set_position(done as u64);
                    if done == total {
                        b.finish_and_clear();
                    }
                } else if done == total || st.1.elapsed() >= LINE_EVERY {
                    st.1 = Instant::now();
                    line(format!(
                        "{done}/{total} batches done ({:.1} s)",
                        self.t0.elapsed().as_secs_f64()
                    ));
                }
            }
        }
    }
}

/// Block SIGINT and SIGTERM in this thread (and so in every thread started after it) and take
/// them on a thread of their own: the first one once the job runs stops it (the party tells its
/// peers); before the job starts, after it ends, or a second time, the process exits at once
/// with 128 + the signal's number.
#[cfg(unix)]
fn stop_on_signals(
    id: u8,
    started: Arc<AtomicBool>,
) -> Option<futures::channel::oneshot::Receiver<String>> {
    // SAFETY: the set is a local value initialised by sigemptyset before use; pthread_sigmask
    // only changes this thread's mask. No other thread exists yet, so every thread the party
    // starts inherits the mask and the signals reach only the sigwait below.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return None;
        }
        set
    };
    let (tx, rx) = futures::channel::oneshot::channel();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut tx = Some(tx);
            loop {
                let mut sig: libc::c_int = 0;
                // SAFETY: `set` is initialised and `sig` is a valid place to write to.
                if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                    return;
                }
                let name = if sig == libc::SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
                let stopping = started.load(Ordering::SeqCst)
                    && tx
                        .take()
                        .is_some_and(|tx| tx.send(name.to_string()).is_ok());
                if stopping {
                    BARS.suspend(|| {
                        eprintln!(
                            "party {id}: {name}: stopping the job and telling the other parties \
                             (again to exit at once)"
                        )
                    });
                } else {
                    BARS.suspend(|| eprintln!("party {id}: stopped ({name})"));
                    std::process::exit(128 + sig);
                }
            }
        })
        .ok()?;
    Some(rx)
}

#[cfg(not(unix))]
fn stop_on_signals(
    _: u8,
    _: Arc<AtomicBool>,
) -> Option<futures::channel::oneshot::Receiver<String>> {
    None
}

fn party(
    config: &std::path::Path,
    id: u8,
    key: Option<&std::path::Path>,
    json: Option<&std::path::Path>,
    insecure_reproducible: bool,
    allow_range_risk: bool,
    table: bool,
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
    let started = Arc::new(AtomicBool::new(false));
    let stop = stop_on_signals(id, started.clone());
    let display = Arc::new(Display {
        id,
        started,
        terminal: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        t0: Instant::now(),
        state: Mutex::new((None, Instant::now())),
    });
    let watch = Watch {
        events: Some(Arc::new(move |e| display.show(e))),
        stop,
    };
    let r = securenn::deploy::run_party(config, PartyId(id), key, seed, watch, allow_range_risk)?;
    if let Some(t) = &r.training {
        print_training(&r, t);
    } else {
        print_inference(&r);
    }
    println!(
        "party {id} sent       {} bytes in {} messages ({} UDP bytes on the wire), {} rounds, {:.3} s",
        r.bytes_sent, r.messages_sent, r.quic_wire_bytes, r.rounds, r.wall_seconds
    );
    println!(
        "peak memory         {:.2} MB (heap live at once on this party's thread)",
        r.peak_memory_bytes as f64 / 1e6
    );
    if table {
        print_layers(&r);
    }
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(&r)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// `--report table`: what this party sent per layer, or per phase and layer.
fn print_layers(r: &securenn::deploy::PartyReport) {
    let rows: Vec<(String, String, u64, u64, u64)> = match &r.training {
        Some(t) => t
            .layers
            .iter()
            .map(|l| {
                (
                    l.phase.clone(),
                    l.layer.clone(),
                    l.bytes,
                    l.messages,
                    l.rounds,
                )
            })
            .collect(),
        None => r
            .layers
            .iter()
            .filter(|l| l.messages > 0)
            .map(|l| (l.name.clone(), String::new(), l.bytes, l.messages, l.rounds))
            .collect(),
    };
    let what = if r.training.is_some() {
        "per phase and layer, all epochs and iterations"
    } else {
        "per layer, all batches"
    };
    println!(
        "\nsent by party {} ({what}; rounds: the causal depth its own messages added)",
        r.party
    );
    println!(
        "  {:<24} {:>14} {:>9} {:>7}",
        if r.training.is_some() {
            "phase     layer"
        } else {
            "layer"
        },
        "bytes",
        "messages",
        "rounds"
    );
    for (a, b, bytes, messages, rounds) in rows {
        let name = if b.is_empty() {
            a
        } else {
            format!("{a:<9} {b}")
        };
        println!("  {name:<24} {bytes:>14} {messages:>9} {rounds:>7}");
    }
}

/// The peers line of the summary.
fn print_peers(r: &securenn::deploy::PartyReport) {
    let peers: Vec<String> = r
        .peers
        .iter()
        .map(|(p, a)| format!("P{p} at {a}"))
        .collect();
    println!("peers               {}", peers.join(", "));
}

/// The summary of a training job at this party: at the model owner the test accuracy of every
/// epoch and where the trained weights went.
fn print_training(r: &securenn::deploy::PartyReport, t: &securenn::deploy::PartyTraining) {
    println!(
        "job                 secure training of model {} ({} layout) by {}: {} epoch{} of {} \
         iterations, batch {}, lr {}{}",
        r.model,
        format!("{:?}", t.layout).to_lowercase(),
        r.protocol,
        t.epochs,
        if t.epochs == 1 { "" } else { "s" },
        t.iterations_per_epoch,
        r.batch,
        t.learning_rate,
        t.lr_halve_every
            .map_or(String::new(), |k| format!(" halved every {k} epochs"))
    );
    println!(
        "images              {} training, {} test (the data owner's)",
        t.train_images, t.test_images
    );
    print_peers(r);
    println!(
        "iterations          {} run{}",
        t.iterations,
        if t.resumed_from > 0 {
            format!(", resumed after epoch {}", t.resumed_from)
        } else {
            String::new()
        }
    );
    for e in &t.epoch_stats {
        if let Some(a) = e.test_accuracy {
            println!(
                "epoch {:<13} test accuracy {:.2}% on {} images",
                e.epoch,
                100.0 * a,
                t.test_images
            );
        }
    }
    match (&t.initial_weights, t.resumed_from) {
        (Some(_), e) if e > 0 => {
            println!("initial weights     unused: resumed from the checkpoints of epoch {e}")
        }
        (Some(from), _) => println!("initial weights     {from}"),
        (None, _) => {}
    }
    if let Some(w) = &t.weights_written {
        println!("trained weights     written to {w} (known to this party only)");
    }
    if let Some(d) = &t.checkpoint_dir {
        println!("checkpoints         {d}");
    }
}

/// The summary of an inference job at this party.
fn print_inference(r: &securenn::deploy::PartyReport) {
    println!(
        "job                 {} on model {}, {} images in batches of {}",
        r.protocol, r.model, r.samples, r.batch
    );
    print_peers(r);
    if let (Some(p), Some(acc)) = (&r.predictions, r.accuracy) {
        println!("predictions         {p:?}");
        println!(
            "accuracy            {:.2}% on {} images",
            100.0 * acc,
            p.len()
        );
    }
}
