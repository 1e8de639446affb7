"""The facade is lossless for real clients: what the official OpenAI SDK
(and LangChain on top of it) sends reaches the upstream unchanged, what the
upstream answers reaches the SDK's typed objects, and upstream errors keep
the upstream's words, status and headers.

The fake upstream records every request it receives; these tests read the
recording from outside at GET /_fake/requests (clearing it with DELETE
before each test) and compare it with the bytes the SDK put on the wire."""

import base64
import json

import openai
import pytest

MODEL = "fake-model"

# Fields the sidecar owns on the way up (src/inbound/openai_http/request.rs):
# `model` may be rewritten by a route, `stream` and `stream_options` are set
# by the sidecar for its own reading of the answer.
OWNED = ("model", "stream", "stream_options")


@pytest.fixture(autouse=True)
def fresh_recording(stack):
    stack.clear_recording()


def chat_bodies(stack):
    """Bodies of the chat requests the fake upstream received, in order."""
    return [r["body"] for r in stack.chat_requests()]


def without_owned(body):
    return {k: v for k, v in body.items() if k not in OWNED}


PDF = "data:application/pdf;base64," + base64.b64encode(b"%PDF-1.4\n%%EOF\n").decode()
WAV = base64.b64encode(b"RIFF\x24\x00\x00\x00WAVEfmt ").decode()

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}

CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
}

# Each case: the create() arguments besides model. Shapes a typed proxy would
# drop or refuse: newer content parts and tools, provider extensions.
SHAPES = {
    "file_part": {
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "summarise"},
            {"type": "file", "file": {"filename": "a.pdf", "file_data": PDF}},
        ]}],
    },
    "input_audio_part": {
        "messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": WAV, "format": "wav"}},
        ]}],
    },
    "custom_tool": {
        "messages": [{"role": "user", "content": "run it"}],
        "tools": [{"type": "custom", "custom": {
            "name": "code_exec", "description": "Runs Python code and returns stdout"}}],
    },
    "allowed_tools_choice": {
        "messages": [{"role": "user", "content": "weather in Paris?"}],
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "allowed_tools", "allowed_tools": {
            "mode": "auto",
            "tools": [{"type": "function", "function": {"name": "get_weather"}}]}},
    },
    "assistant_refusal_part": {
        "messages": [
            {"role": "user", "content": "something forbidden"},
            {"role": "assistant", "content": [
                {"type": "refusal", "refusal": "I can't help with that."}]},
            {"role": "user", "content": "then something else"},
        ],
    },
    "legacy_function_role": {
        "messages": [
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": None,
             "function_call": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"role": "function", "name": "get_weather", "content": '{"temp":21}'},
        ],
        "functions": [WEATHER_TOOL["function"]],
    },
    "empty_tool_result": {
        "messages": [
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": ""},
        ],
        "tools": [WEATHER_TOOL],
    },
    "cache_control": {
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "a long shared prefix",
             "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "the question"},
        ]}],
        "tools": [dict(WEATHER_TOOL, cache_control={"type": "ephemeral", "ttl": "1h"})],
    },
    "reasoning_content_history": {
        "messages": [
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4",
             "reasoning_content": "Two and two make four."},
            {"role": "user", "content": "and 3+3?"},
        ],
    },
    # A role the sidecar does not know is the provider's to judge.
    "unknown_role": {
        "messages": [{"role": "robot", "content": "beep"}],
    },
    "gemini_extra_content_on_tool_call": {
        "messages": [
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [dict(
                CALL, extra_content={"google": {"thought_signature": "c2lnbmF0dXJl"}})]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp":21}'},
        ],
        "tools": [WEATHER_TOOL],
    },
}


@pytest.mark.parametrize("shape", SHAPES, ids=list(SHAPES))
def test_request_shape_reaches_the_upstream_unchanged(client, stack, shape):
    arguments = SHAPES[shape]
    raw = client.chat.completions.with_raw_response.create(model=MODEL, **arguments)
    assert raw.http_response.status_code == 200
    assert raw.parse().choices[0].message.role == "assistant"

    sent = json.loads(raw.http_request.content)
    # The SDK itself sent the shape as written, so the comparison below is
    # about the sidecar, not about what the SDK keeps.
    assert sent == dict(arguments, model=MODEL)
    [received] = chat_bodies(stack)
    assert received["model"] == MODEL
    assert without_owned(received) == without_owned(sent)


TOP_LOGPROBS = [
    {"token": "Hi", "logprob": -0.01, "bytes": [72, 105]},
    {"token": "Hey", "logprob": -4.6, "bytes": [72, 101, 121]},
]
LOGPROBS = {
    "content": [{"token": "Hi", "logprob": -0.01, "bytes": [72, 105],
                 "top_logprobs": TOP_LOGPROBS}],
    "refusal": None,
}


def completion(message, **extra):
    return {
        "id": "chatcmpl-lossless",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        **extra,
    }


def test_logprobs_and_unknown_fields_reach_the_sdk(client):
    body = completion(
        {"role": "assistant", "content": "Hi", "refusal": None},
        system_fingerprint="fp_lossless",
        service_tier="default",
        provider_extension={"region": "eu"},
    )
    body["choices"][0]["logprobs"] = LOGPROBS
    body["choices"][0]["choice_extension"] = "kept"
    response = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        logprobs=True,
        top_logprobs=2,
        extra_body={"fake": {"raw_body": body}},
    )
    choice = response.choices[0]
    first = choice.logprobs.content[0]
    assert (first.token, first.logprob, first.bytes) == ("Hi", -0.01, [72, 105])
    assert first.top_logprobs[0].token == "Hi"
    assert first.top_logprobs[1].token == "Hey"
    assert first.top_logprobs[1].logprob == -4.6
    assert response.system_fingerprint == "fp_lossless"
    assert response.service_tier == "default"
    assert response.model_extra == {"provider_extension": {"region": "eu"}}
    assert choice.model_extra == {"choice_extension": "kept"}


def chunk(delta, finish=None, logprobs=None, **extra):
    return {
        "id": "chatcmpl-lossless",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": MODEL,
        "system_fingerprint": "fp_lossless",
        "service_tier": "default",
        "choices": [{"index": 0, "delta": delta, "logprobs": logprobs,
                     "finish_reason": finish}],
        **extra,
    }


def test_streamed_logprobs_and_unknown_fields_reach_the_sdk(client):
    events = [
        chunk({"role": "assistant", "content": "Hi"}, logprobs=LOGPROBS,
              provider_extension={"region": "eu"}),
        chunk({}, finish="stop"),
        # What an upstream sends last when asked for usage (the sidecar asks).
        {"id": "chatcmpl-lossless", "object": "chat.completion.chunk",
         "created": 1_700_000_000, "model": MODEL, "choices": [],
         "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}},
        "[DONE]",
    ]
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        logprobs=True,
        top_logprobs=2,
        extra_body={"fake": {"raw_events": events}},
    )
    chunks = list(stream)
    assert len(chunks) == 2, "the usage chunk nobody asked for is dropped"
    first = chunks[0].choices[0].logprobs.content[0]
    assert first.token == "Hi"
    assert [t.token for t in first.top_logprobs] == ["Hi", "Hey"]
    assert chunks[0].system_fingerprint == "fp_lossless"
    assert chunks[0].service_tier == "default"
    assert chunks[0].model_extra == {"provider_extension": {"region": "eu"}}
    assert chunks[1].choices[0].finish_reason == "stop"


def test_null_tool_calls_is_a_normal_answer(client):
    body = completion({"role": "assistant", "content": "no tools needed",
                       "tool_calls": None, "function_call": None})
    response = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        extra_body={"fake": {"raw_body": body}},
    )
    message = response.choices[0].message
    assert message.content == "no tools needed"
    assert message.tool_calls is None


def test_null_tool_calls_in_a_stream_is_a_normal_answer(client):
    events = [
        chunk({"role": "assistant", "content": "no tools", "tool_calls": None}),
        chunk({"tool_calls": None}, finish="stop"),
        "[DONE]",
    ]
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        extra_body={"fake": {"raw_events": events}},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "no tools"
    assert all(c.choices[0].delta.tool_calls is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


CONTEXT_LENGTH = {
    "error": {
        "message": "This model's maximum context length is 8192 tokens. However, your "
                   "messages resulted in 9000 tokens. Please reduce the length of the "
                   "messages.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
}
CONTEXT_LENGTH_SCENARIO = {"status": 400, "error_body": CONTEXT_LENGTH}


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_context_length_error_keeps_the_upstreams_words(client, stream):
    with pytest.raises(openai.BadRequestError) as error:
        client.with_options(max_retries=0).chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "a very long prompt"}],
            stream=stream,
            extra_body={"fake": CONTEXT_LENGTH_SCENARIO},
        )
    assert error.value.status_code == 400
    assert error.value.code == "context_length_exceeded"
    assert error.value.param == "messages"
    assert error.value.type == "invalid_request_error"
    # The SDK prefixes the status to the upstream's message.
    assert error.value.message.endswith(CONTEXT_LENGTH["error"]["message"])
    assert error.value.body == CONTEXT_LENGTH["error"]
    assert error.value.response.json() == CONTEXT_LENGTH
    assert error.value.response.headers["x-llm-error-reason"] == "UPSTREAM_CONTEXT_LENGTH"


def test_rate_limit_keeps_the_upstreams_headers(client):
    scenario = {
        "status": 429,
        "headers": {"x-ratelimit-remaining-requests": "0", "x-request-id": "req_abc"},
    }
    with pytest.raises(openai.RateLimitError) as error:
        client.with_options(max_retries=0).chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"fake": scenario},
        )
    headers = error.value.response.headers
    assert error.value.status_code == 429
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-upstream-request-id"] == "req_abc"
    # The caller's own x-request-id stays the sidecar's id for this call.
    assert headers["x-request-id"] != "req_abc"


def langchain_error(base_url, api_key):
    """What LangChain raises for the context-length 400 from `base_url`."""
    from langchain_openai import ChatOpenAI

    model = ChatOpenAI(
        base_url=base_url,
        api_key=api_key,
        model=MODEL,
        max_retries=0,
        extra_body={"fake": CONTEXT_LENGTH_SCENARIO},
    )
    with pytest.raises(Exception) as error:
        model.invoke("a very long prompt")
    return error.value


def test_langchain_sees_the_same_context_overflow_as_without_the_sidecar(stack):
    through_sidecar = langchain_error(stack.facade, stack.token)
    direct = langchain_error(stack.upstream, "unused-by-the-fake")
    # Whatever class this LangChain version maps context overflow to, the
    # sidecar must not change it (it is chosen from the upstream's words).
    assert type(through_sidecar) is type(direct)
    assert isinstance(direct, openai.BadRequestError)
    assert direct.code == "context_length_exceeded"
    assert through_sidecar.code == direct.code
    assert through_sidecar.body == direct.body
