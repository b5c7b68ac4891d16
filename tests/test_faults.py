"""Faults while saving or switching models leave the old state intact, and the app falls back to a
good model when the active one is damaged."""
import errno
import json
import shutil

import keras
import pytest
from streamlit.testing.v1 import AppTest

from skin_core import bundle as bundles
from skin_core import registry
from conftest import ROOT


def test_a_full_disk_while_saving_keeps_the_old_bundle(tiny_bundle, tmp_path, monkeypatch):
    target = tmp_path / "models" / "mine"
    shutil.copytree(tiny_bundle, target)
    before = (target / "manifest.json").read_text()
    loaded = bundles.load_bundle(target)

    def full_disk(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(keras.Model, "save", full_disk)
    with pytest.raises(bundles.BundleError, match="No space left on device"):
        bundles.write_bundle(target, loaded.model, loaded.manifest)
    assert (target / "manifest.json").read_text() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["mine"]      # no half-written folder left
    bundles.load_bundle(target)


def test_an_interrupt_while_swapping_a_bundle_in_puts_the_old_one_back(tiny_bundle, tmp_path, monkeypatch):
    import pathlib
    target = tmp_path / "models" / "mine"
    shutil.copytree(tiny_bundle, target)
    before = (target / "manifest.json").read_text()
    loaded = bundles.load_bundle(target)
    rename = pathlib.Path.rename

    def interrupted(self, destination):   # Ctrl-C (or a cancel) between moving the old bundle out and the new in
        if ".partial-" in self.name:
            raise KeyboardInterrupt
        return rename(self, destination)

    monkeypatch.setattr(pathlib.Path, "rename", interrupted)
    with pytest.raises(KeyboardInterrupt):
        bundles.write_bundle(target, loaded.model, loaded.manifest)
    assert (target / "manifest.json").read_text() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["mine"]      # nothing half-written or retired left
    bundles.load_bundle(target)


def test_a_bundle_left_retired_by_a_killed_replacement_is_put_back(tiny_bundle, tmp_path, monkeypatch):
    # SIGKILL between the two renames runs no clean-up: the previous bundle sits under its retired name
    target = tmp_path / "models" / "mine"
    shutil.copytree(tiny_bundle, target)
    before = (target / "manifest.json").read_text()
    target.rename(target.parent / ".mine.old-1a2b3c4d")
    (target.parent / ".mine.partial-5e6f7a8b").mkdir()          # the new one, never moved in
    with pytest.raises(bundles.BundleError, match="manifest.json is missing"):
        bundles.read_manifest(target)     # retired a moment ago: maybe a live replacement, not taken back yet
    monkeypatch.setattr(bundles, "SWAP_SECONDS", 0.0)           # as it is seconds later
    assert bundles.read_manifest(target)["name"] == json.loads(before)["name"]
    assert (target / "manifest.json").read_text() == before
    bundles.load_bundle(target)


def test_the_active_model_left_retired_by_a_killed_replacement_is_found_by_its_name(models_dir, monkeypatch):
    """The app finds the active model by its name (registry.bundle_path), never by the exact folder: the name
    must bring the retired bundle back too, or it would read as a run that does not exist."""
    monkeypatch.setattr(bundles, "SWAP_SECONDS", 0.0)
    shutil.copytree(models_dir / "default", models_dir / "mine")
    registry.promote("mine", models_dir)
    (models_dir / "mine").rename(models_dir / ".mine.old-1a2b3c4d")
    assert registry.active_path(models_dir) == models_dir / "mine"
    assert "mine" in registry.list_bundles(models_dir)
    bundles.load_bundle(registry.active_path(models_dir))


def test_a_read_only_models_folder_refuses_promotion_cleanly(models_dir, monkeypatch):
    shutil.copytree(models_dir / "default", models_dir / "candidate")

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("skin_core.registry.os.replace", read_only)
    with pytest.raises(bundles.BundleError, match="Read-only file system"):
        registry.promote("candidate", models_dir)
    assert registry.active_name(models_dir) == "default"
    assert not list(models_dir.rglob(".active.*"))


def test_the_choice_of_model_is_kept_with_the_runs(models_dir):
    shutil.copytree(models_dir / "default", models_dir / "candidate")
    registry.promote("candidate", models_dir)
    assert json.loads((models_dir / "runs" / "active.json").read_text())["active"] == "candidate"
    assert not (models_dir / "active.json").exists()
    # a container rebuilt from its image keeps only the runs/ volume: the promoted model must survive that
    for kept_elsewhere in models_dir.iterdir():
        if kept_elsewhere.name not in ("runs", "default", "candidate"):
            shutil.rmtree(kept_elsewhere) if kept_elsewhere.is_dir() else kept_elsewhere.unlink()
    assert registry.active_name(models_dir) == "candidate"
    assert registry.rollback(models_dir) == "default"


def test_a_damaged_pointer_is_named_and_serves_the_default_without_a_traceback(models_dir):
    shutil.copytree(models_dir / "default", models_dir / "candidate")
    registry.promote("candidate", models_dir)
    pointer = models_dir / "runs" / "active.json"
    for damaged in (b"[]", b"{}", b'{"active": 3}', b"\xff\xfe not text", b'{"active": "candi'):
        pointer.write_bytes(damaged)
        assert registry.active_name(models_dir) == "default"
        assert "active.json cannot be read, so default is served" in registry.pointer_problem(models_dir)
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120).run()
    assert not at.exception
    assert any("cannot be read, so default is served" in str(w.value) for w in at.sidebar.warning)
    registry.promote("default", models_dir)            # even the model served already: a good pointer again
    assert registry.pointer_problem(models_dir) is None
    assert json.loads(pointer.read_text()) == {"active": "default", "previous": []}
    registry.promote("candidate", models_dir)
    assert registry.active_name(models_dir) == "candidate" and registry.rollback(models_dir) == "default"


def test_the_app_falls_back_when_the_active_bundle_is_tampered_with(models_dir):
    shutil.copytree(models_dir / "default", models_dir / "candidate")
    registry.promote("candidate", models_dir)
    manifest = json.loads((models_dir / "candidate" / "manifest.json").read_text())
    manifest["files"]["model.keras"] = "0" * 64
    manifest["name"] = "Tampered candidate"
    (models_dir / "candidate" / "manifest.json").write_text(json.dumps(manifest))
    at = AppTest.from_file(str(ROOT / "app_pages" / "diagnose.py"), default_timeout=120).run()
    assert not at.exception
    assert any("serving the default model" in str(w.value) for w in at.warning)
    # the sidebar says so too, and shows the figures of the model served, not of the broken one
    shell = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120).run()
    assert not shell.exception
    assert any("model.keras does not match its manifest checksum" in str(w.value) and "default model is served"
               in str(w.value) for w in shell.sidebar.warning)
    default_name = json.loads((models_dir / "default" / "manifest.json").read_text())["name"]
    assert any(str(m.value) == f"**{default_name}**" for m in shell.sidebar.markdown)
    assert not any("Tampered candidate" in str(m.value) for m in shell.sidebar.markdown)
    at.button[0].click().run()          # an example still gets a prediction
    assert len(at.get("plotly_chart")) == 1
    # About shows the card of the model served, not the broken one's
    (models_dir / "candidate" / "MODEL_CARD.md").write_text("# Tampered candidate's card\n")
    about = AppTest.from_file(str(ROOT / "app_pages" / "about.py"), default_timeout=120).run()
    assert not about.exception
    shown = " ".join(str(m.value) for m in about.markdown)
    assert "Tampered candidate's card" not in shown and f"# {default_name}" in shown
    evaluation = AppTest.from_file(str(ROOT / "app_pages" / "evaluation.py"), default_timeout=120).run()
    assert not evaluation.exception and evaluation.selectbox[0].value == "default"   # the model served comes first
