"""The irctl IR: a versioned, content-addressed build graph (see ``spec/ir.md``).

The leaf of the project: it imports only the standard library, msgpack, zstandard and jsonschema.
Modules: ``ops`` (the node types, the single definition), ``wire`` (typed ⇄ wire form), ``codec``
(canonical bytes, digests, file framing), ``schema`` (JSON Schema derived from ``ops``),
``validate`` (schema + graph checks), ``features``, ``builder`` (the chainable Python API).
"""
