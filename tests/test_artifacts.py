"""Artifacts: round trip, and refusal of tampered, partial, corrupt or wrong-version folders."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from stream_app.cli import main
from stream_app.core.artifacts import (
    MANIFEST,
    VECTORS,
    WEIGHTS,
    load_artifact,
    read_manifest,
    resolve_artifact,
    save_artifact,
    set_current,
)
from stream_app.core.bulk import predict_dataset
from stream_app.core.config import ModelConfig
from stream_app.core.training import Trainer
from stream_app.data.dataset import random_split
from stream_app.data.features import FeatureSchema
from stream_app.data.synthetic import make_synthetic
from stream_app.errors import ArtifactError

TINY = dict(n_dim=6, m_records=5, k_samples=8, hidden=24, predictor_hidden=24, rounds=2, steps_per_round=10,
            batch_size=128)


@pytest.fixture(scope="module")
def small_model():
    data = make_synthetic(n_users=80, n_items=60, mean_ratings_per_user=20, seed=5)
    split = random_split(data, 0.1, 0)
    rec, report = Trainer(ModelConfig(**TINY), FeatureSchema.fit(split.train), "cpu", progress=False).fit(
        split.train, log=lambda *a: None)
    return rec, split, report


@pytest.fixture
def artifact(small_model, tmp_path):
    rec, _, report = small_model
    return save_artifact(rec, tmp_path / "m1", metrics=report, data_name="synthetic")


def test_round_trip_gives_identical_predictions_and_fold_ins(small_model, artifact):
    rec, split, _ = small_model
    loaded = load_artifact(artifact)
    assert loaded.model_version.startswith("m1@")
    assert loaded.ids == rec.ids
    assert np.array_equal(loaded.vectors["user"], rec.vectors["user"])
    assert np.array_equal(predict_dataset(loaded, split.test), predict_dataset(rec, split.test))
    recs = rec.records_from_ratings("user", np.arange(7), np.full(7, 5.0), np.full(7, 1.6e9))
    a = rec.fold_in("user", [recs], rec.features["user"][:1], entity_keys=["x"])
    b = loaded.fold_in("user", [recs], loaded.features["user"][:1], entity_keys=["x"])
    assert np.array_equal(a, b)
    manifest = read_manifest(artifact)
    assert manifest["config"]["n_dim"] == 6 and manifest["schema"]["rating_scale"] == [1.0, 5.0]
    assert len(manifest["data"]["fingerprint"]) == 64
    assert manifest["breathing_offset"]["user"] == pytest.approx(rec.net.state["user_offset"].tolist())
    assert list(rec.rated_items(0)) == list(loaded.rated_items(0))


def test_tampered_weights_are_refused(artifact):
    blob = bytearray((artifact / WEIGHTS).read_bytes())
    blob[-3] ^= 0xFF
    (artifact / WEIGHTS).write_bytes(bytes(blob))
    with pytest.raises(ArtifactError, match="does not match its checksum"):
        load_artifact(artifact)


def test_wrong_format_version_is_refused(artifact):
    manifest = json.loads((artifact / MANIFEST).read_text())
    manifest["format_version"] = 99
    (artifact / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="format version 99"):
        load_artifact(artifact)


def test_partial_artifact_is_refused(artifact):
    (artifact / VECTORS).unlink()
    with pytest.raises(ArtifactError, match="partial"):
        load_artifact(artifact)


def test_corrupt_manifest_and_missing_folder_give_clear_errors(artifact, tmp_path):
    (artifact / MANIFEST).write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_artifact(artifact)
    with pytest.raises(ArtifactError, match="recsys train"):
        load_artifact(tmp_path / "nowhere")


def test_a_pickle_is_never_loaded(artifact):
    # Replace the weights with a pickle and fix up the checksum: safetensors must reject it.
    import hashlib
    import pickle

    payload = pickle.dumps({"boom": 1})
    (artifact / WEIGHTS).write_bytes(payload)
    manifest = json.loads((artifact / MANIFEST).read_text())
    manifest["files"][WEIGHTS] = hashlib.sha256(payload).hexdigest()
    (artifact / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="corrupt"):
        load_artifact(artifact)


def test_current_pointer_and_refusal_to_overwrite(small_model, artifact):
    rec, _, _ = small_model
    set_current(artifact.parent, artifact.name)
    assert resolve_artifact(artifact.parent) == artifact
    assert load_artifact(artifact.parent).model_version == load_artifact(artifact).model_version
    with pytest.raises(ArtifactError, match="exists"):
        save_artifact(rec, artifact)
    shutil.rmtree(artifact)
    assert not list(artifact.parent.glob(".m1.*")), "no temporary folders left behind"


def test_cli_train_then_evaluate_on_synthetic_data(tmp_path, capsys):
    out = tmp_path / "artifacts" / "syn"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    assert main(["train", "--data", "synthetic", "--synthetic-users", "80", "--synthetic-items", "60",
                 "--out", str(out), "--artifacts-dir", str(tmp_path / "artifacts"), "--quiet", *flags]) == 0
    assert (out / "loss_curves.png").stat().st_size > 1000
    history = json.loads((out / "training_history.json").read_text())
    assert len(history["rounds"]) == TINY["rounds"] and history["test"]["n"] > 0
    assert (tmp_path / "artifacts" / "current").read_text().strip() == "syn"
    assert not (tmp_path / "artifacts" / "syn.checkpoint").exists()
    # Evaluate on the same synthetic split through the CLI: it must reproduce the training-time test error.
    result_file = tmp_path / "eval.json"
    assert main(["evaluate", "--artifact", str(out), "--data", "synthetic", "--synthetic-users", "80",
                 "--synthetic-items", "60", "--json", str(result_file)]) == 0
    result = json.loads(result_file.read_text())
    assert result["protocol"] == "warm" and result["n"] == history["test"]["n"]
    assert result["rmse"] == pytest.approx(history["test"]["rmse"], rel=1e-5)


def test_the_current_pointer_file_itself_loads(artifact):
    set_current(artifact.parent, artifact.name)
    pointer = artifact.parent / "current"
    assert resolve_artifact(pointer) == artifact
    assert load_artifact(pointer).model_version == load_artifact(artifact).model_version
    pointer.write_text("gone\n")
    with pytest.raises(ArtifactError, match="names 'gone'.*run `recsys train`"):
        load_artifact(pointer)


def test_wrong_paths_name_the_right_fix(artifact, tmp_path):
    with pytest.raises(ArtifactError, match=r"no model artifact at .*nowhere: run `recsys train` \(or pass"):
        load_artifact(tmp_path / "nowhere")
    fresh = tmp_path / "model_artifacts"  # a fresh clone's artifacts folder: only a README
    fresh.mkdir()
    (fresh / "README.md").write_text("models go here\n")
    with pytest.raises(ArtifactError, match="no model yet in .*: run `recsys train`$"):
        load_artifact(fresh)
    with pytest.raises(ArtifactError, match="is a file, not a model artifact folder"):
        load_artifact(fresh / "README.md")
    (artifact / MANIFEST).unlink()
    with pytest.raises(ArtifactError, match="partial copy"):
        load_artifact(artifact)


def test_artifact_files_honour_the_umask(small_model, tmp_path):
    import os
    import stat

    rec, _, _ = small_model
    old = os.umask(0o022)
    try:
        out = save_artifact(rec, tmp_path / "m")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    for name in (MANIFEST, WEIGHTS, VECTORS):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name


def fake_artifact(folder, created: str):
    folder.mkdir(parents=True)
    (folder / MANIFEST).write_text(json.dumps({"created": created}))
    return folder


def test_prune_keeps_the_newest_and_always_current(tmp_path):
    from stream_app.core.artifacts import prune_artifacts

    names = [f"m{k}" for k in range(5)]
    for k, name in enumerate(names):
        fake_artifact(tmp_path / name, f"2026-01-0{k + 1}T00:00:00Z")
    (tmp_path / "m0.checkpoint").mkdir()  # not an artifact: left alone
    (tmp_path / ".m9.tmp").mkdir()  # one being written: left alone
    (tmp_path / ".m9.tmp" / MANIFEST).write_text("{}")
    (tmp_path / "current").write_text("m1\n")  # an old model is current (e.g. a newer one was not promoted)
    removed = prune_artifacts(tmp_path, keep=2)
    assert sorted(p.name for p in removed) == ["m0", "m2", "m3"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m9.tmp", "current", "m0.checkpoint", "m1", "m4"]
    assert prune_artifacts(tmp_path, keep=1) == [tmp_path / "m4"]  # never current
    assert (tmp_path / "m1").is_dir()


def test_an_artifact_from_before_a_config_field_existed_loads_as_it_was_trained(small_model, tmp_path):
    from stream_app.core.artifacts import LEGACY_CONFIG

    _, split, _ = small_model
    legacy = {k: v for k, v in LEGACY_CONFIG.items() if k != "biases"}
    rec, _ = Trainer(ModelConfig(**TINY, **legacy), FeatureSchema.fit(split.train), "cpu", progress=False).fit(
        split.train, log=lambda *a: None)
    path = save_artifact(rec, tmp_path / "old", data_name="synthetic")
    manifest = json.loads((path / MANIFEST).read_text())
    for key in legacy:  # written by a version that did not know these fields
        del manifest["config"][key]
    (path / MANIFEST).write_text(json.dumps(manifest))
    loaded = load_artifact(path)
    assert {k: getattr(loaded.config, k) for k in legacy} == legacy
    assert np.array_equal(predict_dataset(loaded, split.test), predict_dataset(rec, split.test))
