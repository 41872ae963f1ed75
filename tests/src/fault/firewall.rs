//! Network partitions on loopback, made with iptables and scoped to the
//! suite's own processes.
//!
//! Every process of the cluster runs as a user of its own (see
//! [`super::cluster`]), and every rule matches a packet's owner
//! (`-m owner --uid-owner`), so no other traffic on the machine is
//! touched. Connections a cluster process opens are marked when they
//! start (`CONNMARK`), so a partition can drop everything the isolated
//! process sends on cluster connections, its answers included, while the
//! test's clients (another user, unmarked connections) still reach it:
//! the partition is between the cluster's processes, not from the users.
//!
//! The rules live in two chains of this process's own (`USFAULT{pid}`,
//! jumped to from `OUTPUT`, and `USFAULT{pid}P` for the partition's drops);
//! the second is emptied when a partition heals, both are removed when the
//! [`Firewall`] is dropped, and chains left by a suite that died are
//! removed at start.

use std::process::Command;

/// The prefix of every chain the suite makes.
const CHAIN_PREFIX: &str = "USFAULT";

/// The mark of connections a cluster process opened.
const CLUSTER_MARK: &str = "0x5f5f";

/// The suite's chains; removed on drop.
pub struct Firewall {
    chain: String,
    drops: String,
}

impl Firewall {
    /// Makes the chains (after removing any a dead suite left behind) and
    /// marks the connections the processes of `uids` open from now on.
    pub fn new(uids: &[u32]) -> Result<Firewall, String> {
        remove_stale_chains();
        let chain = format!("{CHAIN_PREFIX}{}", std::process::id());
        let drops = format!("{chain}P");
        iptables(&["-N", &chain])?;
        let firewall = Firewall {
            chain: chain.clone(),
            drops: drops.clone(),
        };
        iptables(&["-N", &drops])?;
        iptables(&["-I", "OUTPUT", "-j", &chain])?;
        for uid in uids {
            let uid = uid.to_string();
            iptables(&[
                "-A",
                &chain,
                "-m",
                "owner",
                "--uid-owner",
                &uid,
                "-m",
                "conntrack",
                "--ctstate",
                "NEW",
                "-j",
                "CONNMARK",
                "--set-mark",
                CLUSTER_MARK,
            ])?;
        }
        iptables(&["-A", &chain, "-j", &drops])?;
        Ok(firewall)
    }

    /// Cuts the process of `isolated` (listening on `ports`) off from the
    /// processes of `others`, both ways; the clients still reach it.
    pub fn partition(&self, isolated: u32, ports: &[u16], others: &[u32]) -> Result<(), String> {
        let uid = isolated.to_string();
        iptables(&[
            "-A",
            &self.drops,
            "-m",
            "owner",
            "--uid-owner",
            &uid,
            "-m",
            "connmark",
            "--mark",
            CLUSTER_MARK,
            "-j",
            "DROP",
        ])?;
        for other in others {
            let other = other.to_string();
            for port in ports {
                let port = port.to_string();
                iptables(&[
                    "-A",
                    &self.drops,
                    "-p",
                    "tcp",
                    "-m",
                    "owner",
                    "--uid-owner",
                    &other,
                    "--dport",
                    &port,
                    "-j",
                    "DROP",
                ])?;
            }
        }
        Ok(())
    }

    /// Keeps `uid`'s connections to `port` (a replica's own upstream on its
    /// host) out of every partition: checked before the partition's rules.
    pub fn exempt(&self, uid: u32, port: u16) -> Result<(), String> {
        let (uid, port) = (uid.to_string(), port.to_string());
        iptables(&[
            "-I",
            &self.chain,
            "1",
            "-p",
            "tcp",
            "-m",
            "owner",
            "--uid-owner",
            &uid,
            "--dport",
            &port,
            "-j",
            "RETURN",
        ])
    }

    /// Removes the partition's rules: it heals.
    pub fn heal(&self) -> Result<(), String> {
        iptables(&["-F", &self.drops])
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        remove_chains(&self.chain);
    }
}

/// Whether iptables works here (installed, and this process may use it).
pub fn available() -> Result<(), String> {
    iptables(&["-w", "-L", "OUTPUT", "-n"]).map_err(|e| {
        format!("{e} (the fault suite needs iptables and root: apt-get install -y iptables)")
    })
}

/// The iptables binary: root's usual place, which a test's PATH may lack.
fn program() -> &'static str {
    ["/usr/sbin/iptables", "/sbin/iptables"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("iptables")
}

fn iptables(args: &[&str]) -> Result<(), String> {
    let mut full = vec!["-w"];
    full.extend(args.iter().filter(|a| **a != "-w"));
    let out = Command::new(program())
        .args(&full)
        .output()
        .map_err(|e| format!("cannot run iptables {}: {e}", full.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables {} failed: {}",
            full.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Removes `chain` and its partition chain.
fn remove_chains(chain: &str) {
    let drops = format!("{chain}P");
    let _ = iptables(&["-D", "OUTPUT", "-j", chain]);
    let _ = iptables(&["-F", chain]);
    let _ = iptables(&["-F", &drops]);
    let _ = iptables(&["-X", chain]);
    let _ = iptables(&["-X", &drops]);
}

/// Removes chains of suites whose process is gone.
fn remove_stale_chains() {
    let Ok(out) = Command::new(program()).args(["-w", "-S"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(chain) = line.strip_prefix("-N ") else {
            continue;
        };
        let Some(pid) = chain.strip_prefix(CHAIN_PREFIX) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue; // a partition chain, removed with its main one
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            remove_chains(chain);
        }
    }
}
