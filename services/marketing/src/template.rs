//! Message templates: plain text with placeholders in double braces.
//!
//! | placeholder       | renders as                                  | allowed in        |
//! |-------------------|---------------------------------------------|-------------------|
//! | `{{email}}`       | the recipient's e-mail address              | e-mail campaigns  |
//! | `{{phone}}`       | the recipient's phone number (E.164)        | SMS campaigns     |
//! | `{{unsubscribe}}` | the unsubscribe link of this one message    | both              |
//!
//! Spaces inside the braces are allowed (`{{ email }}`). A campaign reveals exactly one
//! field, the one its channel needs, and the purpose `advertising` never sees a name;
//! so a name placeholder (`{{surname}}`, `{{given_name}}`, `{{patronymic}}`,
//! `{{name}}`), the other channel's contact, any unknown placeholder or an unclosed
//! `{{` is refused when the campaign is created. There is no escape for a literal `{{`.
//!
//! Templates are stored as written and rendered only at delivery, in memory, into
//! zeroizing buffers: a rendered message is never stored or logged.

use qupia_domain::Field;
use zeroize::Zeroizing;

use crate::model::Channel;

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Placeholder(Placeholder),
}

/// What a placeholder stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    /// The contact the channel reveals: the e-mail address or the phone number.
    Contact(Field),
    Unsubscribe,
}

/// Why a template was refused. The reason never repeats the template's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("has a \"{{{{\" without a closing \"}}}}\"")]
    Unclosed,
    #[error("has an unknown placeholder")]
    Unknown,
    #[error("asks for a name, which advertising may not see")]
    Name,
    #[error("asks for {0}, which {1} campaigns do not reveal")]
    WrongContact(&'static str, Channel),
    #[error("uses {{{{unsubscribe}}}}, but no unsubscribe_url is configured")]
    NoUnsubscribeUrl,
}

/// A validated template, ready to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

/// The values a template is rendered with: the revealed contact and the message's
/// unsubscribe link.
#[derive(Debug)]
pub struct RenderValues<'a> {
    pub contact: &'a str,
    pub unsubscribe: &'a str,
}

fn placeholder(name: &str, channel: Channel) -> Result<Placeholder, TemplateError> {
    match name {
        "email" | "phone" => {
            let field = if name == "email" { Field::Email } else { Field::Phone };
            if field == channel.field() {
                Ok(Placeholder::Contact(field))
            } else {
                Err(TemplateError::WrongContact(field.as_str(), channel))
            }
        }
        "unsubscribe" => Ok(Placeholder::Unsubscribe),
        "surname" | "given_name" | "patronymic" | "name" | "full_name" | "first_name" | "last_name" => {
            Err(TemplateError::Name)
        }
        _ => Err(TemplateError::Unknown),
    }
}

impl Template {
    /// Parses `text` for a campaign on `channel`; `unsubscribe_configured` says whether
    /// `{{unsubscribe}}` can be rendered.
    pub fn parse(text: &str, channel: Channel, unsubscribe_configured: bool) -> Result<Template, TemplateError> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                pieces.push(Piece::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or(TemplateError::Unclosed)?;
            let name = after[..end].trim();
            if name.contains('{') {
                return Err(TemplateError::Unclosed);
            }
            let placeholder = placeholder(name, channel)?;
            if placeholder == Placeholder::Unsubscribe && !unsubscribe_configured {
                return Err(TemplateError::NoUnsubscribeUrl);
            }
            pieces.push(Piece::Placeholder(placeholder));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Template { pieces })
    }

    /// The placeholders used, in order.
    pub fn placeholders(&self) -> impl Iterator<Item = Placeholder> + '_ {
        self.pieces.iter().filter_map(|piece| match piece {
            Piece::Placeholder(p) => Some(*p),
            Piece::Text(_) => None,
        })
    }

    /// Renders into a buffer that is wiped when dropped.
    pub fn render(&self, values: &RenderValues<'_>) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::new());
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Placeholder(Placeholder::Contact(_)) => out.push_str(values.contact),
                Piece::Placeholder(Placeholder::Unsubscribe) => out.push_str(values.unsubscribe),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> RenderValues<'static> {
        RenderValues { contact: "a@example.kz", unsubscribe: "https://u.example/?m=msg_1" }
    }

    #[test]
    fn renders_placeholders_with_or_without_spaces() {
        let template = Template::parse("Hi {{email}}, bye: {{ unsubscribe }}!", Channel::Email, true).unwrap();
        assert_eq!(template.render(&values()).as_str(), "Hi a@example.kz, bye: https://u.example/?m=msg_1!");
        let plain = Template::parse("no placeholders } {", Channel::Sms, false).unwrap();
        assert_eq!(plain.render(&values()).as_str(), "no placeholders } {");
        assert_eq!(plain.placeholders().count(), 0);
    }

    #[test]
    fn refuses_names_unknown_and_other_channel_placeholders() {
        for (text, channel, expected) in [
            ("Dear {{surname}}", Channel::Email, TemplateError::Name),
            ("Dear {{ given_name }}", Channel::Sms, TemplateError::Name),
            ("{{name}}", Channel::Email, TemplateError::Name),
            ("{{iin}}", Channel::Email, TemplateError::Unknown),
            ("{{}}", Channel::Email, TemplateError::Unknown),
            ("{{phone}}", Channel::Email, TemplateError::WrongContact("phone", Channel::Email)),
            ("{{email}}", Channel::Sms, TemplateError::WrongContact("email", Channel::Sms)),
            ("Hi {{email", Channel::Email, TemplateError::Unclosed),
            ("{{ {{email}}", Channel::Email, TemplateError::Unclosed),
            ("{{unsubscribe}}", Channel::Email, TemplateError::NoUnsubscribeUrl),
        ] {
            assert_eq!(Template::parse(text, channel, false), Err(expected.clone()), "{text}");
        }
        assert_eq!(
            TemplateError::WrongContact("phone", Channel::Email).to_string(),
            "asks for phone, which email campaigns do not reveal"
        );
        assert_eq!(TemplateError::Unclosed.to_string(), "has a \"{{\" without a closing \"}}\"");
    }
}
