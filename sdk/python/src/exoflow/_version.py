"""The package's version: the workspace version of the ExoFlow repository (Cargo.toml)."""

__version__ = "0.1.0"
