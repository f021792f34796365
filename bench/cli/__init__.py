"""The command line: ``main.py`` builds the parser; each ``cmd_*.py`` adds one command group.

Each ``cmd_*`` module defines ``add_arguments(subparsers)``, which adds its parser(s) and
binds the handler with ``parser.set_defaults(func=handler)``; a handler takes the parsed
``args`` and returns the exit code (raise ``BenchError`` for a one-line error).
"""
