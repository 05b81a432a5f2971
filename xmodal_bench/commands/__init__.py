"""The command line, one module per subcommand: its options (no heavy imports) and a thin `run`."""
