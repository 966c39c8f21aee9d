"""The pretraining loop: one CPU, one GPU, or many GPUs/nodes under ``torchrun`` (DDP)."""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._compute import autocast, cpu_name
from .._logging import logger
from .._settings import settings
from ..models import StormModel
from ._config import TrainConfig
from ._distributed import DistInfo, setup, teardown
from ._schedule import warmup_cosine
from ._state import latest_resume_point, load_state, restore_rng, rng_state, save_resume_point

#: The final losses of the model card are means over this many last steps (single steps are noisy).
_FINAL_LOSS_STEPS = 200


class Trainer:
    """Pretrain a :class:`~storm.models.StormModel` on a :class:`~storm.data.Corpus`.

    Two stages as in STORM: ``warmup_stage_steps`` of modality-specific training (masked gene and masked image
    modelling on unimodal passes), then joint multimodal training with all objectives. AdamW with linear warm-up and
    cosine decay, gradient accumulation, mixed precision on GPU, gradient clipping, per-objective losses in
    ``losses.csv`` (and TensorBoard when installed), resume points every ``checkpoint_every`` steps that restore model,
    optimiser, schedule, RNG and data position exactly. Under ``torchrun`` each process trains on its own shard of the
    batches (DDP; gloo on CPU, NCCL on GPU).
    """

    def __init__(self, corpus: Any, config: TrainConfig, *, model: StormModel | None = None) -> None:
        from ..data import Augment, NicheBatchSampler, NicheDataset, TissueCrops
        from ._objectives import ObjectiveWeights, StormObjectives

        self.config = config
        self.corpus = corpus
        self.dist: DistInfo = setup(settings.device)
        torch.manual_seed(config.seed)
        logger.info("training corpus:\n%r", corpus)
        if model is not None:
            corpus.check_model(model)
        if model is None:
            model = StormModel(config.model_config(), vocab=corpus.vocab)
            if model.config.image_encoder is not None:  # tie the model to the encoder weights its features came from
                model.config.image_encoder_sha256 = corpus.encoder_sha256
            if model.config.expression_target == "standardised":
                model.set_expression_reference(*corpus.expression_reference())
        self.model = model
        self.model.to(self.dist.device)
        augment = None if config.augment is None else Augment(**config.augment)
        crops = None
        if config.crops_per_batch:
            crops = TissueCrops(
                config.crops_per_batch,
                tile_px=self.model.config.image_size,
                tile_um=self.model.config.tile_um,
                context=config.crop_context,
            )
        weights = ObjectiveWeights(**config.objectives)
        # niche tiles are read only when an objective looks at them (task="image" adaptation learns from crops alone)
        niche_images = any(getattr(weights, name) > 0 for name in weights.names() if name not in _WITHOUT_NICHE_IMAGES)
        self.dataset = NicheDataset(corpus, augment=augment, seed=config.seed, crops=crops, read_tiles=niche_images)
        self.sampler = NicheBatchSampler(
            self.dataset,
            config.batch_size,
            shuffle=True,
            seed=config.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            repeats=[config.image_repeats if slide.has_image else 1 for slide in corpus.slides],
        )
        self.objectives = StormObjectives(weights, model=self.model, denoising_target=config.denoising_target).to(
            self.dist.device
        )
        self.optimizer = torch.optim.AdamW(
            [*self.model.parameters(), *self.objectives.parameters()], lr=config.lr, weight_decay=config.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: warmup_cosine(
                s, warmup=config.lr_warmup_steps, total=config.max_steps, min_ratio=config.min_lr_ratio
            ),
        )
        self.generator = np.random.default_rng(config.seed)
        self.step = 0
        self._consumed = 0
        self.epoch = 0
        self.elapsed = 0.0
        self.output_dir = Path(config.output_dir)
        self._step_module = _TrainingStep(self.model, self.objectives)
        self._net: torch.nn.Module = self._step_module
        if self.dist.world_size > 1:
            # The objectives run several passes of the model per step: DDP wraps them together as one forward.
            self._net = torch.nn.parallel.DistributedDataParallel(
                self._step_module,
                device_ids=[self.dist.device.index] if self.dist.device.type == "cuda" else None,
                find_unused_parameters=True,
            )

    def _autocast(self):
        return autocast(self.config.precision, self.dist.device)

    def stage(self, step: int) -> str:
        """``"warmup"`` (modality-specific) for the first ``warmup_stage_steps`` steps, then ``"joint"``."""
        return "warmup" if step < self.config.warmup_stage_steps else "joint"

    def resume(self, path: str | Path | None = None) -> bool:
        """Restore the latest (or the given) resume point; returns whether one was found."""
        from safetensors.torch import load_file

        folder = Path(path) if path is not None else latest_resume_point(self.output_dir / "checkpoints")
        if folder is None:
            return False
        state = load_state(folder)
        self.model.load_state_dict(load_file(folder / "model.safetensors"), strict=True)
        self.objectives.load_state_dict(state["objectives"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        restore_rng(state["rng"], self.generator)
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.elapsed = float(state.get("elapsed", 0.0))
        logger.info("resumed from %s at step %d", folder, self.step)
        return True

    def fit(self, *, resume: bool = True, until: int | None = None, label: str = "pretrain") -> StormModel:
        """Train until ``max_steps``; writes ``output_dir/model`` (the final checkpoint) and returns the model.

        ``until`` stops earlier, at that step, after writing a resume point (for time-boxed jobs: the next ``fit``
        continues exactly where this one stopped). ``label`` names the run on the progress bar.
        """
        with _deterministic_kernels(self.config.deterministic and self.dist.device.type == "cpu"):
            return self._fit(resume, until, label)

    def _fit(self, resume: bool, until: int | None, label: str) -> StormModel:
        cfg = self.config
        if resume:
            self.resume()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        fields = ["total", *self.objectives.names]
        log = _LossLog(self.output_dir / "losses.csv", self.step, fields) if self.dist.is_main else None
        self.model.train()
        self._fit_started = time.perf_counter()
        batches = self._batches()
        progress = _progress(cfg.max_steps, self.step, self.dist.is_main, label)
        stop = cfg.max_steps if until is None else min(until, cfg.max_steps)
        while self.step < stop:
            stage = self.stage(self.step)
            self.optimizer.zero_grad(set_to_none=True)
            sums: dict[str, list[float]] = {}
            for _ in range(cfg.grad_accum):
                batch = next(batches)
                gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.step)
                with self._autocast():
                    loss, parts = self._net(batch, stage, gen)
                (loss / cfg.grad_accum).backward()
                for k, v in parts.items():
                    sums.setdefault(k, []).append(float(v))
            # each objective's mean over the micro-batches that computed it; absent ones stay empty in losses.csv
            totals = {k: sum(v) / len(v) for k, v in sums.items()}
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(self._step_module.parameters(), cfg.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            if log is not None:
                log.write(self.step, {"stage": stage, "lr": self.scheduler.get_last_lr()[0], **totals})
            if progress is not None:
                progress.update(1)
                if self.step % cfg.log_every == 0:
                    progress.set_postfix(loss=f"{totals.get('total', float('nan')):.4f}", stage=stage)
            if self.step % cfg.checkpoint_every == 0 and self.step < stop:
                self._save_resume_point()
        if progress is not None:
            progress.close()
        if self.step < cfg.max_steps:
            self._save_resume_point()
        elif self.dist.is_main:
            self._save_final(log)
        if self.dist.world_size > 1:
            torch.distributed.barrier()
        teardown()
        self.model.eval()
        return self.model

    def _batches(self) -> Iterator[Any]:
        """Endless micro-batches on the device: epochs of the sampler, reshuffled per epoch, resumable mid-epoch.

        ``self._consumed`` counts the batches of the epoch used so far (reader processes run ahead of it), so a resume
        point restarts at the next batch not yet trained on.
        """
        from ..data import NicheLoader

        while True:
            self.sampler.set_epoch(self.epoch)
            self._consumed = int(self.sampler.state_dict()["position"])
            loader = NicheLoader(
                self.dataset, self.sampler, device=self.dist.device, num_workers=self.config.num_workers
            )
            for batch in loader:
                self._consumed += 1
                yield batch
            self.epoch += 1

    def _training_seconds(self) -> float:
        """Wall time of training so far, over this ``fit`` and the runs it resumed."""
        return self.elapsed + time.perf_counter() - self._fit_started

    def _save_resume_point(self) -> None:
        if not self.dist.is_main:
            return
        state = {
            "step": self.step,
            "epoch": self.epoch,
            "elapsed": self._training_seconds(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "objectives": self.objectives.state_dict(),
            "sampler": self.sampler.state_dict(consumed=self._consumed),
            "rng": rng_state(self.generator),
            "config": self.config.to_dict(),
        }
        save_resume_point(self.output_dir / "checkpoints" / f"step_{self.step:07d}", self.model, state)

    def _save_final(self, log: _LossLog | None) -> None:
        """The final checkpoint, with its model card, and the same facts as ``output_dir/training.json``."""
        seconds = self._training_seconds()
        niches = self.step * self.config.batch_size * self.config.grad_accum * self.dist.world_size
        summary = {
            "data": self.corpus.stats(),
            "steps": self.step,
            "time": {
                "seconds": round(seconds, 1),
                "niches_per_second": round(niches / max(seconds, 1e-9), 2),
            },
            "hardware": {"device": _device_name(self.dist.device), "processes": self.dist.world_size},
            "losses": {} if log is None else log.recent_means(_FINAL_LOSS_STEPS),
            "training": dataclasses.asdict(self.config),
        }
        self.model.save_pretrained(self.output_dir / "model", **summary)
        (self.output_dir / "training.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")


#: Objectives that never look at the niches' tiles.
_WITHOUT_NICHE_IMAGES = ("masked_gene", "niche_denoising", "image_views")


class _TrainingStep(torch.nn.Module):
    """Model and objectives as one module, so DDP sees one forward per step however many passes the objectives run."""

    def __init__(self, model: StormModel, objectives: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.objectives = objectives

    def forward(self, batch: dict[str, Any], stage: str, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        """Total loss and its named parts."""
        return self.objectives(self.model, batch, stage=stage, generator=generator)


class _LossLog:
    """``losses.csv``: one row per step, fixed columns; rows past the resume step are dropped so a resumed log is exact."""

    def __init__(self, path: Path, start_step: int, fields: list[str]) -> None:
        self.path = path
        self.fields = ["step", "stage", "lr", *fields]
        kept: list[dict[str, Any]] = []
        if path.exists():
            with path.open() as handle:
                kept = [r for r in csv.DictReader(handle) if int(r["step"]) <= start_step]
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(kept)
        self.writer = _tensorboard(path.parent)

    def recent_means(self, n: int) -> dict[str, float]:
        """Mean of each loss over the last ``n`` steps that logged it (an objective is absent from some steps)."""
        with self.path.open() as handle:
            rows = list(csv.DictReader(handle))[-n:]
        means = {}
        for name in self.fields[3:]:
            values = [float(r[name]) for r in rows if r.get(name) not in (None, "")]
            if values:
                means[name] = round(float(np.mean(values)), 5)
        return means

    def write(self, step: int, values: dict[str, Any]) -> None:
        with self.path.open("a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=self.fields, extrasaction="ignore").writerow({"step": step, **values})
        if self.writer is not None:
            for k, v in values.items():
                if isinstance(v, float):
                    self.writer.add_scalar("lr" if k == "lr" else f"loss/{k}", v, step)


@contextmanager
def _deterministic_kernels(enabled: bool) -> Iterator[None]:
    """Deterministic kernels while training, then the caller's setting back.

    On CPU, multi-threaded gradient accumulation (the backward pass of indexing) otherwise sums in varying order, so
    two runs differ in the last bits after a few steps; the deterministic kernels cost no measurable time there.
    """
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()}, {torch.get_num_threads()} threads"


def _tensorboard(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(folder / "tensorboard"))


def _progress(total: int, start: int, show: bool, label: str):
    if not (show and settings.progress):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc=label, unit="step")
