"""Command-line commands that live in their own module (``robustlens <command>``).

Each module defines ``add_parser(sub, common)``, which registers the command and its options on
the ``robustlens`` parser (``sub``: its sub-parsers; ``common``: the options every command
shares), and ``run(args) -> int``, the command itself. :mod:`robustlens.cli` holds the shared
plumbing (exit codes, errors, metadata) and calls ``add_parser``.
"""
