// Calls a running wasmkv node through the official Connect-ES client, with stubs built at run
// time from the node's FileDescriptorSet (no code generation), once with the JSON codec and
// once with the protobuf codec. Prints one JSON line of results for host/tests/connect_client.rs.
//
//   node client.mjs <base-url> <file-descriptor-set.bin>
//
// Byte strings are printed as lowercase hex, 64-bit integers as decimal strings.

import { readFileSync } from "node:fs";

import { createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";

const [baseUrl, descriptorPath] = process.argv.slice(2);
if (!baseUrl || !descriptorPath) {
  console.error("usage: node client.mjs <base-url> <file-descriptor-set.bin>");
  process.exit(2);
}

const registry = createFileRegistry(
  fromBinary(FileDescriptorSetSchema, readFileSync(descriptorPath)),
);
const service = registry.getService("kvstore.v1.KVStore");
if (!service) {
  throw new Error("kvstore.v1.KVStore is not in the descriptor set");
}

const hex = (bytes) => Buffer.from(bytes).toString("hex");
const enc = new TextEncoder();

// The error a call fails with, as {code, message}; a call that succeeds is a test failure.
async function failure(call) {
  try {
    const response = await call();
    return { code: "none (the call succeeded)", response: String(response) };
  } catch (err) {
    if (!(err instanceof ConnectError)) {
      return { code: `not a ConnectError: ${err}` };
    }
    return { code: Code[err.code], message: err.rawMessage };
  }
}

async function run(useBinaryFormat) {
  const format = useBinaryFormat ? "proto" : "json";
  // Records the Content-Type of every request Connect-ES sent and of every answer it got.
  const contentTypes = new Set();
  const recordContentTypes = (next) => async (req) => {
    contentTypes.add(`request ${req.header.get("content-type")}`);
    try {
      const res = await next(req);
      contentTypes.add(`response ${res.header.get("content-type")}`);
      return res;
    } catch (err) {
      contentTypes.add(`error ${err instanceof ConnectError ? Code[err.code] : err}`);
      throw err;
    }
  };
  const transport = createConnectTransport({
    baseUrl,
    httpVersion: "1.1",
    useBinaryFormat,
    interceptors: [recordContentTypes],
  });
  const client = createClient(service, transport);
  const key = enc.encode(`connect-es/${format}`);
  // Not valid UTF-8, with a NUL: only a real bytes field carries it unchanged.
  const value = new Uint8Array([0x00, 0xff, 0xfe, ...enc.encode(`value via ${format}`)]);

  const set = await client.set({ key, value });
  const got = await client.get({ key });
  const deleted = await client.delete({ key });
  const gotAfterDelete = await client.get({ key });
  // Left in place for the Rust side to read back over its own HTTP client.
  const keptKey = enc.encode(`connect-es/${format}/kept`);
  const kept = await client.set({ key: keptKey, value });

  const emptyKey = await failure(() => client.get({ key: new Uint8Array() }));
  const staleVersion = await failure(() =>
    client.set({ key: keptKey, value, ifVersion: kept.lsn + 1000n }),
  );

  return {
    format,
    sent: { key: hex(key), value: hex(value), kept_key: hex(keptKey) },
    set: { lsn: set.lsn.toString() },
    get: { found: got.found, value: hex(got.value), version: got.version.toString() },
    delete: { found: deleted.found, lsn: deleted.lsn.toString() },
    get_after_delete: { found: gotAfterDelete.found, value: hex(gotAfterDelete.value) },
    kept: { lsn: kept.lsn.toString() },
    errors: { empty_key: emptyKey, stale_version: staleVersion },
    content_types: [...contentTypes].sort(),
  };
}

const results = [];
for (const binary of [false, true]) {
  results.push(await run(binary));
}
console.log(JSON.stringify({ methods: Object.keys(service.method), results }));
