"""The chaos soak (bench/soak.py): its checks catch what they are for (made-up final states, no broker), and its
2-minute variant runs end to end: 3 workers, SIGKILLs, a retrain beside serving and its swap, nothing lost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stream_app.stream.state import EntityState, WindowEntry

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
soak_ledger = pytest.importorskip("soak_ledger")


def sent_ratings(n: int = 40, seed: int = 1):
    source = soak_ledger.RatingSource(seed, n_users=4, n_items=3, resend_fraction=0.2)
    ledger = soak_ledger.Ledger()
    for _ in range(n):
        ledger.record(*source.next())
    return source, ledger


def rows_from(ledger, side: str, window: int) -> dict[str, EntityState]:
    """The table a correct pipeline ends with: every rating once, the last `window` in the window."""
    stamps = ledger.user_ts if side == "user" else ledger.item_ts
    other = 1 if side == "user" else 0
    return {key: EntityState(window=[WindowEntry(ledger.pair[t][other], 0.0, None, t) for t in ts[-window:]],
                             n_ratings=len(ts)) for key, ts in stamps.items()}


def published_from(ledger, side: str, version: str = "v1") -> list:
    stamps = ledger.user_ts if side == "user" else ledger.item_ts
    return [soak_ledger.Published(key, k + 1, version, t + 0.05) for key, ts in stamps.items()
            for k, t in enumerate(ts)]


def test_the_source_gives_unique_increasing_stamps_and_resends_recent_ratings():
    source = soak_ledger.RatingSource(3, n_users=5, n_items=4, resend_fraction=0.3)
    events = [source.next() for _ in range(300)]
    fresh = [e for e, again in events if not again]
    stamps = [e["ts"] for e in fresh]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert len({e["event_id"] for e in fresh}) == len(fresh)
    resent = [e for e, again in events if again]
    assert 40 < len(resent) < 140  # about 30% of 300
    assert all(e in fresh for e in resent)


@pytest.mark.parametrize("side", ["user", "item"])
def test_a_correct_final_state_passes_the_checks(side):
    _, ledger = sent_ratings()
    expected = ledger.user_ts if side == "user" else ledger.item_ts
    report = soak_ledger.check_side(side, expected, ledger.pair, published_from(ledger, side),
                                    rows_from(ledger, side, 4), window=4)
    assert report["ratings"] == ledger.ratings
    assert report["lost"] == report["double_counted"] == 0
    assert not report["examples"]


def test_a_lost_rating_a_double_count_and_a_missing_last_vector_are_found():
    _, ledger = sent_ratings()
    rows = rows_from(ledger, "user", 4)
    lost, doubled = sorted(rows)[:2]
    rows[lost].n_ratings -= 1
    rows[lost].window.pop(0)  # its window lacks a rating too
    rows[doubled].n_ratings += 1
    rows[doubled].window[0] = rows[doubled].window[1]  # one rating twice in the window
    published = [m for m in published_from(ledger, "user") if not (m.key == lost and m.n_ratings == len(
        ledger.user_ts[lost]))]  # its last vector never came
    report = soak_ledger.check_side("user", ledger.user_ts, ledger.pair, published, rows, window=4)
    assert (report["lost"], report["double_counted"]) == (1, 1)
    assert report["window_wrong"] == 2 and report["last_published_wrong"] == 1
    assert {e[0] for e in report["examples"]["table_count"]} == {lost, doubled}


def test_item_windows_may_interleave_but_not_repeat_or_hold_foreign_ratings():
    _, ledger = sent_ratings()
    rows = rows_from(ledger, "item", 4)
    item = max(ledger.item_ts, key=lambda k: len(ledger.item_ts[k]))
    rows[item].window.reverse()  # another arrival order is fine on the item side
    ok = soak_ledger.check_side("item", ledger.item_ts, ledger.pair, published_from(ledger, "item"), rows, window=4)
    assert ok["window_wrong"] == 0
    foreign = next(t for t in ledger.pair if t not in ledger.item_ts[item])
    rows[item].window[0] = rows[item].window[0]._replace(ts=foreign)
    bad = soak_ledger.check_side("item", ledger.item_ts, ledger.pair, published_from(ledger, "item"), rows, window=4)
    assert bad["window_wrong"] == 1 and bad["lost"] == 0


def test_the_swap_check_counts_old_model_messages_after_the_swap():
    _, ledger = sent_ratings()
    published = published_from(ledger, "user", "v2")
    swapped_at = float(np.median(list(ledger.pair)))
    clean = soak_ledger.check_swap(ledger.user_ts, published, "v2", swapped_at)
    assert clean["swapped"] and clean["old_after_swap"] == 0 and clean["stale_last"] == 0
    late = max(published, key=lambda m: m.at)  # the newest message: its entity's last
    stale = soak_ledger.check_swap(ledger.user_ts, published + [late._replace(model_version="v1")], "v2", swapped_at)
    assert stale["old_after_swap"] == 1 and stale["stale_last"] == 1
    assert not soak_ledger.check_swap(ledger.user_ts, published, None, None)["swapped"]


def test_publish_latency_takes_the_first_message_that_counts_each_rating():
    stamps = {"u": [10.0, 11.0, 12.0]}
    published = [soak_ledger.Published("u", 1, "v", 10.5), soak_ledger.Published("u", 3, "v", 13.0),
                 soak_ledger.Published("u", 2, "v", 14.0)]  # a late republish of an older count changes nothing
    sent, delay = soak_ledger.publish_latency(stamps, published)
    assert sent.tolist() == [10.0, 11.0, 12.0] and delay.tolist() == [0.5, 2.0, 1.0]


@pytest.mark.integration
@pytest.mark.slow
def test_two_minute_chaos_soak_loses_nothing_counts_nothing_twice_and_swaps(tansu, tmp_path):
    """The CI variant: ~3.5 minutes of wall time."""
    out = tmp_path / "soak.json"
    run = subprocess.run([sys.executable, str(BENCH / "soak.py"), "--minutes", "2", "--kill-every", "30", "45",
                          "--probe", "800", "--retrain-steps", "30", "--warmup", "20", "--out", str(out)],
                         capture_output=True, text=True, timeout=900)
    assert out.exists(), f"the soak wrote no result:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    result = json.loads(out.read_text())
    print(run.stdout[-2500:])
    checks = result["checks"]
    for side in ("user", "item"):
        c = checks[side]
        assert c["lost"] == 0 and c["double_counted"] == 0, c
        assert c["window_wrong"] == 0 and c["published_above_wrong"] == 0, c
        assert c["last_published_wrong"] == 0, c  # every entity's last vector counts all its ratings
        swap = checks["swap"][side]
        assert swap["swapped"] and swap["stale_last"] == 0 and swap["old_after_swap"] == 0, swap
        assert swap["rated_after_swap"] > 0
    assert checks["user"]["ratings"] > 1000 and result["resent"] > 0
    assert len(result["kills"]) >= 1 and all(k["moved_s"] is not None for k in result["kills"])
    assert checks["dead_letters"] == 0 and result["phases"]["drained_s"] is not None
    assert result["ok"] and run.returncode == 0
