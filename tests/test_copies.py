"""Copies of a photo under another name: found whatever was done to them, other lesions not taken for them, and
kept by every bundle so that evaluation and the Diagnose page can tell."""
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw, ImageFilter

from conftest import SAMPLE, make_ham_dataset, run_script
from skin_core import bundle as bundles, copies, data, images, report, splits
from skin_core.predict import Predictor


def prepared(picture: Image.Image, size: int = 160) -> np.ndarray:
    return images.prepare(np.asarray(picture.convert("RGB")), size, 150)


def resaved(picture: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=quality)
    return Image.open(buffer)


@pytest.fixture(scope="module")
def sample_photos(sample_meta):
    return {row.image_id: Image.open(row.path).convert("RGB") for row in sample_meta.itertuples()}


def test_a_photo_resized_recompressed_recoloured_flipped_or_turned_is_found_as_a_copy(sample_photos):
    ids = list(sample_photos)
    seen = copies.SeenPhotos.of(ids, [prepared(photo) for photo in sample_photos.values()])
    changes = {
        "120x90, re-saved": lambda p: resaved(p.resize((120, 90), Image.Resampling.BILINEAR), 85),
        "JPEG quality 30": lambda p: resaved(p, 30),
        "600x450, as HAM10000's originals": lambda p: p.resize((600, 450), Image.Resampling.BICUBIC),
        "recoloured": lambda p: Image.fromarray((np.asarray(p, np.float32) * [1.1, 0.9, 0.8]).clip(0, 255)
                                                .astype(np.uint8)),
        "mirrored": lambda p: p.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        "a quarter turn": lambda p: p.transpose(Image.Transpose.ROTATE_90),
    }
    for name, change in changes.items():
        found = seen.copied([prepared(change(sample_photos[i])) for i in ids[::5]])
        assert found == ids[::5], name


def test_photos_of_other_lesions_are_not_taken_for_copies(sample_photos, sample_meta):
    assert sample_meta["lesion_id"].nunique() == len(sample_meta)      # 70 lesions, one photo each
    ids = list(sample_photos)
    seen = copies.SeenPhotos.of(ids[:35], [prepared(sample_photos[i]) for i in ids[:35]])
    assert seen.copied([prepared(sample_photos[i]) for i in ids[35:]]) == [None] * 35


def test_different_faint_lesions_in_the_same_black_circle_are_not_copies():
    """A dermatoscope's black frame dominates the whole photo's print, so such photos can share it: the print of
    the centre tells them apart."""
    def framed(seed):
        rng = np.random.default_rng(seed)
        picture = Image.new("RGB", (84, 84), "black")
        draw = ImageDraw.Draw(picture)
        draw.ellipse((6, 6, 78, 78), fill=(225, 190, 180))
        (x, y), r = rng.integers(30, 50, 2), rng.integers(3, 6)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(210, 175, 165))
        noisy = np.asarray(picture.filter(ImageFilter.GaussianBlur(3)), np.float32) + rng.normal(0, 3, (84, 84, 3))
        return images.prepare(noisy.clip(0, 255).astype(np.uint8), 160, 150)
    photos = [framed(seed) for seed in range(20)]
    prints = copies.fingerprints(photos)
    whole_bits = np.bitwise_count(prints[:, None, 0] ^ prints[None, :, 0]).sum(axis=2)
    assert (whole_bits[np.triu_indices(20, 1)] <= copies.WHOLE_BITS).sum() >= 3     # the frame alone matches
    for i in range(20):
        others = [j for j in range(20) if j != i]
        assert copies.SeenPhotos.of([str(j) for j in others], [photos[j] for j in others]).copied([photos[i]]) == [None]


def recoloured(picture: Image.Image) -> Image.Image:
    return Image.fromarray((np.asarray(picture, np.float32) * [1.05, 0.95, 0.9]).clip(0, 255).astype(np.uint8))


def test_copy_groups_join_the_lesions_of_a_photo_filed_twice_and_leave_the_others_alone(sample_photos, sample_meta):
    lesions = sample_meta.set_index("image_id")["lesion_id"]
    ids = list(sample_photos)
    original = sample_photos[ids[3]]
    photos = [prepared(photo) for photo in sample_photos.values()] + [
        prepared(recoloured(original)), prepared(original.transpose(Image.Transpose.FLIP_LEFT_RIGHT))]
    groups = copies.copy_groups(list(lesions[ids]) + ["HAM_9999998", "HAM_0000000"], photos)
    assert list(groups[[3, -2, -1]]) == ["HAM_0000000"] * 3        # the smallest of the three lesion ids
    others = [i for i in range(len(ids)) if i != 3]
    assert list(groups[others]) == list(lesions[ids].iloc[others])


def test_every_bundle_keeps_the_prints_of_the_photos_it_trained_and_was_tuned_on(tiny_bundle):
    bundle = bundles.load_bundle(tiny_bundle)
    split = pd.read_csv(tiny_bundle / "split.csv", dtype=str)
    assert set(bundle.seen.image_ids) == set(split.loc[split["subset"].isin(["train", "val"]), "image_id"])
    assert bundle.manifest["seen_photos"]["photos"] == len(bundle.seen.image_ids)
    (tiny_bundle / copies.SEEN_FILE).stat()          # listed and checked like every other file
    assert copies.SEEN_FILE in bundle.manifest["files"]


def test_evaluation_leaves_out_renamed_copies_and_diagnose_names_the_photo_copied(tiny_bundle, sample_meta, tmp_path):
    split = pd.read_csv(tiny_bundle / "split.csv", dtype=str).set_index("image_id")["subset"]
    learnt = [i for i in sample_meta["image_id"] if split[i] in ("train", "val")][:6]
    held_out = [i for i in sample_meta["image_id"] if split[i] == "test"]
    clinic = tmp_path / "clinic"
    for image_id in learnt + held_out:
        row = sample_meta.set_index("image_id").loc[image_id]
        (clinic / row["dx"]).mkdir(parents=True, exist_ok=True)
        Image.open(row["path"]).resize((600, 450)).transpose(Image.Transpose.FLIP_LEFT_RIGHT) \
            .save(clinic / row["dx"] / f"clinic_{image_id[-4:]}.png")
    predictor = Predictor.from_path(tiny_bundle)
    result = predictor.evaluate(clinic)
    assert result["left_out_copies"] == len(learnt) and result["left_out_seen"] == 0
    assert result["n"] == len(held_out)
    from skin_core.evaluation import other_dataset_notes
    assert f"{len(learnt)} images that are copies of photos the model trained or was tuned on" in \
        " ".join(other_dataset_notes(result))

    copy = next((clinic / sample_meta.set_index("image_id").loc[learnt[0], "dx"]).glob(f"clinic_{learnt[0][-4:]}.png"))
    analysis = predictor.analyse_bytes(copy.read_bytes())
    assert analysis.copy_of == learnt[0]
    answer, _ = report.findings(analysis, predictor.bundle.thresholds)
    assert any(f.code == "seen" and learnt[0] in f.message for f in answer)
    fresh = predictor.analyse_bytes(next(clinic.rglob(f"clinic_{held_out[0][-4:]}.png")).read_bytes())
    assert fresh.copy_of is None
    assert all(f.code != "seen" for f in report.findings(fresh, predictor.bundle.thresholds)[0])


def test_an_evaluation_resamples_a_photo_filed_twice_in_its_dataset_as_one_lesion(tiny_bundle, sample_meta, tmp_path):
    from skin_core.evaluation import other_dataset_notes
    split = pd.read_csv(tiny_bundle / "split.csv", dtype=str).set_index("image_id")["subset"]
    held_out = sample_meta[sample_meta["image_id"].map(split) == "test"]
    clinic = tmp_path / "clinic"                       # class folders: each file is a lesion of its own
    for row in held_out.itertuples():
        (clinic / row.dx).mkdir(parents=True, exist_ok=True)
        shutil.copy(row.path, clinic / row.dx / f"{row.image_id}.jpg")
    first = held_out.iloc[0]
    Image.open(first["path"]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(clinic / first["dx"] / "again.png")
    stages = []
    result = Predictor.from_path(tiny_bundle).evaluate(clinic, on_stage=stages.append)
    n = len(held_out) + 1
    assert stages == [f"Looking for copies of the photos this model learnt from among {n} images",
                      f"Scoring {n} images with the model", "Looking for photos filed twice in this dataset"]
    assert result["n"] == n and result["left_out_copies"] == 0
    assert result["n_lesions"] == len(held_out) and result["lesions_joined_by_copies"] == 1
    assert "copy of a photo filed under another lesion id of this dataset (found by its content): 1;" in \
        " ".join(other_dataset_notes(result))


def test_a_bundle_without_the_prints_gets_them_from_its_own_training_images(tiny_bundle, tmp_path, monkeypatch):
    import add_seen_photos
    older = tmp_path / "older"                                        # as bundles were before they kept them
    shutil.copytree(tiny_bundle, older)
    manifest = json.loads((older / "manifest.json").read_text())
    del manifest["files"][copies.SEEN_FILE], manifest["seen_photos"]
    (older / "manifest.json").write_text(json.dumps(manifest))
    (older / copies.SEEN_FILE).unlink()
    assert bundles.load_bundle(older).seen is None
    run_script(add_seen_photos, monkeypatch, older, "--data", SAMPLE)
    added, trained = bundles.load_bundle(older).seen, bundles.load_bundle(tiny_bundle).seen
    order = np.argsort(added.image_ids)
    np.testing.assert_array_equal(added.image_ids[order], np.sort(trained.image_ids))
    np.testing.assert_array_equal(added.prints[order], trained.prints[np.argsort(trained.image_ids)])
    manifest_before = (older / "manifest.json").read_bytes()
    with pytest.raises(SystemExit, match="already has the fingerprints"):
        run_script(add_seen_photos, monkeypatch, older, "--data", SAMPLE)
    assert (older / "manifest.json").read_bytes() == manifest_before



def with_a_twin(sample_meta, image_id: str, folder: Path) -> Path:
    """The sample dataset with `image_id` filed again, recoloured, as ISIC_9999999 of lesion HAM_9999999 (HAM10000
    holds ISIC_0025226 and ISIC_0030074 so)."""
    meta = sample_meta.copy()
    twin = folder / "ISIC_9999999.jpg"
    recoloured(Image.open(meta.loc[meta["image_id"] == image_id, "path"].iloc[0]).convert("RGB")).save(twin, quality=90)
    meta.loc[len(meta)] = {**meta[meta["image_id"] == image_id].iloc[0].to_dict(),
                           "image_id": "ISIC_9999999", "lesion_id": "HAM_9999999", "path": str(twin)}
    return make_ham_dataset(folder / "ham", meta)


def test_a_training_run_records_test_photos_that_copy_a_photo_it_learnt_from(tiny_bundle, sample_meta, tmp_path):
    """A split reused from a bundle is kept as recorded, even where it puts a copy of a training photo (filed
    under another lesion id) in test; the run's manifest lists such test photos."""
    from skin_core.training import TrainConfig, train
    split = pd.read_csv(tiny_bundle / "split.csv", dtype=str)
    original = split.loc[split["subset"] == "train"].iloc[0]
    root = with_a_twin(sample_meta, original["image_id"], tmp_path)
    fixed = tmp_path / "fixed_split"
    fixed.mkdir()
    pd.concat([split, pd.DataFrame([{"image_id": "ISIC_9999999", "lesion_id": "HAM_9999999", "dx": original["dx"],
                                     "subset": "test"}])]).to_csv(fixed / "split.csv", index=False)
    out = train(TrainConfig(data=str(root), out=str(tmp_path / "run"), epochs=1, head_epochs=0, img_size=32,
                            alpha=0.25, weights=None, batch_size=8, split_from=str(fixed), workers=2, tta="none"))
    recorded = json.loads((out / "manifest.json").read_text())["seen_photos"]["test_copies"]
    assert recorded == [{"image_id": "ISIC_9999999", "copy_of": original["image_id"]}]


def test_a_fresh_split_moves_a_photo_filed_twice_to_the_side_of_its_original_and_nothing_else(
        tiny_bundle, sample_meta, tmp_path):
    """A split derived by a run puts the lesions joined by a copy on the first side either is on (train, then
    validation, then test) and leaves every other photo where the split by lesion alone puts it; --no-copy-groups
    splits by lesion alone, as splits were derived before."""
    from skin_core.progress import ProgressLog
    from skin_core.training import TrainConfig, prepare
    split = pd.read_csv(tiny_bundle / "split.csv", dtype=str)
    original = split.loc[split["subset"] == "test"].iloc[0]["image_id"]
    root = with_a_twin(sample_meta, original, tmp_path)
    table = data.load_dataset(root).table

    def by_lesion_alone(seed):
        subsets = splits.split_by_lesion(table, test_fraction=0.2, val_fraction=0.2, seed=seed)
        return subsets.set_axis(table["image_id"])
    seed = next(s for s in range(100) if by_lesion_alone(s)["ISIC_9999999"] != by_lesion_alone(s)[original])
    apart = by_lesion_alone(seed)

    def split_of(**settings):
        prep = prepare(TrainConfig(data=str(root), out=str(tmp_path / "run"), img_size=32, test_fraction=0.2,
                                   val_fraction=0.2, seed=seed, workers=2, **settings), ProgressLog(None))
        return prep.table.set_index("image_id")["subset"], prep.split_info
    subsets, info = split_of()
    first_side = min(apart[[original, "ISIC_9999999"]], key=["train", "val", "test"].index)
    assert subsets[original] == subsets["ISIC_9999999"] == first_side
    others = apart.index.difference([original, "ISIC_9999999"])
    assert (subsets[others] == apart[others]).all()
    assert info["lesions_joined_by_copies"] == {"ham": 1}
    assert "copy of one photo under two lesion ids" in info["method"]
    subsets, info = split_of(copy_groups=False)
    assert subsets.to_dict() == apart.to_dict() and "lesions_joined_by_copies" not in info


def test_the_split_check_finds_no_copies_among_distinct_lesions_and_records_so(tiny_bundle, tmp_path, monkeypatch,
                                                                              capsys):
    import copies_in_split
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    run_script(copies_in_split, monkeypatch, bundle, "--data", SAMPLE, "--json", tmp_path / "copies.json", "--record")
    n_test = int((pd.read_csv(bundle / "split.csv")["subset"] == "test").sum())
    assert f"0 of {n_test} test photos are copies" in capsys.readouterr().out
    result = json.loads((tmp_path / "copies.json").read_text())
    figures = result["figures"]["sample_data"]
    assert result["copies"] == [] and figures["recorded"] == figures["without_copies"]
    assert figures["recorded"]["accuracy"] == pytest.approx(json.loads((bundle / "evaluation.json").read_text())
                                                            ["accuracy"], abs=1e-4)
    assert bundles.load_bundle(bundle).manifest["seen_photos"]["test_copies"] == []    # and the bundle still loads
