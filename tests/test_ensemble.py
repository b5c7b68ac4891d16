"""Ensembles: several networks served as one model (model.ensemble_of), stored at half precision, finished
and written as a bundle by scripts/ensemble.py."""
import io
import json
import shutil
import zipfile

import h5py
import numpy as np
import pandas as pd
import pytest

from skin_core import bundle as bundles, images
from skin_core.bundle import Bundle
from skin_core.model import LAST_CONV_LAYER, LOGITS_LAYER, build_model, ensemble_of, is_ensemble
from skin_core.predict import Predictor
from conftest import SAMPLE, run_script

CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def two_networks(size=64):
    """Two tiny networks with different random weights (their heads too), so their answers differ."""
    import keras
    networks = []
    for seed in (1, 2):
        keras.utils.set_random_seed(seed)
        network = build_model(7, size, 0.25, weights=None, dropout=0.0)
        dense = network.get_layer(LOGITS_LAYER)
        kernel, bias = dense.get_weights()
        dense.set_weights([np.random.default_rng(seed).normal(0, 0.5, kernel.shape), bias + seed])
        networks.append(network)
    return networks


def logits_of(network, x):
    import keras
    return keras.Model(network.input, network.get_layer(LOGITS_LAYER).output)(x, training=False).numpy()


def photos(n, size=64, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype(np.float32)


def test_an_ensemble_answers_the_mean_of_its_networks_logits():
    first, second = two_networks()
    x = photos(6)
    assert np.abs(logits_of(first, x) - logits_of(second, x)).max() > 0.5     # two different answers to average
    ensemble = ensemble_of([first, second])
    assert is_ensemble(ensemble) and not is_ensemble(first)
    # the networks share their layers with the ensemble, so they hold the same (rounded) weights it does
    expected = (logits_of(first, x) + logits_of(second, x)) / 2
    np.testing.assert_allclose(logits_of(ensemble, x), expected, rtol=0, atol=1e-4)
    # its weights are float16 values already, as the bundle stores them: storing loses nothing
    for weights in ensemble.get_weights():
        np.testing.assert_array_equal(weights, weights.astype(np.float16).astype(np.float32))


def test_an_ensembles_maps_are_grad_cam_of_its_mean_logit():
    """The served closed form (predict.make_forward) holds for the networks' blocks side by side."""
    import keras
    import tensorflow as tf
    ensemble = ensemble_of(two_networks())
    manifest = {"classes": CLASSES, "input_size": 64, "preprocessing": {"detail_side": None}, "files": {}}
    predictor = Predictor(Bundle(path=SAMPLE, manifest=manifest, model=ensemble))
    blocks = keras.Model(ensemble.input, [ensemble.get_layer(LAST_CONV_LAYER).output,
                                          ensemble.get_layer(LOGITS_LAYER).output])
    for image in photos(2, seed=3):
        analysis = predictor.analyse(images.DecodedImage(rgb=image.astype(np.uint8), source_format="PNG",
                                                         source_mode="RGB"))
        assert analysis.cams.shape == (2, 2, 7)
        batch = tf.constant(analysis.model_input[None].astype(np.float32))
        for c in range(7):
            with tf.GradientTape() as tape:
                features, logits = blocks(batch, training=False)
                score = logits[0, c]
            weights = tf.reduce_mean(tape.gradient(score, features), axis=[1, 2])
            cam = tf.nn.relu(tf.reduce_sum(features * weights[:, None, None, :], axis=-1))[0].numpy()
            np.testing.assert_allclose(analysis.cams[..., c], cam / cam.max() if cam.max() > 0 else cam, atol=1e-4)


def test_networks_that_cannot_be_joined_are_refused():
    first, _ = two_networks()
    with pytest.raises(ValueError, match="same input size"):
        ensemble_of([first, build_model(7, 96, 0.25, weights=None)])
    with pytest.raises(ValueError, match="at least two"):
        ensemble_of([first])
    with pytest.raises(ValueError, match="not from other ensembles"):
        ensemble_of([ensemble_of(two_networks()), first])


def stored_weight_types(model_file) -> set:
    with zipfile.ZipFile(model_file) as saved:
        stored = saved.read("model.weights.h5")
    types = set()
    with h5py.File(io.BytesIO(stored), "r") as weights:
        weights.visititems(lambda name, item: types.add(item.dtype) if isinstance(item, h5py.Dataset) else None)
    return types


def test_an_ensemble_bundle_is_stored_at_half_precision_and_serves_what_was_measured(tiny_bundle, tmp_path,
                                                                                       monkeypatch):
    import ensemble as ensemble_script
    out = tmp_path / "pair"
    run_script(ensemble_script, monkeypatch, tiny_bundle, tiny_bundle, "--data", SAMPLE, "--out", out)
    pair, single = bundles.load_bundle(out), bundles.load_bundle(tiny_bundle)
    assert is_ensemble(pair.model) and stored_weight_types(out / "model.keras") == {np.dtype(np.float16)}
    assert stored_weight_types(tiny_bundle / "model.keras") == {np.dtype(np.float32)}
    assert pair.manifest["architecture"].startswith("2 networks side by side")
    assert pair.manifest["weights_source"] == f"{tiny_bundle.name} + {tiny_bundle.name}"
    assert pair.manifest["training"]["ensemble_of"] == [tiny_bundle.name, tiny_bundle.name]
    assert (out / bundles.SPLIT_FILE).read_bytes() == (tiny_bundle / bundles.SPLIT_FILE).read_bytes()
    # a network beside itself answers as it does alone, up to the half-precision rounding
    pixels = np.stack([images.prepare(images.decode(path.read_bytes()).rgb, single.input_size, single.detail_side)
                       for path in sorted((SAMPLE / "HAM10000_images_part_1").glob("*.jpg"))[:12]])
    np.testing.assert_allclose(Predictor(pair).logits(pixels), Predictor(single).logits(pixels), rtol=0, atol=0.02)
    # the figures in the manifest are those of the stored weights: scoring the loaded bundle again gives them
    report = Predictor(pair).evaluate(SAMPLE, leave_out_seen=True)
    assert report["n"] == pair.manifest["test"]["n"]
    assert report["balanced_accuracy"] == pytest.approx(pair.manifest["test"]["balanced_accuracy"])
    assert report["macro_f1"] == pytest.approx(pair.manifest["test"]["macro_f1"])
    # its model card says what it is and how it was made (it has no schedule of its own to describe)
    from model_card import card
    text = card(out, "python scripts/ensemble.py A B ...", "docs/experiments.md")
    assert f"Two MobileNet V1 networks (`keras.applications.MobileNet`, alpha 0.25), the bundles {tiny_bundle.name} and" \
           in text and "joined without further training" in text and "best validation epoch" not in text
    # an ensemble is not trained further as it is: one of its networks is, named by --init-member
    from skin_core.training import TrainConfig, train
    more = dict(data=str(SAMPLE), epochs=1, head_epochs=0, img_size=32, alpha=0.25, batch_size=8,
                init_bundle=str(out), split_from=str(tiny_bundle))
    with pytest.raises(ValueError, match="holds several networks side by side .*--init-member N"):
        train(TrainConfig(out=str(tmp_path / "more"), **more))
    with pytest.raises(ValueError, match="holds 2 networks; there is no network 3"):
        train(TrainConfig(out=str(tmp_path / "more"), init_member=3, **more))
    with pytest.raises(ValueError, match="picks a network of an ensemble; .* holds one network"):
        train(TrainConfig(out=str(tmp_path / "more"), init_member=1, **{**more, "init_bundle": str(tiny_bundle)}))
    assert not (tmp_path / "more").exists()
    train(TrainConfig(out=str(tmp_path / "more"), init_member=2, **more))
    continued = bundles.load_bundle(tmp_path / "more")
    assert not is_ensemble(continued.model) and continued.manifest["training"]["init_member"] == 2


def test_an_ensemble_records_each_networks_own_bias_and_patient_head_and_gives_them_back(
        tiny_patient_bundle, tmp_path, monkeypatch):
    """The joined layer keeps the mean bias and the bundle the mean patient head; the manifest records each
    network's own, and continuing network N (train.py --init-member N) starts from those."""
    import ensemble as ensemble_script
    from skin_core.training import TrainConfig, _initial_model
    out = tmp_path / "pair"
    run_script(ensemble_script, monkeypatch, tiny_patient_bundle, tiny_patient_bundle, "--data", SAMPLE, "--out", out)
    single, pair = bundles.load_bundle(tiny_patient_bundle), bundles.load_bundle(out)
    recorded = pair.manifest["training"]
    own_bias = single.model.get_layer(LOGITS_LAYER).get_weights()[1]
    assert np.allclose(recorded["member_biases"], [own_bias, own_bias], atol=1e-6)
    assert np.allclose(recorded["member_patient_heads"], [single.patient_head.weights] * 2, atol=1e-6)
    # one network of the pair joins another bundle as BUNDLE:N, so a pair can have one network replaced
    again = tmp_path / "again"
    run_script(ensemble_script, monkeypatch, tiny_patient_bundle, f"{out}:2", "--data", SAMPLE, "--out", again)
    joined = bundles.load_bundle(again)
    assert joined.manifest["training"]["ensemble_of"] == [tiny_patient_bundle.name, "pair:2"]
    pixels = np.stack([images.prepare(images.decode(path.read_bytes()).rgb, single.input_size, single.detail_side)
                       for path in sorted((SAMPLE / "HAM10000_images_part_1").glob("*.jpg"))[:8]])
    np.testing.assert_allclose(Predictor(joined).logits(pixels), Predictor(single).logits(pixels), rtol=0, atol=0.02)
    with pytest.raises(SystemExit, match="holds one network; BUNDLE:N names a network of an ensemble"):
        run_script(ensemble_script, monkeypatch, out, f"{tiny_patient_bundle}:1", "--data", SAMPLE,
                   "--out", tmp_path / "refused")
    # a network beside itself has the mean of the pair, so record another bias and head for the second network:
    # taking it out must use them, not the means the joined layers hold
    recorded["member_biases"][1] = (own_bias + 1).tolist()
    recorded["member_patient_heads"][1] = (single.patient_head.weights * 2).tolist()
    (out / bundles.MANIFEST_FILE).write_text(json.dumps(pair.manifest))
    config = TrainConfig(data=str(SAMPLE), out=str(tmp_path / "more"), img_size=single.input_size, alpha=0.25,
                         init_bundle=str(out), init_member=2, split_from=str(tiny_patient_bundle))
    network, head = _initial_model(config, 7)
    np.testing.assert_allclose(network.get_layer(LOGITS_LAYER).get_weights()[1], own_bias + 1, atol=1e-5)
    np.testing.assert_allclose(head.weights, single.patient_head.weights * 2, atol=1e-5)
    config.init_member = 1
    network, head = _initial_model(config, 7)
    np.testing.assert_allclose(network.get_layer(LOGITS_LAYER).get_weights()[1], own_bias, atol=1e-5)
    np.testing.assert_allclose(head.weights, single.patient_head.weights, atol=1e-5)
    # a pair joined before they were recorded (the default of runs 51-52) gives the means the joined layers hold
    del recorded["member_biases"], recorded["member_patient_heads"]
    (out / bundles.MANIFEST_FILE).write_text(json.dumps(pair.manifest))
    config.init_member = 2
    network, head = _initial_model(config, 7)
    np.testing.assert_array_equal(network.get_layer(LOGITS_LAYER).get_weights()[1],
                                  pair.model.get_layer(LOGITS_LAYER).get_weights()[1])
    np.testing.assert_array_equal(head.weights, pair.patient_head.weights)


def test_a_network_taken_out_of_an_ensemble_answers_as_it_did_but_for_one_constant_per_class():
    """member_weights: the body as stored and the logits kernel unstacked; the network's own bias is not kept (the
    ensemble holds the mean), so its logits move by the same amount for every photo."""
    from skin_core.model import member_weights
    first, second = two_networks()
    x = photos(6)
    alone = [logits_of(network, x) for network in (first, second)]        # before ensemble_of rounds their weights
    ensemble = ensemble_of([first, second])
    for index, own in enumerate(alone, start=1):
        network = build_model(7, 64, 0.25, weights=None, dropout=0.0)
        network.set_weights(member_weights(ensemble, index))
        shift = logits_of(network, x) - own
        np.testing.assert_allclose(shift, np.broadcast_to(shift[0], shift.shape), rtol=0, atol=0.02)
        assert np.abs(shift[0]).max() == pytest.approx(0.5, abs=0.02)   # the biases differ by 1 (two_networks): half
    with pytest.raises(ValueError, match="no network 0"):
        member_weights(ensemble, 0)


def test_a_network_taken_out_with_its_recorded_bias_answers_as_it_did():
    """With the bias member_biases recorded when the ensemble was joined, the network comes out as it went in
    (up to the half-precision rounding of its body and kernel)."""
    from skin_core.model import member_biases, member_weights
    networks = two_networks()
    x = photos(6)
    alone = [logits_of(network, x) for network in networks]
    biases = member_biases(networks)
    assert biases[1] == pytest.approx(np.add(biases[0], 1), abs=1e-5)     # two_networks: the second's is 1 higher
    ensemble = ensemble_of(networks)
    for index, own in enumerate(alone, start=1):
        network = build_model(7, 64, 0.25, weights=None, dropout=0.0)
        network.set_weights(member_weights(ensemble, index, biases[index - 1]))
        np.testing.assert_allclose(logits_of(network, x), own, rtol=0, atol=0.02)


def test_bundles_that_cannot_form_an_ensemble_are_refused_before_anything_is_written(
        tiny_bundle, tiny_patient_bundle, tmp_path, monkeypatch):
    import ensemble as ensemble_script
    other = tmp_path / "other_split"
    shutil.copytree(tiny_bundle, other)
    split = pd.read_csv(other / bundles.SPLIT_FILE)
    split.loc[split["subset"] == "test", "subset"] = "train"
    split.to_csv(other / bundles.SPLIT_FILE, index=False)
    manifest = bundles.read_manifest(other)
    manifest["files"][bundles.SPLIT_FILE] = bundles.sha256_file(other / bundles.SPLIT_FILE)
    (other / bundles.MANIFEST_FILE).write_text(json.dumps(manifest))
    out = tmp_path / "pair"
    with pytest.raises(SystemExit, match="was not trained on the same dataset and split as .*, so one may have learnt "
                                         "from the other.s validation or test lesions"):
        run_script(ensemble_script, monkeypatch, tiny_bundle, other, "--data", SAMPLE, "--out", out)
    with pytest.raises(SystemExit, match="either every bundle reads the patient's age"):
        run_script(ensemble_script, monkeypatch, tiny_bundle, tiny_patient_bundle, "--data", SAMPLE, "--out", out)
    with pytest.raises(SystemExit, match="at least two bundles"):
        run_script(ensemble_script, monkeypatch, tiny_bundle, "--data", SAMPLE, "--out", out)
    assert not out.exists()
    with pytest.raises(SystemExit, match="already exists"):
        run_script(ensemble_script, monkeypatch, tiny_bundle, tiny_bundle, "--data", SAMPLE, "--out", tiny_bundle)
