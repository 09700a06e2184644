//! Secure training against its plaintext fixed-point twin: the same iterations on the same
//! numbers, the secure run within a few ulps per weight.

use securenn::data::{DataSource, Mnist, Split};
use securenn::infer::{Layout, ProtocolKind};
use securenn::models::{network_a, network_b, network_c};
use securenn::nn::{Model, Weights};
use securenn::party::{Network, PartyConfig};
use securenn::training::checkpoint;
use securenn::training::{TrainReport, TrainSpec, run_training};

#[path = "common/files.rs"]
mod files;
use files::Scratch;

fn spec(protocol: ProtocolKind, name: &str, model: Model, batch: usize, iters: usize) -> TrainSpec {
    let train = Mnist::load(DataSource::Bundled, Split::Train, 0, 64).unwrap();
    TrainSpec {
        protocol,
        model_name: name.into(),
        weights: model.init_weights(7).unwrap(),
        model,
        layout: Layout::Default,
        train,
        test: Mnist::default(),
        epochs: 1,
        batch,
        learning_rate: 1.0 / 32.0,
        lr_halve_every: None,
        seed: 5,
        iterations: Some(iters),
        data_owner: securenn::channel::P0,
        model_owner: securenn::channel::P1,
        config: PartyConfig::default(),
        network: Network::Memory,
        network_name: "none".into(),
        checkpoint_dir: None,
        resume: false,
    }
}

/// Largest |secure − twin| over every weight, in ulps (2^-13).
fn max_ulps(a: &Weights, b: &Weights) -> f64 {
    let mut worst: f64 = 0.0;
    for ((na, ta), (nb, tb)) in a.tensors.iter().zip(&b.tensors) {
        assert_eq!(na, nb);
        for (x, y) in ta.iter().zip(tb.iter()) {
            worst = worst.max((x - y).abs() * 8192.0);
        }
    }
    worst
}

fn both(
    name: &str,
    model: Model,
    batch: usize,
    iters: usize,
    layout: Layout,
) -> (TrainReport, TrainReport) {
    let mut s = spec(ProtocolKind::SecureNn, name, model.clone(), batch, iters);
    s.layout = layout;
    let secure = run_training(&s, None).unwrap();
    s.protocol = ProtocolKind::Plaintext;
    let twin = run_training(&s, None).unwrap();
    (secure, twin)
}

#[test]
fn one_iteration_of_network_a_equals_the_twin() {
    for layout in [Layout::Default, Layout::Paper] {
        let (secure, twin) = both("a", network_a(), 4, 1, layout);
        let (w, t) = (secure.weights.unwrap(), twin.weights.unwrap());
        let init = network_a().init_weights(7).unwrap();
        let ulps = max_ulps(&w, &t);
        assert!(ulps <= 4.0, "{layout:?}: {ulps} ulps");
        // And it moved the weights.
        assert!(
            max_ulps(&w, &init) > 10.0,
            "{layout:?}: the weights did not move"
        );
        assert!(secure.bytes_total > 0);
    }
}

#[test]
fn one_iteration_of_networks_b_and_c_equals_the_twin() {
    for (name, model) in [("b", network_b()), ("c", network_c())] {
        let (secure, twin) = both(name, model.clone(), 2, 1, Layout::Default);
        let (w, t) = (secure.weights.unwrap(), twin.weights.unwrap());
        let ulps = max_ulps(&w, &t);
        assert!(ulps <= 8.0, "{name}: {ulps} ulps");
        assert!(
            max_ulps(&w, &model.init_weights(7).unwrap()) > 2.0,
            "{name}: no change"
        );
    }
}

#[test]
fn one_iteration_of_an_imported_conv_model_equals_the_twin() {
    // LeNet with batch normalisation folded into its convolutions and dense layer, exported by
    // PyTorch; it ends with a ReLU, which becomes the approximate softmax's own.
    let imported =
        securenn::onnx::import(std::path::Path::new("tests/fixtures/onnx/lenet_bn.onnx")).unwrap();
    let mut s = spec(
        ProtocolKind::SecureNn,
        "lenet_bn",
        imported.model.clone(),
        2,
        1,
    );
    s.weights = imported.weights.clone();
    let secure = run_training(&s, None).unwrap();
    s.protocol = ProtocolKind::Plaintext;
    let twin = run_training(&s, None).unwrap();
    let (w, t) = (secure.weights.unwrap(), twin.weights.unwrap());
    let ulps = max_ulps(&w, &t);
    assert!(ulps <= 8.0, "{ulps} ulps");
    assert!(max_ulps(&w, &imported.weights) > 2.0, "no change");
}

#[test]
fn costs_add_up_per_phase_and_runs_are_deterministic() {
    let s = spec(ProtocolKind::SecureNn, "a", network_a(), 8, 2);
    let a = run_training(&s, None).unwrap();
    let b = run_training(&s, None).unwrap();
    assert_eq!(a.weights, b.weights, "same seed, same weights");
    assert_eq!((a.bytes_total, a.rounds), (b.bytes_total, b.rounds));
    assert_eq!(a.layers, b.layers);
    let c = run_training(
        &TrainSpec {
            seed: 6,
            ..s.clone()
        },
        None,
    )
    .unwrap();
    assert_ne!(
        a.weights, c.weights,
        "another seed, another shuffle and other shares"
    );
    // Every byte and round is attributed to one phase and layer.
    let bytes: u64 = a.layers.iter().map(|l| l.bytes).sum();
    let rounds: u64 = a.layers.iter().map(|l| l.rounds).sum();
    assert_eq!(bytes, a.bytes_total);
    assert_eq!(rounds, a.rounds);
    for phase in ["forward", "asm", "backward", "reveal"] {
        assert!(
            a.layers.iter().any(|l| l.phase == phase && l.bytes > 0),
            "{phase} missing: {:?}",
            a.layers
        );
    }
    // The backward pass of every dense layer moves bytes and the first one adds rounds after
    // the others (it is reached last).
    let backward: Vec<_> = a.layers.iter().filter(|l| l.phase == "backward").collect();
    assert_eq!(backward.len(), 5, "{backward:?}");
    assert!(
        backward.iter().all(|l| l.bytes > 0 && l.rounds >= 1),
        "{backward:?}"
    );
    assert_eq!(a.iterations, 2);
}

#[test]
fn what_cannot_train_is_refused_before_anything_runs() {
    let run = |s: &TrainSpec| run_training(s, None).map(|_| ()).unwrap_err().to_string();
    let s = spec(ProtocolKind::Pond, "a", network_a(), 4, 1);
    assert!(run(&s).contains("Pond cannot train"), "{}", run(&s));
    // LeakyRelu (an ONNX fixture): the layer is named.
    let imported = securenn::onnx::import(std::path::Path::new(
        "tests/fixtures/onnx/matmul_reshape.onnx",
    ))
    .unwrap();
    let mut s = spec(ProtocolKind::SecureNn, "m", imported.model.clone(), 4, 1);
    s.weights = imported.weights;
    let e = run(&s);
    assert!(
        e.contains("leaky_relu") && e.contains("secure training"),
        "{e}"
    );
    let mut s = spec(ProtocolKind::SecureNn, "a", network_a(), 4, 1);
    s.batch = 0;
    assert!(run(&s).contains("--batch"));
    s.batch = 1000;
    assert!(run(&s).contains("do not fill one batch"), "{}", run(&s));
    s.batch = 4;
    s.learning_rate = f64::NAN;
    assert!(run(&s).contains("--lr"));
    s.learning_rate = 0.5;
    s.train.labels[3] = 12;
    assert!(run(&s).contains("label 12"), "{}", run(&s));
}

#[test]
fn every_trainable_layer_kind_equals_the_twin() {
    // A strided SAME convolution (asymmetric padding, col2im at stride 2), average pooling,
    // padding, a stand-alone bias (ONNX's MatMul + Add), max pooling over windows that do not
    // cover the whole input, on random images with 4 classes.
    use rand::{RngExt, SeedableRng};
    use securenn::nn::Layer;
    use securenn::ring::Padding;
    let model = Model::new(&[13, 13, 2])
        .conv2d(3, 3, 2, Padding::Same) // 7x7x3
        .relu()
        .maxpool(2) // 3x3x3, the last row and column uncovered
        .conv2d(4, 2, 1, Padding::Valid) // 2x2x4
        .avgpool(2) // 1x1x4
        .flatten()
        .pad_to(6)
        .dense(5)
        .then(Layer::Bias)
        .relu()
        .dense(4);
    let mut g = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let train = Mnist {
        images: (0..8)
            .map(|_| {
                (0..13 * 13 * 2)
                    .map(|_| g.random_range(-1.0..1.0))
                    .collect()
            })
            .collect(),
        labels: (0..8).map(|i| (i % 4) as u8).collect(),
    };
    let mut weights = model.init_weights(2).unwrap();
    for (_, t) in &mut weights.tensors {
        t.mapv_inplace(|_| g.random_range(-1.0..1.0));
    }
    let mut s = spec(ProtocolKind::SecureNn, "mixed", model, 4, 2);
    s.train = train;
    s.weights = weights.clone();
    s.learning_rate = 0.25;
    let secure = run_training(&s, None).unwrap();
    s.protocol = ProtocolKind::Plaintext;
    let twin = run_training(&s, None).unwrap();
    let (w, t) = (secure.weights.unwrap(), twin.weights.unwrap());
    let ulps = max_ulps(&w, &t);
    assert!(ulps <= 8.0, "{ulps} ulps");
    // Every parameter tensor moved.
    for ((name, a), (_, b)) in w.tensors.iter().zip(&weights.tensors) {
        let moved = a
            .iter()
            .zip(b.iter())
            .any(|(x, y)| (x - y).abs() > 2.0 / 8192.0);
        assert!(moved, "{name} did not move");
    }
}

#[test]
fn checkpoints_hold_uniform_shares_and_resume_to_the_same_weights() {
    let dir = Scratch::new("train-ckpt");
    let mut s = spec(ProtocolKind::SecureNn, "a", network_a(), 8, 2);
    s.epochs = 2;
    s.checkpoint_dir = Some(dir.0.clone());
    let two = run_training(&s, None).unwrap();
    for party in 0..3u8 {
        let have: Vec<usize> = checkpoint::epochs(&dir.0, party)
            .unwrap()
            .iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(have, [1, 2], "party {party}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let path = &checkpoint::epochs(&dir.0, party).unwrap()[1].1;
            let mode = std::fs::metadata(path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", path.display());
        }
    }
    // The helper holds no shares; a server's shares of the weights look uniform: the top bit
    // of every word is set about half the time (the weights themselves are small numbers,
    // whose top bit is their sign).
    let load = |p: u8| {
        let files = checkpoint::epochs(&dir.0, p).unwrap();
        let bytes = std::fs::read(&files[1].1).unwrap();
        let (c, _): (checkpoint::Checkpoint, usize) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        c
    };
    let (c0, c2) = (load(0), load(2));
    assert!(
        c2.params.iter().all(|t| t.part.is_none()),
        "P2 holds no shares"
    );
    let words: Vec<u64> = c0
        .params
        .iter()
        .flat_map(|t| t.part.clone().unwrap())
        .collect();
    let top = words.iter().filter(|w| *w >> 63 == 1).count() as f64 / words.len() as f64;
    assert!(
        (0.48..0.52).contains(&top),
        "top bit set in {top} of {} words",
        words.len()
    );
    // Three epochs from scratch, and the same after resuming from the second epoch's
    // checkpoint: identical weights.
    let three = TrainSpec {
        epochs: 3,
        checkpoint_dir: None,
        ..s.clone()
    };
    let straight = run_training(&three, None).unwrap();
    let resumed = run_training(
        &TrainSpec {
            epochs: 3,
            resume: true,
            ..s.clone()
        },
        None,
    )
    .unwrap();
    assert_eq!(resumed.resumed_from, 2);
    assert_eq!(resumed.iterations, 2);
    assert_eq!(resumed.weights, straight.weights);
    assert_ne!(two.weights, straight.weights);
    // Another job's checkpoints are refused.
    let other = TrainSpec {
        epochs: 3,
        resume: true,
        learning_rate: 0.125,
        ..s.clone()
    };
    let e = run_training(&other, None).unwrap_err().to_string();
    assert!(e.contains("another training job"), "{e}");
}

#[test]
fn the_json_report_fits_the_schema() {
    let mut s = spec(ProtocolKind::SecureNn, "a", network_a(), 4, 1);
    s.test = Mnist::load(DataSource::Bundled, Split::Test, 0, 10).unwrap();
    s.lr_halve_every = Some(2);
    let secure = run_training(&s, None).unwrap();
    assert_eq!(secure.epoch_stats.len(), 1);
    assert!(secure.epoch_stats[0].test_accuracy.is_some());
    assert!(
        secure
            .layers
            .iter()
            .any(|l| l.phase == "test" && l.bytes > 0)
    );
    s.protocol = ProtocolKind::Plaintext;
    let twin = run_training(&s, None).unwrap();
    // Each party's peak heap, and the twin's one thread's.
    assert!(
        secure.peak_memory_bytes.len() == 3 && secure.peak_memory_bytes.iter().all(|&b| b > 0),
        "{:?}",
        secure.peak_memory_bytes
    );
    assert!(twin.peak_memory_bytes.len() == 1 && twin.peak_memory_bytes[0] > 0);
    assert_eq!(
        secure.epoch_stats[0].test_accuracy, twin.epoch_stats[0].test_accuracy,
        "10 test images: the secure test agrees with the twin's"
    );
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/report.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    for r in [&secure, &twin] {
        let v = serde_json::to_value(r).unwrap();
        let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}");
    }
    let both = serde_json::to_value([&secure, &twin]).unwrap();
    assert!(validator.is_valid(&both));
}
