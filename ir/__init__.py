"""The irctl IR: a versioned, content-addressed build graph (see ``spec/ir.md``).

The leaf of the project: it imports only the standard library, msgpack, zstandard and jsonschema
(``tests/test_layering.py`` checks).  Modules: ``ops`` (the node types, the single definition),
``wire`` (typed ⇄ wire form, generated per class), ``codec`` (canonical bytes, digests, file
framing), ``schema`` (JSON Schema derived from ``ops``), ``jsonform`` (the JSON form), ``validate``
(graph checks), ``features``, ``builder`` (the chainable Python API), ``render`` (summaries, dot,
diffs for humans), ``spec_tables`` (the generated tables of the spec), ``patterns`` (the
dockerignore path patterns of ``include``/``exclude`` fields, matched the same way by both sides).
"""
