"""Flags and loading shared by the commands that train or evaluate models."""

from __future__ import annotations

import sys
from dataclasses import fields

from stream_app.core.config import ENCODERS, OBJECTIVES, RHOS, ModelConfig
from stream_app.errors import UsageError

# Hyperparameters that must be >= 1 (0 rounds would write an untrained model).
AT_LEAST_ONE = ("n_dim", "m_records", "k_samples", "hidden", "predictor_hidden", "rounds", "batch_size", "train_k")


def add_data_flags(p) -> None:
    p.add_argument("--data", default="ml-100k", help="ml-100k, ml-1m, ml-10m, ml-20m, ml-25m, synthetic")
    p.add_argument("--split", default=None, help="ml-100k: u1..u5, ua, ub (default u1); others: random, none")
    p.add_argument("--synthetic-users", type=positive_int, default=600, help="synthetic data: number of users")
    p.add_argument("--synthetic-items", type=positive_int, default=400, help="synthetic data: number of items")


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, not {text!r}")
    return value


def show_progress(quiet: bool = False) -> bool:
    """Progress bars only on a terminal: written to a log file or a pipe they are a flood of carriage-return
    lines (training still logs one plain line per round)."""
    return not quiet and sys.stderr.isatty()


def load_split_for(args, settings):
    """The split named by --data/--split; synthetic data is generated from the seed and sizes."""
    from stream_app.data.registry import load_dataset, load_split

    data = None
    if args.data == "synthetic":
        data = load_dataset("synthetic", n_users=args.synthetic_users, n_items=args.synthetic_items,
                            seed=settings.seed)
    return load_split(args.data, args.split, settings, seed=settings.seed, data=data)


# One line of help per ModelConfig field (the measurements behind the defaults are in stream_app/core/config.py).
CONFIG_HELP = {
    "n_dim": "size N of the user and item ID vectors",
    "m_records": "ratings M an entity's autoencoder encodes at a time",
    "k_samples": "subsets of M ratings whose codes are averaged into a served vector (K)",
    "encoder": "set: permutation-invariant set encoder; concat: fixed-M concatenation",
    "objective": "joint: encoders and predictor trained together; reconstruct: autoencoders first, then the "
                 "predictor",
    "hidden": "hidden units of the encoders and decoders",
    "rho": "the set encoder's network after pooling: mlp (hidden layer, tanh) or linear (the code affine in "
           "the pooled mean)",
    "phi_layers": "layers of the set encoder's per-record network before pooling (1, 2 or 3)",
    "predictor_hidden": "hidden units of the rating predictor",
    "dot_head": "add a weighted dot product of the user and item vectors to the predictor's outputs",
    "dropout": "dropout rate in the networks",
    "rounds": "training rounds (ID refinements); at least 1",
    "epochs_per_round": "passes over the training ratings between two ID refinements",
    "steps_per_round": "network training steps between two ID refinements (0 = from --epochs-per-round)",
    "biases": "closed-form user and item biases beside the codes (one more vector component)",
    "bias_reg": "pseudo-ratings pulling a folded-in bias toward its cold-start value",
    "residual_rank": "width of the closed-form residual factor beside each vector (0: none)",
    "residual_reg": "ridge penalty of the residual factor (chosen on validation when choosing is on)",
    "batch_size": "ratings per training step",
    "lr": "learning rate",
    "weight_decay": "weight decay of the optimizer",
    "recon_weight": "weight of the reconstruction loss in the joint objective",
    "thumbs_weight": "weight of the thumbs up/down head",
    "train_k": "codes averaged per entity for one training example",
    "calibrate_weight": "weight of the extra predictor loss on served-like vectors (0 = off)",
    "small_pool_fraction": "fraction of training examples drawn from only a few of the entity's ratings",
    "predictor_epochs": "reconstruct objective: predictor epochs after the refinement",
    "smoothing": "step of an ID refinement toward its target (1 = jump), in (0, 1]",
    "breathing": "remove the common drift of all codes before moving the IDs",
    "whiten": "decorrelate the ID vectors to equal spread after each move",
    "init_scale": "initial ID vectors drawn from U(-s, s)",
    "cold_ridge": "ridge penalty of the side-data -> vector cold-start regression",
    "foldin_prior": "pseudo-ratings the cold-start vector counts for when folding in an entity",
    "popularity_weight": "top-N lists rank by predicted stars + w * ln(1 + ratings of the item)",
    "valid_fraction": "training ratings held out to report the validation error (and choose on)",
    "choose_on_validation": "choose foldin_prior and popularity_weight on the validation ratings after training",
}


def add_config_flags(parser) -> None:
    """One --flag per ModelConfig field (default None: keep the config file's or built-in value)."""
    group = parser.add_argument_group("model hyperparameters (flags override --config; "
                                      "see stream_app/core/config.py)")
    for f in fields(ModelConfig):
        if f.name == "seed":
            continue  # the settings' --seed
        flag = "--" + f.name.replace("_", "-")
        kind = type(f.default)
        text = f"{CONFIG_HELP.get(f.name, 'see stream_app/core/config.py')} (default: {f.default})".replace("%", "%%")
        if kind is bool:
            group.add_argument(flag, dest=f"cfg_{f.name}", type=_parse_bool, default=None, metavar="BOOL",
                               help=text)
        else:
            choices = {"encoder": ENCODERS, "objective": OBJECTIVES, "rho": RHOS}.get(f.name)
            group.add_argument(flag, dest=f"cfg_{f.name}", type=kind, default=None, choices=choices,
                               metavar=f.name.upper() if choices is None else None, help=text)


def config_from_args(args) -> ModelConfig:
    """The model config of --config (if given) with the hyperparameter flags on top; UsageError if invalid."""
    config_file = getattr(args, "config", None)
    try:
        base = ModelConfig.from_file(config_file).to_dict() if config_file else ModelConfig().to_dict()
    except OSError as exc:
        raise UsageError(f"--config {config_file}: {exc.strerror or exc}; pass an existing JSON file") from None
    except (ValueError, TypeError) as exc:
        raise UsageError(f"--config {config_file} is not a valid model config ({exc}); fix the file") from None
    for name in base:
        value = getattr(args, f"cfg_{name}", None)
        if value is not None:
            base[name] = value
    if getattr(args, "seed", None) is not None:
        base["seed"] = args.seed
    for name in AT_LEAST_ONE:
        if base[name] < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, not {base[name]}")
    try:
        return ModelConfig.from_dict(base)
    except ValueError as exc:  # a range check of ModelConfig: name the flag
        raise UsageError(f"invalid hyperparameter: {exc} (see `recsys train --help`)") from None


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)
