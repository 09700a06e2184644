//! `securenn train`: plaintext training of a built-in model, as the bundled weights were made.

use super::*;
use securenn::data::Split;
use securenn::data::{DataSource, Mnist};
use securenn::nn::weights_file;

#[derive(clap::Args)]
pub(crate) struct TrainArgs {
    /// Built-in model.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(securenn::models::BUILTIN))]
    model: String,
    /// Passes over the training split (default: the trainer's).
    #[arg(long)]
    epochs: Option<usize>,
    /// Minibatch size (default: the trainer's).
    #[arg(long)]
    batch: Option<usize>,
    /// Adam learning rate (default: the trainer's).
    #[arg(long)]
    learning_rate: Option<f64>,
    /// Seed of the initial weights and the shuffling.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// MNIST CSV (gzipped if it ends in .gz; 785 comma-separated columns, a header row skipped);
    /// default: the bundled sample. Split as the bundled sample is: the last fifth of each
    /// digit's images is held out for the test accuracy, the rest trains.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Where the label is in each line of the --data file [default: last].
    #[arg(long, value_enum, requires = "data")]
    label_column: Option<LabelColumnArg>,
    /// Output file; default: models/<model>.safetensors in the source tree the binary was built from.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Overwrite the output file if it exists.
    #[arg(long)]
    force: bool,
}

pub(crate) fn run(a: TrainArgs) -> Result<()> {
    use securenn::nn::train::{TrainConfig, accuracy, train};
    let model = securenn::models::by_name(&a.model).expect("clap checked the name");
    let out = match a.out.clone() {
        Some(out) => out,
        None => securenn::models::source_weights_path(&a.model).with_context(|| {
            format!(
                "give --out FILE: the default, models/{}.safetensors in the source tree this \
                 binary was built from, is not here (the bundled weights are built into the binary)",
                a.model
            )
        })?,
    };
    if out.exists() && !a.force {
        bail!("{} exists; pass --force to overwrite it", out.display());
    }
    let mut cfg = TrainConfig {
        seed: a.seed,
        ..TrainConfig::default()
    };
    if let Some(e) = a.epochs {
        cfg.epochs = e;
    }
    if let Some(b) = a.batch {
        cfg.batch = b;
    }
    if let Some(lr) = a.learning_rate {
        cfg.learning_rate = lr;
    }
    let path = DataSource::file_or_bundled(a.data.as_deref());
    let column = a
        .label_column
        .map_or(securenn::data::LabelColumn::Last, LabelColumnArg::column);
    let file = Mnist::read_csv(path.clone(), column)?;
    if let Some(h) = &file.header {
        eprintln!("{path}: the first line is not numbers: skipped it as a header row ({h})");
    }
    let all = file.data;
    let pick = |split| {
        let idx = all.split_order(split);
        Mnist {
            images: idx.iter().map(|&i| all.images[i].clone()).collect(),
            labels: idx.iter().map(|&i| all.labels[i]).collect(),
        }
    };
    let (train_set, test_set) = (pick(Split::Train), pick(Split::Test));
    if train_set.images.is_empty() || test_set.images.is_empty() {
        bail!(
            "{path}: too few images to train on: {} in the training split, {} held out for the \
             test (the last fifth of each digit's images)",
            train_set.images.len(),
            test_set.images.len()
        );
    }
    eprintln!(
        "securenn train: network {} on {} training images of {}, {} epochs, batch {}, Adam lr {}, seed {}",
        a.model,
        train_set.labels.len(),
        path,
        cfg.epochs,
        cfg.batch,
        cfg.learning_rate,
        cfg.seed
    );
    let t0 = std::time::Instant::now();
    let weights = train(&model, &train_set, &cfg, &mut |e| {
        eprintln!(
            "  epoch {:>2}: loss {:.4}, training accuracy {:.2}% ({:.1} s)",
            e.epoch,
            e.loss,
            100.0 * e.train_accuracy,
            t0.elapsed().as_secs_f64()
        )
    })?;
    let test = accuracy(&model, &weights, &test_set)?;
    println!(
        "test accuracy {:.2}% on {} images (float model)",
        100.0 * test,
        test_set.labels.len()
    );
    let meta = std::collections::HashMap::from([
        ("model".to_string(), a.model.clone()),
        ("epochs".to_string(), cfg.epochs.to_string()),
        ("batch".to_string(), cfg.batch.to_string()),
        ("learning_rate".to_string(), cfg.learning_rate.to_string()),
        ("seed".to_string(), cfg.seed.to_string()),
        (
            "train_images".to_string(),
            train_set.labels.len().to_string(),
        ),
        ("test_accuracy".to_string(), format!("{test:.4}")),
        (
            "command".to_string(),
            format!("securenn train --model {} --seed {}", a.model, cfg.seed),
        ),
    ]);
    weights_file::save(&out, &weights, meta, a.force)?;
    eprintln!("weights written to {}", out.display());
    Ok(())
}
