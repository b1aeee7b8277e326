"""dannlib: the support package of dann-study (DANN, ADDA, IIMT on toys and digits)."""
__version__ = "0.1.0"
