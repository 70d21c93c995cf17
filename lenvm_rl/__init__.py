"""lenvm-rl: Length Value Models for the Hugging Face / TRL stack."""

__version__ = "0.1.0"
