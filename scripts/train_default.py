"""Reproduce storm's default checkpoint (``src/storm/models/weights/default``) from the real data in ../shared/data.

Usage, from the project root::

    python scripts/train_default.py

1. ``storm pretrain --config scripts/pretrain_default.yaml`` (resumes an interrupted run; skipped once finished);
2. stores the weights in float16 (half the size; loading casts them back to float32) in the package;
3. runs ``python -m benchmarks pretraining_value`` on the stored weights: H&E -> expression on the held-out section;
4. writes the model card: data, steps, time, hardware, final losses and the evaluation table.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "scripts" / "pretrain_default.yaml"
TARGET = ROOT / "src" / "storm" / "models" / "weights" / "default"
EVALUATION = ROOT / "benchmarks" / "results" / "pretraining_value.json"
DOMAINS = ROOT / "benchmarks" / "results" / "domains.json"
HELD_OUT = "B4"

DESCRIPTION = (
    "The `small` preset pretrained with storm's self-supervised objectives (masked gene and image-token modelling, "
    "cross-modal reconstruction, contrastive spot, niche and spot–niche alignment, niche denoising; modality-specific "
    "warm-up, then joint training) on the her2st HER2+ breast cancer sections (legacy Spatial Transcriptomics, 100 µm "
    "spots) and the DLPFC 151510 Visium count matrix in storm's development data. Its gene branch reads every gene of "
    "a slide's panel (the `panel` encoding: expression standardised and whitened within the slide's 32 principal "
    "axes, taken from its Poisson residuals so that genes seen at a few counts per spot add no depth axis). Its "
    "image -> expression decoder learns each gene's expression standardised within its slide, and "
    "`st.tl.predict_expression` returns log1p(CP10k) through each gene's mean and within-slide spread over the "
    'pretraining corpus. It is what `model=None` and `StormModel.from_pretrained("default")` load. The image backbone was '
    "trained from scratch (no ImageNet weights can be downloaded here) on the H&E of four sections of one patient, on "
    "2 CPU cores: treat it as a working default for breast-cancer H&E at 0.5 µm/px, not as a general histology "
    "foundation model; adapt it to your slides (`st.tl.adapt`), pretrain on your own corpus (`st.tl.pretrain`) or "
    "load other weights for other tissues."
)


def main() -> None:
    """Pretrain (or resume), store, evaluate and document the default checkpoint."""
    raw = yaml.safe_load(CONFIG.read_text())
    run = ROOT / raw["output_dir"]
    if not (run / "training.json").is_file():
        subprocess.run(["storm", "pretrain", "--config", str(CONFIG), "--output-dir", str(run)], check=True, cwd=ROOT)
    from storm.models import StormModel

    model = StormModel.from_pretrained(run / "model")
    model.save_pretrained(TARGET, weights_dtype="float16", description=DESCRIPTION)
    subprocess.run(
        [sys.executable, "-m", "benchmarks", "pretraining_value", "--model", str(TARGET), "--held-out", HELD_OUT],
        check=True,
        cwd=ROOT,
    )
    summary = json.loads((run / "training.json").read_text())
    evaluation = json.loads(EVALUATION.read_text())
    shipped = StormModel.from_pretrained(TARGET)
    if evaluation["model"]["sha256"] != shipped.checkpoint_info["sha256"]:
        raise RuntimeError(f"{EVALUATION} does not evaluate the weights in {TARGET}; run this script again.")
    shipped.save_pretrained(
        TARGET,
        weights_dtype="float16",
        name="storm small — default checkpoint",
        description=DESCRIPTION,
        license="other",
        data={
            **{k: v for k, v in summary["data"].items() if k != "slides"},
            "held_out": f"her2st {HELD_OUT} (patient B): neither its image nor its counts were seen; DLPFC 151673 "
            "(the held-out section of the domain benchmarks): its counts were not seen",
        },
        slides=summary["data"]["slides"],
        steps=summary["steps"],
        time=summary["time"],
        hardware=summary["hardware"],
        losses={"mean over the last 200 steps that computed it": _final_losses(run / "losses.csv", 200)},
        evaluation=_evaluation(evaluation),
        evaluation_protocol=_protocol(evaluation),
        **_domains(shipped.checkpoint_info["sha256"]),
        training={k: v for k, v in summary["training"].items() if k != "output_dir"},
        reproduce="`python scripts/train_default.py` from the project root, with ../shared/data present.",
    )
    if StormModel.from_pretrained(TARGET).checkpoint_info["sha256"] != shipped.checkpoint_info["sha256"]:
        raise RuntimeError("rewriting the model card changed the weights")
    print(f"wrote {TARGET}")


def _final_losses(path: Path, n: int) -> dict[str, float]:
    """Each objective's mean over the last ``n`` steps that computed it.

    An objective is left empty in ``losses.csv`` on steps without its data (image objectives on expression-only
    slides); storm 0.1.0 logged 0.0 there, and no objective reaches exactly 0.0, so both count as absent.
    """
    import csv

    with path.open() as handle:
        rows = list(csv.DictReader(handle))[-n:]
    names = [k for k in rows[0] if k not in ("step", "stage", "lr")]
    means = {}
    for name in names:
        values = [float(r[name]) for r in rows if r[name] not in ("", None) and float(r[name]) != 0.0]
        if values:
            means[name] = round(sum(values) / len(values), 4)
    return means


def _evaluation(record: dict) -> dict:
    res = record["results"]
    rows = {
        "storm small, pretrained": res["pretrained"],
        "same architecture, random init": res["random_init"],
        "hand-crafted colour/texture features": res["handcrafted"],
    }
    return {
        name: {
            "zero-shot decoder": r.get("zero_shot", "–"),
            "ridge on joint embedding": r["ridge"],
            "ridge on image-branch embedding": r.get("ridge_image_branch", "–"),
            "genes with r > 0.3 (best read-out)": max(
                r.get(f"{k}_genes_r_over_0.3", 0) for k in ("zero_shot", "ridge", "ridge_image_branch")
            ),
            "zero-shot predicted/measured spread, median over genes (scale='slide' / 'model')": (
                f"{r['zero_shot_slide_spread_ratio_median']} / {r['zero_shot_spread_ratio_median']}"
                if "zero_shot_slide_spread_ratio_median" in r
                else "–"
            ),
        }
        for name, r in rows.items()
    }


def _domains(sha256: str) -> dict:
    """Held-out domain results of ``benchmarks/domains.py`` on these weights, when it has been run on them."""
    if not DOMAINS.is_file():
        return {}
    record = json.loads(DOMAINS.read_text())
    if (record.get("model") or {}).get("sha256") != sha256:
        print(
            f"{DOMAINS} evaluates other weights: run `python -m benchmarks domains`, then this script again, for the card"
        )
        return {}
    rows = {"storm zero-shot": "storm", "storm adapted (st.tl.adapt)": "storm_adapted"}
    rows.update(
        {"GraphST (stored run)": "graphst", "BANKSY (stored run)": "banksy", "scanpy PCA → k-means": "scanpy_kmeans"}
    )
    results = record["results"]
    held_out = "DLPFC 151673"
    table = {
        name: {"ARI": results[key][held_out]["ari_mean"], "NMI": results[key][held_out]["nmi_mean"]}
        for name, key in rows.items()
        if held_out in results.get(key, {})
    }
    return {
        "domains_on_the_held_out_section": table,
        "domains_protocol": (
            f"{held_out} (7 manual layers; its counts were held out of pretraining): `st.tl.domains(n_domains=7)` on "
            "each embedding, ARI/NMI mean over 3 clustering seeds; adaptation 300 steps on the section, no labels. "
            f"`benchmarks/domains.py`, {record['date']}, {record['machine']['cpu']}."
        ),
    }


def _protocol(record: dict) -> str:
    return (
        f"H&E -> expression on her2st {record['held_out']} ({record['n_held_out_spots']} spots, held out of "
        f"pretraining): the {record['n_genes']} genes with the highest mean log1p(CP10k) there; Pearson r per gene "
        "across spots, mean over genes. Ridge probes are fitted on her2st "
        f"{', '.join(record['probe_training_sections'])} (penalty by leave-one-section-out CV on those). "
        f"`benchmarks/pretraining_value.py`, {record['date']}, {record['machine']['cpu']}."
    )


if __name__ == "__main__":
    main()
