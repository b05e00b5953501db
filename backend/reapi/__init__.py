"""The Remote Execution API (REAPI v2), ByteStream and the Remote Workers API, as a client speaks them.

Protocol only: no irctl notion (keys, layers, steps) lives here; ``backend.farm`` maps those onto
actions.  Digests are spelled as irctl spells them (``"sha256:<hex>"``, size) and converted at the edge.
"""
