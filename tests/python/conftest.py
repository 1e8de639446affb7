"""Fixtures: stubs generated from our .proto by grpcio-tools, and a real
llm-sidecar process on a temporary Unix socket (embedded default config)."""

import os
import pathlib
import subprocess
import sys
import tempfile
import time

import grpc
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def stubs():
    """Generates the Python stubs the way an app team would."""
    import grpc_tools
    from grpc_tools import protoc

    out = pathlib.Path(tempfile.mkdtemp(prefix="llm-sidecar-stubs-"))
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{ROOT / 'proto'}",
            f"-I{well_known}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(ROOT / "proto/llmsidecar/v1/chat.proto"),
        ]
    )
    assert code == 0, "protoc failed"
    sys.path.insert(0, str(out))
    from llmsidecar.v1 import chat_pb2, chat_pb2_grpc

    return chat_pb2, chat_pb2_grpc


@pytest.fixture(scope="session")
def sidecar():
    """Starts the real binary and yields its socket path."""
    binary = os.environ.get("LLM_SIDECAR_BIN", str(ROOT / "target/debug/llm-sidecar"))
    workdir = tempfile.mkdtemp(prefix="llm-sidecar-py-")
    socket = os.path.join(workdir, "sidecar.sock")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["LLM_SIDECAR_LOG"] = "warn"
    process = subprocess.Popen(
        [binary, "serve", "--uds", socket, "--tcp", "", "--http", "", "--admin", "",
         "--ledger", os.path.join(workdir, "ledger.sqlite3")],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while not os.path.exists(socket):
        assert process.poll() is None, "llm-sidecar exited during start-up"
        assert time.monotonic() < deadline, "llm-sidecar did not create its socket"
        time.sleep(0.02)
    yield socket
    process.terminate()
    assert process.wait(timeout=20) == 0


@pytest.fixture()
def channel(sidecar):
    # h2 (under tonic) rejects the socket path that grpc-core sends as
    # :authority over a Unix socket; "localhost" is the UDS convention.
    options = [("grpc.default_authority", "localhost")]
    with grpc.insecure_channel(f"unix://{sidecar}", options=options) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        yield channel
