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


def test_the_windows_are_full_once_the_last_entity_got_its_window_th_rating():
    ledger = soak_ledger.Ledger()
    for ts, (user, item) in enumerate([("u1", "i1"), ("u1", "i2"), ("u2", "i1"), ("u1", "i2"), ("u2", "i2")]):
        ledger.record({"user_id": user, "item_id": item, "ts": float(ts)}, resend=False)
    ledger.record({"user_id": "u2", "item_id": "i1", "ts": 9.0}, resend=True)  # a re-send counts nothing
    assert ledger.windows_full_at(2, 2) == 4.0  # u2's second rating
    assert ledger.windows_full_at(2, 1) == 4.0
    assert ledger.windows_full_at(3, 2) is None  # u2 never got 3


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


def test_the_trace_says_which_rating_was_never_forwarded_and_which_row_went_back():
    soak_trace = pytest.importorskip("soak_trace")
    sent = [1.0, 2.0, 3.0, 4.0]
    forwarded = {1.0: [(0, 10)], 2.0: [(0, 11), (0, 15)], 4.0: [(0, 12)]}  # 3.0 never left the user side
    history = [(1, 0, 1, [1.0]), (1, 1, 2, [1.0, 2.0]), (1, 2, 3, [1.0, 2.0, 4.0]),
               (1, 3, 2, [1.0, 4.0])]  # a stale row: 2 ratings after 3
    found = soak_trace._findings(sent, forwarded, history)
    assert found["never_forwarded"] == [3.0]
    assert found["forwarded_more_than_once"] == 1
    assert found["n_ratings_drops"] == [{"partition": 1, "offset": 3, "n_ratings": 2, "earlier_max": 3}]
    assert found["last_row"] == {"partition": 1, "offset": 3, "n_ratings": 2}
    assert [f["ts"] for f in found["recent_never_stored"]] == [3.0]


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


def fake_run(t0: float, lose_one: bool) -> tuple[dict, list[dict]]:
    """What bench/soak.py hands its report: a minute of samples (one worker killed at 20 s and back at 30 s, a
    retrain at 35-45 s) and the checks of a final state, right or with one rating lost."""
    _, ledger = sent_ratings()
    users = rows_from(ledger, "user", 4)
    if lose_one:
        users[next(iter(users))].n_ratings -= 1
    checks = {"user": soak_ledger.check_side("user", ledger.user_ts, ledger.pair, published_from(ledger, "user"),
                                             users, 4),
              "item": soak_ledger.check_side("item", ledger.item_ts, ledger.pair, published_from(ledger, "item"),
                                             rows_from(ledger, "item", 4), 4),
              "swap": {side: {"swapped": True, "old_after_swap": 0, "stale_last": 0, "rated_after_swap": 3}
                       for side in ("user", "item")}, "dead_letters": 0, "send_errors": 0}
    samples = []
    for k in range(61):
        alive = not 20 <= k < 30
        workers = {"w0": {"incarnation": 1, "rss_mb": 300.0 + k, "cpu_s": 0.5 * k, "model": "v1", "partitions": 2,
                          "replays": 1.0 if k > 50 else 0.0},
                   "w1": {"incarnation": 1 + (k >= 30), "rss_mb": 280.0, "cpu_s": 0.4 * k, "model": "v1",
                          "partitions": 2, "replays": 0.0} if alive else None}
        samples.append({"t": t0 + k, "ends": [10 * k, 10 * k], "committed": [10 * k - 5, 10 * k - 5], "lag": 10,
                        "item_ends": [10 * k, 10 * k], "item_committed": [10 * k, 10 * k], "item_lag": 0,
                        "workers": workers, "broker_rss_mb": 50.0 + k, "broker_cpu_s": 0.2 * k,
                        "trainer_cpu_s": 0.9 * (k - 35) if 35 <= k <= 45 else None, "soak_cpu_s": 0.1 * k,
                        "machine_cpu_s": (1.8 * k, 2.0 * k)})
    sent = np.array([t0 - 5 + 0.5 * k for k in range(130)])
    raw = {"kills": [{"t": t0 + 20, "worker": "w1", "partitions": 2, "moved_s": 7.0, "caught_up_s": 9.0,
                      "restarted_s": 9.5, "rejoined_s": 4.0, "partitions_after": 0}],
           "swap": {"old_version": "v1", "new_version": "v2", "retrain_started": t0 + 35, "retrain_ended": t0 + 45,
                    "swapped_at": t0 + 46},
           "phases": {"load_start": t0, "load_end": t0 + 55, "drained_s": 3.0}, "checks": checks,
           "latency": (sent, np.full(len(sent), 0.05)), "logs": {"w0": "x: commits stalled at 7 for 15 s"},
           "capacity_per_s": 40.0, "rate_per_s": 20.0, "resent": 4, "probe": {}, "windows_full_at": t0 + 40}
    return raw, samples


@pytest.mark.parametrize("lose_one", [False, True])
def test_the_report_gives_the_verdict_the_table_and_the_plot(tmp_path, lose_one):
    soak_report = pytest.importorskip("soak_report")
    t0 = 1_800_000_000.0
    raw, samples = fake_run(t0, lose_one)
    args = {"minutes": 1.0, "workers": 2, "partitions": 2, "warmup": 10.0}
    result = soak_report.summarize(raw, samples, args, BENCH.parent)
    assert result["ok"] is not lose_one
    assert result["failures"] == (["users: lost 1", "users: table_count_wrong 1"] if lose_one else [])
    assert result["kills"][0]["t"] == 20.0 and result["swap"]["swapped_at"] == 46.0  # relative to the load
    assert result["rss"]["witness"]["growth_pct"] == pytest.approx(100 * (360 - 310) / 310)
    assert result["rss"]["windows_full_s"] == 40.0  # growth measured again from the sample the state was full
    assert result["rss"]["after_full"]["witness"]["growth_pct"] == pytest.approx(100 * (360 - 340) / 340)
    assert result["rss"]["after_full"]["measured"].keys() == {"w0#1", "w1#2"}  # w1's first life ended before it
    assert result["replays"] == {"metric_total": 1.0, "log_lines": 1, "fetch_skips_logged": 0, "swaps_logged": 0}
    assert result["retraining"]["cores"]["trainer"] == pytest.approx(0.9)
    assert result["steady"]["committed_per_s"] == pytest.approx(20.0)
    assert ("verdict: FAILED" in soak_report.table(result)) is lose_one
    soak_report.plot(json.loads(json.dumps(result, default=float)), tmp_path / "soak.png")
    assert (tmp_path / "soak.png").stat().st_size > 10_000


@pytest.mark.integration
@pytest.mark.slow
def test_two_minute_chaos_soak_loses_nothing_counts_nothing_twice_and_swaps(tansu, tmp_path):
    """The CI variant: ~3.5 minutes of wall time."""
    out = tmp_path / "soak.json"
    run = subprocess.run([sys.executable, str(BENCH / "soak.py"), "--minutes", "2", "--kill-every", "30", "45",
                          "--probe", "800", "--load", "0.3", "--retrain-steps", "30", "--warmup", "20",
                          "--drain-timeout", "300",
                          "--out", str(out)],
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
        if swap["swapped"]:  # after the swap, only the new model's vectors are published
            assert swap["stale_last"] == 0 and swap["old_after_swap"] == 0, swap
            assert swap["rated_after_swap"] > 0
    # On a slow (shared) machine the retrain can outlive the 2 minutes of load: that is speed, not a fault,
    # so the swap's checks above then have nothing to check and the run says so.
    swapped = all(checks["swap"][side]["swapped"] for side in ("user", "item"))
    if not swapped:
        print("MEASURED: the retrain did not finish while the load ran: no swap to check in this run")
    assert checks["user"]["ratings"] > 1000 and result["resent"] > 0
    assert len(result["kills"]) >= 1 and all(k["moved_s"] is not None for k in result["kills"])
    assert checks["dead_letters"] == 0 and result["phases"]["drained_s"] is not None
    assert (result["ok"] and run.returncode == 0) or not swapped
