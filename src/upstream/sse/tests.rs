use super::*;
use futures::StreamExt;
use proptest::prelude::*;

fn parse_all(pieces: &[&[u8]]) -> Result<Vec<SseEvent>, SseError> {
    let mut parser = SseParser::new(1 << 16);
    let mut events = Vec::new();
    for piece in pieces {
        parser.feed(piece)?;
        while let Some(event) = parser.next_event() {
            events.push(event);
        }
    }
    Ok(events)
}

fn data(text: &str) -> SseEvent {
    SseEvent {
        data: Bytes::copy_from_slice(text.as_bytes()),
        ..SseEvent::default()
    }
}

#[test]
fn lf_crlf_and_cr_line_ends() {
    for stream in [
        &b"data: a\n\ndata: b\n\n"[..],
        b"data: a\r\n\r\ndata: b\r\n\r\n",
        b"data: a\r\rdata: b\r\r",
    ] {
        assert_eq!(
            parse_all(&[stream]).unwrap(),
            [data("a"), data("b")],
            "{stream:?}"
        );
    }
}

#[test]
fn a_crlf_split_across_reads_is_one_line_end() {
    assert_eq!(
        parse_all(&[b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]).unwrap(),
        [data("a\nb")]
    );
}

#[test]
fn multi_line_data_is_joined_with_newlines() {
    assert_eq!(
        parse_all(&[b"data: one\ndata: two\ndata\n\n"]).unwrap(),
        [data("one\ntwo\n")]
    );
}

#[test]
fn comments_and_keep_alives_are_ignored() {
    let stream = b": OPENROUTER PROCESSING\n\n:\n\ndata: x\n: between\n\n";
    assert_eq!(parse_all(&[stream]).unwrap(), [data("x")]);
}

#[test]
fn a_leading_bom_is_skipped_even_when_split() {
    assert_eq!(
        parse_all(&[b"\xEF\xBB\xBFdata: x\n\n"]).unwrap(),
        [data("x")]
    );
    assert_eq!(
        parse_all(&[b"\xEF", b"\xBB", b"\xBFdata: x\n\n"]).unwrap(),
        [data("x")]
    );
    // A BOM is only skipped at the very start.
    let later = parse_all(&[b"data: x\n\n\xEF\xBB\xBFdata: y\n\n"]).unwrap();
    assert_eq!(later, [data("x")]);
}

#[test]
fn utf8_split_across_reads_is_reassembled() {
    let text = "data: héllo 🌍\n\n".as_bytes();
    let at = text.iter().position(|&b| b == 0xF0).unwrap() + 2;
    assert_eq!(
        parse_all(&[&text[..at], &text[at..]]).unwrap(),
        [data("héllo 🌍")]
    );
}

#[test]
fn field_forms() {
    let events = parse_all(&[b"event: error\nid: 7\ndata:no-space\n\ndata: y\n\n"]).unwrap();
    assert_eq!(
        events[0],
        SseEvent {
            event: "error".into(),
            data: "no-space".into(),
            id: Some("7".into())
        }
    );
    // The id persists; the event type does not.
    assert_eq!(
        events[1],
        SseEvent {
            event: String::new(),
            data: "y".into(),
            id: Some("7".into())
        }
    );
}

#[test]
fn an_unterminated_event_is_not_dispatched() {
    let mut parser = SseParser::new(1024);
    parser.feed(b"data: {\"partial\"").unwrap();
    assert!(parser.next_event().is_none());
    assert!(parser.has_partial());
    let mut parser = SseParser::new(1024);
    parser.feed(b"data: x\n").unwrap();
    assert!(parser.next_event().is_none());
    assert!(parser.has_partial());
}

#[test]
fn long_lines_and_events_are_refused() {
    let mut parser = SseParser::new(16);
    assert_eq!(
        parser.feed(b"data: 0123456789abcdef\n"),
        Err(SseError::LineTooLong { limit: 16 })
    );
    let mut parser = SseParser::new(16);
    parser.feed(b"data: 01234567").unwrap();
    assert_eq!(
        parser.feed(b"89abcdef"),
        Err(SseError::LineTooLong { limit: 16 })
    );
    let mut parser = SseParser::new(16);
    parser.feed(b"data: 0123456\ndata: 0123456\n").unwrap();
    assert_eq!(
        parser.feed(b"data: 0123456\n"),
        Err(SseError::LineTooLong { limit: 16 })
    );
}

#[test]
fn invalid_utf8_is_an_error() {
    assert_eq!(
        parse_all(&[b"data: \xFF\xFE\n\n"]),
        Err(SseError::InvalidUtf8)
    );
}

#[test]
fn done_is_plain_data() {
    assert_eq!(parse_all(&[b"data: [DONE]\n\n"]).unwrap(), [data("[DONE]")]);
}

#[tokio::test]
async fn the_stream_adapter_ends_after_an_error() {
    let body = futures::stream::iter(vec![
        Ok::<_, std::io::Error>(Bytes::from_static(b"data: a\n\ndata: \xFF\n\ndata: b\n\n")),
        Ok(Bytes::from_static(b"data: c\n\n")),
    ]);
    let items: Vec<_> = sse_events(body, 1024).collect().await;
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].as_ref().unwrap(), &data("a"));
    assert!(matches!(
        items[1],
        Err(SseStreamError::Parse(SseError::InvalidUtf8))
    ));
}

#[tokio::test]
async fn the_stream_adapter_reports_body_errors() {
    let body = futures::stream::iter(vec![
        Ok(Bytes::from_static(b"data: a\n\n")),
        Err(std::io::Error::other("reset")),
    ]);
    let items: Vec<_> = sse_events(body, 1024).collect().await;
    assert!(matches!(items[1], Err(SseStreamError::Body(_))));
    assert_eq!(items.len(), 2);
}

/// A generated event and its serialization with random line ends,
/// comments and field forms.
fn arb_stream() -> impl Strategy<Value = (Vec<SseEvent>, Vec<u8>)> {
    let line = "[a-zA-Z0-9 {}\":,é漢🌍\\[\\]]{0,20}";
    let event = (
        proptest::collection::vec(line, 1..4),
        proptest::option::of("[a-z]{1,8}"),
        proptest::option::of("[0-9]{1,4}"),
        proptest::bool::ANY,
    );
    (
        proptest::collection::vec((event, proptest::collection::vec(0..3usize, 8)), 0..6),
        proptest::bool::ANY,
    )
        .prop_map(|(events, bom)| {
            let mut bytes = Vec::new();
            if bom {
                bytes.extend_from_slice(BOM);
            }
            let mut expected = Vec::new();
            let mut last_id = None;
            for ((lines, event, id, comment), ends) in events {
                let mut ends = ends.into_iter().cycle();
                let mut end = |bytes: &mut Vec<u8>| {
                    let choice: &[u8] = match ends.next().unwrap() {
                        0 => b"\n",
                        1 => b"\r\n",
                        _ => b"\r",
                    };
                    // An LF right after a CR would merge two line ends into
                    // one CRLF: the stream would mean something else.
                    let choice: &[u8] = if bytes.last() == Some(&b'\r') && choice[0] == b'\n' {
                        b"\r"
                    } else {
                        choice
                    };
                    bytes.extend_from_slice(choice)
                };
                if comment {
                    bytes.extend_from_slice(b": OPENROUTER PROCESSING");
                    end(&mut bytes);
                }
                if let Some(event) = &event {
                    bytes.extend_from_slice(format!("event: {event}").as_bytes());
                    end(&mut bytes);
                }
                if let Some(id) = &id {
                    bytes.extend_from_slice(format!("id:{id}").as_bytes());
                    end(&mut bytes);
                    last_id = Some(id.clone());
                }
                for line in &lines {
                    bytes.extend_from_slice(format!("data: {line}").as_bytes());
                    end(&mut bytes);
                }
                end(&mut bytes);
                expected.push(SseEvent {
                    event: event.unwrap_or_default(),
                    data: lines.join("\n").into(),
                    id: last_id.clone(),
                });
            }
            (expected, bytes)
        })
}

fn split_at_points(bytes: &[u8], mut cuts: Vec<usize>) -> Vec<&[u8]> {
    cuts.iter_mut().for_each(|cut| *cut %= bytes.len() + 1);
    cuts.sort_unstable();
    let mut pieces = Vec::new();
    let mut start = 0;
    for cut in cuts {
        pieces.push(&bytes[start..cut]);
        start = cut;
    }
    pieces.push(&bytes[start..]);
    pieces
}

proptest! {
    #[test]
    fn any_split_gives_the_same_events(
        (expected, bytes) in arb_stream(),
        cuts in proptest::collection::vec(0..10_000usize, 0..12),
    ) {
        let whole = parse_all(&[&bytes]).unwrap();
        prop_assert_eq!(&whole, &expected);
        let pieces = split_at_points(&bytes, cuts);
        prop_assert_eq!(parse_all(&pieces).unwrap(), expected);
    }

    #[test]
    fn byte_by_byte_gives_the_same_events((expected, bytes) in arb_stream()) {
        let pieces: Vec<&[u8]> = bytes.chunks(1).collect();
        prop_assert_eq!(parse_all(&pieces).unwrap(), expected);
    }

    #[test]
    fn the_stream_adapter_agrees(
        (expected, bytes) in arb_stream(),
        cuts in proptest::collection::vec(0..10_000usize, 0..12),
    ) {
        let pieces: Vec<Result<Bytes, std::io::Error>> = split_at_points(&bytes, cuts)
            .into_iter()
            .map(|piece| Ok(Bytes::copy_from_slice(piece)))
            .collect();
        let events: Vec<SseEvent> = futures::executor::block_on(
            sse_events(futures::stream::iter(pieces), 1 << 16).map(Result::unwrap).collect(),
        );
        prop_assert_eq!(events, expected);
    }
}
