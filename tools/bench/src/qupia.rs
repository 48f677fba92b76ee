//! The Qupia side: every operation as the services that use Qupia call it, over gRPC
//! with mTLS through the gateway. The accounts service stores people, grants consent
//! and looks people up; the marketing service reveals contacts for advertising (a
//! consent-gated purpose); the security team's identity publishes the privacy policy
//! and verifies the access log.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use qupia_api::audit::v1::audit_service_client::AuditServiceClient;
use qupia_api::audit::v1::{VerifyAuditRequest, VerifyAuditResponse};
use qupia_api::gateway::v1::consent_service_client::ConsentServiceClient;
use qupia_api::gateway::v1::gateway_service_client::GatewayServiceClient;
use qupia_api::gateway::v1::{
    BatchRevealRequest, BatchTokenizeRequest, GrantConsentRequest, LookupRequest, PublishPolicyVersionRequest,
    RevealRequest, TokenizeRequest, batch_reveal_result, lookup_request,
};
use qupia_api::types::v1::{Field, Purpose};
use qupia_api::vault::v1::{BatchTokenizeItem, PersonInput, PersonTokens, batch_tokenize_result};
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

use crate::check::CheckSample;
use crate::driver::Workload;
use crate::people::{PersonData, Picker, person};
use crate::suite::Suite;

/// The privacy policy the suite enforces; its SHA-256 is published as version 1.
const PRIVACY_POLICY: &str = include_str!("../../../policies/privacy-policy.en.md");

/// The clients, and what the run has learnt: the tokens of the preloaded people.
#[derive(Debug, Clone)]
pub struct Qupia {
    accounts: GatewayServiceClient<Channel>,
    marketing: GatewayServiceClient<Channel>,
    consents: ConsentServiceClient<Channel>,
    audit: AuditServiceClient<Channel>,
    /// The security team's channel: publishes policy versions, reads the access log.
    security: Channel,
    /// Prefixes idempotency keys, so that a key names one request of one run.
    run_id: String,
    /// Access-log entries the vault acknowledged writing: one per person stored, per
    /// token revealed and per lookup. The log must hold at least this many at the end.
    pub logged: Arc<AtomicU64>,
}

fn input(person: &PersonData) -> PersonInput {
    PersonInput {
        surname: person.surname.to_owned(),
        given_name: person.given_name.to_owned(),
        patronymic: person.patronymic.to_owned(),
        email: person.email.clone(),
        phone: person.phone.clone(),
    }
}

/// The person token of a tokenize answer, after checking that every stored field got a
/// token.
fn person_token(tokens: Option<PersonTokens>, person: &PersonData) -> anyhow::Result<String> {
    let tokens = tokens.context("the answer has no tokens")?;
    anyhow::ensure!(
        tokens.field_tokens.len() == person.fields().len(),
        "the answer has {} field tokens for {} fields",
        tokens.field_tokens.len(),
        person.fields().len()
    );
    Ok(tokens.person_token)
}

/// The name of a field as [`PersonData::fields`] spells it.
pub fn field_name(value: i32) -> &'static str {
    match Field::try_from(value) {
        Ok(Field::Surname) => "surname",
        Ok(Field::GivenName) => "given_name",
        Ok(Field::Patronymic) => "patronymic",
        Ok(Field::Email) => "email",
        Ok(Field::Phone) => "phone",
        Ok(Field::Unspecified) | Err(_) => "unknown",
    }
}

/// Checks revealed values against what was stored for `person`, for the fields in
/// `expected`. The error names fields, never values.
pub fn compare(revealed: &[qupia_api::vault::v1::FieldValue], expected: &[(&str, &str)]) -> anyhow::Result<()> {
    anyhow::ensure!(
        revealed.len() == expected.len(),
        "{} values were revealed where {} were stored",
        revealed.len(),
        expected.len()
    );
    for value in revealed {
        let name = field_name(value.field);
        let stored = expected.iter().find(|(field, _)| *field == name).map(|(_, stored)| *stored);
        anyhow::ensure!(stored == Some(value.value.as_str()), "the revealed {name} differs from the stored one");
    }
    Ok(())
}

fn contacts(person: &PersonData) -> [(&'static str, &str); 2] {
    [("email", person.email.as_str()), ("phone", person.phone.as_str())]
}

impl Qupia {
    pub fn new(suite: &Suite, run_id: &str) -> Qupia {
        Qupia {
            accounts: GatewayServiceClient::new(suite.accounts.clone()),
            marketing: GatewayServiceClient::new(suite.marketing.clone()),
            consents: ConsentServiceClient::new(suite.accounts.clone()),
            audit: AuditServiceClient::new(suite.qupiactl.clone()),
            security: suite.qupiactl.clone(),
            run_id: run_id.to_owned(),
            logged: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Waits until a call through the gateway reaches the vault (the vault may still be
    /// migrating its fresh database when the gateway already listens).
    pub async fn wait_ready(&self, suite: &mut Suite) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            suite.ensure_running()?;
            match self.audit.clone().verify_audit(VerifyAuditRequest::default()).await {
                Ok(_) => return Ok(()),
                Err(status) if tokio::time::Instant::now() >= deadline => {
                    return Err(anyhow::anyhow!("{:?}: {}", status.code(), status.message()))
                        .context("the vault did not answer through the gateway in time");
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
    }

    /// Publishes the privacy policy as the version consents are given under; returns it.
    pub async fn publish_policy(&self) -> anyhow::Result<i64> {
        let version = self
            .consents_as_security()
            .publish_policy_version(PublishPolicyVersionRequest {
                text_sha256: hex::encode(Sha256::digest(PRIVACY_POLICY.as_bytes())),
                reconsent_purposes: vec![],
            })
            .await
            .context("publish the privacy policy")?
            .into_inner()
            .version
            .context("the answer has no version")?;
        Ok(version.version)
    }

    fn consents_as_security(&self) -> ConsentServiceClient<Channel> {
        ConsentServiceClient::new(self.security.clone())
    }

    /// Stores people `indices` in one BatchTokenize call; returns their person tokens
    /// in order.
    pub async fn batch_tokenize(&self, indices: std::ops::Range<u64>) -> anyhow::Result<Vec<String>> {
        let people: Vec<PersonData> = indices.clone().map(person).collect();
        let items = indices
            .clone()
            .zip(&people)
            .map(|(index, person)| BatchTokenizeItem {
                person: Some(input(person)),
                idempotency_key: format!("bench-{}-{index}", self.run_id),
            })
            .collect();
        let results = self.accounts.clone().batch_tokenize(BatchTokenizeRequest { items }).await?.into_inner().results;
        anyhow::ensure!(results.len() == people.len(), "the answer has {} results for {}", results.len(), people.len());
        let mut tokens = Vec::with_capacity(results.len());
        for (result, person) in results.into_iter().zip(&people) {
            match result.result {
                Some(batch_tokenize_result::Result::Tokens(answer)) => tokens.push(person_token(Some(answer), person)?),
                Some(batch_tokenize_result::Result::Error(err)) => {
                    anyhow::bail!("an item was refused (code {}): {}", err.code, err.message)
                }
                None => anyhow::bail!("an item has no result"),
            }
        }
        self.logged.fetch_add(tokens.len() as u64, Ordering::Relaxed);
        Ok(tokens)
    }

    /// Stores one person with Tokenize; returns their person token.
    pub async fn tokenize(&self, index: u64) -> anyhow::Result<String> {
        let person = person(index);
        let answer = self
            .accounts
            .clone()
            .tokenize(TokenizeRequest {
                person: Some(input(&person)),
                idempotency_key: format!("bench-{}-{index}", self.run_id),
            })
            .await?
            .into_inner();
        let token = person_token(answer.tokens, &person)?;
        self.logged.fetch_add(1, Ordering::Relaxed);
        Ok(token)
    }

    /// Records the person's consent to advertising, as the accounts service does when a
    /// person ticks the box.
    pub async fn grant_advertising(&self, token: &str, policy_version: i64) -> anyhow::Result<()> {
        self.consents
            .clone()
            .grant_consent(GrantConsentRequest {
                person_token: token.to_owned(),
                purpose: Purpose::Advertising as i32,
                recipient: String::new(),
                policy_version,
                channel: "web".to_owned(),
                evidence: "bench-signup-form".to_owned(),
                expires_at_ms: 0,
            })
            .await?;
        Ok(())
    }

    /// Reveals the contacts of one consenting person as marketing, for advertising, and
    /// checks them.
    pub async fn reveal(&self, index: u64, token: &str) -> anyhow::Result<()> {
        let answer = self
            .marketing
            .clone()
            .reveal(RevealRequest {
                token: token.to_owned(),
                purpose: Purpose::Advertising as i32,
                fields: vec![],
                recipient: String::new(),
                disclosure_request_id: String::new(),
            })
            .await?
            .into_inner();
        self.logged.fetch_add(1, Ordering::Relaxed);
        compare(&answer.values, &contacts(&person(index)))
    }

    /// Reveals the contacts of many consenting people in one call and checks them.
    pub async fn batch_reveal(&self, people: &[(u64, &str)]) -> anyhow::Result<()> {
        let results = self
            .marketing
            .clone()
            .batch_reveal(BatchRevealRequest {
                tokens: people.iter().map(|(_, token)| (*token).to_owned()).collect(),
                purpose: Purpose::Advertising as i32,
                fields: vec![],
                recipient: String::new(),
                disclosure_request_id: String::new(),
            })
            .await?
            .into_inner()
            .results;
        anyhow::ensure!(results.len() == people.len(), "the answer has {} results for {}", results.len(), people.len());
        self.logged.fetch_add(people.len() as u64, Ordering::Relaxed);
        for (result, (index, _)) in results.into_iter().zip(people) {
            match result.result {
                Some(batch_reveal_result::Result::Revealed(answer)) => {
                    compare(&answer.values, &contacts(&person(*index)))?;
                }
                Some(batch_reveal_result::Result::Error(err)) => {
                    anyhow::bail!("an item was refused (code {}): {}", err.code, err.message)
                }
                None => anyhow::bail!("an item has no result"),
            }
        }
        Ok(())
    }

    /// Finds a person by e-mail as accounts does at sign-in; checks that exactly the
    /// expected person is found.
    pub async fn lookup(&self, index: u64, token: &str) -> anyhow::Result<()> {
        let found = self
            .accounts
            .clone()
            .lookup(LookupRequest { key: Some(lookup_request::Key::Email(person(index).email)) })
            .await?
            .into_inner()
            .person_tokens;
        self.logged.fetch_add(1, Ordering::Relaxed);
        anyhow::ensure!(
            found.len() == 1 && found[0] == token,
            "the lookup found {} people, not the one stored",
            found.len()
        );
        Ok(())
    }

    /// Reveals every stored field of a person as accounts, for service delivery, and
    /// checks each against what was sent.
    pub async fn reveal_all(&self, index: u64, token: &str) -> anyhow::Result<()> {
        let answer = self
            .accounts
            .clone()
            .reveal(RevealRequest {
                token: token.to_owned(),
                purpose: Purpose::ServiceDelivery as i32,
                fields: vec![],
                recipient: String::new(),
                disclosure_request_id: String::new(),
            })
            .await?
            .into_inner();
        self.logged.fetch_add(1, Ordering::Relaxed);
        compare(&answer.values, &person(index).fields())
    }

    /// Walks the whole access log, as the security team.
    pub async fn verify_audit(&self) -> anyhow::Result<VerifyAuditResponse> {
        Ok(self.audit.clone().verify_audit(VerifyAuditRequest::default()).await?.into_inner())
    }
}

/// Tokenize, one person per call, each a person never stored before.
#[derive(Debug)]
pub struct TokenizeOne {
    pub qupia: Qupia,
    pub next: Arc<AtomicU64>,
    pub sample: Arc<CheckSample>,
}

impl Workload for TokenizeOne {
    async fn once(&self) -> anyhow::Result<u64> {
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        let token = self.qupia.tokenize(index).await?;
        self.sample.offer(index, token);
        Ok(1)
    }
}

/// BatchTokenize, `batch` new people per call.
#[derive(Debug)]
pub struct TokenizeBatch {
    pub qupia: Qupia,
    pub next: Arc<AtomicU64>,
    pub batch: u64,
    pub sample: Arc<CheckSample>,
}

impl Workload for TokenizeBatch {
    async fn once(&self) -> anyhow::Result<u64> {
        let first = self.next.fetch_add(self.batch, Ordering::Relaxed);
        let tokens = self.qupia.batch_tokenize(first..first + self.batch).await?;
        for (index, token) in (first..).zip(tokens) {
            self.sample.offer(index, token);
        }
        Ok(self.batch)
    }
}

/// Reveal of one consenting person's contacts, for advertising.
#[derive(Debug)]
pub struct RevealOne {
    pub qupia: Qupia,
    pub tokens: Arc<Vec<String>>,
    pub picker: Picker,
}

impl Workload for RevealOne {
    async fn once(&self) -> anyhow::Result<u64> {
        let index = self.picker.consenting();
        self.qupia.reveal(index, &self.tokens[index as usize]).await?;
        Ok(1)
    }
}

/// BatchReveal of `batch` distinct consenting people's contacts.
#[derive(Debug)]
pub struct RevealBatch {
    pub qupia: Qupia,
    pub tokens: Arc<Vec<String>>,
    pub picker: Picker,
    pub batch: usize,
}

impl Workload for RevealBatch {
    async fn once(&self) -> anyhow::Result<u64> {
        let indices = self.picker.consenting_distinct(self.batch);
        let people: Vec<(u64, &str)> = indices.iter().map(|i| (*i, self.tokens[*i as usize].as_str())).collect();
        self.qupia.batch_reveal(&people).await?;
        Ok(people.len() as u64)
    }
}

/// Lookup of a stored person by e-mail.
#[derive(Debug)]
pub struct LookupEmail {
    pub qupia: Qupia,
    pub tokens: Arc<Vec<String>>,
    pub picker: Picker,
}

impl Workload for LookupEmail {
    async fn once(&self) -> anyhow::Result<u64> {
        let index = self.picker.stored();
        self.qupia.lookup(index, &self.tokens[index as usize]).await?;
        Ok(1)
    }
}
