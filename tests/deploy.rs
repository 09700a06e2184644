//! Real deployment: three `securenn party` processes on localhost ports over QUIC, a missing
//! party, a party presenting the wrong certificate; what is refused before any peer is
//! contacted (a fixed seed, a key others can read); and what keygen writes (one party's key
//! only with `--id`, never through a symbolic link).

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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

/// Edit the deployment file in `dir`.
fn edit(dir: &Path, f: impl FnOnce(String) -> String) {
    let path = dir.join("deploy.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, f(text)).unwrap();
}

/// Give the job a fixed seed.
fn with_seed(text: String) -> String {
    text.replace("[job]\n", "[job]\nseed = 1\n")
}

fn party(dir: &Path, id: u8, key: Option<&Path>) -> Child {
    party_with(dir, id, key, &[])
}

fn party_with(dir: &Path, id: u8, key: Option<&Path>, flags: &[&str]) -> Child {
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
    c.args(flags);
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

/// `finish`, but fail (killing the process) if it runs past `limit`: for what must be refused
/// at start-up, long before the connect timeout.
fn finish_within(mut c: Child, limit: Duration) -> (bool, String, String) {
    let t0 = Instant::now();
    while c.try_wait().unwrap().is_none() {
        if t0.elapsed() > limit {
            c.kill().ok();
            let (_, _, err) = finish(c);
            panic!("still running after {limit:?}: {err}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    finish(c)
}

fn securenn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_securenn"))
        .args(args)
        .output()
        .unwrap()
}

fn tmp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("securenn-deploy-{name}-{}", std::process::id()))
}

/// Two runs: without a seed, and with one allowed by `--insecure-reproducible`, where every
/// party warns that the run has no privacy against whoever knows the seed.
#[test]
fn three_processes_over_quic() {
    let dir = tmp("ok");
    deployment(&dir);
    for seeded in [false, true] {
        if seeded {
            edit(&dir, with_seed);
        }
        let flags: &[&str] = if seeded {
            &["--insecure-reproducible"]
        } else {
            &[]
        };
        let p2 = party_with(&dir, 2, None, flags);
        let p1 = party_with(&dir, 1, None, flags);
        let p0 = party_with(&dir, 0, None, flags);
        let (ok0, out0, err0) = finish(p0);
        let (ok1, _, err1) = finish(p1);
        let (ok2, _, err2) = finish(p2);
        assert!(ok0 && ok1 && ok2, "{err0}\n{err1}\n{err2}");
        assert!(
            out0.contains("accuracy") && out0.contains("on 10 images"),
            "{out0}"
        );
        for err in [&err0, &err1, &err2] {
            let warned = err.contains("warning")
                && err.contains("seed")
                && err.contains("no privacy")
                && err.contains("every mask and share");
            assert_eq!(warned, seeded, "{err}");
        }
    }
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

/// A deployment with a fixed seed is refused at start-up, before any peer is contacted (the
/// connect timeout is a minute; nobody else runs), naming the file, the field and the way out.
#[test]
fn fixed_seed_is_refused_without_the_flag() {
    let dir = tmp("seed");
    deployment(&dir);
    edit(&dir, |t| {
        with_seed(t).replace("connect_timeout = 4", "connect_timeout = 60")
    });
    let (ok, _, err) = finish_within(party(&dir, 0, None), Duration::from_secs(30));
    assert!(!ok);
    for needle in [
        "deploy.toml",
        "[job]",
        "seed = 1",
        "remove `seed`",
        "--insecure-reproducible",
    ] {
        assert!(err.contains(needle), "no {needle:?} in {err}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// `keygen --id 1` writes party 1's key (mode 0600) and certificate and the template, and no
/// other party's key; it keeps an existing key without `--force` and never overwrites
/// deploy.toml, even with `--force`.
#[test]
fn keygen_for_one_party() {
    let dir = tmp("keygen-id");
    std::fs::remove_dir_all(&dir).ok();
    let d = dir.to_str().unwrap();
    let out = securenn(&["keygen", "--id", "1", "--out", d]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["deploy.toml", "party1.cert.der", "party1.key.der"]);
    assert!(
        stdout.contains("send party1.cert.der") && stdout.contains("Never send party1.key.der"),
        "{stdout}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("party1.key.der"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let key = std::fs::read(dir.join("party1.key.der")).unwrap();
    let again = securenn(&["keygen", "--id", "1", "--out", d]);
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && err.contains("party1") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(dir.join("party1.key.der")).unwrap(), key);
    std::fs::write(dir.join("deploy.toml"), "# agreed by the operators\n").unwrap();
    let forced = securenn(&["keygen", "--id", "1", "--out", d, "--force"]);
    assert!(forced.status.success());
    assert_ne!(std::fs::read(dir.join("party1.key.der")).unwrap(), key);
    assert_eq!(
        std::fs::read_to_string(dir.join("deploy.toml")).unwrap(),
        "# agreed by the operators\n"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The all-in-one keygen says it is for local runs only.
#[test]
fn keygen_all_in_one_is_labelled_local() {
    let dir = tmp("keygen-all");
    let out = securenn(&["keygen", "--out", dir.to_str().unwrap(), "--force"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        stdout.contains("for local runs and tests only")
            && stdout.contains("securenn keygen --id N"),
        "{stdout}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A key file that group or others can read is refused at start-up, naming the file and the
/// fix, as ssh does.
#[cfg(unix)]
#[test]
fn readable_key_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tmp("key-mode");
    deployment(&dir);
    edit(&dir, |t| {
        t.replace("connect_timeout = 4", "connect_timeout = 60")
    });
    let key = dir.join("party0.key.der");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, _, err) = finish_within(party(&dir, 0, None), Duration::from_secs(30));
    assert!(!ok);
    assert!(
        err.contains(&format!("chmod 600 {}", key.display())),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// keygen never writes through a symbolic link at a key path, even with `--force`: it fails
/// naming the path and the link's target is untouched.
#[cfg(unix)]
#[test]
fn keygen_refuses_a_symlink_at_the_key_path() {
    let dir = tmp("symlink");
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    let target = dir.join("precious");
    std::fs::write(&target, "not a key\n").unwrap();
    let link = dir.join("party0.key.der");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    for args in [&["--force"][..], &["--id", "0", "--force"][..]] {
        let mut all = vec!["keygen", "--out", dir.to_str().unwrap()];
        all.extend(args);
        let out = securenn(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            err.contains(&link.display().to_string()) && err.contains("symbolic link"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "not a key\n");
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
