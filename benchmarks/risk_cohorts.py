"""Survival risk: st.tl.fit_risk on synthetic cohorts with a planted signal, and a smoke run on the her2st patients.

Usage: python -m benchmarks risk_cohorts [--data ../shared/data] [--strengths 3 6] [--train 40] [--test 80] [--quick]

Planted cohorts (``st.datasets.planted_cohort``): patients are bags of 60 real spots of the bundled demo (her2st C2
crop), embedded by the default model from H&E and expression; a fraction f ~ U(0, 1) of each bag is drawn from the
ERBB2-high half of the spots and the hazard is exp(strength (f - 0.5)). Reported: the cross-validated C-index of
``fit_risk`` (5 folds; mean over folds and pooled), the C-index of the final head on a fresh cohort of ``--test``
patients, the oracle C-index of the planted fraction itself (the ceiling), and a control with the training patients'
(time, event) pairs shuffled among them (no signal: ~0.5 expected).

her2st smoke run: one section per patient A–H (A1, B1, C1, D1, E1, F1, G1, H1), expression embeddings, overall
survival status from the clinical table (2 deaths: C and D); the table has no follow-up times, so all times are equal
and the Cox likelihood only ranks the deceased above the others. Eight patients cannot validate anything: this run
shows the path works end to end on real clinical data, not that it predicts survival.
Writes benchmarks/results/risk_cohorts.json and prints a markdown table.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from pathlib import Path

import numpy as np

import storm as st
from storm._compute import cpu_name
from storm.tl._metrics import concordance_index

from ._common import DEFAULT_DATA, RESULTS, parse, quick_out, suite_parser

#: ``--quick``: the strong signal only, smaller cohorts.
QUICK = ["--strengths", "6", "--train", "20", "--test", "40", *quick_out("risk_cohorts.json")]


def planted(strength: float, n_train: int, n_test: int) -> dict:
    sdata = st.datasets.demo()
    st.tl.embed(sdata)
    table = sdata["table"]
    erbb2 = st.data.log1p_cp10k(table.X)[:, table.var_names.get_loc("ERBB2")].toarray().ravel()
    high = np.argsort(erbb2, kind="stable")[len(erbb2) // 2 :]
    slides, t, e, f = st.datasets.planted_cohort(table, high, n_train, strength=strength, seed=1)
    head = st.tl.fit_risk(slides, t, e, random_state=0)
    test, t2, e2, f2 = st.datasets.planted_cohort(table, high, n_test, strength=strength, seed=2)
    scores = []
    for slide in test:
        st.tl.apply_risk(slide, head)
        scores.append(slide.uns["storm"]["storm_risk"]["score"])
    order = np.random.default_rng(0).permutation(len(t))  # (time, event) pairs moved together: no signal left
    shuffled = st.tl.fit_risk(slides, t[order], e[order], random_state=0)
    return {
        "strength": strength,
        "n_train": n_train,
        "train_events": int(e.sum()),
        "cv_c_index": head.metrics["cv_c_index"],
        "cv_c_index_pooled": head.metrics["cv_c_index_pooled"],
        "oracle_train": concordance_index(t, f, e),
        "test_c_index": concordance_index(t2, np.array(scores), e2),
        "oracle_test": concordance_index(t2, f2, e2),
        "n_test": n_test,
        "test_events": int(e2.sum()),
        "shuffled_cv_c_index_pooled": shuffled.metrics["cv_c_index_pooled"],
    }


def her2st_smoke(data: Path) -> dict:
    clinical = st.datasets.her2st_clinical(data / "her2st")
    sections = ["A1", "B1", "C1", "D1", "E1", "F1", "G1", "H1"]
    slides = [st.datasets.her2st(s, data / "her2st", image=False) for s in sections]
    for s in slides:
        st.tl.embed(s, modality="expression")
    event = clinical.loc[[s[0] for s in sections], "OS"].to_numpy()
    head = st.tl.fit_risk(slides, np.ones(len(slides)), event, n_folds=4, random_state=0)
    scores = {}
    for name, s in zip(sections, slides, strict=True):
        st.tl.apply_risk(s, head)
        scores[name] = s["table"].uns["storm"]["storm_risk"]["score"]
    return {
        "sections": sections,
        "events": event.tolist(),
        "cv_c_index_pooled": head.metrics["cv_c_index_pooled"],
        "cv_c_index_folds": head.metrics["cv_c_index_folds"],
        "training_scores": scores,
        "mapping": clinical["mapping"].to_dict(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = suite_parser(__file__, __doc__, QUICK)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--strengths", type=float, nargs="+", default=[3.0, 6.0])
    parser.add_argument("--train", type=int, default=40)
    parser.add_argument("--test", type=int, default=80)
    parser.add_argument("--out", type=Path, default=RESULTS / "risk_cohorts.json")
    args = parse(parser, argv, QUICK)
    started = time.perf_counter()
    rows = [planted(s, args.train, args.test) for s in args.strengths]
    smoke = her2st_smoke(args.data)
    payload = {
        "benchmark": "risk_cohorts",
        "machine": {"cpu": cpu_name(), "threads": int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))},
        "date": datetime.date.today().isoformat(),
        "seconds": time.perf_counter() - started,
        "planted": rows,
        "her2st_smoke": smoke,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print("| strength | CV C-index (mean / pooled) | held-out C-index | oracle (train / test) | shuffled times |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['strength']:g} | {r['cv_c_index']:.3f} / {r['cv_c_index_pooled']:.3f} | {r['test_c_index']:.3f} | "
            f"{r['oracle_train']:.3f} / {r['oracle_test']:.3f} | {r['shuffled_cv_c_index_pooled']:.3f} |"
        )
    print(f"\nher2st smoke: pooled CV C-index {smoke['cv_c_index_pooled']:.3f}; scores {smoke['training_scores']}")


if __name__ == "__main__":
    main()
