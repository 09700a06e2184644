//! The binary works anywhere: copied to an empty directory, with the source tree it was built
//! from hidden (an empty tmpfs mounted over it in a private mount namespace), it runs a secure
//! inference on the data and weights built into it, and a three-process QUIC deployment whose
//! data owner reads a label-first CSV of its own (`[job] data`, `label_column`).

use securenn::data::{DataSource, Mnist, Split};
use std::path::Path;
use std::process::Command;

/// Whether this machine lets an unprivileged user hide a directory in a private mount namespace.
fn can_hide(dir: &Path) -> bool {
    Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c"])
        .arg(format!("mount -t tmpfs none '{}'", dir.display()))
        .output()
        .is_ok_and(|o| o.status.success())
}

fn free_ports() -> Vec<u16> {
    let socks: Vec<std::net::UdpSocket> = (0..3)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    socks
        .iter()
        .map(|s| s.local_addr().unwrap().port())
        .collect()
}

#[test]
fn a_copied_binary_runs_infer_and_a_deployment_without_the_source_tree() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("securenn-relocated-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    assert!(
        !dir.starts_with(src),
        "the temporary directory must be outside the source tree"
    );
    std::fs::copy(env!("CARGO_BIN_EXE_securenn"), dir.join("securenn")).unwrap();
    // The first 10 test images, label first, under a header: the data owner's own file.
    let images = Mnist::load(DataSource::Bundled, Split::Test, 0, 10).unwrap();
    let mut csv = String::from("label,pixels...\n");
    for (im, l) in images.images.iter().zip(&images.labels) {
        let px: Vec<String> = im
            .iter()
            .map(|p| ((p * 255.0).round() as u8).to_string())
            .collect();
        csv += &format!("{l},{}\n", px.join(","));
    }
    std::fs::write(dir.join("mine.csv"), csv).unwrap();
    let ports = free_ports();
    // One shell script: inference, keys, the deployment file pointed at free ports, and three
    // party processes; every output kept for the assertions.
    let script = format!(
        r#"set -e
cd '{dir}'
ls '{src}' > hidden.txt
./securenn infer --samples 10 --batch 5 --seed 1 > infer.out 2> infer.err
./securenn keygen --out d > keygen.out
mv mine.csv d/
sed -i -e 's/127.0.0.1:7100/127.0.0.1:{p0}/' -e 's/127.0.0.1:7101/127.0.0.1:{p1}/' \
    -e 's/127.0.0.1:7102/127.0.0.1:{p2}/' -e 's/samples = 20/samples = 10/' \
    -e 's/^model = "a"$/model = "a"\ndata = "mine.csv"\nlabel_column = "first"/' d/deploy.toml
./securenn party --config d/deploy.toml --id 0 > p0.out 2> p0.err & a=$!
./securenn party --config d/deploy.toml --id 1 > p1.out 2> p1.err & b=$!
./securenn party --config d/deploy.toml --id 2 > p2.out 2> p2.err & c=$!
wait $a; wait $b; wait $c
"#,
        dir = dir.display(),
        src = src.display(),
        p0 = ports[0],
        p1 = ports[1],
        p2 = ports[2],
    );
    let hidden = can_hide(src);
    let out = if hidden {
        Command::new("unshare")
            .args(["--user", "--map-root-user", "--mount", "sh", "-c"])
            .arg(format!(
                "mount -t tmpfs none '{}' && sh -c \"$0\"",
                src.display()
            ))
            .arg(&script)
            .output()
            .unwrap()
    } else {
        eprintln!(
            "note: this machine cannot hide {} (no unprivileged mount namespaces); running the \
             copied binary from an empty directory with the tree still in place",
            src.display()
        );
        Command::new("sh").arg("-c").arg(&script).output().unwrap()
    };
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    let all = ["infer.err", "p0.err", "p1.err", "p2.err"]
        .map(|f| format!("--- {f}\n{}", read(f)))
        .join("\n");
    assert!(
        out.status.success(),
        "{}\n{all}",
        String::from_utf8_lossy(&out.stderr)
    );
    if hidden {
        assert_eq!(read("hidden.txt"), "", "the source tree was not hidden");
    }
    let infer = read("infer.out");
    assert!(
        infer.contains("accuracy") && infer.contains("100.00% with plaintext"),
        "{infer}"
    );
    // The same ten images, from the binary's sample and from the data owner's file.
    let accuracy = |out: &str| {
        let line = out
            .lines()
            .find(|l| l.starts_with("accuracy"))
            .unwrap_or_else(|| panic!("no accuracy line in {out}\n{all}"));
        line.split_whitespace().nth(1).unwrap().to_string()
    };
    let p0 = read("p0.out");
    assert!(p0.contains("on 10 images"), "{p0}\n{all}");
    assert_eq!(accuracy(&p0), accuracy(&infer), "{p0}\n{infer}");
    std::fs::remove_dir_all(&dir).ok();
}
