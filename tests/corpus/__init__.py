"""The bad-input corpus: one case per class of user mistake, run by ``test_bad_input_corpus.py``.

Each ``cases_*.py`` module here holds the cases of one area (configs, traces, sweeps, the
regression gate) as a list ``CASES`` of :class:`~corpus.case.Case`. A case is a folder of files
written as a user would write them and the command line a user would type; the runner checks
that the command exits 2 with exactly one ``error:`` message that names the location, prints
no traceback, finishes within a time bound and leaves the folder as it found it.
"""
