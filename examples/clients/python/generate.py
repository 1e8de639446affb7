#!/usr/bin/env python3
"""Generates the Python stubs for llm-sidecar's API from proto/ with
grpcio-tools (no system protoc needed), as an app's build would.

    python generate.py [--proto DIR] [--out DIR]
"""

import argparse
import pathlib
import sys

import grpc_tools
from grpc_tools import protoc

HERE = pathlib.Path(__file__).resolve().parent


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proto", type=pathlib.Path, default=HERE.parents[2] / "proto")
    parser.add_argument("--out", type=pathlib.Path, default=HERE / "gen")
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    # google/protobuf/struct.proto, which chat.proto imports, ships with grpcio-tools.
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    files = sorted(str(p) for p in (args.proto / "llmsidecar/v1").glob("*.proto"))
    code = protoc.main(
        ["grpc_tools.protoc", f"-I{args.proto}", f"-I{well_known}",
         f"--python_out={args.out}", f"--grpc_python_out={args.out}", *files]
    )
    if code != 0:
        sys.exit(f"protoc failed with exit code {code}")
    print(f"stubs for {len(files)} files in {args.out}")


if __name__ == "__main__":
    main()
