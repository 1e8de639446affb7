"""Instructions the sidecar executes per call, counted by valgrind's
callgrind: steady to about 0.1 % between runs on a shared machine, where
wall-clock CPU is not. BENCHMARKS.md ("Counted in instructions") says how
to read the figures.

    target/pyenv/bin/python bench/count_instructions.py \
        --sidecar target/release/llm-sidecar [--sidecar OTHER ...]

For each binary and workload it starts the sidecar under callgrind twice,
makes FEW then MANY calls on one gRPC channel over the Unix socket (a
Python grpcio client, as an app would) or, for the `http-` workloads, on
one keep-alive connection to the OpenAI-compatible facade, and reports
(instructions(MANY) - instructions(FEW)) / (MANY - FEW): start-up,
shutdown and the first connection cancel out. The upstream is the
repository's fake-upstream binary on loopback; the sidecar runs its
default configuration with the ledger on. Needs `valgrind` and the
Python environment `scripts/test` makes (grpcio, grpcio-tools).
"""

import argparse
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]

# name -> (call, model, the fake upstream's scenario for that model); a
# call is a gRPC method over the Unix socket or the facade over loopback
# HTTP/1.1 (`http-`), streamed or not.
# One word per chunk, as a model streams tokens.
WORDS_64 = "token " * 64
WORDS_20 = "token " * 20
WORKLOADS = {
    "unary": ("Complete", "bench-unary", None),
    "stream-paced": ("StreamComplete", "bench-paced",
                     f'{{"reply":"{WORDS_64}","chunks":64,"chunk_delay_ms":1}}'),
    "stream-unpaced": ("StreamComplete", "bench-unpaced",
                       f'{{"reply":"{WORDS_20}","chunks":20,"events_per_write":4}}'),
    "http-unary": ("http", "bench-unary", None),
    "http-stream-unpaced": ("http-stream", "bench-unpaced", None),
    "http-stream-paced": ("http-stream", "bench-paced", None),
}


def stubs():
    sys.path.insert(0, str(ROOT / "tests/python"))
    import grpc_stubs

    return grpc_stubs.generate()


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def wait_for(ready, process, what, seconds=120):
    deadline = time.monotonic() + seconds
    while not ready():
        if process.poll() is not None:
            sys.exit(f"{what} exited during start-up")
        if time.monotonic() > deadline:
            sys.exit(f"{what} did not start within {seconds} s")
        time.sleep(0.05)


def start_upstream(binary, workdir):
    port = free_port()
    args = [str(binary), "--listen", f"127.0.0.1:{port}"]
    for _, model, scenario in WORKLOADS.values():
        if scenario:
            args += ["--model-scenario", f"{model}={scenario}"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(workdir / "upstream.log", "w"))

    wait_for(lambda: port_open(port), process, "fake-upstream")
    return process, f"http://127.0.0.1:{port}/v1"


def count(sidecar, upstream_url, workload, calls, modules, workdir):
    """Instructions of one sidecar process that served `calls` calls."""
    import grpc

    chat_pb2, chat_pb2_grpc = modules
    method, model, _ = WORKLOADS[workload]
    run = pathlib.Path(tempfile.mkdtemp(prefix=f"{workload}-{calls}-", dir=workdir))
    socket_path = run / "grpc.sock"
    config = run / "sidecar.toml"
    http_port = free_port()
    config.write_text(
        'default_provider = "fake"\n'
        f'[server]\nuds = "{socket_path}"\ntcp = ""\nhttp = "127.0.0.1:{http_port}"\nadmin = ""\n'
        f'[ledger]\npath = "{run / "ledger.sqlite3"}"\n'
        f'[providers.fake]\nbase_url = "{upstream_url}"\n'
    )
    out = run / "callgrind.out"
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["LLM_SIDECAR_LOG"] = "warn"
    process = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no",
         str(sidecar), "serve", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(run / "sidecar.log", "w"),
    )
    wait_for(socket_path.exists, process, "llm-sidecar under callgrind")
    if method.startswith("http"):
        wait_for(lambda: port_open(http_port), process, "the facade under callgrind")
        # No token file: a build older than caller tokens, which asks for none.
        token_file = run / "token"
        token = token_file.read_text().strip() if token_file.exists() else ""
        facade_calls(http_port, token, model, method == "http-stream", calls)
        return stop_and_count(process, out, run)
    # A plain authority: builds older than the sidecar's acceptance of the
    # socket path grpc-core sends as :authority refuse it.
    options = [("grpc.default_authority", "localhost")]
    with grpc.insecure_channel(f"unix://{socket_path}", options=options) as channel:
        grpc.channel_ready_future(channel).result(timeout=120)
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        request = chat_pb2.ChatRequest(
            model=model,
            messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, content="count my instructions")],
        )
        for _ in range(calls):
            if method == "Complete":
                stub.Complete(request, timeout=60)
            else:
                chunks = list(stub.StreamComplete(request, timeout=60))
                if not chunks:
                    sys.exit(f"{workload}: a stream delivered nothing")
    return stop_and_count(process, out, run)


def facade_calls(port, token, model, stream, calls):
    """`calls` chat completions on one keep-alive connection to the facade."""
    import http.client
    import json

    body = {"model": model, "messages": [{"role": "user", "content": "count my instructions"}]}
    if stream:
        body["stream"] = True
    payload = json.dumps(body)
    headers = {"content-type": "application/json", "authorization": f"Bearer {token}"}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(calls):
        connection.request("POST", "/v1/chat/completions", payload, headers)
        response = connection.getresponse()
        text = response.read()
        if response.status != 200 or (stream and not text.rstrip().endswith(b"data: [DONE]")):
            sys.exit(f"the facade answered {response.status}: {text[:200]!r}")
    connection.close()


def stop_and_count(process, out, run):
    process.send_signal(signal.SIGTERM)
    if process.wait(timeout=120) != 0:
        sys.exit(f"llm-sidecar under callgrind exited with {process.returncode}; see {run}/sidecar.log")
    for line in out.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    sys.exit(f"no totals in {out}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sidecar", action="append", required=True, help="a llm-sidecar binary (repeatable)")
    parser.add_argument("--upstream", default=str(ROOT / "target/release/fake-upstream"))
    parser.add_argument("--few", type=int, default=10)
    parser.add_argument("--many", type=int, default=110)
    parser.add_argument("--only", action="append", choices=sorted(WORKLOADS), help="one workload (repeatable)")
    args = parser.parse_args()
    if args.many <= args.few:
        sys.exit("--many must be larger than --few")
    modules = stubs()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="llm-sidecar-instructions-"))
    upstream, url = start_upstream(args.upstream, workdir)
    try:
        rows = []
        for workload in args.only or list(WORKLOADS):
            row = [workload]
            for sidecar in args.sidecar:
                few = count(sidecar, url, workload, args.few, modules, workdir)
                many = count(sidecar, url, workload, args.many, modules, workdir)
                row.append((many - few) / (args.many - args.few))
            rows.append(row)
    finally:
        upstream.terminate()
        upstream.wait()
    names = [pathlib.Path(s).resolve().as_posix() for s in args.sidecar]
    print("| instructions per call | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for workload, *figures in rows:
        base = figures[0]
        cells = [f"{figures[0]:,.0f}"] + [f"{f:,.0f} ({(f - base) / base:+.1%})" for f in figures[1:]]
        print(f"| {workload} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
