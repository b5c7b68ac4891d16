"""Training under tf.distribute.MirroredStrategy on two logical CPU devices yields a usable bundle."""
import json
import subprocess
import sys

from skin_core.predict import Predictor
from conftest import ROOT, SAMPLE


def test_mirrored_training_on_two_logical_cpus(tmp_path):
    out = tmp_path / "mirrored"
    result = subprocess.run([sys.executable, "train.py", "--data", str(SAMPLE), "--out", str(out), "--epochs", "1",
                             "--head-epochs", "1", "--img-size", "32", "--alpha", "0.25", "--weights", "none",
                             "--batch-size", "4", "--strategy", "mirrored", "--logical-cpus", "2"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["replicas"] == 2
    assert manifest["training"]["batch_size"] == 4      # per replica, as asked
    assert manifest["training"]["global_batch_size"] == 8   # what each step saw across the two replicas
    assert manifest["training"]["global_lr"] == 2 * manifest["training"]["lr"]   # scaled with the batch
    assert Predictor.from_path(out).classes == manifest["classes"]
