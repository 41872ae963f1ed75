//! The operator commands: `arbiter status`, `arbiter switchover`,
//! `arbiter maintenance`, `arbiter remove`, `arbiter promote --force` and
//! `arbiter params`. Each parses its flags (clap),
//! calls the arbiter and returns the text to print; `main.rs` prints it or
//! the error. `--arbiter` may name any arbiter of an etcd-backed group: a
//! non-leader's 307 is followed to the leader.

use std::path::PathBuf;

use proto_common::auth::Token;
use proto_common::tls::{Tls, TlsFiles};
use proto_common::NodeId;

use super::client::ArbiterClient;
use super::error::CliError;
use super::table::render_status;
use crate::core::DecisionKind;
use crate::ops::{
    MaintenanceRequest, MaintenanceState, ParamsChanged, ParamsUpdate, PromoteRequest, Promoted,
    ReinitOrdered, ReinitRequest, RemoveRequest, Removed, SwitchoverRequest, SwitchoverStarted,
};
use crate::status::ClusterStatus;

/// The operator subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum OperatorCommand {
    /// Show the cluster: epoch, active, every replica, recent decisions.
    Status(StatusArgs),
    /// Hand the active role to a caught-up standby without losing a write.
    Switchover(SwitchoverArgs),
    /// Switch maintenance mode (no automatic failover) on or off.
    Maintenance(MaintenanceArgs),
    /// Remove a member that is gone for good (stopped; not the active, not
    /// in the sync set) now instead of after remove_after_ms.
    Remove(RemoveArgs),
    /// The last resort when the active is dead and no standby can be
    /// promoted without losing acknowledged writes: promote NODE anyway
    /// (needs --force --accept-data-loss; refused while anything safer is
    /// possible).
    Promote(PromoteArgs),
    /// Have a standby discard its log and snapshots and copy the active's
    /// data again (it leaves the sync set first; its old data is moved
    /// aside, not deleted).
    Reinit(ReinitArgs),
    /// Show the cluster parameters, or change some: `arbiter params lease_ms=1500`.
    Params(ParamsArgs),
}

/// Which arbiter to talk to, and the token for mutating calls.
#[derive(Debug, Clone, clap::Args)]
pub struct ArbiterTarget {
    /// The arbiter's URL.
    #[arg(
        long,
        env = "UNDERSTUDY_ARBITER",
        default_value = "http://127.0.0.1:7700"
    )]
    pub arbiter: String,
    /// File holding the cluster token (or set UNDERSTUDY_TOKEN).
    #[arg(long, env = "UNDERSTUDY_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// For an https:// arbiter: the CA that signed its certificate.
    #[arg(long, env = "UNDERSTUDY_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// A client certificate, when the arbiter requires one (mutual TLS).
    #[arg(long, env = "UNDERSTUDY_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The key of --tls-cert.
    #[arg(long, env = "UNDERSTUDY_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
}

/// `arbiter status`.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// Which arbiter to ask.
    #[command(flatten)]
    pub target: ArbiterTarget,
    /// Print the raw JSON of GET /v1/status.
    #[arg(long)]
    pub json: bool,
}

/// `arbiter switchover`.
#[derive(Debug, Clone, clap::Args)]
pub struct SwitchoverArgs {
    /// Which arbiter to ask, with the token.
    #[command(flatten)]
    pub target: ArbiterTarget,
    /// The standby to hand over to [default: the best candidate].
    #[arg(long)]
    pub to: Option<NodeId>,
    /// Wait until the target is active (exit 0) or the switchover was
    /// cancelled (exit 1, with the arbiter's reason).
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up waiting after this many seconds (exit 4).
    #[arg(long, default_value_t = 60)]
    pub timeout_s: u64,
}

/// `arbiter promote NODE --force --accept-data-loss`.
#[derive(Debug, Clone, clap::Args)]
pub struct PromoteArgs {
    /// Which arbiter to ask, with the token.
    #[command(flatten)]
    pub target: ArbiterTarget,
    /// The standby to promote.
    pub node: NodeId,
    /// Required: a promotion the arbiter would not make itself.
    #[arg(long)]
    pub force: bool,
    /// Required: acknowledged writes the old active or its sync standby
    /// held may be lost.
    #[arg(long)]
    pub accept_data_loss: bool,
}

/// `arbiter reinit NODE`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReinitArgs {
    /// Which arbiter to ask, with the token.
    #[command(flatten)]
    pub target: ArbiterTarget,
    /// The standby to reinitialize.
    pub node: NodeId,
}

/// `arbiter remove NODE`.
#[derive(Debug, Clone, clap::Args)]
pub struct RemoveArgs {
    /// Which arbiter to ask, with the token.
    #[command(flatten)]
    pub target: ArbiterTarget,
    /// The member to remove.
    pub node: NodeId,
}

/// `arbiter maintenance on|off`.
#[derive(Debug, Clone, clap::Args)]
pub struct MaintenanceArgs {
    /// Which arbiter to ask, with the token.
    #[command(flatten)]
    pub target: ArbiterTarget,
    /// `on`: no automatic failover; `off`: resume it.
    #[arg(value_enum)]
    pub mode: OnOff,
}

/// `arbiter params [key=value…]`.
#[derive(Debug, Clone, clap::Args)]
pub struct ParamsArgs {
    /// Which arbiter to ask, with the token.
    #[command(flatten)]
    pub target: ArbiterTarget,
    /// Parameters to change, e.g. `lease_ms=1500 strict=true` (heartbeat_ms,
    /// lease_ms, drift, sync_standbys, strict, initial_wait_ms,
    /// remove_after_ms, max_lag_on_failover). None: show the current ones.
    #[arg(value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// A switch position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    /// Maintenance on: no automatic failover.
    On,
    /// Maintenance off: automatic failover resumes.
    Off,
}

impl ArbiterTarget {
    /// A client with the token from `UNDERSTUDY_TOKEN` or `--token-file`
    /// (none: calls go without one, which a loopback arbiter accepts).
    pub fn client(&self) -> Result<ArbiterClient, CliError> {
        let token = match (std::env::var("UNDERSTUDY_TOKEN").ok(), &self.token_file) {
            (Some(t), _) => Some(
                Token::new(&t).map_err(|e| CliError::Token(format!("UNDERSTUDY_TOKEN: {e}")))?,
            ),
            (None, Some(path)) => Some(Token::from_file(path).map_err(CliError::Token)?),
            (None, None) => None,
        };
        let tls = TlsFiles::client(
            self.tls_ca.clone(),
            self.tls_cert.clone(),
            self.tls_key.clone(),
        )
        .and_then(|files| files.map(|f| Tls::load(f, false)).transpose())
        .map_err(|e| CliError::BadUrl {
            url: self.arbiter.clone(),
            detail: e,
        })?;
        ArbiterClient::with_tls(&self.arbiter, token, tls)
    }
}

impl OperatorCommand {
    /// Runs the command; returns what to print.
    pub async fn execute(&self) -> Result<String, CliError> {
        match self {
            OperatorCommand::Status(args) => status(args).await,
            OperatorCommand::Switchover(args) => switchover(args).await,
            OperatorCommand::Maintenance(args) => maintenance(args).await,
            OperatorCommand::Remove(args) => remove(args).await,
            OperatorCommand::Promote(args) => promote(args).await,
            OperatorCommand::Reinit(args) => reinit(args).await,
            OperatorCommand::Params(args) => params(args).await,
        }
    }
}

async fn status(args: &StatusArgs) -> Result<String, CliError> {
    let client = args.target.client()?;
    if args.json {
        let value: serde_json::Value = client.get_json("/v1/status").await?;
        return Ok(format!(
            "{}\n",
            serde_json::to_string_pretty(&value).expect("JSON values always serialize")
        ));
    }
    let status: ClusterStatus = client.get_json("/v1/status").await?;
    Ok(render_status(&status))
}

async fn switchover(args: &SwitchoverArgs) -> Result<String, CliError> {
    let client = args.target.client()?;
    let body = SwitchoverRequest {
        to: args.to.as_ref().map(NodeId::to_string),
    };
    let started: SwitchoverStarted = client.post_json("/v1/switchover", &body).await?;
    if !args.wait {
        return Ok(format!(
            "{}\nfollow it with: arbiter status --arbiter {}\n",
            started.message,
            client.base()
        ));
    }
    let since = std::time::Instant::now();
    let deadline = since + std::time::Duration::from_secs(args.timeout_s);
    loop {
        // A moment without an answer (the arbiter busy with the handover)
        // is not the end: keep asking until the deadline.
        if let Ok(status) = client.get_json::<ClusterStatus>("/v1/status").await {
            if let Some(outcome) = switchover_outcome(&started, &status) {
                return outcome.map(|done| {
                    format!(
                        "{}\n{done} ({} ms)\n",
                        started.message,
                        since.elapsed().as_millis()
                    )
                });
            }
        }
        if std::time::Instant::now() >= deadline {
            return Err(CliError::WaitTimedOut {
                what: format!("the switchover to {}", started.target),
                secs: args.timeout_s,
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// How a started switchover ended, judged from a status: `None` while it
/// runs; the target active in a later epoch is success; otherwise, once
/// no switchover is in progress, the arbiter's reason for cancelling it.
fn switchover_outcome(
    started: &SwitchoverStarted,
    status: &ClusterStatus,
) -> Option<Result<String, CliError>> {
    if status.epoch.0 > started.epoch && status.active.as_ref() == Some(&started.target) {
        return Some(Ok(format!(
            "done: {} is active in epoch {}",
            started.target, status.epoch
        )));
    }
    // Only the leader knows a switchover in progress (a follower's status
    // is the stored state).
    if status.switchover.is_some() || !status.is_leader {
        return None;
    }
    let why = status
        .recent_decisions
        .iter()
        .rev()
        .find(|d| d.kind == DecisionKind::Switchover && !d.taken && d.epoch.0 == started.epoch)
        .map(|d| d.reason.clone())
        .unwrap_or_else(|| "the arbiter records no reason; see arbiter status".into());
    Some(Err(CliError::Failed(format!(
        "the switchover to {} did not happen: {why}",
        started.target
    ))))
}

async fn remove(args: &RemoveArgs) -> Result<String, CliError> {
    let client = args.target.client()?;
    let body = RemoveRequest {
        node: args.node.to_string(),
    };
    let removed: Removed = client.post_json("/v1/remove", &body).await?;
    Ok(format!(
        "{} removed (state version {}); it rejoins if it heartbeats again\n",
        removed.node, removed.state_version
    ))
}

async fn reinit(args: &ReinitArgs) -> Result<String, CliError> {
    let client = args.target.client()?;
    let body = ReinitRequest {
        node: args.node.to_string(),
    };
    let ordered: ReinitOrdered = client.post_json("/v1/reinit", &body).await?;
    Ok(format!(
        "{}\nwatch it with arbiter status: the order is done when {} no longer shows it\n",
        ordered.reason, ordered.node
    ))
}

async fn promote(args: &PromoteArgs) -> Result<String, CliError> {
    if !args.force || !args.accept_data_loss {
        return Err(CliError::BadArgs(
            "promote needs --force --accept-data-loss: it names an active that may lack \
             acknowledged writes. A safe failover needs no command (the arbiter makes it), and a \
             planned handover is `arbiter switchover --to NODE --wait`"
                .into(),
        ));
    }
    let client = args.target.client()?;
    let body = PromoteRequest {
        node: args.node.to_string(),
        accept_data_loss: true,
    };
    let promoted: Promoted = client.post_json("/v1/promote", &body).await?;
    Ok(format!(
        "{} is the active in epoch {}\n{}\n",
        promoted.node, promoted.epoch, promoted.reason
    ))
}

async fn maintenance(args: &MaintenanceArgs) -> Result<String, CliError> {
    let client = args.target.client()?;
    let enabled = args.mode == OnOff::On;
    let state: MaintenanceState = client
        .post_json("/v1/maintenance", &MaintenanceRequest { enabled })
        .await?;
    let mode = if state.maintenance { "on" } else { "off" };
    let what = if state.maintenance {
        "no automatic failover until it is switched off"
    } else {
        "automatic failover is active"
    };
    Ok(if state.changed {
        format!(
            "maintenance mode is now {mode}: {what} (state version {})\n",
            state.state_version
        )
    } else {
        format!("maintenance mode was already {mode}: {what}\n")
    })
}

async fn params(args: &ParamsArgs) -> Result<String, CliError> {
    let client = args.target.client()?;
    if args.set.is_empty() {
        let status: ClusterStatus = client.get_json("/v1/status").await?;
        return Ok(format!(
            "{}\n",
            crate::server::describe_params(&status.params)
        ));
    }
    let update = ParamsUpdate::from_pairs(&args.set).map_err(CliError::BadArgs)?;
    let answer: ParamsChanged = client.post_json("/v1/params", &update).await?;
    let now = crate::server::describe_params(&answer.params);
    Ok(if answer.changed.is_empty() {
        format!("nothing changed; the parameters are: {now}\n")
    } else {
        format!(
            "changed {} (state version {}); replicas take them from their next heartbeat \
             reply\nnow: {now}\n",
            answer.changed.join(", "),
            answer.state_version
        )
    })
}
