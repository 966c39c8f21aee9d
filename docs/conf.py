"""Sphinx configuration for storm's documentation (built with ``sphinx-build -W -n docs docs/_build``)."""

from __future__ import annotations

from importlib.metadata import version as _version

project = "storm"
author = "storm developers"
copyright = "2026, storm developers"
release = _version("storm-st")

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
]
templates_path = ["_templates"]
autosummary_generate = True
autodoc_member_order = "groupwise"
autodoc_typehints = "description"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False

# The tutorials (docs/tutorials links to ../tutorials) are stored with their outputs; CI executes them separately
# (tests/test_tutorials.py), so the docs build never needs data or a kernel.
nb_execution_mode = "off"
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3
html_theme = "sphinx_book_theme"
html_title = "storm"
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

# Nitpicky, but CI builds offline (no intersphinx inventories): types of other packages are not cross-referenced.
nitpicky = True
_EXTERNAL = (
    "anndata",
    "AnnData",
    "spatialdata",
    "SpatialData",
    "xarray",
    "DataTree",
    "dask",
    "da",
    "sparse",
    "numpy",
    "np",
    "pandas",
    "pd",
    "torch",
    "nn",
    "matplotlib",
    "Axes",
    "Figure",
    "scipy",
    "geopandas",
    "os",
    "pathlib",
    "Path",
    "collections",
    "typing",
    "Sequence",
    "Iterator",
    "Iterable",
    "Mapping",
    "Callable",
    "Any",
    "optional",
)
nitpick_ignore_regex = [
    (r"py:.*", rf"({'|'.join(_EXTERNAL)})(\..*)?"),
    (r"py:class", r"(int|float|str|bool|dict|list|tuple|None|bytes|object)(\[.*\])?"),
]
# Annotations written inside private modules (``storm.pp._tileset.TileBatch``, or a bare ``ImageLevel``) name objects
# that the API pages document under their public namespace (``storm.pp.TileBatch``): resolve them there.
nitpick_ignore = [("py:class", "Source")]  # the corpus' type alias, spelled out in Corpus.from_sources


_NAMESPACES = ("io", "pp", "tl", "pl", "datasets", "models", "data", "train")


def _public_target(target: str, module: str | None) -> list[str]:
    parts = target.split(".")
    if parts[0] == "storm":
        return [".".join([p for p in parts[:-1] if not p.startswith("_")] + parts[-1:])]
    if module and module.startswith("storm"):
        public = ".".join(p for p in module.split(".") if not p.startswith("_"))
        # a bare name from another namespace (``Slide`` in a tool's signature, ``NicheBatch`` in the loader's)
        return [f"{public}.{target}", *(f"storm.{ns}.{target}" for ns in _NAMESPACES)]
    return []


def _resolve_public(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    domain = env.get_domain("py")
    for target in _public_target(node["reftarget"], node.get("py:module")):
        found = domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], target, node, contnode)
        if found is not None:
            return found
    return None


def setup(app):
    app.connect("missing-reference", _resolve_public)
