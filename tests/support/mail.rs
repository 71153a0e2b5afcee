//! The SMTP sink's side: addresses of a test's own, and the mail sent to them.

use crate::stack::stack_var;

/// An address no other test uses, so each test finds its own mail in the shared sink.
pub fn unique_email(prefix: &str) -> String {
    format!("{prefix}-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// Messages the SMTP sink received for `recipient`, oldest first, as (subject, text body).
pub fn mail_to(recipient: &str) -> Vec<(String, String)> {
    let dir = std::path::PathBuf::from(stack_var("SMTP_SINK_DIR"));
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .filter_map(|path| {
            let raw = std::fs::read(path).ok()?;
            let message = mail_parser::MessageParser::default().parse(&raw)?;
            let to_us = message
                .header_raw("X-Envelope-To")
                .is_some_and(|to| to.contains(recipient));
            to_us.then(|| {
                (
                    message.subject().unwrap_or_default().to_owned(),
                    message.body_text(0).unwrap_or_default().into_owned(),
                )
            })
        })
        .collect()
}

/// The token in a `...reset-password?token=...` link.
pub fn token_in(text: &str) -> String {
    let start = text.find("token=").expect("a link with a token") + "token=".len();
    text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect()
}
