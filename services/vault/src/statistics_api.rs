//! `qupia.vault.v1.VaultStatisticsService`: aggregates for the gateway, computed here
//! so that no value leaves the vault. Its requests may be larger than other calls'
//! (one subject per person counted), so they are limited by subject count instead.

use qupia_api::vault::v1 as proto;
use qupia_api::vault::v1::vault_statistics_service_server::VaultStatisticsService;
use tonic::{Request, Response, Status};

use crate::dimension::Dimension;
use crate::grpc::access_record;
use crate::vault::{AggregateSubject, Vault};
use crate::{Error, Limits};

/// The largest encoded subject: a person token, a consent id of at most 128 bytes, and
/// their framing. The transport's decoding cap for this service follows from it.
pub const MAX_SUBJECT_BYTES: usize = 256;

#[derive(Debug, Clone)]
pub struct StatisticsApi {
    vault: Vault,
    limits: Limits,
}

impl StatisticsApi {
    pub fn new(vault: Vault, limits: Limits) -> StatisticsApi {
        StatisticsApi { vault, limits }
    }

    fn subjects(&self, subjects: Vec<proto::AggregateSubject>) -> Result<Vec<AggregateSubject>, Error> {
        if subjects.len() > self.limits.max_aggregate_subjects {
            return Err(Error::invalid(
                "subjects",
                format!("has more than {} people; count a smaller audience", self.limits.max_aggregate_subjects),
            ));
        }
        subjects
            .into_iter()
            .enumerate()
            .map(|(i, subject)| {
                let person = self.vault.parse_token(&subject.person_token, &format!("subjects[{i}].person_token"))?;
                if subject.consent_id.is_empty() {
                    // Statistics rest on consent; a person without one is not counted.
                    return Err(Error::invalid(format!("subjects[{i}].consent_id"), "is required"));
                }
                Ok(AggregateSubject { person, consent_id: subject.consent_id })
            })
            .collect()
    }
}

#[tonic::async_trait]
impl VaultStatisticsService for StatisticsApi {
    #[tracing::instrument(skip_all)]
    async fn aggregate(
        &self,
        request: Request<proto::AggregateRequest>,
    ) -> Result<Response<proto::AggregateResponse>, Status> {
        let caller = qupia_transport::caller_of(&request)?;
        let request = request.into_inner();
        let access = access_record(&caller, request.access.as_ref(), true)?;
        let dimension = Dimension::from_proto(request.dimension, "dimension")?;
        let subjects = self.subjects(request.subjects)?;
        let aggregate = self.vault.aggregate(&access, &subjects, dimension, request.min_group_size).await?;
        tracing::info!(
            dimension = dimension.as_str(),
            groups = aggregate.groups.len(),
            suppressed = aggregate.suppressed_groups,
            "aggregate computed"
        );
        Ok(Response::new(proto::AggregateResponse {
            groups: aggregate
                .groups
                .into_iter()
                .map(|(key, count)| qupia_api::types::v1::AggregateGroup { key, count })
                .collect(),
            suppressed_groups: aggregate.suppressed_groups,
        }))
    }
}
