"""Write MODEL_CARD.md for a bundle from its manifest and evaluation report: about a hundred lines, the
experiment log linked rather than copied.

    python scripts/model_card.py models/default --command "python train.py ..." --experiments docs/experiments.md \\
        [--choice "how it was chosen"]
"""
import argparse
import json
import os
from pathlib import Path

from skin_core import evaluation
from skin_core.bundle import read_manifest
from skin_core.classes import full_name
from skin_core.robustness import ROBUSTNESS_FILE, markdown_table


def pct(x):
    return f"{x:.3f}"


TTA_TEXT = {"none": "none, one view per prediction",
            "half_turn": "each prediction averages the photo and its half turn (2 views)",
            "flips": "each prediction averages the photo and its three flips (4 views)",
            "quarter_turns": "each prediction averages the photo turned by 0, 90, 180 and 270 degrees (4 views)"}


def continued(t: dict) -> str:
    if not t.get("init_bundle"):
        return ""
    return ("Two stages. Stage 1 trained the model from the ImageNet weights (the first command below); stage 2,\n"
            "described here, continued from stage 1's weights on the same split (train.py refuses a split whose test\n"
            "images the starting bundle saw). ")


def phases(t: dict) -> str:
    unfrozen = "the whole body" if t["fine_tune_fraction"] >= 1 else f"the top {t['fine_tune_fraction']:.0%} of the body"
    if not t["head_epochs"]:
        return f"One phase: {unfrozen} trainable,"
    return (f"Phase 1: {t['head_epochs']} epochs training the head on the frozen body (learning rate {t['head_lr']}). "
            f"Phase 2: {unfrozen} unfrozen,")


def patience_start(t: dict) -> str:
    """When early stopping only watched the later epochs (older manifests have no such setting)."""
    start = t.get("patience_from", 0)
    return f", counted from epoch {start + 1}" if start else ""


def tta_origin(t: dict) -> str:
    """Whether finishing chose the views on validation or the command named them."""
    return "chosen on validation" if t.get("tta", "auto") == "auto" else f"set by the command (`--tta {t['tta']}`)"


def input_text(m: dict) -> str:
    """The input size served, and the one the weights were trained at when a re-finishing changed it."""
    size, trained = m["input_size"], m["training"].get("trained_img_size")
    return f"{size}x{size} RGB input" + (f" (the weights were trained at {trained}x{trained})" if trained else "")


def prior_shift_text(m: dict) -> str:
    """The post-hoc prior shift, which changes the top class as well as the probabilities (none when 0)."""
    tau = m["calibration"]["prior_shift"]
    if not tau:
        return ""
    return (f"The logits are first shifted by {tau:.2f} x log(training-split class prior) (fitted on the validation "
            "split): the class-balanced training answers as if all seven classes were equally common, and the shift "
            "moves it part of the way back toward the real class mix, so it changes the top class as well. ")


def augmentation(t: dict) -> str:
    """The training augmentation as the manifest records it (bundles older than a setting lack its key)."""
    if not t.get("augment", True):
        return "none"
    parts = ["random rotation (full circle), horizontal and vertical flips, zoom (-20% to +10%)",
             f"brightness and contrast ({'20' if t.get('photometric') else '10'}%)"]
    if t.get("photometric"):
        parts.append("colour saturation (paler to stronger) and sharpness (softer to crisper)")
    if t.get("compression"):
        parts.append("half of each batch re-saved as JPEG at a quality of 30-95")
    if t.get("mix", "none") != "none":
        parts.append({"mixup": "MixUp (alpha 0.2)", "cutmix": "CutMix"}[t["mix"]] + " on every batch")
    return ", ".join(parts)


def robustness_section(bundle: Path) -> str:
    """The robustness table written by scripts/robustness.py, if it has been run on this bundle."""
    path = bundle / ROBUSTNESS_FILE
    if not path.is_file():
        return ""
    report = json.loads(path.read_text())
    return (f"## Robustness to photo differences ({report['subset']} split)\n"
            "Each row alters every held-out photograph one way before the model's own preparation "
            "(`scripts/robustness.py`); 'top diagnosis changed' is the share whose top diagnosis differs from the "
            "unaltered photograph's, and 'flagged as unlike the training images' the share the familiarity check "
            "would warn about.\n\n" + "\n".join(markdown_table(report["conditions"])) + "\n\n")


def seen_photos_text(m: dict) -> str:
    """What the bundle keeps to find copies of its photos under other names, if it does."""
    seen = m["seen_photos"]
    if not seen:
        return ""
    copies = seen.get("test_copies")
    found = (f": {len(copies)} of this model's {m['test']['n']:,} test photos are (listed in the manifest); "
             "`scripts/copies_in_split.py` gives the figures without them." if copies else
             " (`scripts/copies_in_split.py` finds them and gives the figures without them).")
    return (f"\nThe bundle keeps fingerprints of the {seen['photos']:,} photos it was trained and tuned on "
            f"(`{seen['file']}`): evaluating another dataset leaves out copies of them under other names, and the "
            "Diagnose page says when a photo is one. The collections hold a few photos twice under different lesion "
            f"ids, so a test photo can be a copy of a training one{found}\n")


def familiarity_text(m: dict) -> str:
    """The feature-space check behind the "unlike the training images" warning, if the bundle has one."""
    f = m["familiarity"]
    if not f:
        return "This bundle has no familiarity model: only the photo-quality checks warn about unusual photos."
    return (f"Photos unlike the training images are flagged by photo-quality checks and in the model's feature space: "
            f"{f['method']}; flagged above {f['threshold']:.3f}, the {f['percentile_of_validation']:.0f}th percentile "
            "of the validation photos' distances.")


def patients_text(m: dict) -> str:
    """What the patient head reads and how the model does without it, for a bundle trained with --patients."""
    p = m["patients"]
    if not p:
        return ""
    alone, val = p["validation_photo_only"], m["validation"]
    return (f"- **Patient details:** It also reads the patient's age (in bands), sex and body site when they are "
            f"given: each one-hot with "
            f"an \"unknown\" column, through a dense layer whose seven outputs are added to the photo's logits "
            f"(`patients.json`), trained with the network"
            f"{ENSEMBLE_HEAD if m['training'].get('ensemble_of') else ''}, each field hidden in {p['dropout']:.0%} of "
            f"training photos so "
            f"that a photo alone is answered too. Every figure below was computed with each image's recorded details; "
            f"given none, the same model scores {evaluation.photo_alone_figures(m)}; on validation ECE "
            f"{pct(alone['ece'])} given none and {pct(val['ece'])} with them.\n")


def fitted_on(t: dict) -> str:
    """The machine the manifest records; bundles from before it did were fitted on this project's 2-core
    CPU (TensorFlow) or a GPU (train_gpu.py's other backends)."""
    if t.get("machine"):
        return t["machine"]
    return "a 2-core CPU" if t.get("backend", "tensorflow") == "tensorflow" else "a GPU"


ENSEMBLE_HEAD = " (for an ensemble, the mean of its networks' layers, as its logits are the mean of theirs)"
PATIENT_LIMIT = ("- Age, sex and body site are weighed as the training clinics recorded them; there, site and age are "
                 "tied to the clinic and its referral pattern,\n  so their weight may not carry over to another "
                 "population. The Diagnose page lets them be left out.\n")

KNOWN_SOURCES = {
    "ham10000": ("HAM10000 (Vienna and Queensland), 200x150 JPEG copies. Tschandl, Rosendahl & Kittler, *Scientific "
                 "Data* 5, 180161 (2018); CC BY-NC 4.0"),
    "isic2019_bcn_msk": ("ISIC 2019's BCN20000 (Barcelona) and MSK (New York) images, mostly 84x84 px copies (720 MSK "
                         "images at 256 px), AK and SCC labelled akiec. Combalia et al., arXiv:1908.02288 (2019); "
                         "Codella et al., arXiv:1710.05006 (2017); CC BY-NC 4.0"),
}
"""What the card says of a training source it knows by its folder name (others are listed by name alone)."""


def sources_text(m: dict, r: dict) -> str:
    """One line per training source: what it is, its images and lesions, and how it was split; and a line for
    each source the report scores that this run did not read itself (learnt through its starting bundle)."""
    sources = m["dataset"].get("sources") or {m["dataset"]["root"]: {"n_images": m["dataset"]["n_images"],
                                                                     "n_lesions": m["dataset"]["n_lesions"],
                                                                     "subsets": m["split"]["sizes"]}}
    how = m["split"].get("by_source", {})
    lines = []
    for name, part in sources.items():
        sizes = part.get("subsets", {})
        split = ", ".join(f"{k} {sizes[k]}" for k in ("train", "val", "test") if k in sizes)
        lines.append(f"- **{name}**: {KNOWN_SOURCES.get(name, 'a labelled dataset')}. {part['n_images']} images of "
                     f"{part['n_lesions']} lesions; {split}" + (f" ({how[name]})" if name in how else "") + ".")
    members = m["training"].get("ensemble_of")
    through = (f"its networks' training (the bundles {' and '.join(members)} and the bundles they started from)"
               if members else
               f"the starting bundle {m['training'].get('init_bundle')} (or the bundles it started from)")
    for name, part in (r.get("by_source") or {}).items():
        if name not in sources:
            lines.append(f"- **{name}**: {KNOWN_SOURCES.get(name, 'a labelled dataset')}. Learnt through {through}, "
                         f"whose split of it `split.csv` lists; {part['n']} test images held out from all of them.")
    return "\n".join(lines)


def headline_row(name: str, r: dict) -> str:
    ci = r.get("ci95") or {}
    interval = lambda key: f" ({pct(ci[key][0])}–{pct(ci[key][1])})" if key in ci else ""   # noqa: E731
    mel = r.get("operating_points", {}).get("mel", {})
    mel_text = f"{pct(mel['sensitivity'])} / {pct(mel['specificity'])}" if mel.get("specificity") is not None else "–"
    return (f"| {name} | {r['n']} | {pct(r['accuracy'])} | {pct(r['majority_baseline_accuracy'])} ({r['majority_class']}) | "
            f"**{pct(r['balanced_accuracy'])}**{interval('balanced_accuracy')} | **{pct(r['macro_f1'])}**"
            f"{interval('macro_f1')} | {pct(r['top3_accuracy'])} | {pct(r['ece'])} | {mel_text} |")


def per_class_rows(r: dict) -> str:
    return "\n".join(f"| {full_name(c)} ({c}) | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | "
                     f"{v['support']} | {v['auc']:.3f} |" if v["auc"] is not None else
                     f"| {full_name(c)} ({c}) | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} | – |"
                     for c, v in r["per_class"].items())


def card(bundle: Path, command: str, experiments: str, choice: str = "") -> str:
    """The card: what the model is, what it was trained on, how it scores on lesions it never saw (per source),
    its limits and the command that reproduces it; the experiment log is linked, not copied."""
    m = read_manifest(bundle)
    r = json.loads((bundle / "evaluation.json").read_text())
    t, val = m["training"], m["validation"]
    parts = r.get("by_source") or {}
    first = next(iter(parts.values()), r)          # the first source (HAM10000 for the default) has the per-class table
    first_name = next(iter(parts), "all")
    rows = [headline_row(name, part) for name, part in parts.items()] + [headline_row("all sources" if parts else "test", r)]
    return f"""# Model card: {m['name']}

**Research demo, not a medical device.** Not for diagnosis, triage or reassurance of real patients.

## Model
- **Network:** {network_text(m)}. {origin_text(m)}
- **Input:** {input_text(m)}, {detail_text(m)} (centre square, EXIF-upright RGB, bilinear resize, scaling inside the model; `skin_core.images.prepare`, recorded in the manifest).
- **Answer:** {prior_shift_text(m)}Temperature scaling T = {m['calibration']['temperature']:.3f}; melanoma threshold {m['thresholds']['mel']:.3f}, set on validation to reach sensitivity {t['mel_sensitivity']:.2f} there. Test-time views: {TTA_TEXT[m.get('test_time_augmentation', 'none')]}.
- **Unfamiliar photos:** {familiarity_text(m)}
{patients_text(m)}
## Data, licences and split
{sources_text(m, r)}

Every source is split on its own, stratified by class and grouped by `lesion_id` ({m['split']['method']}); no
lesion is on two sides (`split.csv`). Epochs, calibration and the threshold used validation only; how the model
was chosen, and what had been seen by then, is under Training. All sources are non-commercial (CC BY-NC 4.0), and so is this model.
{seen_photos_text(m)}
## Results on held-out test lesions
| test images | n | accuracy | majority-class baseline | balanced accuracy (95% CI) | macro F1 (95% CI) | top-3 | ECE | melanoma sens. / spec. |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Intervals: 1,000 bootstrap resamples of lesions. Validation ({val['n']} images of {m['dataset']['root']}, used for
choices): balanced accuracy {pct(val['balanced_accuracy'])}, macro F1 {pct(val['macro_f1'])}, ECE {pct(val['ece'])}.

Per class, {first_name} test split:

| class | precision | recall | F1 | support | AUC |
|---|---|---|---|---|---|
{per_class_rows(first)}

For reference, the 2025 paper this demo follows reported accuracy 0.890, top-2 0.956, top-3 0.987, macro F1 0.713
and melanoma F1 0.511 on an nv-heavy validation set (not a lesion-held-out test).

{robustness_section(bundle)}## Training
{training_text(m)} Reproduce:

```bash
{command}
```
{choice_text(choice)}
## Known limits
- Dermoscopy only, seven classes only: other lesions are forced into one of them; clinical photos are out of scope.
- The training sites (Vienna, Queensland{', Barcelona, New York' if len(parts) > 1 else ''}) see mostly fair skin; performance on darker skin is unknown.
- Light, colour, compression and sharpening change a share of the answers (the robustness table, where measured).
- The "unlike the training images" warning is tuned on pictures that are not dermoscopy at all; other
  dermatoscopes and lesion kinds may pass it unflagged.
- Per-class probabilities run high for the rarer classes (class-weighted training) and reflect the training mix, not a clinic's.
{PATIENT_LIMIT if m["patients"] else ""}- Rare classes (df, vasc) have few test lesions: wide intervals.
- Not for clinical use.

The experiments behind this model and the ones it replaced: [{experiments}]({experiments}).
"""


def network_text(m: dict) -> str:
    """What the network is: one MobileNet with its head, or several side by side (scripts/ensemble.py)."""
    t, members = m["training"], m["training"].get("ensemble_of")
    if not members:
        return (f"MobileNet V1 (`keras.applications.MobileNet`, alpha {m['alpha']}) with global average pooling, "
                f"dropout {t['dropout']} and a 7-way dense head")
    count = {2: "Two", 3: "Three"}.get(len(members), str(len(members)))
    return (f"{count} MobileNet V1 networks (`keras.applications.MobileNet`, alpha {m['alpha']}), the bundles "
            f"{' and '.join(members)}, side by side in one Keras model: each reads the photo up to its last block, "
            "and one global average pooling and 7-way dense layer over their blocks gives the mean of their logits, "
            "so the answer and its Grad-CAM map are the ensemble's (`skin_core.model.ensemble_of`); weights stored "
            "at half precision")


def origin_text(m: dict) -> str:
    t = m["training"]
    if t.get("ensemble_of"):
        return "Each network's chain back to the ImageNet weights is under Training."
    if t.get("init_bundle"):
        return (f"Started from the bundle {t['init_bundle']} (the commands under Training give the chain back to "
                "ImageNet).")
    return f"Started from {m['weights_source']}."


def training_text(m: dict) -> str:
    """How the weights were fitted: one run's schedule, or, for an ensemble, how its separately trained
    networks were joined (their schedules are the commands)."""
    t = m["training"]
    if t.get("ensemble_of"):
        return (f"The networks were trained separately on the same split, each with its own schedule (the commands "
                f"below), and\njoined without further training (`scripts/ensemble.py`); the ensemble was then finished "
                f"as one model on validation:\ntest-time views, prior shift, temperature and melanoma threshold. "
                f"{(t.get('seconds') or 0) / 60:.0f} min to finish on {fitted_on(t)}.")
    return (f"{phases(t)} AdamW (weight decay {t['weight_decay']}), cosine schedule peaking at {t['lr']} after one "
            f"warm-up epoch,\nbatch {t['batch_size']}, {t['epochs']} epochs; the best validation epoch "
            f"({t['best_epoch']}) was kept. Class balancing\n`{t['balance']}`, label smoothing "
            f"{t['label_smoothing']}; augmentation: {augmentation(t)}{low_detail_text(m)}.\n"
            f"{(t.get('fit_seconds') or t['seconds']) / 60:.0f} min on {fitted_on(t)}.")


def detail_text(m: dict) -> str:
    side = m["preprocessing"].get("detail_side")
    return f"detail capped at {side} px, as sharp as the sharpest training photos" if side else "no detail cap"


def low_detail_text(m: dict) -> str:
    low = m["preprocessing"].get("trained_on_low_detail")
    return f", {low['share']:.0%} of training photos brought down to {low['side']} px of detail" if low else ""


def choice_text(choice: str) -> str:
    return f"\n## How it was chosen\n{choice}\n" if choice else ""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("bundle")
    parser.add_argument("--command", required=True)
    parser.add_argument("--experiments", required=True, help="the experiment log the card links to")
    parser.add_argument("--choice", default="", help="a paragraph on how this model was chosen, with its figures")
    args = parser.parse_args()
    bundle = Path(args.bundle)
    for needed in (bundle / "manifest.json", bundle / "evaluation.json", Path(args.experiments)):
        if not needed.is_file():
            raise SystemExit(f"error: {needed} not found (the card needs a bundle with its evaluation, and the "
                             "experiment log)")
    link = os.path.relpath(Path(args.experiments).resolve(), bundle.resolve())
    (bundle / "MODEL_CARD.md").write_text(card(bundle, args.command, link, args.choice))


if __name__ == "__main__":
    main()
