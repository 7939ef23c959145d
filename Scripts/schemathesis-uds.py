#!/usr/bin/env python3
"""Runs schemathesis against an HTTP API that listens on a Unix socket.

schemathesis speaks HTTP over TCP only, so this forwards a port on 127.0.0.1 (picked by the
kernel) to the socket, byte for byte, and runs `schemathesis run SCHEMA --url http://127.0.0.1:PORT`
with the remaining arguments. Its exit code is schemathesis's.

    schemathesis-uds.py --socket /tmp/api.sock --schema docs/api/lguest.yaml \
        [--config docs/api/schemathesis-lguest.toml] [--hooks FILE.py] -- [schemathesis run options]

The schemathesis executable is the one beside this interpreter (Scripts/python-tools.sh installs
both), or $SCHEMATHESIS.
"""
import argparse
import os
import socket
import subprocess
import sys
import threading


def pump(source, sink):
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def serve(listener, path):
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(path)
        except OSError:
            client.close()
            upstream.close()
            continue

        def run(client=client, upstream=upstream):
            a = threading.Thread(target=pump, args=(client, upstream), daemon=True)
            a.start()
            pump(upstream, client)
            a.join(timeout=5)
            client.close()
            upstream.close()

        threading.Thread(target=run, daemon=True).start()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True, help="the API's Unix socket")
    parser.add_argument("--schema", required=True, help="the API document (OpenAPI/Swagger)")
    parser.add_argument("--config", help="a schemathesis.toml for the run (which checks, and where)")
    parser.add_argument("--hooks", help="a Python file of schemathesis hooks for the run")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="options for `schemathesis run`, after --")
    options = parser.parse_args()
    rest = options.rest[1:] if options.rest[:1] == ["--"] else options.rest

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    threading.Thread(target=serve, args=(listener, options.socket), daemon=True).start()

    executable = os.environ.get("SCHEMATHESIS") or os.path.join(os.path.dirname(sys.executable), "schemathesis")
    command = [executable] + (["--config-file", options.config] if options.config else [])
    command += ["run", options.schema, "--url", f"http://127.0.0.1:{port}"] + rest
    environment = dict(os.environ)
    if options.hooks:
        environment["SCHEMATHESIS_HOOKS"] = os.path.abspath(options.hooks)
    print("+ " + " ".join(command), flush=True)
    status = subprocess.call(command, env=environment)
    listener.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
