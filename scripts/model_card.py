"""Write MODEL_CARD.md for a bundle from its manifest and evaluation report.

    python scripts/model_card.py models/default --command "python train.py ..." --experiments notes.md
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from skin_core.classes import full_name  # noqa: E402
from skin_core.robustness import ROBUSTNESS_FILE, markdown_table  # noqa: E402


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
    tau = m.get("calibration", {}).get("prior_shift", 0.0)
    if not tau:
        return ""
    return (f"The logits are first shifted by {tau:.2f} x log(training-split class prior) (fitted on the validation\n"
            "split): the class-balanced training answers as if all seven classes were equally common, and the shift\n"
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


def familiarity_text(m: dict) -> str:
    """The feature-space check behind the "unlike the training images" warning, if the bundle has one."""
    f = m.get("familiarity")
    if not f:
        return "This bundle has no familiarity model: only the photo-quality checks warn about unusual photos."
    return (f"Photos unlike the training images are flagged by photo-quality checks and in the model's feature space: "
            f"{f['method']}; flagged above {f['threshold']:.3f}, the {f['percentile_of_validation']:.0f}th percentile "
            "of the validation photos' distances.")


def patients_text(m: dict) -> str:
    """What the patient head reads and how the model does without it, for a bundle trained with --patients."""
    p = m.get("patients")
    if not p:
        return ""
    alone, val = p["validation_photo_only"], m["validation"]
    return (f"\nIt also reads the patient's age (in bands), sex and body site when they are given: each one-hot with "
            f"an \"unknown\" column, through a dense layer whose seven outputs are added to the photo's logits "
            f"(`patients.json`), trained with the network, each field hidden in {p['dropout']:.0%} of training photos so "
            f"that a photo alone is answered too. Every figure below was computed with each image's recorded details; "
            f"given none, the same model scores balanced accuracy {pct(alone['balanced_accuracy'])}, macro F1 "
            f"{pct(alone['macro_f1'])} and ECE {pct(alone['ece'])} on validation (with them: "
            f"{pct(val['balanced_accuracy'])}, {pct(val['macro_f1'])}, {pct(val['ece'])}).")


def fitted_on(t: dict) -> str:
    """The machine the manifest records; bundles from before it did were fitted on this project's 2-core
    CPU (TensorFlow) or a GPU (train_gpu.py's other backends)."""
    if t.get("machine"):
        return t["machine"]
    return "a 2-core CPU" if t.get("backend", "tensorflow") == "tensorflow" else "a GPU"


PATIENT_LIMIT = ("- Age, sex and body site are weighed as HAM10000's two clinics recorded them; there, site and age are "
                 "tied to the clinic and its referral pattern,\n  so their weight may not carry over to another "
                 "population. The Diagnose page lets them be left out.\n")


def card(bundle: Path, command: str, experiments: str) -> str:
    m = json.loads((bundle / "manifest.json").read_text())
    r = json.loads((bundle / "evaluation.json").read_text())
    t, ci, val = m["training"], r["ci95"], m["validation"]
    mel = r["operating_points"]["mel"]
    rows = "\n".join(f"| {full_name(c)} ({c}) | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | "
                     f"{v['support']} | {v['auc']:.3f} |" for c, v in r["per_class"].items())
    counts = ", ".join(f"{c} {n}" for c, n in m["dataset"]["counts"].items())
    sizes = m["split"]["sizes"]
    return f"""# Model card: {m['name']}

**Research demo, not a medical device.** Not for diagnosis, triage or reassurance of real patients.

## Model
MobileNet V1 (`keras.applications.MobileNet`, alpha {m['alpha']}) with global average pooling, dropout
{t['dropout']} and a 7-way dense head; {input_text(m)}. Started from Google's ImageNet
weights ({'through stage 1, below' if t.get('init_bundle') else m['weights_source']}). Preprocessing (defined once in `skin_core.images.prepare`, recorded in the
manifest): EXIF-upright RGB, centre square crop, detail capped at {m['preprocessing']['detail_side']} px (the
resolution of the training copies, so sharper uploads are seen at the detail the model learned),
bilinear resize, {'shades-of-grey colour constancy to a fixed reference illuminant and ' if m['preprocessing'].get('colour_constancy') else ''}scaling to [-1, 1] inside the model. {prior_shift_text(m)}Probabilities are calibrated by temperature scaling
(T = {m['calibration']['temperature']:.3f}, fitted on the validation split). Melanoma decision threshold
{m['thresholds']['mel']:.3f}, chosen on the validation split to reach melanoma sensitivity {t['mel_sensitivity']:.2f} there.
{familiarity_text(m)}{patients_text(m)}

## Data and licence
{m['dataset']['n_images']} HAM10000 dermatoscopic images of {m['dataset']['n_lesions']} lesions ({counts}), as 200x150
JPEG copies. Tschandl, Rosendahl & Kittler, *Scientific Data* 5, 180161 (2018), CC BY-NC 4.0 (non-commercial use,
credit the authors). Dataset fingerprint `{m['dataset']['fingerprint'][:16]}...`.

## Split
{m['split']['method']}, seed {m['split']['seed']}: train {sizes['train']}, validation {sizes['val']}, test {sizes['test']}
images. No lesion appears on two sides (`split.csv` lists every image). The test split was never used for
training, epoch choice, calibration or the threshold, and models are chosen on validation. It is not untouched,
though: every adopted model's test figures were read after the decision, and a few candidates' in the early
experiments (the log below says which; one, run 12, changed the selection rule). Its figures may therefore be
slightly optimistic; images that no experiment has seen would be the fairer test.

## Training
{continued(t)}{phases(t)} AdamW (weight decay {t['weight_decay']}), cosine schedule with one
warm-up epoch peaking at {t['lr']}, batch {t['batch_size']}, up to {t['epochs']} epochs in all with early stopping
(patience {t['patience']}{patience_start(t)}) on validation macro F1; the best validation epoch ({t['best_epoch']})
was kept. Class balancing: `{t['balance']}`; label smoothing {t['label_smoothing']};
augmentation: {augmentation(t)}. Wall time
{(t.get('fit_seconds') or t['seconds']) / 60:.0f} min {'of fitting' if t.get('fit_seconds') else 'for the whole run (reading, fitting, finishing)'} on {fitted_on(t)}{' for this stage' if t.get('init_bundle') else ''}. Backend: {t.get('backend', 'tensorflow')}.
Test-time augmentation: {TTA_TEXT[m.get('test_time_augmentation', 'none')]}, {tta_origin(t)}; evaluation
and the app use the same path.

Reproduce:

```bash
{command}
```

## Results on the held-out test split ({r['n']} images, {r['n_lesions']} lesions)
| metric | value | 95% CI (bootstrap over lesions) |
|---|---|---|
| accuracy | {pct(r['accuracy'])} | {pct(ci['accuracy'][0])}–{pct(ci['accuracy'][1])} |
| majority-class baseline (always "{r['majority_class']}") | {pct(r['majority_baseline_accuracy'])} | |
| **balanced accuracy** | **{pct(r['balanced_accuracy'])}** | {pct(ci['balanced_accuracy'][0])}–{pct(ci['balanced_accuracy'][1])} |
| **macro F1** | **{pct(r['macro_f1'])}** | {pct(ci['macro_f1'][0])}–{pct(ci['macro_f1'][1])} |
| weighted F1 | {pct(r['weighted_f1'])} | |
| top-2 / top-3 accuracy | {pct(r['top2_accuracy'])} / {pct(r['top3_accuracy'])} | |
| expected calibration error (15 bins) | {pct(r['ece'])} | |
| melanoma sensitivity / specificity at threshold {mel['threshold']:.3f} | {pct(mel['sensitivity'])} / {pct(mel['specificity'])} | |

Validation split (used for choices): balanced accuracy {pct(val['balanced_accuracy'])}, macro F1 {pct(val['macro_f1'])},
ECE {pct(val['ece'])}.

| class | precision | recall | F1 | support | AUC |
|---|---|---|---|---|---|
{rows}

For reference, the 2025 paper this demo follows reported accuracy 0.890, top-2 0.956, top-3 0.987, macro F1 0.713
and melanoma F1 0.511 on an nv-heavy validation set.

{robustness_section(bundle)}## Experiments
{experiments}

## Known limits
- Trained on 200x150 copies of HAM10000; finer detail in sharper photos is deliberately capped away.
- Dermoscopy only: clinical (non-dermoscopic) photos, other devices and other populations are out of scope.
  HAM10000 comes from two centres (Vienna and Queensland), mostly fair skin; performance on darker skin is unknown.
- Sensitive to how a photo was taken: light, colour saturation, compression and in-camera sharpening change a
  share of its answers (the robustness table above, where it has been measured); use well-exposed, uncompressed photos.
- Seven classes only: any other lesion is forced into one of them.
- The "unlike the training images" warning was measured against pictures that are not dermoscopy at all
  (ordinary photographs, text, flat colours, noise); lesions of other kinds, clinical close-ups and other
  dermatoscopes are closer to the training images and may pass it unflagged.
- The top answer's confidence is calibrated (the ECE above), the per-class probabilities less so: training
  weighs the rarer classes up, so their probabilities run high (the Evaluation page's Calibration tab shows
  each class's), and all of them reflect HAM10000's mix of lesions, not a clinic's.
{PATIENT_LIMIT if m.get("patients") else ""}- Rare classes (df, vasc, akiec) have few test lesions, so their figures carry wide uncertainty.
- Not for clinical use.
"""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("bundle")
    parser.add_argument("--command", required=True)
    parser.add_argument("--experiments", required=True, help="a markdown file with the experiment log")
    args = parser.parse_args()
    bundle = Path(args.bundle)
    for needed in (bundle / "manifest.json", bundle / "evaluation.json", Path(args.experiments)):
        if not needed.is_file():
            raise SystemExit(f"error: {needed} not found (the card needs a bundle with its evaluation, and the "
                             "experiment log)")
    (bundle / "MODEL_CARD.md").write_text(card(bundle, args.command, Path(args.experiments).read_text()))


if __name__ == "__main__":
    main()
