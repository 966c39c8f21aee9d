"""The tables of the benchmark pages, rendered from ``benchmarks/results/*.json``: standard library only, no storm.

    python -m benchmarks report           rewrite every generated block in place
    python -m benchmarks report --check   exit 1, naming the blocks, if a page differs from what the results give

A generated block sits between ``<!-- table:NAME -->`` and ``<!-- /table -->``; everything around it is written by
hand. Each block ends with the line that names its result file, date, machine and, where stored, commit and checkpoint.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
ROOT = HERE.parent
RESULTS = HERE / "results"
#: The pages with generated blocks, and where their links to a section of the benchmarks page point.
PAGES = {
    "docs/benchmarks.md": "#",
    "README.md": "docs/benchmarks.md#",
    "benchmarks/README.md": "../docs/benchmarks.md#",
}
BLOCK = re.compile(r"(<!-- table:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.DOTALL)
#: Differences smaller than this are ties in the summary (scores in [0, 1]; 30 % for speeds).
TIE, TIE_SPEED = 0.01, 1.3


# --------------------------------------------------------------------------------------------------------- helpers
@cache
def load(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / name).read_text())


def f3(x: float | None) -> str:
    """Three decimals, a true minus sign; "–" when missing."""
    return "–" if x is None else f"{x:.3f}".replace("-", "−")


def grouped(x: float, digits: int = 0) -> str:
    return f"{x:,.{digits}f}"


def mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values)


def table(head: list[str], rows: Iterable[list[str]], align: str | None = None) -> str:
    """A markdown table; ``align`` has one letter per column, ``l`` or ``r`` (default: first left, others right)."""
    align = align or "l" + "r" * (len(head) - 1)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def source(*names: str) -> str:
    """The provenance line of a block: each result file's date, machine, versions, commit and checkpoint."""
    parts = []
    for name in names:
        r = load(name)
        if "runs" in r:  # one record per run (the stored domain peers)
            runs = r["runs"].values()
            dates = sorted({run["date"] for run in runs})
            cpus = sorted({run["machine"]["cpu"] for run in runs})
            commits = sorted({run["commit"] for run in runs})
            span = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}"
            parts.append(
                f"`{name}` ({len(r['runs'])} stored runs, {span}, {', '.join(cpus)}, commit {', '.join(commits)})"
            )
            continue
        m = r.get("machine", {})
        threads = m.get("torch_threads", m.get("threads"))
        where = m.get("cpu", "unknown CPU") + (f", {m['cores']} cores" if m.get("cores") else "")
        where += f", {threads} thread{'s' * (threads != 1)}" if threads else ""
        where += f", {m['gpu']}" if m.get("gpu") else ""
        bits = [str(r.get("date", "undated"))[:10], where]
        versions = r.get("versions") or {}
        bits += [
            f"{k} {versions[k].split('+')[0]}" for k in ("storm", "torch") if versions.get(k, "absent") != "absent"
        ]
        if r.get("commit"):
            bits.append(f"commit {r['commit'][:7]}")
        model = r.get("model")
        if isinstance(model, dict) and model.get("sha256"):
            bits.append(f"checkpoint `{model['sha256'][:8]}`")
        parts.append(f"`{name}` ({', '.join(bits)})")
    return "*Results: " + "; ".join(parts) + ".*"


def block(*parts: str) -> str:
    return "\n\n".join(parts)


# --------------------------------------------------------------------------------------------------- spatial domains
DOMAIN_ROWS = {
    "storm": "storm zero-shot → `st.tl.domains` (its default)",
    "storm_kmeans": 'storm zero-shot → `st.tl.domains(method="kmeans")`',
    "storm_adapted": "storm adapted (`st.tl.adapt`) → `st.tl.domains`",
    "scanpy_leiden": "scanpy PCA → Leiden at k",
    "scanpy_kmeans": "scanpy PCA → k-means",
    "scanpy_smoothed": "scanpy PCA → `st.tl.domains` (smoothed, mixture)",
    "graphst": "GraphST → PCA 20 → tied Gaussian mixture",
    "graphst_refined": "GraphST, with its label refinement",
    "banksy": "BANKSY → PCA 20 → tied Gaussian mixture",
    "banksy_leiden": "BANKSY → Leiden at k",
    "novae": "novae from scratch → `assign_domains(k)`",
    "squidpy_image": "squidpy image features → `st.tl.domains`",
    "storm_user_leiden": "*no k:* storm → `sc.pp.neighbors` → `sc.tl.leiden`",
    "storm_domains_leiden": "*no k:* storm → `st.tl.domains()` without `n_domains`",
    "scanpy_leiden_default": "*no k:* scanpy PCA → Leiden, resolution 1",
}
STORM_DOMAINS = ("storm", "storm_adapted")
PEER_DOMAINS = ("scanpy_leiden", "scanpy_kmeans", "scanpy_smoothed", "graphst", "graphst_refined", "banksy")
PEER_DOMAINS += ("banksy_leiden", "novae")


def domain_ari(key: str, sections: Iterable[str] | None = None) -> float | None:
    """Mean ARI of a contender over ``sections`` (default: all ten); ``None`` unless it has every one."""
    r = load("domains.json")
    sections = list(sections or r["sections"])
    values = [r["results"].get(key, {}).get(s, {}).get("ari_mean") for s in sections]
    return None if None in values else mean(values)


def domains() -> str:
    r = load("domains.json")
    names = list(r["sections"])
    her2st = [n for n in names if n.startswith("her2st")]
    head = ["contender", *(n.split()[-1] + (" (held out)" if n == "DLPFC 151673" else "") for n in names)]
    head += ["her2st mean", "mean", "NMI mean"]
    rows = []
    for key, label in DOMAIN_ROWS.items():
        if key not in r["results"]:
            continue
        res = r["results"][key]
        nmi = [res.get(n, {}).get("nmi_mean") for n in names]
        cells = [f3(res.get(n, {}).get("ari_mean")) for n in names]
        rows.append(
            [label, *cells, f3(domain_ari(key, her2st)), f3(domain_ari(key)), f3(None if None in nmi else mean(nmi))]
        )
    return block(table(head, rows), source("domains.json", "domain_peers.json"))


def panel_breadth() -> str:
    now, peers, ten = load("panel_breadth.json"), load("panel_breadth_peers.json"), load("domains.json")
    held = ten["results"]
    rows = [
        [label, f3(now["original"][key]["ari_mean"]), f3(now["widened"][key]["ari_mean"])]
        for key, label in (
            ("storm_zero_shot", "storm zero-shot → `st.tl.domains`"),
            ("storm_adapted", "storm adapted → `st.tl.domains`"),
            ("scanpy_kmeans", "scanpy PCA (its 2,000 HVGs) → k-means"),
        )
    ]
    rows += [
        [label + " †", f3(held[key]["DLPFC 151673"]["ari_mean"]), f3(peers["widened"][key]["ari_mean"])]
        for key, label in (
            ("graphst", "GraphST (its 3,000 HVGs) → tied mixture"),
            ("graphst_refined", "GraphST, with its label refinement"),
            ("banksy", "BANKSY (its 2,000 HVGs) → tied mixture"),
            ("banksy_leiden", "BANKSY → Leiden at k"),
        )
    ]
    rows.append(
        [
            "storm adaptation, seconds",
            grouped(now["original"]["adapt_seconds"]),
            grouped(now["widened"]["adapt_seconds"]),
        ]
    )
    head = [
        f"DLPFC {now['sample']}, ARI (k = 7)",
        f"shipped panel ({grouped(now['original']['genes'])} genes)",
        f"whole-kit panel ({grouped(now['widened']['genes'])} genes)",
    ]
    note = "† shipped panel: the run of `domains.json`, whole-kit panel: `panel_breadth_peers.json`. "
    return block(table(head, rows), note + source("panel_breadth.json", "panel_breadth_peers.json"))


def adapt_runtime() -> str:
    r, peers = load("adapt_runtime.json"), load("domain_peers.json")["runs"]
    rows = []
    for row in r["rows"]:
        graphst = peers.get(f"graphst/DLPFC {row['section']}", {}).get("seconds")
        rows.append(
            [
                f"DLPFC {row['section']}",
                grouped(row["spots"]),
                grouped(row["seconds"]),
                "–" if graphst is None else grouped(graphst),
            ]
        )
    head = ["section", "spots", f"`st.tl.adapt` ({r['steps']} steps), s", "GraphST (stored run, 1 thread), s"]
    return block(table(head, rows), source("adapt_runtime.json"))


# ------------------------------------------------------------------------------------------ few labels, integration
LOW_LABEL_TASKS = {"dlpfc_layers": "DLPFC 151673 → 151510", "her2st_pathology": "her2st A1–D1 → E1–H1"}


def low_label_mean(task: str, contender: str) -> float:
    """Balanced accuracy of ``contender`` averaged over the label counts of ``task``."""
    by_size = load("low_label.json")["results"][task]["by_size"]
    return mean(row[contender]["balanced_accuracy_mean"] for row in by_size.values())


def low_label() -> str:
    r = load("low_label.json")
    parts = []
    for task, title in LOW_LABEL_TASKS.items():
        res = r["results"][task]
        contenders = list(next(iter(res["by_size"].values())))
        rows = []
        for n, row in res["by_size"].items():
            label = f"all ({grouped(int(n))})" if int(n) == res["n_train_labelled"] else grouped(int(n))
            cells = []
            for c in contenders:
                cell = f3(row[c]["balanced_accuracy_mean"])
                cells.append(cell + (f" ± {f3(row[c]['balanced_accuracy_sd'])}" if row[c]["repeats"] > 1 else ""))
            rows.append([label, *cells])
        head = [f"labelled spots, {title}", *contenders]
        parts.append(table(head, rows))
    return block(*parts, source("low_label.json"))


INTEGRATION_ROWS = {
    "storm": "storm `X_storm`",
    "storm_zscored": "storm, z-scored per slide",
    "storm_integrated": "storm `st.tl.integrate`",
    "pca": "PCA of expression",
    "pca_zscored": "PCA, z-scored per slide",
    "harmony": "Harmony (harmonypy) on PCA",
}


def integration() -> str:
    r = load("integration.json")
    rows = []
    for group, part in r["groups"].items():
        for key, m in part["results"].items():
            metrics = ("ilisi", "kbet_acceptance", "clisi", "label_asw", "kmeans_ari")
            rows.append([group, INTEGRATION_ROWS[key], *(f3(m[k]) for k in metrics)])
    head = ["slides", "embedding", "iLISI (mixing)", "kBET acceptance", "cLISI (labels)", "label ASW", "k-means ARI"]
    joint = "; ".join(
        f"{group}: pooled ARI {f3(part['joint_domains']['pooled_ari'])} against a per-slide mean of "
        f"{f3(mean(part['joint_domains']['per_slide_ari']))} (`st.tl.integrate`: {part['integrate_seconds']:.1f} s)"
        for group, part in r["groups"].items()
        if "joint_domains" in part
    )
    runtime = [
        f"over {part['runtime']['n_slides']} Visium-sized slides ({grouped(part['runtime']['n_spots'])} spots, "
        f"embeddings given): {part['runtime']['seconds']:.0f} s"
        for part in r["groups"].values()
        if "runtime" in part
    ]
    text = f"Joint `st.tl.domains` on `X_storm_integrated`: {joint}." if joint else ""
    if runtime:
        text += f" `st.tl.integrate` {runtime[0]}."
    return block(table(head, rows, "llrrrrr"), *([text] if text else []), source("integration.json"))


# -------------------------------------------------------------------------------------------- H&E -> expression
EXPRESSION = "expression_her2st_fields.json"
EXPRESSION_ROWS = {
    "fold_zero_shot": "storm per fold: zero-shot decoder",
    "fold_finetune": "storm per fold: `st.tl.fit_head` head (its defaults)",
    "fold_finetune_embeddings": "storm per fold: head, `morphology=False`",
    "fold_finetune_pooled": "storm per fold: head, `per_slide=False, morphology=False`",
    "fold_ridge_image_branch": "storm per fold: ridge on `X_storm_image`",
    "storm_zero_shot": "storm default: zero-shot decoder",
    "storm_finetune": "storm default: `st.tl.fit_head` head",
    "untrained_zero_shot": "same architecture untrained: zero-shot decoder",
    "handcrafted_ridge": "colour/texture statistics + ridge",
    "handcrafted_ridge_per_section": "colour/texture statistics, standardised per section + ridge",
    "squidpy_ridge": "squidpy `calculate_image_features` + ridge",
    "stnet": "ST-Net-style DenseNet-121, trained from scratch",
    "fields_ridge_per_section": "*no model:* storm's tile and field statistics, per-section ridge",
    "fields_head_recipe": "*no model:* the same statistics through storm's head recipe",
}
STORM_FOLDS = ("fold_zero_shot", "fold_finetune", "fold_finetune_embeddings", "fold_finetune_pooled")
STORM_FOLDS += ("fold_ridge_image_branch",)
EXPRESSION_PEERS = ("handcrafted_ridge", "handcrafted_ridge_per_section", "squidpy_ridge", "stnet")


def expression_r(key: str, sections: Iterable[str]) -> float:
    res = load(EXPRESSION)["results"][key]
    return mean(res[s]["mean_r"] for s in sections)


def origin(name: str, record: dict[str, Any], depth: int = 0) -> dict[str, Any]:
    """Where a stored (copied) contender was measured: followed through the runs it was copied from."""
    stored = record.get("stored", {}).get(name)
    path = stored and RESULTS / Path(stored["from"]).name
    if stored is None or depth > 3 or path is None or not path.is_file():
        return stored or {}
    earlier = origin(name, load(path.name), depth + 1)
    return earlier or stored


def expression() -> str:
    r = load(EXPRESSION)
    sections = list(r["sections"])
    held = set(r["held_out_of_pretraining"])
    patient_c = [s for s in sections if s.startswith("C")]
    rows = []
    for key, label in EXPRESSION_ROWS.items():
        res = r["results"][key]
        in_sample = key.startswith("storm_")
        cells = [f3(res[s]["mean_r"]) + ("\\*" if in_sample and s not in held else "") for s in sections]
        rows.append([label, *cells, f3(expression_r(key, sections)), f3(expression_r(key, patient_c))])
    head = ["contender", *sections, "mean", f"mean {patient_c[0]}–{patient_c[-1]}"]
    stored = []
    for name in r.get("stored", {}):
        where = origin(name, r)
        commit = f", commit {where['commit'][:7]}" if where.get("commit") else ""
        stored.append(f"`{name}` on {where.get('date', '?')} ({where.get('machine', {}).get('cpu', '?')}{commit})")
    note = (
        f"\\* in-sample: the default checkpoint was pretrained (without labels) on {', '.join(sections[1:])}; only "
        f"{', '.join(sorted(held))} is held out of it. Copied from earlier runs of the same protocol: "
        + "; ".join(stored)
        + ". "
    )
    return block(table(head, rows), note + source(EXPRESSION))


def pretraining_value() -> str:
    r = load("pretraining_value.json")
    res = r["results"]
    rows = []
    for key, label in (
        ("pretrained", "storm default checkpoint"),
        ("random_init", "same architecture, random weights"),
        ("handcrafted", "colour/texture statistics of the tile and niche"),
    ):
        x = res[key]
        rows.append(
            [
                label,
                f3(x.get("zero_shot")),
                str(x["zero_shot_genes_r_over_0.3"]) if "zero_shot" in x else "–",
                f3(x.get("ridge")),
                f3(x.get("ridge_image_branch")),
            ]
        )
    head = [
        f"held-out {r['held_out']}, mean r over {r['n_genes']} genes",
        "zero-shot decoder",
        "genes with r > 0.3",
        "ridge on `X_storm`",
        "ridge on `X_storm_image`",
    ]
    return block(table(head, rows), source("pretraining_value.json"))


# ------------------------------------------------------------------------------------------------- image branch
IMAGE_ROWS = {
    "statistics": "colour/texture statistics (no model)",
    "default": "model before the stage",
    "continued": "+ steps of the default objectives (control)",
    "crops": "+ steps of the default objectives and crops",
    "crops_only": '+ steps of crops only (`st.tl.adapt(task="image")`)',
}


def image_branch() -> str:
    rows = []
    files = ("image_branch_B4.json", "image_branch_C4.json", "image_branch_C2.json")
    for name in files:
        r = load(name)
        for key, row in r["rows"].items():
            label = IMAGE_ROWS[key] if key != "default" or r["held_out"] != "B4" else "shipped default checkpoint"
            if key == "default" and r["held_out"] != "B4":
                label = f"fold model without {r['held_out']}"
            seconds = row.get("train_seconds")
            rows.append(
                [
                    r["held_out"],
                    label,
                    f3(row["ridge"]),
                    f3(row["domains"]),
                    f3(row.get("decoder")),
                    "–" if not seconds else grouped(seconds),
                ]
            )
    head = ["held out", "image features", "ridge r", "image-only domains ARI", "zero-shot decoder r", "training s"]
    steps = sorted({load(n)["steps"] for n in files})
    note = f"Training stages: {' / '.join(map(str, steps))} steps of 16 niches (and 16 crops), seed 0. "
    return block(table(head, rows, "llrrrr"), note + source(*files))


def encoder_features() -> str:
    r = load("encoder_features.json")
    u = r["uni"]
    first = table(
        ["encoder", "spots", "first call s", "tiles/s", "second call s (new process, store read)", "×"],
        [
            [
                f"UNI architecture (ViT-L/16) on her2st {r['section']}",
                grouped(u["spots"]),
                grouped(u["first_s"], 1),
                f"{u['tiles_per_s']:.2f}",
                f"{u['second_with_read_s']:.2f} (lookup {u['second_s']:.2f})",
                f"{u['ratio']:.0f}",
            ]
        ],
    )
    second = table(
        [
            "spots (synthetic 40k × 40k H&E, ViT-Ti/16 at 64 px)",
            "s",
            "tiles/s",
            "peak RSS over baseline, MB",
            "features, MB",
        ],
        [
            [
                grouped(row["spots"]),
                grouped(row["seconds"]),
                grouped(row["tiles_per_s"]),
                grouped(row["peak_over_baseline_mb"]),
                grouped(row["features_mb"]),
            ]
            for row in r["scaling"]
        ],
    )
    return block(first, second, source("encoder_features.json"))


# ---------------------------------------------------------------------------------------- risk, orientations
def risk() -> str:
    r = load("risk_cohorts.json")
    rows = [
        [
            f"{p['strength']:g}",
            f"{f3(p['cv_c_index'])} / {f3(p['cv_c_index_pooled'])}",
            f3(p["test_c_index"]),
            f"{f3(p['oracle_train'])} / {f3(p['oracle_test'])}",
            f3(p["shuffled_cv_c_index_pooled"]),
        ]
        for p in r["planted"]
    ]
    n = {p["n_train"] for p in r["planted"]}, {p["n_test"] for p in r["planted"]}
    head = [
        "planted strength",
        f"CV C-index, {'/'.join(map(str, n[0]))} patients (fold mean / pooled)",
        f"fresh cohort of {'/'.join(map(str, n[1]))}",
        "oracle (train / fresh)",
        "shuffled times (pooled)",
    ]
    smoke = r["her2st_smoke"]
    note = (
        f"her2st smoke run: {len(smoke['sections'])} patients, {sum(smoke['events'])} deaths, no follow-up times; "
        f"pooled cross-validated C-index {f3(smoke['cv_c_index_pooled'])}. "
    )
    return block(table(head, rows), note + source("risk_cohorts.json"))


ORIENTATION_MEASURES = {
    "mirror": "mirrored: median cosine / domains ARI",
    "90": "quarter-turn: median cosine / domains ARI",
    "30": "turned 30°: median cosine / domains ARI",
}


def orientations() -> str:
    r = load("orientations.json")
    one, eight = r["results"]["1"], r["results"]["8"]
    rows = []
    for section in one:
        a, b = one[section], eight[section]
        for how, label in ORIENTATION_MEASURES.items():
            if f"{how}_median_cosine" in a:
                cells = [f"{x[f'{how}_median_cosine']:.4f} / {x[f'{how}_domains_ari']:.2f}" for x in (a, b)]
                rows.append([section, label, *cells])
        if "decoder_mean_r" in a:
            rows.append([section, "zero-shot decoder r", f"{a['decoder_mean_r']:.4f}", f"{b['decoder_mean_r']:.4f}"])
        if "domains_ari_vs_layers" in a:
            rows.append(
                [
                    section,
                    "domains ARI against the layers",
                    f3(a["domains_ari_vs_layers"]),
                    f3(b["domains_ari_vs_layers"]),
                ]
            )
        ratio = b["embed_seconds"] / a["embed_seconds"]
        rows.append(
            [
                section,
                f"`st.tl.embed` s ({grouped(a['n_spots'])} spots)",
                f"{a['embed_seconds']:.1f}",
                f"{b['embed_seconds']:.1f} ({ratio:.1f}×)",
            ]
        )
    return block(table(["section", "measure", "1 pass", "8 orientations"], rows, "llrr"), source("orientations.json"))


# ------------------------------------------------------------------------------------------- tiling and speed
def tiling() -> str:
    r = load("tiling.json")
    rows = [
        [
            row["contender"],
            grouped(row["spots_per_s"]),
            f"{row['ratio_to_numpy_b']:.2f}",
            f"{row['ratio_to_image_tiles_dataset']:.1f}",
            row["notes"],
        ]
        for row in r["rows"]
    ]
    head = ["contender", "spots/s", "× numpy (b)", "× ImageTilesDataset", "notes"]
    c = r["correctness"]
    note = (
        f"Tiles: storm equals numpy (b) within {c['storm_vs_numpy_b_max_abs_all_spots']} grey level on all "
        f"{r['data']['spots']} spots; mean |difference| from storm's tiles: spatialdata "
        f"{c['spatialdata_vs_storm_mean_abs']:.2f}, squidpy {c['squidpy_vs_storm_mean_abs']:.2f} (of 255). "
    )
    return block(table(head, rows, "lrrrl"), note + source("tiling.json"))


def throughput() -> str:
    r, ahead = load("throughput_cpu.json"), load("read_ahead_cpu.json")
    rows = [
        [
            row["preset"],
            f"{row['parameters_M']:.2f}",
            f"{row['end_to_end_spots_per_s']:.1f} ({row['end_to_end_first_call_spots_per_s']:.1f})",
            f"{row['model_only_spots_per_s']:.1f}",
            f"{row['ratio']:.2f}",
        ]
        for row in r["rows"]
    ]
    head = ["preset", "parameters (M)", "end-to-end spots/s (first call)", "model-only spots/s", "ratio"]
    reader = table(
        [f"reader ({ahead['preset']}, {ahead['device']})", "end-to-end spots/s", "× in line"],
        [[row["reader"], f"{row['spots_per_s']:.1f}", f"{row['ratio_to_in_line']:.2f}"] for row in ahead["rows"]],
    )
    return block(table(head, rows), reader, source("throughput_cpu.json", "read_ahead_cpu.json"))


def scaling() -> str:
    r = load("scaling_tiny_64px.json")
    rows = [
        [
            grouped(row["spots"]),
            f"{row['tiling_s']:.1f}",
            grouped(row["tiles_per_s"]),
            f"{row['embed_s']:.1f}",
            grouped(row["embed_spots_per_s"]),
            grouped(row["peak_over_baseline_mb"]),
        ]
        for row in r["rows"]
    ]
    head = ["spots", "tiling s", "tiles/s", "embed s", "embed spots/s", "peak RSS − baseline, MB"]
    note = f"Model `{r['model']}` at {r['image_size']}-px tiles; decoded-pixel cache {grouped(r['tile_cache_mb'])} MB. "
    return block(table(head, rows), note + source("scaling_tiny_64px.json"))


# ----------------------------------------------------------------------------------------------------- summary
def verdict(storm: float, peer: float, speed: bool = False) -> str:
    if speed:
        return "wins" if storm > peer * TIE_SPEED else "loses" if peer > storm * TIE_SPEED else "ties"
    return "wins" if storm - peer > TIE else "loses" if peer - storm > TIE else "ties"


def best(scores: dict[str, float | None]) -> tuple[str, float]:
    name = max((k for k, v in scores.items() if v is not None), key=lambda k: scores[k])
    return name, scores[name]


PEER_NAMES = {
    "scanpy_leiden": "scanpy Leiden",
    "scanpy_kmeans": "scanpy k-means",
    "scanpy_smoothed": "scanpy PCA, smoothed",
    "graphst": "GraphST",
    "graphst_refined": "GraphST, refined",
    "banksy": "BANKSY",
    "banksy_leiden": "BANKSY, Leiden",
    "novae": "novae",
    "handcrafted_ridge": "colour/texture statistics",
    "handcrafted_ridge_per_section": "colour/texture statistics per section",
    "squidpy_ridge": "squidpy features",
    "stnet": "ST-Net-style CNN",
    "expression PCA + logistic": "PCA + logistic regression",
    "pca": "PCA",
    "pca_zscored": "PCA z-scored per slide",
    "spatialdata": "spatialdata `ImageTilesDataset`",
}
STORM_NAMES = {
    "storm": "zero-shot",
    "storm_adapted": "adapted",
    "storm_zero_shot": "zero-shot",
    "fold_zero_shot": "decoder",
    "fold_finetune": "`fit_head` head",
    "storm_zscored": "z-scored",
    "storm head, shared genes": "head on shared genes",
    "storm_warm_1": "image decoded",
}


def summary_rows() -> list[tuple[str, str, str, tuple[str, float], tuple[str, float], bool]]:
    """(task, anchor, metric, storm's best shipped path, best peer, speed?) per row of the summary."""
    rows = []
    for task, sections, metric in (
        ("Spatial domains, 10 labelled sections", None, "mean ARI"),
        ("Spatial domains, DLPFC 151673 (held out)", ["DLPFC 151673"], "ARI"),
        ("Spatial domains, DLPFC 151510", ["DLPFC 151510"], "ARI"),
    ):
        storm = best({k: domain_ari(k, sections) for k in STORM_DOMAINS})
        peer = best({k: domain_ari(k, sections) for k in PEER_DOMAINS})
        rows.append((task, "spatial-domains", metric, storm, peer, False))
    now, peers = load("panel_breadth.json")["widened"], load("panel_breadth_peers.json")["widened"]
    storm = best({k: now[k]["ari_mean"] for k in ("storm_zero_shot", "storm_adapted")})
    peer = best({k: peers[k]["ari_mean"] for k in ("graphst", "graphst_refined", "banksy", "banksy_leiden")})
    rows.append(("Spatial domains, 151673 with a whole-kit panel", "a-whole-kit-panel", "ARI", storm, peer, False))
    task = "dlpfc_layers"
    contenders = list(next(iter(load("low_label.json")["results"][task]["by_size"].values())))
    storm = best({c: low_label_mean(task, c) for c in contenders if c.startswith("storm")})
    peer = best({c: low_label_mean(task, c) for c in contenders if not c.startswith("storm")})
    metric = "balanced accuracy, mean over label counts"
    rows.append(("Label transfer to another donor (DLPFC)", "few-labels", metric, storm, peer, False))
    r = load(EXPRESSION)
    patient_c = [s for s in r["sections"] if s.startswith("C")]
    storm = best({k: expression_r(k, ["B4"]) for k in (*STORM_FOLDS, "storm_zero_shot")})
    peer = best({k: expression_r(k, ["B4"]) for k in EXPRESSION_PEERS})
    rows.append(
        ("H&E → expression, unseen patient (B4)", "gene-expression-from-the-image", "mean r", storm, peer, False)
    )
    storm = best({k: expression_r(k, patient_c) for k in STORM_FOLDS})
    peer = best({k: expression_r(k, patient_c) for k in EXPRESSION_PEERS})
    rows.append(
        (
            "H&E → expression, patient C, leave one section out",
            "gene-expression-from-the-image",
            "mean r",
            storm,
            peer,
            False,
        )
    )
    recipe = ("fields_head_recipe", expression_r("fields_head_recipe", patient_c))
    rows.append(
        ("… what storm's embeddings add to that head", "gene-expression-from-the-image", "mean r", storm, recipe, False)
    )
    group = load("integration.json")["groups"]["DLPFC 151673 + 151510"]["results"]
    storm = best({k: group[k]["ilisi"] for k in ("storm", "storm_zscored", "storm_integrated") if k in group})
    peer = best({k: group[k]["ilisi"] for k in ("pca", "pca_zscored", "harmony") if k in group})
    rows.append(
        ("Mixing two donors in one embedding (DLPFC)", "several-slides-in-one-embedding", "iLISI", storm, peer, False)
    )
    tiles = {row["key"]: row["spots_per_s"] for row in load("tiling.json")["rows"]}
    storm = ("storm_warm_1", tiles["storm_warm_1"])
    rows.append(
        (
            "Tiling spots of an H&E slide",
            "tiling",
            "spots/s, 1 thread",
            storm,
            ("spatialdata", tiles["spatialdata"]),
            True,
        )
    )
    return rows


def summary(link: str) -> str:
    out = []
    for task, anchor, metric, (storm_key, storm), (peer_key, peer), speed in summary_rows():
        show = grouped if speed else f3
        storm_name = STORM_NAMES.get(storm_key, "")
        peer_name = PEER_NAMES.get(
            peer_key, "same head, statistics only" if peer_key == "fields_head_recipe" else peer_key
        )
        cells = [f"{show(storm)}" + (f" ({storm_name})" if storm_name else ""), f"{show(peer)} ({peer_name})"]
        out.append([f"[{task}]({link}{anchor})", metric, *cells, verdict(storm, peer, speed)])
    note = (
        "storm: its best shipped path (named); best peer: the best contender run outside storm. A difference under "
        f"{TIE} (speeds: a ratio under {TIE_SPEED}) is a tie."
    )
    return block(table(["task", "metric", "storm", "best peer", "verdict"], out, "llrrl"), note)


# ------------------------------------------------------------------------------------------------ suite list
def suites() -> dict[str, str]:
    """Every suite (a module of ``benchmarks/`` not starting with ``_``) and the first line of its docstring."""
    out = {}
    for path in sorted(HERE.glob("[!_]*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        out[path.stem] = doc.splitlines()[0] if doc else ""
    return out


def suite_list() -> str:
    return table(["suite", "what it measures"], ([f"`{k}`", v.replace("|", "\\|")] for k, v in suites().items()), "ll")


# ----------------------------------------------------------------------------------------------------- pages
BLOCKS: dict[str, Callable[[], str]] = {
    "domains": domains,
    "panel-breadth": panel_breadth,
    "adapt-runtime": adapt_runtime,
    "low-label": low_label,
    "integration": integration,
    "expression": expression,
    "pretraining-value": pretraining_value,
    "image-branch": image_branch,
    "encoder-features": encoder_features,
    "risk": risk,
    "orientations": orientations,
    "tiling": tiling,
    "throughput": throughput,
    "scaling": scaling,
    "suites": suite_list,
}


def render_block(name: str, page: str) -> str:
    if name == "summary":
        return summary(PAGES[page])
    if name not in BLOCKS:
        raise KeyError(f"{page}: no renderer for <!-- table:{name} -->; known: summary, {', '.join(BLOCKS)}")
    return BLOCKS[name]()


def render(text: str, page: str) -> str:
    """``text`` with every generated block of ``page`` rendered again from the stored results."""
    return BLOCK.sub(lambda m: f"{m[1]}{render_block(m['name'], page)}\n{m[4]}", text)


def blocks(text: str) -> list[str]:
    return [m["name"] for m in BLOCK.finditer(text)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks report", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a page is out of date")
    args = parser.parse_args(argv)
    stale = []
    for page in PAGES:
        path = ROOT / page
        text = path.read_text()
        new = render(text, page)
        if new == text:
            continue
        changed = [
            n for n, a, b in zip(blocks(text), BLOCK.finditer(text), BLOCK.finditer(new), strict=True) if a[0] != b[0]
        ]
        stale.append(f"{page}: {', '.join(changed)}")
        if not args.check:
            path.write_text(new)
    for line in stale:
        print(("out of date: " if args.check else "rendered: ") + line)
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
