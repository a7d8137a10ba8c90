#!/usr/bin/env python
"""Django's command-line utility for SkyDeck (same as the ``skydeck`` console script)."""

from skydeck_site.cli import main

if __name__ == "__main__":
    main(serve_by_default=False)
