"""`recsys data`: download, list and inspect datasets."""

from __future__ import annotations

import time

import numpy as np

from stream_app.commands.common import show_progress
from stream_app.data.dataset import RatingData
from stream_app.data.registry import (
    DATASETS,
    SYNTHETIC,
    cache_dir,
    download_dataset,
    find_in_cache,
    find_in_mirror,
    load_dataset,
    load_split,
    mirror_root,
    split_names,
)
from stream_app.errors import RecsysError
from stream_app.settings import add_setting_flags, settings_from_args


def register(sub):
    p = sub.add_parser("data", help="download, list and inspect datasets")
    p.set_defaults(func=lambda args: p.print_help() or 2)
    actions = p.add_subparsers(dest="data_command", metavar="ACTION")

    download = actions.add_parser("download", help="fetch a dataset into the cache (mirror, else GroupLens)")
    download.add_argument("name", choices=list(DATASETS))
    download.add_argument("--no-verify", dest="verify", action="store_false",
                          help="accept a zip whose sha256 is unknown or does not match")
    download.set_defaults(func=run_download)

    listing = actions.add_parser("list", help="known datasets and where each is found")
    listing.set_defaults(func=run_list)

    info = actions.add_parser("info", help="counts, rating histogram and split sizes of a dataset")
    info.add_argument("name", choices=[*DATASETS, SYNTHETIC])
    info.add_argument("--split", help="split to size (ml-100k: u1..u5, ua, ub; any: random, none)")
    info.set_defaults(func=run_info)

    for action in (download, listing, info):
        add_setting_flags(action, "data")


def run_download(args) -> int:
    settings = settings_from_args(args)
    cached = find_in_cache(args.name, settings)
    if cached is not None:
        print(f"{args.name} is already in the cache: {cached}")
        return 0
    path = download_dataset(args.name, settings, verify=args.verify, progress=show_progress())
    print(f"{args.name} ready in {path}")
    return 0


def run_list(args) -> int:
    settings = settings_from_args(args)
    mirror = mirror_root(settings)
    print(f"mirror: {mirror or '(not set: RECSYS_DATA_MIRROR)'}")
    print(f"cache:  {cache_dir('', settings)}")
    print(f"{'name':<17} {'mirror':<8} {'cache':<6} {'sha256':<8} about")
    for name, info in DATASETS.items():
        source = find_in_mirror(name, settings)
        in_mirror = "-" if source is None else ("folder" if source.is_dir() else "zip")
        in_cache = "yes" if find_in_cache(name, settings) else "-"
        known = "known" if info.sha256 or info.files_sha256 else "unknown"
        print(f"{name:<17} {in_mirror:<8} {in_cache:<6} {known:<8} {info.about}")
    print(f"{SYNTHETIC:<17} {'-':<8} {'-':<6} {'-':<8} generated on the fly (planted factors)")
    return 0


def run_info(args) -> int:
    settings = settings_from_args(args)
    split_name = args.split or split_names(args.name)[0]
    try:
        data = load_dataset(args.name, settings)
        split = load_split(args.name, split_name, settings, data=data)
    except ValueError as exc:  # malformed files, unknown split: one clear line, no traceback
        raise RecsysError(str(exc)) from None
    print(f"{args.name}: {data.n_users} users, {data.n_items} items, {len(data)} ratings, "
          f"scale {data.rating_scale[0]:g}..{data.rating_scale[1]:g}, {_date_range(data)}")
    print("ratings:")
    for stars, count in zip(*np.unique(data.rating, return_counts=True), strict=True):
        print(f"  {stars:>4g}: {count:>10} ({count / max(len(data), 1):6.1%})")
    print(f"split {split.name}: train {len(split.train)} ratings, test {len(split.test)} ratings")
    return 0


def _date_range(data: RatingData) -> str:
    if not len(data):
        return "no ratings"
    if not data.timed:
        return "no timestamps"
    day = "%Y-%m-%d"
    return (f"{time.strftime(day, time.gmtime(int(data.ts.min())))} to "
            f"{time.strftime(day, time.gmtime(int(data.ts.max())))}")
