//! `qupiactl person …` and `qupiactl consent …`: what internal services do through
//! the gateway, for trying the suite out (`--as accounts`, `--as marketing`).

use clap::Subcommand;
use qupia_api::gateway::v1::consent_service_client::ConsentServiceClient;
use qupia_api::gateway::v1::gateway_service_client::GatewayServiceClient;
use qupia_api::gateway::v1::*;

use qupia_api::vault::v1::PersonInput;
use qupia_domain::Purpose as DomainPurpose;
use tonic::transport::Channel;

use crate::client::status;

#[derive(Debug, Subcommand)]
pub enum PersonCommand {
    /// Store a person; prints their tokens.
    Tokenize {
        #[arg(long)]
        surname: String,
        #[arg(long)]
        given_name: String,
        #[arg(long, default_value = "")]
        patronymic: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        phone: String,
        #[arg(long, default_value = "")]
        idempotency_key: String,
    },
    /// Reveal a person's fields for a purpose.
    Reveal {
        token: String,
        /// service_delivery, identification, communication, advertising, statistics, legal_disclosure, third_party_transfer
        #[arg(long)]
        purpose: String,
        /// Fields wanted; every field the purpose allows when omitted.
        #[arg(long, value_delimiter = ',')]
        fields: Vec<String>,
        /// The third party, for third_party_transfer.
        #[arg(long, default_value = "")]
        recipient: String,
        /// For legal_disclosure: the approved disclosure request (`qupiactl disclosure`).
        #[arg(long = "disclosure-request", default_value = "")]
        disclosure_request_id: String,
    },
    /// Find people by e-mail or phone (purpose identification).
    Lookup {
        #[arg(long, conflicts_with = "phone", required_unless_present = "phone")]
        email: Option<String>,
        #[arg(long)]
        phone: Option<String>,
    },
    /// Erase a person (crypto-shredding).
    Erase { person_token: String },
}

#[derive(Debug, Subcommand)]
pub enum ConsentCommand {
    /// Record a consent under the current policy version.
    Grant {
        person_token: String,
        #[arg(long)]
        purpose: String,
        #[arg(long, default_value = "")]
        recipient: String,
        #[arg(long, default_value = "web")]
        channel: String,
        #[arg(long, default_value = "")]
        evidence: String,
    },
    /// Record a withdrawal; it holds from the next call on.
    Withdraw {
        person_token: String,
        #[arg(long)]
        purpose: String,
        #[arg(long, default_value = "")]
        recipient: String,
        #[arg(long, default_value = "web")]
        channel: String,
    },
    /// The current state of a person's consents.
    Show { person_token: String },
    /// Every consent event of a person.
    History { person_token: String },
}

pub fn purpose(name: &str) -> anyhow::Result<i32> {
    let purpose: DomainPurpose = name.parse().map_err(|_| anyhow::anyhow!("purpose: is not a known purpose"))?;
    Ok(qupia_api::convert::purpose_to_proto(purpose) as i32)
}

pub fn purpose_name(value: i32) -> &'static str {
    qupia_api::convert::purpose(value).map(|p| p.as_str()).unwrap_or("unknown")
}

pub fn field(name: &str) -> anyhow::Result<i32> {
    let field: qupia_domain::Field = name.parse().map_err(|_| anyhow::anyhow!("fields: is not a known field"))?;
    Ok(qupia_api::convert::field_to_proto(field) as i32)
}

pub fn field_name(value: i32) -> &'static str {
    qupia_api::convert::field(value).map(|f| f.as_str()).unwrap_or("unknown")
}

pub async fn run_person(command: PersonCommand, channel: Channel, json: bool) -> anyhow::Result<()> {
    let mut gateway = GatewayServiceClient::new(channel);
    match command {
        PersonCommand::Tokenize { surname, given_name, patronymic, email, phone, idempotency_key } => {
            let person = PersonInput { surname, given_name, patronymic, email, phone };
            let response = gateway
                .tokenize(TokenizeRequest { person: Some(person), idempotency_key })
                .await
                .map_err(status)?
                .into_inner();
            let tokens = response.tokens.unwrap_or_default();
            if json {
                let fields: serde_json::Map<String, serde_json::Value> = tokens
                    .field_tokens
                    .iter()
                    .map(|t| (field_name(t.field).to_owned(), t.token.clone().into()))
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({"person_token": tokens.person_token, "field_tokens": fields, "replayed": response.replayed})
                );
            } else {
                println!("person      {}", tokens.person_token);
                for t in &tokens.field_tokens {
                    println!("{:<11} {}", field_name(t.field), t.token);
                }
            }
        }
        PersonCommand::Reveal { token, purpose: purpose_arg, fields, recipient, disclosure_request_id } => {
            let fields = fields.iter().map(|f| field(f)).collect::<anyhow::Result<Vec<_>>>()?;
            let purpose = purpose(&purpose_arg)?;
            let response = gateway
                .reveal(RevealRequest { token, purpose, fields, recipient, disclosure_request_id })
                .await
                .map_err(status)?
                .into_inner();
            if json {
                let values: serde_json::Map<String, serde_json::Value> =
                    response.values.iter().map(|v| (field_name(v.field).to_owned(), v.value.clone().into())).collect();
                println!(
                    "{}",
                    serde_json::json!({"person_token": response.person_token, "values": values, "decision_id": response.decision_id})
                );
            } else {
                for v in &response.values {
                    println!("{:<11} {}", field_name(v.field), v.value);
                }
                println!("(decision {})", response.decision_id);
            }
        }
        PersonCommand::Lookup { email, phone } => {
            let key = match (email, phone) {
                (Some(email), _) => lookup_request::Key::Email(email),
                (None, Some(phone)) => lookup_request::Key::Phone(phone),
                (None, None) => anyhow::bail!("give --email or --phone"),
            };
            let found = gateway.lookup(LookupRequest { key: Some(key) }).await.map_err(status)?.into_inner();
            if json {
                println!("{}", serde_json::json!({"person_tokens": found.person_tokens}));
            } else if found.person_tokens.is_empty() {
                println!("nobody");
            } else {
                for token in found.person_tokens {
                    println!("{token}");
                }
            }
        }
        PersonCommand::Erase { person_token } => {
            let erased = gateway.erase(EraseRequest { person_token }).await.map_err(status)?.into_inner();
            println!("erased {} field values; every token of this person now answers NOT_FOUND", erased.erased_fields);
        }
    }
    Ok(())
}

/// A consent event as JSON.
pub fn event_json(event: &ConsentEvent) -> serde_json::Value {
    serde_json::json!({
        "id": event.id, "purpose": purpose_name(event.purpose), "recipient": event.recipient,
        "granted": event.granted, "policy_version": event.policy_version, "channel": event.channel,
        "evidence": event.evidence, "recorded_at_ms": event.recorded_at_ms, "recorded_by": event.recorded_by,
    })
}

/// A consent's current state as JSON.
pub fn state_json(state: &ConsentState) -> serde_json::Value {
    serde_json::json!({"purpose": purpose_name(state.purpose), "recipient": state.recipient, "active": state.active, "reason": state.reason})
}

/// A consent's current state as a line.
pub fn state_line(state: &ConsentState) -> String {
    format!(
        "{:<22} {:<10} {:<8} {}",
        purpose_name(state.purpose),
        state.recipient,
        if state.active { "active" } else { "inactive" },
        state.reason
    )
}

pub fn print_event(event: &ConsentEvent, json: bool) {
    if json {
        println!("{}", event_json(event));
    } else {
        println!(
            "{:<10} {:<22} {:<10} v{:<3} {:<8} {}",
            if event.granted { "granted" } else { "withdrawn" },
            purpose_name(event.purpose),
            event.recipient,
            event.policy_version,
            event.channel,
            event.id
        );
    }
}

pub async fn run_consent(command: ConsentCommand, channel: Channel, json: bool) -> anyhow::Result<()> {
    let mut consents = ConsentServiceClient::new(channel);
    match command {
        ConsentCommand::Grant { person_token, purpose: purpose_arg, recipient, channel, evidence } => {
            let versions = consents
                .list_policy_versions(ListPolicyVersionsRequest {})
                .await
                .map_err(status)?
                .into_inner()
                .versions;
            let current =
                versions.last().map(|v| v.version).ok_or_else(|| anyhow::anyhow!("no policy version is published"))?;
            let event = consents
                .grant_consent(GrantConsentRequest {
                    person_token,
                    purpose: purpose(&purpose_arg)?,
                    recipient,
                    policy_version: current,
                    channel,
                    evidence,
                    expires_at_ms: 0,
                })
                .await
                .map_err(status)?
                .into_inner()
                .event
                .unwrap_or_default();
            print_event(&event, json);
        }
        ConsentCommand::Withdraw { person_token, purpose: purpose_arg, recipient, channel } => {
            let event = consents
                .withdraw_consent(WithdrawConsentRequest {
                    person_token,
                    purpose: purpose(&purpose_arg)?,
                    recipient,
                    channel,
                    evidence: String::new(),
                })
                .await
                .map_err(status)?
                .into_inner()
                .event
                .unwrap_or_default();
            print_event(&event, json);
        }
        ConsentCommand::Show { person_token } => {
            let states = consents.get_consents(GetConsentsRequest { person_token }).await.map_err(status)?.into_inner();
            for state in states.consents {
                if json {
                    println!("{}", state_json(&state));
                } else {
                    println!("{}", state_line(&state));
                }
            }
        }
        ConsentCommand::History { person_token } => {
            let history = consents
                .list_consent_history(ListConsentHistoryRequest { person_token })
                .await
                .map_err(status)?
                .into_inner();
            for event in &history.events {
                print_event(event, json);
            }
        }
    }
    Ok(())
}
