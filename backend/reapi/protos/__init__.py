"""The REAPI, ByteStream and Remote Workers protobuf modules, generated from the trimmed ``.proto``
files beside them by ``python -m backend.reapi.protos.generate`` (never edited by hand)."""
