"""The console (Textual). The only layer that imports Textual; it sees the engine through the control API."""
