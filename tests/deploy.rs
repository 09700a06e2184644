//! Real deployment: three `securenn party` processes on localhost ports over QUIC (a host name
//! and a wildcard listen address among them), a missing party, a party presenting the wrong
//! certificate, parties with different jobs, a party killed or stopped mid-job, a busy party
//! under a short dead-peer timeout; what is refused before any peer is contacted (a fixed seed,
//! a key others can read, a key that is not the certificate's, an address that does not
//! resolve); what keygen writes (one party's key only with `--id`, never through a symbolic
//! link); and secure training over QUIC (`[job] kind = "train"`), with parties disagreeing on a
//! training parameter.

#[path = "common/files.rs"]
mod files;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
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
    // Party 2 is dialled by host name and listens on the wildcard address.
    edit(&dir, |t| {
        let (_, rest) = t.split_once("id = 2\naddress = \"127.0.0.1:").unwrap();
        let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
        t.replace(
            &format!("id = 2\naddress = \"127.0.0.1:{port}\""),
            &format!("id = 2\naddress = \"localhost:{port}\"\nlisten = \"0.0.0.0:{port}\""),
        )
    });
    let inferred = tmp("ok-infer.json");
    let out = securenn(&[
        "infer",
        "--samples",
        "1",
        "--json",
        inferred.to_str().unwrap(),
        "--force",
    ]);
    assert!(out.status.success(), "{out:?}");
    let inferred_widths = serde_json::from_str::<securenn::infer::InferReport>(
        &std::fs::read_to_string(&inferred).unwrap(),
    )
    .unwrap()
    .comparison_widths;
    std::fs::remove_file(&inferred).ok();
    assert!(inferred_widths.iter().any(|w| w.is_some()));
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
        // Party 0 writes its report; the second run overwrites it, with --force.
        let report = dir.join("report0.json");
        let mut flags0 = flags.to_vec();
        flags0.extend(["--json", report.to_str().unwrap()]);
        if seeded {
            std::fs::write(&report, "old").unwrap();
            flags0.push("--force");
        }
        let p0 = party_with(&dir, 0, None, &flags0);
        let (ok0, out0, err0) = finish(p0);
        let (ok1, _, err1) = finish(p1);
        let (ok2, _, err2) = finish(p2);
        assert!(ok0 && ok1 && ok2, "{err0}\n{err1}\n{err2}");
        assert!(
            out0.contains("accuracy") && out0.contains("on 10 images"),
            "{out0}"
        );
        let json = std::fs::read_to_string(&report).unwrap();
        assert!(
            json.contains("\"party\": 0") && json.contains("\"accuracy\""),
            "{json}"
        );
        // The model owner's comparison widths reached the data owner: those `infer` runs on.
        let party: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            party["comparison_widths"],
            serde_json::to_value(&inferred_widths).unwrap(),
            "{json}"
        );
        // Each party shows its peers as they connect, the job starting and its end.
        for (i, err) in [&err0, &err1, &err2].into_iter().enumerate() {
            for p in (0..3).filter(|p| *p != i) {
                assert!(
                    err.contains(&format!("connected to P{p} at 127.0.0.1:")),
                    "{err}"
                );
            }
            assert!(
                err.contains("both peers run the same job; 1 batches to go"),
                "{err}"
            );
            assert!(err.contains("1/1 batches done"), "{err}");
        }
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

/// Each party's report has what it sent per layer (`layers` in --json; `--report table` prints
/// it): over the three parties, each layer's bytes and messages are those `securenn infer`
/// reports for the same job.
#[test]
fn per_layer_reports_add_up_to_the_local_runs() {
    let dir = tmp("layers");
    deployment(&dir);
    let reports: Vec<_> = (0..3).map(|i| dir.join(format!("r{i}.json"))).collect();
    let ps: Vec<Child> = (0..3u8)
        .map(|i| {
            let r = reports[i as usize].to_str().unwrap();
            party_with(&dir, i, None, &["--json", r, "--report", "table"])
        })
        .collect();
    let outs: Vec<_> = ps.into_iter().map(finish).collect();
    for (i, (ok, out, err)) in outs.iter().enumerate() {
        assert!(ok, "P{i}: {err}");
        assert!(
            out.contains(&format!("sent by party {i} (per layer")),
            "{out}"
        );
    }
    let local = dir.join("local.json");
    let out = securenn(&[
        "infer",
        "--samples",
        "10",
        "--batch",
        "10",
        "--json",
        local.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let local: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&local).unwrap()).unwrap();
    let local = local.as_array().map_or(&local, |a| &a[0]);
    let mut summed: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for r in &reports {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(r).unwrap()).unwrap();
        let layers = v["layers"].as_array().unwrap();
        let sent: u64 = layers.iter().map(|l| l["bytes"].as_u64().unwrap()).sum();
        assert!(sent > 0 && sent <= v["bytes_sent"].as_u64().unwrap(), "{v}");
        for l in layers {
            let e = summed
                .entry(l["name"].as_str().unwrap().to_string())
                .or_default();
            e.0 += l["bytes"].as_u64().unwrap();
            e.1 += l["messages"].as_u64().unwrap();
        }
    }
    for l in local["layers"].as_array().unwrap() {
        let name = l["name"].as_str().unwrap();
        let got = summed.get(name).copied().unwrap_or_default();
        let want = (
            l["bytes"].as_u64().unwrap(),
            l["messages"].as_u64().unwrap(),
        );
        assert_eq!(got, want, "layer {name}: the parties' sums against infer's");
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

/// Party 1 made a new identity, but the others' deployment still names its old certificate.
/// Both sides say so, naming P1 and its certificate, each warning once however often P1
/// calls; nobody runs the job. A party run with a key that is not its certificate's is refused
/// at start-up, naming both files.
#[test]
fn wrong_certificate_is_refused() {
    let dir = tmp("wrong");
    let other = tmp("other");
    deployment(&dir);
    deployment(&other);
    // Party 1's own copy of the deployment, with its new certificate and key.
    let mine = tmp("wrong-p1");
    std::fs::remove_dir_all(&mine).ok();
    std::fs::create_dir_all(&mine).unwrap();
    for f in ["deploy.toml", "party0.cert.der", "party2.cert.der"] {
        std::fs::copy(dir.join(f), mine.join(f)).unwrap();
    }
    std::fs::copy(other.join("party1.cert.der"), mine.join("party1.cert.der")).unwrap();
    let p0 = party(&dir, 0, None);
    let p1 = party(&mine, 1, Some(&other.join("party1.key.der")));
    let p2 = party(&dir, 2, None);
    let (ok0, _, err0) = finish(p0);
    let (ok1, _, err1) = finish(p1);
    let (ok2, _, err2) = finish(p2);
    assert!(!ok0 && !ok1 && !ok2);
    let theirs = "certificate that does not match the deployment's certificate for P1";
    assert!(
        err0.contains(theirs) || err2.contains(theirs),
        "{err0}\n{err2}"
    );
    assert!(err1.contains("refused P1's certificate"), "{err1}");
    for err in [&err0, &err1, &err2] {
        let warnings = err.lines().filter(|l| l.contains("WARN")).count();
        assert!(warnings <= 2, "{warnings} warnings:\n{err}");
    }
    // The other deployment's key with this deployment's certificate: refused at once.
    let (ok, _, err) = finish_within(
        party(&dir, 1, Some(&other.join("party1.key.der"))),
        Duration::from_secs(10),
    );
    assert!(!ok);
    assert!(
        err.contains("is not the key of the certificate") && err.contains("party1.cert.der"),
        "{err}"
    );
    for d in [&dir, &other, &mine] {
        std::fs::remove_dir_all(d).ok();
    }
}

/// A party whose stderr is read as it runs.
struct Running {
    child: Child,
    err: Arc<Mutex<String>>,
}

impl Running {
    fn start(dir: &Path, id: u8) -> Self {
        let mut child = party(dir, id, None);
        let err = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = err.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self { child, err }
    }

    fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    /// Wait until stderr says `needle`, for at most `limit`.
    fn wait_for(&self, needle: &str, limit: Duration) {
        let t0 = Instant::now();
        while !self.stderr().contains(needle) {
            assert!(t0.elapsed() < limit, "no {needle:?} in {}", self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait for the process to end, for at most `limit`: its status code and stderr.
    fn end(mut self, limit: Duration) -> (Option<i32>, String) {
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(50));
                return (st.code(), self.stderr());
            }
            if t0.elapsed() > limit {
                self.child.kill().ok();
                panic!("still running after {limit:?}: {}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The line a failed party ended with ("error: ...").
fn error_line(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {stderr}"))
}

/// A peer of P2's failure names P2 first, as the one that stopped, not the peer it happened to
/// wait on ("P1 gave up: P2 ..."), and logs at most one error (the failure itself, when a
/// transport failure came before P2's notice), none for the connections closing after it.
fn names_p2_first(i: usize, stderr: &str, what: &str) {
    let line = error_line(stderr);
    eprintln!("P{i}: {line}");
    assert!(line.starts_with("error: P2 "), "P{i}: {line}");
    assert!(line.contains(what), "P{i}: {line}");
    assert!(
        !line.contains("P0 gave up") && !line.contains("P1 gave up"),
        "P{i}: {line}"
    );
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(errors.len() <= 1, "P{i}: {errors:#?}");
}

/// A job long enough to stop in the middle: 1,000 images of network A in batches of 100.
fn long_job(dir: &Path) {
    deployment(dir);
    edit(dir, |t| {
        t.replace("samples = 10", "samples = 1000")
            .replace("batch = 10", "batch = 100")
    });
}

/// Party 1 runs another job (20 images, not 10): every party fails at once, before computing,
/// naming the field and every party's value.
#[test]
fn mismatched_jobs_fail_every_party_naming_the_field() {
    let dir = tmp("mismatch");
    let other = tmp("mismatch-p1");
    deployment(&dir);
    std::fs::remove_dir_all(&other).ok();
    std::fs::create_dir_all(&other).unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let f = entry.unwrap().path();
        let to = other.join(f.file_name().unwrap());
        std::fs::copy(&f, &to).unwrap();
    }
    edit(&other, |t| t.replace("samples = 10", "samples = 20"));
    let t0 = Instant::now();
    let ps = [
        party(&dir, 0, None),
        party(&other, 1, None),
        party(&dir, 2, None),
    ];
    for p in ps {
        let (ok, _, err) = finish_within(p, Duration::from_secs(10));
        assert!(!ok);
        assert!(
            err.contains("job.samples differs: party 0 has 10, party 1 has 20, party 2 has 10"),
            "{err}"
        );
        assert!(!err.contains("batches done"), "{err}");
    }
    eprintln!("mismatch reported by all three in {:?}", t0.elapsed());
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&other).ok();
}

/// Party 2 killed (SIGKILL) mid-job: both peers fail within 10 s, naming it first, whichever
/// peer they waited on (the default dead-peer timeout is 5 s).
#[test]
fn killed_party_is_named_within_seconds() {
    let dir = tmp("killed");
    long_job(&dir);
    let ps: Vec<Running> = (0..3).map(|i| Running::start(&dir, i)).collect();
    for p in &ps {
        p.wait_for("both peers run the same job", Duration::from_secs(30));
    }
    let mut ps = ps.into_iter();
    let (p0, p1, mut p2) = (ps.next().unwrap(), ps.next().unwrap(), ps.next().unwrap());
    std::thread::sleep(Duration::from_millis(300));
    p2.child.kill().unwrap();
    let t0 = Instant::now();
    for (i, p) in [p0, p1].into_iter().enumerate() {
        let (code, err) = p.end(Duration::from_secs(10));
        eprintln!("P{i} failed {:?} after P2 was killed", t0.elapsed());
        assert_ne!(code, Some(0));
        names_p2_first(i, &err, "P2 stopped answering");
    }
    p2.child.wait().unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

/// SIGTERM to party 2 mid-job: it tells its peers and exits with 143; both peers fail at once
/// naming it first, whichever peer they waited on, and without logging errors as the
/// connections close.
#[cfg(unix)]
#[test]
fn sigterm_stops_every_party_naming_who_stopped() {
    let dir = tmp("sigterm");
    long_job(&dir);
    let ps: Vec<Running> = (0..3).map(|i| Running::start(&dir, i)).collect();
    for p in &ps {
        p.wait_for("both peers run the same job", Duration::from_secs(30));
    }
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) on the pid of a child this test started and has not yet waited for.
    assert_eq!(
        unsafe { libc::kill(ps[2].child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let t0 = Instant::now();
    for (i, p) in ps.into_iter().enumerate() {
        let (code, err) = p.end(Duration::from_secs(10));
        eprintln!("P{i} ended {:?} after SIGTERM to P2", t0.elapsed());
        assert!(err.contains("P2 stopped (SIGTERM)"), "P{i}: {err}");
        assert_eq!(code, Some(if i == 2 { 143 } else { 1 }), "P{i}: {err}");
        if i < 2 {
            names_p2_first(i, &err, "P2 stopped (SIGTERM)");
        } else {
            let errors = err.lines().filter(|l| l.contains(" ERROR ")).count();
            assert_eq!(errors, 0, "P2: {err}");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A dead-peer timeout of 1 s (keep-alives every 200 ms) while the parties compute network C
/// on a batch of 64 (long local matrix products and convolutions between messages): the
/// endpoint's own runtime keeps answering, nobody is declared dead, and the job succeeds.
#[test]
fn busy_parties_are_not_declared_dead() {
    let dir = tmp("busy");
    deployment(&dir);
    edit(&dir, |t| {
        t.replace("model = \"a\"", "model = \"c\"")
            .replace("samples = 10", "samples = 64")
            .replace("batch = 10", "batch = 64")
            .replace("dead_peer_timeout = 5", "dead_peer_timeout = 1")
    });
    assert!(
        std::fs::read_to_string(dir.join("deploy.toml"))
            .unwrap()
            .contains("dead_peer_timeout = 1")
    );
    let ps: Vec<Child> = (0..3).map(|i| party(&dir, i, None)).collect();
    for p in ps {
        let (ok, _, err) = finish(p);
        assert!(ok, "{err}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The model owner checks its weights' fixed-point range before contacting anyone: weights
/// scaled by 10^5 are refused, naming the layer; `--allow-range-risk` goes on to connect.
#[test]
fn model_owner_refuses_weights_beyond_the_ring() {
    use securenn::nn::weights_file;
    let dir = tmp("range");
    deployment(&dir);
    let model = securenn::models::by_name("a").unwrap();
    let (mut w, meta) = weights_file::load_bundled("a", &model).unwrap();
    for (_, t) in &mut w.tensors {
        t.mapv_inplace(|v| v * 1e5);
    }
    weights_file::save(&dir.join("big.safetensors"), &w, meta, true).unwrap();
    edit(&dir, |t| {
        t.replace("[job]\n", "[job]\nweights = \"big.safetensors\"\n")
    });
    let (ok, _, err) = finish_within(party(&dir, 1, None), Duration::from_secs(10));
    assert!(!ok);
    assert!(
        err.contains("the model owner's weights: fixed-point range: layer")
            && err.contains("beyond 2^63")
            && !err.contains("connected to"),
        "{err}"
    );
    // Accepted: it gets as far as waiting for its peers (none run here).
    let p = party_with(&dir, 1, None, &["--allow-range-risk"]);
    let (ok, _, err) = finish_within(p, Duration::from_secs(20));
    assert!(!ok);
    assert!(!err.contains("beyond 2^63"), "{err}");
    // Pond too (found by an audit: a Pond deployment of these weights ran to 5% accuracy with
    // exit 0): its linear layers are checked with an exact ReLU, which they overflow already.
    edit(&dir, |t| {
        t.replace("protocol = \"securenn\"", "protocol = \"pond\"")
    });
    let (ok, _, err) = finish_within(party(&dir, 1, None), Duration::from_secs(10));
    assert!(!ok);
    assert!(
        err.contains("fixed-point range: layer")
            && err.contains("beyond 2^63")
            && err.contains("exact ReLU only")
            && !err.contains("connected to"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A Pond deployment of the shipped weights runs (the range check passes them) and the data
/// owner learns the classes of its images.
#[test]
fn pond_deployment_runs() {
    let dir = tmp("pond");
    deployment(&dir);
    edit(&dir, |t| {
        t.replace("protocol = \"securenn\"", "protocol = \"pond\"")
    });
    let parties: Vec<Child> = (0..3).map(|i| party(&dir, i, None)).collect();
    let outs: Vec<_> = parties.into_iter().map(finish).collect();
    for (i, (ok, _, err)) in outs.iter().enumerate() {
        assert!(ok, "party {i}: {err}");
    }
    // The same images through `securenn infer` with Pond: the same classes.
    let expected = infer_predictions(
        "pond",
        &[
            "--protocol",
            "pond",
            "--reveal",
            "logits",
            "--samples",
            "10",
        ],
    );
    assert_eq!(predictions_line(&outs[0].1), expected);
    std::fs::remove_dir_all(&dir).ok();
}

/// An address that does not resolve is refused at start-up, naming the party and the key.
#[test]
fn unresolvable_address_names_the_party() {
    let dir = tmp("resolve");
    deployment(&dir);
    edit(&dir, |t| {
        let at = t.find("id = 1\naddress = \"").unwrap() + "id = 1\naddress = \"".len();
        let end = at + t[at..].find('"').unwrap();
        format!("{}no-such-host.invalid:7101{}", &t[..at], &t[end..])
    });
    let (ok, _, err) = finish_within(party(&dir, 0, None), Duration::from_secs(30));
    assert!(!ok);
    assert!(
        err.contains("[[party]] id = 1")
            && err.contains("address = \"no-such-host.invalid:7101\" does not resolve"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
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
    // The seed's value is not echoed into logs.
    assert!(!err.contains("seed = 1"), "{err}");
    for needle in [
        "deploy.toml",
        "[job] has a `seed`",
        "remove `seed`",
        "--insecure-reproducible",
    ] {
        assert!(err.contains(needle), "no {needle:?} in {err}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// `--json FILE` is checked before any peer is contacted (the connect timeout is a minute;
/// nobody else runs): an existing FILE is kept without `--force`, and a FILE in a directory
/// that does not exist is refused, naming both.
#[test]
fn report_file_is_checked_before_connecting() {
    let dir = tmp("json");
    deployment(&dir);
    edit(&dir, |t| {
        t.replace("connect_timeout = 4", "connect_timeout = 60")
    });
    let existing = dir.join("report.json");
    std::fs::write(&existing, "keep me").unwrap();
    let missing = dir.join("no-such-dir").join("report.json");
    let cases = [
        (
            &existing,
            format!("{} exists; pass --force", existing.display()),
        ),
        (
            &missing,
            format!(
                "directory {} does not exist",
                dir.join("no-such-dir").display()
            ),
        ),
    ];
    for (path, want) in cases {
        let p = party_with(&dir, 0, None, &["--json", path.to_str().unwrap()]);
        let (ok, _, err) = finish_within(p, Duration::from_secs(10));
        assert!(!ok);
        assert!(err.contains(&want), "no {want:?} in {err}");
        assert!(err.contains(path.to_str().unwrap()), "{err}");
        assert!(!err.contains("connected to"), "{err}");
    }
    assert_eq!(std::fs::read_to_string(&existing).unwrap(), "keep me");
    assert!(!missing.exists());
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

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/onnx")
        .join(name)
}

/// One deployment whose job runs `onnx = "mlp.onnx"`, as three operators hold it: a directory
/// per party with the deployment file, the three certificates and the party's own key; only
/// the model owner's (party 1's) has the ONNX file, so the others' `onnx` names a file that is
/// not there.
fn onnx_deployment(name: &str) -> Vec<std::path::PathBuf> {
    let all = tmp(name);
    deployment(&all);
    edit(&all, |t| t.replace("model = \"a\"", "onnx = \"mlp.onnx\""));
    let dirs: Vec<std::path::PathBuf> = (0..3)
        .map(|i| {
            let d = tmp(&format!("{name}-p{i}"));
            std::fs::remove_dir_all(&d).ok();
            std::fs::create_dir_all(&d).unwrap();
            let key = format!("party{i}.key.der");
            for f in [
                "deploy.toml",
                "party0.cert.der",
                "party1.cert.der",
                "party2.cert.der",
                &key,
            ] {
                // Permissions too: the key stays 0600.
                std::fs::copy(all.join(f), d.join(f)).unwrap();
            }
            d
        })
        .collect();
    std::fs::remove_dir_all(&all).ok();
    std::fs::copy(fixture("mlp.onnx"), dirs[1].join("mlp.onnx")).unwrap();
    dirs
}

/// The list in a `predictions         [7, 2, 1]` line.
fn predictions_line(stdout: &str) -> Vec<u64> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("predictions"))
        .unwrap_or_else(|| panic!("no predictions in {stdout}"));
    serde_json::from_str(line.trim()).unwrap()
}

/// The predictions `securenn infer ARGS` reports in its JSON (written to a scratch file named
/// after `name`).
fn infer_predictions(name: &str, args: &[&str]) -> Vec<u64> {
    let json = tmp(&format!("{name}-infer.json"));
    let mut all = vec!["infer"];
    all.extend(args);
    all.extend(["--json", json.to_str().unwrap(), "--force"]);
    let out = securenn(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    std::fs::remove_file(&json).ok();
    let report = report.as_array().map_or(&report, |a| &a[0]);
    serde_json::from_value(report["predictions"].clone()).unwrap()
}

/// An ONNX model over QUIC: only the model owner has `mlp.onnx` (the others' deployment names it
/// at a path where nothing is: they never read it); it sends the architecture, and the data
/// owner's predictions are those of `securenn infer --onnx mlp.onnx` on the same images. With a
/// seed (and --insecure-reproducible) on both sides, so that the two runs are the same
/// computation, share for share.
#[test]
fn onnx_model_is_read_by_the_model_owner_only() {
    let dirs = onnx_deployment("onnx");
    for (i, d) in dirs.iter().enumerate() {
        edit(d, with_seed);
        assert_eq!(d.join("mlp.onnx").exists(), i == 1, "{}", d.display());
        assert!(
            std::fs::read_to_string(d.join("deploy.toml"))
                .unwrap()
                .contains("onnx = \"mlp.onnx\"")
        );
    }
    let t0 = Instant::now();
    let ps: Vec<Child> = (0..3)
        .map(|i| party_with(&dirs[i], i as u8, None, &["--insecure-reproducible"]))
        .collect();
    let outs: Vec<(bool, String, String)> = ps.into_iter().map(finish).collect();
    eprintln!("the ONNX job took {:?}", t0.elapsed());
    for (i, (ok, out, err)) in outs.iter().enumerate() {
        assert!(ok, "P{i}: {err}");
        assert!(
            out.contains("securenn on model onnx, 10 images"),
            "P{i}: {out}"
        );
        assert!(
            err.contains("both peers run the same job; 1 batches to go"),
            "P{i}: {err}"
        );
    }
    let deployed = predictions_line(&outs[0].1);
    assert_eq!(deployed.len(), 10);
    let mlp = fixture("mlp.onnx");
    let inferred = infer_predictions(
        "onnx",
        &[
            "--onnx",
            mlp.to_str().unwrap(),
            "--samples",
            "10",
            "--batch",
            "10",
            "--seed",
            "1",
        ],
    );
    assert_eq!(deployed, inferred);
    for d in &dirs {
        std::fs::remove_dir_all(d).ok();
    }
}

/// A model whose inputs are not MNIST images, over QUIC: the model owner has the CIFAR-shaped
/// residual model's ONNX file, the data owner its inputs as a `.npy` (`input`, `labels`) and
/// the public `input_range` they lie in; the data owner's predictions and accuracy are `securenn
/// infer --onnx --input`'s on the same inputs (a seed on both sides: the same computation).
/// An input outside `input_range` is refused at the data owner, naming the key, never the
/// value.
#[test]
fn npy_inputs_of_an_onnx_model_over_quic() {
    let dirs = onnx_deployment("npy");
    std::fs::remove_file(dirs[1].join("mlp.onnx")).unwrap();
    std::fs::copy(fixture("resnet_cifar.onnx"), dirs[1].join("resnet.onnx")).unwrap();
    std::fs::copy(fixture("resnet_cifar.input.npy"), dirs[0].join("x.npy")).unwrap();
    std::fs::copy(fixture("resnet_cifar.labels.npy"), dirs[0].join("y.npy")).unwrap();
    let set = |range: &str| {
        for d in &dirs {
            edit(d, |t| {
                let t = t.replace("onnx = \"mlp.onnx\"", "onnx = \"resnet.onnx\"");
                let t = match t.find("\ninput_range = ").map(|at| at + 1) {
                    Some(at) => {
                        let end = at + t[at..].find('\n').unwrap();
                        format!("{}input_range = {range}{}", &t[..at], &t[end..])
                    }
                    None => with_seed(t).replace(
                        "[job]\n",
                        &format!(
                            "[job]\ninput = \"x.npy\"\nlabels = \"y.npy\"\ninput_range = {range}\n"
                        ),
                    ),
                };
                t.replace("samples = 10", "samples = 6")
                    .replace("batch = 10", "batch = 3")
            });
        }
    };
    let run = || -> Vec<(bool, String, String)> {
        let ps: Vec<Child> = (0..3u8)
            .map(|i| party_with(&dirs[i as usize], i, None, &["--insecure-reproducible"]))
            .collect();
        ps.into_iter().map(finish).collect()
    };
    // Too narrow a range for these inputs: refused at the data owner, naming the key, once the
    // architecture has come; its peers, waiting for its next message, hear of it in seconds
    // (its stream ends before its connection closes with the reason), not at their timeout.
    set("[0.0, 0.001]");
    let ps: Vec<Child> = (0..3u8)
        .map(|i| party_with(&dirs[i as usize], i, None, &["--insecure-reproducible"]))
        .collect();
    for (i, p) in ps.into_iter().enumerate() {
        let (ok, _, err) = finish_within(p, Duration::from_secs(20));
        assert!(!ok, "P{i}");
        assert!(err.contains("job.input_range"), "P{i}: {err}");
        if i > 0 {
            assert!(err.contains("P0 gave up"), "P{i}: {err}");
        }
    }
    set("[-3.0, 3.0]");
    let outs = run();
    for (i, (ok, _, err)) in outs.iter().enumerate() {
        assert!(ok, "P{i}: {err}");
    }
    let deployed = predictions_line(&outs[0].1);
    assert_eq!(deployed.len(), 6);
    assert!(outs[0].1.contains("accuracy"), "{}", outs[0].1);
    let (onnx, x, y) = (
        fixture("resnet_cifar.onnx"),
        fixture("resnet_cifar.input.npy"),
        fixture("resnet_cifar.labels.npy"),
    );
    let inferred = infer_predictions(
        "npy",
        &[
            "--onnx",
            onnx.to_str().unwrap(),
            "--input",
            x.to_str().unwrap(),
            "--labels",
            y.to_str().unwrap(),
            "--samples",
            "6",
            "--batch",
            "3",
            "--seed",
            "1",
        ],
    );
    assert_eq!(deployed, inferred);
    for d in &dirs {
        std::fs::remove_dir_all(d).ok();
    }
}

/// The model owner runs built-in network A, the others an ONNX job: every party fails at once,
/// naming `job.model` and every party's value, before any architecture is sent.
#[test]
fn onnx_and_built_in_jobs_fail_naming_the_model() {
    let dirs = onnx_deployment("onnx-mismatch");
    edit(&dirs[1], |t| {
        t.replace("onnx = \"mlp.onnx\"", "model = \"a\"")
    });
    let ps: Vec<Child> = (0..3).map(|i| party(&dirs[i], i as u8, None)).collect();
    for p in ps {
        let (ok, _, err) = finish_within(p, Duration::from_secs(20));
        assert!(!ok);
        assert!(
            err.contains("job.model differs: party 0 has onnx, party 1 has a, party 2 has onnx"),
            "{err}"
        );
        assert!(!err.contains("batches to go"), "{err}");
    }
    for d in &dirs {
        std::fs::remove_dir_all(d).ok();
    }
}

/// The model owner imports and checks its ONNX file before contacting anyone, each error naming
/// the file: one that is not there, an operator it cannot compute, a model that does not take
/// MNIST images, weights beyond the fixed-point range (run with --allow-range-risk, it goes on
/// to wait for its peers). A job naming both `model` and `onnx`, neither, or `onnx` with
/// `weights` is refused at every party, naming the keys.
#[test]
fn model_owner_checks_its_onnx_file_before_connecting() {
    use securenn::onnx::{OnnxModel, Tensor, TensorData};
    let dirs = onnx_deployment("onnx-refused");
    let owner = &dirs[1];
    let text = std::fs::read_to_string(owner.join("deploy.toml")).unwrap();
    let mut big = OnnxModel::read(fixture("mlp.onnx")).unwrap();
    for (_, t) in &mut big.graph.initializers {
        let scaled: Vec<f32> = t.to_f64_vec().iter().map(|&v| (v * 1e5) as f32).collect();
        *t = Tensor::new(t.dims().to_vec(), TensorData::F32(scaled)).unwrap();
    }
    big.write(owner.join("big.onnx")).unwrap();
    for f in ["unsupported_op.onnx", "resnet_cifar.onnx"] {
        std::fs::copy(fixture(f), owner.join(f)).unwrap();
    }
    let with_file = |f: &str| text.replace("onnx = \"mlp.onnx\"", &format!("onnx = \"{f}\""));
    for (file, needles) in [
        ("missing.onnx", &["job.onnx", "cannot read"][..]),
        ("unsupported_op.onnx", &["job.onnx", "Sigmoid"]),
        (
            "resnet_cifar.onnx",
            &["[3, 32, 32]", "MNIST images of 784 pixels"],
        ),
        ("big.onnx", &["fixed-point range: layer", "beyond 2^63"]),
    ] {
        std::fs::write(owner.join("deploy.toml"), with_file(file)).unwrap();
        let (ok, _, err) = finish_within(party(owner, 1, None), Duration::from_secs(10));
        assert!(!ok, "{file}");
        let path = owner.join(file).display().to_string();
        assert!(
            err.contains(&format!("{path}: job.onnx: ")),
            "{file}: {err}"
        );
        for n in needles {
            assert!(err.contains(n), "{file}: no {n:?} in {err}");
        }
        assert!(!err.contains("connected to"), "{file}: {err}");
    }
    let p = party_with(owner, 1, None, &["--allow-range-risk"]);
    let (ok, _, err) = finish_within(p, Duration::from_secs(20));
    assert!(!ok);
    assert!(
        !err.contains("beyond 2^63") && err.contains("never connected"),
        "{err}"
    );
    for (edited, needles) in [
        (
            text.replace("onnx = \"mlp.onnx\"", "model = \"a\"\nonnx = \"mlp.onnx\""),
            &["job.model and job.onnx", "not both"][..],
        ),
        (
            text.replace("onnx = \"mlp.onnx\"", ""),
            &["[job] names no model", "`onnx`"],
        ),
        (
            text.replace("[job]\n", "[job]\nweights = \"w.safetensors\"\n"),
            &["job.weights", "carries its own weights"],
        ),
    ] {
        for (i, d) in dirs.iter().enumerate() {
            std::fs::write(d.join("deploy.toml"), &edited).unwrap();
            let (ok, _, err) = finish_within(party(d, i as u8, None), Duration::from_secs(10));
            assert!(!ok);
            for n in needles.iter().chain(&["deploy.toml"]) {
                assert!(err.contains(n), "P{i}: no {n:?} in {err}");
            }
        }
    }
    for d in &dirs {
        std::fs::remove_dir_all(d).ok();
    }
}

/// A training deployment as three operators hold it: a directory per party with the
/// deployment file, the three certificates and the party's own key; only the model owner's
/// (party 1's) has the initial weights, only the data owner's (party 0's) the images: 200 of
/// the bundled sample as a CSV of its own (160 train, 40 test by the split rule). Network A,
/// one epoch of 3 iterations of batch 16, the test on 20 images; each party checkpoints into
/// `ckpt` beside its own deployment file. Returns the directories and the initial weights.
fn train_deployment(name: &str) -> (Vec<std::path::PathBuf>, securenn::nn::Weights) {
    use securenn::data::{DataSource, Mnist, Split};
    let all = tmp(name);
    deployment(&all);
    edit(&all, |t| {
        let (head, rest) = t.split_once("[job]\n").unwrap();
        let (_, tail) = rest.split_once("\n[limits]").unwrap();
        format!(
            "{head}[job]\nkind = \"train\"\nprotocol = \"securenn\"\nmodel = \"a\"\n\
             weights = \"init.safetensors\"\nepochs = 1\nbatch = 16\nlr = 0.03125\n\
             iterations = 3\ntest_samples = 20\ndata = \"mine.csv\"\ndata_owner = 0\n\
             model_owner = 1\nout = \"trained.safetensors\"\ncheckpoint_dir = \"ckpt\"\n\
             connect_timeout = 10\ntimeout = 60\n\n[limits]{tail}"
        )
    });
    let dirs: Vec<std::path::PathBuf> = (0..3)
        .map(|i| {
            let d = tmp(&format!("{name}-p{i}"));
            std::fs::remove_dir_all(&d).ok();
            std::fs::create_dir_all(&d).unwrap();
            let key = format!("party{i}.key.der");
            for f in [
                "deploy.toml",
                "party0.cert.der",
                "party1.cert.der",
                "party2.cert.der",
                &key,
            ] {
                std::fs::copy(all.join(f), d.join(f)).unwrap();
            }
            d
        })
        .collect();
    std::fs::remove_dir_all(&all).ok();
    let init = securenn::models::network_a().init_weights(7).unwrap();
    securenn::nn::weights_file::save(
        &dirs[1].join("init.safetensors"),
        &init,
        Default::default(),
        false,
    )
    .unwrap();
    let mine = Mnist::load(DataSource::Bundled, Split::Train, 0, 200).unwrap();
    std::fs::write(dirs[0].join("mine.csv"), files::csv(&mine, false, ",")).unwrap();
    (dirs, init)
}

/// Three `party` processes train network A over QUIC: the parties agree on the data owner's
/// counts of images, which only it knew (160 and 20); every party reports each epoch's end and
/// checkpoints its own shares (mode 0600) in its own directory; only the model owner learns the
/// test accuracy and the trained weights, which it writes: network A's tensors, moved from the
/// initial weights. Run again, the model owner refuses to overwrite them before connecting.
#[test]
fn three_processes_train_network_a_over_quic() {
    let (dirs, init) = train_deployment("train");
    let t0 = Instant::now();
    let report = dirs[1].join("report1.json");
    let ps: Vec<Child> = (0..3u8)
        .map(|i| {
            let json = ["--json", report.to_str().unwrap(), "--report", "table"];
            let flags: &[&str] = if i == 1 { &json } else { &[] };
            party_with(&dirs[i as usize], i, None, flags)
        })
        .collect();
    let outs: Vec<(bool, String, String)> = ps.into_iter().map(finish).collect();
    eprintln!("training over QUIC took {:?}", t0.elapsed());
    for (i, (ok, out, err)) in outs.iter().enumerate() {
        assert!(ok, "P{i}: {err}");
        assert!(
            err.contains("both peers run the same training job; 1 epoch of 3 iterations on the data owner's 160 training images (20 test images)"),
            "P{i}: {err}"
        );
        assert!(err.contains("epoch 1/1 done"), "P{i}: {err}");
        assert!(
            out.contains("images              160 training, 20 test"),
            "P{i}: {out}"
        );
        // Only the model owner learns the accuracy and the weights.
        assert_eq!(err.contains("test accuracy"), i == 1, "P{i}: {err}");
        assert_eq!(
            out.contains("trained weights     written to"),
            i == 1,
            "P{i}: {out}"
        );
        assert!(out.contains(&format!("party {i} sent")), "P{i}: {out}");
        let ckpt = dirs[i].join("ckpt").join(format!("party{i}-epoch1.ckpt"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&ckpt).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", ckpt.display());
        }
        assert!(ckpt.exists(), "{}", ckpt.display());
        assert_eq!(dirs[i].join("trained.safetensors").exists(), i == 1);
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(json["training"]["iterations"], 3, "{json}");
    // What the model owner sent, per phase and layer (and printed with --report table).
    let phases: Vec<String> = json["training"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            format!(
                "{} {}",
                l["phase"].as_str().unwrap(),
                l["layer"].as_str().unwrap()
            )
        })
        .collect();
    for p in [
        "weights ",
        "forward 2.relu",
        "asm ",
        "backward 1.dense",
        "test ",
    ] {
        assert!(phases.iter().any(|q| q == p), "no {p:?} in {phases:?}");
    }
    assert!(
        outs[1].1.contains("sent by party 1 (per phase and layer"),
        "{}",
        outs[1].1
    );
    assert!(json["bytes_sent"].as_u64().unwrap() > 0 && json["rounds"].as_u64().unwrap() > 0);
    // The party's own peak of live heap bytes (its process runs one party).
    assert!(json["peak_memory_bytes"].as_u64().unwrap() > 0, "{json}");
    assert!(
        json["training"]["epoch_stats"][0]["test_accuracy"].is_number(),
        "{json}"
    );
    let model = securenn::models::network_a();
    let out = dirs[1].join("trained.safetensors");
    let (trained, _) = securenn::nn::weights_file::load(&out, &model).unwrap();
    let names = |w: &securenn::nn::Weights| -> Vec<String> {
        w.tensors.iter().map(|(n, _)| n.clone()).collect()
    };
    let shapes: Vec<String> = model
        .param_shapes()
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names(&trained), shapes);
    let moved = trained
        .tensors
        .iter()
        .zip(&init.tensors)
        .map(|((_, a), (_, b))| (a - b).iter().fold(0f64, |m, d| m.max(d.abs())))
        .fold(0f64, f64::max);
    assert!(moved > 1e-3, "the weights did not move: {moved}");
    // The weights are there: a second run is refused at the model owner, before connecting.
    let before = std::fs::read(&out).unwrap();
    let (ok, _, err) = finish_within(party(&dirs[1], 1, None), Duration::from_secs(10));
    assert!(!ok);
    assert!(
        err.contains("job.out exists")
            && err.contains("force = true")
            && !err.contains("connected to"),
        "{err}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), before);
    for d in &dirs {
        std::fs::remove_dir_all(d).ok();
    }
}

/// A party process killed mid-training, then the three restarted with `resume = true`: the
/// run continues from the latest epoch all three checkpointed and ends with the weights an
/// uninterrupted run gives, bit for bit (the same seed on both runs, allowed by
/// `--insecure-reproducible`, so that they are the same computation share for share).
#[test]
fn a_party_killed_mid_training_resumes_to_the_same_weights() {
    let setup = |name: &str| {
        let (dirs, _) = train_deployment(name);
        for d in &dirs {
            edit(d, |t| {
                with_seed(t)
                    .replace("epochs = 1", "epochs = 3")
                    .replace("iterations = 3\n", "")
                    .replace("dead_peer_timeout = 5", "dead_peer_timeout = 2")
            });
        }
        dirs
    };
    let run = |dirs: &[std::path::PathBuf]| -> Vec<Child> {
        (0..3u8)
            .map(|i| party_with(&dirs[i as usize], i, None, &["--insecure-reproducible"]))
            .collect()
    };
    // Uninterrupted.
    let whole = setup("resume-whole");
    for (i, (ok, _, err)) in run(&whole).into_iter().map(finish).enumerate() {
        assert!(ok, "P{i}: {err}");
    }
    // Party 2's process is killed as soon as the three have checkpointed epoch 1 (of 3).
    let dirs = setup("resume-killed");
    let mut ps = run(&dirs);
    let ckpts: Vec<_> = (0..3)
        .map(|i| dirs[i].join("ckpt").join(format!("party{i}-epoch1.ckpt")))
        .collect();
    let t0 = Instant::now();
    while !ckpts.iter().all(|c| c.exists()) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no checkpoint of epoch 1"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    ps[2].kill().unwrap();
    let killed_at = t0.elapsed();
    let outs: Vec<_> = ps.into_iter().map(finish).collect();
    for (i, (ok, _, err)) in outs.iter().enumerate().take(2) {
        assert!(!ok, "P{i} finished although P2 was killed: {err}");
        assert!(err.contains("P2"), "P{i} does not name P2: {err}");
    }
    assert!(!dirs[1].join("trained.safetensors").exists());
    eprintln!("party 2 killed {killed_at:?} in, after the epoch-1 checkpoints");
    // Restarted, all three resume.
    for d in &dirs {
        edit(d, |t| t.replace("[job]\n", "[job]\nresume = true\n"));
    }
    let outs: Vec<_> = run(&dirs).into_iter().map(finish).collect();
    for (i, (ok, out, err)) in outs.iter().enumerate() {
        assert!(ok, "P{i}: {err}");
        assert!(out.contains("20 run, resumed after epoch 1"), "P{i}: {out}");
    }
    let model = securenn::models::network_a();
    let load = |d: &std::path::Path| {
        securenn::nn::weights_file::load(&d.join("trained.safetensors"), &model)
            .unwrap()
            .0
    };
    for ((n, a), (_, b)) in load(&dirs[1]).tensors.iter().zip(&load(&whole[1]).tensors) {
        assert_eq!(a, b, "tensor {n} differs from the uninterrupted run's");
    }
    for d in whole.iter().chain(&dirs) {
        std::fs::remove_dir_all(d).ok();
    }
}

/// Party 1 trains with another learning rate: every party fails at once, before computing,
/// naming the field and every party's value.
#[test]
fn training_parties_disagreeing_on_a_parameter_fail_naming_it() {
    let (dirs, _) = train_deployment("train-mismatch");
    edit(&dirs[1], |t| t.replace("lr = 0.03125", "lr = 0.0625"));
    let ps: Vec<Child> = (0..3).map(|i| party(&dirs[i], i as u8, None)).collect();
    for p in ps {
        let (ok, _, err) = finish_within(p, Duration::from_secs(10));
        assert!(!ok);
        assert!(
            err.contains(
                "job.lr differs: party 0 has 0.03125, party 1 has 0.0625, party 2 has 0.03125"
            ),
            "{err}"
        );
        assert!(!err.contains("epoch"), "{err}");
    }
    assert!(!dirs[1].join("trained.safetensors").exists());
    for d in &dirs {
        std::fs::remove_dir_all(d).ok();
    }
}
