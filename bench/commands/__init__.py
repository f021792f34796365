"""Subcommands added by feature modules: one file per command group.

Each module here defines ``add_arguments(subparsers)``, which adds its parser(s) and
binds the handler with ``parser.set_defaults(func=handler)``; a handler takes the parsed
``args`` and returns the exit code (raise ``BenchError`` for a one-line error).
"""
