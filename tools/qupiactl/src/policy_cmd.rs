//! `qupiactl policy …`: explain the purpose policy, publish privacy-policy versions.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use qupia_api::gateway::v1::consent_service_client::ConsentServiceClient;
use qupia_api::gateway::v1::policy_service_client::PolicyServiceClient;
use qupia_api::gateway::v1::*;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

use crate::client::status;
use crate::person_cmd::{purpose, purpose_name};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Which rule allows or denies a caller a resource for a purpose.
    Explain {
        /// The caller's SPIFFE id (e.g. spiffe://qupia/ns/default/sa/marketing).
        #[arg(long)]
        caller: String,
        #[arg(long)]
        purpose: String,
        /// A field name, "document" or "aggregate".
        #[arg(long)]
        resource: String,
        #[arg(long, default_value = "")]
        recipient: String,
    },
    /// Publish a new version of the privacy policy text.
    Publish {
        /// The published text; its SHA-256 is recorded.
        file: PathBuf,
        /// Purposes whose earlier consents stop counting under this version.
        #[arg(long, value_delimiter = ',')]
        reconsent: Vec<String>,
    },
    /// The published versions.
    Versions,
}

pub async fn run(command: PolicyCommand, channel: Channel, json: bool) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Explain { caller, purpose: purpose_arg, resource, recipient } => {
            let explanation = PolicyServiceClient::new(channel)
                .explain(ExplainRequest { caller, purpose: purpose(&purpose_arg)?, resource, recipient })
                .await
                .map_err(status)?
                .into_inner();
            if json {
                let rules: Vec<_> = explanation
                    .rules
                    .iter()
                    .map(|r| serde_json::json!({"id": r.id, "effect": r.effect, "description": r.description}))
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({"allowed": explanation.allowed, "reason": explanation.reason, "rules": rules, "policy_sha256": explanation.policy_sha256})
                );
            } else {
                println!("{}: {}", if explanation.allowed { "ALLOWED" } else { "DENIED" }, explanation.reason);
                for rule in &explanation.rules {
                    println!("  {} {:<30} {}", rule.effect, rule.id, rule.description);
                }
                println!("policy sha256 {}", explanation.policy_sha256);
            }
        }
        PolicyCommand::Publish { file, reconsent } => {
            let text = std::fs::read(&file).with_context(|| format!("read {}", file.display()))?;
            let reconsent_purposes = reconsent.iter().map(|p| purpose(p)).collect::<anyhow::Result<Vec<_>>>()?;
            let version = ConsentServiceClient::new(channel)
                .publish_policy_version(PublishPolicyVersionRequest {
                    text_sha256: hex::encode(Sha256::digest(&text)),
                    reconsent_purposes,
                })
                .await
                .map_err(status)?
                .into_inner()
                .version
                .unwrap_or_default();
            println!("published version {} (sha256 {})", version.version, version.text_sha256);
        }
        PolicyCommand::Versions => {
            let versions = ConsentServiceClient::new(channel)
                .list_policy_versions(ListPolicyVersionsRequest {})
                .await
                .map_err(status)?;
            for v in versions.into_inner().versions {
                let purposes: Vec<&str> = v.reconsent_purposes.iter().map(|p| purpose_name(*p)).collect();
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"version": v.version, "text_sha256": v.text_sha256, "reconsent": purposes, "published_at_ms": v.published_at_ms, "published_by": v.published_by})
                    );
                } else {
                    println!(
                        "v{:<3} {} re-consent: {}",
                        v.version,
                        v.text_sha256,
                        if purposes.is_empty() { "-".to_owned() } else { purposes.join(",") }
                    );
                }
            }
        }
    }
    Ok(())
}
