"""Fixtures: stubs generated from our .proto by grpcio-tools, a real
llm-sidecar process on a temporary Unix socket (embedded default config),
and, for the HTTP facade tests, the real llm-sidecar in front of the real
fake-upstream binary, one pair per test module."""

import dataclasses
import json
import os
import pathlib
import socket
import subprocess
import tempfile
import time
import urllib.request

import grpc
import openai
import pytest

import grpc_stubs

ROOT = pathlib.Path(__file__).resolve().parents[2]
UPSTREAM_KEY = "sk-test-python-0123456789abcdef"


@pytest.fixture(scope="session")
def stubs():
    """Generates the Python stubs the way an app team would."""
    return grpc_stubs.generate()


def sidecar_binary():
    return pathlib.Path(os.environ.get("LLM_SIDECAR_BIN", ROOT / "target/debug/llm-sidecar"))


def child_env():
    # The sidecar must see only the keys a test gives it, never the machine's.
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["LLM_SIDECAR_LOG"] = "warn"
    env["RUST_LOG"] = "warn"
    return env


@pytest.fixture(scope="session")
def sidecar():
    """Starts the real binary and yields its socket path."""
    workdir = tempfile.mkdtemp(prefix="llm-sidecar-py-")
    socket_path = os.path.join(workdir, "sidecar.sock")
    process = subprocess.Popen(
        [str(sidecar_binary()), "serve", "--uds", socket_path, "--tcp", "", "--http", "",
         "--admin", "", "--ledger", os.path.join(workdir, "ledger.sqlite3")],
        env=child_env(),
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while not os.path.exists(socket_path):
        assert process.poll() is None, "llm-sidecar exited during start-up"
        assert time.monotonic() < deadline, "llm-sidecar did not create its socket"
        time.sleep(0.02)
    yield socket_path
    process.terminate()
    assert process.wait(timeout=20) == 0


@pytest.fixture()
def channel(sidecar):
    # No options, as an app would write it: grpc-core sends the socket path
    # as :authority, which the sidecar takes.
    with grpc.insecure_channel(f"unix://{sidecar}") as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        yield channel


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


def answers(url, token=None):
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def written_token(path, process):
    """The caller token the sidecar writes at its first start (none is
    configured), as an app in the pod reads it."""
    wait_until(lambda: path.exists() and path.read_text().strip(), process, "llm-sidecar")
    return path.read_text().strip()


@dataclasses.dataclass(frozen=True)
class Stack:
    """Base URLs of a running sidecar facade and of the fake upstream
    behind it (the latter for talking to the upstream directly), and the
    caller token the facade asks for."""

    facade: str
    upstream: str
    token: str
    socket: pathlib.Path

    def _recording(self, method):
        url = self.upstream.removesuffix("/v1") + "/_fake/requests"
        request = urllib.request.Request(url, method=method)
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.read()

    def clear_recording(self):
        """Forgets what the fake upstream has received so far."""
        self._recording("DELETE")

    def chat_requests(self):
        """The chat requests the fake upstream received, in order, as it
        recorded them (`method`, `path`, `headers`, `body`)."""
        recorded = json.loads(self._recording("GET"))
        return [r for r in recorded if r["path"].endswith("/chat/completions")]


@pytest.fixture(scope="module")
def stack():
    """The fake upstream and llm-sidecar with its HTTP facade on a free
    port, routing `fake-*` models to the fake as they are named, and
    `resumed-*` models too, with cut streams resumed."""
    sidecar_bin = sidecar_binary()
    fake_bin = sidecar_bin.parent / "fake-upstream"
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="llm-sidecar-openai-"))
    env = child_env()
    env["FAKE_KEY"] = UPSTREAM_KEY

    fake_port = free_port()
    fake = subprocess.Popen(
        [str(fake_bin), "--listen", f"127.0.0.1:{fake_port}"],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    processes = [fake]
    try:
        upstream = f"http://127.0.0.1:{fake_port}/v1"
        wait_until(lambda: answers(f"{upstream}/models"), fake, "fake-upstream")
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
base_url = "{upstream}"
api_key_env = "FAKE_KEY"
circuit_failures = 0
prefill = "trailing_assistant"

[[routes]]
model = "fake-*"
provider = "fake"

[[routes]]
model = "resumed-*"
provider = "fake"
resume = true
"""
        )
        sidecar = subprocess.Popen(
            [str(sidecar_bin), "serve", "--config", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        processes.append(sidecar)
        base = f"http://127.0.0.1:{http_port}/v1"
        token = written_token(workdir / "token", sidecar)
        wait_until(lambda: answers(f"{base}/models", token), sidecar, "llm-sidecar")
        yield Stack(facade=base, upstream=upstream, token=token, socket=workdir / "sidecar.sock")
        sidecar.terminate()
        assert sidecar.wait(timeout=20) == 0
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=20)


@pytest.fixture(scope="module")
def facade(stack):
    """The facade's base URL, what an OpenAI client is given."""
    return stack.facade


@pytest.fixture()
def upstream_key():
    """The key the sidecar holds for the fake; it must never reach a caller."""
    return UPSTREAM_KEY


@pytest.fixture(scope="module")
def token(stack):
    """The caller token: what the app gives its OpenAI SDK as api_key."""
    return stack.token


@pytest.fixture()
def client(facade, token):
    # The sidecar holds the provider keys; the SDK's api_key is the
    # sidecar's caller token. One attempt on each side: these tests are
    # about what one call returns.
    with openai.OpenAI(
        base_url=facade,
        api_key=token,
        max_retries=0,
        default_headers={"x-llm-max-attempts": "1"},
    ) as client:
        yield client
