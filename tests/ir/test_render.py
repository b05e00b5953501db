"""``ir.render`` and the dump listing never fail on a valid graph, and every op appears once."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings

from ir import jsonform, ops, render
from irctl.dump import diff_listing, text_listing
from tests.ir.strategies import documents

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


@SETTINGS
@given(documents(), documents())
def test_every_view_of_random_graphs(a: ops.Document, b: ops.Document) -> None:
    text = text_listing(a)
    for digest in a.ops:
        assert sum(line.startswith(f"  {render.short(digest)}  ") for line in text.splitlines()) == 1
    dot = render.to_dot(a)
    assert dot.startswith("digraph irctl {") and dot.count(" -> ") == sum(len(o.inputs) for o in a.ops.values()) + len(a.roots)
    assert jsonform.document_from_json(json.loads(jsonform.dumps(a))) == a
    listing, code = diff_listing(a, b)
    assert (code == 0) == (a.ops.keys() == b.ops.keys() and a.roots == b.roots)
    assert diff_listing(a, a) == ("no differences\n", 0)
    order = render.topo_order(a, sorted(a.ops))
    position = {d: i for i, d in enumerate(order)}
    assert sorted(order) == sorted(a.ops)
    for d, op in a.ops.items():
        assert all(position[r.op] < position[d] for r in op.inputs)
    staged = [d for _, d in render.stage_order(a, order)]
    at = {d: i for i, d in enumerate(staged)}
    assert sorted(staged) == sorted(order)
    for d in staged:
        assert all(at[r.op] < at[d] for r in a.ops[d].inputs if r.op != d)
