#!/usr/bin/env python
"""Shim for `hf-vit-export` (hf_vit.commands.export): the same tool, run from a checkout."""

import sys

from hf_vit.commands.export import main

sys.exit(main())
