"""Every key storm reads or writes in AnnData / SpatialData objects, in one place."""

from __future__ import annotations

#: ``uns`` key under which storm records parameters of every step.
UNS_KEY = "storm"
#: ``uns[UNS_KEY]`` sub-key holding the tiling geometry.
UNS_TILES = "tiles"
#: ``uns[UNS_KEY]`` sub-key holding the parameters of :func:`storm.pp.tissue_grid`.
UNS_TISSUE_GRID = "tissue_grid"
#: ``uns`` key of a table of pathology-encoder features that storm wrote: the encoder, its weights' hash, the geometry.
UNS_FEATURES = "storm_features"
#: ``obs`` column flagging spots whose tile reaches past the image border (filled with white).
OBS_TILE_PADDED = "storm_tile_padded"
#: ``obsm`` key for embeddings (joint, image branch, gene branch).
OBSM_EMBEDDING = "X_storm"
OBSM_EMBEDDING_IMAGE = "X_storm_image"
OBSM_EMBEDDING_GENE = "X_storm_gene"
#: ``obsm`` key of the embedding of several slides with what differs between batches removed (``st.tl.integrate``).
OBSM_INTEGRATED = "X_storm_integrated"
#: ``layers`` key for predicted expression.
LAYER_PREDICTED = "storm_predicted"
#: ``obs`` keys for domains and risk.
OBS_DOMAIN = "storm_domain"
OBS_RISK = "storm_risk"
#: ``obs`` column marking pseudo-spots created by :func:`storm.pp.tissue_grid`.
OBS_IN_TISSUE = "in_tissue"

#: Where storm's readers and :func:`storm.io.from_anndata` record microns per pixel of the spot coordinate frame,
#: following Space Ranger's ``scalefactors_json.json`` (``uns["spatial"][library_id]["scalefactors"]``).
SCALEFACTOR_UM_PER_PX = "microns_per_pixel"
SCALEFACTOR_SPOT_DIAMETER = "spot_diameter_fullres"
SCALEFACTOR_HIRES = "tissue_hires_scalef"
SCALEFACTOR_LOWRES = "tissue_lowres_scalef"
#: ``uns["spatial"][library_id]["metadata"]`` key naming the platform (see ``PLATFORMS``).
METADATA_PLATFORM = "platform"

#: Known platforms. ``pitch_um``: centre-to-centre distance of neighbouring spots, used to derive µm per pixel from the
#: spot grid. ``um_per_unit``: fixed size of one coordinate unit when the platform defines it (Xenium's morphology
#: pixel), used when no other metadata is present. ``spot_um``: spot (bin) diameter.
PLATFORMS: dict[str, dict[str, float]] = {
    "visium": {"pitch_um": 100.0, "spot_um": 55.0},
    "st": {"pitch_um": 200.0, "spot_um": 100.0},
    "visium_hd_002um": {"pitch_um": 2.0, "spot_um": 2.0},
    "visium_hd_008um": {"pitch_um": 8.0, "spot_um": 8.0},
    "visium_hd_016um": {"pitch_um": 16.0, "spot_um": 16.0},
    "xenium": {"um_per_unit": 0.2125},
    #: NanoString CosMx SMI: 0.12028 µm per pixel of the FOV images (``CenterX_local_px`` etc.).
    "cosmx": {"um_per_unit": 0.12028},
}
