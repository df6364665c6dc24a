"""Themes as data (themes/*.yaml, shipped in the wheel as console.themes) turned into Textual themes."""

from __future__ import annotations

from importlib import resources

import yaml
from textual.theme import Theme

from console.core.choices import THEMES

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when there: 0.6 ms for the three, not 5
_FIELDS = ("name", "dark", "primary", "secondary", "accent", "foreground", "background", "surface", "panel",
           "success", "warning", "error")


def load_themes() -> list[Theme]:
    package = resources.files("console.themes")
    themes = []
    for name in THEMES:
        data = yaml.load(package.joinpath(f"{name}.yaml").read_text(encoding="utf-8"), Loader=_LOADER)
        themes.append(Theme(**{k: data[k] for k in _FIELDS if k in data}))
    return themes


def stylesheet() -> str:
    return resources.files("console.themes").joinpath("console.tcss").read_text(encoding="utf-8")
