"""nbfleet: notebook instances behind a ModelArts-compatible notebook API."""

__version__ = "0.1.0"
