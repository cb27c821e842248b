"""The compiled Avro readers (Cython twins, ``compile_detectors.py``) read exactly what the
generated Python readers read, and fail exactly where and why they fail.

Each twin is compared with the plain reader exec'd from the same generator, on the contract's
agent-steps records: values drawn from the schema (every long up to 2**63, so every varint
length), corrupted and cut bodies, arbitrary bytes, every varint length of an int and a long
field spliced into a real event, and input other than ``bytes``. The build is this checkout's
(what scripts/setup.sh makes and every wheel ships); without Cython or a C compiler these tests
are skipped, saying so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_avro_decoder import CUTS, EDITS, contract_values, encode, mutate, same

import tripwire.detectors as detectors
from tripwire.schemas import avro_decoder
from tripwire.schemas.avro_decoder import AvroDecodeError, generate_source, install_compiled
from tripwire.schemas.codec import StepBatchCodec
from tripwire.schemas.step_columns import StepColumnDecoder
from tripwire.streams import compiled_readers

ROOT = Path(__file__).resolve().parent.parent
COMPILED = Path(detectors.__file__).resolve().parent / "compiled"

STEPS = StepBatchCodec()
EVENT = STEPS.event_codec._schema
BATCH = STEPS.batch_codec._schema
NAMED = EVENT["__named_schemas"]
# (twin module, schema, named, generator options): what compile_detectors builds.
READERS: dict[str, tuple[Any, Any, dict[str, bool]]] = {
    "avro_step_batch": (BATCH, None, {}),
    "avro_step_event": (EVENT, None, {}),
    "avro_step_columns": (EVENT, NAMED, {"columns": True}),
    "avro_step_frames": (EVENT, NAMED, {"frames": True}),
}


@pytest.fixture(scope="module", autouse=True)
def installed(current_build: Path) -> None:
    """This checkout's build (``conftest.current_build``), installed here: the readers the
    build compiles are the ones below."""
    manifest = json.loads((current_build / "manifest.json").read_text())
    assert set(manifest["avro_readers"]) == set(READERS)
    assert compiled_readers.load(current_build).startswith("compiled twins installed")


def plain(name: str) -> Any:
    """The generated Python reader the twin ``name`` stands for."""
    schema, named, options = READERS[name]
    namespace = dict(avro_decoder._HELPERS)
    exec(compile(generate_source(schema, named, **options), "<plain>", "exec"), namespace)  # noqa: S102
    return namespace["read"]


def twin(name: str) -> Any:
    schema, named, options = READERS[name]
    source = generate_source(schema, named, **options)
    reader = avro_decoder._build(source)
    assert reader.__module__ == name, f"{name} is not the compiled twin: the build is stale"
    return reader


def outcome(read: Any, *args: Any) -> tuple[str, Any]:
    """("ok", value) or ("error", reason): AvroDecodeError is the only failure allowed."""
    try:
        return "ok", read(*args)
    except AvroDecodeError as e:
        return "error", e.reason


def columns_outcome(read: Any, body: bytes, pos: int) -> tuple[str, Any]:
    cols: list[list[Any]] = [[] for _ in EVENT["fields"]]
    kind, value = outcome(read, body, pos, cols)
    return kind, (value, cols) if kind == "ok" else value


def both_agree(name: str, body: bytes, pos: int = 0) -> tuple[str, Any]:
    if name == "avro_step_columns":
        a, b = columns_outcome(twin(name), body, pos), columns_outcome(plain(name), body, pos)
    elif name == "avro_step_frames":
        a = columns_outcome(lambda f, p, c: twin(name)([f], p, c), body, pos)
        b = columns_outcome(lambda f, p, c: plain(name)([f], p, c), body, pos)
    else:
        a, b = outcome(twin(name), body, pos), outcome(plain(name), body, pos)
    # same() compares floats bit for bit (NaN costs), recursing into lists, not tuples
    assert a[0] == b[0] and (same(list(a[1]), list(b[1])) if a[0] == "ok" else a[1] == b[1]), (
        a, b)
    return a


def body_of(name: str, data: st.DataObject) -> bytes:
    if name == "avro_step_batch":
        return encode(BATCH, data.draw(contract_values("StepBatch")))
    if name == "avro_step_columns":  # the bare events array a StepBatch body is
        return encode(BATCH, data.draw(contract_values("StepBatch")))
    return encode(EVENT, data.draw(contract_values("StepEvent")))


@pytest.mark.parametrize("name", list(READERS))
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_twins_read_contract_values_as_the_generated_readers_do(
        name: str, data: st.DataObject) -> None:
    assert both_agree(name, body_of(name, data))[0] == "ok"


@pytest.mark.parametrize("name", list(READERS))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), edits=EDITS, cut=CUTS)
def test_twins_fail_where_and_why_the_generated_readers_fail(
        name: str, data: st.DataObject, edits: list[tuple[int, int, int]], cut: int) -> None:
    body = body_of(name, data)
    corrupted = mutate(body, edits, cut)
    assume(corrupted != body)
    both_agree(name, corrupted)


@pytest.mark.parametrize("name", list(READERS))
@settings(max_examples=300)
@given(body=st.binary(max_size=300), pos=st.integers(0, 4))
def test_twins_agree_on_arbitrary_bytes(name: str, body: bytes, pos: int) -> None:
    both_agree(name, body, pos)


def zigzag(n: int) -> int:
    return (n << 1) ^ (n >> 63) if n < 0 else n << 1


def varint(u: int, pad: int = 0) -> bytes:
    """``u`` as a varint, with ``pad`` redundant continuation bytes (a longer encoding)."""
    out = bytearray()
    while True:
        out.append((u & 0x7F) | 0x80)
        u >>= 7
        if not u:
            break
    out.extend([0x80] * pad)
    out[-1] &= 0x7F
    return bytes(out)


VARINTS = sorted({
    *(varint(zigzag(v)) for v in (0, -1, 63, -64, 64, 8191, -8192, 8192, 2**31 - 1, -(2**31),
                                  2**31, -(2**31) - 1, 2**32, 2**48, 2**55 - 1, 2**55, 2**62,
                                  2**63 - 1, -(2**63))),
    *(varint(u) for u in (2**32 - 1, 2**32, 2**56 - 1, 2**56, 2**63, 2**64 - 1, 2**64, 2**70)),
    *(varint(zigzag(v), pad) for v in (0, 5, -5, 300) for pad in range(1, 10)),
    b"\x80", b"\xff\xff", b"\xff" * 8, b"\xff" * 9, b"\xff" * 11,
})


@pytest.mark.parametrize("field", ["ts", "step"])
@pytest.mark.parametrize("encoded", VARINTS, ids=lambda b: b.hex())
def test_every_varint_length_of_a_long_and_an_int(field: str, encoded: bytes) -> None:
    body = encode(EVENT, an_event(event_id="", ts=0, agent_id="", run_id="", step=0))
    # event_id "", ts 0, agent_id "", agent_version null, run_id "": five zero bytes, then step
    at = {"ts": 1, "step": 5}[field]
    assert body[at] == 0 and body[:5] == b"\x00" * 5
    spliced = body[:at] + encoded + body[at + 1:]
    for name in ("avro_step_event", "avro_step_frames"):
        both_agree(name, spliced)


def an_event(**fields: Any) -> dict[str, Any]:
    return {**dict.fromkeys(f["name"] for f in EVENT["fields"]),
            "event_id": "e", "ts": 1, "agent_id": "a", "run_id": "r", "step": 1,
            "kind": "tool_call", "input_tokens": 1, "output_tokens": 2, "cost_usd": 0.5,
            "attributes": {"k": "v"}, **fields}


@pytest.mark.parametrize("name", ["avro_step_event", "avro_step_batch"])
def test_input_other_than_bytes_reads_as_the_generated_reader_reads_it(name: str) -> None:
    body = (encode(BATCH, {"events": [an_event(), an_event(event_id="f")]})
            if name == "avro_step_batch" else encode(EVENT, an_event()))
    for value in (bytearray(body),):  # the plain readers take bytes-like with .decode
        assert same(list(twin(name)(value, 0)), list(plain(name)(body, 0)))
    cols: list[list[Any]] = [[] for _ in EVENT["fields"]]
    assert twin("avro_step_frames")([bytearray(encode(EVENT, an_event()))], 0, cols) == 1
    assert cols[0] == ["e"]


def test_the_writer_and_the_worker_read_with_the_twins() -> None:
    decoder = StepColumnDecoder()
    assert decoder._read.__module__ == "avro_step_columns"
    assert decoder._read_frames.__module__ == "avro_step_frames"
    codec = StepBatchCodec()
    assert codec.batch_codec._read_own.__module__ == "avro_step_batch"
    assert codec.event_codec._read_own.__module__ == "avro_step_event"


def test_a_twin_of_another_source_is_never_used() -> None:
    class Stranger:
        KEY = "0" * 64
        _plain = None

        @staticmethod
        def read(buf: bytes, pos: int) -> Any:
            raise AssertionError("a twin of another source ran")

    install_compiled([Stranger])
    try:
        schema = {"type": "record", "name": "Other", "fields": [{"name": "x", "type": "long"}]}
        assert avro_decoder.compile_reader(schema)(b"\x04", 0) == ({"x": 2}, 1)
    finally:
        avro_decoder._COMPILED.pop(Stranger.KEY)


def test_the_generated_readers_run_when_asked() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from tripwire.streams import compiled_readers as c; "
         "from tripwire.schemas.step_columns import StepColumnDecoder as D; "
         "print(c.RUNNING); print(D()._read.__module__)"],
        capture_output=True, text=True, env={**os.environ, detectors.PURE_ENV: "1"})
    assert done.returncode == 0, done.stderr
    running, module = done.stdout.splitlines()
    assert running == f"generated Python ({detectors.PURE_ENV} is set)"
    assert module == "None"  # exec'd from the generated source, not a twin


def test_a_broken_build_leaves_the_generated_readers_running(tmp_path: Path) -> None:
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"ext_suffix": suffix, "sources": {}, "avro_readers": {"avro_step_batch": "0"}}))
    assert compiled_readers.load(tmp_path).startswith(
        "generated Python (compiled reader avro_step_batch does not load")
    (tmp_path / "manifest.json").write_text(json.dumps({"ext_suffix": ".other.so"}))
    assert compiled_readers.load(tmp_path) == (
        f"generated Python (built for .other.so, this interpreter loads {suffix})")
    (tmp_path / "manifest.json").write_text("{not json")
    assert compiled_readers.load(tmp_path).startswith("generated Python (no usable compiled")
    assert compiled_readers.load(tmp_path / "none") == "generated Python (no compiled build)"
