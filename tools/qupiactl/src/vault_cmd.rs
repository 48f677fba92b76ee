//! `qupiactl vault …`: direct vault calls for development, made with the
//! development gateway certificate (the only identity the vault answers).

use std::path::Path;

use anyhow::Context;
use clap::Subcommand;
use qupia_api::types::v1::{Field, Purpose};
use qupia_api::vault::v1::vault_service_client::VaultServiceClient;
use qupia_api::vault::v1::*;
use tonic::transport::{Channel, Endpoint};

use crate::dev::tls_files;

#[derive(Debug, Subcommand)]
pub enum VaultCommand {
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
    /// Reveal the values behind a person or field token.
    Reveal {
        token: String,
        /// Fields to reveal (surname, given_name, patronymic, email, phone); all when omitted.
        #[arg(long, value_delimiter = ',')]
        fields: Vec<String>,
    },
    /// Find people by e-mail or phone.
    Lookup {
        #[arg(long, conflicts_with = "phone", required_unless_present = "phone")]
        email: Option<String>,
        #[arg(long)]
        phone: Option<String>,
    },
    /// Crypto-shred a person.
    Erase { person_token: String },
}

async fn client(addr: &str, dev_dir: &Path) -> anyhow::Result<VaultServiceClient<Channel>> {
    let files = tls_files(dev_dir, "gateway");
    let channel = Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(
            files
                .client_config("vault")
                .context("read the development certificates (is `qupiactl dev up` running?)")?,
        )?
        .connect()
        .await
        .with_context(|| format!("connect to the vault at {addr}"))?;
    Ok(VaultServiceClient::new(channel))
}

fn field_name(field: i32) -> &'static str {
    match Field::try_from(field) {
        Ok(Field::Surname) => "surname",
        Ok(Field::GivenName) => "given_name",
        Ok(Field::Patronymic) => "patronymic",
        Ok(Field::Email) => "email",
        Ok(Field::Phone) => "phone",
        _ => "unknown",
    }
}

fn parse_field(name: &str) -> anyhow::Result<i32> {
    Ok(match name {
        "surname" => Field::Surname,
        "given_name" => Field::GivenName,
        "patronymic" => Field::Patronymic,
        "email" => Field::Email,
        "phone" => Field::Phone,
        _ => anyhow::bail!(
            "fields: is not a known field (surname, given_name, patronymic, email, phone)"
        ),
    } as i32)
}

fn status(err: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", err.code(), err.message())
}

pub async fn run(
    command: VaultCommand,
    addr: &str,
    dev_dir: &Path,
    json: bool,
) -> anyhow::Result<()> {
    let mut vault = client(addr, dev_dir).await?;
    let access = Some(AccessContext {
        purpose: Purpose::ServiceDelivery as i32,
        decision_id: "qupiactl-dev".into(),
    });
    match command {
        VaultCommand::Tokenize {
            surname,
            given_name,
            patronymic,
            email,
            phone,
            idempotency_key,
        } => {
            let person = PersonInput {
                surname,
                given_name,
                patronymic,
                email,
                phone,
            };
            let response = vault
                .tokenize(TokenizeRequest {
                    person: Some(person),
                    idempotency_key,
                })
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
        VaultCommand::Reveal { token, fields } => {
            let fields = fields
                .iter()
                .map(|f| parse_field(f))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let response = vault
                .reveal(RevealRequest {
                    token,
                    fields,
                    access,
                })
                .await
                .map_err(status)?
                .into_inner();
            if json {
                let values: serde_json::Map<String, serde_json::Value> = response
                    .values
                    .iter()
                    .map(|v| (field_name(v.field).to_owned(), v.value.clone().into()))
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({"person_token": response.person_token, "values": values})
                );
            } else {
                for v in &response.values {
                    println!("{:<11} {}", field_name(v.field), v.value);
                }
            }
        }
        VaultCommand::Lookup { email, phone } => {
            let key = match (email, phone) {
                (Some(email), _) => lookup_request::Key::Email(email),
                (None, Some(phone)) => lookup_request::Key::Phone(phone),
                (None, None) => anyhow::bail!("give --email or --phone"),
            };
            let found = vault
                .lookup(LookupRequest {
                    key: Some(key),
                    access,
                })
                .await
                .map_err(status)?
                .into_inner();
            if json {
                println!(
                    "{}",
                    serde_json::json!({"person_tokens": found.person_tokens})
                );
            } else if found.person_tokens.is_empty() {
                println!("nobody");
            } else {
                for token in found.person_tokens {
                    println!("{token}");
                }
            }
        }
        VaultCommand::Erase { person_token } => {
            let erased = vault
                .erase(EraseRequest { person_token })
                .await
                .map_err(status)?
                .into_inner();
            println!(
                "erased {} field values; every token of this person now answers NOT_FOUND",
                erased.erased_fields
            );
        }
    }
    Ok(())
}
