//! `MarketingService`: audiences, campaigns, sending and statistics. Every request is
//! validated here, at the edge, before anything is stored or the gateway is called.

use std::time::Duration;

use qupia_api::gateway::v1 as gateway;
use qupia_api::gateway::v1::statistics_service_client::StatisticsServiceClient;
use qupia_api::marketing::v1 as proto;
use qupia_api::marketing::v1::marketing_service_server::MarketingService;
use qupia_api::types::v1 as types;
use qupia_telemetry::TracedChannel;
use qupia_transport::caller_of;
use tonic::{Request, Response, Status};

use crate::Error;
use crate::delivery::{DeliveryHandle, now_ms};
use crate::model::{self, Channel};
use crate::store::{self, Counters, Store};
use crate::template::Template;

/// The longest e-mail subject, in characters.
const MAX_SUBJECT_CHARS: usize = 200;
/// The longest body template, in bytes.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// The longest SMS body template, in characters (ten concatenated segments).
const MAX_SMS_CHARS: usize = 1600;

#[derive(Debug, Clone)]
pub struct MarketingApi {
    pub store: Store,
    pub statistics: StatisticsServiceClient<TracedChannel>,
    pub delivery: DeliveryHandle,
    pub unsubscribe_configured: bool,
    pub max_tokens_per_call: usize,
    pub send_wait: Duration,
    pub poll_interval: Duration,
}

fn audience_to_proto(audience: store::Audience) -> proto::Audience {
    proto::Audience {
        id: audience.id,
        name: audience.name,
        member_count: audience.member_count,
        created_at_ms: audience.created_at_ms,
    }
}

fn counters_to_proto(counters: Counters) -> proto::CampaignCounters {
    proto::CampaignCounters {
        queued: counters.queued(),
        pending: counters.pending,
        sent: counters.sent,
        skipped_no_consent: counters.skipped_no_consent,
        skipped_erased: counters.skipped_erased,
        failed: counters.failed,
    }
}

fn campaign_to_proto(campaign: store::Campaign, counters: Counters) -> proto::Campaign {
    proto::Campaign {
        id: campaign.id,
        name: campaign.name,
        audience_id: campaign.audience_id,
        channel: campaign.channel.to_proto() as i32,
        subject: campaign.subject_template,
        body: campaign.body_template,
        created_at_ms: campaign.created_at_ms,
        counters: Some(counters_to_proto(counters)),
    }
}

/// A validated campaign request.
fn validate_campaign(
    request: &proto::CreateCampaignRequest,
    unsubscribe_configured: bool,
) -> Result<(String, String, Channel), Error> {
    let name = model::label(&request.name, "name")?;
    let audience_id = model::audience_id(&request.audience_id, "audience_id")?;
    let channel = Channel::from_proto(request.channel, "channel")?;
    match channel {
        Channel::Email => {
            if request.subject.trim().is_empty() {
                return Err(Error::invalid("subject", "is required for an e-mail campaign"));
            }
            if request.subject.chars().count() > MAX_SUBJECT_CHARS {
                return Err(Error::invalid("subject", format!("must be at most {MAX_SUBJECT_CHARS} characters")));
            }
            if request.subject.chars().any(char::is_control) {
                return Err(Error::invalid("subject", "must be one line without control characters"));
            }
        }
        Channel::Sms => {
            if !request.subject.is_empty() {
                return Err(Error::invalid("subject", "must be empty for an SMS campaign"));
            }
            if request.body.chars().count() > MAX_SMS_CHARS {
                return Err(Error::invalid("body", format!("must be at most {MAX_SMS_CHARS} characters for SMS")));
            }
        }
    }
    if request.body.trim().is_empty() {
        return Err(Error::invalid("body", "must not be empty"));
    }
    if request.body.len() > MAX_BODY_BYTES {
        return Err(Error::invalid("body", format!("must be at most {MAX_BODY_BYTES} bytes")));
    }
    if request.body.chars().any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t') {
        return Err(Error::invalid("body", "must not contain control characters other than line breaks and tabs"));
    }
    Template::parse(&request.subject, channel, unsubscribe_configured)
        .map_err(|err| Error::invalid("subject", err.to_string()))?;
    Template::parse(&request.body, channel, unsubscribe_configured)
        .map_err(|err| Error::invalid("body", err.to_string()))?;
    Ok((name, audience_id, channel))
}

fn dimension(value: i32) -> Result<types::AggregateDimension, Error> {
    match types::AggregateDimension::try_from(value) {
        Ok(types::AggregateDimension::Unspecified) => Err(Error::invalid("dimension", "must name a dimension")),
        Ok(dimension) => Ok(dimension),
        Err(_) => Err(Error::invalid("dimension", "is not a known dimension")),
    }
}

impl MarketingApi {
    async fn campaign_with_counters(&self, id: &str) -> Result<proto::Campaign, Error> {
        let campaign = self.store.campaign(id).await?.ok_or(Error::NotFound("campaign"))?;
        let counters = self.store.counters(id).await?;
        Ok(campaign_to_proto(campaign, counters))
    }

    /// Waits until no message of the campaign is pending, or `send_wait` has passed.
    async fn wait_for_delivery(&self, campaign_id: &str) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + self.send_wait;
        let mut rounds = self.delivery.rounds();
        while self.store.has_pending(campaign_id).await? {
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            // A finished round, or the poll interval for retries that fall due later.
            tokio::select! {
                _ = rounds.changed() => {}
                _ = tokio::time::sleep(self.poll_interval) => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl MarketingService for MarketingApi {
    #[tracing::instrument(skip_all)]
    async fn create_audience(
        &self,
        request: Request<proto::CreateAudienceRequest>,
    ) -> Result<Response<proto::CreateAudienceResponse>, Status> {
        let caller = caller_of(&request)?;
        let r = request.into_inner();
        let name = model::label(&r.name, "name")?;
        let tokens = model::person_tokens(&r.person_tokens, "person_tokens", self.max_tokens_per_call)?;
        let id = model::new_id("aud_");
        let audience =
            self.store.create_audience(&id, &name, &tokens, caller.as_str(), now_ms()).await.map_err(Error::from)?;
        tracing::info!(audience_id = %audience.id, members = audience.member_count, "audience created");
        Ok(Response::new(proto::CreateAudienceResponse { audience: Some(audience_to_proto(audience)) }))
    }

    #[tracing::instrument(skip_all)]
    async fn add_audience_members(
        &self,
        request: Request<proto::AddAudienceMembersRequest>,
    ) -> Result<Response<proto::AddAudienceMembersResponse>, Status> {
        let r = request.into_inner();
        let audience_id = model::audience_id(&r.audience_id, "audience_id")?;
        let tokens = model::person_tokens(&r.person_tokens, "person_tokens", self.max_tokens_per_call)?;
        let (added, audience) = self
            .store
            .add_members(&audience_id, &tokens, now_ms())
            .await
            .map_err(Error::from)?
            .ok_or(Error::NotFound("audience"))?;
        Ok(Response::new(proto::AddAudienceMembersResponse { added, audience: Some(audience_to_proto(audience)) }))
    }

    #[tracing::instrument(skip_all)]
    async fn remove_audience_members(
        &self,
        request: Request<proto::RemoveAudienceMembersRequest>,
    ) -> Result<Response<proto::RemoveAudienceMembersResponse>, Status> {
        let r = request.into_inner();
        let audience_id = model::audience_id(&r.audience_id, "audience_id")?;
        let tokens = model::person_tokens(&r.person_tokens, "person_tokens", self.max_tokens_per_call)?;
        let (removed, audience) = self
            .store
            .remove_members(&audience_id, &tokens)
            .await
            .map_err(Error::from)?
            .ok_or(Error::NotFound("audience"))?;
        Ok(Response::new(proto::RemoveAudienceMembersResponse { removed, audience: Some(audience_to_proto(audience)) }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_audience(
        &self,
        request: Request<proto::GetAudienceRequest>,
    ) -> Result<Response<proto::GetAudienceResponse>, Status> {
        let audience_id = model::audience_id(&request.get_ref().audience_id, "audience_id")?;
        let audience =
            self.store.audience(&audience_id).await.map_err(Error::from)?.ok_or(Error::NotFound("audience"))?;
        let person_tokens = self.store.members(&audience_id).await.map_err(Error::from)?;
        Ok(Response::new(proto::GetAudienceResponse { audience: Some(audience_to_proto(audience)), person_tokens }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_audiences(
        &self,
        _request: Request<proto::ListAudiencesRequest>,
    ) -> Result<Response<proto::ListAudiencesResponse>, Status> {
        let audiences = self.store.audiences().await.map_err(Error::from)?;
        Ok(Response::new(proto::ListAudiencesResponse {
            audiences: audiences.into_iter().map(audience_to_proto).collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn create_campaign(
        &self,
        request: Request<proto::CreateCampaignRequest>,
    ) -> Result<Response<proto::CreateCampaignResponse>, Status> {
        let caller = caller_of(&request)?;
        let r = request.into_inner();
        let (name, audience_id, channel) = validate_campaign(&r, self.unsubscribe_configured)?;
        let campaign = store::Campaign {
            id: model::new_id("cmp_"),
            name,
            audience_id,
            channel,
            subject_template: r.subject,
            body_template: r.body,
            created_at_ms: now_ms(),
        };
        self.store
            .create_campaign(&campaign, caller.as_str())
            .await
            .map_err(Error::from)?
            .ok_or(Error::NotFound("audience"))?;
        tracing::info!(campaign_id = %campaign.id, %channel, "campaign created");
        Ok(Response::new(proto::CreateCampaignResponse {
            campaign: Some(campaign_to_proto(campaign, Counters::default())),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_campaign(
        &self,
        request: Request<proto::GetCampaignRequest>,
    ) -> Result<Response<proto::GetCampaignResponse>, Status> {
        let campaign_id = model::campaign_id(&request.get_ref().campaign_id, "campaign_id")?;
        let campaign = self.campaign_with_counters(&campaign_id).await?;
        Ok(Response::new(proto::GetCampaignResponse { campaign: Some(campaign) }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_campaigns(
        &self,
        _request: Request<proto::ListCampaignsRequest>,
    ) -> Result<Response<proto::ListCampaignsResponse>, Status> {
        let campaigns = self.store.campaigns().await.map_err(Error::from)?;
        let mut counters = self.store.all_counters().await.map_err(Error::from)?;
        let campaigns = campaigns
            .into_iter()
            .map(|campaign| {
                let counts = counters.remove(&campaign.id).unwrap_or_default();
                campaign_to_proto(campaign, counts)
            })
            .collect();
        Ok(Response::new(proto::ListCampaignsResponse { campaigns }))
    }

    #[tracing::instrument(skip_all)]
    async fn send_campaign(
        &self,
        request: Request<proto::SendCampaignRequest>,
    ) -> Result<Response<proto::SendCampaignResponse>, Status> {
        let r = request.into_inner();
        let campaign_id = model::campaign_id(&r.campaign_id, "campaign_id")?;
        let queued = self
            .store
            .queue_campaign(&campaign_id, now_ms())
            .await
            .map_err(Error::from)?
            .ok_or(Error::NotFound("campaign"))?;
        tracing::info!(%campaign_id, queued, "campaign queued");
        self.delivery.wake();
        if r.wait {
            self.wait_for_delivery(&campaign_id).await?;
        }
        let campaign = self.campaign_with_counters(&campaign_id).await?;
        Ok(Response::new(proto::SendCampaignResponse { queued, campaign: Some(campaign) }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_statistics(
        &self,
        request: Request<proto::GetStatisticsRequest>,
    ) -> Result<Response<proto::GetStatisticsResponse>, Status> {
        let r = request.into_inner();
        let dimension = dimension(r.dimension)?;
        let person_tokens = if r.audience_id.is_empty() {
            Vec::new()
        } else {
            let audience_id = model::audience_id(&r.audience_id, "audience_id")?;
            self.store.audience(&audience_id).await.map_err(Error::from)?.ok_or(Error::NotFound("audience"))?;
            let members = self.store.members(&audience_id).await.map_err(Error::from)?;
            if members.is_empty() {
                // The gateway reads an empty list as "everyone": an empty audience
                // must count nobody.
                return Ok(Response::new(proto::GetStatisticsResponse::default()));
            }
            members
        };
        let aggregate = self
            .statistics
            .clone()
            .aggregate(gateway::AggregateRequest { person_tokens, dimension: dimension as i32 })
            .await
            .map_err(Error::Gateway)?
            .into_inner();
        Ok(Response::new(proto::GetStatisticsResponse {
            groups: aggregate.groups,
            suppressed_groups: aggregate.suppressed_groups,
            skipped_without_consent: aggregate.skipped_without_consent,
            min_group_size: aggregate.min_group_size,
            decision_id: aggregate.decision_id,
        }))
    }
}
