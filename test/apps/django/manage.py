#!/usr/bin/env python3
"""Django's command-line utility for the upstream test app (run.py starts it)."""
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "upstream.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
