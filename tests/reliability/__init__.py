"""The reliability and security suite (issue 15): faults, hostile servers, hostile input, secrets, load.

A package so that its helper modules (``reliability.attacks``, ...) are imported
by one name whatever pytest's import mode, and so that two test directories
can each have a ``conftest.py``.
"""
