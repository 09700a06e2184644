//! Every shipped scenario runs (with few images), the fault scenario fails with the expected
//! message, and bad scenario files are refused naming the key, the line and what is allowed.

mod common;

use common::securenn_cli as run;

fn scenario(name: &str) -> String {
    format!("{}/scenarios/{name}.toml", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn shipped_scenarios_run() {
    for name in [
        "lan-a",
        "wan-a",
        "wan-c-batch128",
        "pond-vs-securenn",
        "lossy-wan",
        "quic-localhost",
        "batch-sweep",
    ] {
        let (ok, out, err) = run(&["run", &scenario(name), "--samples", "2"]);
        assert!(ok, "{name}: {err}");
        assert!(out.contains("100.00%"), "{name}: {out}");
    }
}

#[test]
fn partition_scenario_fails_naming_the_link() {
    let (ok, _, err) = run(&["run", &scenario("partition-p2"), "--samples", "2"]);
    assert!(!ok);
    assert!(
        err.contains("-> P2 is cut by a fault from 1ms") && err.contains("relu"),
        "{err}"
    );
}

#[test]
fn bad_scenarios_name_the_key_the_line_and_what_is_allowed() {
    let dir = std::env::temp_dir().join(format!("securenn-scenarios-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (text, needles) in [
        (
            "description = \"x\"\n[job]\nmodle = \"a\"\n",
            vec!["line 3", "modle", "model"],
        ),
        (
            "description = \"x\"\n[job]\nprotocol = \"spdz\"\n",
            vec!["line 3", "spdz", "securenn"],
        ),
        (
            "description = \"x\"\n[network]\ntransport = \"sim\"\npreset = \"moon\"\n",
            vec!["network.preset", "moon", "lossy-wan"],
        ),
        (
            "description = \"x\"\n[network]\ntransport = \"sim\"\n[network.links.\"0->0\"]\nlatency_ms = 1\n",
            vec!["0->0", "directed link"],
        ),
        (
            "description = \"x\"\n[network]\ntransport = \"sim\"\n[[fault]]\nkind = \"partition\"\nparty = 7\nat_ms = 1\n",
            vec!["fault[0].party", "7"],
        ),
        (
            "description = \"x\"\n[[fault]]\nkind = \"partition\"\nparty = 2\nat_ms = 1\n",
            vec!["faults need", "sim"],
        ),
        ("[job]\nmodel = \"a\"\n", vec!["description"]),
    ] {
        let f = dir.join("bad.toml");
        std::fs::write(&f, text).unwrap();
        let (ok, _, err) = run(&["run", f.to_str().unwrap()]);
        assert!(!ok, "{text}");
        for n in needles {
            assert!(err.contains(n), "{text}: missing {n:?} in {err}");
        }
        assert!(!err.contains("panicked"), "{err}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
