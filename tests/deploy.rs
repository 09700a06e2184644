//! Real deployment: three `securenn party` processes on localhost ports over QUIC, a missing
//! party, and a party presenting the wrong certificate.

use std::path::Path;
use std::process::{Child, Command, Stdio};

fn free_ports() -> [u16; 3] {
    let socks: Vec<std::net::UdpSocket> = (0..3)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let ports: Vec<u16> = socks
        .iter()
        .map(|s| s.local_addr().unwrap().port())
        .collect();
    [ports[0], ports[1], ports[2]]
}

/// keygen into `dir`, then point the template at free ports with short timeouts.
fn deployment(dir: &Path) {
    let st = Command::new(env!("CARGO_BIN_EXE_securenn"))
        .args(["keygen", "--out", dir.to_str().unwrap(), "--force"])
        .output()
        .unwrap()
        .status;
    assert!(st.success());
    let ports = free_ports();
    let mut text = std::fs::read_to_string(dir.join("deploy.toml")).unwrap();
    for (i, p) in ports.iter().enumerate() {
        text = text.replace(
            &format!("127.0.0.1:{}", 7100 + i),
            &format!("127.0.0.1:{p}"),
        );
    }
    text = text
        .replace("connect_timeout = 30", "connect_timeout = 4")
        .replace("samples = 20", "samples = 10");
    std::fs::write(dir.join("deploy.toml"), text).unwrap();
}

fn party(dir: &Path, id: u8, key: Option<&Path>) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_securenn"));
    c.args([
        "party",
        "--config",
        dir.join("deploy.toml").to_str().unwrap(),
        "--id",
        &id.to_string(),
    ]);
    if let Some(k) = key {
        c.args(["--key", k.to_str().unwrap()]);
    }
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(c: Child) -> (bool, String, String) {
    let out = c.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tmp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("securenn-deploy-{name}-{}", std::process::id()))
}

#[test]
fn three_processes_over_quic() {
    let dir = tmp("ok");
    deployment(&dir);
    let p2 = party(&dir, 2, None);
    let p1 = party(&dir, 1, None);
    let p0 = party(&dir, 0, None);
    let (ok0, out0, err0) = finish(p0);
    let (ok1, _, err1) = finish(p1);
    let (ok2, _, err2) = finish(p2);
    assert!(ok0 && ok1 && ok2, "{err0}\n{err1}\n{err2}");
    assert!(
        out0.contains("accuracy") && out0.contains("on 10 images"),
        "{out0}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("party0.key.der"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A party that never starts: the others give up within the connect timeout, naming it.
#[test]
fn missing_party_is_named() {
    let dir = tmp("missing");
    deployment(&dir);
    let p0 = party(&dir, 0, None);
    let p1 = party(&dir, 1, None);
    let (ok0, _, err0) = finish(p0);
    let (ok1, _, _) = finish(p1);
    assert!(!ok0 && !ok1);
    assert!(err0.contains("never connected to P2"), "{err0}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A party with a key that matches no certificate of the deployment is refused: the handshake
/// fails, and nobody runs the job with it.
#[test]
fn wrong_certificate_is_refused() {
    let dir = tmp("wrong");
    let other = tmp("other");
    deployment(&dir);
    deployment(&other);
    let p0 = party(&dir, 0, None);
    let p1 = party(&dir, 1, Some(&other.join("party1.key.der")));
    let p2 = party(&dir, 2, None);
    let (ok0, _, err0) = finish(p0);
    let (ok1, _, _) = finish(p1);
    let (ok2, _, err2) = finish(p2);
    assert!(!ok0 && !ok1 && !ok2);
    assert!(
        err0.contains("never connected to P1") || err2.contains("never connected to P1"),
        "{err0}\n{err2}"
    );
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&other).ok();
}
