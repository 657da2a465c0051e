"""`recsys settings`: print every setting with its env var, flag and default."""

from stream_app.settings import Settings, settings_table


def register(sub):
    p = sub.add_parser("settings", help="list all settings (env vars and flags)")
    p.add_argument("--current", action="store_true", help="show the values in effect now")
    p.set_defaults(func=run)


def run(args):
    if args.current:
        for name, value in vars(Settings.from_env()).items():
            print(f"{name} = {value!r}")
    else:
        print(settings_table())
