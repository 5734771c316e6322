"""The package version, in a leaf module: whatever records it (run records, model files, benchmarks) imports it from
here, never from the package itself, so nothing below the package face imports the face."""

__version__ = "0.1.0"
