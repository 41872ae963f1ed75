//! The deployment kit in `deploy/`, checked with the real tools: HAProxy's
//! own config check, `promtool` on the scrape config and on the alert
//! rules' unit tests, `systemd-analyze verify` on the units,
//! `kubernetes-validate` (PyPI) on the Kubernetes manifests; and traffic
//! through a real HAProxy with `deploy/haproxy.cfg` across a `kill -9` of
//! the active.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use understudy_tests::harness::{
    bin_dir, free_port, metrics_text, serial, wait_for, Cluster, ProcessSpec, ProxyCluster, TestDir,
};
use understudy_tests::loadgen::background::failover_load_config;
use understudy_tests::loadgen::BackgroundLoad;

const DEADLINE: Duration = Duration::from_secs(60);

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

/// Where a system tool is (root's sbin may be missing from a test's PATH).
fn tool(name: &str) -> String {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|dir| format!("{dir}/{name}"))
        .find(|p| Path::new(p).exists())
        .unwrap_or_else(|| name.to_string())
}

/// Runs `program args`; returns its stdout and stderr, or why it failed.
fn run(program: &str, args: &[&str]) -> Result<(String, String), String> {
    let out = Command::new(tool(program))
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program} (deploy/prereqs.sh installs it): {e}"))?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if out.status.success() {
        Ok((text(&out.stdout), text(&out.stderr)))
    } else {
        Err(format!(
            "{program} {args:?} failed ({}):\n{}\n{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        ))
    }
}

/// `promtool check metrics` on `text` (classic format, on stdin): Ok when
/// it finds nothing to say.
fn promtool_check_metrics(text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run promtool: {e}"))?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("promtool check metrics ({}):\n{said}", out.status))
    }
}

#[test]
fn the_haproxy_config_is_valid() {
    let cfg = deploy("haproxy.cfg");
    run("haproxy", &["-c", "-f", cfg.to_str().unwrap()]).unwrap();
}

#[test]
fn the_prometheus_config_is_valid_and_every_alert_fires_on_its_series() {
    let config = deploy("prometheus/prometheus.yml");
    run("promtool", &["check", "config", config.to_str().unwrap()]).unwrap();
    let tests = deploy("prometheus/alerts_test.yml");
    let (out, _) = run("promtool", &["test", "rules", tests.to_str().unwrap()]).unwrap();
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn the_systemd_units_verify_without_a_warning() {
    // verify checks that ExecStart exists: point it at the built binaries.
    let dir = TestDir::new("systemd-units").unwrap();
    let bin = bin_dir();
    let mut units = Vec::new();
    for (name, as_name) in [
        ("understudy-arbiter.service", "understudy-arbiter.service"),
        (
            "understudy-replica@.service",
            "understudy-replica@a.service",
        ),
    ] {
        let text = std::fs::read_to_string(deploy(&format!("systemd/{name}"))).unwrap();
        let text = text.replace("/usr/local/bin/", &format!("{}/", bin.display()));
        let path = dir.join(as_name);
        std::fs::write(&path, text).unwrap();
        units.push(path.display().to_string());
    }
    let args: Vec<&str> = std::iter::once("verify")
        .chain(units.iter().map(String::as_str))
        .collect();
    let (_, stderr) = run("systemd-analyze", &args).unwrap();
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify warned:\n{stderr}"
    );
}

/// Every metric the alert rules use is one the arbiter or the active
/// exports (so an alert can fire at all), and the per-replica and build
/// series are there.
/// The manifests against Kubernetes' own schema (1.30, unknown fields
/// refused), and every `UNDERSTUDY_*` variable they set is one the binary
/// they run reads (a misspelt one would be ignored silently).
#[test]
fn the_kubernetes_manifests_validate_and_set_only_real_settings() {
    let manifest = deploy("kubernetes/understudy.yaml");
    let manifest = manifest.to_str().unwrap();
    // The python3 on PATH: the one deploy/prereqs.sh installed it for.
    let validated = Command::new("python3")
        .args([
            "-m",
            "kubernetes_validate",
            "--strict",
            "-k",
            "1.30",
            manifest,
        ])
        .output()
        .expect("python3 runs");
    let out = String::from_utf8_lossy(&validated.stdout);
    let err = String::from_utf8_lossy(&validated.stderr);
    assert!(
        validated.status.success(),
        "kubernetes-validate (deploy/prereqs.sh installs it) refused the manifests:\n{out}{err}"
    );
    let kinds = out
        .lines()
        .chain(err.lines())
        .filter(|l| l.contains("passed"))
        .count();
    assert_eq!(kinds, 6, "{out}{err}");

    let text = std::fs::read_to_string(manifest).unwrap();
    let help = |program: &Path| {
        let out = Command::new(program)
            .args(["run", "--help"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let arbiter_help = help(&bin_dir().join("arbiter"));
    let replica_help = help(&bin_dir().join("replica"));
    let mut current = "";
    let mut checked = 0;
    for line in text.lines() {
        if line.contains("/usr/local/bin/arbiter") {
            current = "arbiter";
        } else if line.contains("/usr/local/bin/replica") {
            current = "replica";
        }
        let Some(start) = line.find("name: UNDERSTUDY_") else {
            continue;
        };
        let name: String = line[start + 6..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || *c == '_')
            .collect();
        let help = if current == "arbiter" {
            &arbiter_help
        } else {
            &replica_help
        };
        assert!(
            help.contains(&format!("[env: {name}=")),
            "{name} is set for the {current} but `{current} run` reads no such variable"
        );
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} variables found");
    assert!(
        text.contains("path: /v1/role"),
        "the active Service needs the role probe"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_alerts_and_the_grafana_dashboard_use_is_exported() {
    let _serial = serial().await;
    let dir = TestDir::new("alert-metrics").unwrap();
    let (cluster, active, standby) = Cluster::builder()
        .sync_standbys(1)
        .start_with_sync_standby(&dir, DEADLINE)
        .await
        .unwrap();
    // One write, so the write counters have a series.
    let mut client = cluster.replica(&active.id).client();
    assert_eq!(client.put("k", "v").await.unwrap().status, 200);
    let arbiter = metrics_text(&cluster.arbiter.url()).await.unwrap();
    let replica = metrics_text(&cluster.replica(&active.id).url())
        .await
        .unwrap();
    // Proxy mode's own: a proxy-mode active, once it has read its
    // upstream (every second) and its tap has a lag to report.
    let proxy_dir = TestDir::new("alert-metrics-proxy").unwrap();
    let proxy = ProxyCluster::start(&proxy_dir, &["a", "b"], |b| b.sync_standbys(1))
        .await
        .unwrap();
    let proxy_active = proxy.cluster.wait_for_active(DEADLINE).await.unwrap();
    let proxy_url = proxy.cluster.replica(&proxy_active.id).url();
    let proxied = wait_for(DEADLINE, "a proxy-mode active's upstream metrics", || {
        let url = proxy_url.clone();
        async move {
            let text = metrics_text(&url).await.ok()?;
            text.contains("understudy_tap_lag_bytes{").then_some(text)
        }
    })
    .await
    .unwrap();
    for (who, text) in [
        ("arbiter", &arbiter),
        ("active replica", &replica),
        ("proxy-mode active replica", &proxied),
    ] {
        promtool_check_metrics(text).unwrap_or_else(|e| panic!("{who}'s /metrics: {e}"));
    }
    let exported = format!("{arbiter}{replica}{proxied}");
    // The alert rules, and every query of the Grafana dashboard.
    let rules = std::fs::read_to_string(deploy("prometheus/alerts.yml")).unwrap();
    let grafana: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana/understudy.json")).unwrap())
            .expect("the Grafana dashboard is JSON");
    let mut exprs = Vec::new();
    collect_exprs(&grafana, &mut exprs);
    assert!(exprs.len() >= 8, "{exprs:?}");
    for (file, text) in [
        ("alerts.yml", rules),
        ("grafana/understudy.json", exprs.join("\n")),
    ] {
        let mut used: Vec<&str> = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("understudy_"))
            .collect();
        used.sort_unstable();
        used.dedup();
        assert!(used.len() >= 5, "{used:?}");
        for name in used {
            assert!(
                exported.lines().any(|l| l.starts_with(name)),
                "{file} uses {name}, which nothing exports"
            );
        }
    }
    for want in [
        format!(
            "understudy_arbiter_replica_active{{node=\"{}\"}} 1",
            active.id
        ),
        format!("understudy_arbiter_replica_active{{node=\"{standby}\"}} 0"),
        format!(
            "understudy_arbiter_replica_healthy{{node=\"{}\"}} 1",
            active.id
        ),
        "understudy_arbiter_build_info{version=".to_string(),
        format!("understudy_arbiter_replica_heartbeat_age_seconds{{node=\"{standby}\"}}"),
    ] {
        assert!(arbiter.contains(&want), "no {want} in:\n{arbiter}");
    }
    // The data directory holds the log with that write.
    let data = understudy_tests::harness::replica_status::metric_value(
        &replica,
        "understudy_data_dir_bytes",
    );
    assert!(data.is_some_and(|b| b > 0.0), "data_dir_bytes {data:?}");
    for want in [
        "understudy_build_info{version=".to_string(),
        format!("understudy_standby_lag_seconds{{standby=\"{standby}\"}}"),
        "understudy_lease_margin_min_seconds".to_string(),
    ] {
        assert!(replica.contains(&want), "no {want} in:\n{replica}");
    }
}

/// Every `"expr"` string in a Grafana dashboard.
fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v.as_str()) {
                    ("expr", Some(e)) => out.push(e.to_string()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| collect_exprs(i, out)),
        _ => {}
    }
}

/// Clients talk only to HAProxy (deploy/haproxy.cfg with this test's
/// ports); the active is killed; writes come back through HAProxy once the
/// standby is promoted and HAProxy's `/v1/role` check finds it, and every
/// acknowledged write is on the new active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_haproxy_survive_a_kill_of_the_active() {
    let _serial = serial().await;
    let dir = TestDir::new("haproxy-failover").unwrap();
    let (mut cluster, active, standby) = Cluster::builder()
        .heartbeat_ms(100)
        .lease_ms(1000)
        .sync_standbys(1)
        .start_with_sync_standby(&dir, DEADLINE)
        .await
        .unwrap();

    let port = free_port();
    let mut cfg = std::fs::read_to_string(deploy("haproxy.cfg")).unwrap();
    cfg = cfg.replace("bind 127.0.0.1:7600", &format!("bind 127.0.0.1:{port}"));
    let servers: String = cluster
        .ids()
        .iter()
        .map(|id| {
            format!(
                "    server {id} 127.0.0.1:{} check\n",
                cluster.replica(id).port()
            )
        })
        .collect();
    let start = cfg
        .find("    server a ")
        .expect("the sample's server lines");
    cfg.replace_range(start.., &servers);
    let cfg_path = dir.join("haproxy.cfg");
    std::fs::write(&cfg_path, &cfg).unwrap();
    let _haproxy = ProcessSpec::new("haproxy", tool("haproxy"), dir.path())
        .arg("-db")
        .arg("-f")
        .arg(&cfg_path)
        .spawn()
        .expect("haproxy starts (deploy/prereqs.sh installs it)");
    let url = format!("http://127.0.0.1:{port}");

    let load = BackgroundLoad::start(failover_load_config(&[url], 16, &[])).unwrap();
    load.wait_acks(500, DEADLINE).await.unwrap();
    let killed_at = load.now_ns();
    cluster.kill(&active.id).unwrap();
    let promoted = cluster
        .wait_for_active_after(active.epoch, DEADLINE)
        .await
        .unwrap();
    assert_eq!(promoted.id, standby);
    load.wait_acks_after_epoch(active.epoch, 300, DEADLINE)
        .await
        .unwrap();
    load.quiesce(DEADLINE).await.unwrap();
    let data = cluster.dump(&promoted.id).await.unwrap();
    let verification = load.ledger().verify(&data);
    assert!(verification.is_ok(), "{}", verification.summary());
    let gap = load
        .ledger()
        .timeline()
        .gap_around(killed_at, active.epoch)
        .expect("acks before the kill and after it");
    println!(
        "through haproxy: killed {} (epoch {}), {} active in epoch {}; longest write gap \
         {:.1} ms, kill to first ack of the new epoch {:.1} ms; {}",
        active.id,
        active.epoch,
        promoted.id,
        promoted.epoch,
        gap.gap_ms(),
        gap.recovery_ms(),
        verification.summary()
    );
    load.resume();
    let (report, _) = load.stop(DEADLINE).await.unwrap();
    println!("{report:?}");
}
