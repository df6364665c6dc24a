"""Modal dialogs, one a module (two close relatives may share one). Imported when first shown."""
