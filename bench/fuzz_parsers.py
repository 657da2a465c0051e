"""Coverage-guided fuzzing (atheris, libFuzzer) of the stream's parsers and the table-row decoder.

    pip install -e '.[fuzz]'          # atheris: Linux and macOS wheels for CPython <= 3.11
    python bench/fuzz_parsers.py --target rating --seconds 120
    python bench/fuzz_parsers.py --target all --seconds 60   # each target in turn, in its own process

Targets (the same entry points and contract as the hypothesis tests in tests/test_fuzz_*.py):
  rating, user, item, request   events.parse_*: a checked event or an EventError with a dead-letter reason
  forwarded, catalogue          internal.parse_forwarded / parse_catalogue_entry (first input byte: key length)
  row                           codec.decode_row: a row that encode_row writes back (and that reads back the
                                same), or RowDecodeError

Anything else that a target raises is a finding: libFuzzer stops, prints the traceback and saves the input
as `crash-<sha1>` under --artifacts; an input that runs longer than --timeout seconds is saved as
`timeout-<sha1>` (a hang). The corpus starts from a few valid messages per target, in a temporary folder
unless --corpus names one (libFuzzer adds the inputs that reach new code to it). Prints libFuzzer's
final stats (executions, coverage) and one summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

TARGETS = ("rating", "user", "item", "request", "forwarded", "catalogue", "row")
N_DIM = 4
MAX_BYTES = 65536  # the default max_event_bytes


def seeds(target: str) -> list[bytes]:
    """Valid inputs the corpus starts from (libFuzzer mutates them)."""
    from stream_app.stream import codec
    from stream_app.stream import state as st

    vector = st.pack_vector([0.5] * N_DIM)
    messages = {
        "rating": [{"event_id": "e1", "user_id": "u1", "item_id": "i1", "rating": 4, "ts": 1_700_000_000},
                   {"event_id": 2, "user_id": 42, "item_id": "i", "rating": {"stars": 2, "thumbs": 1},
                    "ts": "2020-09-13T12:26:40Z", "context": {"device": "tv"}}],
        "user": [{"event_id": "e", "user_id": "u", "gender": "F", "age": 31, "occupation": "artist", "zip": "10115"}],
        "item": [{"event_id": "e", "item_id": "i", "title": "A (1997)", "year": 1997, "genres": ["Comedy"]}],
        "request": [{"request_id": "q", "user_id": "u", "n": 5}],
        "forwarded": [{"event_id": "e", "item_id": "i", "user_id": "u", "rates": [0.5, None], "ts": 1.7e9,
                       "user_vector": vector, "user_features": [[0, 1.0]]}],
        "catalogue": [{"vector": vector, "features": [[1, 1.0]], "n_ratings": 3, "model_version": "m@1"}],
    }
    if target == "row":
        row = st.new_state()
        st.update_side(row, "s", {"genres": ["Drama"]}, window=4)
        st.add_rating(row, "e", "u", (0.5, 1.0), 1.7e9, window=4, vector=[1.0] * N_DIM, features=[(1, 1.0)])
        st.set_vector(row, [0.25] * N_DIM, "m@1")
        user = st.new_state()
        st.add_rating(user, "e", "i", (0.5, None), 1.7e9, window=4)
        return [codec.encode_row(row), codec.encode_row(user),
                b'{"window": [["i1", 0.5, null, 100.0]], "side": {}, "n_ratings": 1, "seen": []}']
    raw = [json.dumps(m).encode() for m in messages[target]]
    return [bytes([6]) + b"item-7" + r for r in raw] if target == "catalogue" else raw


TOKENS = [b'"event_id"', b'"user_id"', b'"item_id"', b'"request_id"', b'"rating"', b'"ts"', b'"context"', b'"n"',
          b'"stars"', b'"thumbs"', b'"gender"', b'"age"', b'"occupation"', b'"zip"', b'"title"', b'"year"',
          b'"genres"', b'"rates"', b'"user_vector"', b'"user_features"', b'"vector"', b'"features"', b'"n_ratings"',
          b'"model_version"', b'"window"', b'"side"', b'"seen"', b'"mv"', b'"ids"', b'"feats"', b'"dim"', b'"vec"',
          b'"raters"', b"null", b"true", b"false", b"NaN", b"Infinity", b"-0", b"1e999", b"9007199254740993",
          b"18446744073709551616", b'"\\ud800"', b'"\\u200b"', b'"2020-09-13T12:26:40Z"', b'"AACAPw=="',
          b"\xffRS\x01", b"[[0, 1.0]]", b'{"a":', b"[", b"]", b"{", b"}", b":", b","]


def write_dictionary(path: Path) -> Path:
    """libFuzzer's -dict: JSON tokens and field names, so that mutations splice whole tokens."""
    def quoted(token: bytes) -> str:
        return "".join(chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\x{b:02x}" for b in token)

    path.write_text("".join(f'"{quoted(t)}"\n' for t in TOKENS))
    return path


def make_target(target: str):
    """TestOneInput for a target: returns normally for every allowed outcome, raises on a finding."""
    from stream_app.data.features import FeatureSchema
    from stream_app.errors import EventError
    from stream_app.stream import codec, internal
    from stream_app.stream import events as ev
    from stream_app.stream import state as st

    schema = FeatureSchema(genders=["F", "M"], occupations=["artist"], genres=["Comedy", "Drama"])

    def storable(side: dict) -> None:
        row = st.new_state()
        st.update_side(row, "e", side, window=4)
        codec.encode_row(row)

    def catalogue(data: bytes):
        n = data[0] if data else 0
        return internal.parse_catalogue_entry(data[1:1 + n] if n else None, data[1 + n:], N_DIM)

    parsers = {
        "rating": lambda data: ev.parse_rating(data, schema, MAX_BYTES),
        "user": lambda data: storable(ev.parse_user(data, MAX_BYTES).side),
        "item": lambda data: storable(ev.parse_item(data, MAX_BYTES).side),
        "request": lambda data: ev.parse_request(data, MAX_BYTES, 10),
        "forwarded": internal.parse_forwarded,
        "catalogue": catalogue,
    }

    def row(data: bytes) -> None:
        try:
            decoded = codec.decode_row(data)
        except codec.RowDecodeError:
            return
        again = codec.encode_row(decoded)
        if codec.encode_row(codec.decode_row(again)) != again:
            raise AssertionError(f"row does not read back as written: {data!r:.200}")

    def parse(data: bytes) -> None:
        try:
            parsers[target](data)
        except EventError as error:
            if error.reason not in ev.REASONS or error.reason == ev.PROCESSING_ERROR:
                raise AssertionError(f"EventError with reason {error.reason!r}") from error
            json.dumps(ev.dead_letter("t", 0, 0, data, error).to_representation())

    return row if target == "row" else parse


def fuzz(target: str, seconds: int, corpus: Path, artifacts: Path, timeout: int, runs: int) -> None:
    """Runs in this process (atheris.Fuzz exits it)."""
    import atheris

    with atheris.instrument_imports(include=["stream_app"]):
        test_one_input = make_target(target)
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    if not any(corpus.iterdir()):
        for k, seed in enumerate(seeds(target)):
            (corpus / f"seed-{k}").write_bytes(seed)
    tokens = write_dictionary(corpus.parent / f"{target}.dict")
    argv = [sys.argv[0], f"-max_total_time={seconds}", f"-timeout={timeout}", "-rss_limit_mb=4096",
            "-print_final_stats=1", f"-artifact_prefix={artifacts}/", f"-max_len={MAX_BYTES + 64}",
            f"-dict={tokens}", str(corpus)]
    if runs:
        argv.insert(1, f"-runs={runs}")
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", choices=[*TARGETS, "all"], required=True)
    p.add_argument("--seconds", type=int, default=60, help="fuzzing time per target (default 60)")
    p.add_argument("--runs", type=int, default=0, help="stop after this many inputs (default: time only)")
    p.add_argument("--timeout", type=int, default=10, help="seconds one input may take before it counts as a hang")
    p.add_argument("--corpus", type=Path, help="corpus folder (per target: <corpus>/<target>; default: temporary)")
    p.add_argument("--artifacts", type=Path, default=Path("fuzz-artifacts"),
                   help="where crash-*/timeout-* inputs go (default ./fuzz-artifacts)")
    args = p.parse_args(argv)
    targets = TARGETS if args.target == "all" else (args.target,)
    with tempfile.TemporaryDirectory(prefix="recsys-fuzz-") as scratch:
        root = args.corpus or Path(scratch)
        if len(targets) == 1:
            fuzz(targets[0], args.seconds, root / targets[0], args.artifacts, args.timeout, args.runs)
        failed = []
        for target in targets:  # one process each: atheris.Fuzz ends its process
            cmd = [sys.executable, __file__, "--target", target, "--seconds", str(args.seconds), "--runs",
                   str(args.runs), "--timeout", str(args.timeout), "--corpus", str(root),
                   "--artifacts", str(args.artifacts)]
            print(f"== {target}", flush=True)
            if subprocess.run(cmd, env=os.environ).returncode != 0:
                failed.append(target)
        print(f"fuzzed {len(targets)} targets for {args.seconds} s each: "
              + (f"FINDINGS in {failed} (inputs under {args.artifacts})" if failed else "no findings"), flush=True)
        return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
