"""Widgets and table helpers the screens share."""
