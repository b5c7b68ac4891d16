"""Copies of a photo under another name: fingerprints that survive resizing, recompression, colour shifts, flips
and quarter turns.

Leaving out the photos a model learnt from by their file names misses a copy renamed by another collection, and
the collections themselves hold some photos twice under different lesion ids (HAM10000's ISIC_0025226 and
ISIC_0030074, recoloured; a few MSK photos in ISIC 2019). So a bundle keeps the fingerprints of the photos it was
trained and tuned on (`SeenPhotos`); an evaluation on another dataset leaves out the images that match one, and
the Diagnose page says when a photo does.

A fingerprint is a perceptual hash of the prepared photo (images.prepare, as the model sees it): grey at 64x64,
its 2-D DCT, and for each of the 16x16 lowest frequencies but the constant one whether it lies above their median
(255 bits). Each photo has two, of the whole square and of its centre half: many dermatoscopes frame the skin in
a black circle, which dominates the whole print, so two different lesions in such circles can share it; a copy
must match both. Measured in docs/experiments.md ("Copies under another name").
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.fft import dctn

SEEN_FILE = "seen_photos.npz"
GREY_SIDE = 64
LOW_FREQUENCIES = 16
PRINT_BYTES = 32                     # 255 bits, packed
CENTRE_SHARE = 0.5                   # the centre print covers the middle half of each side
WHOLE_BITS, CENTRE_BITS = 30, 36
"""A copy differs from its original in at most this many bits of each print, set for few false matches over
finding every copy: of 300 HAM10000 test photos, every copy re-saved at JPEG quality 30 but two and every
recoloured one matched its original, and about half of those brought down to 84 px; no HAM10000 or
BCN20000/MSK test photo matched a training or validation photo with another diagnosis (4,162 photos).
The measurements are in docs/experiments.md ("Copies under another name")."""


def _grey(prepared: np.ndarray, share: float) -> np.ndarray:
    side = prepared.shape[0]
    margin = int(round(side * (1 - share) / 2))
    middle = np.asarray(prepared)[margin:side - margin, margin:side - margin]
    picture = Image.fromarray(middle.clip(0, 255).astype(np.uint8))
    return np.asarray(picture.convert("L").resize((GREY_SIDE, GREY_SIDE), Image.Resampling.BOX), np.float32)


def _print(grey: np.ndarray) -> np.ndarray:
    coefficients = dctn(grey, norm="ortho")[:LOW_FREQUENCIES, :LOW_FREQUENCIES].ravel()[1:]
    return np.packbits(coefficients > np.median(coefficients))


def fingerprints(pixels) -> np.ndarray:
    """(n, 2, 32) uint8: the whole and centre prints of n prepared photos (side x side x 3, 0-255)."""
    prints = [[_print(_grey(photo, 1.0)), _print(_grey(photo, CENTRE_SHARE))] for photo in pixels]
    return np.asarray(prints, np.uint8).reshape(-1, 2, PRINT_BYTES)


def _turned(grey: np.ndarray) -> np.ndarray:
    """The prints of a grey picture's eight flips and quarter turns, as (8, 4) 64-bit words."""
    turns = [np.rot90(g, k) for g in (grey, grey[:, ::-1]) for k in range(4)]
    return np.stack([_print(turn) for turn in turns]).view(np.uint64)


def _differing_bits(words: np.ndarray, references: np.ndarray) -> np.ndarray:
    """(turns, references) counts of differing bits."""
    return np.bitwise_count(np.bitwise_xor(words[:, None, :], references[None])).sum(axis=2)


@dataclass
class SeenPhotos:
    """The fingerprints of the photos a model was trained or tuned on, with their image ids."""
    image_ids: np.ndarray          # (n,) str
    prints: np.ndarray             # (n, 2, 32) uint8

    @classmethod
    def of(cls, image_ids, pixels) -> "SeenPhotos":
        return cls(np.asarray(image_ids, str), fingerprints(pixels))

    def copied(self, pixels) -> list[str | None]:
        """For each prepared photo (an array of them, or any iterable), the image id of a seen photo it is a copy
        of (any flip or quarter turn of it), or None."""
        found = []
        for photo in pixels:
            matched = self.matching(photo)
            found.append(str(self.image_ids[matched[0]]) if len(matched) else None)
        return found

    def matching(self, photo) -> np.ndarray:
        """The positions of the seen photos that one prepared photo is a copy of (any flip or quarter turn)."""
        whole, centre = self._words
        close_whole = _differing_bits(_turned(_grey(photo, 1.0)), whole) <= WHOLE_BITS
        candidates = np.flatnonzero(close_whole.any(axis=0))      # few: the centre prints only for these
        close = close_whole[:, candidates] & (
            _differing_bits(_turned(_grey(photo, CENTRE_SHARE)), centre[candidates]) <= CENTRE_BITS)
        return candidates[close.any(axis=0)]

    @cached_property
    def _words(self) -> tuple[np.ndarray, np.ndarray]:
        """The whole and centre prints as 64-bit words, made once for all the photos compared."""
        return tuple(np.ascontiguousarray(self.prints[:, k]).view(np.uint64) for k in (0, 1))

    def save(self, target) -> None:
        """To a path ending in .npz or an open binary file."""
        np.savez_compressed(target, image_ids=self.image_ids, prints=self.prints)

    @classmethod
    def load(cls, path) -> "SeenPhotos":
        with np.load(Path(path), allow_pickle=False) as stored:
            image_ids, prints = stored["image_ids"], stored["prints"]
        if prints.ndim != 3 or prints.shape[1:] != (2, PRINT_BYTES) or len(prints) != len(image_ids):
            raise ValueError(f"fingerprints of shape {prints.shape} for {len(image_ids)} images")
        return cls(image_ids.astype(str), prints.astype(np.uint8))

    def description(self) -> dict:
        return {"photos": int(len(self.image_ids)), "file": SEEN_FILE,
                "method": "perceptual hashes (DCT of the grey 64x64 picture, 255 bits) of the whole prepared photo "
                          "and of its centre half (skin_core.copies)"}


def copy_groups(lesion_ids, pixels) -> np.ndarray:
    """Each photo's lesion id, or, for a photo that copies a photo filed under another lesion id, one lesion id
    shared by all the lesions joined by such copies (the smallest): what a new split keeps on one side
    (splits.keep_copies_together), so that no held-out photo copies a training photo, and what an evaluation's
    intervals resample as one lesion. With no copies the lesion ids come back unchanged. Every pair is compared:
    about 5 ms a photo for 10,000 of them."""
    lesion_ids = np.asarray(lesion_ids, str)
    seen = SeenPhotos.of(lesion_ids, pixels)
    parent = {lesion: lesion for lesion in lesion_ids}

    def root(lesion):
        while parent[lesion] != lesion:
            parent[lesion] = parent[parent[lesion]]
            lesion = parent[lesion]
        return lesion

    for position, photo in enumerate(pixels):
        for match in seen.matching(photo):
            first, second = sorted((root(lesion_ids[position]), root(lesion_ids[match])))
            parent[second] = first
    return np.array([root(lesion) for lesion in lesion_ids], dtype=object)


def lesions_joined(lesion_ids, groups) -> int:
    """How many lesions copy_groups joined to another (each group's first lesion not counted)."""
    lesion_ids = np.asarray(lesion_ids, str)
    return len(set(lesion_ids[lesion_ids != np.asarray(groups, str)]))
