"""One module per ``orcd`` subcommand: ``HELP``, ``add_arguments(parser)``, ``run(args) -> int``."""
