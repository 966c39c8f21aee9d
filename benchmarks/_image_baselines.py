"""Image-only baselines for H&E -> expression: squidpy's image features, and an ST-Net-style CNN trained end to end.

* :func:`squidpy_features`: ``squidpy.im.calculate_image_features`` (summary, histogram and texture features) of a
  crop of the model's tile size around each spot, read from the full-resolution H&E, with the mean over the spot's
  niche (as for the hand-crafted features).
* :func:`stnet_predict`: the ST-Net recipe (He et al., 2020): a DenseNet-121 (torchvision, ``weights=None``: no
  pretrained weights may be downloaded here) whose classifier is replaced by a linear layer to the genes, trained with
  mean squared error on per-gene standardised log1p(CP10k) of the training spots' tiles, with random dihedral
  augmentation; prediction averages the four rotations of each held-out tile.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import storm as st
from storm.io import resolve

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def squidpy_features(sdata: Any, config: Any, neighbours: np.ndarray, n_jobs: int = 2) -> np.ndarray:
    """squidpy summary/histogram/texture features of each spot's ``config.tile_um`` crop, with its niche mean."""
    import anndata as ad
    import squidpy as sq

    from storm.tl._morphology import niche_mean

    slide = resolve(sdata)
    pixels = np.moveaxis(np.asarray(slide.levels[0].data), 0, -1)  # (y, x, c) at full resolution
    diameter_px = config.tile_um / slide.um_per_px
    adata = ad.AnnData(np.zeros((len(slide.obs_names), 1), dtype=np.float32))
    adata.obs_names = [str(n) for n in slide.obs_names]
    adata.obsm["spatial"] = slide.spot_xy_px.astype(np.float64)
    adata.uns["spatial"] = {"he": {"scalefactors": {"spot_diameter_fullres": diameter_px}}}
    img = sq.im.ImageContainer(pixels, layer="image", library_id="he")
    features = sq.im.calculate_image_features(
        adata,
        img,
        layer="image",
        library_id="he",
        features=["summary", "histogram", "texture"],
        n_jobs=n_jobs,
        show_progress_bar=False,
        copy=True,
    )
    per_spot = np.nan_to_num(features.to_numpy(dtype=np.float64))
    return niche_mean(per_spot, neighbours)


def tiles_of(sdata: Any, tile_px: int, tile_um: float) -> np.ndarray:
    """(n, tile_px, tile_px, 3) uint8 tiles in :func:`storm.io.resolve` spot order."""
    ts = st.pp.tile(sdata, tile_px=tile_px, tile_um=tile_um)
    return ts.read(np.arange(len(ts)))


def _to_tensor(tiles: np.ndarray) -> Any:
    import torch

    x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def stnet_predict(
    train_tiles: np.ndarray,
    train_y: np.ndarray,
    test_tiles: np.ndarray,
    *,
    epochs: int,
    batch_size: int = 32,
    lr: float = 3e-4,
    seed: int = 0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Train a DenseNet-121 from scratch on (tiles, expression) and predict the test tiles' expression."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    mean, std = train_y.mean(0), train_y.std(0) + 1e-6
    target = torch.from_numpy(((train_y - mean) / std).astype(np.float32))
    net = torchvision.models.densenet121(weights=None)
    net.classifier = torch.nn.Linear(net.classifier.in_features, train_y.shape[1])
    optimiser = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    losses = []
    for _ in range(epochs):
        net.train()
        order = rng.permutation(len(train_tiles))
        total = 0.0
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            if len(idx) < 2:  # batch norm needs two samples
                continue
            x = _to_tensor(train_tiles[idx])
            x = torch.rot90(x, int(rng.integers(4)), dims=(2, 3))
            if rng.random() < 0.5:
                x = torch.flip(x, dims=(3,))
            loss = torch.nn.functional.mse_loss(net(x), target[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(idx)
        losses.append(round(total / len(order), 4))
    net.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(test_tiles), batch_size):
            x = _to_tensor(test_tiles[start : start + batch_size])
            out.append(torch.stack([net(torch.rot90(x, k, dims=(2, 3))) for k in range(4)]).mean(0).numpy())
    return np.concatenate(out) * std + mean, {"train_loss_per_epoch": losses}
