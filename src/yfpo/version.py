"""The package version (the ground floor: any module may read it without importing the package API)."""

__version__ = "0.1.0"
