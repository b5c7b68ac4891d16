"""Serve several trained bundles as one: their networks side by side, answering the mean of their logits,
finished (views, prior shift, temperature, melanoma threshold, familiarity, test report) as one model.

    python scripts/ensemble.py models/default runs/r45 --data path/to/HAM10000 --out runs/ensemble
    python scripts/ensemble.py runs/new models/default:2 --data path/to/HAM10000 --out runs/pair

A bundle written BUNDLE:N stands for the Nth network of an ensemble bundle (network 2 of the default pair above),
taken out as `train.py --init-member N` takes it, so one network of a pair can be replaced by another.

The bundles must hold the same split (split.csv byte for byte), so the validation the ensemble is tuned on and
the test split it is scored on are lesions none of its networks learnt from. The first bundle's settings (input
size, detail cap, patients) are the ensemble's; its test-time views are chosen on validation (--tta auto) unless
--tta names them: two networks already average part of what the views do, and each view costs every network's
pass. The weights are stored at half precision so that two MobileNets stay under 20 MB
(skin_core.model.ensemble_of). An ensemble answers like one network everywhere in the app, but cannot be trained
further as a whole: `train.py --init-bundle ENSEMBLE --init-member N` continues its Nth network, taken out exactly
(its own logits bias and patient head are recorded in the manifest, as member_biases and member_patient_heads).
"""
import argparse
import copy
import dataclasses
import time
from pathlib import Path

import numpy as np

from skin_core import model as networks, training
from skin_core.bundle import SPLIT_FILE, BundleError, load_bundle, require_one_split
from skin_core.options import TTA_CHOICES
from skin_core.patients import PatientError, PatientHead
from skin_core.progress import ProgressLog


def network_named(spec: str):
    """The bundle a command-line argument names, or for BUNDLE:N its Nth network as a bundle of its own (the
    ensemble's split, calibration and files; the network's weights and patient head)."""
    path, _, index = spec.rpartition(":")
    if not (path and index.isdigit()) or Path(spec).exists():
        return load_bundle(spec)
    source = load_bundle(path)
    if not networks.is_ensemble(source.model):
        raise BundleError(f"{path} holds one network; BUNDLE:N names a network of an ensemble.")
    network, head = training.member_of(source, int(index))
    manifest = copy.deepcopy(source.manifest)
    manifest["training"]["taken_out_as"] = f"{source.path.name}:{index}"
    manifest["name"] = f"network {index} of {source.name}"
    return dataclasses.replace(source, model=network, patient_head=head, manifest=manifest)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", nargs="+", help="two or more bundle folders sharing one split (BUNDLE:N: the "
                                                   "Nth network of an ensemble bundle)")
    parser.add_argument("--data", action="append", required=True,
                        help="the dataset folder the first bundle was trained on (repeat for several)")
    parser.add_argument("--tta", default="auto", choices=TTA_CHOICES,
                        help="test-time views; auto (the default) chooses them on validation for the ensemble, as "
                             "finishing chooses them for one network (two networks average part of what views do)")
    parser.add_argument("--name", default=None, help="the new bundle's display name")
    parser.add_argument("--out", required=True, help="a new bundle folder")
    args = parser.parse_args()
    if len(args.bundles) < 2:
        raise SystemExit("error: an ensemble needs at least two bundles")
    if Path(args.out).exists():
        raise SystemExit(f"error: {args.out} already exists; write the ensemble into a new folder")
    try:
        members = [network_named(spec) for spec in args.bundles]
        first = members[0]
        require_one_split(members)
        heads = [member.patient_head for member in members]
        if any(head is None for head in heads) and any(head is not None for head in heads):
            raise BundleError("either every bundle reads the patient's age, sex and body site or none does")
        patient_head = PatientHead.mean_of(heads) if heads[0] is not None else None
        model = networks.ensemble_of([member.model for member in members])
        # what the joined layers keep only as a mean, recorded so that each network can be taken out exactly
        own = {"ensemble_of": [member.manifest["training"].get("taken_out_as") or member.path.name
                               for member in members],
               "member_biases": networks.member_biases([member.model for member in members])}
        if patient_head is not None:
            own["member_patient_heads"] = [np.round(head.weights.astype(float), 6).tolist() for head in heads]
    except (BundleError, PatientError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    config = training.recorded_config(first, args.data if len(args.data) > 1 else args.data[0], args.out,
                                      args.name or "Ensemble of " + " and ".join(member.name for member in members))
    config.tta = args.tta
    started = time.time()
    try:
        log = ProgressLog(config.progress_file)
        prep = training.prepare_as_recorded(config, log, first.path / SPLIT_FILE,
                                            first.manifest["dataset"]["fingerprint"])
        out = training.finish(config, prep, model, None, own, log, started, patient_head,
                              learnt_from=tuple(member.path / SPLIT_FILE for member in members))
    except (ValueError, BundleError, OSError) as exc:   # DatasetError is a ValueError: the message says why
        raise SystemExit(f"error: {getattr(exc, 'strerror', None) or exc}") from None
    print(f"ensemble written to {out}")


if __name__ == "__main__":
    main()
