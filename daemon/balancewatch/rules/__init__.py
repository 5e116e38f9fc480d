"""Alert rules: the YAML models, their compiled form, and the directory loader."""
