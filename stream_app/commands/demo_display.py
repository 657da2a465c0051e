"""What `recsys demo` prints: numbered steps, ranked tables and what changed between two top-N lists."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable

TOP = 10  # the list the demo shows
DEPTH = 100  # how deep it asks, to follow the scores of items that leave the top-10

Side = Callable[[str], dict]  # item id -> its side data (title, genres)


def _symbols() -> tuple[str, ...]:
    try:
        "✓✗↑↓★→…".encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return "ok", "FAILED", "^", "v", " stars", "->", "..."
    return "✓", "✗", "↑", "↓", "★", "→", "…"


TICK, CROSS, UP, DOWN, STAR, ARROW, ELLIPSIS = _symbols()


def duration(s: float) -> str:
    return f"{s:.1f} s" if s < 60 else f"{int(s // 60)} min {s % 60:02.0f} s"


class Steps:
    """A numbered step list: `[3/9] start the worker` ... `✓ 4.2 s: detail`."""

    def __init__(self, total: int):
        self.total, self.index, self.timings = total, 0, []

    @contextlib.contextmanager
    def step(self, title: str, short: str):
        self.index += 1
        print(f"[{self.index}/{self.total}] {title}", flush=True)
        started = time.perf_counter()
        outcome = {"detail": ""}
        try:
            yield outcome
        except BaseException:
            print(f"      {CROSS} failed after {duration(time.perf_counter() - started)}", flush=True)
            raise
        took = time.perf_counter() - started
        self.timings.append((short, took))
        detail = f": {outcome['detail']}" if outcome["detail"] else ""
        print(f"      {TICK} {duration(took)}{detail}", flush=True)


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - len(ELLIPSIS)] + ELLIPSIS


def title(side: Side, item_id: str) -> str:
    return side(item_id).get("title") or f"item {item_id}"


def ranked_table(items: list[dict], side: Side, before: list[dict] | None = None) -> str:
    """A top-N list as a table; with `before`, each item's move and score change since then."""
    width = max([4] + [len(str(e["item_id"])) for e in items])
    old_rank = {e["item_id"]: r for r, e in enumerate(before or [], 1)}
    old_score = {e["item_id"]: float(e["score"]) for e in before or []}
    head = f"      {'rank':>4}  {'item':<{width}}  {'stars':>5}"
    head += f"  {'change':<18}" if before is not None else ""
    lines = ["      (ranked by predicted stars + popularity, so the stars may be out of order)", head + "  title"]
    for rank, e in enumerate(items, 1):
        item_id, score = str(e["item_id"]), float(e["score"])
        line = f"      {rank:>4}  {item_id:<{width}}  {score:>5.2f}"
        if before is not None:
            was = old_rank.get(item_id)
            if was is None or was > TOP:
                move = "new" + (f" (was {was})" if was else "")
            else:
                move = "=" if was == rank else (f"{UP}{was - rank}" if was > rank else f"{DOWN}{rank - was}")
            delta = f" {score - old_score[item_id]:+.2f}" if item_id in old_score else ""
            line += f"  {move + delta:<18}"
        genres = ", ".join(side(item_id).get("genres", ())[:2])
        line += f"  {clip(title(side, item_id), 40)}" + (f"  [{genres}]" if genres else "")
        lines.append(line)
    return "\n".join(lines)

def changes(before: list[dict], after: list[dict], plan: dict[str, float], side: Side, genre: str | None) -> str:
    """What entered and left the top-N after the new ratings (`plan`), and how the scores moved."""
    out = []
    top_before = [e["item_id"] for e in before[:TOP]]
    top_after = [e["item_id"] for e in after[:TOP]]
    new_rank = {e["item_id"]: r for r, e in enumerate(after, 1)}
    new_score = {e["item_id"]: float(e["score"]) for e in after}
    left = [i for i in top_before if i not in top_after]
    parts = []
    for item_id in left:
        if item_id in plan:
            parts.append(f"{item_id} (rated {int(plan[item_id])}{STAR} now, so no longer recommended)")
        elif item_id in new_rank:
            old = next(float(e["score"]) for e in before if e["item_id"] == item_id)
            parts.append(f"{item_id} (now rank {new_rank[item_id]}, {old:.2f} {ARROW} {new_score[item_id]:.2f})")
        else:
            parts.append(f"{item_id} (fell below rank {DEPTH})")
    entered = [i for i in top_after if i not in top_before]
    out.append(f"      entered the top-{TOP}: {len(entered)}; left it: " + ("; ".join(parts) if parts else "none"))
    if genre:
        def count(ranked):
            return sum(1 for e in ranked if e["item_id"] not in plan
                       and genre in side(e["item_id"]).get("genres", ()))
        out.append(f"      unrated {genre} films in the top-{TOP}: {count(before[:TOP])} {ARROW} "
              f"{count(after[:TOP])}; in the top-{DEPTH}: {count(before)} {ARROW} {count(after)}")
    common = [i for i in new_score if i in {e["item_id"] for e in before} and i not in plan]
    if common:
        old = {e["item_id"]: float(e["score"]) for e in before}
        mean = sum(new_score[i] - old[i] for i in common) / len(common)
        out.append(f"      mean score change of the {len(common)} films in both top-{DEPTH} lists: {mean:+.3f}")
    return "\n".join(out)
