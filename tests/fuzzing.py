"""Hypothesis profiles and strategies of hostile input for the property-based (fuzz) tests.

CI runs the "ci" profile: derandomized (the same examples every run) and without an example database, so a
run never flakes and leaves nothing behind. To search further: RECSYS_FUZZ_PROFILE=explore (random) and
RECSYS_FUZZ_SCALE=20 (twenty times the examples), e.g.
    RECSYS_FUZZ_PROFILE=explore RECSYS_FUZZ_SCALE=20 python -m pytest -q tests/test_fuzz_*.py
"""

from __future__ import annotations

import json
import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True,
                          suppress_health_check=_QUIET)
settings.register_profile("explore", derandomize=False, database=None, deadline=None, print_blob=True,
                          suppress_health_check=_QUIET)
settings.load_profile(os.environ.get("RECSYS_FUZZ_PROFILE", "ci"))
SCALE = float(os.environ.get("RECSYS_FUZZ_SCALE", "1"))


def examples(n: int) -> settings:
    """n examples (times RECSYS_FUZZ_SCALE) under the loaded profile."""
    return settings(max_examples=max(1, int(n * SCALE)))


# -------------------------------------------------------------------------------------------- text and JSON

TRICKY = ["", " ", "\t", "\x00", "\u200b", "\u200d", "\ufeff", "\u202e", "\u2028", "a\u200db", "👩\u200d💻",
          "\ud800", "\udfff", "é", "e\u0301", "ß", "𝔘", "null", "NaN", "1e999", "x" * 257]
text = st.one_of(
    st.text(max_size=24),
    st.text(st.characters(categories=["Cs", "Cc", "Cf", "Zl", "Zp", "So", "Mn"]), max_size=8),
    st.sampled_from(TRICKY),
)
edge_numbers = st.sampled_from([0, -0.0, 1e-320, 2**53 - 1, 2**53, 2**63, 2**64, -(2**63) - 1, 1e19, 1e20, -1e300,
                                1e308, 10**300, 10**301, -(10**4000), float("nan"), float("inf")])
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(),  # NaN and +-inf included: json.dumps writes them as NaN/Infinity literals
    edge_numbers,
)
scalars = st.one_of(st.none(), st.booleans(), numbers, text)
json_values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(text, kids, max_size=4),
                           max_leaves=16)


def dumps(value) -> bytes:
    """JSON as a careless producer writes it: NaN/Infinity literals allowed, lone surrogates escaped."""
    return json.dumps(value, allow_nan=True).encode()


# -------------------------------------------------------------------------------------------- event fields

def weighted(*choices: tuple[int, st.SearchStrategy]) -> st.SearchStrategy:
    """One of the strategies, each drawn with its weight (st.one_of draws its branches evenly)."""
    table = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.integers(0, len(table) - 1).flatmap(lambda k: table[k])


def mostly(valid: st.SearchStrategy) -> st.SearchStrategy:
    """Usually a valid value, sometimes anything JSON."""
    return weighted((6, valid), (1, json_values), (1, edge_numbers))


ids = weighted((4, st.text("abcxyz019-_.:@/ ", min_size=1, max_size=12)), (2, st.integers(-(10**6), 10**6)),
               (2, st.sampled_from(["u1", "i1", "42", "über", "👩\u200d💻", "x" * 256, "-5", 7.0])),
               (1, st.text(st.characters(codec="utf-8"), min_size=1, max_size=8)), (1, text))
timestamps = st.one_of(
    st.floats(-2.3e9, 4.2e9), st.integers(-(3 * 10**9), 5 * 10**9), st.integers(-(3 * 10**9), 5 * 10**12),
    st.datetimes().map(lambda d: d.isoformat()), st.datetimes().map(lambda d: d.isoformat() + "Z"),
    st.sampled_from(["2020-09-13T12:26:40Z", "2020-02-31", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
                     "2020-09-13 12:26:40,5+0530", " 2020-09-13 ", "13/09/2020"]),
)
stars = weighted((3, st.floats(1, 5)), (1, st.floats(0, 6)), (1, st.integers(-1, 7)),
                 (1, st.sampled_from([1, 5, 0.5, 5.0000001, True])))
rating_values = st.one_of(
    stars,
    st.dictionaries(st.sampled_from(["stars", "thumbs", "Stars", ""]), st.one_of(stars, st.sampled_from([0, 1])),
                    max_size=3),
)
side_user = {"gender": mostly(st.sampled_from(["F", "M", "X"])), "age": mostly(st.integers(-5, 120)),
             "occupation": mostly(text), "zip": mostly(text)}
side_item = {"title": mostly(text), "year": mostly(st.integers(1800, 2100)),
             "genres": mostly(st.lists(st.sampled_from(["Comedy", "Drama", "Noir", "\ud800"]), max_size=3))}

FIELDS = {
    "rating": {"event_id": mostly(ids), "user_id": mostly(ids), "item_id": mostly(ids),
               "rating": mostly(rating_values), "ts": mostly(timestamps),
               "context": st.one_of(st.none(), st.dictionaries(text, json_values, max_size=3), json_values)},
    "user": {"event_id": mostly(ids), "user_id": mostly(ids), **side_user},
    "item": {"event_id": mostly(ids), "item_id": mostly(ids), **side_item},
    "request": {"request_id": mostly(ids), "user_id": mostly(ids),
                "n": st.one_of(st.none(), st.integers(-2, 1002), json_values)},
}


def events(kind: str) -> st.SearchStrategy[dict]:
    """Events of a topic: every field usually present and valid, some missing, some junk, extra keys."""
    fields = FIELDS[kind]
    return st.builds(lambda present, extra: {**present, **extra},
                     weighted((4, st.fixed_dictionaries(fields)), (1, st.fixed_dictionaries({}, optional=fields))),
                     weighted((3, st.just({})), (1, st.dictionaries(text, json_values, max_size=2))))


# -------------------------------------------------------------------------------------------- bytes

def nested(depth: int, leaf: bytes = b"1") -> bytes:
    return b'{"a":' * depth + leaf + b"}" * depth


@st.composite
def mutated(draw, base: st.SearchStrategy[bytes]) -> bytes:
    """A message with a few byte-level mutations: near-valid JSON."""
    raw = bytearray(draw(base))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "delete", "insert", "truncate", "duplicate", "number", "nest"]))
        at = draw(st.integers(0, len(raw)))
        if op == "flip" and raw:
            raw[min(at, len(raw) - 1)] ^= 1 << draw(st.integers(0, 7))
        elif op == "delete":
            del raw[at:at + draw(st.integers(1, 8))]
        elif op == "insert":
            raw[at:at] = draw(st.sampled_from([b'"', b"{", b"}", b"[", b",", b":", b"\\", b"\\u", b"\\ud800", b"\xff",
                                               b"\xc3", b"NaN", b"-", b"e99999", b"\x00", b"null", b"true"]))
        elif op == "truncate":
            del raw[at:]
        elif op == "duplicate":
            raw[at:at] = raw[at:at + draw(st.integers(1, 16))]
        elif op == "number":
            raw[at:at] = draw(st.sampled_from([b"9" * 400, b"1e400", b"-1e-400", b"9" * 5000, b"0.0000001"]))
        else:
            raw[at:at] = nested(draw(st.integers(1, 3000)))
    return bytes(raw)


def payloads(kind: str) -> st.SearchStrategy[bytes]:
    """Whatever a producer may write to a topic: near-valid events, mutations of them, arbitrary JSON,
    arbitrary bytes, deep nesting."""
    structured = events(kind).map(dumps)
    return weighted(
        (6, structured),
        (2, mutated(structured)),
        (1, json_values.map(dumps)),
        (1, st.binary(max_size=200)),
        (1, st.integers(1, 60_000).map(lambda depth: b"[" * depth + b"]" * depth)),
        (1, st.integers(1, 20_000).map(nested)),
    )
