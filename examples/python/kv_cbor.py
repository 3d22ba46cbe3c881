#!/usr/bin/env python3
"""Talk to wasmkv from Python with CBOR bodies over plain HTTP (no generated code).

Every Connect unary call is `POST /<service>/<method>` with `Content-Type: application/cbor`;
the body is a CBOR map keyed by the proto field names (see api/kvstore.proto), keys and values
are CBOR byte strings. Errors come back as JSON `{"code": ..., "message": ...}`.

    pip install cbor2
    python3 examples/python/kv_cbor.py [http://127.0.0.1:8080]
"""

import json
import sys
import urllib.error
import urllib.request

import cbor2


class WasmkvError(Exception):
    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code


def call(base, method, request, service="kvstore.v1.KVStore"):
    http_request = urllib.request.Request(
        f"{base}/{service}/{method}",
        data=cbor2.dumps(request),
        headers={"Content-Type": "application/cbor", "Connect-Protocol-Version": "1"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(http_request, timeout=10) as response:
            return cbor2.loads(response.read())
    except urllib.error.HTTPError as error:
        body = json.loads(error.read() or b"{}")
        raise WasmkvError(body.get("code", "unknown"), body.get("message", "")) from None


def main():
    base = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080"

    written = call(base, "Set", {"key": b"py:greeting", "value": b"hello from python"})
    print("set py:greeting ->", written)

    got = call(base, "Get", {"key": b"py:greeting"})
    print("get py:greeting ->", got["value"].decode(), "version", got["version"])

    # Compare-and-set with the version we read; a stale version is refused with `aborted`.
    call(base, "Set", {"key": b"py:greeting", "value": b"updated", "if_version": got["version"]})
    try:
        call(base, "Set", {"key": b"py:greeting", "value": b"lost", "if_version": got["version"]})
    except WasmkvError as error:
        print("stale compare-and-set ->", error)

    batch = call(base, "Write", {"mutations": [
        {"op": 1, "key": b"py:a", "value": b"1"},
        {"op": 1, "key": b"py:b", "value": b"2", "ttl_ms": 60000},
    ]})
    print("atomic batch ->", batch)

    results = call(base, "MultiGet", {"keys": [b"py:a", b"py:b", b"py:missing"]})["results"]
    print("multi-get ->", [r["value"].decode() if r["found"] else None for r in results])

    deleted = call(base, "Delete", {"key": b"py:greeting"})
    print("delete py:greeting ->", deleted)

    status = call(base, "Status", {}, service="kvstore.v1.Admin")
    print("status ->", status["role"], "lsn", status["lsn"], "keys", status["keys"])


if __name__ == "__main__":
    main()
