use super::*;
use serde_json::json;

#[test]
fn secrets_and_marked_tokens_are_replaced() {
    let scrubber = Scrubber::new(["custom-secret-value", "hdr-secret-0042"]);
    let text = "bad key custom-secret-value; Incorrect API key provided: sk-abc123xyz. \
                Bearer tok3nvalue, x=hdr-secret-0042";
    let clean = scrubber.scrub(text);
    for secret in [
        "custom-secret-value",
        "abc123xyz",
        "tok3nvalue",
        "hdr-secret-0042",
    ] {
        assert!(!clean.contains(secret), "{clean}");
    }
    assert!(
        clean.contains("Incorrect API key provided: sk-<redacted>"),
        "{clean}"
    );
}

#[test]
fn nothing_to_scrub_borrows() {
    let scrubber = Scrubber::new(["custom-secret-value"]);
    assert!(matches!(
        scrubber.scrub("task-list is fine"),
        Cow::Borrowed(_)
    ));
    assert!(matches!(
        Scrubber::default().scrub("plain"),
        Cow::Borrowed(_)
    ));
    // Already scrubbed text stays as it is.
    let once = scrubber.scrub("Bearer custom-secret-value").into_owned();
    assert_eq!(scrubber.scrub(&once), once);
}

#[test]
fn short_values_are_not_secrets() {
    let scrubber = Scrubber::new(["my-app", "1234567"]);
    assert!(scrubber.is_empty());
    assert_eq!(scrubber.scrub("my-app 1234567"), "my-app 1234567");
}

#[test]
fn a_secret_with_a_delimiter_inside_leaves_no_tail() {
    // The marker's token would end at the comma; the secret goes first.
    let scrubber = Scrubber::new(["sk-abcd,efgh-ijkl"]);
    let clean = scrubber.scrub("got sk-abcd,efgh-ijkl here");
    assert_eq!(clean, "got <redacted> here");
}

#[test]
fn the_longest_secret_wins_where_two_overlap() {
    let scrubber = Scrubber::new(["secret-abcdef", "secret-abcdef-longer"]);
    assert_eq!(
        scrubber.scrub("a secret-abcdef-longer b secret-abcdef"),
        "a <redacted> b <redacted>"
    );
}

#[test]
fn json_strings_and_keys_are_scrubbed_at_any_depth() {
    let scrubber = Scrubber::new(["custom-secret-value"]);
    let mut value = json!({
        "message": "key custom-secret-value",
        "custom-secret-value": 1,
        "metadata": {"raw": ["x", "custom-secret-value"], "n": 3},
    });
    scrubber.scrub_json(&mut value);
    let text = value.to_string();
    assert!(!text.contains("custom-secret-value"), "{text}");
    assert_eq!(value["metadata"]["n"], 3);
    assert!(value.get(REDACTED).is_some(), "{text}");
}

#[test]
fn header_values_are_scrubbed_or_left_alone() {
    let scrubber = Scrubber::new(["custom-secret-value"]);
    let dirty = HeaderValue::from_static("echo custom-secret-value");
    assert_eq!(scrubber.scrub_header(&dirty).unwrap(), "echo <redacted>");
    assert!(
        scrubber
            .scrub_header(&HeaderValue::from_static("42"))
            .is_none()
    );
}

#[test]
fn a_union_knows_every_secret() {
    let a = Scrubber::new(["first-secret-aaaa"]);
    let b = Scrubber::new(["second-secret-bbbb", "first-secret-aaaa"]);
    let both = Scrubber::union([&a, &b]);
    assert_eq!(both.len(), 2);
    assert_eq!(
        both.scrub("first-secret-aaaa second-secret-bbbb"),
        "<redacted> <redacted>"
    );
}
