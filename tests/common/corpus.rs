//! The conformance corpus (`tests/conformance/corpus/*.json`, described in
//! `tests/conformance/README.md`): loading its cases, the fake-upstream
//! scenario that replays one, and the stream events a facade caller must
//! receive from it.

mod edits;

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Value, json};

/// One recorded exchange: what a caller sends and what the provider answers.
#[derive(Debug, Clone)]
pub struct Case {
    /// The file name without `.json`.
    pub name: String,
    /// Where the case comes from and what was constructed.
    pub source: String,
    /// The caller's request body (`"model": "fake-model"`).
    pub request: Value,
    /// The whole answer body of a unary case.
    pub response: Option<Value>,
    /// The SSE events of a stream case: a string is an event's data verbatim.
    pub events: Option<Vec<Value>>,
    /// `complete`, `finish_reasons` and `usage` the case reports.
    pub expect: Value,
}

/// The file as written; `provider` is only there for readers.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: String,
    source: String,
    #[allow(dead_code)]
    provider: String,
    request: Value,
    response: Option<Value>,
    events: Option<Vec<Value>>,
    expect: Value,
}

/// `tests/conformance/corpus` of this package.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/corpus")
}

/// Every case, sorted by name. Panics naming the file on a malformed case,
/// so a broken file fails every test that uses the corpus, loudly.
pub fn load_all() -> Vec<Case> {
    let dir = corpus_dir();
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read corpus dir {}: {e}", dir.display()));
    let mut paths: Vec<PathBuf> = entries
        .map(|entry| entry.expect("corpus dir entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    paths.sort();
    paths.iter().map(|path| load(path)).collect()
}

fn load(path: &Path) -> Case {
    let shown = path.display();
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {shown}: {e}"));
    let file: File =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("malformed case {shown}: {e}"));
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    assert_eq!(file.name, stem, "{shown}: name must equal the file name");
    assert!(
        file.response.is_some() != file.events.is_some(),
        "{shown}: a case has either `response` (unary) or `events` (stream)"
    );
    assert!(
        file.request.is_object() && file.expect.is_object(),
        "{shown}: `request` and `expect` must be objects"
    );
    Case {
        name: file.name,
        source: file.source,
        request: file.request,
        response: file.response,
        events: file.events,
        expect: file.expect,
    }
}

/// The fake-upstream scenario that replays `case`: its answer body as
/// `raw_body`, or its events as `raw_events`.
pub fn scenario(case: &Case) -> Value {
    match (&case.response, &case.events) {
        (Some(body), _) => json!({ "raw_body": body }),
        (None, Some(events)) => json!({ "raw_events": events }),
        (None, None) => unreachable!("load() checks a case has one of them"),
    }
}

/// What a facade caller must receive for `case`'s events, `[DONE]` included
/// as the string `"[DONE]"`, after the documented edits.
/// `caller_asked_usage` is the caller's `stream_options.include_usage`.
/// Panics if `case` is not a stream case.
pub fn expected_stream_events(case: &Case, caller_asked_usage: bool) -> Vec<Value> {
    edits::expected(case, caller_asked_usage)
}

/// Every choice seen in `events` got a finish reason (and one was seen).
pub fn stream_completed(events: &[Value]) -> bool {
    edits::completed(events)
}

/// The non-null finish reasons in `events`, in the order they appear.
pub fn finish_reasons(events: &[Value]) -> Vec<String> {
    edits::finish_reasons(events)
}
