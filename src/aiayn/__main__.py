"""``python -m aiayn`` (and so ``torchrun -m aiayn``) runs the command line."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
