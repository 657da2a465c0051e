"""Model artifacts: one folder per model, no pickle anywhere.

    manifest.json        format and version, model_version, config, feature schema, id maps,
                         frozen breathing offsets, training metrics, data fingerprint, and the
                         sha256 of every other file (a changed byte is refused at load)
    weights.safetensors  the networks, breathing offsets and cold-start regressions
    vectors.safetensors  trained entity vectors, encoded side data, the training ratings

A folder is written under a temporary name and renamed into place, so readers never see a
partial artifact; its files and folder get the usual permissions under the umask (e.g. 0644 and
0755 under umask 022). `current` in the artifacts folder names the model workers should serve;
`prune_artifacts` removes the oldest models but never the current one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy

from stream_app.core.config import ModelConfig
from stream_app.core.foldin import History, Recommender
from stream_app.core.inference import FrozenNetworks
from stream_app.data.features import FeatureSchema
from stream_app.errors import ArtifactError

FORMAT = "recsys-aevec"
FORMAT_VERSION = 1
MANIFEST, WEIGHTS, VECTORS = "manifest.json", "weights.safetensors", "vectors.safetensors"
CURRENT = "current"


def data_fingerprint(user: np.ndarray, item: np.ndarray, rating: np.ndarray, ts: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in (user, item, rating, ts):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def save_artifact(rec: Recommender, out: str | Path, metrics: dict | None = None, data_name: str = "",
                  overwrite: bool = False) -> Path:
    out = Path(out)
    if out.exists() and not overwrite:
        raise ArtifactError(f"{out} exists; choose another --out or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it 0700 whatever the umask
        save_numpy({k: np.ascontiguousarray(v) for k, v in rec.net.state.items()}, str(tmp / WEIGHTS))
        save_numpy(_vector_tensors(rec), str(tmp / VECTORS))
        weights_sha = _sha256(tmp / WEIGHTS)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model_version": f"{out.name}@{weights_sha[:12]}",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "config": rec.config.to_dict(),
            "dims": rec.net.dims,
            "schema": rec.schema.to_dict(),
            "ids": rec.ids,
            "breathing_offset": {s: rec.net.state[f"{s}_offset"].tolist() for s in ("user", "item")},
            "metrics": metrics or {},
            "data": _data_summary(rec, data_name),
            "files": {WEIGHTS: weights_sha, VECTORS: _sha256(tmp / VECTORS)},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        for file in (WEIGHTS, VECTORS, MANIFEST):  # safetensors writes 0600 whatever the umask
            (tmp / file).chmod(0o666 & ~_umask())
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# What an artifact written before a config field existed was trained with (its manifest lacks the field).
LEGACY_CONFIG = {"biases": False, "phi_layers": 2, "rho": "mlp", "dot_head": False, "residual_rank": 0}


def load_artifact(path: str | Path) -> Recommender:
    """Load and verify an artifact folder (or an artifacts folder with a `current` pointer); no torch needed."""
    path = resolve_artifact(path)
    manifest = read_manifest(path)
    for name, digest in manifest["files"].items():
        if not (path / name).exists():
            raise ArtifactError(f"{path} is partial: {name} is missing; retrain or copy the whole folder")
        if _sha256(path / name) != digest:
            raise ArtifactError(f"{path / name} does not match its checksum in {MANIFEST}: "
                                "the file was changed or corrupted; refusing to load it")
    try:
        config = ModelConfig.from_dict({**LEGACY_CONFIG, **manifest["config"]})
        schema = FeatureSchema.from_dict(manifest["schema"])
        dims = manifest["dims"]
        model = FrozenNetworks(config, {k: int(dims[k]) for k in ("user", "item", "context", "rates")},
                               load_numpy(str(path / WEIGHTS)))
        arrays = load_numpy(str(path / VECTORS))
    except (KeyError, ValueError, TypeError, IndexError, RuntimeError, SafetensorError) as exc:
        raise ArtifactError(f"{path} is corrupt or inconsistent: {exc}") from None
    ids = manifest["ids"]
    if len(ids["user"]) != len(arrays["user_vectors"]) or len(ids["item"]) != len(arrays["item_vectors"]):
        raise ArtifactError(f"{path}: id maps and vector tables disagree in size")
    history = History(*(arrays[f"history_{k}"] for k in ("user", "item", "rating", "ts")))
    return Recommender(model, schema, ids["user"], ids["item"], arrays["user_vectors"], arrays["item_vectors"],
                       arrays["user_features"], arrays["item_features"], history,
                       model_version=manifest["model_version"], seed=config.seed)


def read_manifest(path: str | Path) -> dict:
    path = Path(path)
    file = path / MANIFEST
    if not path.exists():
        raise ArtifactError(f"no model artifact at {path}: run `recsys train` (or pass --artifact FOLDER)")
    if not path.is_dir():
        raise ArtifactError(f"{path} is a file, not a model artifact folder: pass the artifact folder, or the "
                            f"artifacts folder whose `{CURRENT}` names one")
    if not file.exists():
        if any((path / name).exists() for name in (WEIGHTS, VECTORS)):
            raise ArtifactError(f"{path} has no {MANIFEST}: a partial copy; copy the whole folder or retrain")
        raise ArtifactError(f"no model yet in {path} (no {CURRENT} and no {MANIFEST}): run `recsys train`")
    try:
        manifest = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{file} is not valid JSON ({exc}); the artifact is corrupt") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not a {FORMAT} artifact")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{path} has format version {manifest.get('format_version')}; this program reads "
                            f"version {FORMAT_VERSION}: retrain with this version or use a matching release")
    missing = {"config", "dims", "schema", "ids", "files", "model_version"} - set(manifest)
    if missing:
        raise ArtifactError(f"{file} lacks {sorted(missing)}; the artifact is corrupt")
    return manifest


def resolve_artifact(path: str | Path) -> Path:
    """An artifact folder, or the one named by a `current` pointer: the pointer file itself
    (`model_artifacts/current`) or the artifacts folder holding it (`model_artifacts`)."""
    path = Path(path)
    if path.is_file() and path.name == CURRENT:
        path = path.parent
    pointer = path / CURRENT
    if not (path / MANIFEST).exists() and pointer.is_file():
        name = pointer.read_text().strip()
        if not (path / name).is_dir():
            raise ArtifactError(f"{pointer} names {name!r}, which is not in {path}: run `recsys train`, or "
                                f"point {CURRENT} at an existing model folder")
        return path / name
    return path


def current_name(artifacts_dir: str | Path) -> str | None:
    """The model folder name `current` points at, or None."""
    pointer = Path(artifacts_dir) / CURRENT
    return (pointer.read_text().strip() or None) if pointer.is_file() else None


def prune_artifacts(artifacts_dir: str | Path, keep: int) -> list[Path]:
    """Remove all but the `keep` newest artifacts (by manifest creation time, then name) of a folder, never
    the one `current` names (it counts among the `keep`: a worker may be loading it); return the removed."""
    if keep < 1:
        raise ValueError("keep must be >= 1")
    artifacts_dir = Path(artifacts_dir)
    current = current_name(artifacts_dir)
    models = []
    for folder in artifacts_dir.iterdir():
        if folder.name.startswith("."):
            continue  # an artifact being written (renamed into place when complete)
        try:
            created = str(json.loads((folder / MANIFEST).read_text()).get("created", ""))
        except (OSError, ValueError, AttributeError):
            continue  # not an artifact (or unreadable): never ours to delete
        models.append((created, folder.name, folder))
    models.sort(reverse=True)  # newest first
    models.sort(key=lambda m: m[1] != current)  # then current first (stable)
    removed = [folder for _, _, folder in models[keep:]]
    for folder in removed:
        shutil.rmtree(folder)
    return removed


def set_current(artifacts_dir: str | Path, name: str) -> None:
    """Point `current` at a model folder, atomically (workers poll this file)."""
    artifacts_dir = Path(artifacts_dir)
    if not (artifacts_dir / name / MANIFEST).exists():
        raise ArtifactError(f"{artifacts_dir / name} is not an artifact")
    tmp = artifacts_dir / f".{CURRENT}.tmp"
    tmp.write_text(name + "\n")
    os.replace(tmp, artifacts_dir / CURRENT)


def _vector_tensors(rec: Recommender) -> dict[str, np.ndarray]:
    h = rec.history
    return {
        "user_vectors": rec.vectors["user"], "item_vectors": rec.vectors["item"],
        "user_features": rec.features["user"], "item_features": rec.features["item"],
        "history_user": h.user.astype(np.int64), "history_item": h.item.astype(np.int64),
        "history_rating": h.rating.astype(np.float32), "history_ts": h.ts.astype(np.int64),
    }


def _data_summary(rec: Recommender, name: str) -> dict:
    h = rec.history
    return {"name": name, "n_users": len(rec.ids["user"]), "n_items": len(rec.ids["item"]),
            "n_ratings": len(h.user), "fingerprint": data_fingerprint(h.user, h.item, h.rating, h.ts)}


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
