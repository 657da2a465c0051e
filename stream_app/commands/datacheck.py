"""--data (or --titles-from) against the dataset a model artifact was trained on.

Train records `<data>:<split>` in the manifest (`data.name`); a command that pairs a model with a dataset
refuses another dataset (exit 2, one line) unless --allow-other-data is given. Artifacts without a
recorded dataset are not checked."""

from __future__ import annotations

from pathlib import Path

from stream_app.errors import ArtifactError, DataMismatchError

OVERRIDE = "--allow-other-data"


def add_allow_other_data_flag(p) -> None:
    p.add_argument(OVERRIDE, dest="allow_other_data", action="store_true",
                   help="use the model with another dataset than the one it was trained on (default: refuse)")


def trained_on(manifest: dict) -> str:
    """The dataset name in a manifest (`ml-100k` of `ml-100k:u1`), or "" if none was recorded."""
    name = (manifest.get("data") or {}).get("name") or ""
    return str(name).split(":", 1)[0]


def check_same_data(manifest: dict, data: str, allow: bool, flag: str = "--data") -> None:
    """Raise DataMismatchError if the model was trained on another dataset than `data` (unless allowed)."""
    trained = trained_on(manifest)
    if allow or not trained or trained == data:
        return
    raise DataMismatchError(f"model {manifest.get('model_version', '?')} was trained on {trained}, not {data}: "
                            f"pass {flag} {trained}, or {OVERRIDE} to use it with {data} anyway")


def model_manifest(artifact: str | Path, model_version: str = "") -> dict | None:
    """The manifest of the artifact named by `model_version` (`<folder>@<sha>`) in an artifacts folder, else of
    the artifact (or `current` of the artifacts folder) at `artifact`; None if there is no model there."""
    from stream_app.core.artifacts import read_manifest, resolve_artifact

    candidates = [Path(artifact) / model_version.split("@", 1)[0]] if model_version else []
    for path in candidates:
        if (path / "manifest.json").is_file():
            return read_manifest(path)
    try:
        manifest = read_manifest(resolve_artifact(artifact))
    except ArtifactError:
        return None
    return manifest if not model_version or manifest.get("model_version") == model_version else None
