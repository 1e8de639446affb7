"""The sidecar's retries and the caller's own, together: the official
openai SDK with its default retries, and grpcio with gRPC's built-in retry
policy, against the real sidecar in front of the fake upstream. What counts
is what reached the upstream (read back at GET /_fake/requests) and how
long the caller waited."""

import json
import pathlib
import subprocess
import sys
import time

import grpc
import httpx
import openai
import pytest
from google.protobuf import struct_pb2


@pytest.fixture(autouse=True)
def fresh_recording(stack):
    stack.clear_recording()


def user(text):
    return [{"role": "user", "content": text}]


def sdk(stack, **options):
    """The SDK as an app uses it: its default retries unless told."""
    return openai.OpenAI(base_url=stack.facade, api_key=stack.token, **options)


def test_a_failure_the_sidecar_already_retried_is_not_retried_by_the_sdk(stack):
    with sdk(stack) as client:  # max_retries=2, the SDK's default
        with pytest.raises(openai.InternalServerError) as error:
            client.chat.completions.create(
                model="fake-model",
                messages=user("hi"),
                extra_body={"fake": {"status": 503}},
            )
    headers = error.value.response.headers
    assert headers["x-should-retry"] == "false"
    assert headers["x-llm-attempts"] == "3"
    # The sidecar's three attempts and nothing more: without the header the
    # SDK would have sent the call twice more, 9 upstream requests in all.
    assert len(stack.chat_requests()) == 3


def test_an_error_no_retry_can_fix_tells_the_sdk_so(stack):
    with sdk(stack) as client:
        with pytest.raises(openai.BadRequestError) as error:
            client.chat.completions.create(
                model="fake-model",
                messages=user("hi"),
                extra_body={"fake": {"status": 400}},
            )
    assert error.value.response.headers["x-should-retry"] == "false"
    assert len(stack.chat_requests()) == 1


def test_a_long_retry_after_comes_back_at_once_to_a_caller_without_a_deadline(stack):
    # A plain HTTP caller: no timeout header, so no deadline the sidecar
    # could wait within. (The SDKs always send theirs; see below.)
    began = time.monotonic()
    response = httpx.post(
        f"{stack.facade}/chat/completions",
        headers={"authorization": f"Bearer {stack.token}"},
        json={"model": "fake-model", "messages": user("hi"),
              "fake": {"status": 429, "retry_after": "20"}},
        timeout=60,
    )
    assert time.monotonic() - began < 3, "the sidecar did not sit on a 20 s wait"
    assert response.status_code == 429
    assert response.headers["retry-after"] == "20"
    assert response.headers["x-llm-retry-stopped"] == "RETRY_AFTER_LEFT_TO_CALLER"
    # Waiting 20 s and trying again is the caller's to decide.
    assert "x-should-retry" not in response.headers
    assert len(stack.chat_requests()) == 1


def test_a_retry_after_longer_than_the_sdks_timeout_is_not_waited_out(stack):
    # The SDK's read timeout (sent as x-stainless-read-timeout) is the
    # deadline: a 20 s wait does not fit in 5 s, so the 429 comes back at
    # once as the SDK's RateLimitError, not as the SDK's own timeout.
    began = time.monotonic()
    with sdk(stack, max_retries=0, timeout=5.0) as client:
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(
                model="fake-model",
                messages=user("hi"),
                extra_body={"fake": {"status": 429, "retry_after": "20"}},
            )
    assert time.monotonic() - began < 3
    assert len(stack.chat_requests()) == 1


def test_an_sdk_retry_gets_one_attempt_not_three(stack):
    with sdk(stack, max_retries=0) as client:
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(
                model="fake-model",
                messages=user("hi"),
                extra_body={"fake": {"status": 503}},
                # What the SDK sends on its own second try.
                extra_headers={"x-stainless-retry-count": "1"},
            )
    assert len(stack.chat_requests()) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_the_python_sdks_read_timeout_is_the_calls_deadline(stack, stream):
    # openai-python sends its read timeout as x-stainless-read-timeout; an
    # explicit value here (the SDK keeps a caller's own) sets it below the
    # SDK's own 30 s, so the sidecar's answer shows it was read.
    began = time.monotonic()
    with sdk(stack, max_retries=0, timeout=30.0) as client:
        with pytest.raises(openai.APIStatusError) as error:
            client.chat.completions.create(
                model="fake-model",
                messages=user("hi"),
                stream=stream,
                extra_body={"fake": {"hang": True}},
                extra_headers={"x-stainless-read-timeout": "1.5"},
            )
    waited = time.monotonic() - began
    assert error.value.status_code == 504
    assert error.value.response.headers["x-llm-error-reason"] == "DEADLINE_EXCEEDED"
    assert 1.4 <= waited < 5, waited


def test_a_stream_that_started_is_not_cut_by_the_read_timeout(stack):
    # For a stream the read timeout is a gap between bytes: 1.5 s bounds
    # only the first byte, not this 2.5 s stream of 5 chunks 0.5 s apart.
    with sdk(stack, max_retries=0) as client:
        stream = client.chat.completions.create(
            model="fake-model",
            messages=user("one two three four five"),
            stream=True,
            extra_body={"fake": {"chunks": 5, "chunk_delay_ms": 500}},
            extra_headers={"x-stainless-read-timeout": "1.5"},
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "one two three four five"


def grpc_request(chat_pb2, scenario):
    extra = struct_pb2.Struct()
    extra.update({"fake": scenario})
    return chat_pb2.ChatRequest(
        model="fake-model",
        messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, content="hi")],
        extra=extra,
    )


def retrying_channel(stack, code):
    """A channel with gRPC's built-in retry policy for `code`: quick
    backoffs of its own, so only a pushback makes it wait long."""
    config = {
        "methodConfig": [
            {
                "name": [{"service": "llmsidecar.v1.ChatService"}],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.01s",
                    "maxBackoff": "0.05s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": [code],
                },
            }
        ]
    }
    return grpc.insecure_channel(
        f"unix:{stack.socket}",
        options=[("grpc.service_config", json.dumps(config)), ("grpc.enable_retries", 1)],
    )


def test_grpc_retry_waits_out_the_pushback(stack, stubs):
    chat_pb2, chat_pb2_grpc = stubs
    with retrying_channel(stack, "RESOURCE_EXHAUSTED") as channel:
        client = chat_pb2_grpc.ChatServiceStub(channel)
        began = time.monotonic()
        with pytest.raises(grpc.RpcError) as error:
            client.Complete(
                grpc_request(chat_pb2, {"status": 429, "retry_after": "1"}),
                # One attempt per call on the sidecar: gRPC's policy retries.
                metadata=[("x-llm-max-attempts", "1")],
                timeout=20,
            )
        waited = time.monotonic() - began
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Three tries, each after the 1 s the upstream asked for (the policy's
    # own backoff is at most 50 ms).
    assert len(stack.chat_requests()) == 3
    assert waited >= 2.0, waited


def test_grpc_retry_does_not_repeat_what_the_sidecar_already_retried(stack, stubs):
    chat_pb2, chat_pb2_grpc = stubs
    with retrying_channel(stack, "UNAVAILABLE") as channel:
        client = chat_pb2_grpc.ChatServiceStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            client.Complete(grpc_request(chat_pb2, {"status": 503}), timeout=20)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    trailers = dict(error.value.trailing_metadata())
    assert trailers["grpc-retry-pushback-ms"] == "-1"
    assert trailers["x-should-retry"] == "false"
    # The sidecar's three attempts; the policy would have made it nine.
    assert len(stack.chat_requests()) == 3


def test_reflection_lets_grpcurl_decode_retry_info_and_error_info(stack):
    # grpcurl knows the error details only from the server's reflection.
    grpcurl = str(pathlib.Path(sys.executable).parent / "grpcurl")
    request = {
        "model": "fake-model",
        "messages": [{"role": "ROLE_USER", "content": "hi"}],
        "extra": {"fake": {"status": 429, "retry_after": "2"}},
    }
    answered = subprocess.run(
        [grpcurl, "-plaintext", "-unix", "-H", "x-llm-max-attempts: 1",
         "-d", json.dumps(request), str(stack.socket), "llmsidecar.v1.ChatService/Complete"],
        capture_output=True, text=True, timeout=30,
    )
    assert answered.returncode != 0
    details = answered.stdout + answered.stderr
    assert '"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"2s"' in details, details
    assert '"reason":"UPSTREAM_RATE_LIMITED"' in details, details
