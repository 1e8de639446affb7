"""A team that already uses the official OpenAI Python SDK points its
base_url at the sidecar's HTTP facade: chats, streams, tool calls and the
SDK's own error classes must work unchanged. The real binary runs in front
of the real fake-upstream binary (the `facade` fixture in conftest.py); each
request scripts the upstream with extra_body={"fake": {...}}."""

import json

import openai
import pytest


def user(text):
    return [{"role": "user", "content": text}]


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{name} for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    for name in ("get_weather", "get_time")
]


def test_chat(client):
    raw = client.chat.completions.with_raw_response.create(
        model="fake-model", messages=user("hello from the sdk")
    )
    assert raw.headers["x-llm-provider"] == "fake"
    assert raw.headers["x-llm-attempts"] == "1"
    assert raw.headers["x-llm-model"] == "fake-model"
    assert raw.headers["x-request-id"]
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "fake-model"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "hello from the sdk"
    assert choice.finish_reason == "stop"
    assert completion.usage.completion_tokens == 4
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 4


def test_streaming_chat_with_usage(client):
    stream = client.chat.completions.create(
        model="fake-model",
        messages=user("stream these five words please"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "stream these five words please"
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 5
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 5


def test_streaming_chat_as_in_the_sdk_readme(client):
    """Without stream_options every chunk has a choice, as with OpenAI, so
    the SDK README's `chunk.choices[0]` loop works."""
    stream = client.chat.completions.create(
        model="fake-model", messages=user("one two three"), stream=True
    )
    text = ""
    for chunk in stream:
        text += chunk.choices[0].delta.content or ""
        assert chunk.usage is None
    assert text == "one two three"


def test_tool_call(client):
    completion = client.chat.completions.create(
        model="fake-model",
        messages=user("weather and time in Paris?"),
        tools=TOOLS,
        extra_body={"fake": {"tool_calls": True}},
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert [call.function.name for call in calls] == ["get_weather", "get_time"]
    for call in calls:
        assert call.type == "function"
        assert call.id
        assert isinstance(json.loads(call.function.arguments), dict)


def test_streamed_tool_call(client):
    stream = client.chat.completions.create(
        model="fake-model",
        messages=user("weather and time in Paris?"),
        tools=TOOLS,
        stream=True,
        extra_body={"fake": {"tool_calls": True}},
    )
    calls = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
                call["id"] = delta.id or call["id"]
                if delta.id:
                    # The SDK's stream helpers need the kind on the opening piece.
                    assert delta.type == "function"
                if delta.function:
                    call["name"] += delta.function.name or ""
                    call["arguments"] += delta.function.arguments or ""
    assert finish == "tool_calls"
    assert [calls[i]["name"] for i in sorted(calls)] == ["get_weather", "get_time"]
    for call in calls.values():
        assert call["id"]
        assert isinstance(json.loads(call["arguments"]), dict)


def test_streamed_tool_call_through_the_sdk_stream_helper(client):
    # The helper assembles the calls itself and rejects pieces it cannot
    # place, so this is what Node and Python apps using `.stream()` see.
    with client.chat.completions.stream(
        model="fake-model",
        messages=user("weather and time in Paris?"),
        tools=TOOLS,
        extra_body={"fake": {"tool_calls": True}},
    ) as stream:
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert [call.function.name for call in calls] == ["get_weather", "get_time"]
    assert all(call.type == "function" for call in calls)


def test_rate_limit_is_rate_limit_error(client):
    with pytest.raises(openai.RateLimitError) as error:
        client.chat.completions.create(
            model="fake-model",
            messages=user("hi"),
            extra_body={"fake": {"status": 429, "retry_after": "3"}},
        )
    assert error.value.status_code == 429
    assert error.value.response.headers["retry-after"] == "3"
    # The upstream's own words (the fake's 429 says rate_limit_exceeded);
    # the sidecar's classification rides in a header.
    assert error.value.type == "rate_limit_error"
    assert error.value.code == "rate_limit_exceeded"
    assert error.value.response.headers["x-llm-error-reason"] == "UPSTREAM_RATE_LIMITED"


def test_bad_request_is_bad_request_error(client):
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="fake-model", messages=[])
    assert "`messages` is empty" in error.value.message
    assert error.value.param == "messages"
    # Only what the sidecar reads itself is checked (roles and the rest are
    # the provider's to judge, see test_lossless.py).
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="fake-model", messages=user("hi"), stream="yes")
    assert error.value.param == "stream"
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="fake-model", messages="hi")
    assert error.value.param == "messages"


def test_unknown_model_is_not_found_error(client):
    with pytest.raises(openai.NotFoundError) as error:
        client.chat.completions.create(model="no-such-model", messages=user("hi"))
    assert error.value.code == "model_not_routed"
    assert "no-such-model" in error.value.message


def test_upstream_outage_is_internal_server_error(client):
    for stream in (False, True):
        with pytest.raises(openai.InternalServerError) as error:
            client.chat.completions.create(
                model="fake-model",
                messages=user("hi"),
                stream=stream,
                extra_body={"fake": {"status": 503}},
            )
        assert error.value.status_code == 503
        assert error.value.type == "server_error"


def test_our_upstream_key_failing_is_not_the_callers_auth_error(client, upstream_key):
    """Upstream 401 is *our* key failing (the table maps it to 502), so the
    SDK must not raise AuthenticationError, which would send the caller
    looking at its own key; and our key never shows."""
    with pytest.raises(openai.APIStatusError) as error:
        client.chat.completions.create(
            model="fake-model",
            messages=user("hi"),
            extra_body={"fake": {"status": 401, "error_message": f"bad key {upstream_key}"}},
        )
    assert not isinstance(error.value, (openai.AuthenticationError, openai.PermissionDeniedError))
    assert isinstance(error.value, openai.InternalServerError)
    assert error.value.status_code == 502
    assert error.value.code == "upstream_auth_failed"
    assert upstream_key not in error.value.message
    assert upstream_key not in error.value.response.text


def test_a_stream_cut_midway_raises(client):
    stream = client.chat.completions.create(
        model="fake-model",
        messages=user("one two three four five"),
        stream=True,
        extra_body={"fake": {"cut_after": 2}},
    )
    text = ""
    with pytest.raises(openai.APIError) as error:
        for chunk in stream:
            text += chunk.choices[0].delta.content or ""
    assert text == "one two "
    assert "ended before completing" in error.value.message


def test_a_stream_cut_midway_is_resumed_as_one_answer(client):
    stream = client.chat.completions.create(
        model="resumed-model",
        messages=user("one two three four five"),
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"fake": {"cut_after": 2, "continue_prefill": True, "prompt_tokens": 10}},
    )
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "one two three four five"
    assert len({chunk.id for chunk in chunks}) == 1
    roles = [chunk for chunk in chunks if chunk.choices and chunk.choices[0].delta.role]
    assert len(roles) == 1
    # The continuation's 10 prompt tokens plus the cut attempt's estimate.
    assert chunks[-1].usage.prompt_tokens > 10


def test_models(client):
    page = client.models.list()
    # A pattern is not a model to pick: it is listed apart from `data`,
    # which holds the concrete names (here the built-in mock's).
    assert [model.id for model in page] == ["mock/echo"]
    patterns = page.model_extra["patterns"]
    assert {"pattern": "fake-*", "object": "model_pattern", "owned_by": "fake"} in patterns
    # A name the pattern takes is a model the sidecar serves.
    model = client.models.retrieve("fake-model")
    assert (model.id, model.owned_by, model.object) == ("fake-model", "fake", "model")
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_an_api_key_that_is_not_the_caller_token_is_an_authentication_error(facade):
    # An app still configured with a placeholder key, as before caller
    # tokens: the SDK's own class, with the reason, and nothing sent on.
    with openai.OpenAI(base_url=facade, api_key="unused", max_retries=0) as stranger:
        with pytest.raises(openai.AuthenticationError) as error:
            stranger.chat.completions.create(model="fake-model", messages=user("hi"))
    assert error.value.status_code == 401
    assert error.value.code == "token_invalid"
    assert "caller token" in error.value.message
