"""The topic contracts in schemas/ (JSON Schema, draft 2020-12) agree with the worker's parsers and outputs.

Input schemas: every example in a schema is accepted by the parser and the schema; every documented invalid
example (`x-invalid-examples`, with the dead-letter reason) is refused by both, the parser with that reason.
Output schemas: what stream_app.stream.events builds validates. The examples in docs/topics.md validate too.
Real messages from a running worker are validated in tests/test_schemas_stream.py.
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

import jsonschema
import pytest

from stream_app.data.features import FeatureSchema
from stream_app.errors import EventError
from stream_app.stream import events as ev

ROOT = Path(__file__).parents[1]
SCHEMAS = ROOT / "schemas"
INPUTS = ("ratings", "users", "items", "recommend-requests")
OUTPUTS = ("user-vectors", "item-vectors", "recommendations", "dead-letters")
MODEL_SCHEMA = FeatureSchema()  # rating scale 1..5, as every model trained on ml-100k, ml-1m or synthetic data
MAX = 65536


def load(name: str) -> dict:
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


def validator(name: str):
    schema = load(name)
    return jsonschema.Draft202012Validator(schema)


def parse(name: str, value) -> object:
    """The worker's parser of the topic, on the bytes a producer would send."""
    raw = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return {"ratings": lambda: ev.parse_rating(raw, MODEL_SCHEMA, MAX),
            "users": lambda: ev.parse_user(raw, MAX),
            "items": lambda: ev.parse_item(raw, MAX),
            "recommend-requests": lambda: ev.parse_request(raw, MAX, 10)}[name]()


def as_the_worker_reads(value) -> object:
    """Decoded like the worker decodes (huge integers become infinite, as in ev.load_object)."""
    return ev.load_object(json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"), 1 << 30)


def test_there_is_one_valid_schema_per_public_topic():
    assert sorted(p.name for p in SCHEMAS.glob("*.schema.json")) == sorted(f"{n}.schema.json" for n in INPUTS + OUTPUTS)
    for name in INPUTS + OUTPUTS:
        schema = load(name)
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["examples"], f"{name}: no examples"


@pytest.mark.parametrize("name", INPUTS)
def test_input_examples_are_accepted_by_the_parser_and_the_schema(name):
    check = validator(name)
    for example in load(name)["examples"]:
        parse(name, example)  # raises EventError if the worker would refuse it
        errors = [e.message for e in check.iter_errors(as_the_worker_reads(example))]
        assert not errors, f"{name}: {example} refused by the schema: {errors}"


@pytest.mark.parametrize("name", INPUTS)
def test_documented_invalid_inputs_are_refused_by_both_with_the_reason(name):
    check = validator(name)
    invalid = load(name)["x-invalid-examples"]
    assert invalid
    for case in invalid:
        assert case["reason"] in ev.REASONS
        with pytest.raises(EventError) as info:
            parse(name, case["value"])
        assert info.value.reason == case["reason"], case
        assert not check.is_valid(as_the_worker_reads(case["value"])), f"{name}: schema accepts {case}"


def test_every_input_schema_shares_the_id_rule():
    ids = {name: load(name)["$defs"]["id"] for name in INPUTS}
    assert all(d == ids["ratings"] for d in ids.values())
    string_rule = ids["ratings"]["anyOf"][0]
    assert string_rule["maxLength"] == ev.MAX_ID_CHARS


@pytest.mark.slow  # 1.1 million code points: several seconds
def test_the_id_pattern_refuses_exactly_the_characters_the_parser_refuses():
    """Every code point, between two letters: the schema's pattern and ev.parse_id agree (the joiner U+200D,
    accepted by the worker only inside an emoji sequence, is checked separately)."""
    string_rule = load("ratings")["$defs"]["id"]["anyOf"][0]
    pattern = re.compile(string_rule["pattern"])
    disagree = []
    for cp in range(0x110000):
        if cp == 0x200D:
            continue
        text = f"a{chr(cp)}b"
        try:
            ev.parse_id({"id": text}, "id")
            parser_ok = True
        except EventError:
            parser_ok = False
        if parser_ok != bool(pattern.search(text)):
            disagree.append(f"U+{cp:04X} {unicodedata.category(chr(cp))}")
    assert not disagree, disagree[:20]
    for text, ok in [("👩\u200d💻", True), ("us\u200der", False), ("\u200d", False), ("x\u200d", False),
                     ("   ", False), (" a ", True), ("-5", True)]:
        assert bool(pattern.search(text)) == ok, text
        try:
            ev.parse_id({"id": text}, "id")
            parser_ok = True
        except EventError:
            parser_ok = False
        assert parser_ok == ok, text


@pytest.mark.parametrize("value, ok", [(7, True), (-5, True), (12.0, True), (1.5, False), (True, False),
                                       (10**255, True), (9 * 10**255, True), (10**256, False),
                                       (-9 * 10**254, True), (-(10**255), False), ("x" * 256, True),
                                       ("x" * 257, False)])
def test_integer_and_long_ids(value, ok):
    """Integer ids become their decimal text, at most 256 characters; the schema bounds them by floats just
    inside those limits (integers within 1e-16 of the limit are the one place where the two differ)."""
    check = validator("users")
    event = {"event_id": "e", "user_id": value}
    assert check.is_valid(as_the_worker_reads(event)) == ok
    try:
        parse("users", event)
        parser_ok = True
    except EventError:
        parser_ok = False
    assert parser_ok == ok


def test_dead_letter_reasons_are_the_parsers():
    assert load("dead-letters")["properties"]["reason"]["enum"] == list(ev.REASONS)


def test_what_the_worker_builds_matches_the_output_schemas():
    built = {
        "user-vectors": [ev.vector_update("user", "42", [0.5, -0.25, float("nan")], 3, "m@1")],
        "item-vectors": [ev.vector_update("item", "7", [0.5, -0.25], 0, "m@1")],
        "recommendations": [ev.recommendations("42", [("7", 4.5), ("9", float("-inf"))], "m@1"),
                            ev.recommendations("42", [], "m@1", request_id="q-1")],
        "dead-letters": [ev.dead_letter("ratings", 0, 5, b"\xff{", EventError(ev.UNPARSEABLE_JSON, "not UTF-8")),
                         ev.dead_letter("users", 3, 0, None, EventError(ev.NOT_AN_OBJECT, "null")),
                         ev.dead_letter("items", 1, 2, b"x" * 10_000, EventError(ev.OVERSIZED, "big"))],
    }
    for name, records in built.items():
        check = validator(name)
        for record in records:
            value = json.loads(record.dumps())
            errors = [e.message for e in check.iter_errors(value)]
            assert not errors, f"{name}: {value} -> {errors}"
        for example in load(name)["examples"]:
            assert check.is_valid(example), example
    # and what they must not accept
    assert not validator("user-vectors").is_valid({"user_id": "42", "vector": [], "n_ratings": 0,
                                                   "model_version": "m", "ts": 1.0})
    assert not validator("recommendations").is_valid({"user_id": "42", "items": [{"item_id": "7"}],
                                                      "model_version": "m", "ts": 1.0})
    assert not validator("dead-letters").is_valid({"source_topic": "ratings", "partition": 0, "offset": 1,
                                                   "raw": "x", "reason": "because", "detail": "", "ts": 1.0})


def topics_doc_examples() -> dict[str, list]:
    """The ```json blocks of docs/topics.md, by the topic named in the `### \\`topic\\`` heading above them."""
    found: dict[str, list] = {}
    topic = None
    text = (ROOT / "docs" / "topics.md").read_text()
    for block in re.finditer(r"^### `([a-z-]+)`|^```json\n(.*?)^```", text, re.M | re.S):
        if block.group(1):
            topic = block.group(1)
        elif topic is not None:
            found.setdefault(topic, []).append(json.loads(block.group(2)))
    return found


def test_the_examples_in_docs_topics_md_validate():
    examples = topics_doc_examples()
    assert sorted(examples) == sorted(INPUTS + OUTPUTS)
    for name, values in examples.items():
        check = validator(name)
        for value in values:
            errors = [e.message for e in check.iter_errors(value)]
            assert not errors, f"docs/topics.md, {name}: {value} -> {errors}"
            if name in INPUTS:
                parse(name, value)
