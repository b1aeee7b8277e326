"""dann_study: this study's own code on top of :mod:`dannlib`: which runs each notebook needs under each profile
(``plan``, ``grids``), the command line (``python -m dann_study {sweep,regenerate,report}``), the transactional
regeneration of the notebooks, and the notebooks' own tables and sentences (``report``, ``selection_report``,
``diagnose``, ``speedrun``, ``mnist_m_gap``). :mod:`dannlib` is the library a user reuses on their own data; it
imports nothing from here."""
