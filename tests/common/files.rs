//! Input files for the command-line tests: MNIST CSVs in either label layout, `.npy` tensors,
//! and a scratch directory removed on drop.
#![allow(dead_code)]

use securenn::data::{DataSource, Mnist, Split};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A scratch directory, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        let d = std::env::temp_dir().join(format!("securenn-{name}-{}", std::process::id()));
        std::fs::remove_dir_all(&d).ok();
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }

    /// `name` in the directory, as a string for the command line.
    pub fn path(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// The first `n` images of the bundled sample's test split.
pub fn bundled_test(n: usize) -> Mnist {
    Mnist::load(DataSource::Bundled, Split::Test, 0, n).unwrap()
}

/// `m` as MNIST CSV text (pixels 0-255), the label first or last, with `sep` between columns.
pub fn csv(m: &Mnist, label_first: bool, sep: &str) -> String {
    let mut out = String::new();
    for (im, l) in m.images.iter().zip(&m.labels) {
        let mut cols: Vec<String> = im
            .iter()
            .map(|p| ((p * 255.0).round() as u8).to_string())
            .collect();
        if label_first {
            cols.insert(0, l.to_string());
        } else {
            cols.push(l.to_string());
        }
        out += &cols.join(sep);
        out.push('\n');
    }
    out
}

/// A `.npy` file (format 1.0, C order) of `descr` with `shape` and raw little-endian `data`.
pub fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: String = shape.iter().map(|d| format!("{d}, ")).collect();
    let mut h = format!(
        "{{'descr': '{descr}', 'fortran_order': False, 'shape': ({}), }}",
        dims.trim_end()
    );
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((h.len() as u16).to_le_bytes());
    out.extend(h.as_bytes());
    out.extend(data);
    out
}

/// `m`'s images as float32 `.npy` of shape N × 784, and its labels as int64 `.npy`.
pub fn write_npy(m: &Mnist, images: &Path, labels: &Path) {
    let x: Vec<u8> = m
        .images
        .iter()
        .flatten()
        .flat_map(|&v| (v as f32).to_le_bytes())
        .collect();
    std::fs::write(images, npy("<f4", &[m.images.len(), 784], &x)).unwrap();
    let y: Vec<u8> = m
        .labels
        .iter()
        .flat_map(|&l| (l as i64).to_le_bytes())
        .collect();
    std::fs::write(labels, npy("<i8", &[m.labels.len()], &y)).unwrap();
}

/// Run the binary; a run that has not ended after `guard` seconds is killed and reported as a
/// hang (a guard against hangs only: no test checks how long anything takes).
pub fn run_guarded(args: &[&str], guard: u64) -> Output {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_securenn"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            r.read_to_end(&mut buf).ok();
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(guard);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().ok();
            panic!("securenn {args:?} hung (killed after {guard} s)");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}
