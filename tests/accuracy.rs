//! The main job's promise, on the bundled trained weights and all 1,000 test images: SecureNN's
//! predictions agree with the plaintext fixed-point model's (≥ 99.9%) and its accuracy is within
//! half a point of the float model's, on every network.

use securenn::data::{DataSource, Mnist, Split};
use securenn::infer::{InferSpec, ProtocolKind, run_inference};
use securenn::nn::weights_file;

fn check(name: &str) {
    let model = securenn::models::by_name(name).unwrap();
    let (weights, _) = weights_file::load_bundled(name, &model).unwrap();
    let data = Mnist::load(DataSource::Bundled, Split::Test, 0, 1000).unwrap();
    let spec = InferSpec {
        batch: 100,
        ..InferSpec::new(ProtocolKind::SecureNn, name, model, weights, data, 1)
    };
    let r = run_inference(&spec, None).unwrap();
    assert_eq!(r.samples, 1000);
    let (accuracy, float_accuracy) = (r.accuracy.unwrap(), r.float_accuracy.unwrap());
    assert!(
        r.plaintext_agreement >= 0.999,
        "{name}: agreement {}",
        r.plaintext_agreement
    );
    assert!(
        (accuracy - float_accuracy).abs() <= 0.005,
        "{name}: {accuracy} vs float {float_accuracy}"
    );
    assert!(
        accuracy > 0.9,
        "{name}: the bundled weights are trained ({accuracy})"
    );
}

#[test]
fn network_a() {
    check("a");
}

#[test]
fn network_b() {
    check("b");
}

#[test]
fn network_c() {
    check("c");
}

#[test]
fn network_d() {
    check("d");
}
