"""The console's screens, one a module. Imported where they are shown: only the main screen at start."""
