//! The delivery worker: takes due outbox messages in batches, reveals each contact
//! through the gateway (purpose `advertising`, only the field the channel needs) at the
//! moment of delivery, renders the templates in memory and hands the message to the
//! channel's sender.
//!
//! Consent is the gateway's to check, per person, on this very call: a person whose
//! consent was withdrawn after the campaign was queued is denied here and the message
//! is `skipped_no_consent`, never revealed. An erased person is `skipped_erased`. A
//! transient failure (the gateway or the relay unavailable) is retried with
//! exponential backoff until `max_attempts`, then `failed`.
//!
//! The revealed address and the rendered message are held in zeroizing buffers for
//! the duration of one send; only the message's state and a fixed error code are
//! stored.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use qupia_api::gateway::v1 as gateway;
use qupia_api::gateway::v1::gateway_service_client::GatewayServiceClient;
use qupia_api::types::v1 as types;
use qupia_ops::MessageOutcome;
use qupia_telemetry::TracedChannel;
use tokio::sync::{Notify, watch};
use tonic::Code;
use zeroize::{Zeroize, Zeroizing};

use crate::config::DeliveryOptions;
use crate::model::{Channel, DeliveryState};
use crate::sender::{OutgoingMessage, SendError, Sender};
use crate::store::{Campaign, ClaimedMessage, Outcome, Store};
use crate::template::{RenderValues, Template};

/// The wall clock in unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The sender of each channel.
#[derive(Debug, Clone)]
pub struct Senders {
    pub email: Arc<dyn Sender>,
    pub sms: Arc<dyn Sender>,
}

impl Senders {
    fn of(&self, channel: Channel) -> &dyn Sender {
        match channel {
            Channel::Email => self.email.as_ref(),
            Channel::Sms => self.sms.as_ref(),
        }
    }
}

/// What the API holds of the worker: a way to wake it, and a counter of finished
/// rounds to wait on.
#[derive(Debug, Clone)]
pub struct DeliveryHandle {
    wake: Arc<Notify>,
    rounds: watch::Receiver<u64>,
}

impl DeliveryHandle {
    /// Asks the worker to look for due messages now rather than at its next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// A receiver that changes each time the worker finishes a round.
    pub fn rounds(&self) -> watch::Receiver<u64> {
        self.rounds.clone()
    }
}

/// The worker. One per process; several processes share the outbox through leases.
#[derive(Debug)]
pub struct Delivery {
    pub store: Store,
    pub gateway: GatewayServiceClient<TracedChannel>,
    pub senders: Senders,
    pub options: DeliveryOptions,
    pub metrics: qupia_ops::Metrics,
    pub unsubscribe_url: Option<String>,
    /// This worker's lease name: random, so two processes never share one.
    owner: String,
    wake: Arc<Notify>,
    rounds: watch::Sender<u64>,
    /// Set when the gateway throttled a round: the worker then waits a poll interval
    /// rather than take the next batch at once.
    throttled: AtomicBool,
}

/// A campaign's templates, parsed once per round.
struct Rendering<'a> {
    campaign: &'a Campaign,
    subject: Template,
    body: Template,
}

impl Delivery {
    pub fn new(
        store: Store,
        gateway: GatewayServiceClient<TracedChannel>,
        senders: Senders,
        options: DeliveryOptions,
        metrics: qupia_ops::Metrics,
        unsubscribe_url: Option<String>,
    ) -> (Delivery, DeliveryHandle) {
        let wake = Arc::new(Notify::new());
        let (rounds, rounds_rx) = watch::channel(0);
        let handle = DeliveryHandle { wake: wake.clone(), rounds: rounds_rx };
        let owner = crate::model::new_id("wrk_");
        let throttled = AtomicBool::new(false);
        (
            Delivery { store, gateway, senders, options, metrics, unsubscribe_url, owner, wake, rounds, throttled },
            handle,
        )
    }

    /// Delivers until `stop` turns true. A round in progress finishes first, so no
    /// message is left half-recorded; its lease covers a crash.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        tracing::info!(owner = %self.owner, "delivery worker started");
        loop {
            loop {
                if *stop.borrow() {
                    tracing::info!("delivery worker stopped");
                    return;
                }
                match self.round().await {
                    Ok(0) => break,
                    Ok(_) if self.throttled.swap(false, Ordering::Relaxed) => {
                        self.rounds.send_modify(|n| *n += 1);
                        break;
                    }
                    Ok(_) => self.rounds.send_modify(|n| *n += 1),
                    Err(err) => {
                        tracing::warn!(error = %err, "a delivery round failed; retrying at the next poll");
                        break;
                    }
                }
            }
            self.rounds.send_modify(|n| *n += 1);
            tokio::select! {
                _ = stop.changed() => {}
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.options.poll_interval) => {}
            }
        }
    }

    /// Takes one batch of due messages and delivers it; returns how many it took.
    async fn round(&self) -> Result<usize, sqlx::Error> {
        let now = now_ms();
        let claimed = self
            .store
            .claim_due(&self.owner, now, now.saturating_add(millis(self.options.lease)), self.options.batch_size)
            .await?;
        if claimed.is_empty() {
            return Ok(0);
        }
        let mut by_campaign: Vec<(String, Vec<ClaimedMessage>)> = Vec::new();
        for message in &claimed {
            match by_campaign.iter_mut().find(|(id, _)| *id == message.campaign_id) {
                Some((_, messages)) => messages.push(message.clone()),
                None => by_campaign.push((message.campaign_id.clone(), vec![message.clone()])),
            }
        }
        let ids: Vec<&str> = by_campaign.iter().map(|(id, _)| id.as_str()).collect();
        let campaigns = self.store.campaigns_by_id(&ids).await?;
        for (campaign_id, messages) in &by_campaign {
            let Some(campaign) = campaigns.get(campaign_id) else {
                // The foreign key makes this impossible; fail rather than loop on it.
                for message in messages {
                    self.finish(message, Channel::Email, Err(Failure::Permanent("campaign_missing"))).await?;
                }
                continue;
            };
            self.deliver_campaign(campaign, messages).await?;
        }
        Ok(claimed.len())
    }

    async fn deliver_campaign(&self, campaign: &Campaign, messages: &[ClaimedMessage]) -> Result<(), sqlx::Error> {
        let configured = self.unsubscribe_url.is_some();
        let templates = Template::parse(&campaign.subject_template, campaign.channel, configured)
            .and_then(|subject| Ok((subject, Template::parse(&campaign.body_template, campaign.channel, configured)?)));
        let rendering = match templates {
            Ok((subject, body)) => Rendering { campaign, subject, body },
            Err(_) => {
                // Valid at creation; only a configuration change (no unsubscribe page
                // any more) can make it invalid now.
                for message in messages {
                    self.finish(message, campaign.channel, Err(Failure::Permanent("template_invalid"))).await?;
                }
                return Ok(());
            }
        };
        let field = qupia_api::convert::field_to_proto(campaign.channel.field());
        let request = gateway::BatchRevealRequest {
            tokens: messages.iter().map(|m| m.person_token.clone()).collect(),
            purpose: types::Purpose::Advertising as i32,
            fields: vec![field as i32],
            recipient: String::new(),
            disclosure_request_id: String::new(),
        };
        let results = match self.gateway.clone().batch_reveal(request).await {
            Ok(response) => response.into_inner().results,
            Err(status) => {
                tracing::warn!(campaign_id = %campaign.id, code = ?status.code(), "the gateway refused a batch reveal");
                let failure = gateway_failure(status.code());
                if failure == Failure::Throttled {
                    self.throttled.store(true, Ordering::Relaxed);
                }
                for message in messages {
                    self.finish(message, campaign.channel, Err(failure)).await?;
                }
                return Ok(());
            }
        };
        if results.len() != messages.len() {
            for message in messages {
                self.finish(message, campaign.channel, Err(Failure::Transient("gateway_mismatch"))).await?;
            }
            return Ok(());
        }
        // Contacts not reached (a failed write below ends the round early) are wiped
        // when `pending` is dropped, like those that were.
        let mut pending = Unsent(results.into_iter());
        for message in messages {
            let Some(result) = pending.0.next() else { break };
            let outcome = self.deliver_one(&rendering, message, field, result).await;
            self.finish(message, campaign.channel, outcome).await?;
        }
        Ok(())
    }

    /// Delivers one message given the gateway's answer for its person.
    async fn deliver_one(
        &self,
        rendering: &Rendering<'_>,
        message: &ClaimedMessage,
        field: types::Field,
        result: gateway::BatchRevealResult,
    ) -> Result<(), Failure> {
        let mut revealed = match result.result {
            Some(gateway::batch_reveal_result::Result::Revealed(revealed)) => revealed,
            Some(gateway::batch_reveal_result::Result::Error(item)) => {
                return Err(match Code::from_i32(item.code) {
                    Code::PermissionDenied => Failure::NoConsent,
                    Code::NotFound => Failure::Erased,
                    code => gateway_failure(code),
                });
            }
            None => return Err(Failure::Transient("gateway_empty")),
        };
        // Move the value into a wiped buffer, and wipe anything else that came back.
        let contact = revealed
            .values
            .iter_mut()
            .find(|value| value.field == field as i32)
            .map(|value| Zeroizing::new(std::mem::take(&mut value.value)));
        wipe(&mut revealed);
        let contact = contact.filter(|c| !c.is_empty()).ok_or(Failure::Permanent("no_contact"))?;
        let unsubscribe = self.unsubscribe_link(&message.id);
        let values = RenderValues { contact: &contact, unsubscribe: &unsubscribe };
        let subject = rendering.subject.render(&values);
        let body = rendering.body.render(&values);
        let campaign = rendering.campaign;
        let outgoing = OutgoingMessage {
            campaign_id: &campaign.id,
            message_id: &message.id,
            person_token: &message.person_token,
            channel: campaign.channel,
            to: &contact,
            subject: &subject,
            body: &body,
        };
        self.senders.of(campaign.channel).send(&outgoing).await.map_err(|err| match err {
            SendError::Transient(code) => Failure::Transient(code),
            SendError::Permanent(code) => Failure::Permanent(code),
        })
    }

    /// The unsubscribe link of one message: the configured page with `m=<message id>`.
    fn unsubscribe_link(&self, message_id: &str) -> String {
        match &self.unsubscribe_url {
            Some(url) => {
                let separator = if url.contains('?') { '&' } else { '?' };
                format!("{url}{separator}m={message_id}")
            }
            None => String::new(),
        }
    }

    /// Records the outcome of one attempt, counts it and logs it (tokens and codes only).
    async fn finish(
        &self,
        message: &ClaimedMessage,
        channel: Channel,
        result: Result<(), Failure>,
    ) -> Result<(), sqlx::Error> {
        let now = now_ms();
        // Being throttled is not an attempt: a large campaign must not use up its
        // attempts waiting for its turn at the gateway.
        let attempts = match result {
            Err(Failure::Throttled) => message.attempts,
            _ => message.attempts.saturating_add(1),
        };
        let (state, code, metric) = match result {
            Ok(()) => (DeliveryState::Sent, None, MessageOutcome::Sent),
            Err(Failure::NoConsent) => {
                (DeliveryState::SkippedNoConsent, Some("no_consent"), MessageOutcome::SkippedNoConsent)
            }
            Err(Failure::Erased) => (DeliveryState::SkippedErased, Some("erased"), MessageOutcome::SkippedErased),
            Err(Failure::Permanent(code)) => (DeliveryState::Failed, Some(code), MessageOutcome::Failed),
            Err(Failure::Transient(code)) if attempts >= self.options.max_attempts => {
                (DeliveryState::Failed, Some(code), MessageOutcome::Failed)
            }
            Err(Failure::Transient(code)) => (DeliveryState::Pending, Some(code), MessageOutcome::Retried),
            Err(Failure::Throttled) => (DeliveryState::Pending, Some("gateway_rate_limited"), MessageOutcome::Retried),
        };
        let next_attempt_at_ms = if state == DeliveryState::Pending {
            now.saturating_add(millis(backoff(&self.options, attempts.max(1))))
        } else {
            now
        };
        let outcome = Outcome { state, attempts, error_code: code, next_attempt_at_ms };
        if !self.store.complete(&message.id, &self.owner, outcome, now).await? {
            tracing::warn!(message_id = %message.id, "a message's lease expired before its outcome was recorded");
        }
        self.metrics.message(channel.as_str(), metric);
        tracing::info!(
            campaign_id = %message.campaign_id,
            message_id = %message.id,
            person_token = %message.person_token,
            %channel,
            outcome = metric.as_str(),
            code = code.unwrap_or(""),
            attempts,
            "campaign message"
        );
        Ok(())
    }
}

/// The wait after `attempts` failed attempts: the base, doubled each time, capped.
fn backoff(options: &DeliveryOptions, attempts: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(20));
    options.retry_backoff.saturating_mul(factor).min(options.max_backoff)
}

/// Wipes every value of a reveal.
fn wipe(revealed: &mut gateway::RevealResponse) {
    for value in &mut revealed.values {
        value.value.zeroize();
    }
}

/// The gateway's answers not yet delivered; whatever is left is wiped on drop.
struct Unsent(std::vec::IntoIter<gateway::BatchRevealResult>);

impl Drop for Unsent {
    fn drop(&mut self) {
        for result in self.0.by_ref() {
            if let Some(gateway::batch_reveal_result::Result::Revealed(mut revealed)) = result.result {
                wipe(&mut revealed);
            }
        }
    }
}

/// Why a message was not sent on this attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    NoConsent,
    Erased,
    /// Worth another attempt.
    Transient(&'static str),
    /// The gateway's rate limit: later, without counting an attempt.
    Throttled,
    /// Not worth another attempt.
    Permanent(&'static str),
}

/// A gateway failure, for one message or a whole batch, as a retry decision and a code.
fn gateway_failure(code: Code) -> Failure {
    match code {
        Code::Unavailable => Failure::Transient("gateway_unavailable"),
        Code::ResourceExhausted => Failure::Throttled,
        Code::DeadlineExceeded | Code::Cancelled | Code::Aborted => Failure::Transient("gateway_timeout"),
        Code::Internal | Code::Unknown | Code::DataLoss => Failure::Transient("gateway_error"),
        Code::PermissionDenied => Failure::Permanent("gateway_permission_denied"),
        Code::InvalidArgument | Code::OutOfRange => Failure::Permanent("gateway_invalid_argument"),
        Code::NotFound => Failure::Permanent("gateway_not_found"),
        Code::FailedPrecondition | Code::AlreadyExists => Failure::Permanent("gateway_failed_precondition"),
        Code::Unimplemented | Code::Unauthenticated | Code::Ok => Failure::Permanent("gateway_refused"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consent_and_erasure_are_not_failures_and_outages_are_retried() {
        assert_eq!(gateway_failure(Code::Unavailable), Failure::Transient("gateway_unavailable"));
        assert_eq!(gateway_failure(Code::ResourceExhausted), Failure::Throttled);
        assert_eq!(gateway_failure(Code::PermissionDenied), Failure::Permanent("gateway_permission_denied"));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let options = DeliveryOptions {
            retry_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(10),
            ..DeliveryOptions::default()
        };
        let waits: Vec<u64> = (1..=5).map(|n| backoff(&options, n).as_secs()).collect();
        assert_eq!(waits, vec![2, 4, 8, 10, 10]);
        assert_eq!(backoff(&options, u32::MAX), Duration::from_secs(10));
    }
}
