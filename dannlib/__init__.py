"""dannlib: the library of dann-study (DANN, ADDA, IIMT, CDAN on toys, digits or your own tensors); the study's own
runs, command line and notebook tables are in dann_study, which this package never imports."""
__version__ = "0.1.0"
