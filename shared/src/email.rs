//! Email over SMTP with lettre (rustls): Amazon SES's SMTP interface in AWS, the local sink in
//! development and tests. Sending is off when SMTP_HOST is not set; the messages can still be
//! rendered (the superuser's preview route).

use std::time::Duration;

use lettre::message::{header::ContentType, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{ConfigError, Env};
use crate::error::ApiError;
use crate::secrets::AppSecret;

/// One message, in HTML and plain text.
pub struct Email {
    pub subject: String,
    pub html: String,
    pub text: String,
}

pub struct Mailer {
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
    from: Mailbox,
    pub frontend_host: String,
    pub project_name: String,
}

impl Mailer {
    /// SMTP_HOST, SMTP_PORT (587), SMTP_TLS (`starttls`, `tls` or `none`; default `starttls`),
    /// EMAILS_FROM_EMAIL, FRONTEND_HOST, PROJECT_NAME.
    pub fn from_env(env: &Env, secret: &AppSecret) -> Result<Self, ConfigError> {
        let project_name = env.string_or("PROJECT_NAME", "CareVault");
        let from_email = env.string_or("EMAILS_FROM_EMAIL", "noreply@example.com");
        let from = format!("{project_name} <{from_email}>")
            .parse()
            .map_err(|e| ConfigError::Invalid {
                name: "EMAILS_FROM_EMAIL",
                reason: format!("not a valid sender: {e}"),
            })?;
        let transport = match env.get("SMTP_HOST") {
            Some(host) => Some(Self::transport(env, host, secret)?),
            None => None,
        };
        Ok(Self {
            transport,
            from,
            frontend_host: env
                .string_or("FRONTEND_HOST", "http://localhost:5173")
                .trim_end_matches('/')
                .to_owned(),
            project_name,
        })
    }

    pub fn enabled(&self) -> bool {
        self.transport.is_some()
    }

    fn transport(
        env: &Env,
        host: &str,
        secret: &AppSecret,
    ) -> Result<AsyncSmtpTransport<Tokio1Executor>, ConfigError> {
        let tls = env.string_or("SMTP_TLS", "starttls");
        let builder = match tls.as_str() {
            "starttls" => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host),
            "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(host),
            // Plain SMTP: only for a local sink.
            "none" => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
                host,
            )),
            other => {
                return Err(ConfigError::Invalid {
                    name: "SMTP_TLS",
                    reason: format!("{other:?} is not one of starttls, tls, none"),
                })
            }
        }
        .map_err(|e| ConfigError::Invalid {
            name: "SMTP_HOST",
            reason: e.to_string(),
        })?;
        let default_port = if tls == "tls" { 465 } else { 587 };
        let mut builder = builder
            .port(env.number_in("SMTP_PORT", default_port, 1..=65535)?)
            .timeout(Some(Duration::from_secs(10)));
        if !secret.smtp_user.is_empty() {
            builder = builder.credentials(Credentials::new(
                secret.smtp_user.clone(),
                secret.smtp_password.clone(),
            ));
        }
        Ok(builder.build())
    }

    /// Sends `email` to `to`; does nothing (and says so in the log) when sending is off.
    pub async fn send(&self, to: &str, email: Email) -> Result<(), ApiError> {
        let Some(transport) = &self.transport else {
            tracing::info!("SMTP_HOST is not set: email not sent");
            return Ok(());
        };
        let to: Mailbox = to
            .parse()
            .map_err(|e| ApiError::internal(format!("recipient address: {e}")))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(email.subject)
            .multipart(
                MultiPart::alternative()
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_PLAIN)
                            .body(email.text),
                    )
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(email.html),
                    ),
            )
            .map_err(|e| ApiError::internal(format!("building an email: {e}")))?;
        transport
            .send(message)
            .await
            .map_err(|e| ApiError::Unavailable(format!("sending an email: {e}")))?;
        Ok(())
    }

    /// The link in a password email: `{FRONTEND_HOST}/reset-password?token=...`.
    pub fn reset_link(&self, token: &str) -> String {
        format!("{}/reset-password?token={token}", self.frontend_host)
    }

    pub fn reset_password_email(&self, email: &str, token: &str, valid_minutes: u64) -> Email {
        let link = self.reset_link(token);
        let project = &self.project_name;
        let (project_html, email_html, link_html) = (escape(project), escape(email), escape(&link));
        Email {
            subject: format!("{project} - Password recovery for user {email}"),
            text: format!(
                "Hello,\n\nWe received a request to reset the password of your {project} account ({email}).\n\
                 Open this link to choose a new password:\n\n{link}\n\n\
                 The link works once and expires in {valid_minutes} minutes.\n\
                 If you did not ask for this, ignore this email: your password stays as it is.\n"
            ),
            html: format!(
                "<!doctype html><html><body style=\"font-family: sans-serif\">\
                 <p>Hello,</p>\
                 <p>We received a request to reset the password of your {project_html} account (<b>{email_html}</b>).</p>\
                 <p><a href=\"{link_html}\">Reset your password</a></p>\
                 <p>The link works once and expires in {valid_minutes} minutes.</p>\
                 <p>If you did not ask for this, ignore this email: your password stays as it is.</p>\
                 </body></html>"
            ),
        }
    }

    /// Sent to the old address when an account's email changes: a stolen session cannot move
    /// an account to another address without its owner hearing of it.
    pub fn email_changed_email(&self, old_email: &str) -> Email {
        let project = &self.project_name;
        let (project_html, email_html) = (escape(project), escape(old_email));
        Email {
            subject: format!("{project} - The email address of your account changed"),
            text: format!(
                "Hello,\n\nThe email address of your {project} account ({old_email}) was just changed; \
                 this address no longer signs in.\n\
                 If you did not do this, contact your administrator at once.\n"
            ),
            html: format!(
                "<!doctype html><html><body style=\"font-family: sans-serif\">\
                 <p>Hello,</p>\
                 <p>The email address of your {project_html} account (<b>{email_html}</b>) was just changed; \
                 this address no longer signs in.</p>\
                 <p>If you did not do this, contact your administrator at once.</p>\
                 </body></html>"
            ),
        }
    }

    /// Sent when a superuser creates an account: a link to choose a password (never the password).
    pub fn new_account_email(&self, email: &str, token: &str, valid_minutes: u64) -> Email {
        let link = self.reset_link(token);
        let project = &self.project_name;
        let (project_html, email_html, link_html) = (escape(project), escape(email), escape(&link));
        Email {
            subject: format!("{project} - New account for user {email}"),
            text: format!(
                "Hello,\n\nAn account on {project} was created for you: {email}.\n\
                 Choose your password with this link (valid {valid_minutes} minutes, once):\n\n{link}\n\n\
                 Afterwards, sign in at {}.\n",
                self.frontend_host
            ),
            html: format!(
                "<!doctype html><html><body style=\"font-family: sans-serif\">\
                 <p>Hello,</p>\
                 <p>An account on {project_html} was created for you: <b>{email_html}</b>.</p>\
                 <p><a href=\"{link_html}\">Choose your password</a> (valid {valid_minutes} minutes, once).</p>\
                 <p>Afterwards, sign in at <a href=\"{host}\">{host}</a>.</p>\
                 </body></html>",
                host = escape(&self.frontend_host)
            ),
        }
    }
}

fn escape(text: &str) -> String {
    html_escape::encode_double_quoted_attribute(text).into_owned()
}
