"""`python -m embedgate` is the same as the `embedgate` command."""

from embedgate.cli import main

if __name__ == "__main__":
    main()
