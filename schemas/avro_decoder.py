"""Schema-specialised Avro binary decoder: Python source generated per schema, exec'd once.

fastavro interprets the schema for every value it reads (a dispatch on the type name, a
file-like ``read`` per primitive), which caps the stream worker at a fraction of its event
rate. Here the schema walk happens once, at compile time: the generated function reads a
``bytes`` object at an integer offset, builds records with their fields in schema order
(small ones as dict literals, large ones by filling a copied template, which also makes null
fields free) and handles the common one- and two-byte varints inline, so the per-value cost
is a handful of bytecodes.

Output is identical to ``fastavro.schemaless_reader`` with the same (writer == reader) schema
and fastavro's default options: ints for int/long, ``str`` symbols for enums, ``dict`` for maps,
``bytes`` for bytes/fixed, plain dicts for records. ``logicalType`` annotations are ignored,
i.e. values come out as their underlying type (the codec strips logical types anyway). Schema
resolution between different writer and reader schemas is not attempted; use fastavro for it.

Malformed input only ever raises :class:`AvroDecodeError`. The reader is stricter than fastavro
where fastavro silently accepts corrupt data: negative union/enum indexes (which fastavro would
resolve Python-style from the end), booleans other than 0/1, varints longer than their type
allows and ints outside 32 bits are rejected. Every length and block count is checked against
the bytes that remain before anything is allocated, so garbage cannot make it allocate
absurd memory or loop for long.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_ZERO_WIDTH_ITEMS",
    "AvroDecodeError",
    "ColumnReader",
    "Reader",
    "compile_column_reader",
    "compile_frame_column_reader",
    "compile_reader",
    "compile_row_reader",
    "compiled_key",
    "generate_cython_source",
    "generate_source",
    "install_compiled",
]

Reader = Callable[[bytes, int], tuple[Any, int]]
"""``reader(buf, pos) -> (value, end)``: decode one value starting at ``buf[pos]``; ``end`` is
the offset just past it (never beyond ``len(buf)``), so callers can reject trailing bytes."""

ColumnReader = Callable[[bytes, int, list[list[Any]]], int]
"""``reader(buf, pos, columns) -> end``: decode an array of records starting at ``buf[pos]``,
appending each record's fields, in schema order, to ``columns[0]``, ``columns[1]``, ...
On error some columns may already hold part of the array: the caller truncates them."""

MAX_ZERO_WIDTH_ITEMS = 1 << 16
"""Cap on the items, across one decoded value, of arrays whose item type encodes to zero bytes
(null, an empty record): the remaining input cannot bound their count, so without a cap a
10-byte body could ask for 2**63 of them, or nested arrays multiply any per-array cap."""

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_COMPLEX = frozenset({"record", "error", "enum", "array", "map", "fixed"})


class AvroDecodeError(ValueError):
    """The bytes are not a valid encoding of the schema. ``reason`` is short and readable."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- slow-path helpers shared by all generated readers ---------------------------------------
# The generated code handles the frequent short encodings inline and calls these for the rest.
# An IndexError from ``buf[pos]`` anywhere below means the input ended early; the generated
# entry point turns it into a "truncated" AvroDecodeError.


def _varint_source(name: str, max_bytes: int, bits: int) -> str:
    """Source of an unrolled zig-zag varint reader: one timestamp per event goes through it.

    Payload bits are gathered in 28-bit words so that every operation but the final combine
    works on single-digit ints, which CPython handles much faster than multi-digit ones.
    """
    lines = [f"def {name}(buf, pos):"]
    for k in range(max_bytes):
        word, shift = f"w{k // 4}", 7 * (k % 4)
        assign = "=" if k % 4 == 0 else "|="
        last, more = (f"b << {shift}", f"(b & 0x7F) << {shift}") if shift else ("b", "b & 0x7F")
        combine = " | ".join(f"(w{j} << {28 * j})" if j else "w0" for j in range(k // 4 + 1))
        done = [f"n = {combine}", f"return (n >> 1) ^ -(n & 1), pos + {k + 1}"]
        lines.append(f"    b = buf[pos + {k}]" if k else "    b = buf[pos]")
        if k < max_bytes - 1:
            lines += [
                "    if b < 0x80:",
                f"        {word} {assign} {last}",
                *(f"        {line}" for line in done),
                f"    {word} {assign} {more}",
            ]
        else:
            too_long = f"varint longer than {max_bytes} bytes at offset {{pos}}"
            too_big = f"varint at offset {{pos}} does not fit in {bits} bits"
            lines += [
                "    if b & 0x80:",
                f"        raise AvroDecodeError(f{too_long!r})",
                f"    {word} {assign} {last}",
                f"    {done[0]}",
                f"    if n >> {bits}:",
                f"        raise AvroDecodeError(f{too_big!r})",
                f"    {done[1]}",
            ]
    return "\n".join(lines) + "\n"


def _varint_readers() -> tuple[Callable[[bytes, int], tuple[int, int]], ...]:
    namespace: dict[str, Any] = {"AvroDecodeError": AvroDecodeError}
    source = _varint_source("_long", 10, 64) + _varint_source("_int", 5, 32)
    exec(compile(source, "<avro varints>", "exec"), namespace)  # noqa: S102 - our own source
    return namespace["_long"], namespace["_int"]


# ``reader(buf, pos) -> (value, end)`` for any long / int, with range checks. The generated
# code inlines one- and two-byte values and calls these for longer ones.
_long, _int = _varint_readers()


def _length(buf: bytes, pos: int) -> tuple[int, int]:
    n, end = _long(buf, pos)
    if n < 0:
        raise AvroDecodeError(f"negative length {n} at offset {pos}")
    return n, end


def _short(pos: int, size: int, end: int) -> AvroDecodeError:
    return AvroDecodeError(
        f"truncated: {size} bytes needed at offset {pos}, {max(end - pos, 0)} left"
    )


def _index(buf: bytes, pos: int, count: int, what: str) -> tuple[int, int]:
    """A union branch or enum symbol index that the inline one-byte lookup did not accept."""
    i, end = _long(buf, pos)
    if not 0 <= i < count:
        raise AvroDecodeError(f"{what} index {i} out of range 0..{count - 1} at offset {pos}")
    return i, end


def _bad_boolean(buf: bytes, pos: int) -> AvroDecodeError:
    return AvroDecodeError(f"boolean byte {buf[pos]:#04x} at offset {pos} is neither 0 nor 1")


def _block_count(buf: bytes, pos: int) -> tuple[int, int]:
    n, pos = _long(buf, pos)
    if n < 0:
        # A negative count is followed by the block's size in bytes, for skipping; like
        # fastavro we read the items anyway and only need to step over it.
        n = -n
        _, pos = _long(buf, pos)
    return n, pos


def _block(buf: bytes, pos: int, end: int, min_size: int) -> tuple[int, int]:
    """Item count of the next array/map block (0 ends the value), checked against the bytes
    left, given that no item encodes to fewer than ``min_size`` (> 0) bytes."""
    n, after = _block_count(buf, pos)
    if n * min_size > end - after:
        raise AvroDecodeError(
            f"truncated: block of {n} items at offset {pos} needs at least "
            f"{n * min_size} bytes, {end - after} left"
        )
    return n, after


def _zero_width_block(buf: bytes, pos: int, budget: list[int]) -> tuple[int, int]:
    """Like ``_block`` for items that take no bytes, charged to the whole value's budget."""
    n, after = _block_count(buf, pos)
    if n > budget[0]:
        raise AvroDecodeError(
            f"block of {n} zero-width items at offset {pos} exceeds the limit of "
            f"{MAX_ZERO_WIDTH_ITEMS} per value"
        )
    budget[0] -= n
    return n, after


_HELPERS: dict[str, Any] = {
    "_long": _long,
    "_int": _int,
    "_length": _length,
    "_short": _short,
    "_index": _index,
    "_bad_boolean": _bad_boolean,
    "_block": _block,
    "_zero_width_block": _zero_width_block,
    "MAX_ZERO_WIDTH_ITEMS": MAX_ZERO_WIDTH_ITEMS,
    "_unpack_double": struct.Struct("<d").unpack_from,
    "_unpack_float": struct.Struct("<f").unpack_from,
    "AvroDecodeError": AvroDecodeError,
    "StructError": struct.error,
}

# --- code generation -------------------------------------------------------------------------


_TYPED_PARAMS = "bytes buf, Py_ssize_t pos, list zw"
# A twin's module binds the helpers as globals, as ``_build`` gives them to the plain source;
# ``_plain`` is the plain reader, set by ``_build``, for input other than bytes.
_TYPED_PROLOGUE = "\n".join([
    "# cython: language_level=3",
    "from tripwire.schemas.avro_decoder import _HELPERS",
    "",
    *(f'{name} = _HELPERS["{name}"]' for name in _HELPERS),
    "_plain = None",
    "",
])


class _Gen:
    """Emits one module of reader functions for one schema.

    ``read(schema, target, ind)`` emits statements that decode a value of ``schema`` into the
    local ``target``, advancing the local ``pos``; ``buf``, ``end`` (= len(buf)) and ``zw``
    (the zero-width item budget, a one-element list shared by the whole decode) are locals
    of every generated function. Named records become functions (recursion needs
    them) but are also inlined up to a small depth, since a call per array item costs about
    as much as decoding a couple of fields. Unions get a general function used when the
    index is not a canonical one-byte varint.
    """

    _MAX_INLINE_DEPTH = 3
    _TEMPLATE_MIN_FIELDS = 8

    def __init__(self, named: Mapping[str, Any], typed: bool = False) -> None:
        self.named = named
        # Typed: Cython source (see ``generate_cython_source``), whose byte reads, lengths and
        # varints are C integers; values are the same Python objects as the plain source's.
        self.typed = typed
        self.ctemps: dict[str, str] = {}  # the current function's C locals: name -> C type
        self.body: list[str] = []
        self.functions: dict[str, str] = {}  # key -> function name; defined or being defined
        self.pending: list[tuple[str, Any, str]] = []  # (function, schema, kind) to emit
        self.constants: dict[str, str] = {}  # source of a constant -> its global name
        self.constant_types: dict[str, str] = {}  # global name -> its Python type (typed)
        self.counter = 0
        self.inlining: list[str] = []  # records being inlined, to stop at recursion
        self.min_sizes: dict[str, int] = {}

    # -- names and constants --

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def ctemp(self, prefix: str, ctype: str = "Py_ssize_t") -> str:
        """A fresh local declared with ``ctype`` at the top of the function being emitted."""
        name = self.fresh(prefix)
        self.ctemps[name] = ctype
        return name

    def header(self, name: str, params: str, typed_params: str, lines: list[str]) -> list[str]:
        """The function's ``def`` line and, typed, its C declarations, before ``lines``."""
        if not self.typed:
            return [f"def {name}({params}):", *lines]
        declared = [f"    cdef {ctype} {local}"
                    for local, ctype in {"end": "Py_ssize_t", **self.ctemps}.items()]
        self.ctemps = {}
        return [f"def {name}({typed_params}):", *declared, *lines]

    def constant(self, source: str, kind: str = "object") -> str:
        """The global holding the value of ``source``, of type ``kind`` (tuple, dict, str)."""
        name = self.constants.get(source)
        if name is None:
            name = self.constants[source] = f"_C{len(self.constants)}"
            self.constant_types[name] = kind
        return name

    def appends(self, count: int, ind: str) -> tuple[list[str], list[str]]:
        """Names for appending to ``cols[0]`` ... ``cols[count - 1]``, and the lines that bind
        them: bound ``append`` methods, or typed, the lists themselves (a C append each)."""
        names = [self.fresh("a") for _ in range(count)]
        if not self.typed:
            return ([f"{a}" for a in names],
                    [f"{ind}{a} = cols[{i}].append" for i, a in enumerate(names)])
        for a in names:
            self.ctemps[a] = "list"
        return ([f"{a}.append" for a in names],
                [f"{ind}{a} = cols[{i}]" for i, a in enumerate(names)])

    def resolve(self, schema: Any) -> Any:
        """A primitive's name, a union's list, or a complex type's dict: references to named
        types followed, and {"type": X} wrappers (what stripping a logicalType leaves around
        a primitive) unwrapped."""
        while True:
            if isinstance(schema, str):
                if schema in _PRIMITIVES:
                    return schema
                try:
                    schema = self.named[schema]
                except KeyError:
                    raise ValueError(f"unknown named type {schema!r}") from None
            elif isinstance(schema, dict) and schema.get("type") not in _COMPLEX:
                schema = schema["type"]
            else:
                return schema

    def min_size(self, schema: Any) -> int:
        """Fewest bytes any value of ``schema`` encodes to: bounds counts by remaining input."""
        schema = self.resolve(schema)
        if isinstance(schema, list):
            return 1
        if isinstance(schema, str):
            return {"null": 0, "float": 4, "double": 8}.get(schema, 1)
        kind = schema["type"]
        if kind == "fixed":
            return int(schema["size"])
        if kind in ("record", "error"):
            name = schema["name"]
            if name not in self.min_sizes:
                self.min_sizes[name] = 0  # provisional, for recursive references
                self.min_sizes[name] = sum(self.min_size(f["type"]) for f in schema["fields"])
            return self.min_sizes[name]
        return 1  # enum, array, map

    # -- statements --

    def read(self, schema: Any, t: str, ind: str) -> list[str]:
        schema = self.resolve(schema)
        if isinstance(schema, list):
            return self.read_union(schema, t, ind)
        if isinstance(schema, str):
            return getattr(self, f"read_{schema}")(t, ind)
        kind = schema["type"]
        if kind in ("record", "error"):
            return self.read_record(schema, t, ind)
        if kind == "enum":
            return self.read_enum(schema, t, ind)
        if kind == "array":
            return self.read_array(schema, t, ind)
        if kind == "map":
            return self.read_map(schema, t, ind)
        if kind == "fixed":
            return self.read_fixed(int(schema["size"]), t, ind)
        raise ValueError(f"unsupported Avro type {kind!r}")

    def read_null(self, t: str, ind: str) -> list[str]:
        return [f"{ind}{t} = None"]

    def read_boolean(self, t: str, ind: str) -> list[str]:
        byte = self.ctemp("c", "int") if self.typed else t
        return [
            f"{ind}{byte} = buf[pos]",
            f"{ind}if {byte} == 1:",
            f"{ind}    {t} = True",
            f"{ind}elif {byte} == 0:",
            f"{ind}    {t} = False",
            f"{ind}else:",
            f"{ind}    raise _bad_boolean(buf, pos)",
            f"{ind}pos += 1",
        ]

    def _varint(self, t: str, ind: str, slow: str) -> list[str]:
        # 1 byte covers -64..63, 2 bytes -8192..8191: steps, enum-ish counts, most token and
        # latency figures. Longer ones (epoch-ms timestamps) go to the slow helper.
        if self.typed:
            return self._typed_varint(t, ind, slow)
        b = self.fresh("b")
        return [
            f"{ind}{t} = buf[pos]",
            f"{ind}if {t} < 0x80:",
            f"{ind}    pos += 1",
            f"{ind}    {t} = ({t} >> 1) ^ -({t} & 1)",
            f"{ind}else:",
            f"{ind}    {b} = buf[pos + 1]",
            f"{ind}    if {b} < 0x80:",
            f"{ind}        {t} = ({t} & 0x7F) | ({b} << 7)",
            f"{ind}        {t} = ({t} >> 1) ^ -({t} & 1)",
            f"{ind}        pos += 2",
            f"{ind}    else:",
            f"{ind}        {t}, pos = {slow}(buf, pos)",
        ]

    def _typed_varint(self, t: str, ind: str, slow: str) -> list[str]:
        # In C: one byte, else up to 8 bytes (56 bits, a 2026 epoch-ms timestamp takes 6)
        # gathered in an unsigned 64-bit word; an int over 32 bits, or a varint of 9 bytes or
        # more, goes to the slow helper, which decodes it or raises as the plain source does.
        c, u, q, s = (self.ctemp("c", "int"), self.ctemp("u", "unsigned long long"),
                      self.ctemp("q"), self.ctemp("s", "int"))
        # An int also takes the slow path past 5 bytes, where ``_int`` refuses it.
        limit = f" or {u} >> 32 or {q} - pos > 5" if slow == "_int" else ""
        return [
            f"{ind}{c} = buf[pos]",
            f"{ind}if {c} < 0x80:",
            f"{ind}    pos += 1",
            f"{ind}    {t} = ({c} >> 1) ^ -({c} & 1)",
            f"{ind}else:",
            f"{ind}    {u} = {c} & 0x7F",
            f"{ind}    {q} = pos + 1",
            f"{ind}    {s} = 7",
            f"{ind}    while True:",
            f"{ind}        {c} = buf[{q}]",
            f"{ind}        {q} += 1",
            f"{ind}        {u} |= (<unsigned long long>({c} & 0x7F)) << {s}",
            f"{ind}        if {c} < 0x80 or {s} == 49:",
            f"{ind}            break",
            f"{ind}        {s} += 7",
            f"{ind}    if {c} >= 0x80{limit}:",
            f"{ind}        {t}, pos = {slow}(buf, pos)",
            f"{ind}    else:",
            f"{ind}        pos = {q}",
            f"{ind}        {t} = (<long long>({u} >> 1)) ^ -(<long long>({u} & 1))",
        ]

    def read_int(self, t: str, ind: str) -> list[str]:
        return self._varint(t, ind, "_int")

    def read_long(self, t: str, ind: str) -> list[str]:
        return self._varint(t, ind, "_long")

    def read_float(self, t: str, ind: str) -> list[str]:
        return [f"{ind}{t} = _unpack_float(buf, pos)[0]", f"{ind}pos += 4"]

    def read_double(self, t: str, ind: str) -> list[str]:
        return [f"{ind}{t} = _unpack_double(buf, pos)[0]", f"{ind}pos += 8"]

    def _sized(self, t: str, ind: str, decode: bool) -> list[str]:
        # ``x & 0x81 == 0`` is a one-byte, non-negative zig-zag length in a single test.
        if self.typed:
            n, e = self.ctemp("n"), self.ctemp("e")
            value = f"buf[pos:{e}].decode('utf-8')" if decode else f"buf[pos:{e}]"
            c = self.ctemp("c", "int")
            return [
                f"{ind}{c} = buf[pos]",
                f"{ind}if {c} & 0x81:",
                f"{ind}    {n}, pos = _length(buf, pos)",
                f"{ind}else:",
                f"{ind}    {n} = {c} >> 1",
                f"{ind}    pos += 1",
                # Compared as a difference: pos + n could overflow a C integer.
                f"{ind}if {n} > end - pos:",
                f"{ind}    raise _short(pos, {n}, end)",
                f"{ind}{e} = pos + {n}",
                f"{ind}{t} = {value}",
                f"{ind}pos = {e}",
            ]
        e = self.fresh("e")
        value = f"buf[pos:{e}].decode()" if decode else f"buf[pos:{e}]"
        return [
            f"{ind}{t} = buf[pos]",
            f"{ind}if {t} & 0x81:",
            f"{ind}    {t}, pos = _length(buf, pos)",
            f"{ind}else:",
            f"{ind}    {t} >>= 1",
            f"{ind}    pos += 1",
            f"{ind}{e} = pos + {t}",
            f"{ind}if {e} > end:",
            f"{ind}    raise _short(pos, {t}, end)",
            f"{ind}{t} = {value}",
            f"{ind}pos = {e}",
        ]

    def read_string(self, t: str, ind: str) -> list[str]:
        return self._sized(t, ind, decode=True)

    def read_bytes(self, t: str, ind: str) -> list[str]:
        return self._sized(t, ind, decode=False)

    def read_fixed(self, size: int, t: str, ind: str) -> list[str]:
        return [
            f"{ind}if pos + {size} > end:",
            f"{ind}    raise _short(pos, {size}, end)",
            f"{ind}{t} = buf[pos:pos + {size}]",
            f"{ind}pos += {size}",
        ]

    def read_enum(self, schema: Mapping[str, Any], t: str, ind: str) -> list[str]:
        symbols = tuple(schema["symbols"])
        # Indexed by the first byte: the symbol for a canonical one-byte index, None for
        # anything else (a negative or out-of-range index, or a multi-byte varint).
        table: list[str | None] = []
        for symbol in symbols[:64]:
            table += [symbol, None]
        by_byte = self.constant(f"{tuple(table)!r} + (None,) * {256 - len(table)}", "tuple")
        all_symbols = self.constant(repr(symbols), "tuple")
        what = self.constant(repr(f"enum {schema['name']}"), "str")
        i = self.fresh("i")
        return [
            f"{ind}{t} = {by_byte}[buf[pos]]",
            f"{ind}if {t} is None:",
            f"{ind}    {i}, pos = _index(buf, pos, {len(symbols)}, {what})",
            f"{ind}    {t} = {all_symbols}[{i}]",
            f"{ind}else:",
            f"{ind}    pos += 1",
        ]

    def read_union(
        self, branches: list[Any], t: str, ind: str, store: str | None = None
    ) -> list[str]:
        """With ``store`` (a statement saving ``t``), a null branch stores nothing: the
        record template already holds None there, and most optional fields are null."""
        fallback = self.function(json.dumps(branches, sort_keys=True), branches, "union")
        index = self.ctemp("c", "int") if self.typed else t
        lines = [f"{ind}{index} = buf[pos]"]
        for i, branch in enumerate(branches[:64]):
            lines.append(f"{ind}{'if' if i == 0 else 'elif'} {index} == {2 * i}:")
            lines.append(f"{ind}    pos += 1")
            if store is not None and self.resolve(branch) == "null":
                continue
            lines.extend(self.read(branch, t, ind + "    "))
            if store is not None:
                lines.append(f"{ind}    {store}")
        lines.append(f"{ind}else:")
        lines.append(f"{ind}    {t}, pos = {fallback}(buf, pos, zw)")
        if store is not None:
            lines.append(f"{ind}    {store}")
        return lines

    def _blocks(self, min_size: int, ind: str, per_item: Callable[[str], list[str]]) -> list[str]:
        """Block loop shared by arrays and maps, after the empty-value fast path."""
        n, k = (self.ctemp("n"), self.ctemp("k")) if self.typed else (
            self.fresh("n"), self.fresh("k"))
        if min_size:
            count = f"_block(buf, pos, end, {min_size})"
        else:
            count = "_zero_width_block(buf, pos, zw)"
        return [
            f"{ind}while True:",
            f"{ind}    {n}, pos = {count}",
            f"{ind}    if not {n}:",
            f"{ind}        break",
            f"{ind}    for {k} in range({n}):",
            *per_item(ind + "        "),
        ]

    def read_array(self, schema: Mapping[str, Any], t: str, ind: str) -> list[str]:
        v = self.fresh("v")
        items = schema["items"]

        def per_item(inner: str) -> list[str]:
            return [*self.read(items, v, inner), f"{inner}{t}.append({v})"]

        return [
            f"{ind}{t} = []",
            f"{ind}if buf[pos] == 0:",
            f"{ind}    pos += 1",
            f"{ind}else:",
            *self._blocks(self.min_size(items), ind + "    ", per_item),
        ]

    def read_map(self, schema: Mapping[str, Any], t: str, ind: str) -> list[str]:
        key, v = self.fresh("key"), self.fresh("v")
        values = schema["values"]

        def per_item(inner: str) -> list[str]:
            return [
                *self.read_string(key, inner),
                *self.read(values, v, inner),
                f"{inner}{t}[{key}] = {v}",
            ]

        min_size = 1 + self.min_size(values)  # the key's length byte at least
        return [
            f"{ind}{t} = {{}}",
            f"{ind}if buf[pos] == 0:",
            f"{ind}    pos += 1",
            f"{ind}else:",
            *self._blocks(min_size, ind + "    ", per_item),
        ]

    def read_record(self, schema: Mapping[str, Any], t: str, ind: str) -> list[str]:
        name = schema["name"]
        if name in self.inlining or len(self.inlining) >= self._MAX_INLINE_DEPTH:
            return [f"{ind}{t}, pos = {self.function(name, schema, 'record')}(buf, pos, zw)"]
        self.inlining.append(name)
        try:
            return self.record_fields(schema, t, ind)
        finally:
            self.inlining.pop()

    def record_fields(self, schema: Mapping[str, Any], t: str, ind: str) -> list[str]:
        fields = schema["fields"]
        lines: list[str] = []
        if len(fields) < self._TEMPLATE_MIN_FIELDS:
            items: list[str] = []
            for field in fields:
                f = self.fresh("f")
                lines.extend(self.read(field["type"], f, ind))
                items.append(f"{field['name']!r}: {f}")
            return [*lines, f"{ind}{t} = {{{', '.join(items)}}}"]
        # Copying a prebuilt dict and storing into it beats a large dict literal, and lets
        # null union branches skip the store entirely (measured: 29 StepEvent fields, about
        # half of them null, ~0.45 us against ~1.3 us for the literal).
        names = tuple(field["name"] for field in fields)
        template = self.constant(f"dict.fromkeys({names!r})", "dict")
        lines.append(f"{ind}{t} = {template}.copy()")
        for field in fields:
            f = self.fresh("f")
            store = f"{t}[{field['name']!r}] = {f}"
            branches = self.resolve(field["type"])
            if isinstance(branches, list) and "null" in map(self.resolve, branches):
                lines.extend(self.read_union(branches, f, ind, store))
            else:
                lines.extend([*self.read(field["type"], f, ind), f"{ind}{store}"])
        return lines

    # -- functions --

    def function(self, key: str, schema: Any, kind: str) -> str:
        name = self.functions.get(key)
        if name is None:
            name = self.functions[key] = self.fresh(f"_read_{kind}")
            self.pending.append((name, schema, kind))
        return name

    def emit_function(self, name: str, schema: Any, kind: str) -> None:
        ind = "    "
        lines = [f"{ind}end = len(buf)"]
        if kind == "record":
            self.inlining.append(schema["name"])
            try:
                lines += [*self.record_fields(schema, "v", ind), f"{ind}return v, pos"]
            finally:
                self.inlining.pop()
        elif kind == "union":
            what = self.constant(repr("union"), "str")
            lines.append(f"{ind}i, pos = _index(buf, pos, {len(schema)}, {what})")
            for i, branch in enumerate(schema):
                lines.append(f"{ind}{'if' if i == 0 else 'elif'} i == {i}:")
                lines.extend(self.read(branch, "v", ind + "    "))
            lines.append(f"{ind}return v, pos")
        else:  # "top": any other schema at the top level
            lines += [*self.read(schema, "v", ind), f"{ind}return v, pos"]
        self.body.extend([*self.header(name, "buf, pos, zw", _TYPED_PARAMS, lines), ""])

    def emit_columns(self, schema: Mapping[str, Any]) -> str:
        """A function reading an array of ``schema`` records into one list per field: no dict
        per record, for a consumer (the ClickHouse sink) that wants columns anyway."""
        ind = "    "
        fields = schema["fields"]
        appends, bind = self.appends(len(fields), ind)
        lines = [f"{ind}end = len(buf)", *bind]

        def per_item(inner: str) -> list[str]:
            out: list[str] = []
            for field, append in zip(fields, appends, strict=True):
                f = self.fresh("f")
                out += [*self.read(field["type"], f, inner), f"{inner}{append}({f})"]
            return out or [f"{inner}pass"]

        self.inlining.append(schema["name"])
        try:
            lines += [
                f"{ind}if buf[pos] == 0:",
                f"{ind}    return pos + 1",
                *self._blocks(self.min_size(schema), ind, per_item),
                f"{ind}return pos",
            ]
        finally:
            self.inlining.pop()
        self.body.extend([*self.header("_read_columns", "buf, pos, cols, zw",
                                       "bytes buf, Py_ssize_t pos, cols, list zw", lines), ""])
        return "_read_columns"

    def emit_row(self, schema: Mapping[str, Any]) -> str:
        """A function reading one ``schema`` record as a tuple of its fields in schema order:
        no dict, and no append per field (a caller transposes many rows at once)."""
        ind = "    "
        lines = [f"{ind}end = len(buf)"]
        names = []
        self.inlining.append(schema["name"])
        try:
            for field in schema["fields"]:
                f = self.fresh("f")
                names.append(f)
                lines += self.read(field["type"], f, ind)
        finally:
            self.inlining.pop()
        lines.append(f"{ind}return ({''.join(f'{n}, ' for n in names)}), pos")
        self.body.extend([*self.header("_read_row", "buf, pos, zw", _TYPED_PARAMS, lines), ""])
        return "_read_row"

    def emit_frames(self, schema: Mapping[str, Any]) -> str:
        """A function reading one ``schema`` record from each of many buffers (bodies of
        framed records, from ``start`` on) into one list per field; each body must end
        exactly where its record does. Returns how many buffers it read."""
        ind, inner = "    ", "        "
        fields = schema["fields"]
        appends, lines = self.appends(len(fields), ind)
        lines += [f"{ind}for buf in frames:", f"{inner}end = len(buf)", f"{inner}pos = start",
                  f"{inner}zw = [MAX_ZERO_WIDTH_ITEMS]"]
        self.inlining.append(schema["name"])
        try:
            for field, append in zip(fields, appends, strict=True):
                f = self.fresh("f")
                lines += [*self.read(field["type"], f, inner), f"{inner}{append}({f})"]
        finally:
            self.inlining.pop()
        lines += [f"{inner}if pos != end:",
                  f'{inner}    raise AvroDecodeError(f"{{end - pos}} trailing bytes")',
                  f"{ind}return len(frames)"]
        if self.typed:
            self.ctemps.update({"buf": "bytes", "pos": "Py_ssize_t"})
        self.body.extend([*self.header("_read_frames", "frames, start, cols",
                                       "frames, Py_ssize_t start, cols", lines), ""])
        return "_read_frames"

    def module(self, schema: Any, columns: bool = False, row: bool = False,
               frames: bool = False) -> str:
        resolved = self.resolve(schema)
        if columns or row or frames:
            if not (isinstance(resolved, dict) and resolved.get("type") in ("record", "error")):
                raise ValueError("a column reader needs a record schema")
        # The message of a read cut short: one buffer says where it ended; of many frames,
        # each frame's reader keeps its own position.
        truncated = 'f"truncated: input ends at offset {len(buf)}"'
        if frames:
            top = self.emit_frames(resolved)
            signature, call = "read(frames, start, cols)", "frames, start, cols"
            truncated = '"truncated: a value ends before its record"'
        elif row:
            top = self.emit_row(resolved)
            signature, call = "read(buf, pos)", "buf, pos, [MAX_ZERO_WIDTH_ITEMS]"
        elif columns:
            top = self.emit_columns(resolved)
            signature, call = "read(buf, pos, cols)", "buf, pos, cols, [MAX_ZERO_WIDTH_ITEMS]"
        elif isinstance(resolved, dict) and resolved.get("type") in ("record", "error"):
            top = self.function(resolved["name"], resolved, "record")
            signature, call = "read(buf, pos)", "buf, pos, [MAX_ZERO_WIDTH_ITEMS]"
        else:
            top = self.function("", resolved, "top")
            signature, call = "read(buf, pos)", "buf, pos, [MAX_ZERO_WIDTH_ITEMS]"
        while self.pending:
            self.emit_function(*self.pending.pop())
        constants = [f"{name} = {source}" for source, name in self.constants.items()]
        if self.typed:
            constants = [f"cdef {self.constant_types[name]} {line}"
                         for line, name in zip(constants, self.constants.values(), strict=True)]
        # The entry point is where every low-level failure becomes an AvroDecodeError: an
        # IndexError can only come from reading buf[pos] past the end (all other indexing
        # is range-checked), struct.error from a float/double cut short.
        # Typed, the C functions take ``bytes`` only; anything else goes to the plain reader
        # (``_plain``, set by ``install_compiled``).
        if not self.typed:
            guard = ""
        elif frames:
            guard = """
    for buf in frames:
        if type(buf) is not bytes:
            return _plain(frames, start, cols)"""
        else:
            args = signature[len("read("):-1]
            guard = f"""
    if type(buf) is not bytes:
        return _plain({args})"""
        entry = f"""
def {signature}:{guard}
    try:
        return {top}({call})
    except (IndexError, StructError):
        raise AvroDecodeError({truncated}) from None
    except UnicodeDecodeError as exc:
        raise AvroDecodeError(f"invalid UTF-8 in string: {{exc.reason}}") from None
    except RecursionError:
        raise AvroDecodeError("value nested too deeply") from None
"""
        prologue = [_TYPED_PROLOGUE] if self.typed else []
        return "\n".join([*prologue, *constants, "", *self.body, entry])


# --- compiled twins ---------------------------------------------------------------------------
# The server compiles the Cython twins of its hot readers (``generate_cython_source``; see
# compile_detectors.py) and installs them here; a reader whose plain source has a twin built by
# this very generator runs compiled (~3.5x faster: 5.1 -> 1.4 us a bench-fleet event into
# columns), any other runs as exec'd Python. Each twin gives the plain reader's values and
# errors (tests/test_compiled_avro_readers.py).

try:
    _GENERATOR = hashlib.sha256(Path(__file__).read_bytes()).digest()
except OSError:  # no source beside the module: no twin can be matched to this generator
    _GENERATOR = b"unreadable generator"
_COMPILED: dict[str, Any] = {}


def compiled_key(source: str) -> str:
    """What names the twin of a plain reader's ``source``: a digest of it and of this
    generator, so a twin built by an older generator, or for another schema, is never used."""
    return hashlib.sha256(_GENERATOR + source.encode()).hexdigest()


def install_compiled(modules: Iterable[Any]) -> int:
    """Use these compiled twins (modules with ``KEY``, ``read`` and ``_plain``) for readers
    built from now on; how many there were."""
    count = 0
    for module in modules:
        _COMPILED[module.KEY] = module
        count += 1
    _build.cache_clear()
    return count


@lru_cache(maxsize=64)
def _build(source: str) -> Any:
    # Keyed by the generated source, which embeds every constant it uses: codecs built
    # repeatedly for the same schema (one per test example, one per worker) compile once.
    namespace = dict(_HELPERS)
    exec(compile(source, "<avro reader>", "exec"), namespace)  # noqa: S102 - our own source
    twin = _COMPILED.get(compiled_key(source)) if _COMPILED else None
    if twin is None:
        return namespace["read"]
    twin._plain = namespace["read"]  # for input other than bytes
    return twin.read


def generate_source(schema: Any, named: Mapping[str, Any] | None = None,
                    columns: bool = False, row: bool = False, frames: bool = False) -> str:
    """The Python source ``compile_reader`` (``compile_column_reader`` with ``columns``,
    ``compile_row_reader`` with ``row``, ``compile_frame_column_reader`` with ``frames``)
    would exec for ``schema`` (for debugging)."""
    if named is None:
        named = schema.get("__named_schemas", {}) if isinstance(schema, dict) else {}
    return _Gen(named).module(schema, columns, row, frames)


def generate_cython_source(schema: Any, named: Mapping[str, Any] | None = None,
                           columns: bool = False, row: bool = False, frames: bool = False) -> str:
    """The Cython twin of :func:`generate_source`'s module: the same reader, with byte reads,
    lengths and varints in C integers (compiled by ``compile_detectors.py``)."""
    if named is None:
        named = schema.get("__named_schemas", {}) if isinstance(schema, dict) else {}
    return _Gen(named, typed=True).module(schema, columns, row, frames)


def compile_reader(schema: Any, named: Mapping[str, Any] | None = None) -> Reader:
    """A reader for bodies written with ``schema``, as parsed by ``fastavro.parse_schema``.

    Named types referenced by name are looked up in ``named``, by default the parsed schema's
    ``__named_schemas``. Raises ValueError for a schema it cannot handle.
    """
    reader: Reader = _build(generate_source(schema, named))
    return reader


def compile_column_reader(record: Any, named: Mapping[str, Any] | None = None) -> ColumnReader:
    """A :data:`ColumnReader` for arrays of ``record`` (a parsed record schema).

    Each value comes out exactly as ``compile_reader`` would put it in the record's dict, and
    malformed input raises AvroDecodeError the same way.
    """
    reader: ColumnReader = _build(generate_source(record, named, columns=True))
    return reader


def compile_row_reader(record: Any, named: Mapping[str, Any] | None = None) -> Reader:
    """A :data:`Reader` of one ``record`` (a parsed record schema) as a tuple of its field
    values in schema order, each as :func:`compile_reader` would put it in the record's dict:
    for a caller that gathers many records and transposes them into columns at once (bare
    StepEvent frames in the ClickHouse writer). Malformed input raises AvroDecodeError."""
    reader: Reader = _build(generate_source(record, named, row=True))
    return reader


FrameColumnReader = Callable[[list[bytes], int, list[list[Any]]], int]
"""``reader(frames, start, columns) -> count``: decode one record from each buffer, starting
at offset ``start`` of each, appending its fields, in schema order, to ``columns[0]``,
``columns[1]``, ...; AvroDecodeError if a buffer is not exactly one record after ``start``
(some columns may then already hold part of the values: the caller truncates them)."""


def compile_frame_column_reader(record: Any,
                                named: Mapping[str, Any] | None = None) -> FrameColumnReader:
    """A :data:`FrameColumnReader` for framed single ``record`` values (bare StepEvent
    frames): what :func:`compile_row_reader` reads from each, straight into the columns,
    without a call, a tuple and a transposition per value (the ClickHouse writer's
    one-event-per-record Avro backlog)."""
    reader: FrameColumnReader = _build(generate_source(record, named, frames=True))
    return reader
