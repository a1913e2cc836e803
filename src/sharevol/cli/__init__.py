"""The `sharevol` command: click commands that parse, call one service, and print."""
