"""Whether a photo looks like the images the model learned from, judged in the model's own feature space.

The photo checks in quality.py catch blur, exposure and colour; they cannot tell a dermoscopy photo
from a photo of a face, a flower or a page, on which the model still gives confident answers. This
check compares the model's pooled features of a photo with those of a sample of its training images:
the cosine distance to the k-th nearest of them (deep nearest neighbours, Sun et al. 2022). The
threshold is a high percentile of the same distance for the held-out validation photos, so about one
ordinary dermoscopy photo in a hundred is flagged as well: the flag says "unlike the training images",
not "not a lesion".

Chosen over class-conditional Mahalanobis distances on the default model: against 70 pictures that
are not dermoscopy (crops of three ordinary photographs, flat colours, printed text, noise, textures)
and a sample of its test photos, the nearest-neighbour distance separated them with AUROC 0.999 and
flagged 97%, the Mahalanobis distance after a 64-component PCA 10% (AUROC 0.75), without PCA 66%. As
fitted into the default bundle it flags all 70 of them, 0.6% of its 1,602 test photos, and 0.6-1.5%
of them under the robustness report's camera changes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

FAMILIARITY_FILE = "familiarity.npz"
REFERENCE_SIZE = 1500     # training images kept: ~2.6 MB at float16 for 1024 features, compressed
NEIGHBOUR = 20            # the k-th nearest one counts (steadier than the nearest)
PERCENTILE = 99.0


def _unit(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, np.float32)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


@dataclass
class Familiarity:
    reference: np.ndarray       # (n, features) unit-length pooled features of sampled training images (float32
                                # holding float16 values: what the bundle stores)
    neighbour: int              # k
    threshold: float            # distances above this are unlike the training images
    percentile: float           # of the validation distances the threshold is

    def distance(self, features: np.ndarray) -> np.ndarray:
        """Cosine distance of each row of pooled features to its k-th nearest reference image."""
        similarity = _unit(features) @ self.reference.T
        k = min(self.neighbour, similarity.shape[1])
        return 1.0 - np.partition(similarity, -k, axis=1)[:, -k]

    def unlike(self, distances: np.ndarray) -> np.ndarray:
        """Which distances mark a photo as unlike the training images (see the module's unlike())."""
        return unlike(distances, self.threshold)

    def description(self) -> dict:
        """What the manifest says of it."""
        return {"method": f"cosine distance of the pooled features to the {self.neighbour}th nearest of "
                          f"{len(self.reference)} training images' (deep nearest neighbours)",
                "reference_images": int(len(self.reference)), "neighbour": self.neighbour,
                "threshold": round(self.threshold, 5), "percentile_of_validation": self.percentile}

    def save(self, path) -> None:
        np.savez_compressed(path, reference=self.reference.astype(np.float16), neighbour=np.int64(self.neighbour),
                 threshold=np.float64(self.threshold), percentile=np.float64(self.percentile))

    @classmethod
    def load(cls, path) -> "Familiarity":
        with np.load(Path(path), allow_pickle=False) as saved:
            return cls(reference=saved["reference"].astype(np.float32), neighbour=int(saved["neighbour"]),
                       threshold=float(saved["threshold"]), percentile=float(saved["percentile"]))


def unlike(distances, threshold: float) -> np.ndarray:
    """The one rule the app's warning and the robustness report share: a photo is unlike the training
    images when its distance is above the threshold (a tie counts as familiar)."""
    return np.asarray(distances) > threshold


def reference_rows(n_train: int, reference_size: int = REFERENCE_SIZE, seed: int = 0) -> np.ndarray:
    """Which of n training images the reference keeps (a random sample, in their order): callers compute
    features for these rows only, not for every training image."""
    return np.sort(np.random.default_rng(seed).permutation(n_train)[:reference_size])


def fit(train_features: np.ndarray, val_features: np.ndarray, *, reference_size: int = REFERENCE_SIZE,
        neighbour: int = NEIGHBOUR, percentile: float = PERCENTILE, seed: int = 0) -> Familiarity:
    """A random sample of the training images' features as the reference (all of them when given only
    the reference_rows' features); the threshold from the validation images', which the model was not
    fitted on, as new dermoscopy photos will be."""
    train = _unit(train_features)
    # stored as float16: the threshold is set with the rounded reference the predictor will use
    reference = train[reference_rows(len(train), reference_size, seed)].astype(np.float16).astype(np.float32)
    model = Familiarity(reference=reference, neighbour=neighbour, threshold=np.inf, percentile=percentile)
    model.threshold = float(np.percentile(model.distance(val_features), percentile))
    return model
