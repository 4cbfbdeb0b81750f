"""The real-photo measure: its manifest, and its figures on answers made by hand, known in advance."""

import numpy as np
import pytest

from benchmarks.real_photos import group_label, summary_over_models
from trainer.data import CLASS_NAMES
from trainer.errors import UserError
from trainer.photos import classify_cuts, macro_interval, read_manifest, summarise
from trainer.predict import Prediction

FOOTWEAR = ["Sandal", "Sneaker", "Ankle boot"]


def test_the_macro_interval_is_what_the_photos_sampling_allows():
    """Seven classes of 150 photos, 65% right in each: the bootstrap's 95% interval should match the normal
    approximation, 1.96 standard errors of a mean of seven proportions either side, and not move with the seed."""
    right = [np.arange(150) < 0.65 * 150 for _ in range(7)]
    p = right[0].mean()
    half = 1.96 * np.sqrt(p * (1 - p) / 150) / np.sqrt(7)
    low, high = macro_interval(right)
    assert abs((high - low) / 2 - half) < 0.1 * half and abs((low + high) / 2 - p) < 0.005
    assert macro_interval(right, seed=1) != (low, high) and abs(macro_interval(right, seed=1)[0] - low) < 0.005
    assert macro_interval([np.ones(20, dtype=bool)] * 3) == (1.0, 1.0), "photos all right leave no doubt"
    low, high = macro_interval([np.ones(20, dtype=bool), np.arange(200) < 100])  # macro 0.75; pooled it would be 0.55
    assert abs((low + high) / 2 - 0.75) < 0.01 and high - low < 0.15, "each group drawn again on its own, then averaged"


def prediction(answer: str, p: float, second: str = "Bag") -> Prediction:
    """The answer at probability p, `second` just below it (or at what is left), the rest shared out."""
    q = min(p - 0.01, (1 - p) / 2)
    probabilities = {name: (1 - p - q) / 8 for name in CLASS_NAMES} | {answer: p, second: q}
    return Prediction(probabilities, np.zeros((28, 28), np.uint8), (0, 0, 1, 1), True, p >= 0.6)


class Answers:
    """A classifier whose answer to each photo is written in its cut-out."""

    def classify_cut(self, cut: Prediction) -> Prediction:
        return cut


def cut(accept: list[str], answer: Prediction | None) -> dict:
    return {"group": "|".join(accept), "accept": accept, "cut": answer, "refusal": None if answer else "refused", "ms": 1.0}


def ranked(answer: str, p: float, second: str, q: float, third: str, r: float) -> Prediction:
    """Three classes at p > q > r, the other seven sharing what is left (less than r each)."""
    probabilities = {name: (1 - p - q - r) / 7 for name in CLASS_NAMES} | {answer: p, second: q, third: r}
    return Prediction(probabilities, np.zeros((28, 28), np.uint8), (0, 0, 1, 1), True, p >= 0.6)


def test_the_figures_of_answers_made_by_hand():
    cuts = [
        cut(["Shirt"], prediction("Shirt", 0.9)),  # right and sure
        cut(["Shirt"], prediction("Coat", 0.7, "Shirt")),  # wrong and sure, though right in the top 3: wrong when sure
        cut(["Shirt"], None),  # refused: wrong, and not sure
        cut(["Shirt"], ranked("Coat", 0.3, "Bag", 0.25, "Shirt", 0.2)),  # wrong, right third
        cut(["Shirt"], ranked("Coat", 0.5, "Bag", 0.2, "Pullover", 0.15)),  # wrong, not in the top 3 either
        cut(FOOTWEAR, prediction("Ankle boot", 0.8)),  # any shoe is right for footwear
        cut(FOOTWEAR, prediction("Sneaker", 0.5)),
    ]
    summary = summarise(classify_cuts(Answers(), cuts))
    assert summary["per_class"]["Shirt"] | {"answers": None} == {"n": 5, "top1": 0.2, "top3": 0.6, "sure_share": 0.4,
                                                                 "sure_accuracy": 0.5, "answers": None}
    assert summary["per_class"]["Sandal|Sneaker|Ankle boot"]["top1"] == 1.0
    assert summary["macro_top1"] == pytest.approx((0.2 + 1.0) / 2) and summary["macro_top3"] == pytest.approx((0.6 + 1.0) / 2)
    assert summary["sure"] == {"share": 3 / 7, "accuracy": pytest.approx(2 / 3)}, "the share of all photos, refused included"
    assert summary["refused"] == {"refused": 1}
    assert summary["confusion"]["Shirt"] == {"Coat": 3, "Shirt": 1, "refused": 1}
    # the six answers' confidences 0.9, 0.7, 0.3, 0.5, 0.8, 0.5, right as True, False, False, False, True, True; in 15
    # bins each is alone but the two at 0.5 (one right: 0.5 right, no gap): (0.1 + 0.7 + 0.3 + 0 + 0.2) / 6
    assert summary["confidence"] == {"mean": pytest.approx(3.7 / 6), "mean_when_right": pytest.approx(2.2 / 3),
                                     "mean_when_wrong": pytest.approx(1.5 / 3), "ece": pytest.approx(1.3 / 6)}
    assert summary["per_class"]["Sandal|Sneaker|Ankle boot"]["sure_accuracy"] == 1.0
    nothing = summarise(classify_cuts(Answers(), [cut(["Shirt"], None)]))
    assert nothing["per_class"]["Shirt"]["sure_accuracy"] is None, "no sure answer: nothing to be right on"
    assert nothing["confidence"]["ece"] is None and nothing["cut_out_share"] is None, "no answer: no confidence to judge"


def write_manifest(folder, lines: list[str], photos: list[str]) -> None:
    for name in photos:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"")
    (folder / "MANIFEST.tsv").write_text("path\taccept\n" + "".join(f"{line}\n" for line in lines))


def test_the_manifest_names_classes_and_photos_that_exist(tmp_path):
    write_manifest(tmp_path, ["a.jpg\tSneaker|Sandal|Ankle boot", "b.jpg\tSandal|Sneaker|Ankle boot"], ["a.jpg", "b.jpg"])
    assert {"|".join(accept) for _, accept in read_manifest(tmp_path)} == {"Sandal|Sneaker|Ankle boot"}, "one group, however spelt"
    assert [group_label(group) for group in ("Sandal|Sneaker|Ankle boot", "Shirt|Coat", "Shirt")] == [
        "footwear", "Shirt or Coat", "Shirt"]
    (tmp_path / "MANIFEST.tsv").write_bytes("\ufeffpath\taccept\r\na.jpg\tShirt|Shirt\r\n".encode())  # as Excel saves it
    assert read_manifest(tmp_path) == [(tmp_path / "a.jpg", ["Shirt"])], "a byte-order mark, CRLF, a class named twice"
    write_manifest(tmp_path, ["a.jpg\tTshirt"], ["a.jpg"])
    with pytest.raises(UserError, match="accepts 'Tshirt', not a Fashion-MNIST class: use T-shirt/top, Trouser"):
        read_manifest(tmp_path)
    write_manifest(tmp_path, ["a.jpg\tShirt", "/no/such/b.jpg\tShirt", "typo.jpg\tShirt"], ["a.jpg"])
    with pytest.raises(UserError, match=f"lists 2 photo\\(s\\) that {tmp_path} does not hold, the first /no/such/b.jpg"):
        read_manifest(tmp_path)


def test_several_models_are_judged_on_their_median():
    def report(top1: float, ece: float | None) -> dict:
        return {"machine": {}, "quick": False, "photos": "p", "n": 990, "checkpoint": f"{top1}.pt", "macro_top1": top1,
                "macro_top3": 0.9, "refused": {}, "confidence": {"ece": ece}, "sure": {"share": 0.6, "accuracy": 0.85}}

    summary = summary_over_models([report(0.70, 0.05), report(0.60, None), report(0.64, 0.2)])
    assert summary["macro_top1"] == {"median": 0.64, "min": 0.60, "max": 0.70, "met": False}
    assert summary["ece"] == {"median": pytest.approx(0.125), "min": 0.05, "max": 0.2, "met": False}, "a model with no answers is left out"
    assert summary["macro_top3"]["met"] and summary["refused"] == {"median": 0.0, "min": 0, "max": 0, "met": True}
