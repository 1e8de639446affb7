"""A team that already uses the official OpenAI Python SDK points its
base_url at the sidecar's HTTP facade: chats, streams, tool calls and the
SDK's own error classes must work unchanged. The real binary runs in front
of the real fake-upstream binary; each request scripts the upstream with
extra_body={"fake": {...}}."""

import json
import os
import pathlib
import socket
import subprocess
import tempfile
import time
import urllib.request

import openai
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
UPSTREAM_KEY = "sk-test-python-0123456789abcdef"


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(ready, process, what):
    deadline = time.monotonic() + 20
    while not ready():
        assert process.poll() is None, f"{what} exited during start-up"
        assert time.monotonic() < deadline, f"{what} did not start"
        time.sleep(0.05)


def answers(url):
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def facade():
    """The fake upstream and llm-sidecar with its HTTP facade on a free
    port; yields the facade's base URL."""
    sidecar_bin = pathlib.Path(
        os.environ.get("LLM_SIDECAR_BIN", ROOT / "target/debug/llm-sidecar")
    )
    fake_bin = sidecar_bin.parent / "fake-upstream"
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="llm-sidecar-openai-"))
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["LLM_SIDECAR_LOG"] = "warn"
    env["RUST_LOG"] = "warn"
    env["FAKE_KEY"] = UPSTREAM_KEY

    fake_port = free_port()
    fake = subprocess.Popen(
        [str(fake_bin), "--listen", f"127.0.0.1:{fake_port}"],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    processes = [fake]
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{fake_port}/v1/models"), fake, "fake-upstream")
        http_port = free_port()
        config = workdir / "sidecar.toml"
        config.write_text(
            f"""
[server]
uds = "{workdir / 'sidecar.sock'}"
tcp = ""
http = "127.0.0.1:{http_port}"

[ledger]
path = "{workdir / 'ledger.sqlite'}"

[providers.fake]
base_url = "http://127.0.0.1:{fake_port}/v1"
api_key_env = "FAKE_KEY"
circuit_failures = 0

[[routes]]
model = "fake-*"
provider = "fake"
"""
        )
        sidecar = subprocess.Popen(
            [str(sidecar_bin), "serve", "--config", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        processes.append(sidecar)
        base = f"http://127.0.0.1:{http_port}/v1"
        wait_until(lambda: answers(f"{base}/models"), sidecar, "llm-sidecar")
        yield base
        sidecar.terminate()
        assert sidecar.wait(timeout=20) == 0
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=20)


@pytest.fixture()
def client(facade):
    # The sidecar holds the real keys; the SDK insists on one of its own.
    # One attempt on each side: these tests are about what one call returns.
    with openai.OpenAI(
        base_url=facade,
        api_key="unused-by-the-sidecar",
        max_retries=0,
        default_headers={"x-llm-max-attempts": "1"},
    ) as client:
        yield client


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
    assert error.value.type == "rate_limit_error"
    assert error.value.code == "upstream_rate_limited"


def test_bad_request_is_bad_request_error(client):
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="fake-model", messages=[])
    assert "`messages` is empty" in error.value.message
    assert error.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(
            model="fake-model", messages=[{"role": "robot", "content": "hi"}]
        )
    assert error.value.param == "messages[0].role"


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


def test_our_upstream_key_failing_is_not_the_callers_auth_error(client):
    """Upstream 401 is *our* key failing (the table maps it to 502), so the
    SDK must not raise AuthenticationError, which would send the caller
    looking at its own key; and our key never shows."""
    with pytest.raises(openai.APIStatusError) as error:
        client.chat.completions.create(
            model="fake-model",
            messages=user("hi"),
            extra_body={"fake": {"status": 401, "error_message": f"bad key {UPSTREAM_KEY}"}},
        )
    assert not isinstance(error.value, (openai.AuthenticationError, openai.PermissionDeniedError))
    assert isinstance(error.value, openai.InternalServerError)
    assert error.value.status_code == 502
    assert error.value.code == "upstream_auth_failed"
    assert UPSTREAM_KEY not in error.value.message
    assert UPSTREAM_KEY not in error.value.response.text


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


def test_models(client):
    models = {model.id: model for model in client.models.list()}
    assert models["fake-*"].owned_by == "fake"
    assert models["fake-*"].object == "model"
    assert client.models.retrieve("fake-*").owned_by == "fake"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
