"""`python -m gptcli`: the command line, as the `gptcli` script runs it."""

from gptcli.cli import main

if __name__ == "__main__":
    main()
