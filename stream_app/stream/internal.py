"""Messages of the internal topics, parsed and checked: forwarded ratings (`<app_id>-item-updates`) and
catalogue entries (`<app_id>-catalogue`). No Kafka here.

Only workers write these topics, but a bug, a topic shared by mistake or a hand-written message must not
reach the item table or the catalogue half-checked: whatever the bytes, a parser returns a checked value or
raises EventError with a reason of `events.REASONS` (a forward becomes a dead letter; a bad catalogue entry
is logged and skipped).
"""

from __future__ import annotations

import binascii
import math
import numbers
from typing import NamedTuple

import numpy as np

from stream_app.errors import EventError
from stream_app.stream import events as ev
from stream_app.stream import state as st

INTERNAL_MAX_BYTES = 1 << 30


class Forwarded(NamedTuple):
    """A rating as the item side sees it (the internal item-updates topic)."""

    event_id: str
    item_id: str
    user_id: str
    rates: tuple[float | None, float | None]
    ts: float
    user_vector: np.ndarray
    user_features: st.Sparse


class CatalogueEntry(NamedTuple):
    """An item's vector and encoded side data as another worker's catalogue needs them."""

    item_id: str
    vector: np.ndarray
    features: st.Sparse
    n_ratings: int | None
    model_version: str | None


def parse_forwarded(raw: bytes | None) -> Forwarded:
    """`{"event_id", "item_id", "user_id", "rates": [stars, thumbs], "ts", "user_vector", "user_features"}`
    (events.ItemUpdate as the user side writes it); raises EventError."""
    d = ev.load_object(raw, INTERNAL_MAX_BYTES)
    rates = ev.required(d, "rates")
    if not isinstance(rates, list) or len(rates) != 2 or not all(x is None or _finite(x) for x in rates):
        raise EventError(ev.BAD_TYPE, f"rates must be [stars or null, thumbs or null], got {rates!r:.100}")
    return Forwarded(ev.parse_id(d, "event_id"), ev.parse_id(d, "item_id"), ev.parse_id(d, "user_id"),
                     (st.opt_float(rates[0]), st.opt_float(rates[1])), ev.parse_ts(ev.required(d, "ts")),
                     _vector(ev.required(d, "user_vector"), "user_vector"),
                     _sparse(ev.required(d, "user_features"), "user_features"))


def parse_catalogue_entry(key: bytes | None, raw: bytes | None, n_dim: int) -> CatalogueEntry:
    """A catalogue record: key = item id, value `{"vector", "features", "n_ratings", "model_version"}`
    (item_batch.catalogue_entry), its vector `n_dim` wide; raises EventError."""
    if not isinstance(key, bytes | bytearray):
        raise EventError(ev.MISSING_FIELD, "catalogue record without a key (item id)")
    try:
        item_id = ev.parse_id({"item_id": bytes(key).decode("utf-8")}, "item_id")
    except UnicodeDecodeError:
        raise EventError(ev.BAD_ID, "catalogue key is not UTF-8") from None
    d = ev.load_object(raw, INTERNAL_MAX_BYTES)
    vector = _vector(ev.required(d, "vector"), "vector")
    if len(vector) != n_dim:
        raise EventError(ev.BAD_TYPE, f"vector of {len(vector)} values; the model's are {n_dim} wide")
    n_ratings, model_version = d.get("n_ratings"), d.get("model_version")
    if n_ratings is not None and (isinstance(n_ratings, bool) or not isinstance(n_ratings, int) or n_ratings < 0):
        raise EventError(ev.BAD_TYPE, f"n_ratings must be a count, got {n_ratings!r:.100}")
    if model_version is not None and not isinstance(model_version, str):
        raise EventError(ev.BAD_TYPE, f"model_version must be a string, got {model_version!r:.100}")
    return CatalogueEntry(item_id, vector, _sparse(ev.required(d, "features"), "features"), n_ratings, model_version)


def _finite(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _vector(value, key: str) -> np.ndarray:
    """A packed float32 vector (state.pack_vector), finite."""
    if not isinstance(value, str):
        raise EventError(ev.BAD_TYPE, f"{key} must be a base64 string, got {value!r:.100}")
    try:
        vector = st.unpack_vector(value)
    except (binascii.Error, ValueError):
        raise EventError(ev.BAD_TYPE, f"{key} is not base64 of float32 values: {value[:60]!r}") from None
    if not np.all(np.isfinite(vector)):
        raise EventError(ev.BAD_TYPE, f"{key} holds non-finite values")
    return vector


def _sparse(value, key: str) -> st.Sparse:
    """Encoded side data as [[index, value], ...]: non-negative integer indices, finite values."""
    if not isinstance(value, list) or not all(
            isinstance(p, list) and len(p) == 2 and type(p[0]) is int and p[0] >= 0 and _finite(p[1]) for p in value):
        raise EventError(ev.BAD_TYPE, f"{key} must be [[index, value], ...], got {value!r:.100}")
    return tuple((k, float(v)) for k, v in value)
