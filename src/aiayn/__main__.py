"""``python -m aiayn`` (and so ``torchrun -m aiayn``) runs the command line."""

from .cli import entry

if __name__ == "__main__":
    entry()
