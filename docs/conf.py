"""Sphinx configuration. Markdown pages via MyST; the API reference is generated from the docstrings
(autodoc), so the reference cannot drift from the code. Built with warnings as errors by ./dev test."""

from __future__ import annotations

project = "airflow-provider-runwatch"
author = "runwatch maintainers"
copyright = "2026, runwatch maintainers"
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3
html_theme = "alabaster"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
# Airflow's own classes are documented by Airflow; inherited members would drown ours.
autodoc_inherit_docstrings = False
nitpicky = False
suppress_warnings = ["myst.xref_missing"]
