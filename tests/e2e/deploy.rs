//! The cluster files in deploy/: the Kubernetes manifests validate against the Kubernetes API
//! schemas (PyPI kubernetes-validate, which scripts/setup installs into target/deploy-venv),
//! say what the Indexed Job needs, and give refacen arguments it accepts; the Slurm script
//! runs refacen on the shard of its array task.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::support::repo;

fn venv_bin(name: &str) -> PathBuf {
    let bin = repo().join("target/deploy-venv/bin").join(name);
    assert!(
        bin.exists(),
        "{} is missing: run scripts/setup (it installs kubernetes-validate)",
        bin.display()
    );
    bin
}

/// `kubernetes-validate --strict` against Kubernetes 1.33 (the first with
/// `backoffLimitPerIndex` generally available): (passed, output).
fn validate(file: &std::path::Path) -> (bool, String) {
    let out = Command::new(venv_bin("kubernetes-validate"))
        .args(["--strict", "-k", "1.33.0"])
        .arg(file)
        .output()
        .expect("kubernetes-validate runs");
    (
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

/// The documents of a YAML file, as JSON (PyYAML comes with kubernetes-validate).
fn documents(file: &str) -> Vec<Value> {
    let script = "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))";
    let out = Command::new(venv_bin("python"))
        .args(["-c", script])
        .arg(repo().join(file))
        .output()
        .expect("python runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn env_of(container: &Value, name: &str) -> Value {
    container["env"].as_array().unwrap().iter().find(|e| e["name"] == name).cloned().unwrap_or(Value::Null)
}

#[test]
fn kubernetes_manifests_validate_against_the_api_schemas() {
    let dir = repo().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    for file in &files {
        let (passed, output) = validate(file);
        assert!(passed, "{}: {output}", file.display());
    }
    // The validator refuses what the API server would: a misspelled field of the Job.
    let job = std::fs::read_to_string(dir.join("regenerate-job.yaml")).unwrap();
    let broken = tempfile::NamedTempFile::with_suffix(".yaml").unwrap();
    std::fs::write(broken.path(), job.replace("backoffLimitPerIndex:", "backofLimitPerIndex:")).unwrap();
    let (passed, output) = validate(broken.path());
    assert!(!passed && output.contains("backofLimitPerIndex"), "{output}");
}

#[test]
fn the_indexed_job_runs_one_shard_per_index_on_a_gpu_with_its_stores_from_a_secret() {
    let job = &documents("deploy/kubernetes/regenerate-job.yaml")[0];
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"], "Indexed");
    let completions = spec["completions"].as_u64().unwrap();
    assert!(spec["parallelism"].as_u64().unwrap() <= completions);
    assert!(spec["backoffLimitPerIndex"].as_u64().unwrap() >= 1);
    let rules = spec["podFailurePolicy"]["rules"].as_array().unwrap();
    assert!(rules.iter().any(|r| r["action"] == "Ignore"
        && r["onPodConditions"].as_array().unwrap().iter().any(|c| c["type"] == "DisruptionTarget")));
    let pod = &spec["template"]["spec"];
    let container = &pod["containers"][0];
    // The shard count reaches the pods, and equals the Job's completions.
    assert_eq!(env_of(container, "REFACEN_SHARDS")["value"].as_str().unwrap(), completions.to_string());
    let secret = &documents("deploy/kubernetes/secret.example.yaml")[0];
    for (var, key) in [("REFACEN_MONGO", "mongo"), ("REFACEN_TARANTOOL", "tarantool")] {
        let from = &env_of(container, var)["valueFrom"]["secretKeyRef"];
        assert_eq!(from["name"], secret["metadata"]["name"], "{var}");
        assert_eq!(from["key"], key, "{var}");
        assert!(secret["stringData"][key].is_string(), "the example Secret has {key}");
    }
    assert_eq!(container["resources"]["requests"]["nvidia.com/gpu"], "1");
    let mounts = container["volumeMounts"].as_array().unwrap();
    let mount = |name: &str| mounts.iter().find(|m| m["name"] == name).unwrap().clone();
    assert_eq!(mount("uploads")["readOnly"], true, "Uploads is mounted read-only");
    assert_ne!(mount("derived")["readOnly"], true, "the derived files are written");

    // refacen accepts the Job's arguments, takes its shard from the Job's environment, and
    // names it on its first line (then stops: no stores here).
    let args: Vec<String> =
        container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().into()).collect();
    let uploads = tempfile::tempdir().unwrap();
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            a.replace("/srv/uploads", &uploads.path().display().to_string())
                .replace("/srv/derived", &uploads.path().join("derived").display().to_string())
        })
        .collect();
    let out = crate::support::refacen_env(
        &args,
        &[
            ("REFACEN_DEVICE", "cpu"),
            ("JOB_COMPLETION_INDEX", "5"),
            ("REFACEN_SHARDS", &completions.to_string()),
            (
                "REFACEN_MONGO",
                &format!("mongodb://127.0.0.1:{}/?directConnection=true", crate::servers::closed_port()),
            ),
            ("REFACEN_TARANTOOL", ""),
        ],
    );
    let first = out.stderr.lines().next().unwrap_or_default();
    assert!(
        first.contains(&format!("shard 5/{completions}")) && first.contains("Kubernetes Indexed Job"),
        "{}",
        out.stderr
    );
    assert_eq!(out.code, 2, "the closed store port ends it: {}", out.stderr);
    assert!(out.stderr.contains("mongodb"), "{}", out.stderr);

    let sync = &documents("deploy/kubernetes/sync-search-job.yaml")[0];
    let sync_args = sync["spec"]["template"]["spec"]["containers"][0]["args"].as_array().unwrap();
    assert_eq!(sync_args[0], "sync-search");
    assert!(sync_args.iter().any(|a| a == "--activate"));
}

#[test]
fn the_slurm_array_script_runs_the_shard_of_its_task() {
    let script = repo().join("deploy/slurm/regenerate.sbatch");
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(text.contains("#SBATCH --array="), "{text}");
    let uploads = tempfile::tempdir().unwrap();
    // As Slurm runs task 3 of `--array=1-4`: shard 2 of 4.
    let out = Command::new("bash")
        .arg(&script)
        .env("REFACEN_BIN", env!("CARGO_BIN_EXE_refacen"))
        .env("REFACEN_GUEST_DIR", crate::support::guest_dir())
        .env("REFACEN_DEVICE", "cpu")
        .env("REFACEN_UPLOADS", uploads.path())
        .env("REFACEN_DERIVED", uploads.path().join("derived"))
        .env(
            "REFACEN_MONGO",
            format!("mongodb://127.0.0.1:{}/?directConnection=true", crate::servers::closed_port()),
        )
        .env("HOME", uploads.path())
        // The compiled code of every guest in the directory, as the other tests share it.
        .env("REFACEN_CACHE_DIR", repo().join("target/test-cache"))
        .env("SLURM_ARRAY_TASK_ID", "3")
        .env("SLURM_ARRAY_TASK_MIN", "1")
        .env("SLURM_ARRAY_TASK_MAX", "4")
        .env("SLURM_ARRAY_TASK_COUNT", "4")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr.lines().next().unwrap_or_default();
    assert!(first.contains("shard 2/4") && first.contains("Slurm"), "{stderr}");
    assert_eq!(out.status.code(), Some(2), "the closed store port ends it: {stderr}");
}
