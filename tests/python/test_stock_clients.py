"""Stock gRPC clients over the Unix socket, as they come: each sends the
socket path as the HTTP/2 :authority (grpc-core percent-encoded, grpc-java
and grpcurl raw), and each must get its answer."""

import pathlib
import socket
import subprocess
import sys

import h2.config
import h2.connection
import h2.events
import pytest

LIST_MODELS = "/llmsidecar.v1.ChatService/ListModels"


def grpc_frame(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


def call_raw(socket_path, authorities, method=LIST_MODELS, message=b""):
    """Makes one unary call per authority on one HTTP/2 connection (so
    later header blocks use the HPACK table the first ones filled) and
    returns, per call, the response headers, trailers and body."""
    conn = h2.connection.H2Connection(
        config=h2.config.H2Configuration(client_side=True, validate_outbound_headers=False)
    )
    results = {}
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(socket_path)
        conn.initiate_connection()
        for index, authority in enumerate(authorities):
            stream = 1 + 2 * index
            results[stream] = {"headers": {}, "trailers": {}, "body": b"", "ended": False}
            conn.send_headers(
                stream,
                [
                    (":method", "POST"),
                    (":scheme", "http"),
                    (":path", method),
                    (":authority", authority),
                    ("content-type", "application/grpc"),
                    ("te", "trailers"),
                    ("user-agent", "raw-h2-test"),
                ],
            )
            conn.send_data(stream, grpc_frame(message), end_stream=True)
        sock.sendall(conn.data_to_send())
        while not all(result["ended"] for result in results.values()):
            data = sock.recv(65536)
            assert data, "the sidecar closed the connection"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.StreamReset):
                    pytest.fail(f"stream {event.stream_id} reset: {event.error_code!r}")
                if isinstance(event, h2.events.ResponseReceived):
                    results[event.stream_id]["headers"] = decode(event.headers)
                elif isinstance(event, h2.events.TrailersReceived):
                    results[event.stream_id]["trailers"] = decode(event.headers)
                elif isinstance(event, h2.events.DataReceived):
                    results[event.stream_id]["body"] += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    results[event.stream_id]["ended"] = True
            sock.sendall(conn.data_to_send())
    return [results[1 + 2 * index] for index in range(len(authorities))]


def decode(headers):
    return {
        (name.decode() if isinstance(name, bytes) else name): (
            value.decode() if isinstance(value, bytes) else value
        )
        for name, value in headers
    }


def test_raw_and_percent_encoded_socket_paths_are_taken_as_authority(stubs, sidecar):
    chat_pb2, _ = stubs
    encoded = sidecar.replace("/", "%2F")
    calls = call_raw(sidecar, [sidecar, encoded, sidecar, "localhost"])
    for call in calls:
        assert call["headers"][":status"] == "200"
        assert call["trailers"]["grpc-status"] == "0", call["trailers"]
        reply = chat_pb2.ListModelsResponse.FromString(call["body"][5:])
        assert "mock/*" in [route.model for route in reply.models]


def test_the_stock_grpcio_channel_needs_no_options(stubs, sidecar):
    import grpc

    chat_pb2, chat_pb2_grpc = stubs
    with grpc.insecure_channel(f"unix://{sidecar}") as channel:
        reply = chat_pb2_grpc.ChatServiceStub(channel).Complete(
            chat_pb2.ChatRequest(
                model="mock/echo",
                messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, content="no options")],
            ),
            timeout=10,
        )
    assert reply.choices[0].content == "no options"


def grpcurl():
    # Installed beside this Python by tests/python/requirements.txt.
    return str(pathlib.Path(sys.executable).parent / "grpcurl")


def test_grpcurl_over_the_socket_without_an_authority_flag(sidecar):
    listed = subprocess.run(
        [grpcurl(), "-plaintext", "-unix", sidecar, "list"],
        capture_output=True, text=True, timeout=30,
    )
    assert listed.returncode == 0, listed.stderr
    assert "llmsidecar.v1.ChatService" in listed.stdout.split()

    answered = subprocess.run(
        [grpcurl(), "-plaintext", "-unix", "-d",
         '{"model":"mock/echo","messages":[{"role":"ROLE_USER","content":"from grpcurl"}]}',
         sidecar, "llmsidecar.v1.ChatService/Complete"],
        capture_output=True, text=True, timeout=30,
    )
    assert answered.returncode == 0, answered.stderr
    assert '"content": "from grpcurl"' in answered.stdout
