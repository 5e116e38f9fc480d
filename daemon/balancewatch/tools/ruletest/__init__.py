"""Rule unit tests (``balancewatch test``): accounts and a timeline in, expected notifications out.

``models`` is the file format, ``load`` checks a file into ``cases``, ``runner``
runs each test against a fresh SQLite database through the real pipeline,
``match`` pairs expected with decided notifications, ``report`` prints the
outcome. See docs/rule-tests.md.
"""
