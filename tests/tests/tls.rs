//! Transport security end to end: a cluster whose every listener and
//! connection is TLS (certificates from `deploy/make-certs.sh`), client
//! credentials on the data API, certificates reloaded from disk, and the
//! arbiter's etcd in mutual TLS, and Redis clients in TLS (proxy mode).

use std::time::Duration;

use proto_common::tls::{self, MaybeTls, Tls, TlsFiles};
use understudy_tests::client::{credentials, KvClient};
use understudy_tests::harness::{
    arbiter_binary, etcd_binary, free_ports, serial, wait_for, wait_until, Cluster, ProcessSpec,
    ProxyCluster, ReplicaConfig, TestCerts, TestDir,
};
use understudy_tests::loadgen::background::failover_load_config;
use understudy_tests::loadgen::BackgroundLoad;

/// Generous: a debug build on two busy cores.
const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_fails_over_with_every_acknowledged_write() {
    let _serial = serial().await;
    let dir = TestDir::new("tls-failover").unwrap();
    let mut cluster = Cluster::builder()
        .with_tls()
        .with_token()
        .arbiter_args(["--tls-client-auth"])
        .replica_args(["--tls-client-auth"])
        .sync_standbys(1)
        .start(&dir)
        .await
        .unwrap();
    for url in cluster.urls() {
        assert!(url.starts_with("https://"), "{url}");
    }
    let load = BackgroundLoad::start(failover_load_config(&cluster.urls(), 16, &[])).unwrap();
    load.wait_acks(300, DEADLINE).await.unwrap();
    let (active, standby) = cluster
        .wait_active_with_sync_standby(DEADLINE)
        .await
        .unwrap();
    load.wait_acks(200, DEADLINE).await.unwrap();

    cluster.kill(&active.id).unwrap();
    let promoted = cluster
        .wait_for_active_after(active.epoch, DEADLINE)
        .await
        .unwrap();
    assert_eq!(promoted.id, standby);
    load.wait_acks_after_epoch(active.epoch, 200, DEADLINE)
        .await
        .unwrap();
    let (report, ledger) = load.stop(DEADLINE).await.unwrap();
    let data = cluster.dump(&promoted.id).await.unwrap();
    let verification = ledger.verify(&data);
    assert!(verification.is_ok(), "{}", verification.summary());
    println!(
        "TLS failover: {} ops, acks by epoch {:?}; {}",
        report.ops,
        ledger.acks_by_epoch(),
        verification.summary()
    );

    // The old active comes back over TLS and rejoins the sync set.
    cluster.restart(&active.id).await.unwrap();
    cluster
        .wait_sync_confirmed(&active.id, DEADLINE)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_a_certificate_from_another_ca_cannot_join() {
    let _serial = serial().await;
    let dir = TestDir::new("tls-wrong-ca").unwrap();
    let cluster = Cluster::builder()
        .with_tls()
        .arbiter_args(["--tls-client-auth"])
        .replica_args(["--tls-client-auth"])
        .start(&dir)
        .await
        .unwrap();
    let active = cluster.wait_for_active(DEADLINE).await.unwrap();
    let certs = cluster.certs().unwrap();

    // c trusts the cluster's CA but its own certificate is from another.
    let other = TestCerts::make(&dir.join("other-ca"), &["c"]).unwrap();
    let mut config = cluster.replica_config(&dir, "c");
    let flags = std::mem::take(&mut config.extra_args);
    let mut flags = flags.into_iter();
    while let Some(flag) = flags.next() {
        match flag.as_str() {
            "--tls-cert" | "--tls-key" => {
                flags.next();
            }
            _ => config.extra_args.push(flag),
        }
    }
    // (The cluster's --tls-ca stays.)
    let own = other.args("c");
    let c = config.args(own[..4].to_vec()).spawn().unwrap();

    // The arbiter refuses its handshake, so it never becomes a member.
    wait_until(DEADLINE, "the arbiter refuses c's certificate", || {
        let log = cluster.arbiter.stderr();
        async move { log.contains("TLS handshake failed") }
    })
    .await
    .unwrap();
    wait_until(DEADLINE, "c says its heartbeats fail", || {
        let log = c.stderr();
        async move { log.contains("heartbeat failed") && log.contains("UnknownCA") }
    })
    .await
    .unwrap();
    let status = cluster.arbiter.status().await.unwrap();
    assert!(
        status.replicas.iter().all(|m| m.node_id.as_str() != "c"),
        "{status:?}"
    );

    // Its connection to the active's replication port is refused too.
    let stranger = Tls::load(
        TlsFiles {
            identity: Some((other.cert("c"), other.dir.join("c-key.pem"))),
            ca: certs.dir.join("ca.pem"),
        },
        false,
    )
    .unwrap();
    let repl = cluster.replica(&active.id).repl_addr().unwrap();
    let refused = refused_by_server(&repl, &stranger).await;
    assert!(refused, "the active accepted a certificate from another CA");
    // ... while a certificate from the cluster's CA is accepted.
    assert!(!refused_by_server(&repl, &certs.client).await);
}

/// Whether the server at `addr` ends the connection after a handshake with
/// `tls` (TLS 1.3 servers check the client certificate after the client's
/// side of the handshake is done: the refusal arrives on the first read).
async fn refused_by_server(addr: &str, tls: &Tls) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tls::connect(addr, Some(tls), Duration::from_secs(5)).await else {
        return true;
    };
    let _ = stream.write_all(b"\0\0\0\0").await;
    let _ = stream.flush().await;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
        Ok(Err(e)) => {
            e.to_string().contains("certificate") || e.kind() != std::io::ErrorKind::TimedOut
        }
        Ok(Ok(0)) => false,
        Ok(Ok(_)) => false,
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_api_needs_a_credential_and_the_health_endpoints_do_not() {
    let _serial = serial().await;
    let dir = TestDir::new("tls-credentials").unwrap();
    let read_token = dir.join("read.token");
    std::fs::write(&read_token, "read-only-token-0123456789\n").unwrap();
    let cluster = Cluster::builder()
        .with_tls()
        .with_token()
        .replica_args([
            "--read-token-file".to_string(),
            read_token.display().to_string(),
        ])
        .start(&dir)
        .await
        .unwrap();
    let active = cluster.wait_for_active(DEADLINE).await.unwrap();
    let tls = cluster.certs().unwrap().client.clone();
    let token = cluster.token().unwrap();

    let mut anonymous = KvClient::bare(&active.url, Some(tls.clone())).unwrap();
    let r = anonymous.put("k", "v").await.unwrap();
    assert_eq!(r.status, 401, "{}", r.body_text());
    assert!(r.body_text().contains("unauthorized"), "{}", r.body_text());
    assert!(r.headers.contains_key("www-authenticate"));
    for path in ["/v1/kv/k", "/v1/status", "/metrics"] {
        let r = anonymous
            .request(hyper::Method::GET, path, &[], "")
            .await
            .unwrap();
        assert_eq!(r.status, 401, "GET {path}: {}", r.body_text());
    }
    for path in ["/healthz", "/v1/role"] {
        let r = anonymous
            .request(hyper::Method::GET, path, &[], "")
            .await
            .unwrap();
        assert_eq!(r.status, 200, "GET {path}: {}", r.body_text());
    }
    let mut wrong = KvClient::bare(&active.url, Some(tls.clone()))
        .unwrap()
        .with_bearer("not-the-token-0123456789");
    assert_eq!(wrong.get("k").await.unwrap().status, 401);

    let mut writer = KvClient::bare(&active.url, Some(tls.clone()))
        .unwrap()
        .with_bearer(&token);
    assert_eq!(writer.put("k", "v").await.unwrap().status, 200);

    let mut reader = KvClient::bare(&active.url, Some(tls.clone()))
        .unwrap()
        .with_bearer("read-only-token-0123456789");
    let got = reader.get("k").await.unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(got.body_text(), "v");
    let metrics = reader
        .request(hyper::Method::GET, "/metrics", &[], "")
        .await
        .unwrap();
    assert_eq!(metrics.status, 200);
    let denied = reader.put("k", "w").await.unwrap();
    assert_eq!(denied.status, 403, "{}", denied.body_text());
    assert!(
        denied.body_text().contains("read-only"),
        "{}",
        denied.body_text()
    );

    // Every refusal is counted, and logged with the peer's address.
    let text = metrics.body_text();
    let counted = text
        .lines()
        .find(|l| l.starts_with("understudy_credentials_rejected_total{listener=\"http\"}"))
        .unwrap_or_else(|| panic!("no rejection counter in:\n{text}"));
    let n: f64 = counted.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 5.0, "{counted}");
    let log = cluster.replica(&active.id).stderr();
    assert!(
        log.contains("credential rejected") && log.contains("peer=127.0.0.1:"),
        "{log}"
    );

    // A standby forwards the client's credential: refused without one,
    // carried out with one.
    let standby = cluster.other_than(&active.id);
    let standby_url = cluster.replica(&standby).url();
    let mut anonymous = KvClient::bare(&standby_url, Some(tls.clone())).unwrap();
    assert_eq!(anonymous.put("f", "1").await.unwrap().status, 401);
    let mut writer = KvClient::bare(&standby_url, Some(tls))
        .unwrap()
        .with_bearer(&token);
    assert_eq!(writer.put("f", "1").await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_replaced_on_disk_is_used_by_new_connections() {
    let _serial = serial().await;
    let dir = TestDir::new("tls-reload").unwrap();
    let certs = TestCerts::make(&dir.join("tls"), &["solo"]).unwrap();
    let mut replica = ReplicaConfig::new(&dir, "solo")
        .tls(&certs, "solo", None)
        .start()
        .await
        .unwrap();
    let addr = format!("127.0.0.1:{}", replica.port());
    let before = server_certificate(&addr, &certs.client).await;
    assert_eq!(before, pem_der(&certs.cert("solo")));

    // An established connection, to check it survives the reload.
    let mut kept = replica.client();
    assert_eq!(kept.put("k", "1").await.unwrap().status, 200);

    certs.renew(&["solo"]).unwrap();
    let renewed = pem_der(&certs.cert("solo"));
    assert_ne!(renewed, before);
    wait_until(
        DEADLINE,
        "new connections get the renewed certificate",
        || {
            let (addr, client, renewed) = (addr.clone(), certs.client.clone(), renewed.clone());
            async move { server_certificate(&addr, &client).await == renewed }
        },
    )
    .await
    .unwrap();
    assert_eq!(kept.put("k", "2").await.unwrap().status, 200);
    let reloads = |log: String| log.matches("TLS certificate, key and CA reloaded").count();
    assert_eq!(reloads(replica.stderr()), 1, "{}", replica.stderr());

    // SIGHUP reloads at once, even with nothing changed, and the process
    // lives on (the default action of SIGHUP would end it).
    replica.process().signal(libc::SIGHUP).unwrap();
    wait_until(DEADLINE, "SIGHUP reloads the files", || {
        let log = replica.stderr();
        async move { reloads(log) == 2 }
    })
    .await
    .unwrap();
    assert!(replica.is_running());
    assert_eq!(kept.put("k", "3").await.unwrap().status, 200);
}

/// The certificate the server at `addr` presents to a new connection.
async fn server_certificate(addr: &str, tls: &Tls) -> Vec<u8> {
    let stream = tls::connect(addr, Some(tls), Duration::from_secs(5))
        .await
        .unwrap();
    match stream {
        MaybeTls::Client(s) => s.get_ref().1.peer_certificates().unwrap()[0].to_vec(),
        _ => panic!("not TLS"),
    }
}

/// The first certificate in a PEM file, DER-encoded.
fn pem_der(path: &std::path::Path) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_file_iter(path)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbiters_keep_their_state_in_an_etcd_that_speaks_only_mutual_tls() {
    let _serial = serial().await;
    let dir = TestDir::new("tls-etcd").unwrap();
    let certs = TestCerts::make(&dir.join("tls"), &["etcd", "arbiter", "r1", "r2"]).unwrap();
    let [client_port, peer_port, arbiter_port] = free_ports(3)[..] else {
        unreachable!()
    };
    let tls_file = |name: &str| certs.dir.join(name).display().to_string();
    let _etcd = ProcessSpec::new("etcd", etcd_binary(), dir.path())
        .arg("--name=etcd")
        .arg(format!("--data-dir={}", dir.join("etcd.data").display()))
        .arg(format!(
            "--listen-client-urls=https://127.0.0.1:{client_port}"
        ))
        .arg(format!(
            "--advertise-client-urls=https://127.0.0.1:{client_port}"
        ))
        .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
        .arg(format!(
            "--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"
        ))
        .arg(format!(
            "--initial-cluster=etcd=http://127.0.0.1:{peer_port}"
        ))
        .arg(format!("--cert-file={}", tls_file("etcd.pem")))
        .arg(format!("--key-file={}", tls_file("etcd-key.pem")))
        .arg(format!("--trusted-ca-file={}", tls_file("ca.pem")))
        .arg("--client-cert-auth")
        .arg("--logger=zap")
        .spawn()
        .unwrap();
    let arbiter_url = format!("https://127.0.0.1:{arbiter_port}");
    let _arbiter = ProcessSpec::new("arbiter", arbiter_binary(), dir.path())
        .args(["run", "--cluster", "c", "--initial-wait-ms", "500"])
        .arg(format!("--listen=127.0.0.1:{arbiter_port}"))
        .arg(format!("--store=etcds://127.0.0.1:{client_port}"))
        .args(certs.args("arbiter"))
        .spawn()
        .unwrap();
    credentials::remember(
        &format!("127.0.0.1:{arbiter_port}"),
        credentials::Credentials {
            tls: Some(certs.client.clone()),
            token: None,
        },
    );
    let mut replicas = Vec::new();
    for id in ["r1", "r2"] {
        let replica = ReplicaConfig::new(&dir, id)
            .args([
                "--repl-listen".to_string(),
                format!("127.0.0.1:{}", free_ports(1)[0]),
                "--arbiter".to_string(),
                arbiter_url.clone(),
                "--cluster".to_string(),
                "c".to_string(),
            ])
            .tls(&certs, id, None)
            .start()
            .await
            .unwrap();
        replicas.push(replica);
    }
    // The arbiter led (its campaign and state live in etcd) and formed the
    // cluster: an active takes a write.
    let active_url = wait_for(DEADLINE, "an active formed through etcd in TLS", || {
        let urls: Vec<String> = replicas.iter().map(|r| r.url()).collect();
        async move {
            for url in urls {
                let mut c = KvClient::new(&url).ok()?;
                if c.put("through-etcd", "1").await.ok()?.status == 200 {
                    return Some(url);
                }
            }
            None
        }
    })
    .await
    .unwrap();
    let mut status = KvClient::new(&arbiter_url).unwrap();
    let s = status
        .request(hyper::Method::GET, "/v1/status", &[], "")
        .await
        .unwrap();
    assert_eq!(s.status, 200, "{}", s.body_text());
    assert!(
        s.body_text().contains("\"is_leader\":true"),
        "{}",
        s.body_text()
    );
    println!("etcd over mutual TLS: active at {active_url}");
}

/// `redis-cli` (Debian's redis-tools) against `port` with `args`; its
/// output, or why it failed.
async fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = tokio::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "--no-auth-warning"])
        .args(args)
        .output()
        .await
        .expect("redis-cli runs (deploy/prereqs.sh installs redis-tools)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_clients_reach_proxy_mode_in_tls_with_their_tokens() {
    let _serial = serial().await;
    let dir = TestDir::new("tls-resp").unwrap();
    let read_token = dir.join("read.token");
    std::fs::write(&read_token, "resp-read-only-0123456789\n").unwrap();
    let proxy = ProxyCluster::start(&dir, &["a", "b"], |b| {
        b.with_tls().with_token().replica_args([
            "--read-token-file".to_string(),
            read_token.display().to_string(),
        ])
    })
    .await
    .unwrap();
    let active = proxy.cluster.wait_for_active(DEADLINE).await.unwrap();
    let standby = proxy.cluster.other_than(&active.id);
    let ca = proxy.cluster.certs().unwrap().dir.join("ca.pem");
    let ca = ca.display().to_string();
    let token = proxy.cluster.token().unwrap();
    let tls = ["--tls", "--cacert", ca.as_str()];

    // Through the standby: it forwards to the active's RESP port in TLS.
    let on_standby = proxy.resp[&standby];
    let set = redis_cli(
        on_standby,
        &[&tls[..], &["-a", &token, "SET", "k", "v"]].concat(),
    )
    .await;
    assert_eq!(set, "OK");
    let get = redis_cli(
        proxy.resp[&active.id],
        &[&tls[..], &["-a", &token, "GET", "k"]].concat(),
    )
    .await;
    assert_eq!(get, "v");
    // The read-only token reads and may not write.
    let ro = ["-a", "resp-read-only-0123456789"];
    let get = redis_cli(on_standby, &[&tls[..], &ro[..], &["GET", "k"]].concat()).await;
    assert_eq!(get, "v");
    let set = redis_cli(
        on_standby,
        &[&tls[..], &ro[..], &["SET", "k", "w"]].concat(),
    )
    .await;
    assert!(set.contains("NOPERM") && set.contains("read-only"), "{set}");
    // Without the token, or without TLS, nothing.
    let get = redis_cli(on_standby, &[&tls[..], &["GET", "k"]].concat()).await;
    assert!(get.contains("NOAUTH"), "{get}");
    let plain = redis_cli(on_standby, &["-a", &token, "GET", "k"]).await;
    assert_ne!(
        plain, "v",
        "a clear-text client got an answer from a TLS port"
    );
    let replica = proxy.cluster.replica(&standby);
    wait_until(DEADLINE, "the refused handshake is logged", || {
        let log = replica.stderr();
        async move { log.contains("TLS handshake failed") }
    })
    .await
    .unwrap();
}
