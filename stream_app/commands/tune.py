"""`recsys tune`: search hyperparameters on validation ratings (Optuna), write the best config JSON.

Only the training part of the split is loaded into the search; the trainer holds out its validation
ratings from it. `recsys train --config BEST.json` then trains the chosen model."""

from __future__ import annotations

import json
from pathlib import Path

from stream_app.commands.common import add_config_flags, add_data_flags, config_from_args, load_split_for
from stream_app.settings import add_setting_flags, settings_from_args


def register(sub):
    p = sub.add_parser("tune", help="search hyperparameters on validation data (Optuna), write the best config")
    add_data_flags(p)
    p.add_argument("--config", default=None, help="JSON file of the base hyperparameters (flags override it)")
    p.add_argument("--trials", type=int, default=20, help="trials to run now (a resumed study adds to its own)")
    p.add_argument("--timeout", type=float, default=None, help="stop starting trials after this many seconds")
    p.add_argument("--study-db", default="tune.db", help="SQLite file of the study (resumable)")
    p.add_argument("--study-name", default=None, help="study name (default: DATA-SPLIT)")
    p.add_argument("--out", default="best_config.json", help="write the best config here")
    p.add_argument("--png", default="tune_trials.png", help="plot of the trials")
    add_config_flags(p)
    add_setting_flags(p, "data", "model")
    p.set_defaults(func=run)


def run(args) -> int:
    from stream_app.core.training import set_training_threads
    from stream_app.core.tuning import best_config, plot_trials, run_study
    from stream_app.data.features import FeatureSchema

    settings = settings_from_args(args)
    base = config_from_args(args)
    split = load_split_for(args, settings)
    name = args.study_name or f"{args.data}-{split.name}"
    threads = set_training_threads(settings.torch_threads)
    print(f"tuning on {args.data} ({split.name}): {len(split.train)} training ratings, of which "
          f"{base.valid_fraction:.0%} are held out for validation; test ratings are not used; {threads} threads")
    study = run_study(split.train, FeatureSchema.fit(split.train), base, args.trials,
                      f"sqlite:///{Path(args.study_db).resolve()}", name, device=settings.device, timeout=args.timeout)
    best = best_config(study, base)
    Path(args.out).write_text(json.dumps(best.to_dict(), indent=1) + "\n")
    plot_trials(study, args.png)
    print(f"best trial {study.best_trial.number}: validation rmse {study.best_value:.4f}")
    print(f"best config written to {args.out} (recsys train --config {args.out}); trials plotted in {args.png}")
    return 0
