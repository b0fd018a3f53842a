"""The applications: the command line, the batch runner, the web service. Only these know flags, output folders
and exit codes."""
