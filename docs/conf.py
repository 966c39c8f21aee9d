"""Sphinx configuration for storm's documentation."""

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
    "sphinx.ext.intersphinx",
    "sphinx.ext.napoleon",
]
autosummary_generate = True
autodoc_member_order = "groupwise"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
nb_execution_mode = "off"
myst_enable_extensions = ["colon_fence", "dollarmath"]
html_theme = "sphinx_book_theme"
html_title = "storm"
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
intersphinx_mapping = {
    "anndata": ("https://anndata.readthedocs.io/en/stable/", None),
    "numpy": ("https://numpy.org/doc/stable/", None),
    "python": ("https://docs.python.org/3", None),
    "spatialdata": ("https://spatialdata.scverse.org/en/stable/", None),
}
