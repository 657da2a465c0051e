"""Flags and loading shared by the commands that train or evaluate models."""

from __future__ import annotations

from dataclasses import fields

from stream_app.core.config import ENCODERS, OBJECTIVES, ModelConfig


def add_data_flags(p) -> None:
    p.add_argument("--data", default="ml-100k", help="ml-100k, ml-1m, ml-10m, ml-20m, ml-25m, synthetic")
    p.add_argument("--split", default=None, help="ml-100k: u1..u5, ua, ub (default u1); others: random, none")
    p.add_argument("--synthetic-users", type=int, default=600, help="synthetic data: number of users")
    p.add_argument("--synthetic-items", type=int, default=400, help="synthetic data: number of items")


def load_split_for(args, settings):
    """The split named by --data/--split; synthetic data is generated from the seed and sizes."""
    from stream_app.data.registry import load_dataset, load_split

    data = None
    if args.data == "synthetic":
        data = load_dataset("synthetic", n_users=args.synthetic_users, n_items=args.synthetic_items,
                            seed=settings.seed)
    return load_split(args.data, args.split, settings, seed=settings.seed, data=data)


def add_config_flags(parser) -> None:
    """One --flag per ModelConfig field (default None: keep the config file's or built-in value)."""
    group = parser.add_argument_group("model hyperparameters (see stream_app/core/config.py)")
    for f in fields(ModelConfig):
        if f.name == "seed":
            continue  # the settings' --seed
        flag = "--" + f.name.replace("_", "-")
        kind = type(f.default)
        if kind is bool:
            group.add_argument(flag, dest=f"cfg_{f.name}", type=_parse_bool, default=None, metavar="BOOL")
        else:
            choices = {"encoder": ENCODERS, "objective": OBJECTIVES}.get(f.name)
            group.add_argument(flag, dest=f"cfg_{f.name}", type=kind, default=None, choices=choices)


def config_from_args(args) -> ModelConfig:
    config_file = getattr(args, "config", None)
    base = ModelConfig.from_file(config_file).to_dict() if config_file else ModelConfig().to_dict()
    for name in base:
        value = getattr(args, f"cfg_{name}", None)
        if value is not None:
            base[name] = value
    if getattr(args, "seed", None) is not None:
        base["seed"] = args.seed
    return ModelConfig.from_dict(base)


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)
