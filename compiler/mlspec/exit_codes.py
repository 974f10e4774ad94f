"""Exit codes of every mlspec command."""

EXIT_OK = 0  # nothing wrong
EXIT_FINDINGS = 1  # problems found, or an apply failed
EXIT_USAGE = 2  # the command line is wrong
EXIT_INTERNAL = 3  # a bug in mlspec
