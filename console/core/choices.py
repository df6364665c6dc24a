"""The words a configuration chooses from, in one place: the units, the host key policies, the themes. A module of
its own, without the config's schema and YAML, so the command line and the console can name them at start."""

from __future__ import annotations

UNIT_NAMES = ("master", "clone")
HOST_KEY_POLICIES = ("strict", "accept-new")
THEMES = ("sop", "dark", "light")   # each has themes/NAME.yaml
