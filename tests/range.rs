//! The fixed-point range checks: scaled-up weights are refused (library and command line),
//! too many fractional bits are refused naming the safe range, weights that round to zero are
//! warned about, the shipped models pass silently, and the worst-case bound is sound.

use securenn::data::{DataSource, Mnist, Split};
use securenn::fixed::FixedPoint;
use securenn::infer::{InferError, InferSpec, ProtocolKind, run_inference};
use securenn::nn::range::{MNIST_INPUT_RANGE, Quantity, RangeError, analyse, observe};
use securenn::nn::{Model, Weights, weights_file};
use securenn::protocol::{ReluKind, TFE_RELU_9};
use std::collections::HashMap;
use std::path::PathBuf;

fn shipped(name: &str) -> (Model, Weights) {
    let model = securenn::models::by_name(name).unwrap();
    let (w, _) = weights_file::load_bundled(name, &model).unwrap();
    (model, w)
}

fn scaled(w: &Weights, s: f64) -> Weights {
    Weights {
        tensors: w
            .tensors
            .iter()
            .map(|(n, t)| (n.clone(), t.mapv(|v| v * s)))
            .collect(),
    }
}

fn spec(name: &str, weights: Option<Weights>, samples: usize) -> InferSpec {
    let (model, w) = shipped(name);
    let data = Mnist::load(DataSource::Bundled, Split::Test, 0, samples).unwrap();
    InferSpec {
        batch: 5,
        ..InferSpec::new(
            ProtocolKind::SecureNn,
            name,
            model,
            weights.unwrap_or(w),
            data,
            3,
        )
    }
}

#[test]
fn weights_scaled_by_1e5_are_refused_unless_the_risk_is_accepted() {
    let (_, w) = shipped("a");
    let mut s = spec("a", Some(scaled(&w, 1e5)), 5);
    match run_inference(&s, None) {
        Err(InferError::Range(e)) => match *e {
            RangeError::Overflow {
                layer, quantity, ..
            } => {
                assert_eq!(layer, "3.dense");
                assert_eq!(quantity, Quantity::Product);
            }
            e => panic!("wrong range error: {e}"),
        },
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("ran with weights scaled by 1e5"),
    }
    s.allow_range_risk = true;
    let r = run_inference(&s, None).unwrap();
    assert_eq!(r.samples, 5);
    let layers: Vec<&str> = r
        .range
        .violations
        .iter()
        .map(|v| v.layer.as_str())
        .collect();
    assert_eq!(layers, ["3.dense", "5.dense", "6.argmax"]);
    assert!(r.range.headroom_bits < 0.0);
    assert!(r.range.warnings.iter().any(|w| w.contains("3.dense")));
}

#[test]
fn frac_bits_beyond_18_are_refused_naming_the_safe_range() {
    assert!(FixedPoint::new(18).is_ok());
    for f in [19, 20, 24, 28, 30] {
        let e = FixedPoint::new(f).unwrap_err().to_string();
        assert!(e.contains("1 to 18") && e.contains("truncation"), "{e}");
    }
}

#[test]
fn weights_of_1e_6_are_warned_about() {
    let (_, w) = shipped("a");
    let s = spec("a", Some(scaled(&w, 1e-6 / 0.05)), 5);
    let r = s.range().unwrap();
    assert!(r.violations.is_empty());
    // Every kernel weight of a trained network is below 2^-14 after this scaling.
    let kernels: u64 = r.layers.iter().map(|l| l.weights).sum();
    assert!(r.vanished_weights * 10 > kernels * 9, "{r:?}");
    for layer in ["1.dense", "3.dense", "5.dense"] {
        assert!(
            r.warnings
                .iter()
                .any(|w| w.starts_with(&format!("layer {layer}")) && w.contains("round to zero")),
            "{layer}: {:?}",
            r.warnings
        );
    }
    // The run still goes ahead (a warning, not a refusal) and reports the same.
    let report = run_inference(&s, None).unwrap();
    assert_eq!(report.range.vanished_weights, r.vanished_weights);
}

#[test]
fn shipped_models_pass_without_warning_at_default_precision() {
    for name in ["a", "b", "c", "d"] {
        let r = spec(name, None, 10).range().unwrap();
        assert!(r.warnings.is_empty(), "{name}: {:?}", r.warnings);
        assert!(r.violations.is_empty(), "{name}");
        r.check().unwrap();
        assert!(r.headroom_bits > 20.0, "{name}: {}", r.headroom_bits);
        assert!(r.expected_wrong_per_inference < 1e-5, "{name}");
        assert_eq!(r.frac_bits, 13);
    }
}

/// The bound from the weights holds for the plaintext fixed-point run on real images.
#[test]
fn the_bound_is_sound_on_real_images() {
    for (name, relu) in [
        ("a", ReluKind::Exact),
        ("c", ReluKind::Exact),
        ("a", ReluKind::Polynomial(TFE_RELU_9.to_vec())),
    ] {
        let s = spec(name, None, 100);
        let (model, w) = shipped(name);
        let fp = FixedPoint::default();
        let images: Vec<f64> = s.data.images.iter().flatten().copied().collect();
        let mut shape = vec![100];
        shape.extend(&model.input);
        let batches = vec![fp.encode_tensor(&shape, &images).unwrap()];
        let observed = observe(&model, &w, fp, &relu, &batches).unwrap();
        let r = analyse(
            &model,
            &w,
            fp,
            MNIST_INPUT_RANGE,
            &relu,
            100,
            Some(&observed),
        )
        .unwrap();
        assert_eq!(r.layers.len(), model.nodes.len());
        for (l, o) in r.layers.iter().zip(&observed) {
            let max = o.iter().copied().fold(0.0, f64::max);
            assert!(max > 0.0, "{name} {}", l.name);
            assert!(max <= l.bound, "{name} {}: {max} > {}", l.name, l.bound);
            assert_eq!(l.observed, Some(max));
            assert!(l.observed_ring_bits.unwrap() <= l.ring_bits + 1e-9);
        }
    }
}

mod common;
use common::securenn_cli as cli;

fn weights_file_scaled(dir: &std::path::Path, s: f64) -> PathBuf {
    let (_, w) = shipped("a");
    let path = dir.join(format!("a-x{s:e}.safetensors"));
    weights_file::save(&path, &scaled(&w, s), HashMap::new(), true).unwrap();
    path
}

#[test]
fn cli_refuses_scaled_weights_and_warns_about_vanishing_ones() {
    let dir = std::env::temp_dir().join(format!("securenn-range-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let big = weights_file_scaled(&dir, 1e5);
    let big = big.to_str().unwrap();
    let base = ["infer", "--model", "a", "--samples", "3", "--seed", "1"];
    let (ok, _, err) = cli(&[&base[..], &["--weights", big]].concat());
    assert!(!ok, "{err}");
    assert!(
        err.contains("fixed-point range") && err.contains("3.dense") && err.contains("2^"),
        "{err}"
    );
    assert!(err.contains("--allow-range-risk"), "{err}");
    let (ok, out, err) = cli(&[&base[..], &["--weights", big, "--allow-range-risk"]].concat());
    assert!(ok, "{err}");
    assert!(err.contains("warning: fixed-point range"), "{err}");
    assert!(out.contains("fixed-point range"), "{out}");

    let tiny = weights_file_scaled(&dir, 1e-6 / 0.05);
    let (ok, _, err) = cli(&[&base[..], &["--weights", tiny.to_str().unwrap()]].concat());
    assert!(ok, "{err}");
    assert!(
        err.contains("warning: fixed-point range") && err.contains("round to zero"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn cli_refuses_frac_bits_28_and_reports_the_range() {
    let (ok, _, err) = cli(&["infer", "--samples", "1", "--frac-bits", "28"]);
    assert!(!ok);
    assert!(err.contains("1 to 18"), "{err}");
    let (ok, out, err) = cli(&[
        "infer",
        "--samples",
        "2",
        "--seed",
        "1",
        "--report",
        "table",
    ]);
    assert!(ok, "{err}");
    assert!(!err.contains("warning"), "{err}");
    assert!(
        out.contains("fixed-point range") && out.contains("headroom") && out.contains("5.dense"),
        "{out}"
    );
}
