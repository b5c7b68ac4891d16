"""Shared fixtures. Real images come from sample_data/ (70 HAM10000 images, CC BY-NC 4.0,
Tschandl et al. 2018); datasets for particular cases are built from them in temporary folders."""
import importlib
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

importlib.import_module("skin_core")   # first: it sets TensorFlow's log level before a test module loads TensorFlow

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # the app's pages import `app_pages.common`, as under `streamlit run`
sys.path.append(str(ROOT / "scripts"))   # the scripts are not a package; their tests import them by name
SAMPLE = ROOT / "sample_data"
DEFAULT_BUNDLE = ROOT / "models" / "default"


def run_script(module, monkeypatch, *argv) -> None:
    """A script's main() in this process, as its command line would call it (no second TensorFlow start-up)."""
    monkeypatch.setattr(sys, "argv", [f"{module.__name__}.py", *map(str, argv)])
    module.main()


@pytest.fixture(scope="session")
def sample_meta() -> pd.DataFrame:
    meta = pd.read_csv(SAMPLE / "HAM10000_metadata.csv")
    meta["path"] = [str(SAMPLE / "HAM10000_images_part_1" / f"{i}.jpg") for i in meta["image_id"]]
    return meta


def make_ham_dataset(root: Path, meta: pd.DataFrame, *, images: bool = True) -> Path:
    """The official layout: metadata CSV at the top, images spread over two part folders."""
    root.mkdir(parents=True, exist_ok=True)
    for n, row in enumerate(meta.itertuples()):
        if images:
            part = root / f"HAM10000_images_part_{1 + n % 2}"
            part.mkdir(exist_ok=True)
            shutil.copy(row.path, part / f"{row.image_id}.jpg")
    meta.drop(columns=["path"]).to_csv(root / "HAM10000_metadata.csv", index=False)
    return root


def make_folder_dataset(root: Path, meta: pd.DataFrame) -> Path:
    """One sub-folder per class, as keras image_dataset_from_directory expects."""
    for row in meta.itertuples():
        (root / row.dx).mkdir(parents=True, exist_ok=True)
        shutil.copy(row.path, root / row.dx / f"{row.image_id}.jpg")
    return root


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A real (tiny) training run on the sample data: alpha 0.25, 32 px, no pretrained weights."""
    from skin_core.training import TrainConfig, train
    out = tmp_path_factory.mktemp("bundles") / "tiny"
    config = TrainConfig(data=str(SAMPLE), out=str(out), epochs=2, head_epochs=1, img_size=32, alpha=0.25,
                         weights=None, batch_size=8, test_fraction=0.2, val_fraction=0.2, workers=2,
                         progress_file=str(out.parent / "tiny_progress.jsonl"))
    return train(config)


@pytest.fixture(scope="session")
def tiny_patient_bundle(tiny_bundle, tmp_path_factory) -> Path:
    """The tiny run again on tiny_bundle's split, also reading the patients' age, sex and body site."""
    from skin_core.training import TrainConfig, train
    out = tmp_path_factory.mktemp("bundles") / "tiny_patients"
    config = TrainConfig(data=str(SAMPLE), out=str(out), epochs=2, head_epochs=1, img_size=32, alpha=0.25,
                         weights=None, batch_size=8, split_from=str(tiny_bundle), workers=2, patients=True,
                         head_lr=0.01)
    return train(config)


@pytest.fixture(scope="session")
def default_bundle() -> Path:
    if not (DEFAULT_BUNDLE / "manifest.json").is_file():
        pytest.skip("models/default has not been trained yet")
    return DEFAULT_BUNDLE


@pytest.fixture()
def models_dir(tmp_path, tiny_bundle, monkeypatch) -> Path:
    """A models/ folder whose default bundle is the tiny trained one, used by the app under test."""
    root = tmp_path / "models"
    shutil.copytree(tiny_bundle, root / "default")
    monkeypatch.setenv("SKIN_MODELS_DIR", str(root))
    return root
