"""ptverify's checkers: solver encodings, certificates and their checker, bounds, numeric checks
and the command line.  Imports :mod:`constructions`; never the other way round."""
__all__ = ["__version__"]
__version__ = "0.1.0"
