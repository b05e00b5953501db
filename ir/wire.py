"""Conversion between the typed op classes and their wire form (plain maps, lists and scalars).

Both directions are *derived* from the class definitions in ``ir/ops.py``: for each class a small
encoder and decoder function is generated once, instead of paying reflection per field.

This is the *reference* decoder: strict and canonical, with an error that names the problem and
its key path.  Unknown keys, wrong types, floats, keys out of canonical order, a field present
with its default value, or a tagged union with zero or two members set are all errors.  IR files
are loaded by msgspec in C (``ir.codec``), which is an order of magnitude faster but says less;
when msgspec or the canonical check refuses a file, this decoder explains why.  The JSON form
(``ir.jsonform``) is read through it too.
"""

from __future__ import annotations

import difflib
import typing
from types import NoneType, UnionType
from typing import Any, Callable, Literal

from ir import ops
from ir.errors import DecodeError

_MISSING = object()
_ENCODERS: dict[type, Callable[[Any], dict]] = {}
_DECODERS: dict[type, Callable[[Any], Any]] = {}


def type_name(value: Any) -> str:
    return {dict: "map", list: "array", str: "string", bytes: "binary", bool: "boolean",
            int: "integer", float: "float", NoneType: "nil"}.get(type(value), type(value).__name__)


class _At(Exception):
    """Internal: a decode error below some key; carries reversed path parts up to ``decode``."""

    def __init__(self, message: str, parts: list) -> None:
        self.message = message
        self.parts = parts


def _fail(message: str, *parts) -> _At:
    return _At(message, list(reversed(parts)))


def _render(parts: list) -> str:
    out = ""
    for p in reversed(parts):
        if isinstance(p, int):
            out += f"[{p}]"
        elif p.startswith("sha256:"):
            out += f"[{p[:19]}…]" if len(p) > 19 else f"[{p}]"
        else:
            out += f".{p}" if out else p
    return out


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --------------------------------------------------------------------------- encoders


def _value_encoder(tp: Any) -> str:
    """Python source for an expression encoding ``x`` of type ``tp``."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        inner = typing.get_args(tp)[0]
        return "list(x)" if not ops.is_node(inner) else f"[E_{inner.__name__}(e) for e in x]"
    if origin is dict:
        inner = typing.get_args(tp)[1]
        if ops.is_node(inner):
            return f"{{k: E_{inner.__name__}(x[k]) for k in sorted(x)}}"
        return "{k: x[k] for k in sorted(x)}"
    if origin is UnionType or origin is typing.Union:
        (inner,) = [a for a in typing.get_args(tp) if a is not NoneType]
        return _value_encoder(inner)
    if ops.is_node(tp):
        return f"E_{tp.__name__}(x)"
    return "x"


# --------------------------------------------------------------------------- per-class codegen


def _fields(cls: type):
    """(name, type, required, default, sorted) of each field, in wire (sorted key) order."""
    for f in sorted(ops.field_specs(cls), key=lambda f: f.name.encode()):
        yield f.name, f.type, f.required, f.default, f.sorted


def _nodes_in(tp: Any) -> list[type]:
    if ops.is_node(tp):
        return [tp]
    return [c for a in typing.get_args(tp) for c in _nodes_in(a)]


_ENC_NS: dict[str, Any] = {}  # every generated encoder, calling each other by name


def _encoder_source(cls: type, todo: list) -> str:
    lines = [f"def E_{cls.__name__}(o):", "    d = {}"]
    for name, tp, required, default, sort in _fields(cls):
        _ENC_NS[f"DE_{cls.__name__}_{name}"] = default
        expr = _value_encoder(tp)
        if sort:
            expr = f"sorted({expr})"
        lines.append(f"    x = o.{name}")
        if required:
            lines.append(f"    d[{name!r}] = {expr}")
        elif default is None:
            lines.append(f"    if x is not None: d[{name!r}] = {expr}")
        elif default == () or default == {} or default is False:
            lines.append(f"    if x: d[{name!r}] = {expr}")
        else:
            lines.append(f"    if x != DE_{cls.__name__}_{name}: d[{name!r}] = {expr}")
        todo.extend(_nodes_in(tp))
    lines.append("    return d")
    return "\n".join(lines) + "\n"


def _class_encoder(cls: type) -> Callable[[Any], dict]:
    enc = _ENCODERS.get(cls)
    if enc is not None:
        return enc
    todo, made = [cls], []
    while todo:
        c = todo.pop()
        if c in _ENCODERS or c in made:
            continue
        made.append(c)
        exec(_encoder_source(c, todo), _ENC_NS)
    for c in made:
        _ENCODERS[c] = _ENC_NS[f"E_{c.__name__}"]
    return _ENCODERS[cls]


# --------------------------------------------------------------------------- decoders
#
# Each class gets a generated function ``D_<Class>(v)`` with straight-line code per field: a type
# check and the default-must-be-omitted check, then one constructor call.  Key-level rules (unknown fields, canonical order, required fields,
# tagged unions) depend only on the tuple of keys, so each distinct key tuple is checked once by a
# slower function and then remembered.  Errors are raised as ``_At`` and located on the way out.

_NS: dict[str, Any] = {"FrozenMap": ops.FrozenMap}

_WHAT = {str: "a string", bytes: "binary data", bool: "a boolean", int: "an integer"}


def _bad_type(v: Any, what: str) -> _At:
    return _At(f"expected {what}, got {type_name(v)}", [])


def _bad_lit(v: Any, allowed: tuple) -> _At:
    hint = _did_you_mean(v, allowed) if isinstance(v, str) else ""
    shown = repr(v) if type(v) in (str, int, bool) else type_name(v)
    return _At(f"expected one of {', '.join(map(repr, allowed))}, got {shown}{hint}", [])


def _bad_item(items: list, tp: type) -> _At:
    for i, e in enumerate(items):
        if type(e) is not tp:
            return _At(f"expected {_WHAT[tp]}, got {type_name(e)}", [i])
    raise AssertionError("no bad item")


def _bad_value(items: dict, tp: type) -> _At:
    for k, e in items.items():
        if type(e) is not tp:
            return _At(f"expected {_WHAT[tp]}, got {type_name(e)}", [k])
    raise AssertionError("no bad value")


def _locate_item(items: list, dec: Callable[[Any], Any], err: _At) -> _At:
    """Find which element ``dec`` failed on (decoding is deterministic) and add its index."""
    for i, e in enumerate(items):
        try:
            dec(e)
        except _At as e2:
            e2.parts.append(i)
            return e2
    return err


def _locate_value(items: dict, dec: Callable[[Any], Any], err: _At) -> _At:
    for k, e in items.items():
        try:
            dec(e)
        except _At as e2:
            e2.parts.append(k)
            return e2
    return err


def _check_map_keys(v: dict) -> None:
    keys = list(v)
    for k in keys:
        if type(k) is not str:
            raise _At(f"map keys must be strings, got {type_name(k)}", [])
    if keys != sorted(keys):  # code point order is UTF-8 byte order
        raise _At("map keys are not in canonical (sorted) order", [])


# What the member of each tagged union (``ops.ONE_OF``) is called in messages.
_UNION_MEMBER = {ops.Op: "op kind", ops.SourceOp: "source kind", ops.FileAction: "file action"}
assert set(_UNION_MEMBER) == set(ops.ONE_OF)


def _default_error(name: str) -> _At:
    return _At(f"field {name!r} equals its default and must be omitted", [name])


def _unsorted_error(name: str) -> _At:
    return _At(f"field {name!r} must be sorted without duplicates", [name])


def _check_keys(cls: type, names: list[str], required: list[str], v: dict) -> None:
    """Raise the first key-level problem of ``v`` as a ``cls``: unknown, out of order, missing, union."""
    order = {n: i for i, n in enumerate(names)}
    last = -1
    for k in v:
        pos = order.get(k) if type(k) is str else None
        if pos is None:
            hint = _did_you_mean(k, names) if isinstance(k, str) else ""
            shown = repr(k) if type(k) in (str, int, bool, bytes) else type_name(k)
            noun = _UNION_MEMBER.get(cls)
            if noun is not None:  # a member of a tagged union names what it could have been
                members = [f.name for f in ops.field_specs(cls) if f.name != "inputs"]
                raise _At(f"unknown {noun} {shown}{hint}; the {noun}s are {', '.join(members)}", [])
            raise _At(f"unknown field {shown}{hint}", [])
        if pos < last:
            raise _At(f"field {k!r} is out of canonical (sorted) order", [])
        last = pos
    for name in required:
        if name not in v:
            raise _At(f"missing required field {name!r}", [])
    if cls in ops.ONE_OF:
        members = [n for n in names if n != "inputs"]
        present = [n for n in members if n in v]
        if len(present) != 1:
            got = f"got {', '.join(present)}" if present else "got none"
            raise _At(f"exactly one of {', '.join(members)} must be set, {got}", [])


def _child(var: str, cls: type) -> str:
    """Expression decoding ``var`` as a ``cls``: the shape dispatch inlined, saving a call."""
    n = cls.__name__
    return f"(SH_{n}.get(tuple({var})) or SLOW_{n})({var}) if type({var}) is dict else D_{n}({var})"


def _convert_lines(tp: Any, tag: str, ns: dict, todo: list) -> list[str]:
    """Statements that check the wire value ``x`` of type ``tp`` and leave the typed value in ``x``."""
    origin = typing.get_origin(tp)
    if origin is UnionType or origin is typing.Union:
        (tp,) = [a for a in typing.get_args(tp) if a is not NoneType]
        origin = typing.get_origin(tp)
    if tp in _WHAT:
        return [f"if type(x) is not {tp.__name__}: raise _bad_type(x, {_WHAT[tp]!r})"]
    if origin is Literal:
        ns[f"L_{tag}"] = frozenset(typing.get_args(tp))
        ns[f"LT_{tag}"] = typing.get_args(tp)
        return [f"if type(x) is not str or x not in L_{tag}: raise _bad_lit(x, LT_{tag})"]
    if ops.is_node(tp):
        todo.append(tp)
        return [f"x = {_child('x', tp)}"]
    if origin is tuple:
        inner = typing.get_args(tp)[0]
        head = ["if type(x) is not list: raise _bad_type(x, 'an array')"]
        if inner in _WHAT:
            return head + ["for e in x:",
                           f"    if type(e) is not {inner.__name__}: raise _bad_item(x, {inner.__name__})",
                           "x = tuple(x)"]
        if ops.is_node(inner):
            todo.append(inner)
            return head + [f"try: x = tuple([{_child('e', inner)} for e in x])",
                           f"except _At as err: raise _locate_item(x, D_{inner.__name__}, err)"]
    if origin is dict:
        inner = typing.get_args(tp)[1]
        head = ["if type(x) is not dict: raise _bad_type(x, 'a map')", "_check_map_keys(x)"]
        if inner in _WHAT:
            return head + ["for e in x.values():",
                           f"    if type(e) is not {inner.__name__}: raise _bad_value(x, {inner.__name__})",
                           "x = FrozenMap(x)"]
        if ops.is_node(inner):
            todo.append(inner)
            return head + [f"try: x = {{k: {_child('e', inner)} for k, e in x.items()}}",
                           f"except _At as err: raise _locate_value(x, D_{inner.__name__}, err)"]
    raise TypeError(f"no wire decoder for {tp!r}")


class _ClassPlan:
    """Everything needed to generate decoders for one class: field specs and per-field code."""

    def __init__(self, cls: type, ns: dict, todo: list) -> None:
        self.cls, self.name = cls, cls.__name__
        self.specs = list(_fields(cls))
        self.names = [s[0] for s in self.specs]
        self.required = [s[0] for s in self.specs if s[2]]
        self.shapes: dict[tuple, Callable[[dict], Any]] = {}
        self.code: dict[str, list[str]] = {}     # field → statements converting a present ``x``
        ns[f"C_{self.name}"] = cls
        for fname, tp, required, default, sort in self.specs:
            tag = f"{self.name}_{fname}"
            lines = ["try:", *("    " + c for c in _convert_lines(tp, tag, ns, todo)),
                     "except _At as err:", f"    err.parts.append({fname!r})", "    raise"]
            if not required:
                ns[f"DF_{tag}"] = default
                if default is None:
                    pass  # a present optional value is never None
                elif ops.is_node(default) or default:
                    lines.append(f"if x == DF_{tag}: raise _default_error({fname!r})")
                else:
                    lines.append(f"if not x: raise _default_error({fname!r})")
                if sort:
                    lines.append(f"if x != tuple(sorted(set(x))): raise _unsorted_error({fname!r})")
            self.code[fname] = lines

    def dispatcher_source(self) -> str:
        n = self.name
        return "\n".join([
            f"def D_{n}(v):",
            "    if type(v) is not dict: raise _bad_type(v, 'a map')",
            f"    return (SH_{n}.get(tuple(v)) or SLOW_{n})(v)",
            "",
            f"def SLOW_{n}(v):",
            f"    return NEWSHAPE_{n}(v)(v)", ""])

    def shape_source(self, keys: tuple) -> str:
        """A decoder for maps with exactly ``keys`` (already checked): unpack the values in one go;
        absent fields are left to the constructor's defaults."""
        n = self.name
        present = set(keys)
        lines = ["def shape(v):"]
        if keys:
            lines.append(f"    {''.join(f'v_{k}, ' for k in keys)}= v.values()")
        args = []
        for fname in self.names:
            if fname in present:
                lines.append(f"    x = v_{fname}")
                lines += ["    " + c for c in self.code[fname]]
                lines.append(f"    f_{fname} = x")
                args.append(f"{fname}=f_{fname}")
        lines.append(f"    return C_{n}({', '.join(args)})")
        return "\n".join(lines) + "\n"

    def new_shape(self, v: dict) -> Callable[[dict], Any]:
        _check_keys(self.cls, self.names, self.required, v)
        keys = tuple(v)
        local: dict[str, Any] = {}
        exec(self.shape_source(keys), _NS, local)
        fn = local["shape"]
        if len(self.shapes) < _SHAPES_MAX:
            self.shapes[keys] = fn
        return fn


_SHAPES_MAX = 1024
_PLANS: dict[type, _ClassPlan] = {}


def _class_decoder(cls: type) -> Callable[[Any], Any]:
    dec = _DECODERS.get(cls)
    if dec is not None:
        return dec
    if "_At" not in _NS:
        _NS.update({n: globals()[n] for n in (
            "_At", "_bad_type", "_bad_lit", "_bad_item", "_bad_value", "_locate_item", "_locate_value",
            "_check_map_keys", "_default_error", "_unsorted_error")})
    todo, made = [cls], []
    while todo:
        c = todo.pop()
        if c in _DECODERS or c in _PLANS:
            continue
        plan = _PLANS[c] = _ClassPlan(c, _NS, todo)
        _NS[f"SH_{plan.name}"] = plan.shapes
        _NS[f"NEWSHAPE_{plan.name}"] = plan.new_shape
        exec(plan.dispatcher_source(), _NS)
        made.append(c)
    for c in made:
        _DECODERS[c] = _NS[f"D_{c.__name__}"]
    return _DECODERS[cls]


def decoder_source(cls: type, keys: tuple[str, ...]) -> str:
    """The generated decoder of ``cls`` for maps with exactly ``keys`` (for reading and debugging)."""
    _class_decoder(cls)
    return _PLANS[cls].shape_source(keys)


# --------------------------------------------------------------------------- public


def encode(obj: Any) -> dict:
    """The wire form of ``obj``: fields equal to their default omitted, keys and sets sorted, so
    ``msgpack.packb(encode(obj))`` is already the canonical encoding."""
    return (_ENCODERS.get(type(obj)) or _class_encoder(type(obj)))(obj)


def decode(cls: type, value: Any, path: str = "") -> Any:
    """Build an instance of ``cls`` from its canonical wire form, or raise ``DecodeError``."""
    try:
        return (_DECODERS.get(cls) or _class_decoder(cls))(value)
    except _At as e:
        sub = _render(e.parts)
        full = f"{path}.{sub}" if path and sub and not sub.startswith("[") else path + sub
        raise DecodeError(e.message, full) from None
