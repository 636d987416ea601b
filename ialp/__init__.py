"""The ``ialp`` command line: one subcommand per job."""
