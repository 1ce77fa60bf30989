"""ara: autonomous ML experimentation on Slurm clusters."""

__version__ = "0.1.0"
