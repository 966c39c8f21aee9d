"""Microns per pixel: from the user, from metadata, or from the spot pitch of a known platform."""

from __future__ import annotations

import numbers
import re
from typing import Any

import numpy as np

from .._constants import METADATA_PLATFORM, PLATFORMS, SCALEFACTOR_UM_PER_PX

#: Angle between the basis vectors of each spot lattice, degrees (Visium: hexagonal; legacy ST, Visium HD: square).
LATTICE_ANGLE = {"hex": 60.0, "square": 90.0}
#: Fewest distinct spot positions to measure the pitch from.
_MIN_PITCH_SPOTS = 8
#: Fewer spots than this must cover at least half the grid positions they span (:func:`_check_sampling`).
_SPARSE_SPOTS = 12
#: Most spots used to measure the pitch (those nearest the middle of the slide): a few thousand fix the lattice.
_PITCH_SPOTS = 1500
#: Most spot pairs used to fit the lattice.
_PITCH_PAIRS = 30_000
#: Reach of the spot pairs that find the lattice, in median nearest-neighbour distances.
_REACH = 12
#: Largest side, in cells, of the grid of pair differences whose Fourier transform finds the lattice.
_GRID = 1024
#: Most peaks of the structure factor tried as the lattice.
_PEAKS = 12
#: A spot pair is on the lattice when it is within this fraction of a pitch of a lattice vector.
_ON_LATTICE_TOL = 0.3
#: Fraction of spot pairs that must be on the fitted lattice.
_MIN_ON_LATTICE = 0.8
#: Largest relative difference between the spot pitch at the metadata's scale and the platform's pitch.
_PITCH_AGREEMENT = 0.15
#: Fewest spot pairs on the lattice for a fit of any linear map (fewer fit only its rotation and size).
_AFFINE_PAIRS = 100
#: Fewest spot pairs a step of the lattice fit uses (so that the jitter of a few spots cannot tilt it).
_MIN_FIT_PAIRS = 30


def grid_pitch(xy: np.ndarray, *, lattice: str = "square") -> float:
    """Centre-to-centre distance of neighbouring spots on a grid (in the units of ``xy``), from a lattice fit.

    The spots may be any subset of the grid (spots outside the tissue or filtered out are missing): the pitch is that of
    the coarsest lattice of the given shape on which the spots lie, up to their jitter, so it does not depend on which
    spots are kept. Candidate lattices come from the peaks of the spots' structure factor (the Fourier transform of
    their pairwise differences); each is fitted by least squares to the pair differences (its rotation and size, and
    from 100 pairs on any linear map, so unequal x/y pixel sizes are allowed: the pitch is that of the square or
    hexagon of the same area). Position jitter (legacy ST arrays) averages out instead of biasing the pitch low, as the
    nearest-neighbour distance does.

    Parameters
    ----------
    xy
        Spot centres, ``(n, 2)``.
    lattice
        ``"hex"`` (Visium) or ``"square"`` (legacy ST, Visium HD bins).

    Returns
    -------
    The pitch.

    Raises
    ------
    ValueError
        When the spots cannot fix it (fewer than 8 distinct positions, all on one line, not on a lattice, or fewer than
        12 spread thinly over it, which a coarser lattice may fit by chance); the message asks for ``um_per_px=``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> grid = np.stack(np.meshgrid(np.arange(30), np.arange(30)), axis=-1).reshape(-1, 2) * 150.0
    >>> round(grid_pitch(grid[rng.random(len(grid)) < 0.1]), 3)  # 10 % of the spots
    150.0
    """
    if lattice not in LATTICE_ANGLE:
        raise ValueError(f"`lattice` must be one of {sorted(LATTICE_ANGLE)}, got {lattice!r}.")
    angle = np.radians(LATTICE_ANGLE[lattice])
    xy = _pitch_patch(np.asarray(xy, dtype=float))
    step, typical = _spacings(xy)
    diffs = _pair_differences(xy, _REACH * typical)
    peaks = _reciprocal_peaks(diffs, step, typical, angle)
    fits = [_fit_basis(diffs, _basis_from_peak(k, angle), angle, typical) for k in peaks]
    fits = [basis for basis in fits if basis is not None]
    if not fits:
        raise ValueError(
            f"The {len(xy)} spots do not lie on a {lattice} lattice (or too few of them to see one), so the spot pitch "
            "cannot be measured; pass `um_per_px=` (microns per pixel of the full-resolution image)."
        )
    pitch = _pitch_of(_coarsest_fit(diffs, fits, angle), angle)
    _check_sampling(xy, pitch, angle)
    return pitch


def _pitch_patch(xy: np.ndarray) -> np.ndarray:
    """Distinct spot positions among the ``_PITCH_SPOTS`` spots nearest the median position."""
    if len(xy) > _PITCH_SPOTS:
        xy = xy[np.argpartition(((xy - np.median(xy, axis=0)) ** 2).sum(axis=1), _PITCH_SPOTS)[:_PITCH_SPOTS]]
    return np.unique(xy, axis=0)


def _spacings(xy: np.ndarray) -> tuple[float, float]:
    """5th percentile and median of the nearest-neighbour distances; an error if the spots span no plane."""
    from scipy.spatial import cKDTree

    if len(xy) < _MIN_PITCH_SPOTS:
        raise ValueError(
            f"The spots have {len(xy)} distinct position(s); at least {_MIN_PITCH_SPOTS}, not on one line, are needed "
            "to measure the spot pitch (a lattice fits fewer by chance). Pass `um_per_px=` (microns per pixel of the "
            "full-resolution image)."
        )
    step, typical = np.quantile(cKDTree(xy).query(xy, k=2)[0][:, 1], [0.05, 0.5])
    spread = np.linalg.svd(xy - xy.mean(axis=0), compute_uv=False) / np.sqrt(len(xy))
    if spread[1] < step / 4:
        raise ValueError(
            f"The {len(xy)} spots lie on one line, which does not fix the spot lattice, so the spot pitch cannot be "
            "measured. Pass `um_per_px=` (microns per pixel of the full-resolution image)."
        )
    return float(step), float(typical)


def _pair_differences(xy: np.ndarray, reach: float) -> np.ndarray:
    """Differences between pairs of spots (``(m, 2)``, one sign): all pairs within reach, or a random sample of them.

    The sample is uniform (not the shortest pairs): a cut by measured length would keep the pairs that jitter made
    shorter and bias the pitch low. Few spots keep all their pairs, however far apart.
    """
    from scipy.spatial import cKDTree

    pairs_per_area = len(xy) ** 2 / 2 / max(float(np.prod(np.ptp(xy, axis=0))), reach**2 / 100)
    radius = max(np.sqrt(_PITCH_PAIRS / pairs_per_area / np.pi), reach)
    pairs = cKDTree(xy).query_pairs(radius, output_type="ndarray")
    if len(pairs) > _PITCH_PAIRS:
        pairs = pairs[np.random.default_rng(0).choice(len(pairs), _PITCH_PAIRS, replace=False)]
    return xy[pairs[:, 1]] - xy[pairs[:, 0]]


def _reciprocal_peaks(diffs: np.ndarray, step: float, typical: float, angle: float) -> list[np.ndarray]:
    """Candidate shortest reciprocal lattice vectors: the strongest peaks of the structure factor.

    The structure factor (the mean of ``cos(k . d)`` over the pair differences ``d`` within ``_REACH * typical``,
    binned on a periodic grid of 512 to ``_GRID`` cells of at most ``step / 8``) is searched for lattices with a pitch
    between ``step / 3`` and ``1.3 * typical``; peaks of at least half the strongest are kept, one per lattice.
    """
    from scipy.ndimage import maximum_filter

    reach = _REACH * typical
    near = diffs[np.hypot(diffs[:, 0], diffs[:, 1]) <= reach]
    size = int(2 ** np.clip(np.ceil(np.log2(2.5 * reach / (step / 8))), 9, np.log2(_GRID)))
    h = max(step / 8, 2.5 * reach / size)  # differences of either sign fill at most 80 % of the grid: no wrapping
    cells = np.rint(near / h).astype(int) % size
    counts = np.bincount(cells[:, 1] * size + cells[:, 0], minlength=size**2).reshape(size, size)
    power = np.fft.fft2(counts).real / max(len(near), 1)
    k = np.fft.fftfreq(size, d=h) * 2 * np.pi
    kx, ky = np.meshgrid(k, k)
    length = np.hypot(kx, ky)
    longest = min(2 * np.pi / (np.sin(angle) * step / 3), 0.9 * np.pi / h)
    band = (length >= 2 * np.pi / (1.3 * typical)) & (length <= longest) & ((ky > 0) | ((ky == 0) & (kx > 0)))
    power = np.where(band, power, -np.inf)
    peaks = band & (power == maximum_filter(power, size=3, mode="wrap"))
    peaks &= power >= 0.5 * power[band].max()
    distinct: list[np.ndarray] = []
    for vector in np.column_stack([kx[peaks], ky[peaks]])[np.argsort(-power[peaks], kind="stable")]:
        if len(distinct) < _PEAKS and not any(_same_lattice(vector, other, angle) for other in distinct):
            distinct.append(vector)
    return distinct


def _same_lattice(k1: np.ndarray, k2: np.ndarray, angle: float) -> bool:
    """Whether two peaks are the same lattice: equally long (within 3 %), turned by a multiple of ``angle`` (2°)."""
    turn = np.arctan2(k1[0] * k2[1] - k1[1] * k2[0], k1 @ k2) % angle
    return abs(np.log(np.hypot(*k1) / np.hypot(*k2))) < 0.03 and min(turn, angle - turn) < np.radians(2)


def _basis_from_peak(k1: np.ndarray, angle: float) -> np.ndarray:
    """Real-space lattice basis (columns) whose reciprocal basis is ``k1`` and ``k1`` rotated by ``angle``."""
    c, s = np.cos(angle), np.sin(angle)
    k2 = np.array([c * k1[0] - s * k1[1], s * k1[0] + c * k1[1]])
    return 2 * np.pi * np.linalg.inv(np.vstack([k1, k2]))


def _fit_basis(diffs: np.ndarray, basis: np.ndarray, angle: float, typical: float) -> np.ndarray | None:
    """The lattice basis fitted to the pair differences, using longer and longer pairs.

    Each difference is assigned the nearest lattice vector of the current basis; those within ``_ON_LATTICE_TOL``
    pitches refit the basis by least squares (:func:`_refit`). ``None`` when fewer than ``_MIN_ON_LATTICE`` of all pairs
    end on the lattice.
    """
    length = np.hypot(diffs[:, 0], diffs[:, 1])
    for radius in (3 * typical, 6 * typical, 12 * typical, 24 * typical, np.inf):
        use = diffs[length <= radius]
        if len(use) < min(_MIN_FIT_PAIRS, len(diffs)):
            continue
        index = np.rint(np.linalg.solve(basis, use.T)).T
        on = np.hypot(*(use - index @ basis.T).T) <= _ON_LATTICE_TOL * _pitch_of(basis, angle)
        if not index[on].any():
            return None
        basis = _refit(index[on], use[on], basis)
        if radius >= length.max():
            break
    return basis if on.mean() >= _MIN_ON_LATTICE else None


def _refit(index: np.ndarray, diffs: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Least-squares basis for differences at lattice coordinates ``index``.

    From ``_AFFINE_PAIRS`` pairs on, any linear map (unequal x/y pixel sizes and shear included); from fewer, only the
    rotation and size of ``basis`` (its square or hexagonal shape kept), so that a few jittered spots cannot shear it.
    """
    if len(diffs) >= _AFFINE_PAIRS and np.linalg.matrix_rank(index) == 2:
        return np.linalg.lstsq(index, diffs, rcond=None)[0].T
    model = (index @ basis.T) @ np.array([1, 1j])
    turn = np.vdot(model, diffs @ np.array([1, 1j])) / np.vdot(model, model)
    return np.array([[turn.real, -turn.imag], [turn.imag, turn.real]]) @ basis


def _coarsest_fit(diffs: np.ndarray, fits: list[np.ndarray], angle: float) -> np.ndarray:
    """The coarsest lattice about as close to the spot pairs, relative to its pitch, as the closest one.

    Every finer lattice containing the true one fits the pairs too, but with a residual (the spots' jitter) that is a
    larger fraction of its pitch; a coarse lattice fits a few spots only by chance, with residuals of a good fraction of
    its pitch.
    """
    relative = np.array([_rms(diffs - _nearest_vectors(diffs, b)) / _pitch_of(b, angle) for b in fits])
    close = np.flatnonzero(relative <= 1.3 * relative.min() + 0.01)  # + 0.01: spots on exact (or rounded) positions
    return fits[int(close[np.argmax([abs(np.linalg.det(fits[i])) for i in close])])]


def _rms(vectors: np.ndarray) -> float:
    """Root mean square length of ``(n, 2)`` vectors."""
    return float(np.sqrt(np.mean(np.sum(vectors**2, axis=1))))


def _nearest_vectors(diffs: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """The lattice vector of ``basis`` nearest each difference (rounded lattice coordinates)."""
    return np.rint(np.linalg.solve(basis, diffs.T)).T @ basis.T


def _pitch_of(basis: np.ndarray, angle: float) -> float:
    """Pitch of the square or hexagonal lattice with the same cell area as ``basis``."""
    return float(np.sqrt(abs(np.linalg.det(basis)) / np.sin(angle)))


def _check_sampling(xy: np.ndarray, pitch: float, angle: float) -> None:
    """Refuse a pitch from fewer than ``_SPARSE_SPOTS`` spots on under half the grid positions they span.

    So few spots, spread thinly, may all lie on a coarser sub-lattice by chance.
    """
    from scipy.spatial import ConvexHull

    occupied = len(xy) * pitch**2 * np.sin(angle) / ConvexHull(xy).volume
    if len(xy) < _SPARSE_SPOTS and occupied < 0.5:
        raise ValueError(
            f"Only {len(xy)} spots, spread over about {len(xy) / occupied:.0f} grid positions: too sparse to know the "
            "spot pitch. Pass `um_per_px=` (microns per pixel of the full-resolution image)."
        )


def spatial_metadata(table: Any, shapes_key: str) -> dict[str, Any]:
    """The squidpy-style ``uns["spatial"][library_id]`` entry of a table, or ``{}``."""
    spatial = table.uns.get("spatial")
    if not isinstance(spatial, dict) or not spatial:
        return {}
    if len(spatial) == 1:
        return dict(next(iter(spatial.values())))
    return dict(spatial.get(shapes_key, {}))


def detect_platform(meta: dict[str, Any], image_key: str | None, shapes_key: str) -> str | None:
    """Platform named in metadata, or recognised from spatialdata-io's element names; ``None`` when unknown."""
    named = meta.get("metadata", {}).get(METADATA_PLATFORM) if isinstance(meta.get("metadata"), dict) else None
    if named:
        return str(named)
    hd = re.search(r"square_(\d{3})um", shapes_key)
    if hd:
        return f"visium_hd_{hd.group(1)}um"
    if re.search(r"_(cell|nucleus)_segmentations$", shapes_key):
        return None  # Visium HD cells: not on a grid, and the reader keeps no µm per pixel; ask for um_per_px
    if "fiducial_diameter_fullres" in meta.get("scalefactors", {}):
        return "visium"
    if image_key is not None and re.search(r"_(hires|lowres|full)_image$", image_key):
        return "visium"
    if shapes_key in {"cell_circles", "cell_boundaries", "nucleus_boundaries", "cell_labels", "nucleus_labels"} or (
        image_key is not None and image_key.startswith("morphology")
    ):
        return "xenium"
    if re.fullmatch(r"\d+_labels", shapes_key) or (image_key is not None and re.fullmatch(r"\d+_image", image_key)):
        return "cosmx"  # spatialdata-io's cosmx reader: one "<fov>_image" and "<fov>_labels" per field of view
    return None


def resolve_um_per_px(
    *,
    um_per_px: float | None,
    platform: str | None,
    meta: dict[str, Any],
    image_key: str | None,
    shapes_key: str,
    spot_xy_px: np.ndarray,
    px_per_shape_unit: float,
    cs_per_px: float,
) -> tuple[float, str]:
    """Microns per level-0 pixel and a sentence saying where it came from.

    Order: the ``um_per_px`` argument; ``scalefactors["microns_per_pixel"]`` in ``uns["spatial"]`` (µm per unit of the
    spot coordinates, as Space Ranger writes it), checked against the spot pitch when the platform is known; the
    platform (argument, metadata, or spatialdata-io element names) with its spot pitch measured on the spots or its
    fixed unit size. Otherwise an error: the scale is never guessed.
    """
    if um_per_px is not None:
        return check_um_per_px(um_per_px), "argument um_per_px"
    scalefactors = meta.get("scalefactors", {})
    found = platform or detect_platform(meta, image_key, shapes_key)
    if platform is None and SCALEFACTOR_UM_PER_PX in scalefactors:
        value = _metadata_scale(scalefactors[SCALEFACTOR_UM_PER_PX]) / px_per_shape_unit
        _check_pitch_agrees(value, found, spot_xy_px, image_key)
        return value, f"metadata uns['spatial'][...]['scalefactors']['{SCALEFACTOR_UM_PER_PX}']"
    if found is None:
        raise ValueError(
            "The physical scale of this slide is unknown: no `microns_per_pixel` in uns['spatial'][...]['scalefactors'] "
            "and no known platform. Pass `um_per_px=` (microns per pixel of the full-resolution image) or "
            f"`platform=` (one of {sorted(PLATFORMS)})."
        )
    if found not in PLATFORMS:
        raise ValueError(f"`platform={found!r}` is not known; use one of {sorted(PLATFORMS)} or pass `um_per_px=`.")
    spec = PLATFORMS[found]
    if "um_per_unit" in spec:
        return spec["um_per_unit"] * cs_per_px, f"platform {found!r}: {spec['um_per_unit']} µm per coordinate unit"
    pitch_px = grid_pitch(spot_xy_px, lattice=platform_lattice(found))
    return spec["pitch_um"] / pitch_px, f"platform {found!r}: spot pitch {spec['pitch_um']:g} µm = {pitch_px:.2f} px"


def check_um_per_px(um_per_px: Any) -> float:
    """``um_per_px`` as a float; an error unless it is a positive, finite number (a NumPy scalar is fine)."""
    if isinstance(um_per_px, bool) or not isinstance(um_per_px, numbers.Real):
        raise TypeError(
            f"`um_per_px` must be a number of microns per pixel (e.g. 0.5), got {um_per_px!r} of type "
            f"{type(um_per_px).__name__}; pass `um_per_px=float(...)`."
        )
    if not np.isfinite(um_per_px) or um_per_px <= 0:
        raise ValueError(f"`um_per_px` must be a positive number of microns per pixel, got {um_per_px!r}.")
    return float(um_per_px)


def platform_lattice(platform: str) -> str:
    """Shape of a platform's spot grid: ``"hex"`` for Visium, ``"square"`` for legacy ST and Visium HD bins."""
    return "hex" if platform == "visium" else "square"


def _metadata_scale(value: Any) -> float:
    where = f"uns['spatial'][...]['scalefactors']['{SCALEFACTOR_UM_PER_PX}']"
    try:
        scale = float(value)
    except (TypeError, ValueError):
        scale = float("nan")
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(
            f"The slide's metadata {where} is {value!r}, not a positive number of microns per pixel; fix it or pass "
            "`um_per_px=`."
        )
    return scale


def _check_pitch_agrees(um_per_px: float, platform: str | None, spot_xy_px: np.ndarray, image_key: str | None) -> None:
    """Refuse a metadata scale that puts the spots of a known platform at a wrong pitch (coordinates in wrong units).

    Silent when the platform has no spot pitch or the spots cannot fix it (too sparse, one line).
    """
    pitch_um = PLATFORMS.get(platform or "", {}).get("pitch_um")
    if pitch_um is None:
        return
    try:
        pitch_px = grid_pitch(spot_xy_px, lattice=platform_lattice(platform))
    except ValueError:
        return
    if abs(pitch_px * um_per_px / pitch_um - 1) > _PITCH_AGREEMENT:
        raise ValueError(
            f"The spots are {pitch_px:.4g} px apart on image {image_key!r}, which at the metadata's {um_per_px:.4g} µm "
            f"per px is {pitch_px * um_per_px:.4g} µm, but the spots of platform {platform!r} are {pitch_um:g} µm "
            "apart. The spot coordinates are probably not in pixels of this image (µm, or pixels of another image "
            "level): transform them to the image's pixels, or pass `um_per_px=` (or `platform=`) if the metadata is "
            "wrong."
        )
