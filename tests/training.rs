//! Secure training against its plaintext fixed-point twin: the same iterations on the same
//! numbers, the secure run within a few ulps per weight.

use securenn::data::{DataSource, Mnist, Split};
use securenn::infer::{Layout, ProtocolKind};
use securenn::models::{network_a, network_b, network_c};
use securenn::nn::{Model, Weights};
use securenn::party::{Network, PartyConfig};
use securenn::training::{TrainReport, TrainSpec, run_training};

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
