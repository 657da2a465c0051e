"""The stored form of a table row (`EntityState`): a compact, versioned binary encoding. No Kafka here.

Version 1, little-endian:

    b"\\xffRS" b"\\x01"                 magic (never the start of JSON) and version
    u32 H, H bytes of JSON             {"side": {...}, "n": n_ratings, "mv": model_version | null,
                                        "ids": [other ids], "feats": [[[k, v], ...], ...] | null,
                                        "dim": D, "vec": bool, "raters": bool, "seen": S}
    S x 6 bytes                        dedup digests (stream/state.py)
    W x f8                             ts of the W window entries
    W x 2 x f8                         stars, thumbs (NaN = absent)
    D x f4                             the vector, if "vec"
    W x D x f4                         the raters' vectors (item side), if "raters"

A 64-entry item row with 33-wide vectors is ~11 KB instead of ~15 KB of JSON with base64 strings, and
decodes with a few `np.frombuffer` calls instead of 64 base64 decodes.

Rows written before this encoding (JSON objects with positional window lists, vectors as lists or
base64 strings) are still read: `decode_row` recognises them by their first byte and converts them;
the row is written back in the new encoding the next time the entity changes.

Contract: `decode_row` returns a well-formed row (one `encode_row` writes back) or raises `RowDecodeError`,
whatever the bytes; never another exception. The worker dead-letters the events of an entity whose stored
row it cannot decode (`processing.read_rows`) and leaves the row alone.

>>> from stream_app.stream.state import add_rating, new_state
>>> s = new_state(); _ = add_rating(s, "e1", "i1", (0.5, None), 100.0, window=4)
>>> decode_row(encode_row(s)) == s
True
"""

from __future__ import annotations

import json
import struct

import numpy as np

from stream_app.stream.state import EntityState, WindowEntry, opt_float, unpack_vector

MAGIC = b"\xffRS"
VERSION = 1
_HEAD = struct.Struct("<4sI")
DIGEST_BYTES = 6

try:  # orjson when installed (Faust uses it too); the stdlib otherwise
    import orjson as _orjson

    def _dumps(value) -> bytes:
        return _orjson.dumps(value)

    _loads = _orjson.loads
except ImportError:  # pragma: no cover
    def _dumps(value) -> bytes:
        return json.dumps(value, separators=(",", ":")).encode()

    _loads = json.loads


def encode_row(state: EntityState) -> bytes:
    win = state.window
    raters = bool(win) and win[0].vector is not None
    dim = len(state.vector) if state.vector is not None else (len(win[0].vector) if raters else 0)
    header = {"side": state.side, "n": int(state.n_ratings), "mv": state.model_version,
              "ids": [e.other_id for e in win],
              "feats": [e.features or () for e in win] if raters else None,
              "dim": dim, "vec": state.vector is not None, "raters": raters, "seen": len(state.seen)}
    head = _dumps(header)
    parts = [_HEAD.pack(MAGIC + bytes([VERSION]), len(head)), head, bytes.fromhex("".join(state.seen)),
             np.fromiter((e.ts for e in win), np.float64, len(win)).tobytes(),
             np.array([(_nan(e.stars), _nan(e.thumbs)) for e in win], np.float64).reshape(-1, 2).tobytes()]
    if state.vector is not None:
        parts.append(np.asarray(state.vector, "<f4").tobytes())
    if raters:
        parts.append(np.stack([e.vector for e in win]).astype("<f4", copy=False).tobytes())
    return b"".join(parts)


class RowDecodeError(ValueError):
    """Stored bytes that no encoding of this program reads: corrupt, truncated or foreign."""


def decode_row(raw: bytes | bytearray | memoryview | dict | None) -> EntityState | None:
    """A stored row in any encoding this program has written (None stays None); RowDecodeError otherwise."""
    if raw is None:
        return None
    try:
        if isinstance(raw, dict):
            return decode_legacy(raw)
        raw = bytes(raw)
        if raw[:3] != MAGIC:
            return decode_legacy(json.loads(raw))
        return _decode_binary(raw)
    except RowDecodeError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError, struct.error) as exc:
        raise RowDecodeError(f"undecodable table row: {type(exc).__name__}: {str(exc)[:200]}") from None


def _decode_binary(raw: bytes) -> EntityState:
    if len(raw) < _HEAD.size:
        raise RowDecodeError(f"table row of {len(raw)} bytes is shorter than its header")
    magic, size = _HEAD.unpack_from(raw)
    if magic[3] != VERSION:
        raise RowDecodeError(f"table row of encoding version {magic[3]}; this program reads {VERSION}")
    pos = _HEAD.size
    h = _header(_loads(raw[pos:pos + size]))
    pos += size
    w, dim = len(h["ids"]), h["dim"]
    expected = pos + DIGEST_BYTES * h["seen"] + 24 * w + 4 * dim * (h["vec"] + w * h["raters"])
    if len(raw) != expected:
        raise RowDecodeError(f"table row of {len(raw)} bytes; its header describes {expected}")
    seen_hex = raw[pos:pos + DIGEST_BYTES * h["seen"]].hex()
    pos += DIGEST_BYTES * h["seen"]
    seen = [seen_hex[k:k + 2 * DIGEST_BYTES] for k in range(0, len(seen_hex), 2 * DIGEST_BYTES)]
    ts = np.frombuffer(raw, np.float64, w, pos).tolist()
    pos += 8 * w
    rates = np.frombuffer(raw, np.float64, 2 * w, pos).tolist()
    pos += 16 * w
    vector = None
    if h["vec"]:
        vector = np.frombuffer(raw, "<f4", dim, pos).copy()
        pos += 4 * dim
    vectors = np.frombuffer(raw, "<f4", w * dim, pos).reshape(w, dim).copy() if h["raters"] else None
    feats = h["feats"]
    stars, thumbs = rates[0::2], rates[1::2]
    window = [WindowEntry(other, None if stars[j] != stars[j] else stars[j],
                          None if thumbs[j] != thumbs[j] else thumbs[j], ts[j],
                          None if vectors is None else vectors[j],
                          None if feats is None else _pairs(feats[j]))
              for j, other in enumerate(h["ids"])]
    return EntityState(window=window, side=h["side"], vector=vector, n_ratings=h["n"], seen=seen,
                       model_version=h["mv"])


_HEADER_TYPES = {"side": dict, "n": int, "mv": (str, type(None)), "ids": list, "feats": (list, type(None)),
                 "dim": int, "vec": bool, "raters": bool, "seen": int}


def _header(h) -> dict:
    """The binary row's JSON header, checked field by field (a corrupt header must not become a row)."""
    if not isinstance(h, dict):
        raise RowDecodeError("table row header is not a JSON object")
    for key, kind in _HEADER_TYPES.items():
        value = h.get(key)
        if not isinstance(value, kind) or (kind is int and (isinstance(value, bool) or value < 0)):
            raise RowDecodeError(f"table row header field {key!r} is {value!r:.60}")
    if not all(isinstance(other, str) for other in h["ids"]):
        raise RowDecodeError("table row header holds a non-string id")
    if h["raters"] != (h["feats"] is not None) or (h["raters"] and len(h["feats"]) != len(h["ids"])):
        raise RowDecodeError("table row header: rater features do not match the window")
    return h


def _pairs(value) -> tuple[tuple[int, float], ...]:
    """Sparse side data [[index, value], ...] as stored (anything else: TypeError or ValueError)."""
    pairs = tuple([(k, v * 1.0) for k, v in value])  # v * 1.0: a float from a number (-0.0 kept), TypeError otherwise
    for k, _ in pairs:
        if type(k) is not int:
            raise RowDecodeError(f"table row: rater feature index {k!r:.60}")
    return pairs


def decode_legacy(d: dict) -> EntityState:
    """A row of the JSON encoding: {"window": [[other, stars, thumbs, ts(, packed vector, sparse)]], ...}.

    Accepted only if it can be written back in the binary encoding (ids, side data and digests that
    encode_row takes, one vector width)."""
    if not isinstance(d, dict):
        raise RowDecodeError("a JSON table row that is not an object")
    window = []
    for entry in _list(d.get("window")):
        if not isinstance(entry, list) or len(entry) not in (4, 6) or not isinstance(entry[0], str):
            raise RowDecodeError(f"JSON table row: window entry {entry!r:.60}")
        other, stars, thumbs, ts, *rater = entry  # rater: [packed vector, sparse] (item side)
        vector = features = None
        if rater:
            packed, pairs = rater
            vector = _legacy_vector(packed)
            features = _pairs(_list(pairs))
        window.append(WindowEntry(other, opt_float(_number(stars, True)), opt_float(_number(thumbs, True)),
                                  float(_number(ts)), vector, features))
    vector = d.get("vector")
    side, n, model_version = d.get("side") or {}, d.get("n_ratings") or 0, d.get("model_version")
    if not isinstance(side, dict) or type(n) is not int or n < 0 or not isinstance(model_version, str | None):
        raise RowDecodeError("JSON table row: side, n_ratings or model_version of the wrong type")
    state = EntityState(window=window, side=dict(side), vector=None if vector is None else _legacy_vector(vector),
                        n_ratings=n, seen=_list(d.get("seen")), model_version=model_version)
    _check_writable(state)
    return state


def _list(value) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise RowDecodeError(f"JSON table row: expected a list, got {value!r:.60}")
    return list(value)


def _check_writable(state: EntityState) -> None:
    """A legacy row must be one encode_row writes (and decode_row reads back the same)."""
    widths = {len(e.vector) for e in state.window if e.vector is not None}
    if state.vector is not None and state.window and state.window[0].vector is not None:
        widths.add(len(state.vector))
    raters = {e.vector is not None for e in state.window}
    if len(widths) > 1 or len(raters) > 1:
        raise RowDecodeError("JSON table row: window vectors of different widths, or only some with a vector")
    if not all(isinstance(x, str) and len(x) == 2 * DIGEST_BYTES for x in state.seen):
        raise RowDecodeError("JSON table row: seen holds something other than event digests")
    try:
        encode_row(state)
    except (ValueError, TypeError) as exc:  # orjson refuses lone surrogates and integers beyond 64 bits
        raise RowDecodeError(f"JSON table row cannot be written back: {exc}") from None


def _number(value, or_none: bool = False):
    if (value is None and or_none) or (isinstance(value, int | float) and not isinstance(value, bool)):
        return value
    raise RowDecodeError(f"JSON table row: {value!r:.60} where a number belongs")


def _legacy_vector(value) -> np.ndarray:
    if isinstance(value, str):
        return unpack_vector(value).copy()
    return np.array([_number(x) for x in _list(value)], np.float32)


def _nan(x: float | None) -> float:
    return float("nan") if x is None else x


class RowCache:
    """Decoded rows this worker wrote last, so that a hot entity's row is not decoded again on every batch.

    `take(key, raw)` returns the cached row only if the stored bytes are exactly the bytes it was written as
    (a row written by another worker, or recovered from the changelog, is decoded again), and removes it:
    the caller mutates the row, and `put` gives it back once written. A batch that fails in between leaves
    nothing stale behind.
    """

    def __init__(self, size: int = 4096):
        self.size = size
        self._rows: dict[str, tuple[bytes, EntityState]] = {}
        self.hits = self.misses = 0

    def take(self, key: str, raw: bytes | None) -> EntityState | None:
        hit = self._rows.pop(key, None)
        if raw is not None and hit is not None and hit[0] == raw:
            self.hits += 1
            return hit[1]
        self.misses += raw is not None
        return decode_row(raw)

    def clear(self) -> None:
        """Forget every row (on a rebalance: rows of partitions now owned elsewhere would only hold memory)."""
        self._rows.clear()

    def put(self, key: str, raw: bytes, state: EntityState) -> None:
        self._rows[key] = (raw, state)
        if len(self._rows) > self.size:
            del self._rows[next(iter(self._rows))]  # the oldest written
