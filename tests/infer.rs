//! Secure inference end to end: input shared by the data owner, weights by the model owner,
//! logits revealed to the data owner only; compared with the plaintext and float references.

use securenn::channel::{P0, P2};
use securenn::data::{DataSource, Mnist, Split};
use securenn::infer::{InferSpec, ProtocolKind, run_inference};

fn spec(protocol: ProtocolKind, samples: usize, batch: usize, seed: u64) -> InferSpec {
    let model = securenn::models::network_a();
    let weights = model.init_weights(seed).unwrap();
    let data = Mnist::load(DataSource::Bundled, Split::Test, 0, samples).unwrap();
    InferSpec {
        batch,
        ..InferSpec::new(protocol, "a", model, weights, data, seed)
    }
}

/// Words moved by network A under Pond, derived layer by layer (see the Pond module docs): per
/// image the dense inputs (2·784, 2·128, 2·128), the triples (128, 128, 10), two polynomial
/// ReLUs (10 words per element, 128 elements each) and the revealed logits (10); the weights are
/// masked once per job.
fn network_a_pond_bytes(samples: u64) -> u64 {
    let per_image = 2 * 784 + 128 + 10 * 128 + 2 * 128 + 128 + 10 * 128 + 2 * 128 + 10 + 10;
    let weights = 2 * (784 * 128 + 128 * 128 + 128 * 10);
    (per_image * samples + weights) * 8
}

#[test]
fn pond_inference_agrees_with_plaintext() {
    for (samples, batch) in [(1, 1), (20, 10), (13, 64)] {
        let r = run_inference(&spec(ProtocolKind::Pond, samples, batch, 1), None).unwrap();
        assert_eq!(r.samples, samples);
        assert_eq!(
            r.plaintext_agreement, 1.0,
            "samples {samples} batch {batch}"
        );
        // A handful of truncations per logit, each within an ulp, scaled by the weights.
        assert!(r.max_logit_error.unwrap() < 0.01, "{:?}", r.max_logit_error);
        // The revealed logits are in the report and its JSON, one row of 10 per sample.
        let json = serde_json::to_value(&r).unwrap();
        let rows = json["logits"].as_array().expect("logits in the JSON");
        assert_eq!(rows.len(), samples);
        assert!(rows.iter().all(|l| l.as_array().unwrap().len() == 10));
        assert_eq!(r.bytes_total, network_a_pond_bytes(samples as u64));
        // dense (1) + ReLU (3) + dense (1) + ReLU (3) + dense (1) + reveal (1) per batch.
        let batches = samples.div_ceil(batch) as u64;
        assert_eq!(r.rounds, 10 * batches);
    }
}

#[test]
fn same_seed_same_run_different_owners_same_predictions() {
    let a = run_inference(&spec(ProtocolKind::Pond, 10, 5, 7), None).unwrap();
    let b = run_inference(&spec(ProtocolKind::Pond, 10, 5, 7), None).unwrap();
    assert_eq!(a.predictions, b.predictions);
    assert_eq!(
        (a.bytes_total, a.rounds, a.messages),
        (b.bytes_total, b.rounds, b.messages)
    );
    assert_eq!(format!("{:?}", a.links), format!("{:?}", b.links));
    // The producer as data owner pays one word per input element to share it.
    let mut s = spec(ProtocolKind::Pond, 10, 5, 7);
    s.data_owner = P2;
    s.model_owner = P0;
    let c = run_inference(&s, None).unwrap();
    assert_eq!(c.plaintext_agreement, 1.0);
    assert_eq!(c.predictions, a.predictions);
    assert!(c.bytes_total > a.bytes_total);
}

#[test]
fn plaintext_protocol_agrees_with_float() {
    let r = run_inference(&spec(ProtocolKind::Plaintext, 5, 5, 3), None).unwrap();
    assert_eq!(r.bytes_total, 0);
    assert_eq!(r.float_agreement, 1.0);
}

/// SecureNN is exact: its logits differ from the plaintext fixed-point model's only by the local
/// truncations of the linear layers, and max pooling works.
#[test]
fn securenn_inference_with_max_pooling() {
    let mut s = spec(ProtocolKind::SecureNn, 4, 2, 5);
    s.model = securenn::models::network_b();
    s.model_name = "b".into();
    s.weights = s.model.init_weights(5).unwrap();
    let r = run_inference(&s, None).unwrap();
    assert_eq!(r.plaintext_agreement, 1.0);
    assert_eq!(r.max_logit_error, None, "only the class is revealed");
    assert!(r.logits.is_empty());
    assert!(serde_json::to_value(&r).unwrap().get("logits").is_none());
    // Per-layer costs add up to the total, and rounds too.
    assert_eq!(r.layers.iter().map(|l| l.bytes).sum::<u64>(), r.bytes_total);
    assert_eq!(r.layers.iter().map(|l| l.rounds).sum::<u64>(), r.rounds);
    let mut p = s.clone();
    p.protocol = ProtocolKind::Pond;
    let e = run_inference(&p, None).unwrap_err().to_string();
    assert!(e.contains("maxpool") && e.contains("securenn"), "{e}");
}

#[test]
fn bad_specs_are_errors() {
    let mut s = spec(ProtocolKind::Pond, 2, 1, 3);
    s.batch = 0;
    assert!(run_inference(&s, None).is_err());
    let mut s = spec(ProtocolKind::Pond, 2, 1, 3);
    s.weights.tensors[0].1 = ndarray::ArrayD::zeros(ndarray::IxDyn(&[2, 2]));
    let e = run_inference(&s, None).unwrap_err().to_string();
    assert!(
        e.contains("1.dense.kernel") && e.contains("[784, 128]"),
        "{e}"
    );
}

/// The same secure inference of network A over memory, the simulator (the paper's WAN) and QUIC
/// on 127.0.0.1: identical predictions, envelope bytes and rounds; the simulator adds virtual
/// time, QUIC its own wire bytes.
#[test]
fn network_a_over_every_transport() {
    use securenn::party::Network;
    use securenn_transports::sim::{LinkSpec, SimConfig};
    let mut runs = Vec::new();
    for network in [
        Network::Memory,
        Network::Sim(SimConfig::uniform(3, LinkSpec::preset("wan").unwrap())),
        Network::QuicLocalhost,
    ] {
        let mut s = spec(ProtocolKind::SecureNn, 6, 3, 11);
        s.network = network;
        runs.push(run_inference(&s, None).unwrap());
    }
    for r in &runs[1..] {
        assert_eq!(r.predictions, runs[0].predictions);
        assert_eq!(
            (r.bytes_total, r.rounds, r.messages),
            (runs[0].bytes_total, runs[0].rounds, runs[0].messages)
        );
    }
    assert!(runs[0].virtual_seconds.is_none() && runs[2].virtual_seconds.is_none());
    // 2 batches of network A: 2 × (dense, ReLU, dense, ReLU, dense, argmax, reveal) rounds of at
    // least 29 ms one way each.
    assert!(runs[1].virtual_seconds.unwrap() > runs[1].rounds as f64 * 0.029);
    assert!(runs[2].quic_wire_bytes.unwrap() > runs[2].bytes_total);
}

#[test]
fn every_party_has_its_peak_memory() {
    let s = InferSpec {
        batch: 16,
        ..spec(ProtocolKind::SecureNn, 16, 16, 3)
    };
    let r = run_inference(&s, None).unwrap();
    let m = &r.peak_memory_bytes;
    assert_eq!(m.len(), 3, "{m:?}");
    // At least the batch's shares of the first layer's input: 16 images of 784 words.
    assert!(m.iter().all(|&b| b > 16 * 784 * 8), "{m:?}");
    // The helper does other work than the servers: never the same figure.
    assert!(m[2] != m[0] && m[2] != m[1], "{m:?}");
    // In the JSON, as the schema says.
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["peak_memory_bytes"].as_array().unwrap().len(), 3);
    // A plaintext run: one figure, its thread's.
    let p = run_inference(&spec(ProtocolKind::Plaintext, 4, 4, 3), None).unwrap();
    assert!(p.peak_memory_bytes.len() == 1 && p.peak_memory_bytes[0] > 0);
}

/// `--without`: each of the default layout's levers off, alone and all together, gives the same
/// predictions as the plaintext reference and moves more bytes; the report says what was off;
/// the paper layout and Pond refuse it.
#[test]
fn levers_off_agree_and_cost_more() {
    use securenn::infer::{InferError, Layout, Lever};
    let base = run_inference(&spec(ProtocolKind::SecureNn, 4, 2, 3), None).unwrap();
    assert_eq!(base.plaintext_agreement, 1.0);
    assert!(base.without.is_empty());
    assert!(
        base.comparison_widths
            .iter()
            .any(|w| w.is_some_and(|w| w < 64))
    );
    let all = vec![
        Lever::NarrowComparisons,
        Lever::BoundedWidths,
        Lever::KnownOperands,
    ];
    for without in all.iter().map(|&l| vec![l]).chain([all.clone()]) {
        let r = run_inference(
            &InferSpec {
                without: without.clone(),
                ..spec(ProtocolKind::SecureNn, 4, 2, 3)
            },
            None,
        )
        .unwrap();
        assert_eq!(r.plaintext_agreement, 1.0, "{without:?}");
        assert_eq!(r.predictions, base.predictions, "{without:?}");
        assert_eq!(r.without, without);
        assert!(
            r.bytes_total > base.bytes_total,
            "{without:?}: {} vs {}",
            r.bytes_total,
            base.bytes_total
        );
        if without.contains(&Lever::BoundedWidths) {
            assert!(r.comparison_widths.iter().all(Option::is_none));
        }
        if without.contains(&Lever::NarrowComparisons) {
            assert!(r.rounds > base.rounds, "{} vs {}", r.rounds, base.rounds);
        }
    }
    for s in [
        InferSpec {
            layout: Layout::Paper,
            ..spec(ProtocolKind::SecureNn, 1, 1, 3)
        },
        spec(ProtocolKind::Pond, 1, 1, 3),
    ] {
        let e = run_inference(
            &InferSpec {
                without: vec![Lever::KnownOperands],
                ..s
            },
            None,
        )
        .unwrap_err();
        assert!(matches!(e, InferError::Spec(_)), "{e}");
        assert!(e.to_string().contains("--without known-operands"), "{e}");
    }
}
