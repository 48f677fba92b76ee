//! `qupiactl marketing …`: audiences, campaigns and statistics in the marketing
//! service. It prints tokens, ids, templates and counts: the marketing service holds
//! nothing else.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use qupia_api::marketing::v1::marketing_service_client::MarketingServiceClient;
use qupia_api::marketing::v1::*;
use qupia_api::types::v1::AggregateDimension;
use tonic::transport::Channel as GrpcChannel;

use crate::client::status;
use crate::emit;

#[derive(Debug, Subcommand)]
pub enum MarketingCommand {
    /// Audiences: named sets of person tokens.
    Audience {
        #[command(subcommand)]
        command: AudienceCommand,
    },
    /// Campaigns: a message to an audience over e-mail or SMS.
    Campaign {
        #[command(subcommand)]
        command: CampaignCommand,
    },
    /// Aggregates over an audience (or everyone) with a statistics consent.
    Stats {
        /// What to count people by.
        #[arg(long, value_enum)]
        by: Dimension,
        /// The audience; everyone with a statistics consent when omitted.
        #[arg(long)]
        audience: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AudienceCommand {
    /// Create an audience; prints its id.
    Create {
        #[arg(long)]
        name: String,
        /// Person tokens (qpp_…).
        tokens: Vec<String>,
    },
    /// Add people to an audience.
    Add { audience_id: String, tokens: Vec<String> },
    /// Remove people from an audience.
    Remove { audience_id: String, tokens: Vec<String> },
    /// Every audience.
    List,
    /// One audience and its members' tokens.
    Show { audience_id: String },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ChannelArg {
    Email,
    Sms,
}

#[derive(Debug, Subcommand)]
pub enum CampaignCommand {
    /// Create a campaign. Placeholders: {{email}} (e-mail), {{phone}} (SMS), {{unsubscribe}}.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        audience: String,
        #[arg(long, value_enum)]
        channel: ChannelArg,
        /// The subject template (e-mail only).
        #[arg(long, default_value = "")]
        subject: String,
        /// The body template.
        #[arg(long, conflicts_with = "body_file", required_unless_present = "body_file")]
        body: Option<String>,
        /// A file holding the body template.
        #[arg(long)]
        body_file: Option<PathBuf>,
    },
    /// Queue a campaign for every member it has not reached yet.
    Send {
        campaign_id: String,
        /// Wait until delivery has finished (or the service's wait limit).
        #[arg(long)]
        wait: bool,
    },
    /// One campaign with its counters.
    Show { campaign_id: String },
    /// Every campaign with its counters.
    List,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Dimension {
    EmailDomain,
    PhoneCountry,
    PhoneOperator,
    RegistrationMonth,
}

impl Dimension {
    fn to_proto(self) -> AggregateDimension {
        match self {
            Dimension::EmailDomain => AggregateDimension::EmailDomain,
            Dimension::PhoneCountry => AggregateDimension::PhoneCountry,
            Dimension::PhoneOperator => AggregateDimension::PhoneOperator,
            Dimension::RegistrationMonth => AggregateDimension::RegistrationMonth,
        }
    }
}

fn channel_name(value: i32) -> &'static str {
    match Channel::try_from(value) {
        Ok(Channel::Email) => "email",
        Ok(Channel::Sms) => "sms",
        _ => "unknown",
    }
}

fn audience_line(audience: &Audience, json: bool) -> String {
    if json {
        serde_json::json!({
            "id": audience.id, "name": audience.name, "member_count": audience.member_count,
            "created_at_ms": audience.created_at_ms,
        })
        .to_string()
    } else {
        format!("{:<26} {:>8}  {}", audience.id, audience.member_count, audience.name)
    }
}

const AUDIENCE_HEADER: &str = "AUDIENCE                    MEMBERS  NAME";

fn campaign_json(campaign: &Campaign) -> serde_json::Value {
    let c = campaign.counters.unwrap_or_default();
    serde_json::json!({
            "id": campaign.id, "name": campaign.name, "audience_id": campaign.audience_id,
            "channel": channel_name(campaign.channel), "subject": campaign.subject, "body": campaign.body,
            "created_at_ms": campaign.created_at_ms,
            "counters": {
                "queued": c.queued, "pending": c.pending, "sent": c.sent,
            "skipped_no_consent": c.skipped_no_consent, "skipped_erased": c.skipped_erased, "failed": c.failed,
        },
    })
}

fn campaign_line(campaign: &Campaign, json: bool) -> String {
    let c = campaign.counters.unwrap_or_default();
    if json {
        campaign_json(campaign).to_string()
    } else {
        format!(
            "{:<26} {:<5} {:>6} {:>7} {:>6} {:>10} {:>7} {:>6}  {}",
            campaign.id,
            channel_name(campaign.channel),
            c.queued,
            c.pending,
            c.sent,
            c.skipped_no_consent,
            c.skipped_erased,
            c.failed,
            campaign.name
        )
    }
}

const CAMPAIGN_HEADER: &str = "CAMPAIGN                   CHAN  QUEUED PENDING   SENT NO-CONSENT  ERASED FAILED  NAME";

pub async fn run(command: MarketingCommand, channel: GrpcChannel, json: bool) -> anyhow::Result<()> {
    let mut marketing = MarketingServiceClient::new(channel);
    match command {
        MarketingCommand::Audience { command } => match command {
            AudienceCommand::Create { name, tokens } => {
                let audience = marketing
                    .create_audience(CreateAudienceRequest { name, person_tokens: tokens })
                    .await
                    .map_err(status)?
                    .into_inner()
                    .audience
                    .unwrap_or_default();
                if !json {
                    emit(AUDIENCE_HEADER)?;
                }
                emit(audience_line(&audience, json))?;
            }
            AudienceCommand::Add { audience_id, tokens } => {
                let response = marketing
                    .add_audience_members(AddAudienceMembersRequest { audience_id, person_tokens: tokens })
                    .await
                    .map_err(status)?
                    .into_inner();
                let audience = response.audience.unwrap_or_default();
                if json {
                    emit(
                        serde_json::json!({"added": response.added, "audience_id": audience.id, "member_count": audience.member_count}),
                    )?;
                } else {
                    emit(format!(
                        "added {}; {} now has {} members",
                        response.added, audience.id, audience.member_count
                    ))?;
                }
            }
            AudienceCommand::Remove { audience_id, tokens } => {
                let response = marketing
                    .remove_audience_members(RemoveAudienceMembersRequest { audience_id, person_tokens: tokens })
                    .await
                    .map_err(status)?
                    .into_inner();
                let audience = response.audience.unwrap_or_default();
                if json {
                    emit(
                        serde_json::json!({"removed": response.removed, "audience_id": audience.id, "member_count": audience.member_count}),
                    )?;
                } else {
                    emit(format!(
                        "removed {}; {} now has {} members",
                        response.removed, audience.id, audience.member_count
                    ))?;
                }
            }
            AudienceCommand::List => {
                let audiences =
                    marketing.list_audiences(ListAudiencesRequest {}).await.map_err(status)?.into_inner().audiences;
                if !json {
                    emit(AUDIENCE_HEADER)?;
                }
                for audience in &audiences {
                    emit(audience_line(audience, json))?;
                }
            }
            AudienceCommand::Show { audience_id } => {
                let response =
                    marketing.get_audience(GetAudienceRequest { audience_id }).await.map_err(status)?.into_inner();
                let audience = response.audience.unwrap_or_default();
                if json {
                    emit(serde_json::json!({
                        "id": audience.id, "name": audience.name, "member_count": audience.member_count,
                        "created_at_ms": audience.created_at_ms, "person_tokens": response.person_tokens,
                    }))?;
                } else {
                    emit(AUDIENCE_HEADER)?;
                    emit(audience_line(&audience, false))?;
                    for token in &response.person_tokens {
                        emit(format!("  {token}"))?;
                    }
                }
            }
        },
        MarketingCommand::Campaign { command } => match command {
            CampaignCommand::Create { name, audience, channel, subject, body, body_file } => {
                let body = match (body, body_file) {
                    (Some(body), _) => body,
                    (None, Some(path)) => {
                        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?
                    }
                    (None, None) => anyhow::bail!("give --body or --body-file"),
                };
                let channel = match channel {
                    ChannelArg::Email => Channel::Email,
                    ChannelArg::Sms => Channel::Sms,
                };
                let campaign = marketing
                    .create_campaign(CreateCampaignRequest {
                        name,
                        audience_id: audience,
                        channel: channel as i32,
                        subject,
                        body,
                    })
                    .await
                    .map_err(status)?
                    .into_inner()
                    .campaign
                    .unwrap_or_default();
                if !json {
                    emit(CAMPAIGN_HEADER)?;
                }
                emit(campaign_line(&campaign, json))?;
            }
            CampaignCommand::Send { campaign_id, wait } => {
                let response = marketing
                    .send_campaign(SendCampaignRequest { campaign_id, wait })
                    .await
                    .map_err(status)?
                    .into_inner();
                let campaign = response.campaign.unwrap_or_default();
                if json {
                    emit(serde_json::json!({"queued": response.queued, "campaign": campaign_json(&campaign)}))?;
                } else {
                    emit(format!("queued {}", response.queued))?;
                    emit(CAMPAIGN_HEADER)?;
                    emit(campaign_line(&campaign, false))?;
                }
            }
            CampaignCommand::Show { campaign_id } => {
                let campaign = marketing
                    .get_campaign(GetCampaignRequest { campaign_id })
                    .await
                    .map_err(status)?
                    .into_inner()
                    .campaign
                    .unwrap_or_default();
                if json {
                    emit(campaign_line(&campaign, true))?;
                } else {
                    emit(CAMPAIGN_HEADER)?;
                    emit(campaign_line(&campaign, false))?;
                    if !campaign.subject.is_empty() {
                        emit(format!("subject: {}", campaign.subject))?;
                    }
                    emit(format!("body:\n{}", campaign.body))?;
                }
            }
            CampaignCommand::List => {
                let campaigns =
                    marketing.list_campaigns(ListCampaignsRequest {}).await.map_err(status)?.into_inner().campaigns;
                if !json {
                    emit(CAMPAIGN_HEADER)?;
                }
                for campaign in &campaigns {
                    emit(campaign_line(campaign, json))?;
                }
            }
        },
        MarketingCommand::Stats { by, audience } => {
            let stats = marketing
                .get_statistics(GetStatisticsRequest {
                    audience_id: audience.unwrap_or_default(),
                    dimension: by.to_proto() as i32,
                })
                .await
                .map_err(status)?
                .into_inner();
            if json {
                for group in &stats.groups {
                    emit(serde_json::json!({"key": group.key, "count": group.count}))?;
                }
                emit(serde_json::json!({
                    "suppressed_groups": stats.suppressed_groups,
                    "skipped_without_consent": stats.skipped_without_consent,
                    "min_group_size": stats.min_group_size, "decision_id": stats.decision_id,
                }))?;
            } else {
                emit(format!("{:<32} {:>8}", "GROUP", "PEOPLE"))?;
                for group in &stats.groups {
                    emit(format!("{:<32} {:>8}", group.key, group.count))?;
                }
                emit(format!(
                    "{} group(s) under {} suppressed; {} skipped without a statistics consent (decision {})",
                    stats.suppressed_groups, stats.min_group_size, stats.skipped_without_consent, stats.decision_id
                ))?;
            }
        }
    }
    Ok(())
}
