//! `qupiactl stats …`: aggregates for purpose statistics (`--as marketing`): counts by
//! a dimension over people with an active statistics consent, small groups suppressed.

use clap::{Subcommand, ValueEnum};
use qupia_api::gateway::v1::AggregateRequest;
use qupia_api::gateway::v1::statistics_service_client::StatisticsServiceClient;
use qupia_api::types::v1::AggregateDimension;
use tonic::transport::Channel;

use crate::client::status;
use crate::emit;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Dimension {
    /// The domain of the e-mail address.
    EmailDomain,
    /// The country of the phone number.
    PhoneCountry,
    /// The mobile operator the number was allocated to.
    PhoneOperator,
    /// The month the person was stored (UTC).
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

#[derive(Debug, Subcommand)]
pub enum StatsCommand {
    /// Count people by a dimension: the tokens given, or everyone who consented.
    Aggregate {
        #[arg(long, value_enum)]
        by: Dimension,
        /// Person tokens (an audience); none = everyone with an active statistics consent.
        person_tokens: Vec<String>,
    },
}

pub async fn run(command: StatsCommand, channel: Channel, json: bool) -> anyhow::Result<()> {
    let mut statistics = StatisticsServiceClient::new(channel);
    match command {
        StatsCommand::Aggregate { by, person_tokens } => {
            let response = statistics
                .aggregate(AggregateRequest { person_tokens, dimension: by.to_proto() as i32 })
                .await
                .map_err(status)?
                .into_inner();
            if json {
                let groups: Vec<_> =
                    response.groups.iter().map(|g| serde_json::json!({"key": g.key, "count": g.count})).collect();
                emit(serde_json::json!({
                    "groups": groups, "suppressed_groups": response.suppressed_groups,
                    "skipped_without_consent": response.skipped_without_consent,
                    "min_group_size": response.min_group_size, "decision_id": response.decision_id,
                }))?;
            } else {
                for group in &response.groups {
                    emit(format_args!("{:<32} {:>8}", group.key, group.count))?;
                }
                emit(format_args!(
                    "suppressed: {} groups of fewer than {}; skipped without consent: {}; decision {}",
                    response.suppressed_groups,
                    response.min_group_size,
                    response.skipped_without_consent,
                    response.decision_id
                ))?;
            }
        }
    }
    Ok(())
}
