"""The package's version, on the ground floor so that any module may name it (the User-Agent does)."""

__version__ = "0.1.0"
