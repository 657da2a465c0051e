"""The demo's user story, without Kafka: which user to follow, which films it rates and why, and how its
top-10 lists are printed (`recsys demo`, commands/demo.py, runs the services around it)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from stream_app.commands.demo_display import STAR, TOP, changes, clip, ranked_table, title
from stream_app.data.dataset import RatingData


@dataclass
class Story:
    """The training data, the ratings just replayed, and what the followed user is going to do."""

    data: RatingData
    replayed: list[dict]  # rating events as sent
    window_user: int  # the worker's fold-in window per user
    loved: int  # new 5-star ratings
    hated: int  # new 1-star ratings (of the current top items)
    genre: str | None = field(default=None)  # the genre the new 5-star films come from (set by plan_ratings)

    def rated_by(self, user: str) -> set[str]:
        d = self.data
        index = d.user_index().get(user)
        rated = {d.item_ids[i] for i in d.item[d.user == index]} if index is not None else set()
        return rated | {r["item_id"] for r in self.replayed if r["user_id"] == user}

    def pick_user(self, wanted: str | None) -> str:
        if wanted is not None:
            return str(wanted)
        counts = Counter(r["user_id"] for r in self.replayed)
        if not counts:
            return self.data.user_ids[int(self.data.user[0])]
        ranked = sorted(counts, key=lambda u: (-counts[u], int(u) if u.isdigit() else 0, u))
        # The most active in the replay among those whose whole history fits in the worker's fold-in window
        # (so the new ratings weigh in visibly), else among those who have not rated much of the catalogue.
        fits = self.window_user - self.loved - self.hated
        rated = {u: len(self.rated_by(u)) for u in ranked}
        return next((u for u in ranked if 10 <= rated[u] <= fits),
                    next((u for u in ranked if rated[u] < 0.3 * self.data.n_items), ranked[0]))

    def side(self, item_id: str) -> dict:
        index = self.data.item_index().get(item_id)
        return self.data.items[index] if index is not None else {}

    def plan_ratings(self, user: str, ranked: list[dict]) -> dict[str, float]:
        """item id -> stars: 5 for popular films of the genre this user rates least (and that its top-10
        lacks), 1 for its current top items."""
        d = self.data
        rated = self.rated_by(user)
        top = [e["item_id"] for e in ranked[:TOP]]
        popularity = Counter(d.item_ids[i] for i in d.item)
        genre_of_rated = Counter(g for i in rated for g in self.side(i).get("genres", ()))
        genre_of_top = Counter(g for i in top for g in self.side(i).get("genres", ()))
        candidates: dict[str, list[str]] = {}
        for item_id, side in zip(d.item_ids, d.items, strict=True):
            if item_id in rated or item_id in top:
                continue
            for g in side.get("genres", ()):
                candidates.setdefault(g, []).append(item_id)
        # a genre with films left over once the user has rated some, so that those can rise
        genres = ([g for g, items in candidates.items() if len(items) >= self.loved + 3]
                  or [g for g, items in candidates.items() if len(items) >= self.loved])
        plan: dict[str, float] = {}
        if genres:
            total = max(1, sum(genre_of_rated.values()))
            self.genre = min(genres, key=lambda g: (genre_of_rated[g] / total + genre_of_top[g] / TOP, g))
            loved = sorted(candidates[self.genre], key=lambda i: (-popularity[i], i))[: self.loved]
        else:  # no genres in the side data: popular unrated films
            self.genre = None
            loved = sorted((i for i in d.item_ids if i not in rated and i not in top),
                           key=lambda i: (-popularity[i], i))[: self.loved]
        plan.update(dict.fromkeys(loved, 5.0))
        plan.update(dict.fromkeys(top[: self.hated], 1.0))
        return plan

    # ------------------------------------------------------------------------------------------ printing
    def title(self, item_id: str) -> str:
        return title(self.side, item_id)

    def print_user(self, user: str) -> None:
        d = self.data
        index = d.user_index().get(user)
        side = d.users[index] if index is not None else {}
        about = ", ".join(f"{k} {v}" for k, v in side.items() if k in ("gender", "age", "occupation"))
        n_train = int((d.user == index).sum()) if index is not None else 0
        n_replay = sum(1 for r in self.replayed if r["user_id"] == user)
        genres = Counter(g for i in self.rated_by(user) for g in self.side(i).get("genres", ()))
        liked = ", ".join(g for g, _ in genres.most_common(3))
        print(f"      user {user}{f' ({about})' if about else ''}: {n_train} ratings in training, {n_replay} "
              f"replayed just now" + (f"; mostly {liked}" if liked else ""))

    def print_plan(self, plan: dict[str, float]) -> None:
        for item_id, stars in plan.items():
            genres = ", ".join(self.side(item_id).get("genres", ())[:3])
            why = "a current favourite" if stars == 1 else (f"{self.genre}" if self.genre else "popular")
            print(f"      {int(stars)}{STAR}  {item_id:>5}  {clip(self.title(item_id), 44):<44}  ({why}; {genres})")

    def table(self, items: list[dict], before: list[dict] | None = None) -> str:
        return ranked_table(items, self.side, before)

    def print_changes(self, before: list[dict], after: list[dict], plan: dict[str, float]) -> None:
        print(changes(before, after, plan, self.side, self.genre))
