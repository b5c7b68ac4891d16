"""Training on several datasets at once (HAM10000 beside the low-resolution BCN20000/MSK copies): each image keeps
its source, the split is made within each source, the report gives each source's figures; and the split of
a dataset too small for five folds."""
import base64
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import train
from conftest import SAMPLE, make_folder_dataset, make_ham_dataset
from skin_core import data, evaluation, splits
from skin_core.classes import CLASS_CODES


def low_resolution_copy(root, sample_meta, prefix: str = "BCN", side: int = 84):
    """A second collection in the HAM10000 layout: the sample photos squashed to `side` px, as the BCN20000/MSK
    copies are, under ids and lesion ids of their own (two photos of each lesion)."""
    (root / "images").mkdir(parents=True)
    rows = []
    for n, row in enumerate(sample_meta.itertuples()):
        image_id = f"{prefix}_{n:04d}"
        with Image.open(row.path) as photo:
            photo.convert("RGB").resize((side, side), Image.Resampling.BILINEAR).save(root / "images" / f"{image_id}.jpg")
        rows.append({"lesion_id": f"{prefix}_L{n // 2:04d}", "image_id": image_id, "dx": row.dx,
                     "age": 50, "sex": "female", "localization": "back"})
    pd.DataFrame(rows).to_csv(root / "HAM10000_metadata.csv", index=False)
    return root


@pytest.fixture()
def two_sources(tmp_path, sample_meta):
    return make_ham_dataset(tmp_path / "ham", sample_meta), low_resolution_copy(tmp_path / "bcn", sample_meta)


def test_several_datasets_read_as_one_table_that_keeps_each_images_source(two_sources):
    ham, bcn = two_sources
    dataset = data.load_datasets([ham, bcn])
    assert len(dataset.table) == 140
    assert dataset.table.groupby("source").size().to_dict() == {"ham": 70, "bcn": 70}
    assert dataset.table.loc[dataset.table["image_id"].str.startswith("BCN"), "source"].eq("bcn").all()
    assert data.load_dataset(ham).table["source"].eq("ham").all()      # one dataset is a source of its own


def test_an_image_or_lesion_in_two_datasets_or_two_folders_of_one_name_are_refused(tmp_path, sample_meta, two_sources):
    ham, _ = two_sources
    again = make_ham_dataset(tmp_path / "copy", sample_meta)
    with pytest.raises(data.DatasetError, match="image_ids appear in more than one dataset"):
        data.load_datasets([ham, again])
    (tmp_path / "other").mkdir()
    same_name = make_ham_dataset(tmp_path / "other" / "ham", sample_meta)
    with pytest.raises(data.DatasetError, match="same name"):
        data.load_datasets([ham, same_name])


def test_each_source_is_split_on_its_own_and_a_recorded_source_keeps_its_split(tmp_path, two_sources):
    ham, bcn = two_sources
    table = data.load_datasets([ham, bcn]).table
    subsets, how = splits.split_by_source(table, test_fraction=0.2, val_fraction=0.2, seed=3)
    for source, rows in table.assign(subset=subsets).groupby("source"):
        for name in ("train", "val", "test"):                 # stratified within each source
            assert set(rows.loc[rows["subset"] == name, "dx"]) == set(CLASS_CODES), (source, name)
        assert (rows.groupby("lesion_id")["subset"].nunique() == 1).all()
        alone = splits.split_by_lesion(rows, test_fraction=0.2, val_fraction=0.2, seed=3)
        assert (alone == rows["subset"]).all()                 # as if that source were trained on alone
    # a model of the first source alone: a run on both keeps that model's split for it
    first = table[table["source"] == "ham"].assign(subset=subsets[table["source"] == "ham"].map(
        {"train": "val", "val": "test", "test": "train"}))      # any recorded assignment, not the seed's
    first[["image_id", "lesion_id", "subset"]].to_csv(tmp_path / "split.csv", index=False)
    kept, how = splits.split_by_source(table, seed=3, test_fraction=0.2, val_fraction=0.2, split_csv=tmp_path / "split.csv")
    assert (kept[table["source"] == "ham"] == first["subset"]).all()
    assert (kept[table["source"] == "bcn"] == subsets[table["source"] == "bcn"]).all()
    assert how["ham"].startswith("as recorded") and how["bcn"].startswith("StratifiedGroupKFold")
    first.iloc[1:][["image_id", "subset"]].to_csv(tmp_path / "part.csv", index=False)
    with pytest.raises(data.DatasetError, match="1 images of ham are not in"):
        splits.split_by_source(table, split_csv=tmp_path / "part.csv")


def test_a_small_dataset_is_split_with_fewer_folds_and_too_few_lesions_are_refused():
    table = pd.DataFrame([{"image_id": f"{c}{k}", "lesion_id": f"{c}{k}", "dx": c}
                          for c in CLASS_CODES for k in range(4)])
    subset = splits.split_by_lesion(table, seed=0)               # five folds asked, four lesions per class
    for name in ("train", "val", "test"):
        assert set(table.loc[subset == name, "dx"]) == set(CLASS_CODES)
    with pytest.raises(data.DatasetError, match="akiec has 2.*at least 3 lesions"):
        splits.split_by_lesion(table[~table["image_id"].isin(["akiec2", "akiec3"])], seed=0)


def test_lowering_the_detail_of_some_photos_blurs_those_alone_as_84px_copies_are():
    import tensorflow as tf
    from skin_core.pipelines import lower_detail_of_some
    with Image.open(next((SAMPLE / "HAM10000_images_part_1").glob("*.jpg"))) as photo:
        sharp = np.asarray(photo.convert("RGB").resize((160, 160)), np.float32)
    batch = tf.constant(np.stack([sharp] * 8))
    assert np.array_equal(lower_detail_of_some(batch, seed=1, share=0.0, side=84).numpy(), batch.numpy())
    blurred = lower_detail_of_some(batch, seed=1, share=1.0, side=84).numpy()
    expected = tf.image.resize(tf.image.resize(batch, [84, 84], method="area"), [160, 160]).numpy()
    np.testing.assert_allclose(blurred, expected, atol=1e-3)
    detail = lambda x: np.abs(np.diff(x, axis=1)).mean()      # noqa: E731 (mean step between neighbours)
    assert detail(blurred[0]) < 0.8 * detail(sharp)
    some = lower_detail_of_some(batch, seed=1, share=0.5, side=84).numpy()
    changed = [not np.array_equal(some[i], sharp) for i in range(8)]
    assert 0 < sum(changed) < 8


def test_the_report_of_each_source_is_the_report_of_its_rows():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 200)
    probs = rng.dirichlet(np.ones(7), 200)
    sources = np.where(np.arange(200) < 120, "ham", "bcn")
    parts = evaluation.reports_by_source(y, probs, CLASS_CODES, sources, np.arange(200), {"mel": 0.3})
    assert list(parts) == ["ham", "bcn"]
    alone = evaluation.build_report(y[120:], probs[120:], CLASS_CODES, groups=np.arange(120, 200),
                                    thresholds={"mel": 0.3})
    for key in ("n", "accuracy", "balanced_accuracy", "macro_f1", "majority_baseline_accuracy", "ci95",
                "operating_points", "confusion_matrix"):
        assert parts["bcn"][key] == alone[key]
    assert "predictions" not in parts["bcn"]


@pytest.fixture(scope="module")
def two_source_bundle(tiny_bundle, tmp_path_factory, sample_meta):
    """train.py on the sample and a low-resolution copy of it, keeping tiny_bundle's split for the sample."""
    root = tmp_path_factory.mktemp("sources")
    bcn = low_resolution_copy(root / "bcn", sample_meta)
    out = root / "both"
    code = train.main(train.parse_args([
        "--data", str(SAMPLE), "--data", str(bcn), "--out", str(out), "--split-from", str(tiny_bundle),
        "--epochs", "2", "--head-epochs", "1", "--img-size", "32", "--alpha", "0.25", "--weights", "none",
        "--batch-size", "8", "--low-detail", "0.3", "--tta", "none", "--patients"]))
    assert code == 0
    return out


def test_train_py_on_two_datasets_keeps_the_first_models_split_and_reports_each_source(tiny_bundle,
                                                                                        two_source_bundle):
    out = two_source_bundle
    split = pd.read_csv(out / "split.csv", dtype=str)
    before = pd.read_csv(tiny_bundle / "split.csv", dtype=str).set_index("image_id")["subset"]
    sample_rows = split[split["source"] == "sample_data"].set_index("image_id")["subset"]
    assert sample_rows.sort_index().equals(before.sort_index())           # the same held-out sample lesions
    assert split.loc[split["source"] == "bcn", "subset"].value_counts().to_dict().keys() == {"train", "val", "test"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["data"] == ["sample_data", "bcn"]
    assert manifest["preprocessing"]["trained_on_low_detail"] == {"share": 0.3, "side": 84}
    assert set(manifest["test"]["by_source"]) == {"sample_data", "bcn"}
    assert manifest["dataset"]["sources"]["bcn"]["n_images"] == 70
    report = json.loads((out / "evaluation.json").read_text())
    for source, part in report["by_source"].items():
        assert part["n"] == int((split["source"] == source).mul(split["subset"] == "test").sum())
        assert part["majority_baseline_accuracy"] > 0 and part["ci95"]["balanced_accuracy"]


def test_train_py_trains_on_four_photos_per_class_and_refuses_two_in_one_line(tmp_path, sample_meta, capsys):
    four = make_folder_dataset(tmp_path / "four", sample_meta.groupby("dx").head(4))
    common = ["--epochs", "1", "--head-epochs", "1", "--img-size", "32", "--alpha", "0.25", "--weights", "none",
              "--tta", "none"]
    assert train.main(train.parse_args(["--data", str(four), "--out", str(tmp_path / "m"), *common])) == 0
    subsets = pd.read_csv(tmp_path / "m" / "split.csv").groupby("subset")["dx"].nunique()
    assert subsets.to_dict() == {"test": 7, "train": 7, "val": 7}
    capsys.readouterr()
    two = make_folder_dataset(tmp_path / "two", sample_meta.groupby("dx").head(2))
    assert train.main(train.parse_args(["--data", str(two), "--out", str(tmp_path / "n"), *common])) == 2
    printed = capsys.readouterr()
    errors = [line for line in printed.out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Each class needs at least 3 lesions" in errors[0]
    assert "Traceback" not in printed.out + printed.err
    assert not (tmp_path / "n").exists()


def test_a_run_on_more_sources_is_compared_on_the_first_models_validation_images(tmp_path):
    first = pd.DataFrame({"image_id": ["a", "b", "c", "d"], "lesion_id": ["A", "B", "C", "D"],
                          "subset": ["train", "val", "test", "train"]})
    first.to_csv(tmp_path / "first.csv", index=False)
    more = pd.concat([first, pd.DataFrame({"image_id": ["x", "y"], "lesion_id": ["X", "Y"], "subset": ["train", "val"]})])
    more.to_csv(tmp_path / "more.csv", index=False)
    assert splits.holds_out_the_same(tmp_path / "first.csv", tmp_path / "more.csv")
    # another collection holding a photo of a lesion the first validates on: it may have trained on that lesion
    more.assign(lesion_id=["A", "B", "C", "D", "B", "Y"]).to_csv(tmp_path / "shared.csv", index=False)
    assert not splits.holds_out_the_same(tmp_path / "first.csv", tmp_path / "shared.csv")
    more.assign(subset=["train", "train", "test", "train", "train", "val"]).to_csv(tmp_path / "moved.csv", index=False)
    assert not splits.holds_out_the_same(tmp_path / "first.csv", tmp_path / "moved.csv")


def test_the_evaluation_page_shows_each_sources_figures_and_draws_one_on_request(two_source_bundle, tmp_path,
                                                                                 monkeypatch):
    from streamlit.testing.v1 import AppTest
    from conftest import ROOT
    shutil.copytree(two_source_bundle, tmp_path / "models" / "default")
    monkeypatch.setenv("SKIN_MODELS_DIR", str(tmp_path / "models"))
    report = json.loads((two_source_bundle / "evaluation.json").read_text())
    at = AppTest.from_file(str(ROOT / "app_pages" / "evaluation.py"), default_timeout=120).run()
    assert not at.exception
    table = next(d.value for d in at.dataframe if "balanced accuracy" in getattr(d.value, "columns", []))
    assert list(table.index) == ["sample_data", "bcn"]
    for source in ("sample_data", "bcn"):
        part = report["by_source"][source]
        assert table.loc[source, "balanced accuracy"] == pytest.approx(part["balanced_accuracy"])
        assert table.loc[source, "majority baseline"] == pytest.approx(part["majority_baseline_accuracy"])
    at.radio(key="src-main").set_value("bcn").run()
    assert not at.exception
    assert any("held-out images of bcn only" in str(c.value) for c in at.caption)
    drawn = next(c for c in at.get("plotly_chart") if c.proto.id.endswith("cm-main"))
    z = json.loads(drawn.proto.spec)["data"][0]["z"]        # plotly's typed-array form: base64 bytes and a shape
    shown = np.frombuffer(base64.b64decode(z["bdata"]), z["dtype"]).reshape([int(n) for n in z["shape"].split(",")])
    assert np.array_equal(shown, report["by_source"]["bcn"]["confusion_matrix"])


def test_a_run_continued_from_a_model_of_more_sources_records_what_that_model_learnt(two_source_bundle, tmp_path,
                                                                                     capsys):
    """Refocusing a two-source model on one source: its split.csv still lists the other source's images, so
    an evaluation on that source leaves out what the starting model trained or was tuned on."""
    from skin_core.predict import Predictor
    out = tmp_path / "refocused"
    code = train.main(train.parse_args([
        "--data", str(SAMPLE), "--out", str(out), "--init-bundle", str(two_source_bundle), "--split-from",
        str(two_source_bundle), "--epochs", "1", "--head-epochs", "0", "--img-size", "32", "--alpha", "0.25",
        "--weights", "none", "--batch-size", "8", "--tta", "none", "--patients"]))
    assert code == 0, capsys.readouterr().out
    before = pd.read_csv(two_source_bundle / "split.csv", dtype=str).set_index("image_id")["subset"]
    after = pd.read_csv(out / "split.csv", dtype=str).set_index("image_id")["subset"]
    assert after.sort_index().equals(before.sort_index())       # the sample's split, and bcn's as inherited
    recorded = json.loads((out / "manifest.json").read_text())["split"]
    assert "by_source" not in recorded             # it read one source: how bcn was split is not this run's to say
    bcn = two_source_bundle.parent / "bcn"                   # the second source the fixture trained on
    report = Predictor.from_path(out).evaluate(bcn)
    assert report["n"] == int((before[before.index.str.startswith("BCN")] == "test").sum())
    assert report["left_out_seen"] == int(before.index.str.startswith("BCN").sum()) - report["n"]


def test_reporting_a_bundle_on_its_own_sources_reproduces_the_test_figures_finishing_wrote(tiny_bundle, tmp_path,
                                                                                        monkeypatch):
    import report_sources
    from conftest import run_script
    out = tmp_path / "reported"
    run_script(report_sources, monkeypatch, tiny_bundle, "--data", SAMPLE, "--out", out)
    finished, reported = (json.loads((folder / "manifest.json").read_text())["test"] for folder in (tiny_bundle, out))
    for key in ("n", "accuracy", "balanced_accuracy", "macro_f1", "top3_accuracy", "majority_baseline_accuracy"):
        assert reported[key] == pytest.approx(finished[key]), key
    assert "by_source" not in reported                      # one source: no per-source block
    from skin_core.bundle import load_bundle
    split = pd.read_csv(out / "split.csv", dtype=str)     # and it keeps the prints of every photo it learnt from
    assert set(load_bundle(out).seen.image_ids) == set(split.loc[split["subset"] != "test", "image_id"])


def test_the_sidebar_gives_each_sources_test_figures_beside_their_mixture(two_source_bundle, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest
    from conftest import ROOT
    shutil.copytree(two_source_bundle, tmp_path / "models" / "default")
    monkeypatch.setenv("SKIN_MODELS_DIR", str(tmp_path / "models"))
    test = json.loads((two_source_bundle / "manifest.json").read_text())["test"]
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120).run()
    assert not at.exception
    summary = next(str(c.value) for c in at.sidebar.caption if str(c.value).startswith("Held-out test"))
    lines = summary.splitlines()
    assert lines[0].startswith(f"Held-out test ({test['n']} images): balanced accuracy "
                               f"{test['balanced_accuracy']:.2f}")
    assert lines[1:] == [f"- {source} ({part['n']} images): balanced accuracy {part['balanced_accuracy']:.2f}, "
                         f"macro F1 {part['macro_f1']:.2f}, accuracy {part['accuracy']:.2f} (always-"
                         f"{part['majority_class']} baseline {part['majority_baseline_accuracy']:.2f})"
                         for source, part in test["by_source"].items()]
    assert [line.split(" (")[0] for line in lines[1:]] == ["- sample_data", "- bcn"]
