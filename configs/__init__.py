"""The YAML presets, shipped inside the package (`cmbert.core.config.CONFIG_DIR`): a `--config configs/...` path
that does not exist where the command runs is read from here, so an installed `cmbert` finds its presets."""
