"""Real clothing photos as a measure of the demo: a folder with MANIFEST.tsv, classified as the demo does.

The manifest lists each photo (`path`, relative to the folder) with the Fashion-MNIST classes that count as a
right answer (`accept`, separated by `|`: footwear accepts any of Sandal, Sneaker and Ankle boot). The photos
measure and help choose; nothing is trained on them. `python -m benchmarks.real_photos` reports on them in
full; the trainer ends a run with `summarise`'s figures when the folder is there.
"""

import csv
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from trainer.calibration import expected_calibration_error
from trainer.data import CLASS_NAMES
from trainer.errors import UserError
from trainer.predict import DECODE_SIDE, Classifier, Prediction
from trainer.preprocess import ImageError, cut_out, open_image

MANIFEST = "MANIFEST.tsv"
RESAMPLES = 2000  # bootstrap resamples of the photos for the macro top-1's interval


def default_folder(data_root: str | Path) -> Path:
    """Where the photos are looked for: `realphotos/` beside `FashionMNIST/`."""
    return Path(data_root) / "realphotos"


def read_manifest(folder: Path, per_group: int | None = None) -> list[tuple[Path, list[str]]]:
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise UserError(f"no {MANIFEST} in {folder}: point --photos at a folder of real photos with its manifest")
    try:
        with manifest.open(newline="", encoding="utf-8-sig") as f:  # with or without the byte-order mark Excel writes
            reader = csv.DictReader(f, delimiter="\t")
            listed = [row for row in reader if any(row.values())]
            columns = set(reader.fieldnames or ())
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{manifest} is not a tab-separated text file ({type(exc).__name__})") from None
    if not {"path", "accept"} <= columns:
        raise UserError(f"{manifest} needs the columns path and accept (tab-separated), found {sorted(columns)}")
    if not listed or any(not row["path"] or not row["accept"] for row in listed):
        raise UserError(f"{manifest} must list at least one photo, each with a path and the classes it accepts")
    accepted = [row["accept"].split("|") for row in listed]
    unknown = sorted({name for accept in accepted for name in accept} - set(CLASS_NAMES))
    if unknown:
        raise UserError(f"{manifest} accepts {', '.join(map(repr, unknown))}, not a Fashion-MNIST class: use {', '.join(CLASS_NAMES)}")
    # In the classes' own order, so that a group is one group however a line spells it ("Sneaker|Sandal|...").
    rows = [(folder / row["path"], sorted(set(accept), key=CLASS_NAMES.index)) for row, accept in zip(listed, accepted)]
    missing = [row["path"] for row, (path, _) in zip(listed, rows) if not path.is_file()]
    if missing:
        raise UserError(f"{manifest} lists {len(missing)} photo(s) that {folder} does not hold, the first {missing[0]}")
    if per_group:  # the first by path of each group: the same photos whatever the manifest's order
        taken: Counter = Counter()
        rows = [row for row in sorted(rows) if taken.update(["|".join(row[1])]) or taken["|".join(row[1])] <= per_group]
    return rows


def cut_all(rows: list[tuple[Path, list[str]]]) -> list[dict[str, Any]]:
    """Each photo decoded and cut out as the demo does (or the sentence it is refused with), and how long that took:
    the part of the demo's work that does not depend on the model, done once for any number of models."""
    cuts = []
    for path, accept in rows:
        start = time.perf_counter()
        try:
            cut, refusal = cut_out(open_image(path, max_side=DECODE_SIDE)), None
        except ImageError as exc:
            cut, refusal = None, str(exc)
        cuts.append({"group": "|".join(accept), "accept": accept, "cut": cut, "refusal": refusal, "ms": (time.perf_counter() - start) * 1000})
    return cuts


def classify_cuts(classifier: Classifier, cuts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per photo: its group, what the model answered (or the refusal), and how long the demo took for it
    (the cut-out's time and this model's)."""
    records = []
    for cut in cuts:
        start = time.perf_counter()
        prediction: Prediction | None = None if cut["cut"] is None else classifier.classify_cut(cut["cut"])
        ms = cut["ms"] + (time.perf_counter() - start) * 1000
        record = {"group": cut["group"], "accept": cut["accept"], "ms": ms, "refusal": cut["refusal"], "prediction": prediction}
        if prediction is not None:
            top = prediction.top(3)
            record.update(answer=top[0][0], confidence=top[0][1], right=top[0][0] in cut["accept"],
                          right3=any(name in cut["accept"] for name, _ in top), sure=prediction.sure)
        records.append(record)
    return records


def classify_all(classifier: Classifier, rows: list[tuple[Path, list[str]]]) -> list[dict[str, Any]]:
    """The photos as the demo sees them, one at a time: decoded, cut out and classified."""
    return classify_cuts(classifier, cut_all(rows))


def macro_interval(right_by_group: list[np.ndarray], level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """How far the macro accuracy could move on another set of photos like these: the central `level` of its values
    over RESAMPLES stratified bootstrap resamples (each group's photos drawn again, with replacement, as many as it has).

    990 photos are a sample; a second set of the same kind gives another figure, and this interval says how far apart
    the two can be by chance alone (about +-0.03 here), which the spread over training seeds does not show."""
    rng = np.random.default_rng(seed)
    macro = np.zeros(RESAMPLES)
    for right in right_by_group:
        macro += right[rng.integers(0, len(right), (RESAMPLES, len(right)))].mean(axis=1)
    macro /= len(right_by_group)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(macro, (tail, 100 - tail))
    return float(low), float(high)


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    groups = list(dict.fromkeys(r["group"] for r in records))
    answered = [r for r in records if r["prediction"] is not None]
    per_class, right_by_group = {}, []
    for group in groups:
        mine = [r for r in records if r["group"] == group]
        right_when_sure = [r["right"] for r in mine if r.get("sure")]
        right_by_group.append(np.array([r.get("right", False) for r in mine]))
        per_class[group] = {
            "n": len(mine),
            "top1": float(right_by_group[-1].mean()),
            "top3": float(np.mean([r.get("right3", False) for r in mine])),
            "sure_share": float(np.mean([r.get("sure", False) for r in mine])),
            # right among this kind's "sure" answers: the pooled figure of `sure` leans on the kinds answered surely most
            "sure_accuracy": float(np.mean(right_when_sure)) if right_when_sure else None,
            "answers": dict(Counter(r.get("answer", "refused") for r in mine).most_common()),
        }
    confidence = np.array([r["confidence"] for r in answered])
    right = np.array([r["right"] for r in answered], dtype=bool)
    sure = np.array([r["sure"] for r in answered], dtype=bool)
    ms = [r["ms"] for r in records]
    return {
        "n": len(records),
        "per_class": per_class,
        "macro_top1": float(np.mean([c["top1"] for c in per_class.values()])),
        "macro_top1_interval": macro_interval(right_by_group),
        "macro_top3": float(np.mean([c["top3"] for c in per_class.values()])),
        "refused": dict(Counter(r["refusal"] for r in records if r["refusal"])),
        "cut_out_share": float(np.mean([r["prediction"].segmented for r in answered])) if answered else None,
        "confidence": {  # over the photos answered: with none, there is no confidence to judge
            "mean": float(confidence.mean()) if answered else None,
            "mean_when_right": float(confidence[right].mean()) if right.any() else None,
            "mean_when_wrong": float(confidence[~right].mean()) if (~right).any() else None,
            "ece": expected_calibration_error(confidence, right) if answered else None,
        },
        "sure": {"share": float(sure.sum() / len(records)), "accuracy": float(right[sure].mean()) if sure.any() else None},
        "confusion": {group: per_class[group]["answers"] for group in groups},
        "latency_ms": {"median": float(np.median(ms)), "p95": float(np.percentile(ms, 95))},
    }
