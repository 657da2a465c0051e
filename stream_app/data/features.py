"""Side-data and rating encoders: small float32 vectors from raw MovieLens-style dicts.

A `FeatureSchema` is fitted on a `RatingData`, saved as JSON in model manifests, and used by the
streaming service to encode side data of JSON events, so every encoder works on plain dicts.

Layouts (a missing or unknown value leaves its whole block at zero, nothing else):
  user:    gender one-hot | age bucket one-hot (<18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+)
           | occupation one-hot
  item:    year scaled to [-1, 1] over the fitted range (clipped), year-missing flag | genres multi-hot
  context: weekday one-hot (Monday first, UTC) | sin, cos of the hour of day
  rates:   stars scaled to [-1, 1] over the rating scale | thumbs (1 if stars >= threshold else 0)
"""

from __future__ import annotations

import math
import numbers
from bisect import bisect_right
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property

import numpy as np

from stream_app.data.dataset import RatingData
from stream_app.errors import EventError

SCHEMA_VERSION = 1
AGE_EDGES = (18, 25, 35, 45, 50, 56)  # ML-1M age codes 1, 18, ..., 56 fall in the bucket they name
RATE_NAMES = ("stars", "thumbs")
CONTEXT_DIM = 9
DEFAULT_YEAR_RANGE = (1900, 2020)
MAX_SAFE_INT = 2**53 - 1  # side-data integers beyond it lose precision in JSON readers and do not fit a row
THUMBS_UP_AT = 0.75  # of the way up the scale: 4 of 1..5 (seed 004: 4-5 up, 1-3 down)

BAD_TYPE, OUT_OF_RANGE, UNKNOWN_RATE = "bad_type", "rating_out_of_range", "unknown_rate"


@dataclass
class FeatureSchema:
    genders: list[str] = field(default_factory=list)
    occupations: list[str] = field(default_factory=list)
    genres: list[str] = field(default_factory=list)
    year_range: tuple[int, int] = DEFAULT_YEAR_RANGE
    rating_scale: tuple[float, float] = (1.0, 5.0)
    thumbs_threshold: float = 4.0
    age_edges: tuple[int, ...] = AGE_EDGES

    # ------------------------------------------------------------------ fitting and (de)serializing

    @classmethod
    def fit(cls, data: RatingData) -> FeatureSchema:
        """Vocabularies (sorted), year range and rating scale of `data`."""
        years = [int(item["year"]) for item in data.items if _is_int_like(item.get("year"))]
        low, high = (float(x) for x in data.rating_scale)
        return cls(
            genders=_vocabulary(user.get("gender") for user in data.users),
            occupations=_vocabulary(user.get("occupation") for user in data.users),
            genres=_vocabulary(g for item in data.items for g in item.get("genres") or ()),
            year_range=(min(years), max(years)) if years else DEFAULT_YEAR_RANGE,
            rating_scale=(low, high),
            thumbs_threshold=low + THUMBS_UP_AT * (high - low),
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("year_range", "rating_scale", "age_edges"):
            d[key] = list(d[key])
        return {"version": SCHEMA_VERSION, **d}

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSchema:
        d = dict(d)
        version = d.pop("version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise ValueError(f"feature schema version {version} is not supported (expected {SCHEMA_VERSION})")
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown feature schema keys: {sorted(unknown)}")
        for key in ("year_range", "rating_scale", "age_edges"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)

    # ------------------------------------------------------------------ dimensions

    @property
    def n_age_buckets(self) -> int:
        return len(self.age_edges) + 1

    @property
    def user_dim(self) -> int:
        return len(self.genders) + self.n_age_buckets + len(self.occupations)

    @property
    def item_dim(self) -> int:
        return 2 + len(self.genres)

    @property
    def context_dim(self) -> int:
        return CONTEXT_DIM

    @property
    def rates_dim(self) -> int:
        return len(RATE_NAMES)

    @property
    def rate_names(self) -> list[str]:
        return list(RATE_NAMES)

    @property
    def user_feature_names(self) -> list[str]:
        return ([f"gender={g}" for g in self.genders]
                + [f"age={b}" for b in _age_bucket_names(self.age_edges)]
                + [f"occupation={o}" for o in self.occupations])

    @property
    def item_feature_names(self) -> list[str]:
        return ["year", "year_missing"] + [f"genre={g}" for g in self.genres]

    # ------------------------------------------------------------------ side data

    def encode_user(self, side: dict) -> np.ndarray:
        vec = np.zeros(self.user_dim, dtype=np.float32)
        _set_one(vec, 0, self._gender_index, side.get("gender"))
        age = side.get("age")
        if _is_real(age):
            vec[len(self.genders) + bisect_right(self.age_edges, age)] = 1.0
        _set_one(vec, len(self.genders) + self.n_age_buckets, self._occupation_index, side.get("occupation"))
        return vec

    def encode_item(self, side: dict) -> np.ndarray:
        vec = np.zeros(self.item_dim, dtype=np.float32)
        year = side.get("year")
        if _is_real(year):
            vec[0] = self._scale_year(year)
        else:
            vec[1] = 1.0  # year missing
        for genre in side.get("genres") or ():
            _set_one(vec, 2, self._genre_index, genre)
        return vec

    def user_matrix(self, data: RatingData) -> np.ndarray:
        return _stack([self.encode_user(side) for side in data.users], self.user_dim)

    def item_matrix(self, data: RatingData) -> np.ndarray:
        return _stack([self.encode_item(side) for side in data.items], self.item_dim)

    def _scale_year(self, year: float) -> float:
        low, high = self.year_range
        if high <= low:
            return 0.0
        return float(np.clip(2.0 * (year - low) / (high - low) - 1.0, -1.0, 1.0))

    @cached_property
    def _gender_index(self) -> dict[str, int]:
        return {g: i for i, g in enumerate(self.genders)}

    @cached_property
    def _occupation_index(self) -> dict[str, int]:
        return {o: i for i, o in enumerate(self.occupations)}

    @cached_property
    def _genre_index(self) -> dict[str, int]:
        return {g: i for i, g in enumerate(self.genres)}

    # ------------------------------------------------------------------ context and rates

    def encode_context(self, ts) -> np.ndarray:
        return encode_context(ts)

    def encode_rates(self, stars) -> np.ndarray:
        """[n, 2]: stars scaled to [-1, 1] and thumbs; NaN stars (missing) give NaN in both."""
        stars = np.atleast_1d(np.asarray(stars, dtype=np.float32))
        low, high = self.rating_scale
        scaled = 2.0 * (stars - low) / (high - low) - 1.0
        thumbs = np.where(np.isnan(stars), np.nan, (stars >= self.thumbs_threshold).astype(np.float32))
        return np.stack([scaled, thumbs], axis=1).astype(np.float32)

    def decode_stars(self, scaled) -> np.ndarray:
        low, high = self.rating_scale
        return low + (np.asarray(scaled, dtype=np.float32) + 1.0) / 2.0 * (high - low)

    # ------------------------------------------------------------------ event validation

    def rates_from_event(self, value) -> np.ndarray:
        """[2] rates from a number (stars) or a dict of named rates; raises EventError."""
        if not isinstance(value, dict):
            return self.encode_rates(self._stars(value))[0]
        unknown = set(value) - set(RATE_NAMES)
        if unknown:
            names = sorted(map(str, unknown))
            raise EventError(UNKNOWN_RATE, f"unknown rate {names}; known: {list(RATE_NAMES)}")
        if not value:
            raise EventError(BAD_TYPE, "empty rate dict: give stars and/or thumbs")
        rates = self.encode_rates(self._stars(value["stars"]) if "stars" in value else math.nan)[0]
        if "thumbs" in value:
            rates[1] = _thumbs(value["thumbs"])
        return rates

    def _stars(self, value) -> float:
        stars = _real(value, "stars")
        low, high = self.rating_scale
        if not low <= stars <= high:
            raise EventError(OUT_OF_RANGE, f"stars {stars:g} outside {low:g}..{high:g}")
        return stars


# ----------------------------------------------------------------------------- module functions


def encode_context(ts) -> np.ndarray:
    """[n, 9] from epoch seconds (array or scalar): weekday one-hot (Monday first) and hour sin/cos, UTC.
    A negative ts (NO_TIME: untimed data) is a missing value: its row stays all zero."""
    ts = np.atleast_1d(np.asarray(ts, dtype=np.float64))
    days, seconds = np.divmod(ts, 86400.0)
    weekday = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
    angle = 2.0 * np.pi * seconds / 86400.0
    out = np.zeros((len(ts), CONTEXT_DIM), dtype=np.float32)
    out[np.arange(len(ts)), weekday] = 1.0
    out[:, 7] = np.sin(angle)
    out[:, 8] = np.cos(angle)
    out[ts < 0] = 0.0
    return out


def user_side_from_event(event: dict) -> dict:
    """The known user fields of an event (gender, age, occupation, zip), type-checked; None = absent."""
    return _pick(event, {"gender": _string, "age": _int_like, "occupation": _string, "zip": _string})


def item_side_from_event(event: dict) -> dict:
    """The known item fields of an event (title, year, genres), type-checked; None = absent."""
    return _pick(event, {"title": _string, "year": _int_like, "genres": _string_list})


def _pick(event, checks: dict) -> dict:
    if not isinstance(event, dict):
        raise EventError(BAD_TYPE, f"side data must be an object, got {type(event).__name__}")
    return {key: check(event[key], key) for key, check in checks.items() if event.get(key) is not None}


def _string(value, key: str) -> str:
    if not _is_text(value):
        raise EventError(BAD_TYPE, f"{key} must be a string of valid Unicode (no lone surrogates), got {value!r:.200}")
    return value


def _string_list(value, key: str) -> list[str]:
    if not isinstance(value, list) or not all(_is_text(v) for v in value):
        raise EventError(BAD_TYPE, f"{key} must be a list of strings of valid Unicode, got {value!r:.200}")
    return list(value)


def _is_text(value) -> bool:
    """A str that can be stored: JSON escapes may spell lone surrogates, which no UTF-8 encoder takes."""
    if not isinstance(value, str):
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _int_like(value, key: str) -> int:
    if not _is_int_like(value) or abs(value) > MAX_SAFE_INT:
        raise EventError(BAD_TYPE, f"{key} must be an integer within +-(2^53 - 1), got {value!r:.200}")
    return int(value)


def _real(value, key: str) -> float:
    if not _is_real(value):
        raise EventError(BAD_TYPE, f"{key} must be a finite number, got {value!r}")
    return float(value)


def _thumbs(value) -> float:
    thumbs = _real(value, "thumbs")
    if thumbs not in (0.0, 1.0):
        raise EventError(OUT_OF_RANGE, f"thumbs must be 0 or 1, got {thumbs:g}")
    return thumbs


def _is_real(value) -> bool:
    """A finite number; bools are rejected (JSON true is not a rating)."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)
            and math.isfinite(value))


def _is_int_like(value) -> bool:
    return _is_real(value) and float(value).is_integer()


def _vocabulary(values) -> list[str]:
    return sorted({v for v in values if isinstance(v, str) and v})


def _set_one(vec: np.ndarray, offset: int, index: dict[str, int], value) -> None:
    if isinstance(value, str) and value in index:
        vec[offset + index[value]] = 1.0


def _stack(rows: list[np.ndarray], dim: int) -> np.ndarray:
    return np.stack(rows) if rows else np.zeros((0, dim), dtype=np.float32)


def _age_bucket_names(edges: tuple[int, ...]) -> list[str]:
    """"<18", "18-24", ..., "56+" for the default edges."""
    inner = [f"{a}-{b - 1}" for a, b in zip(edges, edges[1:], strict=False)]
    return [f"<{edges[0]}", *inner, f"{edges[-1]}+"]
