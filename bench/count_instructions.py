"""Instructions the sidecar executes per call, counted by valgrind's
callgrind: steady to about 0.1 % between runs on a shared machine, where
wall-clock CPU is not. BENCHMARKS.md ("Counted in instructions") says how
to read the figures.

    target/pyenv/bin/python bench/count_instructions.py \
        --sidecar target/release/llm-sidecar [--sidecar OTHER ...]

For each binary and workload it starts the sidecar under callgrind twice,
makes FEW then MANY calls on one gRPC channel over the Unix socket (a
Python grpcio client, as an app would), and reports
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

# name -> (gRPC method, model, the fake upstream's scenario for that model)
WORKLOADS = {
    "unary": ("Complete", "bench-unary", None),
    "stream-paced": ("StreamComplete", "bench-paced", '{"chunks":64,"chunk_delay_ms":1}'),
    "stream-unpaced": ("StreamComplete", "bench-unpaced", '{"chunks":20,"events_per_write":4}'),
}


def stubs():
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
    if code != 0:
        sys.exit("protoc failed")
    sys.path.insert(0, str(out))
    from llmsidecar.v1 import chat_pb2, chat_pb2_grpc

    return chat_pb2, chat_pb2_grpc


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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

    def listening():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    wait_for(listening, process, "fake-upstream")
    return process, f"http://127.0.0.1:{port}/v1"


def count(sidecar, upstream_url, workload, calls, modules, workdir):
    """Instructions of one sidecar process that served `calls` calls."""
    import grpc

    chat_pb2, chat_pb2_grpc = modules
    method, model, _ = WORKLOADS[workload]
    run = pathlib.Path(tempfile.mkdtemp(prefix=f"{workload}-{calls}-", dir=workdir))
    socket_path = run / "grpc.sock"
    config = run / "sidecar.toml"
    config.write_text(
        'default_provider = "fake"\n'
        f'[server]\nuds = "{socket_path}"\ntcp = ""\nhttp = ""\nadmin = ""\n'
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
