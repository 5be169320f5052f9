"""`python -m verinet` is the `verinet` command."""

from verinet.cli.main import main

main()
