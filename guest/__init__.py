"""The in-sandbox agent. Stdlib-only: it runs on whatever python3 a template ships."""
