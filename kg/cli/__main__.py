"""`python -m kg.cli`: the same as the `kg` command."""

from kg.cli.main import main

if __name__ == "__main__":
    main()
