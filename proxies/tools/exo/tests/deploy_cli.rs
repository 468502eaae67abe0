//! `exo deploy` as a user runs it: a broken manifest prints every problem with its position and
//! writes nothing; a good one renders every planned target.

use std::process::Command;

fn exo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_exo"))
}

#[test]
fn a_broken_manifest_writes_nothing_and_lists_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("exoflow.yaml");
    std::fs::write(&manifest, "name: x\ncompute:\n  platform:\n    affinity: [k8s]\napp:\n  container:\n    image: a\nqueues:\n  - name: Bad_Name\n").unwrap();
    let out = dir.path().join("out");
    let result = exo().args(["deploy", "render"]).arg(&manifest).arg("--out").arg(&out).output().unwrap();
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    for fragment in [":1:", "app name", "no tag or digest", ":9:", "queue name", "nothing rendered"] {
        assert!(stderr.contains(fragment), "missing {fragment:?} in:\n{stderr}");
    }
    assert!(!out.exists(), "something was written to --out");
}

#[test]
fn the_example_renders_every_planned_target() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../deploy/examples/shop.yaml");
    let result = exo().args(["deploy", "render", example, "--out"]).arg(&out).output().unwrap();
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    for dir in ["k8s", "systemd", "compose", "cloudformation", "arm"] {
        assert!(out.join(dir).is_dir(), "{dir} not rendered");
    }
}
