"""The layer under everything: configuration, store, keys, known hosts, events, tunnel log."""
