"""Input and output events of the streaming service: parsing and validation of raw bytes, plain-JSON records.

Inputs arrive as raw bytes (any Kafka client writes them; no Faust envelope), are checked here and
become plain dataclass records; anything that fails becomes an `EventError(reason, detail)` whose reason is
one of `REASONS` and lands in the dead-letters topic. Outputs are records serialized as plain JSON
(`to_representation()`: their fields, nothing else). No Kafka here.

Dead-letter reasons (the one place they are defined):
  oversized            the payload is larger than `max_event_bytes`
  unparseable_json     not UTF-8, not JSON, NaN/Infinity literals, or nested too deeply (integers of more
                       than 300 digits are read as infinite, so the field's own check refuses them)
  not_an_object        valid JSON but not an object (a list, a string, null, ...)
  missing_field        a required field is absent or null (event_id, user_id, item_id, rating, ts,
                       request_id)
  bad_type             a field has the wrong type or value: rating not a number/object, context not an
                       object, side data of the wrong type (strings holding lone surrogates, integers
                       beyond +-(2^53 - 1)), n not an integer in 1..1000; on the internal item-updates
                       topic, any malformed field
  bad_id               an id (event_id, user_id, item_id, request_id) is not a string or integer, or is
                       empty or blank, longer than 256 characters, or holds control characters, lone
                       surrogates or invisible format characters (zero-width spaces, joiners outside
                       emoji sequences, BOM, bidirectional overrides, line/paragraph separators: ids
                       that look alike must be alike). Ids are opaque: any other Unicode is kept as
                       given (no normalisation), and integers, negative ones included, become their
                       decimal string ("-5")
  bad_timestamp        ts is neither finite epoch seconds between 1900 and 2100 nor an ISO 8601 string
  rating_out_of_range  stars outside the model's rating scale, or thumbs other than 0/1
  unknown_rate         a rate name the model does not know (known: stars, thumbs)
  processing_error     not a parsing outcome: a valid-looking event the worker failed to process (a bug or
                       a poisoned model input); the worker logs the traceback and goes on
"""

from __future__ import annotations

import json
import math
import numbers
import time
import unicodedata
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

import numpy as np

from stream_app.data.features import item_side_from_event, user_side_from_event
from stream_app.errors import EventError

OVERSIZED = "oversized"
UNPARSEABLE_JSON = "unparseable_json"
NOT_AN_OBJECT = "not_an_object"
MISSING_FIELD = "missing_field"
BAD_TYPE = "bad_type"
BAD_ID = "bad_id"
BAD_TIMESTAMP = "bad_timestamp"
RATING_OUT_OF_RANGE = "rating_out_of_range"
UNKNOWN_RATE = "unknown_rate"
PROCESSING_ERROR = "processing_error"
REASONS = (OVERSIZED, UNPARSEABLE_JSON, NOT_AN_OBJECT, MISSING_FIELD, BAD_TYPE, BAD_ID, BAD_TIMESTAMP,
           RATING_OUT_OF_RANGE, UNKNOWN_RATE, PROCESSING_ERROR)

MAX_ID_CHARS = 256
MAX_INT_DIGITS = 300  # longer JSON integers are read as +-inf (see _parse_int)
INVISIBLE = ("Cf", "Zl", "Zp")  # Unicode categories refused in ids (zero-width, BOM, bidi controls, separators)
MIN_TS = -2_208_988_800.0  # 1900-01-01T00:00:00Z
MAX_TS = 4_102_444_800.0  # 2100-01-01T00:00:00Z
MAX_N = 1000
RAW_TEXT_LIMIT = 4096  # characters of a rejected payload kept in its dead letter


# ---------------------------------------------------------------------------------------------- records

class _Plain:
    """A record that is plain JSON on the wire (the worker publishes `to_representation()`)."""

    def to_representation(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def dumps(self) -> bytes:
        return json.dumps(self.to_representation()).encode()


@dataclass
class RatingEvent(_Plain):
    event_id: str
    user_id: str
    item_id: str
    rating: Any  # as given: a number (stars) or an object of named rates
    rates: list  # [stars scaled to -1..1 or None, thumbs 0/1 or None]
    ts: float  # epoch seconds
    context: dict | None = None


@dataclass
class UserEvent(_Plain):
    event_id: str
    user_id: str
    side: dict  # known side-data fields only (gender, age, occupation, zip), type-checked


@dataclass
class ItemEvent(_Plain):
    event_id: str
    item_id: str
    side: dict  # known side-data fields only (title, year, genres), type-checked


@dataclass
class RecommendRequest(_Plain):
    request_id: str
    user_id: str
    n: int


@dataclass
class ItemUpdate(_Plain):
    """Internal (repartitioned by item id): one rating, as seen by the item side."""

    event_id: str
    item_id: str
    user_id: str
    rates: list
    ts: float
    user_vector: str  # the rater's vector right after this rating was folded in (state.pack_vector)
    user_features: list  # the rater's encoded side data, sparse [[index, value], ...]


@dataclass
class UserVectorUpdate(_Plain):
    user_id: str
    vector: list
    n_ratings: int
    model_version: str
    ts: float


@dataclass
class ItemVectorUpdate(_Plain):
    item_id: str
    vector: list
    n_ratings: int
    model_version: str
    ts: float


@dataclass
class Recommendations(_Plain):
    user_id: str
    # [{"item_id": str, "score": float, "rank_score": float}], best first: ranked by rank_score (predicted
    # stars + the popularity term, Recommender.rank_scores); score = the predicted stars
    items: list
    model_version: str
    ts: float
    request_id: str | None = None  # only on the wire when answering a request

    def to_representation(self) -> dict[str, Any]:
        payload = dict(super().to_representation())
        if payload.get("request_id") is None:
            payload.pop("request_id", None)
        return payload


@dataclass
class DeadLetter(_Plain):
    source_topic: str
    partition: int
    offset: int
    raw: str | None  # the payload as text (invalid UTF-8 replaced), truncated with a marker; None for null
    reason: str
    detail: str
    ts: float


VectorUpdate = UserVectorUpdate | ItemVectorUpdate


def vector_update(side: str, entity_id: str, vector, n_ratings: int, model_version: str,
                  ts: float | None = None) -> UserVectorUpdate | ItemVectorUpdate:
    cls = UserVectorUpdate if side == "user" else ItemVectorUpdate
    fields = {f"{side}_id": entity_id, "vector": plain_floats(vector), "n_ratings": int(n_ratings),
              "model_version": model_version, "ts": time.time() if ts is None else ts}
    return cls(**fields)


SCORE_DECIMALS = 4  # scores on the wire: 4.2965, not 4.296545505523682


def recommendations(user_id: str, items: list[tuple[str, float]], model_version: str,
                    request_id: str | None = None, rank_scores: list[float] | None = None) -> Recommendations:
    """A top-N list of (item id, predicted stars), best first, with each item's rank score if given."""
    entries = [{"item_id": i, "score": round(_finite(s), SCORE_DECIMALS)} for i, s in items]
    for entry, rank in zip(entries, rank_scores or [], strict=False):
        entry["rank_score"] = round(_finite(rank), SCORE_DECIMALS)
    return Recommendations(user_id=user_id, items=entries, model_version=model_version, ts=time.time(),
                           request_id=request_id)


def dead_letter(source_topic: str, partition: int, offset: int, raw: bytes | None, error: EventError,
                ts: float | None = None) -> DeadLetter:
    return DeadLetter(source_topic=source_topic, partition=int(partition), offset=int(offset),
                      raw=raw_text(raw), reason=error.reason, detail=error.detail[:1000],
                      ts=time.time() if ts is None else ts)


def raw_text(raw: bytes | None, limit: int = RAW_TEXT_LIMIT) -> str | None:
    """The payload as text for a dead letter: invalid UTF-8 replaced, at most `limit` characters + marker."""
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    text = bytes(raw[: limit * 4]).decode("utf-8", "replace")
    if len(text) > limit or len(raw) > limit * 4:
        return text[:limit] + f"...[truncated: {len(raw)} bytes in all]"
    return text


def plain_floats(vector, decimals: int = 6) -> list[float]:
    """JSON numbers of a (float32) vector: finite (else 0.0), rounded (float32 holds ~7 significant digits)."""
    values = np.asarray(vector, np.float64)
    return np.round(np.where(np.isfinite(values), values, 0.0), decimals).tolist()


def _finite(x) -> float:
    x = float(x)
    return x if math.isfinite(x) else 0.0


# ---------------------------------------------------------------------------------------------- parsing

def load_object(raw: bytes | None, max_bytes: int) -> dict:
    """Raw bytes -> a JSON object, or EventError (oversized, unparseable_json, not_an_object)."""
    if raw is None:
        raise EventError(NOT_AN_OBJECT, "empty (null) message value")
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if len(raw) > max_bytes:
        raise EventError(OVERSIZED, f"{len(raw)} bytes > max_event_bytes {max_bytes}")
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EventError(UNPARSEABLE_JSON, f"not UTF-8: {exc}") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_int=_parse_int)
    except RecursionError:
        raise EventError(UNPARSEABLE_JSON, "JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError is a ValueError
        raise EventError(UNPARSEABLE_JSON, str(exc)[:300]) from None
    if not isinstance(value, dict):
        raise EventError(NOT_AN_OBJECT, f"expected a JSON object, got {_json_type(value)}")
    return value


def parse_rating(raw: bytes | None, schema, max_bytes: int) -> RatingEvent:
    """A rating event `{"event_id", "user_id", "item_id", "rating", "ts", "context"?}`; raises EventError."""
    d = load_object(raw, max_bytes)
    event_id = parse_id(d, "event_id")
    user_id = parse_id(d, "user_id")
    item_id = parse_id(d, "item_id")
    rating = required(d, "rating")
    if isinstance(rating, bool) or not isinstance(rating, numbers.Real | dict):
        raise EventError(BAD_TYPE, f"rating must be a number or an object of rates, got {_json_type(rating)}")
    rates = schema.rates_from_event(rating)
    ts = parse_ts(required(d, "ts"))
    context = d.get("context")
    if context is not None and not isinstance(context, dict):
        raise EventError(BAD_TYPE, f"context must be an object, got {_json_type(context)}")
    return RatingEvent(event_id=event_id, user_id=user_id, item_id=item_id, rating=rating,
                       rates=[None if math.isnan(x) else float(x) for x in rates], ts=ts, context=context)


def parse_user(raw: bytes | None, max_bytes: int) -> UserEvent:
    """A user create/update event `{"event_id", "user_id", ...side data}`; raises EventError."""
    d = load_object(raw, max_bytes)
    return UserEvent(event_id=parse_id(d, "event_id"), user_id=parse_id(d, "user_id"),
                     side=user_side_from_event(d))


def parse_item(raw: bytes | None, max_bytes: int) -> ItemEvent:
    """An item create/update event `{"event_id", "item_id", ...side data}`; raises EventError."""
    d = load_object(raw, max_bytes)
    return ItemEvent(event_id=parse_id(d, "event_id"), item_id=parse_id(d, "item_id"),
                     side=item_side_from_event(d))


def parse_request(raw: bytes | None, max_bytes: int, default_n: int) -> RecommendRequest:
    """A recommendation request `{"request_id", "user_id", "n"?}`; raises EventError."""
    d = load_object(raw, max_bytes)
    request_id = parse_id(d, "request_id")
    user_id = parse_id(d, "user_id")
    n = d.get("n")
    if n is None:
        n = default_n
    elif not _is_int_like(n) or not 1 <= n <= MAX_N:
        raise EventError(BAD_TYPE, f"n must be an integer in 1..{MAX_N}, got {n!r}")
    return RecommendRequest(request_id=request_id, user_id=user_id, n=int(n))


def parse_id(d: dict, key: str) -> str:
    """A string or integer id, normalised to str; raises EventError (missing_field or bad_id)."""
    value = required(d, key)
    if isinstance(value, bool):
        raise EventError(BAD_ID, f"{key} must be a string or an integer, got {json.dumps(value)}")
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        if not value.is_integer():
            raise EventError(BAD_ID, f"{key} must be a string or an integer, got {value!r}")
        text = str(int(value))
    elif isinstance(value, str):
        text = value
    else:
        raise EventError(BAD_ID, f"{key} must be a string or an integer, got {_json_type(value)}")
    if not text.strip():
        raise EventError(BAD_ID, f"{key} is empty")
    if len(text) > MAX_ID_CHARS:
        raise EventError(BAD_ID, f"{key} is longer than {MAX_ID_CHARS} characters ({len(text)})")
    if text.isascii() and text.isprintable():  # the usual id: no control or format characters possible
        return text
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in text):
        raise EventError(BAD_ID, f"{key} holds control characters or lone surrogates: {text[:40]!r}")
    if any(unicodedata.category(c) in INVISIBLE and not _emoji_joiner(text, k) for k, c in enumerate(text)):
        raise EventError(BAD_ID, f"{key} holds invisible format characters: {text[:40]!r}")
    return text


def _emoji_joiner(text: str, k: int) -> bool:
    """A zero-width joiner inside an emoji sequence (👩‍💻): between a symbol (or its modifier/variation
    selector) and a symbol. Elsewhere it is an invisible character like any other."""
    if text[k] != "\u200d" or k == 0 or k + 1 == len(text):
        return False
    return (unicodedata.category(text[k - 1]) in ("So", "Sk", "Mn")
            and unicodedata.category(text[k + 1]) == "So")


def parse_ts(value) -> float:
    """Epoch seconds (int/float) or an ISO 8601 string (naive = UTC) -> float seconds; EventError otherwise."""
    if isinstance(value, bool):
        raise EventError(BAD_TIMESTAMP, f"ts must be epoch seconds or ISO 8601, got {json.dumps(value)}")
    if isinstance(value, numbers.Real):
        ts = float(value)
        if not math.isfinite(ts):
            raise EventError(BAD_TIMESTAMP, "ts is not finite")
        if not MIN_TS <= ts < MAX_TS:
            hint = " (milliseconds? give seconds)" if MAX_TS <= ts < MAX_TS * 1000 else ""
            raise EventError(BAD_TIMESTAMP, f"ts {ts:g} is outside 1900..2100 in epoch seconds{hint}")
        return ts
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise EventError(BAD_TIMESTAMP, f"ts {value[:60]!r} is not ISO 8601") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        try:
            seconds = moment.timestamp()
        except (OverflowError, ValueError, OSError):
            raise EventError(BAD_TIMESTAMP, f"ts {value[:60]!r} is out of range") from None
        return parse_ts(seconds)
    raise EventError(BAD_TIMESTAMP, f"ts must be epoch seconds or ISO 8601, got {_json_type(value)}")


def required(d: dict, key: str):
    """d[key]; EventError(missing_field) if it is absent or null."""
    value = d.get(key)
    if value is None:
        raise EventError(MISSING_FIELD, f"{key} is missing" + (" (null)" if key in d else ""))
    return value


def _parse_int(text: str):
    """JSON integers beyond the float range (over 300 digits) become +-inf, like 1e999 does: every numeric
    check then refuses them with its own reason, instead of an OverflowError deep in a check."""
    return int(text) if len(text) <= MAX_INT_DIGITS else float(text)


def _is_int_like(value) -> bool:
    return (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
            and float(value).is_integer())


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, numbers.Real):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
