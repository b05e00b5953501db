#!/usr/bin/env node
// Emit an irctl IR v1 graph — busybox, a process writing a file, an image — from Node.js.
//
// Written from spec/ir.md alone (no irctl code): § 2 file framing, § 4 canonical encoding,
// § 5 op digests, § 6 ops and outputs, § 9 features.  Usage:
//
//     node generate.mjs [OUTPUT]        (default: standard output)
//
// @msgpack/msgpack writes integers, strings, binary and headers in their shortest forms, as § 4
// requires, but keeps map keys in insertion order: canonical() below sorts them by UTF-8 bytes and
// drops fields at their default before encoding.

import { createHash } from "node:crypto";
import { writeFileSync } from "node:fs";
import { encode } from "@msgpack/msgpack";

// § 2: magic, big-endian u16 major version, u8 compression (0: none), u8 reserved (0).
const MAGIC = Buffer.from([0x89, 0x49, 0x52, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

function header(version = 1, compression = 0) {
  const h = Buffer.alloc(12);
  MAGIC.copy(h, 0);
  h.writeUInt16BE(version, 8);
  h.writeUInt8(compression, 10);
  h.writeUInt8(0, 11);
  return h;
}

// § 4.1: keys sorted by the bytes of their UTF-8 encoding (not by UTF-16 code units).
function utf8Compare(a, b) {
  return Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"));
}

// A value in canonical shape: maps with sorted keys, `undefined` fields dropped (§ 4.2: absent
// optional values are omitted, never nil).  Callers leave out fields that equal their default.
function canonical(value) {
  if (value instanceof Uint8Array || typeof value !== "object" || value === null) return value;
  if (Array.isArray(value)) return value.map(canonical);
  const out = {};
  for (const key of Object.keys(value).sort(utf8Compare)) {
    if (value[key] !== undefined) out[key] = canonical(value[key]);
  }
  return out;
}

const pack = (value) => Buffer.from(encode(canonical(value)));

// § 5: sha256 over the op's canonical bytes, inputs included.
function digest(op) {
  return "sha256:" + createHash("sha256").update(pack(op)).digest("hex");
}

// ---------------------------------------------------------------------------- the graph

const ops = {};
const metadata = {};
function add(op, meta) {
  const d = digest(op);
  ops[d] = op;
  if (meta) metadata[d] = meta;
  return d;
}

// A registry image pinned by digest (§ 6, SourceOp.image; platform left at its default linux/amd64).
const base = add({
  source: {
    image: {
      ref: "docker.io/library/busybox:1.36",
      digest: "sha256:7b3ccabffc97de872a30dfd234fd972a66d247c8cfc69b0550f276481852627c",
    },
  },
});

// An exec op: mounts[0] is a bind of input 0 at "/", and its output 0 is the resulting root
// filesystem (§ 6.1).  Defaults (type "bind", cwd "/", network "default", …) are omitted.
const PATH = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";
const run = add(
  {
    inputs: [{ op: base }], // output 0 is the default, so it is omitted
    exec: {
      args: ["/bin/sh", "-c", "echo hello from node > /hello"],
      env: [PATH],
      mounts: [{ target: "/", input: 0, output: 0 }],
    },
  },
  { description: "[node] RUN echo hello from node > /hello", group: "node", locations: [{ file: 0, line: 2 }] },
);

// An image op over the exec's root filesystem (§ 6.3).
const image = add({
  inputs: [{ op: run }],
  image: {
    config: { env: [PATH], cmd: ["cat", "/hello"] },
    history: [{ created_by: "RUN echo hello from node > /hello" }],
  },
});

const recipe = "FROM busybox:1.36\nRUN echo hello from node > /hello\nCMD [\"cat\", \"/hello\"]\n";
const document = {
  version: 1,
  // § 9: every feature the ops use, sorted and unique.
  features: ["exec", "image", "source.image"],
  ops,
  roots: { default: { op: image } },
  metadata,
  sources: [{ name: "recipe", language: "node", data: new TextEncoder().encode(recipe) }],
};

const file = Buffer.concat([header(), pack(document)]);
const output = process.argv[2];
if (output && output !== "-") writeFileSync(output, file);
else process.stdout.write(file);
