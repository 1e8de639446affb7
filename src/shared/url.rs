//! The store's URL: where it is read from, and the forms of its password
//! that must never reach a log line or an error.

use crate::config::{ConfigError, Env, SharedConfig, SharedUrl};
use crate::secret::{Scrubber, load_key};

/// The URL as configured: inline, from the file (a mounted Secret) or
/// from the environment variable. An error names the key and the file or
/// variable, never the URL.
pub fn load(config: &SharedConfig, env: Env<'_>, source: &str) -> Result<String, ConfigError> {
    let error = |key: &str, message: String| ConfigError {
        file: source.to_owned(),
        key: key.to_owned(),
        message,
    };
    let url = match &config.url {
        SharedUrl::Inline(url) => url.clone(),
        SharedUrl::Loaded(from) => {
            let key = if from.file.is_some() {
                "shared.redis_url_file"
            } else {
                "shared.redis_url_env"
            };
            load_key(from, env)
                .map_err(|message| error(key, message))?
                .ok_or_else(|| error(key, "holds no URL (the variable is unset or empty)".into()))?
                .expose()
                .to_owned()
        }
    };
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(error(
            "shared",
            "the URL must start with redis:// (or rediss:// for TLS)".into(),
        ));
    }
    Ok(url)
}

/// Scrubs the URL's password (as written and percent-decoded), its user
/// info and the whole URL.
pub fn scrubber_for(url: &str) -> Scrubber {
    let mut secrets = vec![url.to_owned()];
    if let Ok(parsed) = reqwest::Url::parse(url)
        && let Some(password) = parsed.password()
    {
        secrets.push(password.to_owned());
        if let Ok(decoded) = percent_decode(password) {
            secrets.push(decoded);
        }
        secrets.push(format!("{}:{password}", parsed.username()));
    }
    Scrubber::new(secrets)
}

/// `%XX` escapes decoded (a password with `@` or `:` is written escaped).
fn percent_decode(text: &str) -> Result<String, std::string::FromUtf8Error> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let hex = bytes
            .get(at + 1..at + 3)
            .and_then(|pair| std::str::from_utf8(pair).ok())
            .and_then(|pair| u8::from_str_radix(pair, 16).ok());
        match (bytes[at], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                at += 3;
            }
            (byte, _) => {
                out.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_in_every_form_is_scrubbed() {
        let url = "redis://app:s3cret%40pass-0123456789@redis.internal:6379/0";
        let scrubber = scrubber_for(url);
        for text in [
            "connect redis://app:s3cret%40pass-0123456789@redis.internal:6379/0 failed",
            "WRONGPASS s3cret@pass-0123456789",
            "auth s3cret%40pass-0123456789",
        ] {
            let scrubbed = scrubber.scrub(text);
            assert!(!scrubbed.contains("s3cret"), "{scrubbed}");
        }
    }
}
