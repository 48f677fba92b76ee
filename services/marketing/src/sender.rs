//! Where a rendered message goes: the `Sender` trait, the development `LogSender`
//! and the `SmtpSender` (lettre over tokio and rustls).
//!
//! A sender gets the revealed address and the rendered text for the duration of one
//! call and keeps neither. Its errors are fixed codes: an SMTP server's reply can
//! quote the address it refused, so no reply text is ever logged, stored or returned.

use std::fmt;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use secrecy::ExposeSecret;

use crate::config::{SmtpConfig, SmtpTls};
use crate::model::Channel;

/// One message to one person, rendered, in memory only.
pub struct OutgoingMessage<'a> {
    pub campaign_id: &'a str,
    /// The outbox id of this message (also its unsubscribe reference).
    pub message_id: &'a str,
    pub person_token: &'a str,
    pub channel: Channel,
    /// The revealed e-mail address or phone number.
    pub to: &'a str,
    /// Empty for SMS.
    pub subject: &'a str,
    pub body: &'a str,
}

/// Never prints the address or the text.
impl fmt::Debug for OutgoingMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutgoingMessage")
            .field("campaign_id", &self.campaign_id)
            .field("message_id", &self.message_id)
            .field("person_token", &self.person_token)
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

/// Why a message was not handed over. The code is stored as the message's
/// `last_error_code`: a fixed word, never a server's reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth retrying: the relay is down, busy or deferred the message.
    #[error("transient send failure: {0}")]
    Transient(&'static str),
    /// Retrying will not help: the relay refused the message or the address.
    #[error("permanent send failure: {0}")]
    Permanent(&'static str),
}

impl SendError {
    pub fn code(self) -> &'static str {
        match self {
            SendError::Transient(code) | SendError::Permanent(code) => code,
        }
    }
}

/// Hands one rendered message to a delivery system.
#[tonic::async_trait]
pub trait Sender: Send + Sync + fmt::Debug {
    async fn send(&self, message: &OutgoingMessage<'_>) -> Result<(), SendError>;
}

/// Development: logs that a message would go out, by campaign, message, person token
/// and channel; never the address, the subject or the body.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogSender;

#[tonic::async_trait]
impl Sender for LogSender {
    async fn send(&self, message: &OutgoingMessage<'_>) -> Result<(), SendError> {
        tracing::info!(
            campaign_id = message.campaign_id,
            message_id = message.message_id,
            person_token = message.person_token,
            channel = %message.channel,
            "message handed to the log sender"
        );
        Ok(())
    }
}

/// Why the SMTP sender could not be set up (at start, from configuration only).
#[derive(Debug, thiserror::Error)]
pub enum SmtpSetupError {
    #[error("smtp_from: is not a valid mailbox")]
    From,
    #[error("smtp_host: cannot set up TLS for it: {0}")]
    Tls(lettre::transport::smtp::Error),
    #[error("smtp_ca: cannot read {path}: {source}")]
    ReadCa { path: std::path::PathBuf, source: std::io::Error },
    #[error("smtp_ca: is not a PEM certificate")]
    Ca,
}

/// E-mail through an SMTP relay, with a connection pool.
#[derive(Debug, Clone)]
pub struct SmtpSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl SmtpSender {
    pub fn new(config: &SmtpConfig) -> Result<SmtpSender, SmtpSetupError> {
        let from: Mailbox = config.from.parse().map_err(|_| SmtpSetupError::From)?;
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(config.host.as_str()).port(config.port);
        if config.tls != SmtpTls::None {
            let mut parameters = TlsParameters::builder(config.host.clone());
            if let Some(path) = &config.ca {
                let pem =
                    std::fs::read(path).map_err(|source| SmtpSetupError::ReadCa { path: path.clone(), source })?;
                parameters =
                    parameters.add_root_certificate(Certificate::from_pem(&pem).map_err(|_| SmtpSetupError::Ca)?);
            }
            let parameters = parameters.build_rustls().map_err(SmtpSetupError::Tls)?;
            builder = builder.tls(match config.tls {
                SmtpTls::StartTls => Tls::Required(parameters),
                SmtpTls::Tls | SmtpTls::None => Tls::Wrapper(parameters),
            });
        }
        if let Some(credentials) = &config.credentials {
            builder = builder.credentials(Credentials::new(
                credentials.username.clone(),
                credentials.password.expose_secret().to_owned(),
            ));
        }
        Ok(SmtpSender { transport: builder.timeout(Some(config.timeout)).build(), from })
    }
}

#[tonic::async_trait]
impl Sender for SmtpSender {
    async fn send(&self, message: &OutgoingMessage<'_>) -> Result<(), SendError> {
        let to: Mailbox = message.to.parse().map_err(|_| SendError::Permanent("invalid_address"))?;
        let email = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(message.subject)
            .header(ContentType::TEXT_PLAIN)
            .body(message.body.to_owned())
            .map_err(|_| SendError::Permanent("unbuildable_message"))?;
        match self.transport.send(email).await {
            Ok(_) => Ok(()),
            Err(err) => {
                // The status code only: the reply text may quote the address.
                let status = err.status().map(|code| code.to_string()).unwrap_or_default();
                let failure = if err.is_permanent() {
                    SendError::Permanent("smtp_rejected")
                } else if err.is_transient() {
                    SendError::Transient("smtp_deferred")
                } else {
                    SendError::Transient("smtp_unavailable")
                };
                tracing::warn!(
                    campaign_id = message.campaign_id,
                    message_id = message.message_id,
                    smtp_status = %status,
                    code = failure.code(),
                    "the SMTP relay did not take a message"
                );
                Err(failure)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config(from: &str, tls: SmtpTls) -> SmtpConfig {
        SmtpConfig {
            host: "smtp.example.kz".into(),
            port: 587,
            tls,
            credentials: Some(crate::config::SmtpCredentials {
                username: "news".into(),
                password: secrecy::SecretString::from("s3cret-pass".to_owned()),
            }),
            from: from.into(),
            ca: None,
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn a_message_never_prints_its_address_or_text() {
        let message = OutgoingMessage {
            campaign_id: "cmp_1",
            message_id: "msg_1",
            person_token: "qpp_1",
            channel: Channel::Email,
            to: "aigerim@mail.kz",
            subject: "Hello aigerim@mail.kz",
            body: "Dear reader",
        };
        let printed = format!("{message:?}");
        assert!(printed.contains("cmp_1") && printed.contains("qpp_1"));
        assert!(!printed.contains("aigerim") && !printed.contains("Dear reader"), "{printed}");
    }

    // The transport's connection pool lives on the Tokio runtime.
    #[tokio::test]
    async fn smtp_settings_are_checked_and_the_password_never_printed() {
        for tls in [SmtpTls::None, SmtpTls::StartTls, SmtpTls::Tls] {
            let sender = SmtpSender::new(&config("EDU Stream Plus <news@edustream.kz>", tls)).expect("valid");
            assert!(!format!("{sender:?}").contains("s3cret-pass"));
        }
        let config = config("not a mailbox", SmtpTls::StartTls);
        assert!(!format!("{config:?}").contains("s3cret-pass"));
        let err = SmtpSender::new(&config).unwrap_err();
        assert_eq!(err.to_string(), "smtp_from: is not a valid mailbox");
    }
}
