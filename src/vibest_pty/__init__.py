"""vibest-pty: a PTY daemon whose sessions outlive their clients."""

__version__ = "0.1.0"
