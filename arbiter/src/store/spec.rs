//! `StoreSpec`: which state store `--store` names, and opening it behind
//! `Arc<dyn StateStore>` so the shell never knows which one it drives.
//!
//! - `file:PATH` — the embedded [`FileStore`] (one arbiter).
//! - `etcd://HOST:PORT[,HOST:PORT…]` — several arbiters sharing etcd
//!   (DESIGN.md, "Arbiter high availability"). [`StoreSpec::open`] gives
//!   the cluster's read-only [`EtcdStore`]; writing takes a term of
//!   leadership (`crate::election`), which `server::run` campaigns for.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use super::cas::StateStore;
use super::etcd::EtcdStore;
use super::file::FileStore;
use proto_common::tls::TlsFiles;

/// A parsed `--store` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreSpec {
    /// `file:PATH`: a JSON file under an exclusive lock.
    File(PathBuf),
    /// `etcd://h1:2379,h2:2379`: the endpoints of one etcd cluster;
    /// `etcds://…`: the same in TLS (`tls`), with the arbiter's CA and
    /// certificate.
    Etcd { endpoints: Vec<String>, tls: bool },
}

impl FromStr for StoreSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<StoreSpec, String> {
        if let Some(path) = text.strip_prefix("file:") {
            // `file:///x` is a common spelling of `file:/x`.
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(format!(
                    "store={text:?} names no file; use file:PATH such as file:/var/lib/understudy/arbiter.json"
                ));
            }
            return Ok(StoreSpec::File(PathBuf::from(path)));
        }
        let etcd = text
            .strip_prefix("etcd://")
            .map(|r| (r, false))
            .or_else(|| text.strip_prefix("etcds://").map(|r| (r, true)));
        if let Some((rest, tls)) = etcd {
            let endpoints: Vec<String> = rest
                .trim_end_matches('/')
                .split(',')
                .map(|e| e.trim().to_string())
                .collect();
            if let Some(bad) = endpoints.iter().find(|e| !is_host_port(e)) {
                return Err(format!(
                    "store={text:?}: endpoint {bad:?} is not HOST:PORT; use etcd://h1:2379,h2:2379"
                ));
            }
            return Ok(StoreSpec::Etcd { endpoints, tls });
        }
        Err(format!(
            "store={text:?} is not a store; use file:PATH (one arbiter) or etcd://HOST:PORT,… \
             (several; etcds:// for etcd in TLS)"
        ))
    }
}

impl fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreSpec::File(path) => write!(f, "file:{}", path.display()),
            StoreSpec::Etcd { endpoints, tls } => {
                let scheme = if *tls { "etcds" } else { "etcd" };
                write!(f, "{scheme}://{}", endpoints.join(","))
            }
        }
    }
}

impl StoreSpec {
    /// Opens the store of `cluster`: for a file, takes its lock and reads it
    /// (a corrupt or locked file fails here, at start-up, naming the path);
    /// for etcd, connects and returns the cluster's store *read-only* — its
    /// writes need a term of leadership ([`EtcdStore::fenced`]).
    pub async fn open(
        &self,
        cluster: &str,
        tls: Option<&TlsFiles>,
    ) -> Result<Arc<dyn StateStore>, String> {
        match self {
            StoreSpec::File(path) => {
                let path = path.clone();
                let store = tokio::task::spawn_blocking(move || FileStore::open(path))
                    .await
                    .map_err(|e| format!("opening the file store panicked: {e}"))?
                    .map_err(|e| format!("{} ({}): {e}", self, e.code()))?;
                Ok(Arc::new(store))
            }
            StoreSpec::Etcd { endpoints, tls: on } => {
                let store = EtcdStore::connect(endpoints, cluster, tls.filter(|_| *on))
                    .await
                    .map_err(|e| format!("{self} ({}): {e}", e.code()))?;
                Ok(Arc::new(store))
            }
        }
    }
}

fn is_host_port(text: &str) -> bool {
    match text.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_and_etcd_specs() {
        assert_eq!(
            "file:/var/lib/a.json".parse::<StoreSpec>().unwrap(),
            StoreSpec::File("/var/lib/a.json".into())
        );
        assert_eq!(
            "file:///x/a.json".parse::<StoreSpec>().unwrap(),
            StoreSpec::File("/x/a.json".into())
        );
        assert_eq!(
            "file:a.json".parse::<StoreSpec>().unwrap(),
            StoreSpec::File("a.json".into())
        );
        let etcd: StoreSpec = "etcd://h1:2379, h2:2379".parse().unwrap();
        assert_eq!(
            etcd,
            StoreSpec::Etcd {
                endpoints: vec!["h1:2379".into(), "h2:2379".into()],
                tls: false
            }
        );
        assert_eq!(etcd.to_string(), "etcd://h1:2379,h2:2379");
        let tls: StoreSpec = "etcds://h1:2379".parse().unwrap();
        assert_eq!(
            tls,
            StoreSpec::Etcd {
                endpoints: vec!["h1:2379".into()],
                tls: true
            }
        );
        assert_eq!(tls.to_string(), "etcds://h1:2379");
    }

    #[test]
    fn bad_specs_name_the_value_and_the_forms() {
        let err = "/var/lib/a.json".parse::<StoreSpec>().unwrap_err();
        assert!(
            err.contains("/var/lib/a.json") && err.contains("file:PATH"),
            "{err}"
        );
        let err = "file:".parse::<StoreSpec>().unwrap_err();
        assert!(err.contains("names no file"), "{err}");
        let err = "etcd://h1".parse::<StoreSpec>().unwrap_err();
        assert!(err.contains("\"h1\"") && err.contains("HOST:PORT"), "{err}");
    }

    #[tokio::test]
    async fn an_opened_etcd_store_is_read_only() {
        // Nothing listens there: the client connects lazily, and the write
        // is refused before any etcd call could matter.
        let spec: StoreSpec = "etcd://127.0.0.1:1".parse().unwrap();
        let store = spec.open("c1", None).await.expect("connecting is lazy");
        assert!(
            store.describe().contains("/c1/state"),
            "{}",
            store.describe()
        );
        let mut state =
            crate::store::ClusterState::new("c1", proto_common::params::ClusterParams::default());
        state.version = 1;
        let err = store.compare_and_swap(None, &state).await.unwrap_err();
        assert_eq!(err.code(), "not_leader", "{err}");
    }
}
