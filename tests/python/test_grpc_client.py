"""A Python app's view: grpcio stubs generated from our .proto, calling the
sidecar over its Unix socket."""

import grpc
import pytest


def user(chat_pb2, text):
    return chat_pb2.Message(role=chat_pb2.ROLE_USER, content=text)


def test_unary_complete(stubs, channel):
    chat_pb2, chat_pb2_grpc = stubs
    client = chat_pb2_grpc.ChatServiceStub(channel)
    response = client.Complete(
        chat_pb2.ChatRequest(model="mock/echo", messages=[user(chat_pb2, "hello from python")]),
        timeout=10,
    )
    assert response.provider == "mock"
    assert response.choices[0].content == "hello from python"
    assert response.choices[0].finish_reason == "stop"
    assert response.usage.completion_tokens == 3


def test_streaming_complete(stubs, channel):
    chat_pb2, chat_pb2_grpc = stubs
    client = chat_pb2_grpc.ChatServiceStub(channel)
    chunks = list(
        client.StreamComplete(
            chat_pb2.ChatRequest(model="mock/echo", messages=[user(chat_pb2, "stream these four words")]),
            timeout=10,
        )
    )
    text = "".join(choice.content for chunk in chunks for choice in chunk.choices)
    assert text == "stream these four words"
    assert len(chunks) >= 4, "the answer arrives in pieces"
    assert chunks[-1].usage.completion_tokens == 4


def test_invalid_request_is_invalid_argument(stubs, channel):
    chat_pb2, chat_pb2_grpc = stubs
    client = chat_pb2_grpc.ChatServiceStub(channel)
    with pytest.raises(grpc.RpcError) as error:
        client.Complete(chat_pb2.ChatRequest(model="mock/echo"), timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "messages" in error.value.details()


def test_unroutable_model_is_not_found(stubs, channel):
    chat_pb2, chat_pb2_grpc = stubs
    client = chat_pb2_grpc.ChatServiceStub(channel)
    with pytest.raises(grpc.RpcError) as error:
        client.Complete(
            chat_pb2.ChatRequest(model="no-such-model", messages=[user(chat_pb2, "hi")]), timeout=10
        )
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_reports_serving(channel):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "llmsidecar.v1.ChatService"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_chat_service(channel):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    reply = next(iter(stub.ServerReflectionInfo(iter([request]), timeout=10)))
    names = {service.name for service in reply.list_services_response.service}
    assert "llmsidecar.v1.ChatService" in names
    assert "grpc.health.v1.Health" in names
