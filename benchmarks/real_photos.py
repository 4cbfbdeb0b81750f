"""`python -m benchmarks.real_photos --out DIR [--checkpoint PATH ...] [--photos DIR] [--quick]`: the demo on real photos.

Every photo listed in the folder's MANIFEST.tsv (`path`, `accept`: the class names that count as right,
separated by `|`) goes through the demo's own path, one at a time: decoded and cut out (`trainer.photos.cut_all`),
then classified by `trainer.predict.Classifier` (`classify_cut`). The photos measure; nothing is trained on them.

With several checkpoints (the seeds of one recipe, say) the photos are cut out once and each model is reported in
DIR/<its run directory's name>/, and DIR/real_photos_summary.json gives the median and range over the models of
the figures the targets name, which is how the README reports them.

DIR/real_photos.json:
  machine, quick, checkpoint, photos (folder), n
  per_class      {group: {"n", "top1", "top3", "sure_share", "sure_accuracy", "answers": {class: count}}}, group = the
                 accept field; sure_accuracy: top-1 accuracy on the group's "sure" answers (None without one)
  macro_top1, macro_top3  unweighted means over the groups
  macro_top1_interval     [low, high]: where 95% of macro_top1's values fall when the photos are drawn again
                          (stratified bootstrap, trainer.photos.macro_interval): how far another set of such
                          photos could differ by chance
  refused        photos refused with a message (the sentences, by count)
  cut_out_share  share of photos whose garment was cut out from its background (the rest: the centre fallback)
  confidence     {"mean", "mean_when_right", "mean_when_wrong", "ece"}: the top class's probability; expected
                 calibration error over 15 equal-width bins
  sure           {"share": photos answered without "not sure", "accuracy": top-1 accuracy on those}, over all the
                 photos together (pooled, as the target is), not a mean over the groups
  confusion      {group: {predicted class: count}}
  latency_ms     {"median", "p95"}: decode, preprocess, test-time views and forward, one photo, one thread
  targets_met    {"macro_top1": >= 0.65, "macro_top3": >= 0.85, "refused": <= 5 of 990, "ece": <= 0.10,
                  "sure_share": >= 0.5, "sure_accuracy": >= 0.8}
DIR/real_photos_contact_sheet.png: per group, tiles the model saw when right (green) and wrong (red, with its answer).
DIR/real_photos_summary.json (several checkpoints): machine, quick, photos, n, checkpoints, and for each of
  macro_top1, macro_top3, refused, ece, sure_share, sure_accuracy {"median", "min", "max", "met"}, `met` judged
  on the median
"""

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from benchmarks.common import data_root, entry, fmt, parse, parser, report_results, table, verdict
from trainer.data import CLASS_NAMES, FOOTWEAR
from trainer.machine import machine
from trainer.photos import classify_cuts, cut_all, default_folder, read_manifest, summarise
from trainer.predict import Classifier, resolve_model_path

QUICK_PER_GROUP = 8
SHEET_PER_ROW = 12
SHEET_LABEL_WIDTH = 150
TILE_SCALE = 3
TARGETS = {"macro_top1": 0.65, "macro_top3": 0.85, "refused": 5, "ece": 0.10, "sure_share": 0.5, "sure_accuracy": 0.8}
LABELS = {"macro_top1": "macro top-1", "macro_top3": "macro top-3", "refused": "photos refused", "ece": "calibration error",
          "sure_share": "share answered without 'not sure'", "sure_accuracy": "right when sure"}


def group_label(group: str) -> str:
    """A group of the manifest as the tables name it: its class, "footwear" for any shoe, else its classes."""
    return "footwear" if group == "|".join(CLASS_NAMES[i] for i in FOOTWEAR) else group.replace("|", " or ")


def contact_sheet(records: list[dict[str, Any]], path: Path) -> None:
    """Per group, a row of tiles the model got right (green frame) and a row it got wrong (red, with its answer)."""
    side = 28 * TILE_SCALE
    cell_w, cell_h, label_w = side + 6, side + 18, SHEET_LABEL_WIDTH
    groups = list(dict.fromkeys(r["group"] for r in records))
    sheet = Image.new("RGB", (label_w + SHEET_PER_ROW * cell_w, 2 * len(groups) * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for g, group in enumerate(groups):
        for k, right in enumerate((True, False)):
            y = (2 * g + k) * cell_h
            mine = [r for r in records if r["group"] == group and r["prediction"] is not None and r["right"] == right]
            refused = "" if right else f", {sum(r['group'] == group and r['prediction'] is None for r in records)} refused"
            draw.text((4, y + side // 2), f"{group_label(group)}\n{'right' if right else 'wrong'} ({len(mine)}{refused})", fill="black")
            for i, r in enumerate(mine[:SHEET_PER_ROW]):
                x = label_w + i * cell_w
                draw.rectangle((x, y, x + side + 5, y + side + 5), fill="#2a2" if right else "#c22")
                tile = Image.fromarray(r["prediction"].seen).resize((side, side), Image.Resampling.NEAREST)
                sheet.paste(tile.convert("RGB"), (x + 3, y + 3))
                caption = f"{r['answer'][:9]} {r['confidence']:.0%}"
                draw.text((x + 2, y + side + 6), caption, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def summary_rows(report: dict[str, Any]) -> list[list[str]]:
    met, conf, sure = report["targets_met"], report["confidence"], report["sure"]
    refused = sum(report["refused"].values())
    return [
        ["real photos, macro top-1 (95% interval over the photos) / top-3",
         f"{report['macro_top1']:.4f} ({report['macro_top1_interval'][0]:.3f}-{report['macro_top1_interval'][1]:.3f}) / {report['macro_top3']:.3f}",
         f">= {TARGETS['macro_top1']} / >= {TARGETS['macro_top3']}", verdict(met["macro_top1"] and met["macro_top3"])],
        ["real photos refused", f"{refused} of {report['n']}", f"<= {TARGETS['refused']} of 990", verdict(met["refused"])],
        ["real photos, calibration error", f"{fmt(conf['ece'], '.3f')} (confidence {fmt(conf['mean'], '.2f')})", f"<= {TARGETS['ece']}", verdict(met["ece"])],
        ["real photos answered without 'not sure'", f"{sure['share']:.1%}, right on {fmt(sure['accuracy'], '.1%')}",
         f">= {TARGETS['sure_share']:.0%}, right on >= {TARGETS['sure_accuracy']:.0%}", verdict(met["sure_share"] and met["sure_accuracy"])],
    ]


def measure(classifier: Classifier, cuts: list[dict[str, Any]], photos: Path, quick: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One model's report on photos already cut out, and its records (for the contact sheet)."""
    records = classify_cuts(classifier, cuts)
    report = {"machine": machine(), "quick": quick, "checkpoint": str(classifier.path), "photos": str(photos), **summarise(records)}
    report["targets_met"] = targets_met(figures(report), report["n"])
    return report, records


def figures(report: dict[str, Any]) -> dict[str, float | None]:
    """The figures the targets name, from one model's report."""
    return {"macro_top1": report["macro_top1"], "macro_top3": report["macro_top3"], "refused": sum(report["refused"].values()),
            "ece": report["confidence"]["ece"], "sure_share": report["sure"]["share"], "sure_accuracy": report["sure"]["accuracy"]}


def targets_met(values: dict[str, float | None], n: int) -> dict[str, bool]:
    return {
        "macro_top1": values["macro_top1"] >= TARGETS["macro_top1"],
        "macro_top3": values["macro_top3"] >= TARGETS["macro_top3"],
        "refused": values["refused"] <= TARGETS["refused"] * n / 990,
        "ece": values["ece"] is not None and values["ece"] <= TARGETS["ece"],
        "sure_share": values["sure_share"] >= TARGETS["sure_share"],
        "sure_accuracy": (values["sure_accuracy"] or 0) >= TARGETS["sure_accuracy"],
    }


def summary_over_models(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and range over the models of each figure the targets name; the targets judged on the medians."""
    each = [figures(report) for report in reports]
    spread = {key: [values[key] for values in each if values[key] is not None] for key in each[0]}  # None: nothing to judge
    medians = {key: float(np.median(values)) if values else None for key, values in spread.items()}
    met = targets_met(medians, reports[0]["n"])
    return {**{key: reports[0][key] for key in ("machine", "quick", "photos", "n")},
            "checkpoints": [report["checkpoint"] for report in reports],
            **{key: {"median": medians[key], "min": min(values, default=None), "max": max(values, default=None), "met": met[key]}
               for key, values in spread.items()}}


def report_one(report: dict[str, Any], records: list[dict[str, Any]], out: Path) -> None:
    contact_sheet(records, out / "real_photos_contact_sheet.png")
    refused = sum(report["refused"].values())
    details = table(
        ["class", "photos", "top-1", "top-3", "sure", "right when sure", "most frequent answers"],
        [[group_label(group), c["n"], f"{c['top1']:.2f}", f"{c['top3']:.2f}", f"{c['sure_share']:.2f}", fmt(c["sure_accuracy"], ".2f"),
          ", ".join(f"{name} {count}" for name, count in list(c["answers"].items())[:3])]
         for group, c in report["per_class"].items()]
        + [["**macro**", report["n"], f"**{report['macro_top1']:.2f}**", f"**{report['macro_top3']:.2f}**",
            f"{report['sure']['share']:.2f} of all", f"{fmt(report['sure']['accuracy'], '.2f')} of all", f"{refused} refused"]],  # pooled, as the issue asks
    )
    report_results(out, "real_photos", report, details, summary_rows(report))


def report_summary(summary: dict[str, Any], out: Path) -> None:
    def cell(key: str, spec: str) -> str:
        s = summary[key]
        return f"{fmt(s['median'], spec)} ({fmt(s['min'], spec)}-{fmt(s['max'], spec)})"

    rows = [[LABELS[key], cell(key, ".0f" if key == "refused" else ".4f" if key == "macro_top1" else ".3f"),
             f"{'<=' if key in ('refused', 'ece') else '>='} {TARGETS[key]}{' of 990' if key == 'refused' else ''}",
             verdict(summary[key]["met"])] for key in TARGETS]
    details = f"median (min-max) over {len(summary['checkpoints'])} models: " + ", ".join(summary["checkpoints"])
    report_results(out, "real_photos_summary", summary, details, rows)


def run_names(checkpoints: list[Path]) -> list[str]:
    """Each model's folder under DIR: its run directory's name, numbered if two share one."""
    names = [path.parent.name for path in checkpoints]
    return names if len(set(names)) == len(names) else [f"{i}-{name}" for i, name in enumerate(names)]


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--checkpoint", nargs="+", help="model.pt files to measure (default: the newest runs/*/model.pt)")
    p.add_argument("--photos", type=Path, help="folder with MANIFEST.tsv (default: realphotos beside FashionMNIST/)")
    args = parse(p, argv)
    photos = args.photos or default_folder(data_root())
    rows = read_manifest(photos, QUICK_PER_GROUP if args.quick else None)
    checkpoints = [resolve_model_path(path) for path in args.checkpoint or [None]]
    torch.set_num_threads(1)  # as demo/app.py serves
    cuts = cut_all(rows)
    if len(checkpoints) == 1:
        report_one(*measure(Classifier(checkpoints[0]), cuts, photos, args.quick), args.out)
        return 0
    reports = []
    for name, checkpoint in zip(run_names(checkpoints), checkpoints):
        report, records = measure(Classifier(checkpoint), cuts, photos, args.quick)
        report_one(report, records, args.out / name)
        reports.append(report)
    report_summary(summary_over_models(reports), args.out)
    return 0


if __name__ == "__main__":
    entry(main)
